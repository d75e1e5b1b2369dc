"""The PLC handshake on real parts: Mosquitto, the fake GigE camera (software trigger), the demo model in
a real pipeline, and PlcSimulator as the PLC. Every trigger gets exactly one result with its own part id
and sequence number; bad payloads are refused with an alarm and the loop goes on; a lost camera makes
the station fault and answers fail-safe, and the station is ready again when the camera is back.
Hardware-trigger pairing (which the fake camera cannot fire) runs on frames given by a ListSource."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inspector.config import DecisionConfig, GenICamSourceConfig, PLCConfig
from inspector.devtools.testing import ListSink, ListSource, blank_image
from inspector.frames import Frame
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import Detector, load_bundle
from inspector.service.alarms import AlarmHub
from inspector.service.pipeline import Pipeline
from inspector.signalling.plc import PlcHandshake, PlcSimulator
from inspector.sources import open_source
from tests.fixtures.mqtt_broker import mqtt_config
from tests.waiting import wait_for

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"
BUDGET_MS = 5000.0  # correctness here; speed is measured by `inspector plc-sim` (docs/controls-engineer.md)


@pytest.fixture(scope="module")
def detector():
    b = load_bundle(MODEL, "int8")
    return b, Detector(b, conf=0.05)


class Line:
    """camera -> PlcHandshake.source -> Pipeline -> PlcHandshake (sink), and a PLC simulator."""

    def __init__(self, detector, broker, tmp_path, cam, **plc) -> None:
        bundle, det = detector
        self.mqtt = mqtt_config(broker, tmp_path)
        self.alarms = AlarmHub()
        self.hs = PlcHandshake(self.mqtt, PLCConfig(enabled=True, **plc), cam, budget_ms=BUDGET_MS,
                               alarm=self.alarms.raise_alarm)
        policy = DecisionPolicy.build(DecisionConfig(budget_ms=BUDGET_MS), bundle.classes, bundle.thresholds)
        self.seen = ListSink()
        self.pipeline = Pipeline(self.hs.source, det, policy, [self.hs, self.seen])
        self.plc = PlcSimulator(self.mqtt, budget_ms=BUDGET_MS)

    def __enter__(self) -> Line:
        self.hs.start()
        assert self.hs.wait_connected(10)
        self.pipeline.start()
        self.hs.source.start()
        self.plc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.plc.stop()
        self.hs.source.stop()
        self.pipeline.stop()
        self.hs.stop()

    def wait(self, cond, timeout=20.0, what="condition"):
        wait_for(cond, timeout, lambda: f"{what}; plc {self.plc.report()} hs {self.hs.state()}")

    def last_ready(self) -> str | None:
        return self.plc.ready[-1]["state"] if self.plc.ready else None


def camera_cfg(fake_camera, **kw) -> GenICamSourceConfig:
    return GenICamSourceConfig(address=fake_camera.address, camera_trigger="software", **kw)


def test_every_trigger_is_answered_with_its_part_id_and_sequence(detector, mqtt_broker, tmp_path, fake_camera):
    with Line(detector, mqtt_broker, tmp_path, open_source(camera_cfg(fake_camera))) as line:
        line.wait(lambda: line.last_ready() == "ready", what="ready")
        rep = line.plc.run(20, rate=20, first_seq=1000)
        assert rep["answered"] == 20 and rep["missing"] == [] and rep["unexpected"] == 0, rep
        assert rep["fail_safe"] == 0 and rep["reasons"].keys() <= {"pass", "defect"}, rep
        for p in line.plc.parts.values():
            r = p.result
            assert (r["part_id"], r["seq"]) == (p.part_id, p.seq) and r["frame_id"] is not None
            assert r["result"] == ("NG" if r["reason"] == "defect" else "OK")
        assert {v.part_id for v in line.seen.verdicts} == {p.part_id for p in line.plc.parts.values()}
        assert line.hs.state().get("unsolicited_frames", 0) == 0


@pytest.mark.parametrize("payload,needle,seq", [
    (b"not json", "not JSON", None),
    (b'{"seq": 7}', "part_id", 7),
    (b'{"part_id": "", "seq": 8}', "part_id", 8),
    (b'{"part_id": "A1"}', "seq", None),
    (b'{"part_id": "A2", "seq": -1}', "seq", None),
    (b'[1, 2]', "PlcTriggerPayload", None),
])
def test_a_bad_trigger_is_refused_with_an_alarm_and_the_loop_goes_on(detector, mqtt_broker, tmp_path, fake_camera,
                                                                     payload, needle, seq):
    with Line(detector, mqtt_broker, tmp_path, open_source(camera_cfg(fake_camera))) as line:
        line.plc.send_raw(payload)
        line.wait(lambda: line.plc.unexpected, what="the refusal")
        r = line.plc.unexpected[0]
        assert r["reason"] == "bad_trigger" and r["fail_safe"] and r["result"] == "NG" and r["seq"] == seq
        assert needle in r["error"]
        assert line.alarms.counts["plc_bad_trigger"] == 1
        line.plc.send("GOOD1", 1)  # the loop still works
        line.wait(lambda: line.plc.answered() == 1, what="the next good trigger")
        assert line.plc.parts[("GOOD1", 1)].result["fail_safe"] is False


def test_a_duplicate_trigger_is_answered_once(detector, mqtt_broker, tmp_path, fake_camera):
    with Line(detector, mqtt_broker, tmp_path, open_source(camera_cfg(fake_camera))) as line:
        line.plc.send("D1", 5)
        line.plc.send_raw(b'{"part_id": "D1", "seq": 5}')  # a QoS 1 re-delivery
        line.plc.send("D2", 6)
        line.wait(lambda: line.plc.answered() == 2, what="two results")
        time.sleep(0.3)  # a second result for D1 would have come by now (it is not sent at all)
        assert line.plc.unexpected == [] and line.hs.state()["duplicate_triggers"] == 1


@pytest.mark.slow
def test_a_lost_camera_faults_the_station_answers_fail_safe_and_recovers(detector, mqtt_broker, tmp_path, fake_camera):
    cam = open_source(camera_cfg(fake_camera, lost_after_ms=400, reconnect_initial_ms=100, reconnect_max_ms=400))
    with Line(detector, mqtt_broker, tmp_path, cam, pairing_window_ms=300) as line:
        line.wait(lambda: line.last_ready() == "ready", what="ready")
        line.plc.run(3, rate=10, prefix="before")
        fake_camera.kill()
        seq = 100
        while line.last_ready() != "fault":  # the PLC keeps triggering; the station must say fault
            line.plc.send(f"out{seq}", seq)
            seq += 1
            time.sleep(0.1)
            assert seq < 200, "the station never said fault"
        line.plc.run(5, rate=10, prefix="outage", first_seq=500)
        fake_camera.start()
        line.wait(lambda: line.last_ready() == "ready", timeout=30, what="ready again")
        rep = line.plc.run(5, rate=10, prefix="after", first_seq=900)
        assert rep["missing"] == [] and rep["unexpected"] == 0, rep
        parts = line.plc.parts
        outage = [p.result for k, p in parts.items() if k[0].startswith(("out", "outage"))]
        assert outage and all(r["fail_safe"] and r["result"] == "NG" for r in outage), outage
        assert {r["reason"] for r in outage} <= {"camera_lost", "no_frame"}
        assert all(not p.result["fail_safe"] for k, p in parts.items() if k[0].startswith(("before", "after")))
        states = [s["state"] for s in line.plc.ready]
        assert states.index("fault") < len(states) - 1 - states[::-1].index("ready")  # fault, then ready


# -- hardware trigger: pairing by time (a photo-eye stand-in, since the fake camera's Line0 cannot fire) ----
class LineTriggeredSource(ListSource):
    """A camera fired by a photo-eye: `fire()` makes one frame, stamped with the time it fired."""

    def __init__(self) -> None:
        super().__init__([])
        self._fired: list[Frame] = []

    def fire(self) -> None:
        i = len(self._images)
        self._images.append(blank_image())
        self._fired.append(Frame(frame_id=i, image=self._images[i], captured_at=time.monotonic(),
                                 captured_wall=time.time(), part_id=f"cam-{i}", source="line"))

    def read(self, timeout: float) -> Frame | None:
        if not self._fired:
            time.sleep(min(timeout, 0.005))
            return None
        return self._fired.pop(0)

    def software_trigger(self) -> bool:
        raise AssertionError("hardware mode never fires the camera")


def test_hardware_frames_pair_with_triggers_within_the_window_and_others_are_counted(detector, mqtt_broker, tmp_path):
    eye = LineTriggeredSource()
    with Line(detector, mqtt_broker, tmp_path, eye, camera="hardware", pairing_window_ms=500) as line:
        eye.fire()  # a frame nobody triggered: counted, never inspected
        line.wait(lambda: line.hs.state().get("unsolicited_frames") == 1, what="an unsolicited frame")
        line.plc.send("H1", 1)  # trigger message first, frame just after
        eye.fire()
        line.wait(lambda: line.plc.answered() == 1, what="result H1")
        eye.fire()  # frame first, trigger message just after
        line.plc.send("H2", 2)
        line.wait(lambda: line.plc.answered() == 2, what="result H2")
        line.plc.send("H3", 3)  # its frame never comes
        line.wait(lambda: line.plc.answered() == 3, what="the fail-safe result")
        res = {k[0]: p.result for k, p in line.plc.parts.items()}
        assert not res["H1"]["fail_safe"] and not res["H2"]["fail_safe"], res
        assert res["H3"]["reason"] == "no_frame" and res["H3"]["result"] == "NG"
        assert line.alarms.counts["plc_no_frame"] == 1
        assert sorted(v.part_id for v in line.seen.verdicts) == ["H1", "H2"]  # the PLC's ids, not the camera's
        assert line.hs.state()["unsolicited_frames"] == 1


def test_a_trigger_paired_but_not_yet_inspected_is_answered_fail_safe_at_stop(mqtt_broker, tmp_path):
    """Stopping must not leave the PLC waiting: a trigger whose frame was paired but never reached a
    verdict (the pipeline stopped first) gets its fail-safe result too (it had none before)."""
    eye = LineTriggeredSource()
    cfg = mqtt_config(mqtt_broker, tmp_path)
    hs = PlcHandshake(cfg, PLCConfig(enabled=True, camera="hardware", pairing_window_ms=2000), eye,
                      budget_ms=BUDGET_MS)
    plc = PlcSimulator(cfg, budget_ms=BUDGET_MS)
    hs.start()
    try:
        assert hs.wait_connected(10)
        plc.start()
        eye.fire()  # frame first (the stand-in reads as ended, so a refused trigger, until it has fired once)
        plc.send("S1", 1)
        end = time.monotonic() + 10
        while hs.state()["paired"] < 1 and time.monotonic() < end:
            time.sleep(0.01)
        assert hs.state()["paired"] == 1 and plc.answered() == 0  # no pipeline: no verdict is coming
    finally:
        hs.stop()
    end = time.monotonic() + 10
    while plc.answered() < 1 and time.monotonic() < end:
        time.sleep(0.01)
    plc.stop()
    r = plc.parts[("S1", 1)].result
    assert r is not None and r["fail_safe"] and r["result"] == "NG" and r["reason"] == "no_frame", r
    assert plc.ready[-1]["state"] == "fault"


@pytest.mark.parametrize("publish_verdicts", [True, False])
def test_handshake_mode_publishes_no_reject_and_verdicts_say_none_was_signalled(mqtt_broker, tmp_path,
                                                                                publish_verdicts):
    """In handshake mode the PLC's result is the part's one answer: the publisher's .../reject stays silent
    (no second path that could eject a part twice); .../verdict, when on, still reports the REJECT."""
    from inspector.devtools.testing import (
        heartbeat_figures,
        make_defect,
        make_verdict,
        synth_frame,
    )
    from inspector.frames import ModelInfo
    from inspector.signalling.plc import VerdictTopicOnly
    from inspector.signalling.publisher import MqttPublisher
    from tests.fixtures.mqtt_broker import Recorder

    cfg = mqtt_config(mqtt_broker, tmp_path, publish_verdicts=publish_verdicts, verdict_qos=1)
    rec = Recorder(cfg).start()
    pub = MqttPublisher(cfg, model=ModelInfo("demo", "1.0.0", "0" * 64), config_hash="c",
                        heartbeat_fn=heartbeat_figures)
    pub.start()
    try:
        sink = VerdictTopicOnly(pub)
        sink.submit(make_verdict(synth_frame(1, frame_id=1), outcome="REJECT", defects=(make_defect(),)))
        sink.submit(make_verdict(synth_frame(2, frame_id=2), outcome="PASS"))
        pub.alarm("plc_no_frame", {"part_id": "X"})  # a later message: once it is in, the earlier ones are too
        rec.wait_for(lambda r: r.on("alarm"), 10, "the alarm")
    finally:
        pub.stop()
        rec.stop()
    assert rec.on("reject") == []
    verdicts = [m.payload for m in rec.on("verdict")]
    if publish_verdicts:
        assert [(v["verdict"], v["actuate"], v["reason"]) for v in verdicts] == [("REJECT", False, "defect"),
                                                                                ("PASS", False, None)]
    else:
        assert verdicts == []
