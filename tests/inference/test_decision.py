"""decide(): a pure table of detections, deadlines and policies -> verdicts."""

import numpy as np
import pytest

from inspector.config import DecisionConfig
from inspector.errors import ConfigError, ModelError
from inspector.frames import ClassScores, Detections, Frame, ModelInfo, Outcome, Reason, StageTimings
from inspector.inference.decision import (
    DecisionPolicy,
    decide,
    error_verdict,
    late_verdict,
)

CLASSES = ("scratch", "pit", "crack", "contamination")
MODEL = ModelInfo("m", "1", "abc")
FRAME = Frame(frame_id=1, image=np.zeros((480, 640, 3), np.uint8), captured_at=100.0, captured_wall=1.7e9, part_id="p1")


def dets(*rows):
    """rows of (class_id, confidence, x0, y0, x1, y1)."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float32)
    return Detections(a[:, 2:6], a[:, 1], a[:, 0].astype(np.int32))


def policy(**kw):
    return DecisionPolicy.build(DecisionConfig(**kw), CLASSES,
                                {"scratch": 0.5, "pit": 0.4, "crack": 0.6, "contamination": 0.3})


@pytest.mark.parametrize(
    "detections, now, kw, outcome, actuate, n_defects, n_uncertain",
    [
        (dets(), 100.01, {}, Outcome.PASS, False, 0, 0),  # empty first
        (dets((0, 0.9, 10, 10, 50, 50)), 100.01, {}, Outcome.REJECT, True, 1, 0),
        (dets((0, 0.45, 10, 10, 50, 50)), 100.01, {}, Outcome.PASS, False, 0, 1),  # below but uncertain
        (dets((0, 0.55, 10, 10, 50, 50)), 100.01, {}, Outcome.REJECT, True, 1, 1),  # above and uncertain
        (dets((0, 0.2, 10, 10, 50, 50)), 100.01, {}, Outcome.PASS, False, 0, 0),  # far below
        (dets((3, 0.35, 10, 10, 50, 50)), 100.01, {}, Outcome.REJECT, True, 1, 1),  # per-class threshold (0.3)
        (dets((3, 0.35, 10, 10, 50, 50)), 100.01, {"thresholds": {"contamination": 0.8}}, Outcome.PASS, False, 0, 0),
        (dets((0, 0.9, 10, 10, 50, 50)), 100.2, {}, Outcome.LATE, True, 1, 0),  # late: fail safe
        (dets(), 100.2, {}, Outcome.LATE, True, 0, 0),
        (dets(), 100.2, {"on_late": "pass"}, Outcome.LATE, False, 0, 0),
        (dets((0, 0.9, 10, 10, 50, 50)), 100.01, {"roi": (100, 100, 600, 400)}, Outcome.PASS, False, 0, 0),
        (dets((0, 0.9, 200, 200, 240, 240)), 100.01, {"roi": (100, 100, 600, 400)}, Outcome.REJECT, True, 1, 0),
        (dets((1, 0.9, 10, 10, 13, 13)), 100.01, {"min_box_px": 5}, Outcome.PASS, False, 0, 0),
        (dets((1, 0.9, 10, 10, 13, 30)), 100.01, {"min_box_px": 5}, Outcome.REJECT, True, 1, 0),
    ],
)
def test_decide(detections, now, kw, outcome, actuate, n_defects, n_uncertain):
    v = decide(FRAME, detections, policy(**kw), now, 0.0, StageTimings(), MODEL)
    assert (v.outcome, v.actuate, len(v.defects), len(v.uncertain)) == (outcome, actuate, n_defects, n_uncertain)
    assert v.deadline == pytest.approx(100.05)
    assert (v.reason is None) == (not actuate)


def test_reasons():
    p = policy()
    assert decide(FRAME, dets((0, 0.9, 1, 1, 9, 9)), p, 100.0, 0, StageTimings(), MODEL).reason is Reason.DEFECT
    assert late_verdict(FRAME, p, StageTimings(), MODEL).reason is Reason.LATE
    e = error_verdict(FRAME, p, "corrupt", StageTimings(), MODEL)
    assert e.actuate and e.reason is Reason.ERROR and e.error == "corrupt"


def test_thresholds_from_card_config_and_default():
    p = DecisionPolicy.build(DecisionConfig(thresholds={"pit": 0.7}, default_threshold=0.45), CLASSES, {"scratch": 0.2})
    assert p.thresholds == (0.2, 0.7, 0.45, 0.45)
    assert p.conf_floor == pytest.approx(0.05)


def test_unknown_class_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match="decision.thresholds.*dent"):
        DecisionPolicy.build(DecisionConfig(thresholds={"dent": 0.5}), CLASSES, {})


@pytest.mark.parametrize("make", [
    lambda p: decide(FRAME, dets((0, 0.9, 1, 1, 9, 9)), p, 100.0, 0, StageTimings(), MODEL),
    lambda p: late_verdict(FRAME, p, StageTimings(), MODEL),
    lambda p: error_verdict(FRAME, p, "corrupt", StageTimings(), MODEL),
])
def test_every_verdict_names_the_kind_of_model_that_made_it(make):
    assert make(policy()).task == "detect"


def test_findings_of_another_kind_are_refused_not_read_as_boxes():
    with pytest.raises(ValueError, match="'classify' model given to a 'detect' decision"):
        decide(FRAME, ClassScores(np.array([0.1, 0.9, 0.0, 0.0], np.float32)), policy(), 100.0, 0, StageTimings(),
               MODEL)


def test_a_task_without_a_decision_rule_is_refused_when_the_policy_is_built():
    with pytest.raises(ModelError, match="task 'anomaly' has no decision rule"):
        DecisionPolicy.build(DecisionConfig(), CLASSES, {}, task="anomaly")
