"""The lifecycle under faults, on the real service (OpenVINO on models/demo, the synthetic line):
- a full disk (a tmpfs under the store's `active/`, filled to the last byte) during promote and
  rollback: nothing switches, and the answer, `model list`, the retained MQTT status (Mosquitto) and
  the model judging the parts agree, before and after the disk is freed;
- a restart during the rollback guard's watch resumes it with the parts that remain;
- a guard rollback that fails (the disk is full when it trips) raises `rollback_failed` and turns the
  `lifecycle` health check red; the bad model does not stand silently."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from inspector.bundle.signing import Trust
from inspector.lifecycle.control import ControlError, request
from tests.fixtures.mqtt_broker import Recorder as MqttRecorder
from tests.fixtures.mqtt_broker import mqtt_config, needs_mosquitto
from tests.lifecycle.bundles import reject_everything
from tests.lifecycle.conftest import V1, V2, lifecycle_config
from tests.lifecycle.faults import mount_tmpfs, unmount
from tests.lifecycle.test_rollback import Alarms

BAD = "6.6.6"


@pytest.fixture
def full_disk(tmp_path):
    """The store's pointer folder on its own small tmpfs (requested before `running`: unmounted after
    the services stopped)."""
    disk = mount_tmpfs(tmp_path / "store" / "active")
    yield disk
    unmount(disk)


def _model_list(tmp_path, cfg) -> dict:
    """`inspector model list --json`, as an operator runs it."""
    conf = tmp_path / "list.yaml"
    conf.write_text(json.dumps({"lifecycle": {"store": str(cfg.lifecycle.store), "station": "st1",
                                              "socket": str(cfg.lifecycle.socket)}}))
    r = subprocess.run([sys.executable, "-m", "inspector", "model", "list", "--json", "--config", str(conf)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _retained_status(mq) -> dict:
    sub = MqttRecorder(mq, topics=("status",)).start()
    try:
        sub.wait_for(lambda s: s.on("status"), 20, "the retained status")
        return sub.on("status")[-1].payload
    finally:
        sub.stop()


def _agree(tmp_path, cfg, mq, svc, rec, active, previous) -> None:
    """Every view of the station names `active` (and `previous`), and the next parts are judged by it."""
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 5, 60, "verdicts after the command")
    assert {v.model.version for v in rec.verdicts[n:]} == {active.version}
    st = request(cfg.lifecycle.socket, {"cmd": "status"})
    assert (st["active"], st["previous"]) == (str(active), None if previous is None else str(previous))
    listed = _model_list(tmp_path, cfg)
    assert (listed["active"], listed["previous"]) == (st["active"], st["previous"])
    assert _retained_status(mq)["model"]["version"] == active.version
    assert svc.report().heartbeat()["model"] == str(active)


@needs_mosquitto
def test_promote_and_rollback_on_a_full_disk_switch_nothing(tmp_path, full_disk, mqtt_broker, store_v2, running):
    mq = mqtt_config(mqtt_broker, tmp_path)
    cfg = lifecycle_config(tmp_path, mqtt=mq.model_dump(mode="json", exclude={"password"}),
                           lifecycle={"station": "st1"})
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 5, 60, "verdicts on V1")

    full_disk.fill()
    with pytest.raises(ControlError) as e:
        request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    _agree(tmp_path, cfg, mq, svc, rec, V1, None)
    assert e.value.exit_code == 1
    assert "No space left on device" in str(e.value) and f"{V1} still judges" in str(e.value)
    with pytest.raises(ControlError, match="nothing to roll back to"):
        request(cfg.lifecycle.socket, {"cmd": "rollback"})

    full_disk.free()
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    _agree(tmp_path, cfg, mq, svc, rec, V2, V1)

    full_disk.fill()
    with pytest.raises(ControlError) as e:
        request(cfg.lifecycle.socket, {"cmd": "rollback", "why": "disk full test"})
    _agree(tmp_path, cfg, mq, svc, rec, V2, V1)
    assert e.value.exit_code == 1 and f"{V2} still judges" in str(e.value)

    full_disk.free()
    r = request(cfg.lifecycle.socket, {"cmd": "rollback", "why": "disk freed"})
    assert r["active"] == str(V1)
    _agree(tmp_path, cfg, mq, svc, rec, V1, None)
    assert [e["event"] for e in svc.lifecycle.events] == ["promote", "rollback"]


def test_the_guard_survives_a_restart(tmp_path, store_v2, running):
    guard = {"enabled": True, "parts": 60, "min_parts": 60, "reject_rate_max": 0.99}
    cfg = lifecycle_config(tmp_path, lifecycle={"guard": guard})
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 3, 60, "verdicts on V1")
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    rec.wait(lambda vs: sum(v.model.version == V2.version for v in vs) >= 4, 60, "4 parts on V2")
    svc.stop(deadline_s=5)
    before = svc.lifecycle.guard.state()
    assert before["armed"] and before["parts"] >= 4
    pointer = json.loads(svc.lifecycle.store.pointer_path.read_text())
    assert (pointer["version"], pointer["previous"]["version"]) == (V2.version, V1.version)
    assert pointer["guard"]["model"] == str(V2) and pointer["guard"]["parts"] == before["parts"]

    svc2, rec2 = running(cfg)
    st = request(cfg.lifecycle.socket, {"cmd": "status"})
    assert st["active"] == str(V2) and st["previous"] == str(V1)
    assert st["guard"]["armed"] or st["guard"]["last"]["parts"] == 60, st["guard"]
    # the watch goes on where it stopped: it accepts after the parts that remained, not 60 more
    remaining = 60 - before["parts"]
    rec2.wait(lambda vs: len(vs) >= remaining + 5, 120, f"{remaining} + 5 parts after the restart")
    last = svc2.lifecycle.guard.last
    assert last is not None and (last["parts"], last["tripped"]) == (60, False), svc2.lifecycle.guard.state()
    assert svc2.lifecycle.wait_released(10)
    assert svc2.lifecycle.store.guard_progress() is None  # the promotion stands: nothing to resume


def test_the_promote_arms_the_guard_in_the_pointer(tmp_path, store_v2, running):
    """Without an orderly stop (kill -9, power cut) the next start finds the promote's progress (0 parts)
    or a later checkpoint in the pointer: the guard watches from there, never fewer parts than configured."""
    guard = {"enabled": True, "parts": 600, "min_parts": 600, "reject_rate_max": 0.99}
    cfg = lifecycle_config(tmp_path, lifecycle={"guard": guard})
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 3, 60, "verdicts on V1")
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    rec.wait(lambda vs: sum(v.model.version == V2.version for v in vs) >= 4, 60, "4 parts on V2")
    saved = svc.lifecycle.store.guard_progress()  # what a kill -9 now would leave
    assert saved["model"] == str(V2) and 0 <= saved["parts"] <= svc.lifecycle.guard.parts_watched
    from inspector.lifecycle.manager import ModelManager

    # a second manager over the same pointer, as the next start builds it
    again = ModelManager(cfg, svc.pipeline, alarm=lambda k, d: None)
    assert again.guard.armed and again.guard.parts_watched == saved["parts"]


def test_a_guard_rollback_that_fails_raises_an_alarm(tmp_path, full_disk, running):
    guard = {"enabled": True, "parts": 60, "min_parts": 10, "reject_rate_max": 0.9}
    cfg = lifecycle_config(tmp_path, lifecycle={"guard": guard})
    svc, rec = running(cfg)
    svc.lifecycle.store.stage(reject_everything(tmp_path / "bad", BAD), Trust())
    alarms = Alarms(svc)
    filled = threading.Event()

    class FillOnTheFirstBadPart:  # a post-thread sink: the disk is full before the guard's 10th part
        name = "fill"

        def start(self):
            pass

        def stop(self, timeout=0.0):
            pass

        def state(self):
            return {}

        def submit(self, v):
            if v.model.version == BAD and not filled.is_set():
                full_disk.fill()
                filled.set()

    svc.pipeline.sinks.append(FillOnTheFirstBadPart())
    rec.wait(lambda vs: len(vs) >= 5, 60, "verdicts on V1")
    assert "lifecycle" not in svc.report().failed_checks
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": f"demo@{BAD}"})
    failed = alarms.wait("rollback_failed", 60)
    assert failed["model"] == f"demo@{BAD}" and "reject rate" in failed["why"]
    assert "No space left on device" in failed["error"]
    assert alarms.of("model_rolled_back") == []
    report = svc.report()
    assert "lifecycle" in report.failed_checks and not report.healthy
    assert svc.lifecycle.store.active_ref().version == BAD  # it still judges, and everything says so
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 5, 60, "verdicts after the failed rollback")
    assert {v.model.version for v in rec.verdicts[n:]} == {BAD}
    assert svc.report().alarms.get("rollback_failed") == 1

    full_disk.free()
    r = request(cfg.lifecycle.socket, {"cmd": "rollback", "why": "after rollback_failed"})
    assert r["active"] == str(V1)
    assert "lifecycle" not in svc.report().failed_checks
