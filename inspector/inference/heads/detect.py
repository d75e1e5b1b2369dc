"""The `detect` head: YOLOv8-style boxes. Letterbox in, decode + class-aware NMS out.

Preprocessing is split where each part is fastest (measured in benchmarks/): the letterbox
(resize + pad) runs in OpenCV on uint8 into a preallocated buffer; the u8->f32 conversion,
BGR->RGB, /255 and NHWC->NCHW are folded into the compiled model with `PrePostProcessor`
(`DetectHead.fold_input`), so the frame crosses into OpenVINO once, as uint8, without a copy.
Letterbox and NMS reproduce ultralytics' arithmetic (tests/inference/test_parity.py checks it
against ultralytics itself).

Channels: frames come as BGR (HxWx3) or grayscale (HxW, HxWx1: mono cameras, Mono10/12 already
scaled to 8 bit by the source); the model card's `input_channels` (3, or 1 for a grayscale model;
checked against the IR at load) says what the model takes, and the letterbox converts once, at
the model's input size (see `Preprocessor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from inspector.errors import ModelError
from inspector.frames import Detections
from inspector.inference.heads.base import UltralyticsHead, check_image

PAD_VALUE = 114  # ultralytics' letterbox grey


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source image was fitted into the model input (ultralytics' arithmetic)."""

    src_hw: tuple[int, int]
    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int

    @staticmethod
    def plan(src_hw: tuple[int, int],
             dst_hw: tuple[int, int]) -> tuple[Letterbox, tuple[int, int], tuple[int, int, int, int]]:
        h, w = src_hw
        r = min(dst_hw[0] / h, dst_hw[1] / w)
        nw, nh = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = (dst_hw[1] - nw) / 2, (dst_hw[0] - nh) / 2
        top, bottom = round(dh - 0.1), round(dh + 0.1)
        left, right = round(dw - 0.1), round(dw + 0.1)
        return Letterbox(src_hw, nw / w, nh / h, left, top), (nw, nh), (top, bottom, left, right)


class Preprocessor:
    """Letterboxes uint8 frames into a reusable (1, H, W, C) uint8 buffer, C = the model's channels.

    A frame is BGR (H, W, 3) or grayscale (H, W) / (H, W, 1). With a reused `out` buffer the
    padding is written once per (buffer, frame size), and when the resized image spans the full
    width (any frame at least as wide as tall, relative to the input) cv2 resizes straight into the
    buffer's rows: no intermediate image, no copy.

    When the frame's channels differ from the model's, the conversion happens once, here, after the
    resize, at the model's input size: the frame is resized in its own layout into a scratch image
    of the input size (reused) and `cv2.cvtColor` writes that into the buffer (gray -> 3 equal
    channels, or BGR -> luma). No full-size converted copy of the frame is ever made: a 5 MP gray
    frame is resized on 1 channel, a third of the work of resizing its BGR inflation
    (benchmarks/test_stages.py, group letterbox-channels). Resize and channel replication commute
    exactly (each channel is resized alone), so a gray frame gives the same input, bit for bit, as
    the same frame stored with 3 equal channels (tests/inference/test_channels.py).
    """

    def __init__(self, input_hw: tuple[int, int], channels: int = 3) -> None:
        if channels not in (1, 3):
            raise ValueError(f"model input channels must be 1 or 3, got {channels}")
        self.input_hw = input_hw
        self.channels = channels
        self._plans: dict[tuple[int, int], tuple[Letterbox, tuple[int, int], tuple[int, int, int, int]]] = {}
        self._padded: tuple[int, tuple[int, int]] | None = None  # (id(out), frame hw) last padded
        self._scratch: dict[tuple[int, ...], np.ndarray] = {}  # resized frames awaiting their conversion

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
        check_image(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]  # a view: (H, W, 1) and (H, W) are the same bytes
        hw = image.shape[:2]
        plan = self._plans.get(hw)
        if plan is None:
            plan = self._plans[hw] = Letterbox.plan(hw, self.input_hw)
        lb, (nw, nh), (top, bottom, left, right) = plan
        if out is None:
            out = np.empty((1, *self.input_hw, self.channels), np.uint8)
            self._padded = None
        body = out[0] if self.channels == 3 else out[0, :, :, 0]  # 1 channel: a 2-D view cv2 can write into
        if self._padded != (id(out), hw):
            body[:top] = PAD_VALUE
            body[top + nh:] = PAD_VALUE
            body[top:top + nh, :left] = PAD_VALUE
            body[top:top + nh, left + nw:] = PAD_VALUE
            self._padded = (id(out), hw)
        region = body[top:top + nh, left:left + nw]
        same_size = (nw, nh) == (hw[1], hw[0])
        if (1 if image.ndim == 2 else 3) == self.channels:
            if same_size:
                region[...] = image
            elif region.flags.c_contiguous:
                cv2.resize(image, (nw, nh), dst=region, interpolation=cv2.INTER_LINEAR)
            else:
                region[...] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            return out, lb
        if same_size:
            small = image
        else:
            key = (nh, nw, *image.shape[2:])
            small = self._scratch.get(key)
            if small is None:
                small = self._scratch[key] = np.empty(key, np.uint8)
            cv2.resize(image, (nw, nh), dst=small, interpolation=cv2.INTER_LINEAR)
        # Luma (not the green channel) for a colour frame into a gray model: what a mono sensor
        # sees; on a 3-equal-channel frame both give the same bytes (the weights sum to exactly 1).
        code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_BGR2GRAY
        if region.flags.c_contiguous:
            cv2.cvtColor(small, code, dst=region)
        else:
            region[...] = cv2.cvtColor(small, code)
        return out, lb


def postprocess(
    raw: np.ndarray, lb: Letterbox, conf: float, iou: float, max_det: int = 300, max_nms: int = 30000
) -> Detections:
    """YOLOv8-style head output (1, 4+nc, N) -> class-aware NMS -> boxes in source pixels."""
    pred = raw[0]
    scores_all = pred[4:]
    best = scores_all.max(0)
    keep = best > conf
    if not keep.any():
        return Detections.empty()
    # argmax only over the few candidates: the same class as argmax over all anchors, 3x cheaper
    cand = scores_all[:, keep]
    cls = cand.argmax(0)
    score, boxes = best[keep], pred[:4, keep].T
    order = np.argsort(-score, kind="stable")[:max_nms]
    score, cls, boxes = score[order], cls[order], boxes[order]
    xyxy = np.empty_like(boxes)
    xyxy[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
    xyxy[:, 2:] = boxes[:, :2] + boxes[:, 2:] / 2
    idx = nms(xyxy + (cls[:, None] * 7680.0), iou)[:max_det]  # class offset = class-aware NMS
    xyxy, score, cls = xyxy[idx], score[idx], cls[idx]
    xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - lb.pad_x) / lb.gain_x
    xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - lb.pad_y) / lb.gain_y
    h, w = lb.src_hw
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
    return Detections(xyxy.astype(np.float32), score.astype(np.float32), cls.astype(np.int32))


#: Above this many candidates the pairwise IoU matrix (n^2 floats) is not worth its memory.
_NMS_MATRIX_MAX = 1024


def nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS over boxes sorted by descending score; drops a box whose IoU with a kept one > iou
    (torchvision's rule, which ultralytics uses)."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0,), np.int64)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    if n <= _NMS_MATRIX_MAX:
        # All pairs at once in numpy, then a cheap greedy pass over the boolean matrix: one
        # vector op per kept box instead of the IoU arithmetic per kept box (0.2 -> ~0.05 ms).
        iw = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
        ih = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        over = inter / (area[:, None] + area[None, :] - inter + 1e-7) > iou
        suppressed = np.zeros(n, bool)
        keep = []
        for i in range(n):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= over[i]  # marks i itself and earlier boxes too: both already decided
        return np.asarray(keep, np.int64)
    suppressed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.nonzero(~suppressed[i + 1:])[0] + i + 1
        if len(rest) == 0:
            break
        iw = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
        ih = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        ov = inter / (area[i] + area[rest] - inter + 1e-7)
        suppressed[rest[ov > iou]] = True
    return np.asarray(keep, np.int64)



class DetectHead(UltralyticsHead):
    """Boxes per class from a YOLOv8-style output (1, 4 + classes, anchors), with the settings' conf/iou/max_det."""

    task: ClassVar[str] = "detect"

    def check_model(self, model: Any, where: Path) -> None:
        out_shape = model.output(0).get_partial_shape()
        if out_shape.is_static and int(out_shape[1].get_length()) != 4 + len(self.classes):
            raise ModelError(f"{where}: output has {out_shape[1]} channels, expected 4 + "
                             f"{len(self.classes)} classes")

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.input_hw, self.channels)

    def decode(self, output: np.ndarray, ctx: Letterbox, conf: float | None = None) -> Detections:
        """`conf` overrides the settings' cut (evaluation wants the whole precision-recall curve)."""
        s = self.settings
        return postprocess(output, ctx, s.conf if conf is None else conf, s.iou, s.max_det)
