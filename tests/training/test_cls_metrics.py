"""The classifier's OK/NG decision, threshold calibration and metrics (pure numpy, no model)."""

import itertools

import numpy as np
import pytest

from inspector.training.cls_metrics import calibrate, decide, report, roc_auc

CLASSES = ["dent", "ok", "scratch"]


def test_the_calibrated_threshold_rejects_the_image_it_was_set_on():
    # p(ng) of 5 NG images; target 0.8 keeps 4 of them: the threshold is the 4th highest score, and an image
    # scoring exactly that must be rejected with the threshold as the card stores it (4 decimals, rounded down:
    # rounding 0.49846 to 0.4985 passed it)
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.49846, 0.50154], [0.2, 0.8], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 0, 0, 1])
    thresholds, reached = calibrate(probs, labels, ["ng", "ok"], "ok", 0.8)
    assert thresholds == {"ng": 0.4984, "ok": 1.0}
    assert reached == {"ng": 0.8}
    assert decide(probs, ["ng", "ok"], "ok", thresholds).tolist() == [True, True, True, True, False, False]


@pytest.mark.parametrize("target", [0.5, 0.9, 0.99, 1.0])
def test_each_ng_class_keeps_the_target_recall(target):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3)) + 2.0 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    thresholds, reached = calibrate(probs, labels, CLASSES, "ok", target)
    assert thresholds["ok"] == 1.0
    for k, c in enumerate(CLASSES):
        if c != "ok":
            rejected = probs[labels == k, k] >= thresholds[c]
            assert rejected.mean() >= target - 1e-12 and reached[c] == pytest.approx(rejected.mean())


def test_roc_auc_is_the_share_of_ordered_pairs_ties_counted_half():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 5, 40).astype(float)  # many ties
    pos = rng.random(40) < 0.4
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(score[pos], score[~pos])]
    assert roc_auc(score, pos) == pytest.approx(np.mean(pairs))
    assert roc_auc(score, np.zeros(40, bool)) is None


def test_report_counts_escapes_false_rejects_and_the_confusion_matrix():
    probs = np.array([[0.8, 0.1, 0.1],   # dent, rejected (dent >= 0.5)
                      [0.3, 0.4, 0.3],   # dent, escapes (0.3 < 0.5, scratch 0.3 < 0.6)
                      [0.1, 0.2, 0.7],   # scratch, rejected
                      [0.1, 0.8, 0.1],   # ok, passed
                      [0.55, 0.45, 0.0]])  # ok, falsely rejected
    labels = np.array([0, 0, 2, 1, 1])
    r = report(probs, labels, CLASSES, "ok", {"dent": 0.5, "ok": 1.0, "scratch": 0.6})
    assert (r["escapes"], r["false_rejects"], r["ng_images"], r["ok_images"]) == (1, 1, 3, 2)
    assert r["ng_recall"] == pytest.approx(2 / 3, abs=1e-4) and r["accuracy"] == 0.6
    assert r["recall_per_class"] == {"dent": 0.5, "ok": 0.5, "scratch": 1.0}
    assert r["confusion_matrix"]["counts"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert r["top1_accuracy"] == 0.6
