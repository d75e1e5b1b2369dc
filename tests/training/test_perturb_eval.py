"""Accuracy under perturbation: altered copies are deterministic and keep (or move) their labels; the real
model loses accuracy under a strong white-balance cast; bad family lists are named."""

from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.sources import optics
from inspector.training.evaluate import synthetic_samples
from inspector.training.perturb_eval import (
    CLEAN,
    evaluate_perturbed,
    format_table,
    parse_families,
    perturb_samples,
    row,
)

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def samples():
    return list(synthetic_samples(10, 4004))


@pytest.mark.parametrize("name", ["white_balance", "jpeg", "noise", "geometry"])
def test_altered_copies_are_deterministic_and_keep_their_labels(samples, name):
    a, b = perturb_samples(samples, name, 7), perturb_samples(samples, name, 7)
    for s, x, y in zip(samples, a, b, strict=True):
        assert np.array_equal(x.image, y.image) and not np.array_equal(x.image, s.image)
        assert np.array_equal(x.gt_cls, s.gt_cls)
        if not optics.family(name).geometric:
            assert np.array_equal(x.gt_boxes, s.gt_boxes)
    if name == "geometry":
        assert any(not np.allclose(x.gt_boxes, s.gt_boxes) for s, x in zip(samples, a, strict=True) if len(s.gt_boxes))
    assert perturb_samples(samples, CLEAN, 7) == samples


@pytest.mark.parametrize(("text", "expect"), [
    ("issue", [CLEAN, *optics.ISSUE_FAMILIES]),
    ("all", [CLEAN, *optics.FAMILIES]),
    ("none, blur", [CLEAN, "blur"]),
])
def test_parse_families(text, expect):
    assert parse_families(text) == expect


@pytest.mark.parametrize("text", ["", "fog", "blur,fog", ","])
def test_bad_family_list_is_named(text):
    with pytest.raises(ValueError, match="--perturb: expected 'all', 'issue' or names among"):
        parse_families(text)


def test_the_real_model_loses_accuracy_beyond_what_it_was_trained_for(samples):
    """models/demo 1.2.x holds a strong colour cast (1.1.0 lost 0.2 mAP50 to it here); a Gaussian blur far past
    its training range (sigma 3.5-4.5 vs <= 2.4) still costs it: the evaluation measures, it does not flatter.
    On these 10 frames the cost shows in boxes or in verdicts depending on the model (1.2.0: mAP50 0.995 -> 0.891,
    no false reject added; 1.2.1: 0.970 -> 0.945 and 3 false rejects), so either counts."""
    bundle = load_bundle(MODEL, "int8")
    r = evaluate_perturbed(bundle, samples, [CLEAN, "white_balance", "blur"], seed=1, magnitude="strong")

    def wrong(k):
        return r[k]["parts"]["escapes"] + r[k]["parts"]["false_rejects"]

    assert r[CLEAN]["mAP50"] - r["blur"]["mAP50"] >= 0.02 or wrong("blur") - wrong(CLEAN) >= 2, r
    rows = [row(k, v, "strong") for k, v in r.items()]
    table = format_table(rows)
    assert table.splitlines()[2].startswith("| none |") and "white_balance (gain 0.5-1.5, spread 0.7-0.9)" in table
