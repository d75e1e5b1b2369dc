"""Model kinds: the card's task picks the head (inference/heads), the runner runs any head, findings
answer the same questions whatever their kind (frames.Findings), and a judge pairs a runner with the
decision of its own kind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.config import DecisionConfig, ModelConfig
from inspector.errors import ModelError
from inspector.frames import ClassScores, Detections, findings_kind
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import Detector
from inspector.inference.heads import HEADS, HeadSettings, make_head
from inspector.inference.heads.detect import DetectHead
from inspector.inference.judge import make_judge
from inspector.inference.runner import Runner, open_runner
from inspector.sources.conveyor import ConveyorGenerator

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(MODEL, "int8")


@pytest.mark.parametrize("found, task, n, max_score", [
    (Detections.empty(), "detect", 0, 0.0),
    (Detections(np.zeros((2, 4), np.float32), np.array([0.25, 0.75], np.float32), np.array([0, 3], np.int32)),
     "detect", 2, 0.75),
    (ClassScores(np.zeros((0,), np.float32)), "classify", 0, 0.0),
    (ClassScores(np.array([0.125, 0.5, 0.375], np.float32)), "classify", 3, 0.5),
])
def test_findings_of_every_kind_answer_the_same_questions(found, task, n, max_score):
    assert (found.task, len(found), found.max_score) == (task, n, max_score)
    assert findings_kind(task) is type(found)


def test_an_unknown_task_has_no_findings_kind():
    with pytest.raises(ValueError, match="unknown model task 'anomaly'"):
        findings_kind("anomaly")


def test_the_cards_task_picks_the_head(bundle):
    settings = HeadSettings(conf=0.05, iou=0.5, max_det=10)
    head = make_head(bundle, settings)
    assert bundle.task == "detect" and isinstance(head, DetectHead) and head.settings is settings
    assert (head.input_hw, head.channels, head.classes) == (bundle.input_size, bundle.channels, bundle.classes)


def test_a_task_with_no_head_is_refused_naming_it(bundle):
    other = replace(bundle, card=bundle.card.model_copy(update={"task": "anomaly"}))  # a kind not built yet
    assert "anomaly" not in HEADS
    with pytest.raises(ModelError, match=f"{bundle.name} {bundle.version}: task 'anomaly' has no head"):
        make_head(other)


def test_the_service_runner_finds_what_the_detector_detects(bundle):
    """open_runner (the service's path: the head from the card's task, the settings from `model:`)
    and the detect kind's Detector run the same network to the same boxes."""
    cfg = ModelConfig(path=MODEL, precision="int8", iou=0.6, max_detections=50)
    runner = open_runner(cfg, bundle, conf=0.05)
    assert type(runner) is Runner and runner.head.settings == HeadSettings(conf=0.05, iou=0.6, max_det=50)
    det = Detector(bundle, conf=0.05, iou=0.6, max_det=50, warmup=0)
    gen = ConveyorGenerator(11)
    for i in range(4):
        image = gen.part(i).image
        a, b = runner.find(image), det.detect(image)
        assert isinstance(a, Detections) and len(a) == len(b)
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence)
        assert np.array_equal(a.class_id, b.class_id)


def test_a_judge_pairs_a_runner_with_the_decision_of_its_own_kind(bundle):
    policy = DecisionPolicy.build(DecisionConfig(), bundle.classes, bundle.thresholds, task=bundle.task)
    runner = Detector(bundle, conf=policy.conf_floor, warmup=0)
    judge = make_judge(runner, policy)
    assert (judge.runner, judge.policy, judge.model) == (runner, policy, bundle.info)
    with pytest.raises(ValueError, match="a 'detect' model cannot be judged by a 'classify' decision policy"):
        make_judge(runner, replace(policy, task="classify"))
