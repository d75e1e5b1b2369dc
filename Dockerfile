# Runtime image of the line-side service: no torch, no ultralytics (those are the `train` extra).
# Installs the same way the README does: the package with its runtime dependencies only.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENVINO_TELEMETRY_ENABLE=0

# OpenCV's headless wheel still needs these shared libraries.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/inspector
COPY pyproject.toml README.md ./
COPY inspector ./inspector
COPY models ./models
COPY configs ./configs
RUN pip install . && useradd --system --uid 10001 --home /var/lib/inspector --create-home inspector

USER inspector
WORKDIR /var/lib/inspector
# The outbox, spool and uploads live here: mount a volume so a restart keeps undelivered rejects.
VOLUME ["/var/lib/inspector"]
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9108/healthz || exit 1
# Stopping: `docker stop` sends STOPSIGNAL, then SIGKILL after 10 s (its default -t). The service
# stops every part within ONE deadline, `shutdown.deadline_s` (8 s by default), so the publisher's
# final flush ends before the SIGKILL. A longer deadline needs a longer grace period as well:
# `docker stop -t <deadline + 2>`, or `stop_grace_period` in compose.
STOPSIGNAL SIGTERM
# Real time (docs/deploy.md, "In a container"): the frame path asks for SCHED_FIFO 10-12 per thread. Give
# the container the permission, or it runs at normal priority and raises one `realtime_refused` alarm:
#   docker run --ulimit rtprio=12 --ulimit rttime=200000:5200000 ...   (this image's user is not root)
#   (cgroup v1 with RT group scheduling also needs --cpu-rt-runtime=900000 and a daemon budget)
ENTRYPOINT ["inspector", "run"]
CMD ["--config", "/opt/inspector/configs/line-rtsp.yaml"]
