"""One report of the running service: a frozen snapshot that every reader shares.

The end-of-run summary (and `--summary-json`), the live status line, the MQTT heartbeat,
`/metrics` and `/healthz` all read a `ServiceReport` made by `build_report(service)`; none of them
reaches into the service's parts. The health checks are decided here too, so `/healthz`, the
heartbeat and the summary cannot disagree about what failed. Each output's part (the publisher's,
the PLC handshake's, ...) and its checks come from its plug-in (service/outputs/): this module
iterates over them (the `mqtt`, `plc`, `opcua` and `uploader` properties only hand one part to the
readers that look at it: the page, /metrics).

`build_report` runs on the reader's thread (status loop, publisher thread, HTTP handler). It only
copies counters that their owning threads write, so it never blocks the frame path. The costly
part, percentiles over every kept latency sample (52 ms for 6 stages x 200k samples, measured on
the 2-core dev machine), is taken only for the end-of-run summary (`full=True`); live readers get
the p99 of the recent window (0.04 ms) and the stage histograms.

Escapes are counted two ways, never mixed:
- physical: a part that was not stopped in time: its verdict was missed (LATE, and `on_late: pass`
  let it through; or the source gave the part up without a verdict, `backlog_full`), or its
  reject was not delivered before its deadline (expired, evicted or dropped from the outbox, or
  acknowledged by the broker after the deadline). Needs no ground truth: these are the parts
  the `escaped_part` alarms name.
- verdict: a defective part that got a PASS verdict. Needs ground truth (the synthetic line).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspector.frames import Outcome, Verdict
from inspector.kernel import realtime

if TYPE_CHECKING:
    from inspector.service.outputs.mqtt import MqttReport
    from inspector.service.outputs.opcua import OpcUaReport
    from inspector.service.outputs.plc import PlcReport

# Verdicts stopped while frames arrive: frames arriving for this long with no verdict at all means
# the pipeline is stuck. Every frame gets a verdict by its deadline (LATE at worst), so ten budgets
# without one is a stall, not a slow frame; the floor keeps a slow first inference (a cold start,
# ~0.4 s to compile the demo model) and a busy 2-core machine's hiccups from reading as one.
STALL_BUDGETS = 10
STALL_FLOOR_S = 1.0

GIVEN_UP = "backlog_full"  # the source's drop cause for a part given up without a verdict (sources/base.py)
_FRAME_IDS_KEPT = 100  # escaped frame ids kept for the summary (bounded: a long outage escapes many)


# -- the parts of the report ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PipelineReport:
    frames: int  # verdicts made
    verdicts: dict[str, int]  # PASS / REJECT / LATE
    actuations: int
    reasons: dict[str, int]
    errors: int
    dropped: dict[str, int]  # frames without a verdict (no part to reject), pipeline and source, by cause
    uninspected: dict[str, int]  # parts given the fail-safe verdict without inference, by cause
    p99_recent_ms: float | None
    last_verdict_age_s: float | None
    no_verdict_s: float | None  # how long frames have arrived at the source with no verdict since
    in_flight: int | None  # frames in inference without a verdict yet (None: the pipeline does not say)
    oldest_in_flight_age_s: float | None
    # The pipeline's own view (Pipeline.snapshot()): frames read and owed a verdict, and the model's health.
    unanswered: int | None = None
    oldest_unanswered_age_s: float | None = None
    stalled: bool = False  # a frame read has waited past the pipeline's stall limit for its verdict
    model_ok: bool = True
    model_error: str | None = None
    late_in_flight: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # full reports only


@dataclass(frozen=True, slots=True)
class SourceReport:
    name: str
    connection: str
    frames: int
    dropped: dict[str, int]
    last_frame_age_s: float | None
    reconnects: int
    detail: str
    # A GenICam camera's transport counters (Aravis stream statistics: n_missing_frames, n_resent_packets,
    # ...; frames dropped by cause). Empty for sources that have none.
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.connection in ("connected", "ended")


@dataclass(frozen=True, slots=True)
class EscapeReport:
    physical: int
    missed_verdicts: int
    rejects_not_delivered: int
    rejects_late: int
    escaped_part_alarms: int
    verdict: int | None  # None without ground truth
    frame_ids: tuple[str, ...]  # a bounded sample of the physically escaped frames

    def as_dict(self) -> dict[str, Any]:
        return {"physical": self.physical, "missed_verdicts": self.missed_verdicts,
                "rejects_not_delivered": self.rejects_not_delivered, "rejects_late": self.rejects_late,
                "escaped_part_alarms": self.escaped_part_alarms, "verdict": self.verdict,
                "frame_ids": list(self.frame_ids)}


@dataclass(frozen=True, slots=True)
class GroundTruthReport:
    parts: int
    defective: int
    good: int
    escapes: int  # defective parts not actuated (as before: PASS, or LATE with on_late: pass)
    verdict_escapes: int  # defective parts that got a PASS verdict
    false_rejects: int

    def as_dict(self) -> dict[str, Any]:
        return {"parts": self.parts, "defective": self.defective, "good": self.good, "escapes": self.escapes,
                "verdict_escapes": self.verdict_escapes, "false_rejects": self.false_rejects,
                "escape_rate": round(self.escapes / self.defective, 4) if self.defective else 0.0,
                "false_reject_rate": round(self.false_rejects / self.good, 4) if self.good else 0.0}


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts of one stage's latency, in seconds (Prometheus' convention)."""

    stage: str
    bounds: tuple[float, ...]  # upper bounds, +Inf implied
    cumulative: tuple[int, ...]  # one per bound, then +Inf (== count)
    sum_s: float
    count: int


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class OutputPart:
    """One output's part of the report (service/outputs/): the typed part its plug-in made (None when the
    output is off) and the plug-in's class, which says how the part reads (checks, /healthz, heartbeat,
    status line, summary)."""

    output: Any  # the Output subclass
    part: Any

    @property
    def name(self) -> str:
        return self.output.name


@dataclass(frozen=True, slots=True)
class StopReport:
    """How the last shutdown went: one deadline shared by every part."""

    deadline_s: float
    took_s: float
    parts: tuple[tuple[str, float, bool], ...]  # (part, seconds it took or was given, stopped in time)

    @property
    def overran(self) -> tuple[str, ...]:
        return tuple(name for name, _, ok in self.parts if not ok)

    def as_dict(self) -> dict[str, Any]:
        return {"deadline_s": self.deadline_s, "took_s": round(self.took_s, 3), "overran": list(self.overran),
                "parts": {name: round(s, 3) for name, s, _ in self.parts}}


@dataclass(frozen=True, slots=True)
class ServiceReport:
    uptime_s: float
    model: dict[str, Any]
    budget_ms: float
    pipeline: PipelineReport
    source: SourceReport
    sinks: dict[str, dict[str, Any]]  # each sink's own state, by name
    alarms: dict[str, int]  # alarms counted by the hub, by kind
    escapes: EscapeReport
    ground_truth: GroundTruthReport | None
    histograms: tuple[Histogram, ...]
    health: tuple[HealthCheck, ...]
    shutdown: StopReport | None = None
    # Issue 13: which model judged how many parts ("name@version" -> outcome -> count), and the
    # lifecycle's own state (switches, guard, shadow); None when lifecycle is off.
    verdicts_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    lifecycle: dict[str, Any] | None = None
    # Issue 14: the input drift guard's state (service/drift.py DriftMonitor.snapshot; None when drift.enabled
    # is false) and the golden parts' checks (None without golden parts).
    drift: dict[str, Any] | None = None
    golden: dict[str, Any] | None = None
    # Issue 20: the scheduling in force (kernel/realtime.py state(): requested, in_force, per-group policies).
    realtime: dict[str, Any] | None = None
    # Every registered output's part, in the registry's order (service/outputs/__init__.py).
    outputs: tuple[OutputPart, ...] = ()

    # -- readers ---------------------------------------------------------------------------------
    def part(self, name: str) -> Any:
        """The report part of the output named `name`; None when it is off."""
        for o in self.outputs:
            if o.name == name:
                return o.part
        return None

    # The parts the readers of the reject path look at (the page, /metrics), typed by their output.
    @property
    def mqtt(self) -> MqttReport | None:
        return self.part("mqtt")

    @property
    def plc(self) -> PlcReport | None:
        return self.part("plc")

    @property
    def opcua(self) -> OpcUaReport | None:
        return self.part("opcua")

    @property
    def uploader(self) -> dict[str, Any] | None:
        return self.part("uploader")

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.health)

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.health if not c.ok]

    def health_body(self) -> dict[str, Any]:
        """`/healthz`: ok, which checks failed and why, and the figures they were decided on."""
        return {
            "ok": self.healthy,
            "failed": self.failed_checks,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.health},
            "source": self.source.connection,
            "last_frame_age_s": _r(self.source.last_frame_age_s),
            "last_verdict_age_s": _r(self.pipeline.last_verdict_age_s),
            "frames": self.pipeline.frames,
            **{k: v for o in self.outputs for k, v in o.output.healthz(o.part).items()},
            "drift": None if self.drift is None else {k: self.drift[k] for k in (
                "enabled", "in_drift", "acting", "on_drift", "statistic", "value", "bounds", "psi")},
        }

    def heartbeat(self) -> dict[str, Any]:
        """Figures for the MQTT heartbeat (`frames`, `last_frame_age_s`, `p99_ms` are payload fields;
        the rest travels in its free-form `pipeline` object)."""
        p = self.pipeline
        return {"frames": p.frames, "last_frame_age_s": _r(p.last_verdict_age_s),
                "p99_ms": _r(p.p99_recent_ms), "source": self.source.connection,
                "deadline_misses": p.verdicts.get("LATE", 0), "escapes_physical": self.escapes.physical,
                "healthy": self.healthy, "failed": self.failed_checks,
                "model": f"{self.model['name']}@{self.model['version']}",
                **({"realtime": self.realtime["in_force"]} if self.realtime else {}),
                **{k: v for o in self.outputs for k, v in o.output.heartbeat(o.part).items()},
                **({"input_drift": self.drift["in_drift"], "held": self.drift["acting"]} if self.drift else {})}

    def status_line(self, elapsed: float) -> str:
        p = self.pipeline
        mq = "".join(o.output.status(o.part) for o in self.outputs)
        health = "ok" if self.healthy else "RED " + ",".join(self.failed_checks)
        return (f"{elapsed:6.1f}s  {p.frames / max(elapsed, 1e-6):5.1f} fps  p99 {p.p99_recent_ms or 0:6.1f} ms  "
                f"rejects {p.actuations}  late {p.verdicts.get('LATE', 0)}  escapes {self.escapes.physical}  "
                f"source {self.source.connection}{mq} | health {health}")

    def summary(self, wall_s: float) -> dict[str, Any]:
        """The end-of-run summary (`--summary-json`); keys documented in README's summary table."""
        p = self.pipeline
        out: dict[str, Any] = {
            "frames": p.frames,
            "wall_s": round(wall_s, 2),
            "fps": round(p.frames / wall_s, 2) if wall_s > 0 else 0.0,
            "verdicts": {k: p.verdicts.get(k, 0) for k in ("PASS", "REJECT", "LATE")},
            "actuations": p.actuations,
            "reasons": dict(p.reasons),
            "deadline_misses": p.verdicts.get("LATE", 0),
            "errors": p.errors,
            "dropped": dict(p.dropped),
            "uninspected": dict(p.uninspected),
            "late_in_flight": p.late_in_flight,
            "latency_ms": p.latency_ms,
            "escapes": self.escapes.as_dict(),
            "model": self.model,
            "budget_ms": self.budget_ms,
            "source": {"connection": self.source.connection, "frames": self.source.frames,
                       "dropped": self.source.dropped, "last_frame_age_s": _r(self.source.last_frame_age_s),
                       "reconnects": self.source.reconnects, "detail": self.source.detail,
                       **({"counters": self.source.counters} if self.source.counters else {})},
            "sinks": self.sinks,
            **{o.name: None if o.part is None else o.output.summary(o.part)
               for o in self.outputs if o.output.summary_slot == "sinks"},
            "alarms": dict(self.alarms),
            "health": {"ok": self.healthy, "failed": self.failed_checks},
        }
        if self.ground_truth is not None:
            out["ground_truth"] = self.ground_truth.as_dict()
        if self.shutdown is not None:
            out["shutdown"] = self.shutdown.as_dict()
        for o in self.outputs:
            if o.output.summary_slot == "end" and o.part is not None:
                out[o.name] = o.output.summary(o.part)
        out["verdicts_by_model"] = self.verdicts_by_model
        if self.lifecycle is not None:
            out["lifecycle"] = self.lifecycle
        if self.drift is not None:
            out["drift"] = self.drift
        if self.golden is not None:
            out["golden"] = self.golden
        if self.realtime is not None:
            out["realtime"] = self.realtime
        return out


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# -- what the post thread observes ---------------------------------------------------------------
class EscapeTally:
    """Counts the escapes that only a verdict shows (missed verdicts; PASS given to a defective
    part), on the pipeline's post thread. A VerdictSink in form (start/submit/stop/state); the
    service passes it to the pipeline beside the real sinks. O(1) per verdict."""

    name = "escapes"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # readers copy under it; one writer
        self.missed_verdicts = 0
        self.verdict_escapes = 0
        self.frame_ids: deque[str] = deque(maxlen=_FRAME_IDS_KEPT)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def submit(self, v: Verdict) -> None:
        missed = v.outcome is Outcome.LATE and not v.actuate  # on_late: pass let the part through
        verdict_escape = bool(v.frame.truth) and v.outcome is Outcome.PASS  # truth: the defects it has
        if missed or verdict_escape:
            with self._lock:
                self.missed_verdicts += missed
                self.verdict_escapes += verdict_escape
                if missed:
                    self.frame_ids.append(str(v.frame_id))

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"missed_verdicts": self.missed_verdicts, "verdict_escapes": self.verdict_escapes,
                    "frame_ids": list(self.frame_ids)}


class StallWatch:
    """Remembers when the verdict count last moved and when a frame first arrived after that, so a
    report can say how long frames have been waiting with no verdict at all. Fed by every report
    and by the service's loop (every 0.1 s); any thread. Counts, not ages: a frame that arrives
    every 2 s and gets its verdict 30 ms later never reads as a stall, and frames that keep
    arriving fresh do not hide one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdicts = -1
        self._frames_then = 0
        self._waiting_since: float | None = None

    def observe(self, source_frames: int, verdicts: int, now: float) -> float | None:
        with self._lock:
            if verdicts != self._verdicts:
                self._verdicts, self._frames_then, self._waiting_since = verdicts, source_frames, None
            elif source_frames > self._frames_then and self._waiting_since is None:
                self._waiting_since = now
            return None if self._waiting_since is None else now - self._waiting_since


# -- building it -----------------------------------------------------------------------------------
def stall_after_s(budget_ms: float) -> float:
    return max(STALL_FLOOR_S, STALL_BUDGETS * budget_ms / 1000)


def build_report(svc: Any, *, full: bool = False, groups: bool = False) -> ServiceReport:
    """The snapshot of `svc` (an `app.Service`). `full` adds the all-samples latency percentiles
    (for the end-of-run summary; too costly for a live reader, see the module docstring)."""
    now = time.monotonic()
    source = _source_report(svc.source)
    pipeline = _pipeline_report(svc.pipeline, source, svc.stall_watch, now, full)
    sinks = {s.name: plain(s.state()) for s in svc.sinks}
    # Each output's own part (service/outputs/), off ones included: they say what they show when off.
    outputs = tuple(OutputPart(type(o), None if o.obj is None else o.report(sinks)) for o in svc.outputs.all)
    alarms = svc.alarms.snapshot()
    tally = svc.escapes.state()
    st = svc.pipeline.stats
    gt = None
    if st.truth_parts:
        gt = GroundTruthReport(parts=st.truth_parts, defective=st.defective_parts, good=st.good_parts,
                               escapes=st.escapes, verdict_escapes=tally["verdict_escapes"],
                               false_rejects=st.false_rejects)
    # Rejects an output did not deliver before their deadline (the publisher's outbox says which).
    delivery = [o.output.escapes(o.part) for o in outputs]
    not_delivered = sum(n for n, _, _ in delivery)
    late = sum(n for _, n, _ in delivery)
    undelivered_ids = [i for _, _, ids in delivery for i in ids]
    # A triggered part the source gave up (backlog full behind a stalled detector) got no verdict at all.
    missed = tally["missed_verdicts"] + source.dropped.get(GIVEN_UP, 0)
    escapes = EscapeReport(
        physical=missed + not_delivered + late,
        missed_verdicts=missed, rejects_not_delivered=not_delivered, rejects_late=late,
        escaped_part_alarms=alarms.get("escaped_part", 0),
        verdict=gt.verdict_escapes if gt is not None else None,
        frame_ids=tuple((list(tally["frame_ids"]) + undelivered_ids)[-_FRAME_IDS_KEPT:]),
    )
    histograms = svc.histograms.snapshot()
    budget_ms = svc.cfg.decision.budget_ms
    drift = svc.drift.snapshot() if svc.drift is not None else None
    health = health_checks(source, pipeline, stall_after_s(budget_ms), outputs, drift=drift)
    health += _lifecycle_check(svc.lifecycle)
    golden = svc.golden.state() if svc.golden is not None else None
    health += _golden_check(golden)
    model = {"name": svc.model.name, "version": svc.model.version, "sha256": svc.model.sha256,
             "precision": svc.detector.bundle.precision, "device": svc.detector.device}
    started = svc.started_at
    with st.lock:
        by_model_raw = dict(st.by_model)
    by_model: dict[str, dict[str, int]] = {}
    for (name, version, outcome), n in sorted(by_model_raw.items()):
        by_model.setdefault(f"{name}@{version}", {})[outcome] = n
    manager = svc.lifecycle
    return ServiceReport(uptime_s=0.0 if started is None else now - started, model=model, budget_ms=budget_ms,
                         pipeline=pipeline, source=source, sinks=sinks,
                         alarms=alarms, escapes=escapes, ground_truth=gt, histograms=tuple(histograms),
                         health=health, shutdown=svc.stop_report,
                         verdicts_by_model=by_model, lifecycle=None if manager is None else manager.state(),
                         drift=drift, golden=golden,
                         realtime=realtime.state(groups=full or groups), outputs=outputs)


def health_checks(source: SourceReport, pipeline: PipelineReport, stall_s: float,
                  outputs: tuple[OutputPart, ...] = (), *,
                  drift: dict[str, Any] | None = None) -> tuple[HealthCheck, ...]:
    """What makes `/healthz` red, each check named so the body says which failed: the source, the
    verdicts and the model; then each output's own checks (an output that is off says what it lists
    then: MQTT "disabled", the PLC handshake and OPC UA nothing); then the input."""
    checks = [HealthCheck("source", source.connected,
                          f"{source.connection}" + (f": {source.detail}" if source.detail else ""))]
    checks.append(_verdict_check(pipeline, stall_s))
    checks.append(HealthCheck("model", pipeline.model_ok,
                              "ok" if pipeline.model_ok else f"inference failing: {pipeline.model_error or 'stuck'}"))
    for o in outputs:
        checks.extend(o.output.checks(o.part))
    if drift is not None:  # drift alone is an alarm, not ill health; a held line inspects nothing: red
        held = drift["acting"] and drift["on_drift"] == "hold"
        what = (f"{drift['statistic']}: expected {drift['expected']}, got {drift['actual']}" if drift.get("expected")
                else f"{drift['statistic']} {drift['value']} outside {drift['bounds']}")
        if held:
            detail = f"held: every part gets the fail-safe verdict ({what})"
        elif drift["in_drift"]:
            detail = f"outside the envelope ({what}; on_drift {drift['on_drift']})"
        else:
            detail = "inside the envelope" if drift["enabled"] else f"not watched: {drift['why_off']}"
        checks.append(HealthCheck("input", not held, detail))
    return tuple(checks)


def _lifecycle_check(manager: Any) -> tuple[HealthCheck, ...]:
    """Listed with the model lifecycle on: red while a model the rollback guard rejected still judges."""
    if manager is None:
        return ()
    failed = manager.rollback_failed
    if failed is None:
        return (HealthCheck("lifecycle", True, "ok"),)
    return (HealthCheck("lifecycle", False, f"the rollback guard rejected {failed['model']} ({failed['why']}) but "
                                            f"the rollback failed ({failed['error']}): it still judges"),)


def _golden_check(golden: dict[str, Any] | None) -> tuple[HealthCheck, ...]:
    """Listed when a golden part is watched (golden.max_interval_s): red while one is overdue."""
    if golden is None or not any(s is not None for s in golden.get("max_interval_s", {}).values()):
        return ()
    overdue = golden["overdue"]
    if not overdue:
        return (HealthCheck("golden", True, "every watched golden part judged within its max interval"),)
    since = golden["since_judged_s"]
    return (HealthCheck("golden", False, "golden part(s) overdue: " + ", ".join(
        f"{n} not judged for {since.get(n)} s (max {golden['max_interval_s'][n]} s)" for n in overdue)),)


def _verdict_check(p: PipelineReport, stall_s: float) -> HealthCheck:
    if p.stalled:
        return HealthCheck("verdicts", False, "verdicts stopped: a frame read "
                                              f"{p.oldest_unanswered_age_s or 0:.1f} s ago has no verdict "
                                              f"({p.unanswered} owed)")
    if p.no_verdict_s is not None and p.no_verdict_s > stall_s:
        last = "never" if p.last_verdict_age_s is None else f"{p.last_verdict_age_s:.1f} s ago"
        return HealthCheck("verdicts", False, "frames arrive but verdicts stopped: no verdict for "
                                              f"{p.no_verdict_s:.1f} s of arriving frames "
                                              f"(limit {stall_s:.1f} s; last verdict {last})")
    # The pipeline's own view, where it says how old its oldest frame in inference is.
    if p.oldest_in_flight_age_s is not None and p.oldest_in_flight_age_s > stall_s:
        return HealthCheck("verdicts", False, f"a frame has waited {p.oldest_in_flight_age_s:.1f} s in inference "
                                              f"(limit {stall_s:.1f} s, {p.in_flight} in flight)")
    return HealthCheck("verdicts", True, "no frames yet" if p.last_verdict_age_s is None else "flowing")


def _source_report(source: Any) -> SourceReport:
    s = source.state()
    counters = getattr(source, "counters", None)
    return SourceReport(name=source.name, connection=s.connection.value, frames=s.frames,
                        dropped=dict(s.dropped or {}), last_frame_age_s=s.last_frame_age_s,
                        reconnects=s.reconnects, detail=s.detail, counters=counters() if callable(counters) else {})


def _pipeline_report(pipeline: Any, source: SourceReport, watch: StallWatch, now: float, full: bool) -> PipelineReport:
    st = pipeline.stats
    with st.lock:  # one consistent set of counters (the post thread writes them under it)
        frames, verdicts, actuations = st.frames, dict(st.outcomes), st.actuations
        reasons, errors, dropped = dict(st.reasons), st.errors, dict(st.dropped)
        uninspected = dict(st.uninspected)
        last_at = st.last_verdict_at  # monotonic time of the last verdict
    for cause, n in source.dropped.items():
        dropped[cause] = dropped.get(cause, 0) + n
    snap = pipeline.snapshot()
    return PipelineReport(
        frames=frames, verdicts=verdicts, actuations=actuations, reasons=reasons, errors=errors, dropped=dropped,
        uninspected=uninspected,
        p99_recent_ms=st.p99_recent(),
        last_verdict_age_s=None if last_at is None else max(0.0, now - last_at),
        no_verdict_s=watch.observe(source.frames, frames, now),
        in_flight=snap.in_flight, oldest_in_flight_age_s=snap.oldest_in_flight_age_s,
        unanswered=snap.unanswered, oldest_unanswered_age_s=snap.oldest_unanswered_age_s, stalled=snap.stalled,
        model_ok=snap.model_ok, model_error=snap.model_error, late_in_flight=snap.late_in_flight,
        latency_ms=st.percentiles() if full else {},
    )


def plain(d: dict[str, Any]) -> dict[str, Any]:
    """A sink's state as JSON-able data (sets and tuples become lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = plain(v)
        elif isinstance(v, (set, frozenset, tuple, deque)):
            out[k] = list(v)
        else:
            out[k] = v
    return out
