"""The reference line-side subscriber: what a reject actuator or PLC gateway should do.

- a persistent session (fixed client id, clean_start False, session expiry on v5), so rejects
  published while it is briefly disconnected are queued by the broker and still arrive;
- deduplicates by `id` (delivery is at-least-once);
- refuses to actuate on a reject whose `deadline` has passed at receipt (counted as expired): the
  part it describes is no longer in front of the ejector;
- watches `status` and `heartbeat` and says loudly when the inspector is offline or silent, which
  is when a real line must fail safe (stop, or divert every part);
- reports capture-to-receipt latency.

`Actuator` does the work and keeps the figures; `run_actuator` is the CLI wrapper.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from inspector.config import InspectorConfig, MQTTConfig
from inspector.signalling.mqtt_client import connect_kwargs, make_client
from inspector.signalling.payloads import (
    AlarmPayload,
    HeartbeatPayload,
    RejectPayload,
    StatusPayload,
)

SESSION_EXPIRY_S = 3600  # the broker keeps our subscriptions and queued rejects this long
_DEDUP_KEEP = 100_000  # ids remembered for deduplication (far more than in flight at once)
_STALE_FACTOR = 3.0  # heartbeat stale after this many periods without one


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Actuator:
    """Subscribes to a station's topics and 'actuates' (prints) each distinct, in-time reject."""

    def __init__(self, cfg: MQTTConfig, *, out: TextIO | None = None, client_id: str | None = None,
                 on_reject: Callable[[RejectPayload, float], None] | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.on_reject = on_reject
        self.client_id = client_id or f"actuator-{cfg.line}-{cfg.station}"
        root = cfg.topic_root
        self.topics = {t: f"{root}/{t}" for t in ("reject", "status", "heartbeat", "alarm")}
        self.stale_after_s = _STALE_FACTOR * cfg.heartbeat_ms / 1000
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.actuated: list[str] = []  # distinct in-time reject ids, in arrival order
        self.latencies_ms: list[float] = []
        self.duplicates = 0
        self.expired: list[str] = []
        self.invalid = 0
        self.alarms: Counter[str] = Counter()
        self.alarm_ids: set[str] = set()
        self.escaped_ids: set[str] = set()  # reject ids named by escaped_part alarms
        self.status: str | None = None
        self.status_log: list[tuple[float, str]] = []  # (monotonic time, state)
        self.last_heartbeat: float | None = None  # monotonic
        self.heartbeat_seq: int | None = None
        self.stale_episodes = 0
        self._stale = False
        self._unreachable = False
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set on SUBACK (after each connect)
        self.enough = threading.Event()
        self.expect: int | None = None
        self._client = self._make_client()

    # -- connection ------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = make_client(self.cfg, client_id=self.client_id, persistent=True,
                        logger="inspector.devtools.actuator.paho")
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = self._on_connect_fail
        # back quickly after an outage: the broker queued our rejects meanwhile, each with a deadline
        c.reconnect_delay_set(min_delay=min(self.cfg.reconnect_min_s, 0.1),
                              max_delay=min(self.cfg.reconnect_max_s, 1.0))
        return c

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                   **connect_kwargs(self.cfg, session_expiry_s=SESSION_EXPIRY_S))
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._say(f"CONNECT REFUSED by {self.cfg.host}:{self.cfg.port}: {reason_code.getName()}")
            return
        resumed = getattr(flags, "session_present", False)
        self._say(f"connected to {self.cfg.host}:{self.cfg.port} as {self.client_id} "
                  f"({'session resumed' if resumed else 'new session'})")
        # Subscribing again is harmless on a resumed session and needed on a new one.
        client.subscribe([(self.topics["reject"], self.cfg.qos), (self.topics["alarm"], 1),
                          (self.topics["status"], 1), (self.topics["heartbeat"], 0)])
        self._unreachable = False
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed.set()  # SUBACK: from here on, a reject published is a reject received

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._unreachable:  # once per episode, not once per retry
            self._unreachable = True
            self._say(f"cannot reach the broker at {self.cfg.host}:{self.cfg.port} (retrying): "
                      "no rejects can arrive - fail safe")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason_code.value != 0:
            self._say(f"DISCONNECTED from broker ({reason_code.getName()}): cannot receive rejects - fail safe")

    # -- messages --------------------------------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        now = time.time()
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            if kind == "reject":
                self._reject(RejectPayload.model_validate_json(msg.payload), now)
            elif kind == "status":
                self._status(StatusPayload.model_validate_json(msg.payload))
            elif kind == "heartbeat":
                self._heartbeat(HeartbeatPayload.model_validate_json(msg.payload))
            elif kind == "alarm":
                self._alarm(AlarmPayload.model_validate_json(msg.payload))
        except ValidationError as e:
            with self._lock:
                self.invalid += 1
            self._say(f"INVALID payload on {msg.topic}: {e.error_count()} problem(s): {e.errors()[0]['msg']}")

    def _reject(self, r: RejectPayload, now: float) -> None:
        with self._lock:
            if r.id in self._seen:
                self.duplicates += 1
                return
            self._seen[r.id] = None
            if len(self._seen) > _DEDUP_KEEP:
                self._seen.popitem(last=False)
            late_s = now - r.deadline.timestamp()
            if late_s > 0:
                # The part has passed the ejector: actuating now would eject the wrong part.
                self.expired.append(r.id)
                self._say(f"IGNORED expired reject {r.id} part {r.part_id}: {late_s * 1000:.0f} ms past its deadline")
                return
            latency_ms = (now - r.captured_at.timestamp()) * 1000
            self.actuated.append(r.id)
            self.latencies_ms.append(latency_ms)
            n = len(self.actuated)
            if self.expect is not None and n >= self.expect:
                self.enough.set()
        defects = ", ".join(f"{d.class_} {d.confidence:.2f}" for d in r.defects) or r.reason
        self._say(f"REJECT part {r.part_id} ({defects}) id {r.id} capture->receipt {latency_ms:.1f} ms, "
                  f"{-late_s * 1000:.0f} ms before deadline")
        if self.on_reject is not None:
            self.on_reject(r, now)

    def _status(self, s: StatusPayload) -> None:
        with self._lock:
            changed = s.state != self.status
            self.status = s.state
            self.status_log.append((time.monotonic(), s.state))
        if not changed:
            return
        if s.state == "online":
            model = f"model {s.model.name} {s.model.version}" if s.model else ""
            self._say(f"inspector ONLINE ({model}, config {s.config_hash}, boot {s.boot})")
        elif s.state == "offline":
            self._say("inspector OFFLINE (connection lost without a goodbye): FAIL SAFE - no rejects will come")
        else:
            self._say("inspector STOPPED (clean shutdown): FAIL SAFE - no rejects will come")

    def _heartbeat(self, h: HeartbeatPayload) -> None:
        with self._lock:
            self.last_heartbeat = time.monotonic()
            self.heartbeat_seq = h.seq
            was_stale, self._stale = self._stale, False
        if was_stale:
            self._say(f"heartbeat back (seq {h.seq})")

    def _alarm(self, a: AlarmPayload) -> None:
        with self._lock:
            if a.id in self.alarm_ids:
                return
            self.alarm_ids.add(a.id)
            self.alarms[a.kind] += 1
            if a.kind == "escaped_part" and a.reject is not None:
                self.escaped_ids.add(a.reject.id)
        self._say(f"ALARM {a.kind}: {a.message}")

    def check_heartbeat(self) -> bool:
        """True while fresh; says STALE once per episode. Call it periodically."""
        with self._lock:
            if self.last_heartbeat is None:
                return False
            age = time.monotonic() - self.last_heartbeat
            newly = age > self.stale_after_s and not self._stale
            if newly:
                self._stale = True
                self.stale_episodes += 1
        if newly:
            self._say(f"heartbeat STALE: nothing for {age:.1f} s (> {self.stale_after_s:.1f} s): FAIL SAFE")
        return not self._stale

    # -- running ---------------------------------------------------------------------------------------
    def run(self, expect: int | None, duration: float | None) -> int:
        self.expect = expect
        if expect == 0:
            self.enough.set()
        self.start()
        end = time.monotonic() + duration if duration is not None else None
        try:
            while end is None or time.monotonic() < end:
                if self.enough.wait(0.1):
                    break
                self.check_heartbeat()
        finally:
            self.stop()
        ok = expect is None or len(self.actuated) >= expect
        self._say(self.summary(expect))
        return 0 if ok else 1

    def summary(self, expect: int | None = None) -> str:
        with self._lock:
            lat = sorted(self.latencies_ms)
        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.1f}" if lat else "-"
        parts = [f"rejects actuated {len(self.actuated)}" + (f"/{expect} expected" if expect is not None else ""),
                 f"duplicates {self.duplicates}", f"expired (ignored) {len(self.expired)}", f"invalid {self.invalid}",
                 f"capture->receipt p50 {pct(0.5)} ms p99 {pct(0.99)} ms max {(f'{lat[-1]:.1f}' if lat else '-')} ms",
                 f"alarms {dict(self.alarms) or 0}", f"status {self.status or 'unknown'}",
                 f"stale heartbeat episodes {self.stale_episodes}"]
        return "summary: " + "; ".join(parts)

    def _say(self, text: str) -> None:
        print(f"{_now_iso()} actuator: {text}", file=self.out, flush=True)


def run_actuator(cfg: InspectorConfig, expect: int | None, duration: float | None) -> int:
    """`inspector actuator`: 0 when --expect N distinct rejects arrived (or none was expected)."""
    if expect is not None and expect < 0:
        print(f"--expect: expected a count >= 0, got {expect}", file=sys.stderr)
        return 2
    act = Actuator(cfg.mqtt)

    def on_signal(signum, _frame):  # a supervisor's stop: finish cleanly and print the summary
        act.enough.set()

    # Installed for the run only: a caller (a test, an embedding process) gets its own back.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return act.run(expect, duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
