"""`/metrics` and `/healthz` over real HTTP from a running Service (real OpenVINO, synthetic line)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector.config import InspectorConfig
from inspector.kernel.alarms import ALARM_KINDS
from inspector.service.app import Service
from inspector.service.metrics import BUCKETS_S, STAGES
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def make_config(tmp_path: Path, **over) -> InspectorConfig:
    base = {"source": {"kind": "synthetic", "parts_per_s": 20}, "model": {"path": str(REPO / "models/demo")},
            "mqtt": {"enabled": False}, "sampling": {"enabled": False}, "upload": {"window": None},
            "metrics": {"port": 0, "host": "127.0.0.1"}, "sink": {"jsonl": str(tmp_path / "verdicts.jsonl")}}
    base.update(over)
    return InspectorConfig(**base)


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()




def healthz(port: int) -> tuple[int, dict]:
    code, body = get(port, "/healthz")
    return code, json.loads(body)


def healthz_when(port: int, pred, what: str, timeout: float = 60.0) -> dict:
    """Waits until /healthz answers (code, body) with pred(code, body) true; returns the body."""
    def check():
        code, body = healthz(port)
        return body if pred(code, body) else None
    return wait_for(check, timeout, what)


@pytest.fixture
def running():
    made: list[Service] = []

    def start(cfg: InspectorConfig, extra_sinks=()) -> Service:
        svc = Service(cfg)
        svc.pipeline.sinks.extend(extra_sinks)
        made.append(svc)
        svc.start()
        return svc

    yield start
    for svc in made:
        svc.stop(deadline_s=5.0)


def families(port: int) -> dict:
    code, body = get(port, "/metrics")
    assert code == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_metrics_export_stage_histograms_and_every_raised_alarm(tmp_path, running):
    svc = running(make_config(tmp_path))
    port = svc.metrics.port
    wait_for(lambda: svc.pipeline.stats.frames >= 10, what="10 verdicts")
    for kind in ALARM_KINDS:
        svc.alarms.raise_alarm(kind, {"test": True})
    fams = families(port)

    h = fams["inspector_stage_latency_seconds"]
    assert h.type == "histogram"
    by_stage: dict[str, dict] = {}
    for s in h.samples:
        by_stage.setdefault(s.labels["stage"], {}).setdefault(s.name, []).append(s)
    assert set(by_stage) == set(STAGES)
    for stage, samples in by_stage.items():
        buckets = samples["inspector_stage_latency_seconds_bucket"]
        les = [b.labels["le"] for b in buckets]
        assert [float(x) for x in les[:-1]] == list(BUCKETS_S) and les[-1] == "+Inf"
        counts = [b.value for b in buckets]
        assert counts == sorted(counts), f"{stage}: buckets are cumulative"
        count = samples["inspector_stage_latency_seconds_count"][0].value
        assert counts[-1] == count >= 10
        assert samples["inspector_stage_latency_seconds_sum"][0].value > 0 or stage == "decide"
    # the budget range has resolution: 10, 50 and 100 ms are bucket bounds
    assert {0.01, 0.05, 0.1} <= set(BUCKETS_S)

    alarms = {s.labels["kind"]: s.value for s in fams["inspector_alarms"].samples if s.name == "inspector_alarms_total"}
    missing = [k for k in ALARM_KINDS if alarms.get(k, 0) < 1]
    assert not missing, f"raised but not in /metrics: {missing}"
    assert fams["inspector_healthy"].samples[0].value == 1.0
    # the status line and the heartbeat read the same report
    r = svc.report()
    assert "health ok" in r.status_line(1.0) and f"escapes {r.escapes.physical}" in r.status_line(1.0)
    hb = svc.heartbeat()
    assert hb["frames"] >= 10 and hb["healthy"] is True and hb["failed"] == [] and hb["p99_ms"] > 0


def test_healthz_is_green_while_verdicts_flow_and_red_when_they_stop(tmp_path, running):
    """A sink that wedges the post thread: frames keep arriving, verdicts stop; /healthz says which check."""

    class Wedge:
        name = "wedge"

        def __init__(self) -> None:
            self.armed = threading.Event()
            self.release = threading.Event()
            self.stuck = threading.Event()

        def start(self):
            pass

        def submit(self, v):
            if self.armed.is_set():
                self.stuck.set()
                self.release.wait(60)

        def stop(self, timeout=0.0):
            self.release.set()

        def state(self):
            return {}

    wedge = Wedge()
    svc = running(make_config(tmp_path), extra_sinks=[wedge])
    port = svc.metrics.port
    try:
        wait_for(lambda: svc.pipeline.stats.frames >= 5, what="verdicts")
        body = healthz_when(port, lambda code, _: code == 200, "a green /healthz")
        assert body["ok"] and body["failed"] == [] and body["checks"]["verdicts"]["ok"]

        wedge.armed.set()
        assert wedge.stuck.wait(30), "the post thread never reached the wedged sink"
        body = healthz_when(port, lambda code, _: code == 503, "/healthz to turn red")
        assert body["ok"] is False and body["failed"] == ["verdicts"], body
        assert "verdicts stopped" in body["checks"]["verdicts"]["detail"]
        assert families(port)["inspector_health_check"].samples  # the check is exported as well
    finally:
        wedge.release.set()


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs) to fill up; skipped where mounting is not permitted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_healthz_red_when_the_disk_is_full(tmp_path, running, mqtt_broker, full_disk):
    """Defect 1: the outbox and the verdict log on a volume that fills up (real ENOSPC). Rejects still
    go out from memory; /healthz says the outbox is degraded; the report counts the log's lost lines."""
    cfg = make_config(tmp_path, decision={"budget_ms": 3000},
                      mqtt={"enabled": True, "host": mqtt_broker.host, "port": mqtt_broker.port,
                            "station": f"st{uuid.uuid4().hex[:8]}", "outbox_path": str(full_disk / "outbox.sqlite"),
                            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
                      sink={"jsonl": str(full_disk / "verdicts.jsonl")})
    svc = running(cfg)
    port = svc.metrics.port
    healthz_when(port, lambda code, _: code == 200, "a green /healthz (broker connected)")
    with open(full_disk / "filler", "wb", buffering=0) as f:  # fill the volume until the kernel says ENOSPC
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    body = healthz_when(port, lambda code, _: code == 503, "/healthz to turn red on the full disk")
    assert body["failed"] == ["outbox"], body
    assert body["mqtt"]["outbox_degraded"] is True and "degraded" in body["checks"]["outbox"]["detail"]
    wait_for(lambda: svc.report().sinks["jsonl"]["errors"] > 0, what="the verdict log's write errors in the report")
    r = svc.report()
    assert "No space left" in r.sinks["jsonl"]["last_error"]
    assert r.sinks["mqtt"]["acked"] > 0, "rejects are still delivered (from memory)"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_red_when_mqtt_is_down_and_when_the_camera_is_lost(tmp_path, running):
    port = _closed_port()  # nothing listens there: the broker is down, the camera unreachable
    cfg = make_config(tmp_path,
                      source={"kind": "opencv", "url": f"rtsp://127.0.0.1:{port}/cam", "open_timeout_ms": 500,
                              "reconnect_initial_ms": 100, "reconnect_max_ms": 500},
                      mqtt={"enabled": True, "host": "127.0.0.1", "port": port,
                            "outbox_path": str(tmp_path / "o.sqlite"), "reconnect_min_s": 0.1, "reconnect_max_s": 0.5})
    svc = running(cfg)
    body = healthz_when(svc.metrics.port,
                        lambda code, b: code == 503 and b["checks"]["mqtt"]["detail"] != "down: not connected",
                        "/healthz red with the MQTT error")
    assert set(body["failed"]) == {"source", "mqtt"}, body
    assert "refused" in body["checks"]["mqtt"]["detail"]
    assert body["checks"]["outbox"]["ok"], "the outbox itself is fine"
    assert body["mqtt"]["connected"] is False and body["source"] in ("connecting", "reconnecting")


def _handler_threads() -> int:
    """The metrics server's per-connection threads (socketserver names them after their target)."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"", id="half-open: connects, sends nothing"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", id="slow: a request without its blank line"),
])
def test_500_idle_clients_keep_a_bounded_number_of_threads_and_healthz_still_answers(tmp_path, running,
                                                                                    request_bytes):
    """Before: ThreadingHTTPServer kept one thread per idle connection, forever (500 clients: 502 threads)."""
    from inspector.kernel.http import MAX_CONNECTIONS

    svc = running(make_config(tmp_path))
    port = svc.metrics.port
    wait_for(lambda: svc.pipeline.stats.frames >= 5, what="5 verdicts")
    base = _handler_threads()
    clients = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            if request_bytes:
                s.sendall(request_bytes)
            clients.append(s)
        # a connection closed to make room ends its thread before the next one starts: the server's own
        # count of handler threads never passed the cap (a count of live threads here would read the
        # scheduler: a thread that released its slot may not have left threading.enumerate yet)
        wait_for(lambda: svc.metrics.httpd.evicted >= 500 - MAX_CONNECTIONS, what="every idle client evicted")
        assert svc.metrics.httpd.peak_handlers <= MAX_CONNECTIONS, svc.metrics.httpd.peak_handlers
        wait_for(lambda: _handler_threads() <= base + MAX_CONNECTIONS, what="handler threads back under the cap")
        assert svc.metrics.httpd.refused == 0
        code, body = healthz(port)  # a normal client among the 500 idle ones gets its answer
        assert code in (200, 503) and "checks" in body  # (503 only if the loaded machine made a check red)
    finally:
        for s in clients:
            s.close()


def test_an_idle_connection_is_closed_after_the_handler_timeout(tmp_path):
    """One half-open client, no others: the socket timeout ends its thread (no eviction needed)."""
    from inspector.service.metrics import MetricsServer

    svc = Service(make_config(tmp_path, metrics={"enabled": False}))
    server = MetricsServer(svc.report, "127.0.0.1", 0, timeout_s=0.3)
    server.start()
    try:
        base = _handler_threads()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            wait_for(lambda: server.httpd.connections == 1, what="the connection accepted")
            s.settimeout(30)
            assert s.recv(1024) == b"", "the server closes an idle connection"  # blocks until it does
            wait_for(lambda: _handler_threads() <= base and server.httpd.connections == 0, what="its thread ended")
        assert server.httpd.evicted == 0
        code, _ = get(server.port, "/healthz")
        assert code in (200, 503)
    finally:
        server.stop()
