"""Normalizes a decoded image to the one layout the pipeline accepts: HxWx3 uint8 BGR.

Cameras and files hand over what they have: grayscale (mono line cameras), BGRA (PNG with alpha),
16-bit (machine-vision sensors, TIFF). Those are converted; anything else is refused with the
reason in words, and the caller counts it as `bad_frame` (or `corrupt` for a file).
"""

from __future__ import annotations

import cv2
import numpy as np


def to_bgr(image: object) -> tuple[np.ndarray | None, str]:
    """(BGR image, "") or (None, why it is unusable: expected vs actual)."""
    if not isinstance(image, np.ndarray):
        return None, f"expected a numpy image, got {type(image).__name__}"
    if image.size == 0 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        return None, f"expected an HxW or HxWxC image, got shape {image.shape}"
    if image.dtype == np.uint16:
        # 16-bit sensors: keep the high byte, as an 8-bit camera would have delivered it.
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None, f"expected dtype uint8 or uint16, got {image.dtype}"
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR), ""
    if channels == 3:
        # Downstream code slices and hands the buffer to OpenVINO: it must be contiguous.
        return np.ascontiguousarray(image), ""
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), ""
    return None, f"expected 1, 3 or 4 channels, got {channels} (shape {image.shape})"
