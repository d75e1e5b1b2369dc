"""The classify kind at run time: the head's preprocessing (Ultralytics' classify transform, the conversion
folded into the compiled model), its decoding into class scores, the classify decision (NG when an NG class
reaches its threshold, uncertain within the margin, LATE as for boxes), and the records and payloads of its
findings (class and probability, no box) beside the detect ones, which stay as they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import ModelBundle, load_bundle
from inspector.config import DecisionConfig, ModelConfig
from inspector.errors import ConfigError, ModelError
from inspector.frames import ClassScores, Defect, Frame, ModelInfo, Outcome, Reason, StageTimings, Verdict
from inspector.inference.decision import DecisionPolicy, decide, late_verdict
from inspector.inference.heads import make_head
from inspector.inference.heads.base import HeadSettings
from inspector.inference.heads.classify import ClassifyHead, Preprocessor, prepare
from inspector.inference.judge import make_judge
from inspector.inference.runner import Runner, open_runner
from inspector.records import verdict_record
from inspector.signalling.payloads import reject_payload, verdict_payload
from tests.inference.cls_bundle import make_cls_bundle, p_ng

MODEL = ModelInfo("demo-cls", "1.0.0", "0" * 64)


# -- the head ---------------------------------------------------------------------------------------------
def _identity_bundle(tmp_path: Path, hw: tuple[int, int], channels: int) -> ModelBundle:
    """An IR whose 'class scores' are its input tensor, flattened: what reaches the network, pixel by pixel."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, channels, *hw], np.float32, name="images")
    n = channels * hw[0] * hw[1]
    model = ov.Model([ops.result(ops.reshape(x, np.array([1, n], np.int64), False))], [x], "identity")
    model.set_rt_info(" ".join(f"c{i}" for i in range(n)), ["model_info", "labels"])
    xml = tmp_path / f"identity{channels}.xml"
    ov.save_model(model, xml, compress_to_fp16=False)
    return load_bundle(xml)


@pytest.mark.parametrize("shape, hw, channels", [
    pytest.param((48, 64, 3), (8, 8), 3, id="wide-bgr-downscale"),
    pytest.param((70, 30, 3), (8, 12), 3, id="tall-bgr-non-square-input"),
    pytest.param((10, 9), (16, 16), 3, id="gray-into-rgb-upscale"),
    pytest.param((40, 40, 1), (8, 8), 3, id="gray-hw1"),
    pytest.param((33, 50, 3), (8, 8), 1, id="bgr-into-gray-model"),
])
def test_the_folded_input_is_the_classify_transform_the_tools_measured(tmp_path, shape, hw, channels):
    """What the compiled model sees (the head's uint8 crop, with u8->f32, BGR->RGB, /255 and NCHW folded
    into OpenVINO) is exactly `prepare`'s float tensor, the preprocessing whose parity with Ultralytics'
    classify transform was measured (top-1 0.7640 vs 0.764 on ELPV val)."""
    bundle = _identity_bundle(tmp_path, hw, channels)
    runner = Runner(bundle, ClassifyHead(bundle.classes, hw, channels, HeadSettings()), warmup=0)
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, np.uint8)
    found = runner.find(image)
    assert isinstance(found, ClassScores)
    np.testing.assert_allclose(found.scores, prepare(image, hw, channels).ravel(), rtol=0, atol=1e-6)


def test_the_crop_is_the_centre_of_the_shorter_side_resize():
    """A 40x80 frame into 20x20: resized to 20x40, the centre 20 columns kept (Ultralytics' CenterCrop)."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 200  # the centre half, bright
    tensor, _ = Preprocessor((20, 20), 3)(image)
    assert tensor.shape == (1, 20, 20, 3) and tensor.dtype == np.uint8
    assert (tensor == 200).all()


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory):
    return load_bundle(make_cls_bundle(tmp_path_factory.mktemp("cls") / "b"), "int8")


def test_the_cards_task_classify_picks_the_classify_head(cls_bundle):
    head = make_head(cls_bundle)
    assert isinstance(head, ClassifyHead) and head.classes == ("ng", "ok") and head.input_hw == (32, 32)


@pytest.mark.parametrize("gray", [20, 110, 127, 140, 230])
def test_the_service_runner_gives_the_classifiers_probabilities(cls_bundle, gray):
    runner = open_runner(ModelConfig(path=Path("unused"), task="classify"), cls_bundle, conf=0.35)
    found = runner.find(np.full((48, 64, 3), gray, np.uint8))
    assert isinstance(found, ClassScores) and len(found) == 2
    assert found.scores[0] == pytest.approx(p_ng(gray), abs=1e-5)
    assert found.class_scores == (float(found.scores[0]), float(found.scores[1]))


def test_an_ir_that_is_not_a_classifier_is_refused_naming_it(tmp_path, cls_bundle):
    """A detector's IR under a classify card (output (1, 4 + classes, anchors)): refused at load."""
    demo = load_bundle(Path(__file__).resolve().parents[2] / "models" / "demo", "int8")
    head = ClassifyHead(demo.classes, demo.input_size, 3, HeadSettings())
    with pytest.raises(ModelError, match=r"model_int8.xml: output shape .* is not \(1, classes\)"):
        Runner(demo, head, warmup=0)
    wrong = ClassifyHead(("a", "b", "c"), cls_bundle.input_size, 3, HeadSettings())
    import openvino as ov

    with pytest.raises(ModelError, match=r"model_int8.xml: output has 2 scores, the card has 3 classes"):
        wrong.check_model(ov.Core().read_model(cls_bundle.xml), cls_bundle.xml)


# -- the decision ---------------------------------------------------------------------------------------
def _policy(thresholds=None, margin=0.1, classes=("ng", "ok"), pass_class="ok", **cfg) -> DecisionPolicy:
    card = thresholds or {"ng": 0.5, "ok": 1.0}
    return DecisionPolicy.build(DecisionConfig(uncertain_margin=margin, budget_ms=50, **cfg), classes, card,
                                task="classify", pass_class=pass_class)


def _frame(i=1) -> Frame:
    return Frame(i, np.zeros((8, 8), np.uint8), captured_at=100.0, captured_wall=1.7e9)


def _decide(scores, policy, now=100.01) -> Verdict:
    return decide(_frame(), ClassScores(np.asarray(scores, np.float32)), policy, now, 1.7e9, StageTimings(), MODEL)


@pytest.mark.parametrize("p_ng_, outcome, defects, uncertain", [
    (0.95, Outcome.REJECT, ["ng"], []),
    (0.55, Outcome.REJECT, ["ng"], ["ng"]),  # at or above the threshold, within the margin: both
    (0.5, Outcome.REJECT, ["ng"], ["ng"]),  # reaching the threshold rejects
    (0.45, Outcome.PASS, [], ["ng"]),  # below, within the margin: kept for review
    (0.2, Outcome.PASS, [], []),
])
def test_ng_when_the_ng_probability_reaches_its_threshold(p_ng_, outcome, defects, uncertain):
    v = _decide([p_ng_, 1 - p_ng_], _policy())
    assert v.outcome is outcome and v.actuate == (outcome is Outcome.REJECT)
    assert [d.class_name for d in v.defects] == defects and [d.class_name for d in v.uncertain] == uncertain
    assert all(d.box is None and d.confidence == pytest.approx(p_ng_) for d in v.defects + v.uncertain)
    assert v.task == "classify" and v.class_scores == (("ng", pytest.approx(p_ng_)), ("ok", pytest.approx(1 - p_ng_)))
    assert v.reason is (Reason.DEFECT if defects else None)


@pytest.mark.parametrize("scores, defects", [
    ([0.3, 0.3, 0.4], []),  # 60 % NG in all, but no NG class reaches its own threshold (the card's rule)
    ([0.1, 0.6, 0.3], ["scratch"]),
    ([0.45, 0.5, 0.05], ["crack", "scratch"]),
    ([0.0, 0.0, 1.0], []),  # the pass class alone: its 1.0 never rejects
])
def test_several_ng_classes_each_against_its_threshold(scores, defects):
    policy = _policy({"crack": 0.4, "scratch": 0.5, "ok": 1.0}, margin=0.0, classes=("crack", "scratch", "ok"))
    assert [d.class_name for d in _decide(scores, policy).defects] == defects


def test_the_configs_thresholds_override_the_cards():
    policy = DecisionPolicy.build(DecisionConfig(thresholds={"ng": 0.25}), ("ng", "ok"), {"ng": 0.5, "ok": 1.0},
                                  task="classify", pass_class="ok")
    assert policy.thresholds == (0.25, 1.0) and _decide([0.3, 0.7], policy).actuate


def test_late_is_late_whatever_the_classifier_said():
    policy = _policy()
    v = _decide([0.1, 0.9], policy, now=100.2)  # 200 ms after capture, budget 50 ms
    assert v.outcome is Outcome.LATE and v.actuate and v.reason is Reason.LATE
    lv = late_verdict(_frame(), policy, StageTimings(), MODEL)
    assert lv.task == "classify" and lv.class_scores is None and lv.actuate


@pytest.mark.parametrize("pass_class, cfg, error, match", [
    ("good", {}, ModelError, r"pass class among its classes \['ng', 'ok'\] \(card pass_class\), got 'good'"),
    ("ok", {"roi": (0, 0, 10, 10)}, ConfigError, r"decision.roi: applies to boxes \(task detect\)"),
    ("ok", {"min_box_px": 4}, ConfigError, r"decision.min_box_px: applies to boxes"),
])
def test_a_classify_policy_refuses_what_it_cannot_apply(pass_class, cfg, error, match):
    with pytest.raises(error, match=match):
        _policy(pass_class=pass_class, **cfg)


def test_a_judge_pairs_the_classify_runner_with_the_classify_decision(cls_bundle):
    policy = _policy()
    runner = open_runner(ModelConfig(path=Path("unused"), task="classify"), cls_bundle, conf=policy.conf_floor)
    judge = make_judge(runner, policy)
    assert judge.runner.head.task == judge.policy.task == "classify"
    detect_policy = DecisionPolicy.build(DecisionConfig(), ("ng", "ok"), {"ng": 0.5, "ok": 0.5})
    with pytest.raises(ValueError, match="a 'classify' model cannot be judged by a 'detect' decision policy"):
        make_judge(runner, detect_policy)


# -- records and payloads ---------------------------------------------------------------------------------
def test_a_classifiers_reject_names_class_and_probability_without_a_box():
    v = _decide([0.875, 0.125], _policy())
    rec = verdict_record(v)
    assert rec["defects"] == [{"class": "ng", "class_id": 0, "confidence": 0.875}]
    assert rec["class_scores"] == {"ng": 0.875, "ok": 0.125}
    body = json.loads(reject_payload(v, "r1").to_json())
    assert body["defects"] == [{"class": "ng", "confidence": 0.875}] and body["schema_version"] == 1
    verdict = json.loads(verdict_payload(v, "r1").to_json())
    assert verdict["defects"] == body["defects"] and verdict["uncertain"] == 0


def test_a_detectors_records_and_payloads_keep_their_boxes_and_no_class_scores():
    d = Defect("scratch", 1, 0.75, (1.0, 2.0, 30.5, 40.25))
    v = Verdict(_frame(), Outcome.REJECT, True, Reason.DEFECT, (d,), (), 100.05, 1.7e9 + 0.05, StageTimings(),
                MODEL)
    rec = verdict_record(v)
    assert "class_scores" not in rec
    assert rec["defects"] == [{"class": "scratch", "class_id": 1, "confidence": 0.75, "box": [1.0, 2.0, 30.5, 40.2]}]
    assert ('"defects":[{"class":"scratch","confidence":0.75,"box":[1.0,2.0,30.5,40.2]}]'
            in reject_payload(v, "r1").to_json())


def test_a_plc_result_of_a_classifier_names_class_and_probability_without_a_box():
    """The PLC handshake's `.../result` builds its defects as `signalling.plc` does (DefectOut from the
    verdict's defects): a classifier's has no `box` key."""
    from datetime import UTC, datetime

    from inspector.signalling.payloads import DefectOut, PlcResultPayload

    v = _decide([0.875, 0.125], _policy())
    now = datetime.now(UTC)
    p = PlcResultPayload(part_id="p1", seq=1, result="NG", reason="defect", fail_safe=False, frame_id=1,
                         defects=[DefectOut(**{"class": d.class_name, "confidence": d.confidence, "box": d.box})
                                  for d in v.defects], trigger_at=now, deadline=now, result_at=now, late=False,
                         latency_ms=3.0, error=None)
    assert json.loads(p.to_json())["defects"] == [{"class": "ng", "confidence": 0.875}]
