"""Normalizes a decoded image to the layouts the pipeline accepts: HxW uint8 (grayscale) or HxWx3
uint8 BGR.

Cameras and files hand over what they have: grayscale (mono line cameras), BGRA (PNG with alpha),
16-bit (machine-vision sensors, TIFF). Grayscale stays grayscale: the detector converts it to what
the model expects once, inside its letterbox at the model's input size, so inflating a 5 MP mono
frame to 3 channels here would cost a full-frame copy (15 MB) for nothing, and every consumer of
`Frame.image` (drift statistics, dHash, spool JPEG) reads a third of the bytes. Everything else
is converted or refused with the reason in words, and the caller counts it as `bad_frame` (or
`corrupt` for a file).
"""

from __future__ import annotations

import cv2
import numpy as np


def normalize_image(image: object) -> tuple[np.ndarray | None, str]:
    """(HxW gray or HxWx3 BGR uint8 image, "") or (None, why it is unusable: expected vs actual).

    HxWx1 becomes HxW (a view, no copy); 16-bit keeps its high byte; BGRA drops the alpha."""
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
    # Downstream code slices and hands the buffer to OpenVINO/OpenCV: it must be contiguous.
    if channels == 1:
        return np.ascontiguousarray(image.reshape(image.shape[:2])), ""
    if channels == 3:
        return np.ascontiguousarray(image), ""
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), ""
    return None, f"expected 1, 3 or 4 channels, got {channels} (shape {image.shape})"


def to_bgr(image: object) -> tuple[np.ndarray | None, str]:
    """Like `normalize_image`, but grayscale is expanded to 3 equal channels: for callers that need
    colour layout (none on the frame path: sources use `normalize_image`)."""
    out, why = normalize_image(image)
    if out is not None and out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    return out, why
