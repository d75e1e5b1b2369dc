"""Prometheus metrics (/metrics) and health (/healthz, /readyz) over plain HTTP.

Metrics are read from the live service state at scrape time (a custom collector), so the frame
path does no extra bookkeeping for them.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)


class _ServiceCollector:
    def __init__(self, svc) -> None:
        self.svc = svc

    def collect(self):
        st = self.svc.pipeline.stats
        c = CounterMetricFamily("inspector_verdicts", "Verdicts by outcome", labels=["outcome"])
        for k in ("PASS", "REJECT", "LATE"):
            c.add_metric([k], st.outcomes.get(k, 0))
        yield c
        yield CounterMetricFamily("inspector_actuations", "Reject signals requested", value=st.actuations)
        yield CounterMetricFamily("inspector_deadline_misses", "Verdicts past their deadline", value=st.outcomes.get("LATE", 0))
        d = CounterMetricFamily("inspector_frames_dropped", "Frames dropped, by cause", labels=["cause"])
        dropped = dict(st.dropped)
        for cause, n in (self.svc.source.state().dropped or {}).items():
            dropped[cause] = dropped.get(cause, 0) + n
        for cause, n in dropped.items():
            d.add_metric([cause], n)
        yield d
        p99 = st.p99_recent()
        yield GaugeMetricFamily("inspector_latency_p99_ms", "p99 capture-to-verdict latency (last 1000 frames)",
                                value=p99 if p99 is not None else float("nan"))
        src = self.svc.source.state()
        yield GaugeMetricFamily("inspector_source_connected", "1 when the camera delivers frames",
                                value=1.0 if src.connection.value in ("connected", "ended") else 0.0)
        if src.last_frame_age_s is not None:
            yield GaugeMetricFamily("inspector_last_frame_age_seconds", "Age of the newest frame", value=src.last_frame_age_s)
        a = CounterMetricFamily("inspector_alarms", "Alarms raised, by kind", labels=["kind"])
        for kind, n in self.svc.alarms.counts.items():
            a.add_metric([kind], n)
        yield a
        for sink in self.svc.sinks:
            for key, val in sink.state().items():
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    yield GaugeMetricFamily(f"inspector_{sink.name}_{key}", f"{sink.name} sink: {key}", value=val)
                elif isinstance(val, bool):
                    yield GaugeMetricFamily(f"inspector_{sink.name}_{key}", f"{sink.name} sink: {key}", value=float(val))


def health(svc) -> tuple[bool, dict]:
    src = svc.source.state()
    age = src.last_frame_age_s
    pub = svc.publisher.state() if svc.publisher is not None else None
    ok = src.connection.value in ("connected", "ended") and (pub is None or bool(pub.get("connected")))
    return ok, {"source": src.connection.value, "last_frame_age_s": age, "mqtt": pub, "frames": svc.pipeline.stats.frames}


class MetricsServer:
    def __init__(self, svc, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ServiceCollector(svc))
        registry, service = self.registry, svc

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(registry), "text/plain; version=0.0.4", 200
                elif self.path.startswith(("/healthz", "/readyz")):
                    ok, detail = health(service)
                    body, ctype, code = json.dumps(detail).encode(), "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not news
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            log.error("metrics endpoint %s:%s unavailable (%s); continuing without it", host, port, e)
            self.httpd = None
        self.port = self.httpd.server_address[1] if self.httpd else None
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    def _serve(self) -> None:
        if self.httpd is not None:
            self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        self._thread.start()
        if self.port:
            log.info("metrics on http://%s:%s/metrics (health: /healthz)", self.httpd.server_address[0], self.port)

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


