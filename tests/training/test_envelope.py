"""The input envelope from reference images: bounds hold the references, families widen them, the real model's
confidences give the PSI reference, bad folders are named."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.bundle.envelope import PSI_EDGES, STAT_NAMES, Envelope
from inspector.bundle.load import load_bundle
from inspector.inference.drift_guard import frame_stats
from inspector.sources.conveyor import ConveyorGenerator
from inspector.training.cls_infer import ClsIR
from inspector.training.datasets import write_synth_dataset
from inspector.training.envelope import (
    bounds_from_stats,
    compute_envelope,
    folder_images,
    write_card_envelope,
)

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"
CLS_MODEL = MODEL.parent / "demo-cls"


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    gen = ConveyorGenerator(41)
    return [gen.part(i).image for i in range(24)]


def test_bounds_hold_every_reference_frame(images):
    env = compute_envelope(images, quantile=0.0, margin=0.0)
    for img in images:
        s = frame_stats(img)
        for i, n in enumerate(STAT_NAMES):
            lo, hi = env.bounds[n]
            assert lo - 1e-9 <= s[i] <= hi + 1e-9, n


@pytest.mark.parametrize(("family", "widened"), [
    ("white_balance", ("cast_b", "cast_r")),
    ("darker", ("luma",)),
    ("blur", ("sharpness",)),
    ("jpeg", ("blockiness",)),
])
def test_validated_families_widen_their_statistics(images, family, widened):
    clean, wide = compute_envelope(images), compute_envelope(images, [family])
    assert wide.source["families"] == [family]
    for n in widened:
        (lo0, hi0), (lo1, hi1) = clean.bounds[n], wide.bounds[n]
        assert lo1 <= lo0 and hi1 >= hi0 and (hi1 - lo1) > 1.3 * (hi0 - lo0), n


@pytest.mark.parametrize(("quantile", "margin"), [(0.6, 0.1), (0.01, -0.1)])
def test_bad_quantile_or_margin(quantile, margin):
    with pytest.raises(ValueError, match="quantile within"):
        bounds_from_stats(np.zeros((4, len(STAT_NAMES))), quantile, margin)


def test_from_a_dataset_folder_with_the_real_model(tmp_path):
    data_yaml = write_synth_dataset(tmp_path / "val", 12, seed=43)
    imgs = list(folder_images(data_yaml))
    assert len(imgs) == 12
    env = compute_envelope(imgs, bundle=load_bundle(MODEL, "int8"))
    assert env.frame_size == (640, 480)
    ref = env.confidence
    assert ref is not None and ref.frames == 12 and len(ref.proportions) == len(PSI_EDGES) - 1
    assert sum(ref.proportions) == pytest.approx(1.0)
    assert ref.proportions[-1] + ref.proportions[-2] > 0  # defective parts: confident detections
    assert Envelope.from_card(env.to_card()).confidence.proportions == pytest.approx(ref.proportions, abs=1e-6)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: None, "no images"),
    (lambda d: (d / "a.png").write_bytes(b"not a png"), "cannot read image"),
])
def test_bad_folder_is_named(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(ValueError, match=message):
        list(folder_images(tmp_path))


def test_mixed_frame_sizes_are_refused(images):
    with pytest.raises(ValueError, match=r"one frame size, got \(640, 480\) then \(320, 240\) \(image 1\)"):
        compute_envelope([images[0], cv2.resize(images[1], (320, 240))])


def test_the_card_envelope_records_the_output_guards_reference(tmp_path):
    """`model build` / `model envelope` write input_envelope.output: the share of weak detections and of
    rejects of the real model on the reference images (what the output guard compares a line with)."""
    import json
    import shutil

    from inspector.training.envelope import write_card_envelope

    bundle = tmp_path / "demo"
    shutil.copytree(MODEL, bundle)
    gen = ConveyorGenerator(2002)
    imgs = [gen.part(i).image for i in range(30)]
    env = write_card_envelope(bundle, imgs, [], seed=2002)
    card = json.loads((bundle / "model_card.json").read_text())
    out = card["input_envelope"]["output"]
    assert out["frames"] == 30 and out["weak_below"] == 0.5 and 0 <= out["weak_rate"] < 0.2
    defective = sum(1 for i in range(30) if gen.part(i).defects)
    assert out["reject_rate"] == pytest.approx(defective / 30, abs=0.1)  # the model finds the defects
    assert env.output is not None and Envelope.from_card(card["input_envelope"]).output == env.output
    assert load_bundle(bundle, "int8").card.input_envelope["output"] == out


def test_a_classifier_records_its_top_probability_and_a_two_class_weak_band(tmp_path, images):
    """`model envelope` on a classify bundle: the PSI reference is of the top class probability (>= 0.5 of
    two classes), the output reference's weak band is the kind's (0.75 for OK/NG), and its reject share is
    p(NG) reaching the card's threshold, as the offline tools' own OpenVINO path computes it."""
    bundle_dir = tmp_path / "cls"
    shutil.copytree(CLS_MODEL, bundle_dir)
    env = write_card_envelope(bundle_dir, images, [])
    card = load_bundle(bundle_dir, "int8").card
    assert card.task == "classify"
    ref = env.confidence
    assert ref is not None and ref.frames == len(images)
    assert sum(ref.proportions[:5]) == 0 and sum(ref.proportions) == pytest.approx(1.0)  # top of 2 classes >= 0.5
    out = Envelope.from_card(card.input_envelope).output
    assert out is not None and out.weak_below == 0.75 and out.frames == len(images)
    ir = ClsIR(bundle_dir / "model_int8.xml")
    ng = card.classes.index(next(c for c in card.classes if c != card.pass_class))
    p_ng = np.array([ir.probs(img)[ng] for img in images])
    assert out.reject_rate == pytest.approx(np.mean(p_ng >= card.thresholds[card.classes[ng]]), abs=1e-6)
    assert out.weak_rate == pytest.approx(np.mean(np.maximum(p_ng, 1 - p_ng) < 0.75), abs=1e-6)
