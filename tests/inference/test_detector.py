"""The detector on real OpenVINO with the shipped model; letterbox and NMS as tables."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.errors import ModelError
from inspector.inference.detector import Detector, open_detector
from inspector.inference.heads.base import check_image
from inspector.inference.heads.detect import Letterbox, Preprocessor, nms, postprocess
from inspector.sources.conveyor import ConveyorGenerator
from tests.inference.faults import HeldDetector, RefusingDetector

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "demo"


@pytest.fixture(scope="module")
def detector():
    return Detector(load_bundle(MODEL, "int8"), conf=0.05)


@pytest.mark.parametrize(
    "src, dst, pads, gains",
    [
        ((480, 640), (320, 320), (0, 40), (0.5, 0.5)),
        ((720, 1280), (320, 320), (0, 70), (0.25, 0.25)),
        ((320, 320), (320, 320), (0, 0), (1.0, 1.0)),
        ((100, 50), (320, 320), (80, 0), (3.2, 3.2)),
    ],
)
def test_letterbox_plan(src, dst, pads, gains):
    lb, (nw, nh), (top, bottom, left, right) = Letterbox.plan(src, dst)
    assert (lb.pad_x, lb.pad_y) == pads
    assert (lb.gain_x, lb.gain_y) == pytest.approx(gains)
    assert nh + top + bottom == dst[0] and nw + left + right == dst[1]


def test_preprocess_pads_with_grey():
    img = np.full((480, 640, 3), 200, np.uint8)
    out, lb = Preprocessor((320, 320))(img)
    assert out.shape == (1, 320, 320, 3)
    assert (out[0, :40] == 114).all() and (out[0, 280:] == 114).all() and (out[0, 40:280] == 200).all()


@pytest.mark.parametrize("bad", [np.zeros((480, 640, 3), np.float32), np.zeros((480, 640, 2), np.uint8),
                                 np.zeros((480, 640, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), "not an image"])
def test_bad_frames_are_refused_plainly(bad):  # gray HxW is a frame (tests/inference/test_channels.py)
    with pytest.raises(ValueError, match="HxWx3 \\(BGR\\) or HxW|numpy array"):
        check_image(bad)


@pytest.mark.parametrize(
    "boxes, iou, keep",
    [
        (np.zeros((0, 4)), 0.5, []),
        (np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float), 0.5, [0, 2]),
        (np.array([[0, 0, 10, 10], [1, 1, 11, 11]], float), 0.9, [0, 1]),
    ],
)
def test_nms(boxes, iou, keep):
    assert nms(boxes, iou).tolist() == keep


def test_postprocess_maps_boxes_back_to_source_pixels():
    lb, *_ = Letterbox.plan((480, 640), (320, 320))
    raw = np.zeros((1, 8, 3), np.float32)
    raw[0, :4, 0] = [160, 160, 20, 10]  # cx, cy, w, h in model pixels
    raw[0, 4 + 2, 0] = 0.9  # class 2
    raw[0, :4, 1] = [161, 160, 20, 10]  # overlapping, same class, lower score: suppressed
    raw[0, 4 + 2, 1] = 0.8
    raw[0, :4, 2] = [161, 160, 20, 10]  # overlapping but another class: kept (class-aware)
    raw[0, 4 + 1, 2] = 0.7
    d = postprocess(raw, lb, conf=0.25, iou=0.7)
    assert d.class_id.tolist() == [2, 1]
    assert d.xyxy[0].tolist() == pytest.approx([300, 230, 340, 250])


@pytest.mark.slow
def test_accuracy_on_the_cards_held_out_split_matches_the_card():
    """The card's claims, checked as the runtime runs the model: per-class recall at the card's
    thresholds and the part-level escapes and false rejects, on the very split the card names
    (the synthetic generator with its seed and size). The card was measured on another CPU: INT8
    kernels differ by CPU generation, so one instance per class (and one good part) of slack."""
    from inspector.training.evaluate import synthetic_samples
    from inspector.training.metrics import ImageResult, at_thresholds, part_level

    card = json.loads((MODEL / "model_card.json").read_text())
    split, claims = card["evaluation"]["split"], card["evaluation"]["int8"]
    bundle = load_bundle(MODEL, "int8")
    th = np.array([bundle.thresholds[c] for c in bundle.classes], np.float32)
    # Detections under the lowest threshold cannot change anything at the thresholds (NMS keeps
    # higher scores first), so the lowest threshold is a cut as good as the card's 0.001 and faster.
    det = Detector(bundle, conf=float(th.min()))
    results = []
    for s in synthetic_samples(split["n"], split["seed"]):
        d = det.detect(s.image)
        results.append(ImageResult(s.gt_boxes, s.gt_cls, d.xyxy, d.confidence, d.class_id))
    got = at_thresholds(results, th)
    for i, c in enumerate(bundle.classes):
        want = claims["per_class"][c]
        assert got["n_gt"][i] == want["instances"], f"{c}: the split is not the card's"
        assert got["recall"][i] >= want["recall"] - 1 / want["instances"] - 1e-9, f"{c}: recall below the card's"
    parts, want_parts = part_level(results, th), claims["parts"]
    assert (parts["defective_parts"], parts["good_parts"]) == (want_parts["defective_parts"], want_parts["good_parts"])
    assert parts["escapes"] <= want_parts["escapes"]
    assert parts["false_rejects"] <= want_parts["false_rejects"] + 1


def test_bundle_metadata_is_consistent():
    card = json.loads((MODEL / "model_card.json").read_text())
    b = load_bundle(MODEL, "int8")
    assert list(b.classes) == card["classes"] and list(b.input_size) == card["input_size"]
    assert set(card["thresholds"]) == set(card["classes"])
    assert b.sha256 == card["files"]["int8"]["bin_sha256"]


def test_the_service_reads_and_hashes_the_bundle_once(monkeypatch):
    """open_detector builds on the bundle load_bundle returned: no second read of the card, no
    second sha256 of the weights (the service used to do both twice at start)."""
    from inspector.config import ModelConfig
    from tests.bundle.hashes import HashCounter

    hashed = HashCounter(monkeypatch)
    bundle = load_bundle(MODEL, "int8")
    card = json.loads((MODEL / "model_card.json").read_text())
    assert hashed.per_file(card) == {"model_int8.xml": 1, "model_int8.bin": 1, "model_fp32.xml": 0,
                                     "model_fp32.bin": 0}  # the IR's .xml and .bin, against the card
    det = open_detector(ModelConfig(path=MODEL, precision="int8"), bundle, conf=0.05)
    assert det.bundle is bundle and sum(hashed.digests.values()) == 2
    assert bundle.blobs is not None and bundle.blobs.take() is None  # compiled from the bytes hashed, then let go
    assert (det.conf, det.iou, det.max_det) == (0.05, ModelConfig().iou, ModelConfig().max_detections)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="model_card.json is missing"):
        load_bundle(tmp_path)


def test_corrupt_weights_are_refused(tmp_path):
    bundle = tmp_path / "m"
    shutil.copytree(MODEL, bundle)
    with open(bundle / "model_int8.bin", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_bundle(bundle, "int8")


def test_classes_or_input_size_mismatch_refused_at_start():
    b = load_bundle(MODEL, "int8")
    with pytest.raises(ModelError, match="classes"):
        Detector(b, expect_classes=["scratch", "dent"], warmup=0)
    with pytest.raises(ModelError, match="input size"):
        Detector(b, expect_input=(640, 640), warmup=0)


def test_card_that_disagrees_with_the_ir_is_refused(tmp_path):
    bundle = tmp_path / "m"
    shutil.copytree(MODEL, bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    card["classes"] = list(reversed(card["classes"]))
    (bundle / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="labels in the IR"):
        Detector(load_bundle(bundle, "int8"), warmup=0)


def test_unavailable_device_lists_the_available_ones():
    with pytest.raises(ModelError, match=r"not available.*available devices: \[.*CPU"):
        Detector(load_bundle(MODEL, "int8"), device="NPU", warmup=0)


def test_async_stage_delivers_the_same_detections_as_sync(detector):
    img = ConveyorGenerator(9).part(1).image
    sync = detector.detect(img)
    got = {}
    done = threading.Event()

    def deliver(result, ud):
        got["result"], got["ud"] = result, ud
        done.set()

    det = Detector(load_bundle(MODEL, "int8"), conf=0.05, async_requests=2)
    det.start_async(deliver)
    assert det.submit(img, "frame-1")
    assert done.wait(30), "no completion"
    assert det.wait_idle(30)
    r = got["result"]
    assert got["ud"] == "frame-1" and r.error is None and len(r.findings) > 0
    assert np.allclose(r.findings.xyxy, sync.xyxy) and np.allclose(r.findings.confidence, sync.confidence)
    assert r.t_start <= r.t_pre <= r.t_done <= r.t_post


def test_submit_says_when_every_request_is_busy():
    det = HeldDetector(load_bundle(MODEL, "int8"), conf=0.05, async_requests=2, warmup=0)
    delivered = []
    det.start_async(lambda r, ud: delivered.append(ud))
    img = ConveyorGenerator(9).part(1).image
    try:
        assert det.submit(img, 1) and det.submit(img, 2)
        assert det.submit(img, 3, wait_s=0.0) is False  # both requests held: nothing started, nothing owed
        assert det.oldest_busy_since() is not None and not det.wait_idle(0)
    finally:
        det.release.set()
    assert det.wait_idle(30)
    assert sorted(delivered) == [1, 2] and det.oldest_busy_since() is None


def test_a_request_openvino_refuses_is_delivered_as_a_failure():
    det = RefusingDetector(load_bundle(MODEL, "int8"), conf=0.05, async_requests=2, warmup=0)
    got = []
    det.start_async(lambda r, ud: got.append((r, ud)))
    assert det.submit(ConveyorGenerator(9).part(1).image, "f")
    assert det.wait_idle(30)
    (r, ud), = got
    assert ud == "f" and r.findings is None and "RuntimeError" in r.error and "input tensor size" in r.error


def test_matrix_nms_keeps_exactly_what_the_per_box_loop_keeps(monkeypatch):
    import inspector.inference.heads.detect as detector_mod

    rng = np.random.default_rng(7)
    for n in (1, 2, 17, 300):
        xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
        wh = rng.uniform(2, 60, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        fast = detector_mod.nms(boxes, 0.5)
        monkeypatch.setattr(detector_mod, "_NMS_MATRIX_MAX", 0)  # force the per-box loop
        slow = detector_mod.nms(boxes, 0.5)
        monkeypatch.undo()
        assert fast.tolist() == slow.tolist()
