"""The service report's pure logic: health checks, the stall watch, the escape tally, stop sharing one deadline."""

import dataclasses
import threading

import pytest

from inspector.devtools.testing import make_verdict
from inspector.frames import TruthBox
from inspector.service.app import stop_within
from inspector.service.outputs.mqtt import MqttOutput, MqttReport, mqtt_report
from inspector.service.report import (
    EscapeTally,
    OutputPart,
    PipelineReport,
    SourceReport,
    StallWatch,
    health_checks,
)

STALL_S = 1.0


def pipeline(no_verdict_s=None, oldest=None, stalled=False, model_ok=True) -> PipelineReport:
    return PipelineReport(frames=10, verdicts={"PASS": 10}, actuations=0, reasons={}, errors=0, dropped={},
                          uninspected={}, p99_recent_ms=20.0, last_verdict_age_s=0.1, no_verdict_s=no_verdict_s,
                          in_flight=1, oldest_in_flight_age_s=oldest, stalled=stalled, model_ok=model_ok,
                          model_error=None if model_ok else "RuntimeError: infer failed")


def source(connection="connected") -> SourceReport:
    return SourceReport("synthetic", connection, 10, {}, 0.05, 0, "")


def mqtt(connected=True, degraded=False) -> MqttReport:
    return MqttReport(connected=connected, outbox_depth=0, outbox_degraded=degraded, last_error=None,
                      rejects_not_delivered=0, rejects_late=0, escaped_frame_ids=())


@pytest.mark.parametrize("src, pipe, mq, failed", [
    (source(), pipeline(), None, []),
    (source("ended"), pipeline(), mqtt(), []),
    (source("reconnecting"), pipeline(), mqtt(), ["source"]),
    (source("connecting"), pipeline(), None, ["source"]),
    (source(), pipeline(no_verdict_s=0.5), None, []),  # a frame waiting less than the limit
    (source(), pipeline(no_verdict_s=3.0), None, ["verdicts"]),
    (source(), pipeline(oldest=2.5), None, ["verdicts"]),
    (source(), pipeline(stalled=True), None, ["verdicts"]),  # the pipeline's own view: a frame read, still owed
    (source(), pipeline(model_ok=False), None, ["model"]),
    (source(), pipeline(), mqtt(connected=False), ["mqtt"]),
    (source(), pipeline(), mqtt(degraded=True), ["outbox"]),
    (source("reconnecting"), pipeline(no_verdict_s=9.0), mqtt(False, True), ["source", "verdicts", "mqtt", "outbox"]),
    (source(), pipeline(stalled=True, model_ok=False), mqtt(), ["verdicts", "model"]),
])
def test_health_checks_name_what_failed(src, pipe, mq, failed):
    checks = health_checks(src, pipe, STALL_S, (OutputPart(MqttOutput, mq),))  # mq None: MQTT is off
    assert [c.name for c in checks if not c.ok] == failed
    assert all(c.detail for c in checks)


@pytest.mark.parametrize("steps, waited", [
    # (source frames, verdicts, now) ... -> seconds frames have waited with no verdict after the last step
    ([(0, 0, 0.0), (0, 0, 5.0)], None),  # nothing arrives: no stall (a stopped camera is the source check)
    ([(0, 0, 0.0), (1, 0, 1.0), (1, 0, 4.0)], 3.0),  # a frame came, no verdict followed
    ([(0, 0, 0.0), (1, 0, 1.0), (1, 1, 1.03), (2, 1, 3.0), (2, 2, 3.03), (2, 2, 4.9)], None),  # slow, but each gets one
    ([(5, 5, 0.0), (6, 5, 1.0), (9, 5, 2.0), (40, 5, 6.0)], 5.0),  # frames keep arriving fresh, verdicts stopped
    ([(5, 5, 0.0), (6, 5, 1.0), (7, 6, 2.0), (8, 6, 2.5)], 0.0),  # verdicts moved: the wait starts again
])
def test_stall_watch_counts_frames_without_verdicts(steps, waited):
    w = StallWatch()
    got = None
    for frames, verdicts, now in steps:
        got = w.observe(frames, verdicts, now)
    assert got == (None if waited is None else pytest.approx(waited))


def _verdict(outcome, *, actuate, defective):
    truth = (TruthBox(0, "scratch", (0, 0, 1, 1)),) if defective else ()
    frame = dataclasses.replace(make_verdict().frame, truth=truth)
    return dataclasses.replace(make_verdict(frame, outcome=outcome), actuate=actuate)


@pytest.mark.parametrize("outcome, actuate, defective, missed, verdict_escape", [
    ("PASS", False, True, 0, 1),  # a defective part passed: a verdict escape
    ("PASS", False, False, 0, 0),
    ("REJECT", True, True, 0, 0),
    ("LATE", False, True, 1, 0),  # on_late: pass let it through: a physical escape, not a verdict one
    ("LATE", False, False, 1, 0),
    ("LATE", True, True, 0, 0),  # fail-safe reject: the publisher says whether it arrived in time
])
def test_escape_tally_keeps_physical_and_verdict_escapes_apart(outcome, actuate, defective, missed, verdict_escape):
    t = EscapeTally()
    t.submit(_verdict(outcome, actuate=actuate, defective=defective))
    s = t.state()
    assert (s["missed_verdicts"], s["verdict_escapes"]) == (missed, verdict_escape)


@pytest.mark.parametrize("state, not_delivered, late, ids", [
    ({"connected": True, "expired": 3}, 3, 0, ()),  # a publisher without the escape counters: its expired rejects
    ({"undelivered": 2, "late_acks": 4, "expired": 2, "escaped_frame_ids": [7, 9]}, 2, 4, {"7", "9"}),
    ({"connected": False, "outbox_degraded": True}, 0, 0, ()),
])
def test_mqtt_report_reads_the_publisher_state(state, not_delivered, late, ids):
    r = mqtt_report(state)
    assert (r.rejects_not_delivered, r.rejects_late) == (not_delivered, late)
    assert set(r.escaped_frame_ids) == set(ids)
    assert r.outbox_degraded == bool(state.get("outbox_degraded"))


def test_stop_within_shares_one_deadline_and_leaves_a_stuck_part_behind():
    gate = threading.Event()
    given: dict[str, float] = {}
    ran: list[str] = []

    released: list[str] = []

    def stuck(name):
        def stop(t):
            given[name] = t
            gate.wait(60)  # a part that would take a minute
            released.append(name)
        return stop

    def quick(name):
        def stop(t):
            given[name] = t
            ran.append(name)
        return stop

    parts = [("source", "source", stuck("source")), ("pipeline", "pipeline", stuck("pipeline")),
             ("sink mqtt", "sink", quick("sink mqtt")), ("metrics", "metrics", quick("metrics"))]
    try:
        rep = stop_within(parts, 2.0)
        still_stuck = released == []  # returned while both stuck parts were still stuck: waited on neither
    finally:
        gate.set()
    assert still_stuck, f"stop_within returned only after {released} were released"
    assert rep.overran == ("source", "pipeline")
    assert ran == ["sink mqtt", "metrics"], "the parts after a stuck one still get their turn"
    # Shares: never the sum of per-part timeouts; the later parts' reserves were kept back.
    assert given["source"] <= 2.0 - (0.5 + 0.5 + 0.1) + 1e-6
    # What the stuck parts used is gone for the rest: the last part gets only what is left.
    assert given["metrics"] <= 2.0 - given["source"] - given["pipeline"] + 1e-6
    assert given["sink mqtt"] > 0
