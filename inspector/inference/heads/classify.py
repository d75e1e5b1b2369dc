"""The `classify` head: one probability per class for the whole image (an Ultralytics image classifier).

Preprocessing is Ultralytics' classify transform (`classify_transforms`, what its validation runs and its
exported IR expects): the shorter side resized to the input size, a centre crop of the input size, RGB,
scaled to [0, 1]. Here the resize and crop run in OpenCV on uint8 (`Preprocessor`), and u8->f32, BGR->RGB,
/255 and NHWC->NCHW are folded into the compiled model (`ClassifyHead.fold_input`), as the detect head does.
cv2.INTER_AREA stands in for PIL's antialiased bilinear resize (both average the source pixels of a
downscale). Measured on ELPV (300 -> 224 px, epoch-2 weights exported as an FP32 IR): top-1 on the 394 val
images 0.7640 through this preprocessing, 0.764 in Ultralytics' own validation of the same weights.

The offline tools (quantize, model build, eval) compile bare IRs without the folded conversion and take
`prepare` (the same crop, as the float NCHW tensor): one preprocessing, here, for the line and the tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from inspector.errors import ModelError
from inspector.frames import ClassScores
from inspector.inference.heads.base import UltralyticsHead, check_image


def crop_plan(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[tuple[int, int], int, tuple[int, int]]:
    """(resized (h, w), cv2 interpolation, crop origin (y0, x0)): the shorter side to the input size, the
    centre crop of the input size (Ultralytics' CenterCrop after its shorter-side resize)."""
    h, w = src_hw
    th, tw = dst_hw
    s = max(th / h, tw / w)
    nh, nw = max(th, round(h * s)), max(tw, round(w * s))
    return (nh, nw), (cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), ((nh - th) // 2, (nw - tw) // 2)


class Preprocessor:
    """Resizes and centre-crops uint8 frames into a reusable (1, H, W, C) uint8 buffer, C = the model's
    channels (a gray frame into a 3-channel model: its gray level in each channel; a colour frame into a
    1-channel model: its luma), converted after the crop, at the model's input size."""

    def __init__(self, input_hw: tuple[int, int], channels: int = 3) -> None:
        if channels not in (1, 3):
            raise ValueError(f"a model takes 1 or 3 channels, got {channels}")
        self.input_hw, self.channels = input_hw, channels
        self._plans: dict[tuple[int, int], tuple[tuple[int, int], int, tuple[int, int]]] = {}

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        check_image(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        hw = image.shape[:2]
        plan = self._plans.get(hw)
        if plan is None:
            plan = self._plans[hw] = crop_plan(hw, self.input_hw)
        (nh, nw), interp, (y0, x0) = plan
        th, tw = self.input_hw
        small = cv2.resize(image, (nw, nh), interpolation=interp) if (nh, nw) != hw else image
        crop = small[y0:y0 + th, x0:x0 + tw]
        if out is None:
            out = np.empty((1, th, tw, self.channels), np.uint8)
        if (1 if crop.ndim == 2 else 3) == self.channels:
            out[0].reshape(crop.shape)[...] = crop
        else:
            code = cv2.COLOR_GRAY2BGR if crop.ndim == 2 else cv2.COLOR_BGR2GRAY
            out[0].reshape((th, tw, 3) if self.channels == 3 else (th, tw))[...] = cv2.cvtColor(crop, code)
        return out, None


def prepare(img: np.ndarray, hw: tuple[int, int], channels: int = 3) -> np.ndarray:
    """One image (BGR, BGRA or gray uint8) -> a bare classifier IR's input [1, C, H, W] float32 (RGB, [0, 1]):
    the head's crop, with the conversion `fold_input` folds into the compiled model done in numpy."""
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    x = Preprocessor(hw, channels)(img)[0][0]
    x = x[..., ::-1] if channels == 3 else x  # BGR -> RGB
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


class ClassifyHead(UltralyticsHead):
    """The softmax over the card's classes (output (1, classes)) -> `ClassScores`, every class kept (the
    decision needs the pass class's score and every NG class's; `settings.conf` cuts nothing here)."""

    task: ClassVar[str] = "classify"

    def check_model(self, model: Any, where: Path) -> None:
        shape = model.output(0).get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() != 2:
            raise ModelError(f"{where}: output shape {shape} is not (1, classes): not an image classifier "
                             f"(task classify in the card)")
        if shape.is_static and int(shape[1].get_length()) != len(self.classes):
            raise ModelError(f"{where}: output has {shape[1]} scores, the card has {len(self.classes)} classes "
                             f"{list(self.classes)}")

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.input_hw, self.channels)

    def decode(self, output: np.ndarray, ctx: Any = None) -> ClassScores:
        # a copy: the runner decodes straight from the request's output, which the next frame overwrites
        return ClassScores(np.array(output, np.float32).reshape(-1))
