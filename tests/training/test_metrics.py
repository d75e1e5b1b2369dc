"""Threshold calibration and matching on hand-made results (pure logic, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.training.metrics import ImageResult, calibrate_thresholds

BOX = np.array([[10, 10, 50, 50]], np.float32)


def one(conf: float | None, cls: int = 0, gt_cls: int = 0) -> ImageResult:
    """One defect of `gt_cls`, found with `conf` on the right box (None: not found at all)."""
    if conf is None:
        return ImageResult(BOX, np.array([gt_cls]), np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int))
    return ImageResult(BOX, np.array([gt_cls]), BOX.copy(), np.array([conf]), np.array([cls]))


@pytest.mark.parametrize(
    "confs, target, expected_t, expected_reached",
    [
        ([0.9, 0.8, 0.7, 0.6], 1.0, 0.599, 1.0),  # all four kept: just under the weakest
        ([0.9, 0.8, 0.7, 0.6], 0.75, 0.699, 0.75),  # three of four suffice
        ([0.9, 0.8, 0.7, None], 0.99, 0.699, 0.75),  # out of reach: keep all that is found, no lower
        ([0.9, 0.8, 0.7, 0.03], 0.99, 0.699, 0.75),  # found only under the floor: same
        ([None, None], 0.9, 0.05, 0.0),  # nothing found: the floor
        ([0.99, 0.98], 0.5, 0.9, 1.0),  # capped at the ceiling
    ],
)
def test_thresholds_keep_the_target_recall_or_all_that_is_findable(confs, target, expected_t, expected_reached):
    t, reached = calibrate_thresholds([one(c) for c in confs], 1, target)
    assert t[0] == pytest.approx(expected_t), f"expected threshold {expected_t}, got {t[0]}"
    assert reached[0] == pytest.approx(expected_reached)


def test_a_detection_of_another_class_does_not_count():
    t, reached = calibrate_thresholds([one(0.9, cls=1), one(0.8)], 2, 0.99)
    assert reached[0] == pytest.approx(0.5)
    assert t[0] == pytest.approx(0.799)
    assert np.isnan(reached[1])  # no ground truth of class 1
