"""The part-ID handshake with the line's PLC over MQTT (signal map: docs/controls-engineer.md).

    PLC  -> {prefix}/{line}/{station}/trigger  {part_id, seq, fired_at?}     one per part
    insp -> {prefix}/{line}/{station}/result   {part_id, seq, result OK|NG, reason, fail_safe, ...}
    insp -> {prefix}/{line}/{station}/ready    {state ready|busy|fault, ...}  retained; last will: fault
    PLC  -> {prefix}/{line}/{station}/ack      {part_id, seq}                optional (plc.ack_timeout_ms)

`PlcHandshake` sits on both sides of the pipeline: `handshake.source` is the FrameSource the
pipeline reads (camera frames paired with PLC triggers, re-stamped with the PLC's part id and the
trigger time as the start of the part's deadline), and the handshake itself is a VerdictSink that
answers each verdict with a result carrying the PLC's part id and sequence number.

Every trigger gets exactly one result: the inspection's, or the fail-safe one (decision.on_late)
when no frame came within the pairing window (`plc_no_frame` alarm), when its frame was lost in
transport (`frame_lost`: the camera source hands on an incomplete buffer as a frame without image),
when the frame cannot be attributed to it alone (`ambiguous`, `plc_pairing_refused` alarm), when the
station is in fault (camera lost) or busy, or when the payload is refused (`plc_bad_trigger`). A
frame with no trigger is counted (`unsolicited`) and never reaches the pipeline, so nothing is
actuated on it. Alarms are throttled per kind (`AlarmThrottle`, as `queue_full`): the first at once,
the rest summed into one a minute, `alarms_folded` counts those not sent on their own.

Pairing (docs/controls-engineer.md, "Clocks"). Software trigger: the inspector fires the camera, one
trigger at a time, and the camera source stamps each frame with the moment its trigger was asked
for, so frames (lost ones included) come back in trigger order and pair oldest first. Hardware
trigger: the photo-eye fires camera and PLC at once, so a part is identified by TIME: the trigger's
`fired_at` (mapped to the monotonic clock; its arrival when it has none or it is not trusted) against
the frame's exposure time (the camera's timestamp mapped to the monotonic clock). A frame and a
trigger pair when each is the other's only counterpart within `pairing_window_ms`, among those
waiting and those seen in the last second or so; two triggers for one frame, or two frames for one
trigger, and every part concerned gets the fail-safe result `ambiguous` (one already paired but not
yet answered too). Arrival order plays no part: a trigger message that overtakes another, or a frame
that never comes, cannot move an image to another part. A hardware trigger is paired by plc-pair
only after every frame already at the PC has joined the pairing. What no pairing can do: a second
frame, or trigger, of a window that reaches the PC after the first part's result went out is
refused, and its alarm names the part already answered (`already_answered`). The window must stay
under half the shortest time between two parts (a refusal's alarm says so when it does not).

Ready: the retained `.../ready` is re-asserted: the handshake watches its own topic and re-publishes
the true state when another client wrote something else there (`ready_overwritten`, alarm
`plc_ready_overwritten`), and re-publishes it every READY_REASSERT_S anyway (a write it could not
see: its subscription refused by the broker's ACL, or made while it was disconnected).

Threads: paho's network thread parses triggers (never blocks: a software trigger is queued to the
camera's control thread, a hardware one handed to plc-pair); `plc-pair` owns the pairing (pending
triggers, waiting frames), expiry and the ready state; the pipeline's post thread calls `submit`.
Shared state is under one lock.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from inspector.config import MQTTConfig, PLCConfig
from inspector.frames import Frame, Outcome, Verdict
from inspector.kernel import realtime
from inspector.kernel.alarms import AlarmThrottle
from inspector.signalling.mqtt_client import make_client
from inspector.signalling.payloads import (
    DefectOut,
    PlcAckPayload,
    PlcReadyPayload,
    PlcResultPayload,
    PlcTriggerPayload,
)
from inspector.sources.base import Connection, FrameBuffer, SourceState

log = logging.getLogger(__name__)

AlarmFn = Callable[[str, dict[str, Any]], None]

# PLC alarms are summed per kind over this interval (the first goes out at once), like queue_full.
ALARM_INTERVAL_S = 60.0
# The retained ready is re-published this often even when nobody is seen overwriting it, and at most
# every READY_REASSERT_MIN_S after an overwrite (two stations misconfigured onto one topic would
# otherwise answer each other at broker speed; the alarm names the fight instead).
READY_REASSERT_S = 10.0
READY_REASSERT_MIN_S = 0.2


def topics(cfg: MQTTConfig) -> dict[str, str]:
    root = f"{cfg.prefix}/{cfg.line}/{cfg.station}"
    return {k: f"{root}/{k}" for k in ("trigger", "result", "ready", "ack")}


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@dataclass(frozen=True, slots=True)
class Trigger:
    part_id: str
    seq: int
    received_at: float  # monotonic
    started_at: float  # monotonic: the deadline starts here (fired_at when trusted, else received_at)


@dataclass(frozen=True, slots=True)
class _Seen:
    """A trigger or frame already paired, refused or expired (hardware pairing): a newcomer within the
    window of one makes that pairing ambiguous."""

    at: float  # monotonic: the trigger's start, or the frame's exposure
    # Set when the pair went to inspection: the frame's id (the key while its verdict is awaited) and the
    # part it was judged for. None for one refused, expired or answered fail-safe: nothing to take back.
    frame_id: int | None
    part_id: str | None


@dataclass
class _Done:
    """What a pairing step decided, delivered outside the lock: frames for the pipeline, fail-safe
    answers (trigger, reason, error) and pairing-refusal alarm details."""

    out: list[Frame] = dataclasses.field(default_factory=list)
    fail: list[tuple[Trigger, str, str]] = dataclasses.field(default_factory=list)
    alarms: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclass
class _Answered:
    trigger: Trigger
    published_at: float


class PlcHandshake:
    """Triggers in, paired frames to the pipeline, one result out per trigger. See the module doc."""

    name = "plc"

    def __init__(self, mqtt_cfg: MQTTConfig, cfg: PLCConfig, camera, *, budget_ms: float, on_late: str = "reject",
                 alarm: AlarmFn | None = None, client_id: str | None = None,
                 on_result: Callable[[PlcResultPayload], None] | None = None) -> None:
        self.mqtt_cfg, self.cfg, self.camera = mqtt_cfg, cfg, camera
        self.budget_s = budget_ms / 1000
        self.fail_safe_result = "NG" if on_late == "reject" else "OK"
        raw_alarm = alarm or (lambda kind, detail: log.warning("ALARM %s %s", kind, detail))
        self._alarms = AlarmThrottle(raw_alarm, ALARM_INTERVAL_S)
        self.topics = topics(mqtt_cfg)
        self.window_s = cfg.pairing_window_ms / 1000
        # A trigger with no frame is answered before its deadline, not after: a fail-safe NG that comes
        # late is worth nothing (measured: a 150 ms window at an 80 ms budget made every no_frame late).
        # 0.8, not 0.9: at 0.9 x 80 ms the 8 ms left for the pairing loop's poll, paho and the broker were
        # not enough on the 2-core box at load ~5 (2 of 41 fail-safe answers reached plc-sim at 80.4 ms);
        # a frame that has not come by then could not be inspected in the 16 ms left anyway.
        # Hardware: the window is the tolerance on |fired_at - exposure|, not a wait, and a frame arrives
        # after its exposure by its transfer time: a trigger waits for its frame until 0.8 x budget.
        self.hardware = cfg.camera == "hardware"
        self.no_frame_after_s = 0.8 * self.budget_s if self.hardware else min(self.window_s, 0.8 * self.budget_s)
        # A hardware frame waits for its trigger message as long as a trusted fired_at may be old on
        # arrival (max_clock_skew_ms), or until its part's deadline (a later result is late anyway).
        self.frame_wait_s = self.window_s + min(cfg.max_clock_skew_ms / 1000, self.budget_s)
        # Paired, refused and expired triggers and frames are remembered this long: a counterpart
        # arriving later than this could not have been within the window of a live one.
        self.seen_s = self.frame_wait_s + self.window_s + cfg.max_clock_skew_ms / 1000
        self._lock = threading.Lock()
        self._pending: list[Trigger] = []  # triggers awaiting a frame (hardware: in any order)
        # Hardware: triggers accepted by paho's thread, paired by plc-pair only after it has taken every
        # frame already at the PC (else a frame still in the camera's queue is missed, see _pair_loop).
        self._arrived: list[Trigger] = []
        self._waiting: list[Frame] = []  # hardware: frames awaiting a trigger
        self._paired: dict[int, Trigger] = {}  # frame_id -> trigger, awaiting the verdict
        self._tainted: set[int] = set()  # paired frame ids found ambiguous before their verdict came
        self._seen_triggers: collections.deque[_Seen] = collections.deque()
        self._seen_frames: collections.deque[_Seen] = collections.deque()
        self._ready_payload: str | None = None  # the retained ready we published last (the true state)
        self._ready_sent_at = float("-inf")
        self._ready_dirty = False  # another client wrote the ready topic: re-assert
        self._ready_echo: collections.deque[bytes] = collections.deque(maxlen=32)  # ours, not yet seen back
        self._recent: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._unacked: collections.OrderedDict[tuple[str, int], _Answered] = collections.OrderedDict()
        self.counts: collections.Counter[str] = collections.Counter()
        self._state: tuple[str, str] | None = None
        # trigger -> result on the inspector's clock (ms), recent results only (the PLC measures its own).
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self._on_result = on_result  # e.g. the OPC UA server's mirror of every result, fail-safe ones included
        # Paired frames waiting for the pipeline. Never more than max_in_flight: a trigger beyond it is
        # answered busy and never paired; the alarm and backlog are the FrameBuffer's usual safety net.
        self._out = FrameBuffer("triggered", cfg.max_in_flight, max_backlog=cfg.max_in_flight, alarm=alarm,
                                source="plc")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pair_loop, name="plc-pair", daemon=True)
        self._connected = threading.Event()
        self.source = PairedSource(self)
        cid = client_id or f"inspector-plc-{mqtt_cfg.line}-{mqtt_cfg.station}-{uuid.uuid4().hex[:6]}"
        # A clean session: a trigger published while we were away is stale by the time we are back.
        self._client = make_client(mqtt_cfg, client_id=cid, persistent=False, logger="inspector.plc")
        c = self._client
        # The broker says fault for us when we vanish (kill -9, power, cable).
        c.will_set(self.topics["ready"], self._ready_json("fault", "inspector offline"), qos=cfg.qos, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.message_callback_add(self.topics["trigger"], self._on_trigger)
        c.message_callback_add(self.topics["ack"], self._on_ack)
        c.message_callback_add(self.topics["ready"], self._on_ready)

    # -- lifecycle (VerdictSink) ----------------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(self.mqtt_cfg.host, self.mqtt_cfg.port, keepalive=self.mqtt_cfg.keepalive_s)
        self._client.loop_start()
        realtime.adopt_thread(getattr(self._client, "_thread", None), "frame", "plc-mqtt")  # triggers arrive here
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        # Triggers still waiting, for a frame or for the verdict of their frame (the pipeline stopped
        # before it), are answered fail-safe before we say fault and leave: one result per trigger.
        with self._lock:
            left = list(self._arrived) + list(self._pending) + list(self._paired.values())
            self._arrived.clear()
            self._pending.clear()
            self._paired.clear()
            self._tainted.clear()
        for t in left:
            self._publish_fail_safe(t, "no_frame", "the inspector stopped")
        self._alarms.flush()
        payload = self._ready_json("fault", "inspector stopped")
        with self._lock:
            self._ready_echo.append(payload.encode())
        info = self._client.publish(self.topics["ready"], payload, qos=self.cfg.qos, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass
        self._client.disconnect()
        self._client.loop_stop()

    # Counters shown from the start (at 0): a series that appears only with its first event breaks alerts.
    COUNTERS = ("triggers", "results", "late_results", "paired", "bad_triggers", "duplicate_triggers",
                "unsolicited_frames", "fail_safe_no_frame", "fail_safe_camera_lost", "fail_safe_busy",
                "fail_safe_frame_lost", "fail_safe_ambiguous", "pairing_refused", "ambiguous_frames",
                "fired_at_ignored", "acks", "unacknowledged", "bad_acks", "ready_overwritten", "alarms_folded")

    def state(self) -> dict[str, Any]:
        """Flat and JSON-able (the service report, /metrics gauges `inspector_plc_*`, the summary)."""
        station, reason = self.station()
        with self._lock:
            counts = dict(self.counts)
            out = {"connected": self._connected.is_set(), "station": station, "station_reason": reason,
                   "ready": station == "ready", "pending": len(self._arrived) + len(self._pending),
                   "in_flight": self._in_flight()}
        counts["alarms_folded"] = sum(self._alarms.folded_counts().values())
        out.update({k: counts.pop(k, 0) for k in self.COUNTERS})
        out.update(counts)
        return out

    def _in_flight(self) -> int:
        """Triggers not yet answered: arrived, pending a frame, or paired and awaiting the verdict. Under the lock."""
        return len(self._arrived) + len(self._pending) + len(self._paired)

    def station(self) -> tuple[str, str]:
        """The state the PLC sees (ready | busy | fault, reason); fault while the broker link is down."""
        if not self._connected.is_set():
            return "fault", "the PLC handshake has no broker connection"
        with self._lock:
            st = self._state
        return st if st is not None else ("fault", "starting")

    def latency_ms(self) -> dict[str, float]:
        """p50/p99/max of trigger -> result over the recent results (inspector's clock), {} before any."""
        with self._lock:
            lat = list(self._latency_ms)
        if not lat:
            return {}
        lat.sort()

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)

        return {"p50": pct(0.5), "p99": pct(0.99), "max": round(lat[-1], 2), "n": len(lat)}

    # -- MQTT (paho's thread) ---------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("plc: broker refused the connection: %s", reason_code)
            return
        client.subscribe([(self.topics["trigger"], self.cfg.qos), (self.topics["ack"], self.cfg.qos),
                          (self.topics["ready"], self.cfg.qos)])
        with self._lock:
            self._state = None  # re-publish the state on every (re)connect
            self._ready_echo.clear()
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected.clear()

    def _on_trigger(self, client, userdata, msg) -> None:
        now = time.monotonic()
        try:
            try:
                raw = json.loads(msg.payload)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"not JSON: {e}") from None
            p = PlcTriggerPayload.model_validate(raw)
        except (ValueError, ValidationError) as e:
            self._refuse(msg.payload, e)
            return
        key = (p.part_id, p.seq)
        with self._lock:
            if key in self._recent:
                self.counts["duplicate_triggers"] += 1
                return
            self._recent[key] = None
            while len(self._recent) > 4096:
                self._recent.popitem(last=False)
            self.counts["triggers"] += 1
            in_flight = self._in_flight()
        t = Trigger(p.part_id, p.seq, now, self._start_time(p, now))
        why = self._refusal(in_flight)
        if why is not None:
            self._publish_fail_safe(t, why, f"station {why.replace('_', ' ')}")
            return
        if self.hardware:
            with self._lock:
                self._arrived.append(t)  # plc-pair pairs it (its frame may have come first)
            return
        with self._lock:
            done = self._add_trigger(t)
        self._deliver(done)
        if self.cfg.camera == "software" and not self.camera.software_trigger():
            with self._lock:
                if t in self._pending:
                    self._pending.remove(t)
            self._publish_fail_safe(t, "camera_lost", "the camera is not connected")

    def _refusal(self, in_flight: int) -> str | None:
        if self.camera.state().connection not in (Connection.CONNECTED,):
            return "camera_lost"
        if in_flight >= self.cfg.max_in_flight:
            return "busy"
        return None

    def _start_time(self, p: PlcTriggerPayload, now: float) -> float:
        """The part's deadline starts at the photo-eye when the PLC says when, and its clock agrees."""
        if p.fired_at is None or not self.cfg.use_fired_at:
            return now
        fired = p.fired_at if p.fired_at.tzinfo else p.fired_at.replace(tzinfo=UTC)
        fired_wall = fired.timestamp()
        age = time.time() - fired_wall
        if -0.005 <= age <= self.cfg.max_clock_skew_ms / 1000:
            return now - max(age, 0.0)
        with self._lock:
            self.counts["fired_at_ignored"] += 1
        return now

    def _refuse(self, payload: bytes, e: Exception) -> None:
        seq = part = None
        try:
            raw = json.loads(payload)
            if isinstance(raw, dict):
                seq = raw.get("seq") if isinstance(raw.get("seq"), int) and raw.get("seq") >= 0 else None
                part = raw.get("part_id") if isinstance(raw.get("part_id"), str) and raw.get("part_id") else None
        except (ValueError, UnicodeDecodeError):
            pass
        why = str(e).splitlines()
        why = "; ".join(x.strip() for x in why if x.strip() and not x.strip().startswith("For further"))[:300]
        with self._lock:
            self.counts["bad_triggers"] += 1
        self._alarms.raise_alarm("plc_bad_trigger", {"topic": self.topics["trigger"], "error": why,
                                        "payload": payload[:200].decode("utf-8", "replace")})
        self._publish(PlcResultPayload(part_id=part, seq=seq, result=self.fail_safe_result, reason="bad_trigger",
                                       fail_safe=True, defects=[], frame_id=None, trigger_at=None, deadline=None,
                                       result_at=_utc(time.time()), late=False, latency_ms=None, error=why))

    def _on_ack(self, client, userdata, msg) -> None:
        try:
            p = PlcAckPayload.model_validate_json(msg.payload)
        except ValidationError:
            with self._lock:
                self.counts["bad_acks"] += 1
            return
        with self._lock:
            if self._unacked.pop((p.part_id, p.seq), None) is not None:
                self.counts["acks"] += 1

    def _on_ready(self, client, userdata, msg) -> None:
        """Our own retained ready, as the broker holds it. A copy sent because we subscribed (retain flag)
        is what the topic held before we connected: the state is published right after every connect
        anyway. A live message that is not one of ours coming back means another client wrote there."""
        if msg.retain:
            return
        payload = bytes(msg.payload)
        with self._lock:
            if payload in self._ready_echo:  # ours, in the order we sent them
                while self._ready_echo and self._ready_echo.popleft() != payload:
                    pass
                return
            self.counts["ready_overwritten"] += 1
            self._ready_dirty = True
        self._alarms.raise_alarm("plc_ready_overwritten", {"topic": self.topics["ready"],
                                                           "found": payload[:200].decode("utf-8", "replace")})

    # -- pairing (plc-pair thread, and paho's for a trigger) --------------------------------------------
    # Hardware: a trigger waits for plc-pair's next turn, at most this long when no frame comes meanwhile
    # (a frame wakes the loop at once). The 5 ms of the software mode would add up to 5 ms to a part whose
    # frame came first. Expiry and the ready state stay at 5 ms (HOUSEKEEPING_S). Measured on the 2-core
    # EPYC, idle line: plc-pair used 18 ms of CPU per s (software mode: 12; with the expiry each 1 ms: 28).
    HARDWARE_POLL_S = 0.001
    HOUSEKEEPING_S = 0.005
    MAX_DRAIN = 64  # frames taken in one turn before the triggers (more than max_in_flight ever queues)

    def _pair_loop(self) -> None:
        realtime.enter("frame")  # pairing triggers with frames: frame path (kernel/realtime.py)
        poll = self.HARDWARE_POLL_S if self.hardware else self.HOUSEKEEPING_S
        kept = float("-inf")
        while not self._stop.is_set():
            frames: list[Frame] = []
            frame = self.camera.read(poll)
            # Hardware: every frame already at the PC joins the pairing before a trigger is matched. A trigger
            # paired while a second frame of its window still sat in the camera's queue was judged on the first
            # and answered before the second was seen (CI run 38: "two frames for one trigger" answered OK).
            while frame is not None:
                frames.append(frame)
                frame = self.camera.read(0) if self.hardware and len(frames) < self.MAX_DRAIN else None
            now = time.monotonic()
            if frames or self._arrived:
                self._take(frames)
            if now - kept < self.HOUSEKEEPING_S:
                continue
            kept = now
            self._expire(now)
            self._update_ready(now)
            self._alarms.flush_due()

    def _take(self, frames: list[Frame]) -> None:
        """Frames from the camera, then the triggers that arrived meanwhile (hardware). plc-pair only."""
        with self._lock:
            done = _Done()
            for f in frames:
                self._add_frame(f, done)
            arrived, self._arrived = self._arrived, []
            for t in arrived:
                self._add_trigger(t, done)
        self._deliver(done)

    def _add_trigger(self, t: Trigger, done: _Done | None = None) -> _Done:
        """A trigger accepted: pending until its frame comes. Under the lock."""
        done = _Done() if done is None else done
        if self.hardware:
            seen = [s for s in self._seen_frames if abs(s.at - t.started_at) <= self.window_s]
            if seen:  # a frame within its window was already given to another part, refused or expired
                self._refuse_pairing(done, [t], [], seen, "a frame within the window was already taken")
                return done
        self._pending.append(t)
        self._match(done)
        return done

    def _add_frame(self, f: Frame, done: _Done) -> None:
        if self.hardware:
            seen = [s for s in self._seen_triggers if abs(s.at - f.captured_at) <= self.window_s]
            if seen:  # a trigger within its window was already paired, refused or answered no_frame
                self._refuse_pairing(done, [], [f], seen, "a trigger within the window was already answered")
                return
        self._waiting.append(f)
        # Frames wait for their trigger up to frame_wait_s; with no trigger coming (the PLC silent) their
        # images are bounded by count too: the oldest goes (unsolicited; a late trigger for it is refused).
        while len(self._waiting) > 2 * self.cfg.max_in_flight:
            old = min(self._waiting, key=lambda x: x.captured_at)
            self._waiting.remove(old)
            self._remember_frame(old, None)
            self.counts["unsolicited_frames"] += 1
        self._match(done)

    def _match(self, done: _Done) -> None:
        if self.hardware:
            self._match_by_time(done)
        else:
            self._match_in_order(done)

    def _match_in_order(self, done: _Done) -> None:
        """Software trigger: frames come back in trigger order, each stamped with the time its trigger was
        asked for (just after the trigger arrived); a lost one comes as a frame without image. Under the lock."""
        while self._waiting and self._pending:
            f, t = self._waiting[0], self._pending[0]
            # One older than the oldest pending trigger answered a trigger that already expired.
            gap = f.captured_at - t.received_at
            if gap < -0.001:
                self._waiting.pop(0)  # nobody is waiting for this frame
                self.counts["unsolicited_frames"] += 1
            elif gap > self.window_s:
                break  # the trigger's own frame never came: _expire answers it
            else:
                self._waiting.pop(0)
                self._pending.pop(0)
                self._commit(done, t, f)
        while self._waiting:  # every software frame answers a trigger we sent
            self._waiting.pop(0)
            self.counts["unsolicited_frames"] += 1

    def _match_by_time(self, done: _Done) -> None:
        """Hardware trigger: a frame and a trigger pair when each is the other's only counterpart within
        the window; a frame with two triggers, or a trigger with two frames, is refused. Under the lock."""
        w = self.window_s
        progress = True
        while progress:
            progress = False
            for f in sorted(self._waiting, key=lambda x: x.captured_at):
                triggers = [t for t in self._pending if abs(t.started_at - f.captured_at) <= w]
                if not triggers:
                    continue  # its trigger message may still come (or the frame expires)
                frames = [g for g in self._waiting if abs(g.captured_at - triggers[0].started_at) <= w]
                seen = ([s for s in self._seen_triggers if abs(s.at - f.captured_at) <= w]
                        + [s for s in self._seen_frames if abs(s.at - triggers[0].started_at) <= w])
                if seen:
                    self._refuse_pairing(done, triggers, frames, seen, "a trigger or frame within the window was "
                                         "already taken")
                elif len(triggers) == 1 and len(frames) == 1:
                    self._waiting.remove(f)
                    self._pending.remove(triggers[0])
                    self._commit(done, triggers[0], f)
                elif len(triggers) > 1:
                    self._refuse_pairing(done, triggers, [f], [], f"{len(triggers)} triggers within the window "
                                         "of one frame")
                else:
                    self._refuse_pairing(done, triggers, frames, [], f"{len(frames)} frames within the window "
                                         "of one trigger")
                progress = True
                break

    def _commit(self, done: _Done, t: Trigger, f: Frame) -> None:
        """Trigger t and frame f are one part. Under the lock."""
        if f.image is None:  # the camera lost this part's frame (incomplete buffer, full queue)
            self._remember_trigger(t, None)
            self._remember_frame(f, None)
            done.fail.append((t, "frame_lost", f"the camera's frame for this part was lost ({f.dropped})"))
            return
        self._remember_trigger(t, f.frame_id)
        self._remember_frame(f, t.part_id)
        self._paired[f.frame_id] = t
        self.counts["paired"] += 1
        start = min(f.captured_at, t.started_at)
        done.out.append(dataclasses.replace(f, part_id=t.part_id, captured_at=start,
                                            captured_wall=f.captured_wall - (f.captured_at - start)))

    def _refuse_pairing(self, done: _Done, triggers: list[Trigger], frames: list[Frame], seen: list[_Seen],
                        why: str) -> None:
        """Triggers and frames that cannot be told apart: every part concerned gets the fail-safe result,
        no frame is inspected. A part already paired with one of the `seen` frames and still awaiting its
        verdict is answered fail-safe too; one already answered is named in the alarm. Under the lock."""
        for t in triggers:
            if t in self._pending:
                self._pending.remove(t)
            self._remember_trigger(t, None)
            done.fail.append((t, "ambiguous", f"frame not attributable to this part alone: {why}"))
        for f in frames:
            if f in self._waiting:
                self._waiting.remove(f)
            self._remember_frame(f, None)
        self.counts["ambiguous_frames"] += len(frames)
        answered = []
        for s in seen:
            if s.frame_id is not None and s.frame_id in self._paired:
                if s.frame_id not in self._tainted:
                    self._tainted.add(s.frame_id)  # its verdict is replaced by the fail-safe result
                    self.counts["pairing_refused"] += 1
            elif s.part_id is not None:
                answered.append(s.part_id)
        self.counts["pairing_refused"] += len(triggers)
        times = sorted([round(t.started_at, 4) for t in triggers] + [round(f.captured_at, 4) for f in frames]
                       + [round(s.at, 4) for s in seen])
        spacing = min((b - a for a, b in zip(times, times[1:], strict=False) if b > a), default=None)
        done.alarms.append({
            "why": why, "parts": [t.part_id for t in triggers], "seqs": [t.seq for t in triggers],
            "frames": [f.frame_id for f in frames], "already_answered": answered,
            "window_ms": self.cfg.pairing_window_ms,
            "closest_ms": None if spacing is None else round(spacing * 1e3, 1),
            "hint": "plc.pairing_window_ms must be under half the shortest time between two parts, and above the "
                    "clock disagreement of fired_at and the camera's timestamps"})

    def _remember_trigger(self, t: Trigger, inspected_frame_id: int | None) -> None:
        if self.hardware:
            self._seen_triggers.append(_Seen(t.started_at, inspected_frame_id,
                                             None if inspected_frame_id is None else t.part_id))

    def _remember_frame(self, f: Frame, inspected_part_id: str | None) -> None:
        if self.hardware:
            self._seen_frames.append(_Seen(f.captured_at, None if inspected_part_id is None else f.frame_id,
                                           inspected_part_id))

    def _deliver(self, done: _Done) -> None:
        """Outside the lock: paired frames to the pipeline, fail-safe answers, alarms."""
        for f in done.out:
            self._out.put(f)
        for t, reason, error in done.fail:
            self._publish_fail_safe(t, reason, error)
        for detail in done.alarms:
            self._alarms.raise_alarm("plc_pairing_refused", detail)

    def _expire(self, now: float) -> None:
        expired, unacked = [], []
        done = _Done()
        with self._lock:
            for t in [t for t in self._pending if now - t.started_at > self.no_frame_after_s]:
                self._pending.remove(t)
                self._remember_trigger(t, None)
                expired.append(t)
            wait = self.frame_wait_s if self.hardware else self.window_s
            for f in [f for f in self._waiting if now - f.captured_at > wait]:
                self._waiting.remove(f)
                self._remember_frame(f, None)
                self.counts["unsolicited_frames"] += 1
            for seen in (self._seen_triggers, self._seen_frames):
                while seen and now - seen[0].at > self.seen_s:
                    seen.popleft()
            if self.cfg.ack_timeout_ms:
                limit = self.cfg.ack_timeout_ms / 1000
                while self._unacked and now - next(iter(self._unacked.values())).published_at > limit:
                    unacked.append(self._unacked.popitem(last=False)[1].trigger)
                    self.counts["unacknowledged"] += 1
            self._match(done)
        self._deliver(done)
        for t in expired:
            self._alarms.raise_alarm("plc_no_frame", {
                "part_id": t.part_id, "seq": t.seq, "window_ms": self.cfg.pairing_window_ms,
                "waited_ms": round((now - t.started_at) * 1e3, 1),
                # fired_at -> arrival: the PLC/broker trip, eaten from the budget
                "trigger_transit_ms": round((t.received_at - t.started_at) * 1e3, 1),
                "camera": self.camera.state().connection.value})
            self._publish_fail_safe(t, "no_frame", f"no frame within {self.no_frame_after_s * 1e3:g} ms")
        for t in unacked:
            self._alarms.raise_alarm("plc_result_unacknowledged", {"part_id": t.part_id, "seq": t.seq,
                                                                   "ack_timeout_ms": self.cfg.ack_timeout_ms})

    def _update_ready(self, now: float) -> None:
        st: SourceState = self.camera.state()
        with self._lock:
            in_flight = self._in_flight()
            if st.connection is not Connection.CONNECTED:
                new = ("fault", f"camera {st.connection.value}: {st.detail}".rstrip(": "))
            elif in_flight >= self.cfg.max_in_flight:
                new = ("busy", f"{in_flight} parts in flight (max_in_flight {self.cfg.max_in_flight})")
            else:
                new = ("ready", "camera connected")
            if not self._connected.is_set():
                return
            if new != self._state:
                self._state = new
                self._ready_payload = self._ready_json(*new, in_flight=in_flight)
                log.info("plc: station %s (%s)", *new)
            elif not ((self._ready_dirty and now - self._ready_sent_at >= READY_REASSERT_MIN_S)
                      or now - self._ready_sent_at >= READY_REASSERT_S):
                return  # re-asserted: the same payload (its `at` is when the state was entered)
            payload = self._ready_payload
            self._ready_dirty = False
            self._ready_sent_at = now
            self._ready_echo.append(payload.encode())
        self._client.publish(self.topics["ready"], payload, qos=self.cfg.qos, retain=True)

    def _ready_json(self, state: str, reason: str, in_flight: int = 0) -> str:
        return PlcReadyPayload(state=state, reason=reason, at=_utc(time.time()), in_flight=in_flight).to_json()

    # -- results -------------------------------------------------------------------------------------------
    def submit(self, v: Verdict) -> None:
        """The pipeline's verdict for a paired frame -> the PLC's result (post thread)."""
        with self._lock:
            t = self._paired.pop(v.frame_id, None)
            tainted = v.frame_id in self._tainted
            self._tainted.discard(v.frame_id)
        if t is None:
            return  # not a PLC part (cannot happen: unpaired frames never reach the pipeline)
        if tainted:  # another trigger or frame came within the window meanwhile: whose image it was is unknown
            self._publish_fail_safe(t, "ambiguous", "frame not attributable to this part alone: a trigger or "
                                    "frame within the window came after it was paired")
            return
        fail_safe = v.outcome is Outcome.LATE or v.error is not None
        reason = "pass" if not v.actuate and not fail_safe else (v.reason.value if v.reason is not None else "late")
        if fail_safe and v.outcome is Outcome.LATE:
            reason = "late"
        self._result(t, result="NG" if v.actuate else "OK", reason=reason, fail_safe=fail_safe, frame_id=v.frame_id,
                     defects=[DefectOut(**{"class": d.class_name, "confidence": min(max(d.confidence, 0.0), 1.0),
                                           "box": d.box}) for d in v.defects], error=v.error)

    def _publish_fail_safe(self, t: Trigger, reason: str, error: str) -> None:
        with self._lock:
            self.counts[f"fail_safe_{reason}"] += 1
        self._result(t, result=self.fail_safe_result, reason=reason, fail_safe=True, frame_id=None, defects=[],
                     error=error)

    def _result(self, t: Trigger, *, result: str, reason: str, fail_safe: bool, frame_id: int | None,
                defects: list, error: str | None) -> None:
        now, now_wall = time.monotonic(), time.time()
        start_wall = now_wall - (now - t.started_at)
        p = PlcResultPayload(part_id=t.part_id, seq=t.seq, result=result, reason=reason, fail_safe=fail_safe,
                             defects=defects, frame_id=frame_id, trigger_at=_utc(start_wall),
                             deadline=_utc(start_wall + self.budget_s), result_at=_utc(now_wall),
                             late=now - t.started_at > self.budget_s, latency_ms=(now - t.started_at) * 1e3,
                             error=error)
        with self._lock:
            self.counts["results"] += 1
            self.counts["late_results"] += p.late
            self._latency_ms.append(p.latency_ms)
            if self.cfg.ack_timeout_ms:
                self._unacked[(t.part_id, t.seq)] = _Answered(t, now)
        self._publish(p)
        if self._on_result is not None:  # a part's answer (a refused payload names no part: not mirrored)
            try:
                self._on_result(p)
            except Exception:  # a mirror (OPC UA) must never stop the handshake
                log.exception("plc: on_result failed")

    def _publish(self, p: PlcResultPayload) -> None:
        # paho queues while disconnected; a PLC that sees no result in time diverts the part itself.
        self._client.publish(self.topics["result"], p.to_json(), qos=self.cfg.qos)


class PairedSource:
    """The FrameSource the pipeline reads: camera frames that were paired with a PLC trigger."""

    def __init__(self, hs: PlcHandshake) -> None:
        self._hs = hs
        self.name = f"plc+{hs.camera.name}"

    def start(self) -> None:
        self._hs.camera.start()

    def read(self, timeout: float) -> Frame | None:
        return self._hs._out.get(timeout)

    def stop(self) -> None:
        self._hs.camera.stop()
        # The service stops its source first and the publisher before the handshake: alarms summed by the
        # throttle go out now, while the publisher still delivers them.
        self._hs._alarms.flush()

    def state(self) -> SourceState:
        """The camera's state, counting only the frames handed to the pipeline (paired with a trigger):
        an unsolicited frame gets no verdict by design and must not read as a stalled pipeline."""
        st = self._hs.camera.state()
        with self._hs._lock:
            paired, unsolicited = self._hs.counts["paired"], self._hs.counts["unsolicited_frames"]
        dropped = dict(st.dropped or {})
        dropped.update(self._hs._out.counts())
        if unsolicited:
            dropped["unsolicited"] = unsolicited
        return dataclasses.replace(st, frames=paired, dropped=dropped)

    def counters(self) -> dict[str, int]:
        """The camera's transport counters (GenICam: lost/incomplete frames, resends), {} if it has none."""
        counters = getattr(self._hs.camera, "counters", None)
        return counters() if callable(counters) else {}

    @property
    def finished(self) -> bool:
        return self._hs.camera.finished and len(self._hs._out) == 0

    def software_trigger(self) -> bool:
        return self._hs.camera.software_trigger()


class VerdictTopicOnly:
    """What the MQTT publisher gets from the pipeline in handshake mode: verdicts for the informational
    `.../verdict` topic (when `mqtt.publish_verdicts`), never a reject. The PLC's `.../result` is the
    part's one answer (NG included, fail-safe answers included); a reject on `.../reject` as well would
    let a second subscriber eject the same part again, and the parts answered without a frame would be
    missing from it. So `.../reject` stays silent, and `actuate` on `.../verdict` says so (false: no
    reject was signalled there). Started and stopped with the publisher itself (not here)."""

    name = "mqtt-verdicts"

    def __init__(self, publisher) -> None:
        self._publisher = publisher

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def submit(self, v: Verdict) -> None:
        if self._publisher.cfg.publish_verdicts:
            self._publisher.submit(dataclasses.replace(v, actuate=False) if v.actuate else v)

    def state(self) -> dict[str, Any]:
        return {}
