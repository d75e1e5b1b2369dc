"""The detector on real OpenVINO with the shipped model; letterbox and NMS as tables."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.errors import ModelError
from inspector.inference.detector import (
    Detector,
    Letterbox,
    Preprocessor,
    check_image,
    load_bundle,
    nms,
    postprocess,
)
from inspector.sources.conveyor import ConveyorGenerator

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


@pytest.mark.parametrize("bad", [np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.float32),
                                 np.zeros((480, 640, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), "not an image"])
def test_bad_frames_are_refused_plainly(bad):
    with pytest.raises(ValueError, match="HxWx3 uint8|numpy array"):
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


def test_detects_synthetic_defects(detector):
    gen = ConveyorGenerator(4242)
    hits = total = 0
    for i in range(30):
        p = gen.part(i)
        d = detector.detect(p.image, conf=min(detector.bundle.thresholds.values()))  # the operating point
        for gt in p.defects:
            total += 1
            for box, cls in zip(d.xyxy, d.class_id):
                x0, y0 = max(box[0], gt.box[0]), max(box[1], gt.box[1])
                x1, y1 = min(box[2], gt.box[2]), min(box[3], gt.box[3])
                inter = max(0, x1 - x0) * max(0, y1 - y0)
                union = (box[2] - box[0]) * (box[3] - box[1]) + (gt.box[2] - gt.box[0]) * (gt.box[3] - gt.box[1]) - inter
                if cls == gt.class_id and inter / union > 0.5:
                    hits += 1
                    break
    assert total > 20 and hits / total > 0.8


def test_bundle_metadata_is_consistent():
    card = json.loads((MODEL / "model_card.json").read_text())
    b = load_bundle(MODEL, "int8")
    assert list(b.classes) == card["classes"] and list(b.input_size) == card["input_size"]
    assert set(card["thresholds"]) == set(card["classes"])
    assert b.sha256 == card["files"]["int8"]["bin_sha256"]


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


def test_async_submit_matches_sync(detector):
    import threading

    img = ConveyorGenerator(9).part(1).image
    sync = detector.detect(img)
    got = {}
    done = threading.Event()

    def cb(raw, ud):
        got["raw"], got["ud"] = raw, ud
        done.set()

    det = Detector(load_bundle(MODEL, "int8"), conf=0.05)
    det.start_async(cb)
    tensor, lb = det.preprocess(img)
    det.submit(tensor, "frame-1")
    assert done.wait(10)
    det.wait_all()
    d = postprocess(got["raw"], lb, 0.05, det.iou)
    assert got["ud"] == "frame-1"
    assert np.allclose(d.xyxy, sync.xyxy) and np.allclose(d.confidence, sync.confidence)


def test_matrix_nms_keeps_exactly_what_the_per_box_loop_keeps(monkeypatch):
    import inspector.inference.detector as detector_mod

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
