"""The PLC's side of the part-ID handshake, for `inspector plc-sim` and the tests: triggers out, results
checked (signal map: docs/controls-engineer.md). Not part of the service: nothing on the line imports it."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inspector.config import MQTTConfig
from inspector.signalling.mqtt_client import make_client
from inspector.signalling.plc import topics


@dataclass
class SimPart:
    part_id: str
    seq: int
    sent_at: float  # monotonic
    result: dict[str, Any] | None = None
    answered_at: float | None = None


class PlcSimulator:
    """Plays the PLC: publishes triggers, checks that every result names a trigger it sent (part id AND
    sequence number), once, and measures trigger -> result on its own clock. A reference for controls
    engineers, as `inspector actuator` is for rejects."""

    def __init__(self, mqtt_cfg: MQTTConfig, *, budget_ms: float, send_fired_at: bool = True,
                 client_id: str | None = None) -> None:
        self.cfg, self.budget_s, self.send_fired_at = mqtt_cfg, budget_ms / 1000, send_fired_at
        self.topics = topics(mqtt_cfg)
        self.parts: dict[tuple[str, int], SimPart] = {}
        self.unexpected: list[dict[str, Any]] = []  # results for no trigger we sent, or a second one
        self.ready: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = make_client(mqtt_cfg, client_id=client_id or f"plc-sim-{uuid.uuid4().hex[:6]}", persistent=False,
                        logger="inspector.plc_sim")
        c.on_connect = lambda cl, *a: cl.subscribe([(self.topics["result"], 1), (self.topics["ready"], 1)])
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        self._client = c

    def start(self, timeout: float = 10.0) -> PlcSimulator:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise ConnectionError(f"plc-sim: no broker at {self.cfg.host}:{self.cfg.port} within {timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def send(self, part_id: str, seq: int, fired_at: float | None = None) -> None:
        """One trigger; `fired_at` (UTC epoch seconds, default now) when the photo-eye fired: a PLC that
        publishes a part's trigger late, or after the next part's, still names its own photo-eye time."""
        msg: dict[str, Any] = {"part_id": part_id, "seq": seq}
        if self.send_fired_at:
            msg["fired_at"] = datetime.fromtimestamp(time.time() if fired_at is None else fired_at, tz=UTC).isoformat()
        with self._lock:
            self.parts[(part_id, seq)] = SimPart(part_id, seq, time.monotonic())
        self._client.publish(self.topics["trigger"], json.dumps(msg), qos=1)

    def send_raw(self, payload: bytes | str) -> None:
        self._client.publish(self.topics["trigger"], payload, qos=1)

    def ack(self, part_id: str, seq: int) -> None:
        self._client.publish(self.topics["ack"], json.dumps({"part_id": part_id, "seq": seq}), qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"unparsable": msg.payload[:200].decode("utf-8", "replace")}
        with self._lock:
            if msg.topic == self.topics["ready"]:
                self.ready.append(body)
                return
            part = self.parts.get((body.get("part_id"), body.get("seq")))
            if part is None or part.result is not None:
                self.unexpected.append(body)
                return
            part.result, part.answered_at = body, now

    def answered(self) -> int:
        with self._lock:
            return sum(p.result is not None for p in self.parts.values())

    def run(self, n: int, rate: float, *, prefix: str = "P", first_seq: int = 0, answer_timeout_s: float = 5.0,
            on_tick: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Sends `n` triggers at `rate` per second (paced on the monotonic clock), waits for every result."""
        period, t0 = 1.0 / rate, time.monotonic()
        for i in range(n):
            delay = t0 + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send(f"{prefix}{first_seq + i:07d}", first_seq + i)
            if on_tick is not None:
                on_tick(i)
        end = time.monotonic() + answer_timeout_s
        while self.answered() < len(self.parts) and time.monotonic() < end:
            time.sleep(0.01)
        return self.report()

    def report(self) -> dict[str, Any]:
        import numpy as np

        with self._lock:
            parts = list(self.parts.values())
            unexpected = list(self.unexpected)
        done = [p for p in parts if p.result is not None]
        lat = np.array([(p.answered_at - p.sent_at) * 1e3 for p in done]) if done else np.zeros(0)
        reasons = collections.Counter(p.result.get("reason") for p in done)
        return {
            "sent": len(parts), "answered": len(done), "missing": [p.part_id for p in parts if p.result is None][:50],
            "unexpected": len(unexpected),
            "ok": sum(p.result.get("result") == "OK" for p in done),
            "ng": sum(p.result.get("result") == "NG" for p in done),
            "fail_safe": sum(bool(p.result.get("fail_safe")) for p in done), "reasons": dict(reasons),
            # Late on the PLC's clock: the result came after trigger + budget (what the line feels).
            "late": int((lat > self.budget_s * 1e3).sum()),
            "late_by_inspector": sum(bool(p.result.get("late")) for p in done),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                           "p99": round(float(np.percentile(lat, 99)), 2),
                           "max": round(float(lat.max()), 2)} if lat.size else {},
        }
