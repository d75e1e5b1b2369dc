"""The OPC UA server (section `opcua`, the `opcua` extra): the station state and every result as nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inspector.service.outputs.base import Output, Wiring
from inspector.service.report import HealthCheck


@dataclass(frozen=True, slots=True)
class OpcUaReport:
    endpoint: str
    running: bool
    station: str  # the State node
    parts: int
    ok: int
    ng: int
    fail_safe: int

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "running": self.running, "station": self.station, "parts": self.parts,
                "ok": self.ok, "ng": self.ng, "fail_safe": self.fail_safe}


def opcua_report(s: dict[str, Any] | None) -> OpcUaReport:
    s = s or {}
    return OpcUaReport(endpoint=str(s.get("endpoint", "")), running=bool(s.get("running")),
                       station=str(s.get("station", "")), parts=int(s.get("parts", 0)), ok=int(s.get("ok", 0)),
                       ng=int(s.get("ng", 0)), fail_safe=int(s.get("failsafe", 0)))


class OpcUaOutput(Output):
    name = "opcua"
    section = "opcua"

    def enabled(self, cfg) -> bool:
        return cfg.opcua.enabled

    def build(self, w: Wiring) -> None:
        from inspector.signalling.opcua import OpcUaServer

        self.obj = OpcUaServer(w.cfg.opcua)

    @property
    def sink(self):
        return self.obj

    def watch(self, svc, source_state) -> None:
        """The station state: the PLC handshake's in handshake mode, else the camera's connection."""
        plc = svc.output("plc")
        if plc is not None:
            self.obj.set_station(*plc.station())
        else:
            st = source_state
            connected = st.connection.value in ("connected", "ended")
            self.obj.set_station("ready" if connected else "fault",
                                 f"camera {st.connection.value}" + (f": {st.detail}" if st.detail else ""))

    def report(self, sink_states: dict[str, dict[str, Any]]) -> OpcUaReport:
        return opcua_report(sink_states.get(self.obj.name))

    @classmethod
    def checks(cls, part: OpcUaReport | None) -> tuple[HealthCheck, ...]:
        if part is None:
            return ()
        return (HealthCheck("opcua", part.running, f"serving {part.endpoint}" if part.running
                            else f"the OPC UA server on {part.endpoint} is not running"),)

    @classmethod
    def healthz(cls, part: OpcUaReport | None) -> dict[str, Any]:
        return {"opcua": None if part is None else {"endpoint": part.endpoint, "running": part.running}}

    @classmethod
    def summary(cls, part: OpcUaReport) -> dict[str, Any]:
        return part.as_dict()
