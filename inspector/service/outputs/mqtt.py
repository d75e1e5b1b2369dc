"""The MQTT publisher (section `mqtt`): the durable reject, `.../verdict`, status, heartbeat and alarms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inspector.service.outputs.base import Output, Wiring
from inspector.service.report import HealthCheck


@dataclass(frozen=True, slots=True)
class MqttReport:
    connected: bool
    outbox_depth: int
    outbox_degraded: bool
    last_error: str | None
    rejects_not_delivered: int  # not delivered before the deadline: expired, evicted, dropped (escaped_part)
    rejects_late: int  # acknowledged, but after the deadline (escaped_part)
    escaped_frame_ids: tuple[str, ...]


def mqtt_report(state: dict[str, Any] | None) -> MqttReport:
    s = state or {}
    ids = s.get("escaped_frame_ids") or ()
    return MqttReport(
        connected=bool(s.get("connected")),
        outbox_depth=int(s.get("outbox_depth") or 0),
        outbox_degraded=bool(s.get("outbox_degraded")),
        last_error=s.get("last_error"),
        # the publisher counts each reject id once: `undelivered` (expired, evicted, dropped; also a
        # previous run's leftovers whose deadline passed) and `late_acks` (PUBACK after the deadline)
        rejects_not_delivered=int(s.get("undelivered", s.get("expired", 0)) or 0),
        rejects_late=int(s.get("late_acks", 0) or 0),
        escaped_frame_ids=tuple(str(x) for x in ids),
    )


class MqttOutput(Output):
    name = "mqtt"
    section = "mqtt"
    summary_slot = None  # its counters are the summary's `sinks.mqtt`

    def enabled(self, cfg) -> bool:
        return cfg.mqtt.enabled

    def build(self, w: Wiring) -> None:
        from inspector.signalling.publisher import MqttPublisher

        self.obj = MqttPublisher(w.cfg.mqtt, model=w.model, config_hash=w.config_hash,
                                 heartbeat_fn=w.service.heartbeat, alarm_counter=w.alarms.record)

    @property
    def sink(self):
        return self.obj

    def started(self, svc) -> None:
        svc.alarms.attach(self.obj.alarm)  # the alarms raised while starting were kept for it

    def report(self, sink_states: dict[str, dict[str, Any]]) -> MqttReport:
        return mqtt_report(sink_states.get(self.obj.name))

    @classmethod
    def checks(cls, part: MqttReport | None) -> tuple[HealthCheck, ...]:
        if part is None:
            return HealthCheck("mqtt", True, "disabled"), HealthCheck("outbox", True, "disabled")
        return (HealthCheck("mqtt", part.connected,
                            "connected" if part.connected else f"down: {part.last_error or 'not connected'}"),
                HealthCheck("outbox", not part.outbox_degraded,
                            "degraded: rejects are delivered from memory but not stored durably "
                            f"({part.last_error or 'outbox write failed'})" if part.outbox_degraded
                            else f"ok ({part.outbox_depth} waiting)"))

    @classmethod
    def healthz(cls, part: MqttReport | None) -> dict[str, Any]:
        return {"mqtt": None if part is None else {
            "connected": part.connected, "outbox_depth": part.outbox_depth,
            "outbox_degraded": part.outbox_degraded, "last_error": part.last_error}}

    @classmethod
    def status(cls, part: MqttReport | None) -> str:
        if part is None:
            return ""
        return (f" | mqtt {'up' if part.connected else 'DOWN'} outbox {part.outbox_depth}"
                + (" DEGRADED" if part.outbox_degraded else ""))

    @classmethod
    def escapes(cls, part: MqttReport | None) -> tuple[int, int, tuple[str, ...]]:
        if part is None:
            return 0, 0, ()
        return part.rejects_not_delivered, part.rejects_late, part.escaped_frame_ids
