"""The page's frame rendering: a detector's boxes where they are, a classifier's whole-image finding (no box)
as a frame around the image, both in the colour of their kind (defect red, uncertain amber)."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.frames import Defect
from inspector.page.render import DEFECT_BGR, UNCERTAIN_BGR, annotate


def _is(px: np.ndarray, bgr: tuple[int, int, int]) -> bool:
    return bool(np.abs(px.astype(int) - bgr).max() <= 10)


@pytest.mark.parametrize("defects, uncertain, color", [
    ((Defect("ng", 0, 0.93, None),), (), DEFECT_BGR),
    ((), (Defect("ng", 0, 0.46, None),), UNCERTAIN_BGR),
])
def test_a_whole_image_finding_frames_the_image(defects, uncertain, color):
    out = annotate(np.full((240, 320), 128, np.uint8), defects, uncertain, 320)
    assert out.shape == (240, 320, 3)
    for y, x in ((2, 160), (237, 160), (120, 2), (120, 317)):  # each edge
        assert _is(out[y, x], color), (y, x, out[y, x])
    assert _is(out[120, 160], (128, 128, 128)), "the inside untouched"


def test_a_box_is_drawn_where_it_is():
    out = annotate(np.full((240, 320, 3), 128, np.uint8), (Defect("scratch", 0, 0.9, (100, 100, 200, 150)),), (), 320)
    assert _is(out[100, 150], DEFECT_BGR) and _is(out[2, 160], (128, 128, 128))
