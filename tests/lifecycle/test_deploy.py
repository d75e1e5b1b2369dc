"""The systemd units in deploy/systemd/ say what docs/deploy.md promises, and agree with the config."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from inspector.config import ShutdownConfig

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
