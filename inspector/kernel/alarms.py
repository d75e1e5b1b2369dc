"""Alarms: the registry of alarm kinds, the hub that fans them out, and per-kind throttling.

Every alarm the service can raise is listed in `ALARM_KINDS` with what it means for the line;
a test checks that every kind raised in the package is listed and every listed kind is raised
somewhere. The hub counts every alarm, including those the MQTT publisher creates inside its own
outbox (`escaped_part`, `no_subscribers`, `outbox_full`, `outbox_degraded`): it calls `record()` for
them, so `/metrics`, the summary and the heartbeat count all alarms in one place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

AlarmHandler = Callable[[str, dict[str, Any]], None]

# kind -> what the line should understand by it. Add a kind here before raising it.
ALARM_KINDS: dict[str, str] = {
    "escaped_part": "a part was not stopped: its reject was not delivered before its deadline, or its verdict "
                    "came too late",
    "no_subscribers": "the broker delivered a reject to nobody: no actuator subscribes to the reject topic",
    "outbox_full": "the outbox evicted its oldest messages: the broker has not acknowledged for a long time",
    "outbox_degraded": "the outbox cannot write (disk full?): rejects and alarms are delivered from memory, "
                       "not durably",
    "camera_lost": "the source stopped delivering frames",
    "camera_restored": "the source delivers frames again after camera_lost (clears it: payload `clears`)",
    "spool_full": "the review spool is full and evicts samples",
    "spool_evicted_unuploaded": "a sample was evicted from the spool before it was uploaded",
    "spool_disk_full": "a spool write failed for lack of disk space",
    "spool_write_failed": "a spool write failed (I/O error)",
    "queue_full": "triggered parts arrived while the source's frame buffer was full: their images were dropped "
    "and they got the fail-safe verdict (or, past source.max_backlog, no verdict at all: their part ids are listed)",
    "plc_no_frame": "a PLC trigger got no camera frame within plc.pairing_window_ms: its part got the fail-safe result",
    "plc_bad_trigger": "a PLC trigger payload was refused (not JSON, no part_id or seq): answered with a fail-safe "
    "result, the loop goes on",
    "plc_result_unacknowledged": "the PLC did not acknowledge a result within plc.ack_timeout_ms",
    "plc_pairing_refused": "hardware trigger: a camera frame could not be attributed to exactly one PLC trigger (two "
    "triggers within plc.pairing_window_ms of one frame, or two frames of one trigger): the parts concerned got the "
    "fail-safe result `ambiguous` (detail: part ids, times, the window)",
    "plc_ready_overwritten": "another broker client overwrote the retained .../ready topic: the inspector re-published "
    "the station's true state (detail: what was found); restrict who may publish there (broker ACL)",
    "sample_quarantined": "a spooled sample could not be read (corrupt sidecar or image): it was moved to "
    "<spool>/quarantine/ and the rest was uploaded",
    "model_failed": "an inference failed or a request is stuck: parts get the fail-safe verdict (error or LATE) "
    "until the model answers again (one alarm per episode)",
    "input_drift": "the camera's images left the envelope the model was validated on (detail: the statistic, its "
    "value and bounds, and decision.on_drift; with hold/reject parts get the fail-safe verdict until input_restored)",
    "input_restored": "the images are back inside the model's envelope (clears input_drift: payload `clears`)",
    "output_drift": "what the model does left the band its reference allows (detail: the statistic, "
    "weak_detection_rate or reject_rate, its share over the window, the band, where the reference came from): "
    "an optical change it was not trained for; decision.on_drift acts on it as on input_drift, until "
    "output_restored",
    "output_restored": "the model's output is back inside its band (clears output_drift: payload `clears`)",
    "golden_part_failed": "a golden reference part got the wrong verdict (detail: expected, got, defects): the "
    "inspection itself is not to be trusted",
    "golden_part_overdue": "a golden part was not judged within golden.max_interval_s (part-id mode: it never came; "
    "image mode: every check was LATE or none was made); the /healthz check `golden` is red until it is judged "
    "again (detail: name, mode, since_s, last_result)",
    "realtime_refused": "realtime.policy asked for a real-time frame path and the OS refused it (detail: reason, "
    "fix): the service runs at its normal priority and may miss deadlines beside other work on the PC",
    "realtime_demoted": "a real-time frame-path thread ran realtime.rttime_ms without blocking (SIGXCPU): the frame "
    "path was dropped to SCHED_OTHER so it cannot take the machine; restart the service to return to real time",
    "model_fallback": "at start, the model the station's pointer names failed validation (card schema, "
    "thresholds, input_envelope, signature, sha256, compile): the service started on the pointer's previous "
    "version instead and moved the pointer there (detail: refused, to, error)",
    "model_rolled_back": "the rollback guard returned to the previous model: within guard.parts after a promotion "
    "the new model's reject rate or p99 latency left the configured band (detail says which and by how much)",
    "rollback_failed": "the rollback guard tripped but the rollback failed (detail: model, why, error; e.g. the "
    "pointer could not be written): the model it rejected still judges; the lifecycle health check is red until "
    "a promote or rollback succeeds",
}

# A kind that ends a condition -> the kind it clears (an alarm list marks that one cleared). The MQTT
# alarm payload carries it as `clears`.
CLEARS: dict[str, str] = {"camera_restored": "camera_lost", "input_restored": "input_drift",
                          "output_restored": "output_drift"}


class UnknownAlarm(ValueError):
    pass


def check_kind(kind: str) -> None:
    if kind not in ALARM_KINDS:
        raise UnknownAlarm(f"alarm kind: expected one of {sorted(ALARM_KINDS)}, got {kind!r}")


class AlarmHub:
    """Fan-out of line alarms to whoever delivers them (the MQTT publisher), and their counts.

    Before a handler is attached, alarms are logged and kept (bounded) so none raised during
    start-up is lost; `attach` replays them. Thread-safe: any thread may raise.
    """

    def __init__(self, keep: int = 1000) -> None:
        self._handlers: list[AlarmHandler] = []
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._keep = keep
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {}  # kind -> wall time of the last one

    def attach(self, handler: AlarmHandler) -> None:
        with self._lock:
            self._handlers.append(handler)
            pending, self._pending = self._pending, []
        for kind, detail in pending:
            handler(kind, detail)

    def raise_alarm(self, kind: str, detail: dict[str, Any]) -> None:
        check_kind(kind)
        detail = {"raised_at": time.time(), **detail}
        log.warning("ALARM %s: %s", kind, detail)
        with self._lock:
            self._count(kind)
            handlers = list(self._handlers)
            if not handlers and len(self._pending) < self._keep:
                self._pending.append((kind, detail))
        for h in handlers:
            try:
                h(kind, detail)
            except Exception:  # an alarm path must not take the line down
                log.exception("alarm handler failed for %s", kind)

    def record(self, kind: str) -> None:
        """Counts an alarm that its producer already delivered itself (the publisher's outbox)."""
        check_kind(kind)
        with self._lock:
            self._count(kind)

    def _count(self, kind: str) -> None:
        self.counts[kind] += 1
        self.last[kind] = time.time()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class AlarmThrottle:
    """The first alarm of a kind goes out at once; later ones within `interval_s` are summed into
    one alarm (with `count`, and the last one's detail) at the end of the interval (`flush_due()`,
    or the next alarm of that kind) or at `flush()`. A full spool evicts on every write, a broken
    PLC can send thousands of bad triggers a second: the line must hear about it, not be flooded
    (3000 unthrottled PLC alarms evicted genuine ones from the outbox). `folded` counts, by kind,
    the alarms that went out summed into another instead of on their own. Thread-safe (the PLC
    handshake raises from paho's thread and its pairing thread); `emit` runs outside the lock."""

    def __init__(self, emit: AlarmHandler, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._detail: dict[str, dict[str, Any]] = {}
        self.folded: Counter[str] = Counter()

    def raise_alarm(self, kind: str, detail: dict[str, Any]) -> None:
        with self._lock:
            now = self._clock()
            self._pending[kind] += 1
            self._detail[kind] = detail
            last = self._last.get(kind)
            out = self._take(kind, now) if last is None or now - last >= self._interval_s else None
        self._send(out)

    def flush(self) -> None:
        """Delivers the summed counts now (at stop)."""
        with self._lock:
            now = self._clock()
            outs = [self._take(kind, now) for kind in list(self._pending)]
        for out in outs:
            self._send(out)

    def folded_counts(self) -> dict[str, int]:
        """`folded` by kind, read safely from another thread."""
        with self._lock:
            return dict(self.folded)

    def flush_due(self) -> None:
        """Delivers the sums whose interval has passed (a periodic tick: a burst that stopped is still
        reported within `interval_s`, not only when the next alarm of its kind comes)."""
        with self._lock:
            now = self._clock()
            outs = [self._take(kind, now) for kind in list(self._pending)
                    if now - self._last.get(kind, float("-inf")) >= self._interval_s]
        for out in outs:
            self._send(out)

    def _take(self, kind: str, now: float) -> tuple[str, dict[str, Any]] | None:
        n = self._pending.pop(kind, 0)
        if not n:
            return None
        self._last[kind] = now
        self.folded[kind] += n - 1
        return kind, {**self._detail.pop(kind, {}), "count": n}

    def _send(self, out: tuple[str, dict[str, Any]] | None) -> None:
        if out is None:
            return
        try:
            self._emit(*out)
        except Exception:  # an alarm path must not stop its caller
            log.exception("alarm %s failed", out[0])
