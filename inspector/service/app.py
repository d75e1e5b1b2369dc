"""The service: build from config -> start (sinks first) -> wait -> stop in reverse -> summary.

Start order matters: the publisher and spool must be able to take verdicts before the first
frame is read, and must be the last to stop so nothing in flight is lost (SIGINT/SIGTERM stop
the source at once; frames already read still get their verdicts; sinks then flush).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from inspector.config import InspectorConfig
from inspector.errors import InspectorError, SourceError
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import load_bundle, open_detector
from inspector.service.alarms import AlarmHub
from inspector.service.pipeline import Pipeline
from inspector.service.sinks import JsonlSink, VerdictSink
from inspector.sources import open_source

log = logging.getLogger(__name__)


class Service:
    def __init__(self, cfg: InspectorConfig, max_frames: int | None = None) -> None:
        self.cfg = cfg
        self.alarms = AlarmHub()
        bundle = load_bundle(cfg.model.path, cfg.model.precision)
        self.policy = DecisionPolicy.build(cfg.decision, bundle.classes, bundle.thresholds)
        self.detector = open_detector(cfg.model, bundle, conf=self.policy.conf_floor)
        self.model = self.detector.bundle.info
        self.config_hash = cfg.config_hash()
        self.sinks: list[VerdictSink] = []
        self.publisher = None
        self.uploader = None
        if cfg.sink.jsonl is not None:
            self.sinks.append(JsonlSink(cfg.sink.jsonl))
        if cfg.mqtt.enabled:
            from inspector.signalling.publisher import MqttPublisher

            self.publisher = MqttPublisher(cfg.mqtt, model=self.model, config_hash=self.config_hash,
                                           heartbeat_fn=self.heartbeat, alarm_counter=self.alarms.record)
            self.sinks.append(self.publisher)
        if cfg.sampling.enabled:
            from inspector.review.spool import SamplingSink

            self.sinks.append(SamplingSink(cfg.sampling, cfg.spool, model=self.model, config_hash=self.config_hash,
                                           alarm=self.alarms.raise_alarm))
        if cfg.upload.window is not None:
            from inspector.review.uploader import NightlyUploader

            self.uploader = NightlyUploader(cfg)
        self.source = open_source(cfg.source, max_frames=max_frames)
        self.pipeline = Pipeline(self.source, self.detector, self.policy, self.sinks, max_frames=max_frames,
                                 alarm=self.alarms.raise_alarm)
        self.metrics = None
        self._source_was_connected = True

    def heartbeat(self) -> dict[str, Any]:
        st = self.pipeline.stats
        age = None if st.last_frame_at is None else round(time.monotonic() - st.last_frame_at, 3)
        p99 = st.p99_recent()
        return {"frames": st.frames, "last_frame_age_s": age, "p99_ms": None if p99 is None else round(p99, 3),
                "source": self.source.state().connection.value}

    def start(self) -> None:
        for s in self.sinks:
            s.start()
        if self.publisher is not None:
            self.alarms.attach(self.publisher.alarm)
        if self.uploader is not None:
            self.uploader.start()
        if self.cfg.metrics.enabled:
            from inspector.service.metrics import MetricsServer

            self.metrics = MetricsServer(self, self.cfg.metrics.host, self.cfg.metrics.port)
            self.metrics.start()
        self.pipeline.start()
        self.source.start()

    def watch_source(self) -> None:
        """Raises an alarm when the camera is lost, and notes its return."""
        st = self.source.state()
        connected = st.connection.value in ("connected", "ended")
        if self._source_was_connected and not connected:
            self.alarms.raise_alarm("camera_lost", {"source": self.source.name, "state": st.connection.value,
                                                    "detail": st.detail})
        elif connected and not self._source_was_connected:
            log.info("camera %s back (%s)", self.source.name, st.connection.value)
        self._source_was_connected = connected

    def stop(self) -> None:
        self.source.stop()
        self.pipeline.stop(timeout=2.0)
        if self.uploader is not None:
            self.uploader.stop(timeout=1.0)
        for s in reversed(self.sinks):
            s.stop(timeout=2.0)
        if self.metrics is not None:
            self.metrics.stop()

    def summary(self, wall_s: float) -> dict[str, Any]:
        st = self.pipeline.stats
        dropped = dict(st.dropped)
        for cause, n in (self.source.state().dropped or {}).items():
            dropped[cause] = dropped.get(cause, 0) + n
        out: dict[str, Any] = {
            "frames": st.frames,
            "wall_s": round(wall_s, 2),
            "fps": round(st.frames / wall_s, 2) if wall_s > 0 else 0.0,
            "verdicts": {k: st.outcomes.get(k, 0) for k in ("PASS", "REJECT", "LATE")},
            "actuations": st.actuations,
            "reasons": dict(st.reasons),
            "deadline_misses": st.outcomes.get("LATE", 0),
            "errors": st.errors,
            "dropped": dropped,
            "latency_ms": st.percentiles(),
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256,
                      "precision": self.detector.bundle.precision, "device": self.detector.device},
            "budget_ms": self.cfg.decision.budget_ms,
            "source": _jsonable(self.source.state()),
            "sinks": {s.name: s.state() for s in self.sinks},
            "alarms": dict(self.alarms.counts),
        }
        if st.truth_parts:
            out["ground_truth"] = {
                "parts": st.truth_parts, "defective": st.defective_parts, "good": st.good_parts,
                "escapes": st.escapes, "false_rejects": st.false_rejects,
                "escape_rate": round(st.escapes / st.defective_parts, 4) if st.defective_parts else 0.0,
                "false_reject_rate": round(st.false_rejects / st.good_parts, 4) if st.good_parts else 0.0,
            }
        return out


def _jsonable(state) -> dict[str, Any]:
    return {"connection": state.connection.value, "frames": state.frames, "dropped": state.dropped or {},
            "last_frame_age_s": None if state.last_frame_age_s is None else round(state.last_frame_age_s, 3),
            "reconnects": state.reconnects, "detail": state.detail}


def format_summary(s: dict[str, Any]) -> str:
    v = s["verdicts"]
    lines = [
        f"frames {s['frames']} in {s['wall_s']} s ({s['fps']} fps) | PASS {v['PASS']}  REJECT {v['REJECT']}  "
        f"LATE {v['LATE']} | actuations {s['actuations']} | deadline misses {s['deadline_misses']} "
        f"(budget {s['budget_ms']:.0f} ms) | errors {s['errors']}",
        f"dropped: {s['dropped'] or 'none'}",
    ]
    lat = s["latency_ms"]
    if lat:
        lines.append(f"  {'latency ms':<16}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
        for stage in ("queue_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "decide_ms", "total_ms"):
            if stage in lat:
                p = lat[stage]
                name = "end-to-end" if stage == "total_ms" else stage[:-3]
                lines.append(f"  {name:<16}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}{p['max']:>9.2f}")
    gt = s.get("ground_truth")
    if gt:
        lines.append(f"ground truth: {gt['defective']} defective parts, escapes {gt['escapes']} ({gt['escape_rate']:.2%}); "
                     f"{gt['good']} good parts, false rejects {gt['false_rejects']} ({gt['false_reject_rate']:.2%})")
    if s["alarms"]:
        lines.append(f"alarms: {s['alarms']}")
    for name, st in s["sinks"].items():
        lines.append(f"sink {name}: " + _compact(st))
    return "\n".join(lines)


def _compact(state: dict[str, Any]) -> str:
    """The counters worth a glance: non-zero numbers, connection and last error."""
    parts = []
    for k, v in state.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'yes' if v else 'NO'}")
        elif isinstance(v, (int, float)) and v:
            parts.append(f"{k}={v}")
        elif isinstance(v, dict) and v:
            parts.append(f"{k}={dict(v)}")
        elif k == "last_error" and v:
            parts.append(f"last_error={v!r}")
    return ", ".join(parts) or "idle"


def run_service(cfg: InspectorConfig, max_frames: int | None = None, duration: float | None = None,
                summary_json: str | None = None, live: bool = True) -> int:
    svc = Service(cfg, max_frames=max_frames)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    live = live and sys.stderr.isatty()
    try:
        svc.start()
    except SourceError:
        svc.stop()
        raise
    t0 = time.monotonic()
    rc = 0
    try:
        last_status = 0.0
        while not stop.is_set():
            if svc.pipeline.done.wait(0.1):
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            svc.pipeline.raise_if_failed()
            svc.watch_source()
            if live and time.monotonic() - last_status >= 0.5:
                last_status = time.monotonic()
                sys.stderr.write("\r" + status_line(svc, time.monotonic() - t0) + "\x1b[K")
                sys.stderr.flush()
        svc.pipeline.raise_if_failed()
    except InspectorError:
        rc = 1
        raise
    finally:
        wall = time.monotonic() - t0
        svc.stop()
        for sig, h in old.items():
            signal.signal(sig, h)
        if live:
            sys.stderr.write("\n")
        summary = svc.summary(wall)
        print(format_summary(summary))
        if summary_json:
            Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
            Path(summary_json).write_text(json.dumps(summary, indent=2))
    return rc


def status_line(svc: Service, elapsed: float) -> str:
    st = svc.pipeline.stats
    p99 = st.p99_recent()
    src = svc.source.state()
    pub = svc.publisher.state() if svc.publisher is not None else {}
    mq = f" | mqtt {'up' if pub.get('connected') else 'DOWN'} outbox {pub.get('outbox_depth', 0)}" if pub else ""
    return (f"{elapsed:6.1f}s  {st.frames / max(elapsed, 1e-6):5.1f} fps  p99 {p99 or 0:6.1f} ms  "
            f"rejects {st.actuations}  late {st.outcomes.get('LATE', 0)}  source {src.connection.value}{mq}")
