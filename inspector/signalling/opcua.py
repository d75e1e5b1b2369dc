"""OPC UA output (optional extra `opcua`, asyncua): the station's state, the last result and counters as
read-only nodes on a small server the inspector runs.

Server, not client: the inspector exposes what it knows and every OPC UA client on the line reads or
subscribes to it (SCADA, historians, and PLCs with an OPC UA client block, e.g. S7-1500 or TwinCAT).
As a client writing into a plant server, the inspector would need write rights and a node layout on
someone else's server, and a slow or restarting plant server would sit on the inspection path; here
nothing the line does waits on OPC UA. The PLC's own reject path stays MQTT (signal map in
docs/controls-engineer.md): OPC UA is for state and counters, not per-part actuation.

Nodes, under Objects/Inspector (namespace `opcua.namespace`):
    State (String: ready | busy | fault), StateReason (String),
    LastPartId (String), LastFrameId (Int64), LastResult (String: OK | NG), LastReason (String),
    LastLatencyMs (Double), LastAt (DateTime),
    Parts, Ok, Ng, FailSafe (UInt64 counters since start)

What feeds the nodes (inspector/service/app.py): with the PLC handshake on, every result the PLC
gets (`record`, from PlcHandshake's on_result: fail-safe answers without a frame included) and the
station state the PLC sees; without it, every verdict (`submit`, as a pipeline sink) and the camera's
connection as the state. The counters therefore always match what the line was told.

asyncua runs on its own event loop in one thread (`opcua-server`); other threads hand values over
with `call_soon_threadsafe`, so an OPC UA client never slows the frame path. Updates come from several
threads (post thread, the handshake's threads, the service loop): the counters are under a lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from inspector.config import OPCUAConfig
from inspector.errors import InspectorError
from inspector.frames import Outcome, Verdict
from inspector.kernel import realtime

log = logging.getLogger(__name__)

_STRINGS = ("State", "StateReason", "LastPartId", "LastResult", "LastReason")
_COUNTERS = ("Parts", "Ok", "Ng", "FailSafe")


class OpcUaServer:
    """A VerdictSink that mirrors results into OPC UA nodes; `set_station()` sets the state node."""

    name = "opcua"

    def __init__(self, cfg: OPCUAConfig) -> None:
        try:
            import asyncua  # noqa: F401 - checked here so the error names the extra
        except ImportError as e:
            raise InspectorError("opcua.enabled needs the `opcua` extra: pip install 'inspector[opcua]'") from e
        self.cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opcua-server", daemon=True)
        self._nodes: dict[str, Any] = {}
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._lock = threading.Lock()
        self._station = ("fault", "starting")
        self.endpoint = f"opc.tcp://{cfg.host}:{cfg.port}/inspector/"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise InspectorError(f"OPC UA server did not start on {self.endpoint}: {self._error or 'timeout'}")
        log.info("OPC UA server on %s", self.endpoint)

    def stop(self, timeout: float = 2.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        with self._lock:
            counts, station = dict(self._counts), self._station
        return {"endpoint": self.endpoint, "running": self._ready.is_set() and self._thread.is_alive(),
                "station": station[0], **{k.lower(): n for k, n in counts.items()}}

    # -- updates (any thread) ----------------------------------------------------------------------------
    def set_station(self, state: str, reason: str = "") -> None:
        with self._lock:
            if (state, reason) == self._station:
                return
            self._station = (state, reason)
        self._write({"State": state, "StateReason": reason})

    def submit(self, v: Verdict) -> None:
        """A pipeline verdict (VerdictSink; used when the PLC handshake is off)."""
        self.record(result="NG" if v.actuate else "OK", reason=v.reason.value if v.reason is not None else "pass",
                    fail_safe=v.outcome is Outcome.LATE or v.error is not None, part_id=v.part_id, frame_id=v.frame_id,
                    latency_ms=float(v.timings.total_ms))

    def submit_result(self, p: Any) -> None:
        """A result the PLC handshake published (a PlcResultPayload): fail-safe answers included."""
        self.record(result=p.result, reason=p.reason, fail_safe=p.fail_safe, part_id=p.part_id, frame_id=p.frame_id,
                    latency_ms=p.latency_ms)

    def record(self, *, result: str, reason: str, fail_safe: bool, part_id: str | None, frame_id: int | None,
               latency_ms: float | None) -> None:
        with self._lock:
            self._counts["Parts"] += 1
            self._counts["Ng" if result == "NG" else "Ok"] += 1
            self._counts["FailSafe"] += bool(fail_safe)
            counts: Mapping[str, int] = dict(self._counts)
        self._write({"LastPartId": part_id or "", "LastFrameId": -1 if frame_id is None else frame_id,
                     "LastResult": result, "LastReason": reason,
                     "LastLatencyMs": float(latency_ms or 0.0), "LastAt": datetime.now(UTC), **counts})

    def _write(self, values: dict[str, Any]) -> None:
        if self._loop is None or not self._ready.is_set():
            return
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._set(values)))

    async def _set(self, values: dict[str, Any]) -> None:
        from asyncua import ua

        for k, val in values.items():
            node = self._nodes.get(k)
            if node is None:
                continue
            vt = self._types[k]
            await node.write_value(ua.DataValue(ua.Variant(val, vt)))

    # -- the server's thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        realtime.enter("service")
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        from asyncua import Server, ua

        self._stop = asyncio.Event()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("inspector")
        # Read-only values, no secrets: no security policy (a line network; put it behind the OT firewall).
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(self.cfg.namespace)
        obj = await server.nodes.objects.add_object(idx, "Inspector")
        self._types = {**dict.fromkeys(_STRINGS, ua.VariantType.String), "LastFrameId": ua.VariantType.Int64,
                       "LastLatencyMs": ua.VariantType.Double, "LastAt": ua.VariantType.DateTime,
                       **dict.fromkeys(_COUNTERS, ua.VariantType.UInt64)}
        initial = {**dict.fromkeys(_STRINGS, ""), "State": self._station[0], "StateReason": self._station[1],
                   "LastFrameId": -1, "LastLatencyMs": 0.0, "LastAt": datetime.now(UTC),
                   **dict.fromkeys(_COUNTERS, 0)}
        for name, vt in self._types.items():
            self._nodes[name] = await obj.add_variable(idx, name, ua.Variant(initial[name], vt))
        async with server:
            self._ready.set()
            await self._stop.wait()
