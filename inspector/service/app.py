"""The service: build from config -> start (sinks first) -> wait -> stop in reverse -> summary.

Start order matters: the publisher and spool must be able to take verdicts before the first
frame is read, and must be the last to stop so nothing in flight is lost (SIGINT/SIGTERM stop
the source at once; frames already read still get their verdicts; sinks then flush).

Stopping has ONE deadline (`shutdown.deadline_s`, 8 s by default) shared by every part: each part
gets what is left of it (less a small reserve for the parts after it), never a timeout of its own
on top of the others'. A container runtime sends SIGKILL 10 s after SIGTERM (`docker stop`'s
default), and a SIGKILL would lose the publisher's final flush.

Everything the service shows about itself (summary, status line, heartbeat, /metrics, /healthz)
is read from one `report.ServiceReport`, built by `report.build_report(service)`.

Line integration (docs/controls-engineer.md): with `plc.enabled` the pipeline reads the PLC handshake's
source (camera frames paired with the PLC's triggers) and the handshake answers every trigger on
`.../result`; that result is then the part's only answer: `.../reject` stays silent (the publisher
still carries alarms, status, heartbeat and, when enabled, `.../verdict`). With `opcua.enabled` an
OPC UA server mirrors the station state and every result (the PLC's results in handshake mode).
Each output is a plug-in (service/outputs/): this module builds, starts and stops them by iterating
the registry, in its order (its properties `publisher`, `plc`, ... only hand out what was built).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.config import InspectorConfig
from inspector.errors import ConfigError, InspectorError
from inspector.frames import ModelInfo
from inspector.inference.decision import DecisionPolicy
from inspector.kernel import priority, realtime
from inspector.kernel.alarms import AlarmHub
from inspector.service.metrics import StageHistograms
from inspector.service.outputs import Outputs, Wiring
from inspector.service.pipeline import Pipeline
from inspector.service.report import (
    EscapeTally,
    ServiceReport,
    StallWatch,
    StopReport,
    build_report,
)
from inspector.service.sinks import VerdictSink
from inspector.sources import open_source

log = logging.getLogger(__name__)

# Seconds kept back for each later part when an earlier one is given its share of the deadline:
# the publisher's final flush (rejects still in flight) matters most, and a slow camera close must
# not eat it. A part that finishes early leaves its time to the next.
_RESERVE_S = {"lifecycle": 0.1, "source": 0.2, "pipeline": 0.5, "uploader": 0.2, "sink": 0.5, "metrics": 0.1}


class Service:
    def __init__(self, cfg: InspectorConfig, max_frames: int | None = None) -> None:
        self.cfg = cfg
        priority.configure(cfg.background)  # background threads started from here on run below the frame path
        self.alarms = AlarmHub()
        # The frame path's threads run real-time where the OS permits it (kernel/realtime.py); decided once, here.
        realtime.configure(cfg.realtime, alarm=self.alarms.raise_alarm, background_nice=cfg.background.nice)
        if cfg.shadow.enabled and not cfg.lifecycle.enabled:
            raise ConfigError("shadow.enabled needs lifecycle.enabled: true (the shadow model comes from the store)")
        from inspector.lifecycle.manager import open_initial  # model.path, or the store's pointer

        # The validation promote and shadow run too; a refused pointer falls back to its previous version.
        detector, policy, fallback = open_initial(cfg)
        if fallback is not None:
            self.alarms.raise_alarm("model_fallback", fallback)
        self._first_model = detector.bundle.info
        self.config_hash = cfg.config_hash()
        self.camera = open_source(cfg.source, max_frames=max_frames, alarm=self.alarms.raise_alarm)
        # The outputs (service/outputs/: publisher, PLC handshake, OPC UA, verdict log, sampling, uploader,
        # metrics, page), each built by its plug-in when its section is on. In handshake mode the pipeline
        # reads the PLC's paired source instead of the camera (`wiring.source`).
        wiring = Wiring(cfg=cfg, service=self, alarms=self.alarms, model=self._first_model,
                        config_hash=self.config_hash, camera=self.camera, source=self.camera)
        self.outputs = Outputs(wiring)
        self.source = wiring.source  # what the pipeline reads
        self.sinks: list[VerdictSink] = self.outputs.sinks  # started in this order before the pipeline
        # Observers on the post thread, beside the sinks: they feed the report, not the line.
        self.histograms = StageHistograms()
        self.escapes = EscapeTally()
        self.stall_watch = StallWatch()  # how long frames have arrived with no verdict (/healthz)
        # Issue 14: the input drift guard (off without the card's input_envelope) and golden parts.
        self.drift = None
        if cfg.drift.enabled:
            from inspector.service.drift import DriftMonitor

            self.drift = DriftMonitor(cfg.drift, cfg.decision.on_drift, detector.bundle.card, detector.bundle.info,
                                      alarm=self.alarms.raise_alarm)
        self.golden = None
        observers = [self.histograms, self.escapes, *self.outputs.observers]  # the page's feed
        if cfg.golden.parts:
            from inspector.service.golden import GoldenParts

            self.golden = GoldenParts(cfg.golden, inject=lambda f: self.pipeline.inject(f),
                                      alarm=self.alarms.raise_alarm)
            observers.append(self.golden)  # part-id mode: golden parts on the belt are checked there
        self.pipeline = Pipeline(self.source, detector, policy,
                                 [*self.outputs.post_sinks, *observers],
                                 max_frames=max_frames, alarm=self.alarms.raise_alarm, drift=self.drift,
                                 on_golden=self.golden.check if self.golden is not None else None,
                                 golden_wait_s=cfg.golden.idle_wait_s)
        # Model lifecycle (issue 13): promote/rollback/shadow through the control socket; the manager
        # also watches verdicts on the post thread (rollback guard, shadow feed), after the sinks.
        self.lifecycle = None
        self.control = None
        if cfg.lifecycle.enabled:
            from inspector.lifecycle.manager import ModelManager

            self.lifecycle = ModelManager(cfg, self.pipeline, alarm=self.alarms.raise_alarm,
                                          announce=self._announce_model, spool_sink=self.sampling)
            self.pipeline.sinks.append(self.lifecycle)
        self.started_at: float | None = None
        self.stop_report: StopReport | None = None
        self._source_was_connected = True
        self._source_lost_at: float | None = None

    # The model that judges now (it changes on promote/rollback): always read from the pipeline.
    @property
    def model(self) -> ModelInfo:
        return self.pipeline.model

    @property
    def detector(self):
        return self.pipeline.detector

    @property
    def policy(self) -> DecisionPolicy:
        return self.pipeline.policy

    def output(self, name: str) -> Any | None:
        """The built object of an output (service/outputs/), None when it is off."""
        return self.outputs.get(name)

    # The outputs other parts of the service talk to (the lifecycle's announce and spool, the page's
    # reads, the tests): each is that output's object, None when it is off.
    @property
    def publisher(self):
        return self.outputs.get("mqtt")

    @property
    def plc(self):
        return self.outputs.get("plc")

    @property
    def opcua(self):
        return self.outputs.get("opcua")

    @property
    def sampling(self):
        return self.outputs.get("sampling")

    @property
    def uploader(self):
        return self.outputs.get("uploader")

    @property
    def metrics(self):
        return self.outputs.get("metrics")

    @property
    def page(self):
        return self.outputs.get("page")

    def _announce_model(self, new: ModelInfo, old: ModelInfo, why: str) -> None:
        """A model switch is told to the line: the publisher's retained status names the new model."""
        if self.publisher is not None:
            self.publisher.announce_model(new, previous=old, why=why)

    def report(self, *, full: bool = False, groups: bool = False) -> ServiceReport:
        """The one snapshot every reader shares (see report.py); `groups`: each thread group's policy (/metrics)."""
        return build_report(self, full=full, groups=groups)

    def heartbeat(self) -> dict[str, Any]:
        return self.report().heartbeat()

    def start(self) -> None:
        self.started_at = time.monotonic()
        for s in self.sinks:
            s.start()
        # Then each output's own start, in the same order: the PLC handshake waits for its broker, the
        # publisher takes the alarms, the uploader, /metrics and the page start.
        self.outputs.started(self)
        if self.lifecycle is not None and self.cfg.shadow.enabled:  # before the first frame: it sees them all
            self.lifecycle.shadow_start(self.cfg.shadow.model)
        self.pipeline.start()
        self.source.start()
        if self.golden is not None:
            self.golden.start()
        if self.lifecycle is not None:
            from inspector.lifecycle.control import ControlServer
            from inspector.lifecycle.handlers import control_handler

            lc = self.cfg.lifecycle
            self.control = ControlServer(lc.socket, control_handler(self), mode=lc.socket_mode, group=lc.socket_group)
            self.control.start()

    def watch_source(self) -> None:
        """Raises `camera_lost` when the camera is lost and `camera_restored` (which clears it) when it is
        back; feeds the stall watch and the OPC UA station state (every 0.1 s from the run loop, so a
        stall is seen between two /healthz requests too)."""
        now = time.monotonic()
        st = self.source.state()
        self.stall_watch.observe(st.frames, self.pipeline.stats.frames, now)
        connected = st.connection.value in ("connected", "ended")
        if self._source_was_connected and not connected:
            self._source_lost_at = now
            self.alarms.raise_alarm("camera_lost", {"source": self.source.name, "state": st.connection.value,
                                                    "detail": st.detail})
        elif connected and not self._source_was_connected:
            lost_for = None if self._source_lost_at is None else round(now - self._source_lost_at, 3)
            self.alarms.raise_alarm("camera_restored", {"source": self.source.name, "state": st.connection.value,
                                                        "lost_for_s": lost_for, "reconnects": st.reconnects})
        self._source_was_connected = connected
        self.outputs.watch(self, st)

    def stop(self, deadline_s: float | None = None) -> StopReport:
        """Stops every part within one deadline (default `shutdown.deadline_s`), in order: source,
        pipeline drain, uploader, sinks (publisher's final flush included), metrics."""
        parts: list[tuple[str, str, Callable[[float], Any]]] = []
        if self.control is not None:
            parts.append(("control", "lifecycle", lambda t: self.control.stop(timeout=t)))
        if self.lifecycle is not None:
            parts.append(("shadow", "lifecycle", lambda t: self.lifecycle.stop(timeout=t)))
        if self.golden is not None:
            parts.append(("golden", "lifecycle", lambda t: self.golden.stop(timeout=t)))
        parts += [
            ("source", "source", lambda t: self.source.stop()),
            ("pipeline", "pipeline", lambda t: self.pipeline.stop(timeout=t)),
        ]
        if self.lifecycle is not None:  # after the drain: the guard has counted its last part
            parts.append(("guard", "lifecycle", lambda t: self.lifecycle.checkpoint_guard(timeout=t)))
        parts += self.outputs.stop_parts(after_sinks=False)  # the uploader
        for s in reversed(self.sinks):  # the output that answers the parts (the PLC handshake) last
            parts.append((f"sink {s.name}", "sink", lambda t, s=s: s.stop(timeout=t)))
        parts += self.outputs.stop_parts(after_sinks=True)  # /metrics and the page: they answer to the end
        self.stop_report = stop_within(parts, self.cfg.shutdown.deadline_s if deadline_s is None else deadline_s)
        return self.stop_report

    def summary(self, wall_s: float) -> dict[str, Any]:
        return self.report(full=True).summary(wall_s)


def stop_within(parts: list[tuple[str, str, Callable[[float], Any]]], deadline_s: float) -> StopReport:
    """Runs each part's stop(seconds) in turn under one deadline. A part gets what is left, less the
    reserve of the parts after it (but at least its own reserve, while time is left); one that does
    not return in its share is left behind (its threads are daemons) and the next part starts:
    the whole stop never takes more than `deadline_s` (plus a thread start per part)."""
    t0 = time.monotonic()
    end = t0 + deadline_s
    done: list[tuple[str, float, bool]] = []
    for i, (name, kind, stop) in enumerate(parts):
        left = max(0.0, end - time.monotonic())
        later = sum(_RESERVE_S[k] for _, k, _ in parts[i + 1:])
        share = min(left, max(left - later, _RESERVE_S[kind]))
        started = time.monotonic()
        t = threading.Thread(target=_quietly(name, stop, share), name=f"stop-{name}", daemon=True)
        t.start()
        t.join(share)
        took = time.monotonic() - started
        if t.is_alive():
            log.error("shutdown: %s did not stop within its %.2f s (deadline %.1f s); left behind", name, share,
                      deadline_s)
        done.append((name, took, not t.is_alive()))
    return StopReport(deadline_s=deadline_s, took_s=time.monotonic() - t0, parts=tuple(done))


def _quietly(name: str, stop: Callable[[float], Any], seconds: float) -> Callable[[], None]:
    def run() -> None:
        try:
            stop(seconds)
        except Exception:  # one part failing to stop must not keep the others from stopping
            log.exception("shutdown: stopping %s failed", name)
    return run


def format_summary(s: dict[str, Any]) -> str:
    v = s["verdicts"]
    lines = [
        (f"frames {s['frames']} in {s['wall_s']} s ({s['fps']} fps) | PASS {v['PASS']}  REJECT {v['REJECT']}  "
         f"LATE {v['LATE']} | actuations {s['actuations']} | deadline misses {s['deadline_misses']} "
         f"(budget {s['budget_ms']:.0f} ms) | errors {s['errors']}"),
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
    e = s["escapes"]
    lines.append(f"physical escapes {e['physical']} (parts not stopped in time: "
                 f"missed verdicts {e['missed_verdicts']}, rejects not delivered {e['rejects_not_delivered']}, "
                 f"delivered late {e['rejects_late']}; "
                 f"escaped_part alarms {e['escaped_part_alarms']})")
    gt = s.get("ground_truth")
    if gt:
        lines.append(f"ground truth: {gt['defective']} defective parts, verdict escapes {gt['verdict_escapes']}, "
                     f"not actuated {gt['escapes']} ({gt['escape_rate']:.2%}); "
                     f"{gt['good']} good parts, false rejects {gt['false_rejects']} ({gt['false_reject_rate']:.2%})")
    plc = s.get("plc")
    if plc:
        lat = plc["latency_ms"]
        lines.append(f"plc: triggers {plc['triggers']}, results {plc['results']} (late {plc['late_results']}), "
                     f"fail-safe {plc['fail_safe'] or 'none'}, bad triggers {plc['bad_triggers']}, unsolicited frames "
                     f"{plc['unsolicited_frames']}; trigger->result p50 {lat.get('p50')} p99 {lat.get('p99')} "
                     f"max {lat.get('max')} ms; station {plc['station']}")
    if s.get("opcua"):
        o = s["opcua"]
        lines.append(f"opcua {o['endpoint']}: {'running' if o['running'] else 'NOT RUNNING'}, parts {o['parts']} "
                     f"(OK {o['ok']} NG {o['ng']} fail-safe {o['fail_safe']}), state {o['station']}")
    if s["alarms"]:
        lines.append(f"alarms: {s['alarms']}")
    for name, st in s["sinks"].items():
        lines.append(f"sink {name}: " + _compact(st))
    rt = s.get("realtime")
    if rt:
        groups = "; ".join(f"{g}: " + ", ".join(f"{n} x {p}" for p, n in pol.items())
                           for g, pol in rt["groups"].items())
        lines.append(f"realtime: {rt['in_force']}" + (f" [{groups}]" if groups else ""))
    if not s["health"]["ok"]:
        lines.append(f"health at the end: RED ({', '.join(s['health']['failed'])})")
    sd = s.get("shutdown")
    if sd:
        lines.append(f"shutdown: {sd['took_s']:.2f} s of {sd['deadline_s']:g} s"
                     + (f"; left behind: {', '.join(sd['overran'])}" if sd["overran"] else ""))
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
        log.info("signal %s: stopping (deadline %.1f s)", signal.Signals(signum).name, cfg.shutdown.deadline_s)
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    live = live and sys.stderr.isatty()
    try:
        svc.start()
    except InspectorError:  # the camera or the OPC UA port: stop what did start, then say why
        svc.stop()
        raise
    t0 = time.monotonic()
    rc = 0
    # systemd (deploy/systemd/inspector.service, Type=notify): READY once started, WATCHDOG=1 only while
    # verdicts flow, STOPPING at the stop. Not under systemd: no-ops.
    from inspector.lifecycle.sdnotify import Notifier, verdicts_flow

    notifier = Notifier()
    notifier.ready(f"judging with {svc.model.name}@{svc.model.version}")
    next_ping = time.monotonic()
    try:
        last_status = 0.0
        while not stop.is_set():
            if svc.pipeline.done.wait(0.1):
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            svc.pipeline.raise_if_failed()
            svc.watch_source()
            if notifier.watchdog_s is not None and time.monotonic() >= next_ping:
                next_ping = time.monotonic() + notifier.watchdog_s / 2
                rep = svc.report()
                if verdicts_flow(rep):
                    notifier.notify(watchdog=1, status=rep.status_line(time.monotonic() - t0))
                else:
                    log.error("verdicts do not flow (%s): no watchdog ping; systemd restarts the service after "
                              "WatchdogSec", ", ".join(rep.failed_checks))
            if live and time.monotonic() - last_status >= 0.5:
                last_status = time.monotonic()
                sys.stderr.write("\r" + svc.report().status_line(time.monotonic() - t0) + "\x1b[K")
                sys.stderr.flush()
        svc.pipeline.raise_if_failed()
    except InspectorError:
        rc = 1
        raise
    finally:
        wall = time.monotonic() - t0
        notifier.stopping()
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
    return svc.report().status_line(elapsed)
