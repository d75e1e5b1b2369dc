"""The PLC part-ID handshake (section `plc`, on the `mqtt` section's broker): with it on, the pipeline reads
the camera's frames paired with the PLC's triggers, and the handshake's `.../result` is each part's only
answer (docs/controls-engineer.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from inspector.service.outputs.base import Output, Wiring
from inspector.service.report import HealthCheck

log = logging.getLogger(__name__)

# How long start() waits for the PLC handshake's broker connection, so the retained `ready` state is
# out before the camera opens. It is not fatal: paho keeps reconnecting and the PLC sees `fault`
# (the retained last will of an earlier run, or nothing) until it connects.
PLC_CONNECT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class PlcReport:
    """The PLC handshake (plc.enabled): what the PLC was told. Fail-safe answers are not escapes: the
    PLC diverts on them (NG), and on a result that does not come by its deadline."""

    connected: bool  # the handshake's own broker connection
    station: str  # ready | busy | fault, as the PLC sees it (retained .../ready)
    station_reason: str
    triggers: int
    results: int
    late_results: int  # published after trigger + budget
    fail_safe: dict[str, int]  # answered without an inspection, by reason (no_frame, camera_lost, busy)
    bad_triggers: int
    duplicate_triggers: int
    unsolicited_frames: int
    in_flight: int
    unacknowledged: int
    latency_ms: dict[str, float]  # trigger -> result on the inspector's clock, recent results (p50, p99, max, n)
    pairing_refused: int = 0  # hardware trigger: parts answered `ambiguous` (frame not attributable to them alone)
    ready_overwritten: int = 0  # another client wrote the retained ready topic (re-asserted)
    alarms_folded: int = 0  # PLC alarms summed into another instead of sent on their own (throttle)

    def as_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "station": self.station, "station_reason": self.station_reason,
                "triggers": self.triggers, "results": self.results, "late_results": self.late_results,
                "fail_safe": dict(self.fail_safe), "bad_triggers": self.bad_triggers,
                "duplicate_triggers": self.duplicate_triggers, "unsolicited_frames": self.unsolicited_frames,
                "in_flight": self.in_flight, "unacknowledged": self.unacknowledged, "latency_ms": dict(self.latency_ms),
                "pairing_refused": self.pairing_refused, "ready_overwritten": self.ready_overwritten,
                "alarms_folded": self.alarms_folded}


def plc_report(hs: Any) -> PlcReport:
    s = hs.state()
    return PlcReport(
        connected=bool(s["connected"]), station=s["station"], station_reason=s["station_reason"],
        triggers=s["triggers"], results=s["results"], late_results=s["late_results"],
        fail_safe={k[len("fail_safe_"):]: n for k, n in s.items() if k.startswith("fail_safe_") and n},
        bad_triggers=s["bad_triggers"], duplicate_triggers=s["duplicate_triggers"],
        unsolicited_frames=s["unsolicited_frames"], in_flight=s["in_flight"], unacknowledged=s["unacknowledged"],
        latency_ms=hs.latency_ms(), pairing_refused=s.get("pairing_refused", 0),
        ready_overwritten=s.get("ready_overwritten", 0), alarms_folded=s.get("alarms_folded", 0))


class PlcOutput(Output):
    name = "plc"
    section = "plc"
    answers_parts = True  # started first (triggers need it), stopped last, first on the post thread

    def enabled(self, cfg) -> bool:
        return cfg.plc.enabled

    def build(self, w: Wiring) -> None:
        from inspector.signalling.plc import PlcHandshake

        cfg = w.cfg
        opcua = w.output("opcua")  # mirrors every result the PLC gets, fail-safe ones included
        self.obj = PlcHandshake(cfg.mqtt, cfg.plc, w.camera, budget_ms=cfg.decision.budget_ms,
                                on_late=cfg.decision.on_late, alarm=w.alarms.raise_alarm,
                                on_result=opcua.submit_result if opcua is not None else None)
        w.source = self.obj.source  # the pipeline reads camera frames paired with the PLC's triggers

    @property
    def sink(self):
        return self.obj

    def route(self, post, w: Wiring):
        # The PLC's answer goes out before any disk write (it is first: `answers_parts`). The publisher
        # gets verdicts for .../verdict only: no reject (see VerdictTopicOnly). OPC UA mirrors the
        # handshake's results (on_result above), not the verdicts.
        from inspector.signalling.plc import VerdictTopicOnly

        publisher, opcua = w.output("mqtt"), w.output("opcua")
        return [VerdictTopicOnly(s) if s is publisher else s for s in post if opcua is None or s is not opcua]

    def started(self, svc) -> None:
        if not self.obj.wait_connected(PLC_CONNECT_WAIT_S):
            log.warning("plc: no broker at %s:%s after %.0f s; the handshake keeps trying (the PLC sees no `ready`)",
                        svc.cfg.mqtt.host, svc.cfg.mqtt.port, PLC_CONNECT_WAIT_S)

    def report(self, sink_states: dict[str, dict[str, Any]]) -> PlcReport:
        return plc_report(self.obj)

    @classmethod
    def checks(cls, part: PlcReport | None) -> tuple[HealthCheck, ...]:
        if part is None:  # a line without a PLC handshake has nothing to check there
            return ()
        # without its broker link no trigger arrives and no result leaves
        return (HealthCheck("plc", part.connected, f"connected, station {part.station}" if part.connected
                            else "no broker connection: triggers cannot arrive, results cannot leave"),)

    @classmethod
    def healthz(cls, part: PlcReport | None) -> dict[str, Any]:
        return {"plc": None if part is None else {
            "connected": part.connected, "station": part.station, "station_reason": part.station_reason,
            "in_flight": part.in_flight, "late_results": part.late_results}}

    @classmethod
    def heartbeat(cls, part: PlcReport | None) -> dict[str, Any]:
        return {} if part is None else {"plc_station": part.station}

    @classmethod
    def status(cls, part: PlcReport | None) -> str:
        return "" if part is None else f" | plc {part.station} {part.results}/{part.triggers}"

    @classmethod
    def summary(cls, part: PlcReport) -> dict[str, Any]:
        return part.as_dict()
