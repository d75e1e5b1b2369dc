"""The OPC UA server against a real asyncua client: the nodes exist, carry the station state, the last
result and the counters, and follow what the inspector does."""

from __future__ import annotations

import asyncio
import socket
import time

import asyncua  # noqa: E402 - the opcua extra (make test installs it)
import pytest

from inspector.config import OPCUAConfig
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.signalling.opcua import OpcUaServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def read_nodes(endpoint: str, ns_uri: str, names: list[str]) -> dict:
    async with asyncua.Client(url=endpoint, timeout=10) as client:
        idx = await client.get_namespace_index(ns_uri)
        obj = await client.nodes.objects.get_child([f"{idx}:Inspector"])
        out = {}
        for n in names:
            node = await obj.get_child([f"{idx}:{n}"])
            out[n] = await node.read_value()
        return out


def read(server: OpcUaServer, names: list[str]) -> dict:
    return asyncio.run(read_nodes(server.endpoint, server.cfg.namespace, names))


def wait_for(server, names, pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        vals = read(server, names)
        if pred(vals):
            return vals
        time.sleep(0.05)
    raise AssertionError(f"OPC UA nodes never matched: {vals}")


@pytest.fixture
def server():
    s = OpcUaServer(OPCUAConfig(enabled=True, port=free_port(), namespace="urn:inspector:test"))
    s.start()
    yield s
    s.stop()


def test_a_client_reads_state_last_result_and_counters(server):
    names = ["State", "StateReason", "LastPartId", "LastResult", "LastReason", "Parts", "Ok", "Ng", "FailSafe"]
    first = read(server, names)
    assert first["State"] == "fault" and first["StateReason"] == "starting" and first["Parts"] == 0

    server.set_station("ready", "camera connected")
    server.submit(make_verdict(synth_frame(1, frame_id=1), outcome="PASS"))
    server.submit(make_verdict(synth_frame(2, frame_id=2), outcome="REJECT", defects=(make_defect(),)))
    vals = wait_for(server, names, lambda v: v["Parts"] == 2)
    assert vals["State"] == "ready" and vals["StateReason"] == "camera connected"
    assert (vals["Ok"], vals["Ng"], vals["FailSafe"]) == (1, 1, 0)
    assert vals["LastResult"] == "NG" and vals["LastReason"] == "defect"

    server.submit(make_verdict(synth_frame(3, frame_id=3), outcome="LATE"))
    server.set_station("fault", "camera reconnecting")
    vals = wait_for(server, names, lambda v: v["Parts"] == 3 and v["State"] == "fault")
    assert vals["FailSafe"] == 1 and vals["LastReason"] == "late"


def test_a_busy_port_is_a_clear_error():
    port = free_port()
    first = OpcUaServer(OPCUAConfig(enabled=True, port=port))
    first.start()
    try:
        second = OpcUaServer(OPCUAConfig(enabled=True, port=port))
        with pytest.raises(Exception, match=f"did not start on opc.tcp://127.0.0.1:{port}"):
            second.start()
    finally:
        first.stop()
