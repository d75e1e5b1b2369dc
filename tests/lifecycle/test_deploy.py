"""The systemd units in deploy/systemd/ say what docs/deploy.md promises, and agree with the config."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from inspector.config import RealtimeConfig, ShutdownConfig
from inspector.kernel.realtime import RANKS

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str  # systemd keys are case-sensitive
    p.read(UNITS / name)
    return p


def seconds(v: str) -> float:
    return float(v[:-1]) if v.endswith("s") else float(v)


def test_the_service_unit():
    s = unit("inspector.service")["Service"]
    assert s["Type"] == "notify" and s["Restart"] == "on-failure"
    assert seconds(s["WatchdogSec"]) > 0
    # The stop timeout holds the whole shutdown deadline, plus a margin for the process to exit.
    assert seconds(s["TimeoutStopSec"]) == ShutdownConfig().deadline_s + 2
    assert " run " in s["ExecStart"] and "--no-live" in s["ExecStart"]
    assert int(s["CPUWeight"]) > int(unit("inspector-upload.service")["Service"]["CPUWeight"])
    assert int(s["Nice"]) < int(unit("inspector-upload.service")["Service"]["Nice"])


def test_the_upload_timer():
    t = unit("inspector-upload.timer")["Timer"]
    assert t["Unit"] == "inspector-upload.service" and t["OnCalendar"].endswith("01:00:00")
    s = unit("inspector-upload.service")["Service"]
    assert s["Type"] == "oneshot" and "upload --now" in s["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["inspector.service", "inspector-upload.service", "inspector-upload.timer"])
def test_systemd_accepts_the_units(name):
    r = subprocess.run(["systemd-analyze", "verify", str(UNITS / name)], capture_output=True, text=True, timeout=60)
    # The ExecStart binary is not installed here (/opt/inspector): the only complaint allowed.
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if ln.strip() and "is not executable" not in ln and "/opt/inspector" not in ln]
    assert not problems, problems


def test_the_frame_path_may_go_real_time_and_only_the_frame_path():
    """LimitRTPRIO lets an unprivileged service set SCHED_FIFO on its frame-path threads (up to the watchdog's
    priority + 2); a whole-process CPUSchedulingPolicy would put the uploader and the spool writer above the PC."""
    s = unit("inspector.service")["Service"]
    assert int(s["LimitRTPRIO"]) >= RealtimeConfig().priority + max(RANKS.values())
    assert "CPUSchedulingPolicy" not in s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_mosquitto_drop_in_sits_below_the_frame_path(tmp_path):
    d = unit("mosquitto.service.d/inspector.conf")["Service"]
    assert d["CPUSchedulingPolicy"] == "fifo" and int(d["CPUSchedulingPriority"]) < RealtimeConfig().priority
    assert d["CPUSchedulingResetOnFork"] == "yes" and d["LimitRTTIME"]
    # systemd reads it as a drop-in of a Mosquitto unit (the distribution's, or a minimal one)
    dist = Path("/lib/systemd/system/mosquitto.service")
    (tmp_path / "mosquitto.service").write_text(dist.read_text() if dist.exists() else
                                                "[Service]\nExecStart=/usr/sbin/mosquitto\n")
    shutil.copytree(UNITS / "mosquitto.service.d", tmp_path / "mosquitto.service.d")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")], capture_output=True,
                       text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and "is not executable" not in ln]
    assert not problems and r.returncode == 0, problems
