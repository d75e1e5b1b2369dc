"""systemd's notify protocol against a NOTIFY_SOCKET the test opens (a path and an abstract name), and
`inspector run` as systemd runs it: READY=1, WATCHDOG=1 while verdicts flow, STOPPING=1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid

import pytest

from inspector.lifecycle.sdnotify import Notifier
from tests.lifecycle.bundles import DEMO


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify.sock")
        s.bind(name)
    else:
        name = f"@inspector-test-{uuid.uuid4().hex}"
        s.bind("\0" + name[1:])
    s.settimeout(60)
    yield name, s
    s.close()


def test_messages_reach_the_socket(notify_socket):
    name, s = notify_socket
    n = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_s == 4.0
    assert n.ready("up") and n.watchdog() and n.stopping()
    got = [s.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]


@pytest.mark.parametrize("env, enabled, watchdog", [
    ({}, False, None),
    ({"NOTIFY_SOCKET": "/run/x"}, True, None),
    ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, True, None),  # not our pid
])
def test_environment(env, enabled, watchdog):
    n = Notifier(env)
    assert (n.enabled, n.watchdog_s) == (enabled, watchdog)
    if not enabled:
        assert n.ready() is False  # a no-op outside systemd


def test_inspector_run_notifies(notify_socket, tmp_path):
    name, s = notify_socket
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""
        source: {{kind: synthetic, parts_per_s: 20}}
        model: {{path: {DEMO}}}
        decision: {{budget_ms: 1000}}
        mqtt: {{enabled: false}}
        sampling: {{enabled: false}}
        upload: {{window: null}}
        metrics: {{enabled: false}}
    """))
    env = {**os.environ, "NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    p = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(cfg), "--no-live",
                          "--max-frames", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         cwd=tmp_path, text=True)
    got = []
    try:
        while "STOPPING=1" not in got:
            got.append(s.recv(4096).decode().split("\n")[0])
    finally:
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1"
    assert "WATCHDOG=1" in got, got


@pytest.mark.parametrize("verdicts, model, flows", [(True, True, True), (False, True, False), (True, False, False)])
def test_watchdog_only_while_verdicts_flow(verdicts, model, flows):
    from inspector.lifecycle.sdnotify import verdicts_flow
    from inspector.service.report import HealthCheck

    class Report:
        health = (HealthCheck("source", True, ""), HealthCheck("verdicts", verdicts, ""),
                  HealthCheck("model", model, ""), HealthCheck("mqtt", False, "down: a broker outage is not a stall"))

    assert verdicts_flow(Report()) is flows
