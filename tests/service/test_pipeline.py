"""The pipeline on real OpenVINO: every frame gets exactly one verdict, late ones fail safe,
bad frames are counted and never stop the line."""

from pathlib import Path

import numpy as np
import pytest

from inspector.config import DecisionConfig
from inspector.devtools.testing import ListSink, ListSource, blank_image
from inspector.frames import Outcome, Reason
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import Detector, load_bundle
from inspector.service.pipeline import Pipeline
from inspector.sources.conveyor import ConveyorGenerator

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def detector():
    b = load_bundle(MODEL, "int8")
    return b, Detector(b, conf=0.05)


def run(detector, source, budget_ms=5000.0, **kw):
    bundle, det = detector
    policy = DecisionPolicy.build(DecisionConfig(budget_ms=budget_ms, **kw), bundle.classes, bundle.thresholds)
    sink = ListSink()
    p = Pipeline(source, det, policy, [sink])
    p.start()
    assert p.done.wait(60), "pipeline did not finish"
    p.stop()
    p.raise_if_failed()
    return p, sink.verdicts


def test_every_frame_gets_one_verdict_in_order_of_ids(detector):
    gen = ConveyorGenerator(99)
    parts = [gen.part(i) for i in range(12)]
    p, verdicts = run(detector, ListSource([x.image for x in parts]))
    assert sorted(v.frame_id for v in verdicts) == list(range(12))
    assert p.stats.frames == 12
    for v in verdicts:
        t = v.timings
        assert t.total_ms >= t.infer_ms > 0 and t.preprocess_ms >= 0
        assert v.outcome in (Outcome.PASS, Outcome.REJECT)


def test_frames_already_past_their_deadline_fail_safe_without_inference(detector):
    p, verdicts = run(detector, ListSource([blank_image()] * 5, age_s=1.0), budget_ms=100)
    assert [v.outcome for v in verdicts] == [Outcome.LATE] * 5
    assert all(v.actuate and v.reason is Reason.LATE for v in verdicts)
    assert p.stats.outcomes["LATE"] == 5


def test_on_late_pass_does_not_actuate(detector):
    _, verdicts = run(detector, ListSource([blank_image()] * 3, age_s=1.0), budget_ms=100, on_late="pass")
    assert all(v.outcome is Outcome.LATE and not v.actuate for v in verdicts)


def test_bad_frames_are_counted_and_parts_fail_safe(detector):
    images = [blank_image(), np.zeros((480, 640), np.uint8), np.zeros((10, 10, 3), np.float32), blank_image()]
    p, verdicts = run(detector, ListSource(images))
    assert len(verdicts) == 4
    bad = [v for v in verdicts if v.reason is Reason.ERROR]
    assert len(bad) == 2 and all(v.actuate for v in bad)
    assert p.stats.dropped["bad_frame"] == 2


def test_bad_frames_without_a_part_are_dropped_not_rejected(detector):
    p, verdicts = run(detector, ListSource([np.zeros((5, 5), np.uint8), blank_image()], part_ids=False))
    assert len(verdicts) == 1 and p.stats.dropped["bad_frame"] == 1


def test_free_run_drops_stale_frames(detector):
    bundle, det = detector
    policy = DecisionPolicy.build(DecisionConfig(budget_ms=5000), bundle.classes, bundle.thresholds)
    sink = ListSink()
    p = Pipeline(ListSource([blank_image()] * 4, part_ids=False, age_s=0.5), det, policy, [sink], max_frame_age_s=0.2)
    p.start()
    assert p.done.wait(30)
    p.stop()
    assert sink.verdicts == [] and p.stats.dropped["stale"] == 4
