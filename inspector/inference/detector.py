"""The OpenVINO detector: preprocess, infer, postprocess a bundle loaded by `inspector.bundle.load`.

Preprocessing is split where each part is fastest (measured in benchmarks/): the letterbox
(resize + pad) runs in OpenCV on uint8 into a preallocated buffer; the u8->f32 conversion,
BGR->RGB, /255 and NHWC->NCHW are folded into the compiled model with `PrePostProcessor`, so
the frame crosses into OpenVINO once, as uint8, without a copy. Letterbox and NMS reproduce
ultralytics' arithmetic (tests/inference/test_parity.py checks it against ultralytics itself).

Channels: frames come as BGR (HxWx3) or grayscale (HxW, HxWx1: mono cameras, Mono10/12 already
scaled to 8 bit by the source); the model card's `input_channels` (3, or 1 for a grayscale model;
checked against the IR at load) says what the model takes, and the letterbox converts once, at
the model's input size (see `Preprocessor`).

The asynchronous stage keeps its own pool of inference requests instead of OpenVINO's
`AsyncInferQueue`, whose `start_async` blocks without a timeout when every request is busy: a
hung device would then block the pipeline's reader forever. Here the submitter waits for a free
request at most until the frame's deadline and is told when none came.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.bundle import ir
from inspector.bundle.load import ModelBundle
from inspector.errors import ModelError
from inspector.frames import Detections

log = logging.getLogger(__name__)

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


def check_image(image: Any) -> None:
    """A frame must be uint8 BGR (HxWx3) or grayscale (HxW or HxWx1), at least 8x8; anything else is
    refused here, not deep in OpenVINO."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(image).__name__}")
    if (image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3))
            or min(image.shape[:2]) < 8):
        raise ValueError(f"frame must be HxWx3 (BGR) or HxW / HxWx1 (gray) uint8, at least 8x8, got shape "
                         f"{image.shape} dtype {image.dtype}")


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


def available_devices(core) -> list[str]:
    return list(core.available_devices)


def _check_device(core, device: str) -> None:
    avail = available_devices(core)
    wanted = device.split(":", 1)[1].split(",") if ":" in device else [device]
    if device.startswith("AUTO") and ":" not in device:
        return
    missing = [d for d in wanted if d not in avail and d.split(".")[0] not in [a.split(".")[0] for a in avail]]
    if missing:
        raise ModelError(f"device {device!r} is not available on this machine (missing {missing}); "
                         f"available devices: {avail}")


class Detector:
    """A compiled model plus its pre/post-processing, with conf/iou/max_det fixed at build.

    `detect()` is synchronous. The stage the pipeline runs is asynchronous: `start_async(deliver)`
    then `submit(image, userdata, wait_s)` per frame; the completion delivers the frame's
    detections (letterbox, inference, decode, NMS, scale back all inside) or its failure. The
    caller never sees the raw head output or the letterbox. `oldest_busy_since()` tells a watchdog
    how long the slowest request has run; `wait_idle()` waits for every request to return."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        device: str = "CPU",
        threads: int = 0,
        cache_dir: Path | None = None,
        conf: float = 0.1,
        iou: float = 0.7,
        max_det: int = 300,
        expect_classes: list[str] | None = None,
        expect_input: tuple[int, int] | None = None,
        hint: str = "latency",
        async_requests: int = 0,
        warmup: int = 2,
        inference_precision: str = "f32",
    ) -> None:
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        self.bundle = bundle
        self.conf, self.iou, self.max_det = conf, iou, max_det
        if expect_classes is not None and tuple(expect_classes) != bundle.classes:
            raise ModelError(f"model {bundle.name} classes {list(bundle.classes)} differ from config model.classes "
                             f"{list(expect_classes)}")
        if expect_input is not None and tuple(expect_input) != bundle.input_size:
            raise ModelError(f"model {bundle.name} input size {list(bundle.input_size)} differs from config "
                             f"model.input_size {list(expect_input)}")
        core = ov.Core()
        _check_device(core, device)
        blobs = bundle.blobs.take() if bundle.blobs is not None else None
        try:
            # The verified bytes when the bundle carries them (copied into OpenVINO: they are let go after
            # this); else the files (a bare .xml, a tool's second detector on the same bundle).
            model = core.read_model(blobs[0], blobs[1]) if blobs is not None else core.read_model(bundle.xml)
        except RuntimeError as e:
            raise ModelError(f"{bundle.xml}: OpenVINO cannot read this model: {e}") from e
        labels = ir.rt_labels(model)
        if labels is not None and tuple(labels) != bundle.classes:
            raise ModelError(f"{bundle.xml}: labels in the IR {labels} differ from the model card "
                             f"{list(bundle.classes)}")
        hw = ir.input_hw(model, bundle.xml)
        if hw != bundle.input_size:
            raise ModelError(f"{bundle.xml}: IR input {list(hw)} differs from the model card {list(bundle.input_size)}")
        channels = ir.input_channels(model, bundle.xml)
        if channels != bundle.channels:
            raise ModelError(f"{bundle.xml}: IR input has {channels} channel(s) but the model card says input_channels "
                             f"{bundle.channels} (rebuild the bundle with `inspector model build`)")
        out_shape = model.output(0).get_partial_shape()
        if out_shape.is_static and int(out_shape[1].get_length()) != 4 + len(bundle.classes):
            raise ModelError(f"{bundle.xml}: output has {out_shape[1]} channels, expected 4 + "
                             f"{len(bundle.classes)} classes")

        ppp = PrePostProcessor(model)
        color = ColorFormat.BGR if channels == 3 else ColorFormat.GRAY
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(color)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if channels == 3:  # ultralytics models take RGB; a 1-channel model takes the gray level as is
            steps.convert_color(ColorFormat.RGB)
        steps.scale(255.0)
        model = ppp.build()

        props: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper()}
        if threads and device.startswith("CPU"):
            props["INFERENCE_NUM_THREADS"] = int(threads)
        if device.startswith("CPU") and inference_precision != "device_default":
            # On CPUs with AMX/AVX512-BF16 OpenVINO would run the float layers in bf16: faster,
            # but the verdicts would then depend on the CPU generation of the line PC.
            props["INFERENCE_PRECISION_HINT"] = inference_precision
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            props["CACHE_DIR"] = str(cache_dir)
        from inspector.kernel.realtime import task_ids, threads_since

        before = task_ids()  # OpenVINO's threads of this model: the pipeline schedules them (kernel/realtime.py)
        t0 = time.perf_counter()
        try:
            self.compiled = core.compile_model(model, device, props)
        except RuntimeError as e:
            raise ModelError(f"cannot compile {bundle.xml} for {device}: {str(e).splitlines()[0]}") from e
        self.compile_s = time.perf_counter() - t0
        self.device = device
        self.input_hw = hw
        self.channels = channels
        self.preprocess = Preprocessor(hw, channels)
        self._request = self.compiled.create_infer_request()
        optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._async_requests = async_requests or max(2, optimal)
        self.hint = hint
        # The async pool (start_async): requests, the free list and the letterbox buffer of the
        # submitting thread. Guarded by _cv: submit waits on it for a free request.
        self._cv = threading.Condition()
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._deliver: Callable[[Inferred, Any], None] | None = None
        self._staging = np.empty((1, *hw, channels), np.uint8)
        self._preprocess_async = Preprocessor(hw, channels)  # its own pad cache: detect() may run on another thread
        zeros = np.full((1, *hw, channels), PAD_VALUE, np.uint8)
        for _ in range(warmup):
            self._request.infer({0: zeros})
        self.native_threads = threads_since(before)  # streams executor (and, first model, oneTBB's workers)
        log.info("model %s %s (%s) on %s ready: input %s, %s hint, %d requests, compiled in %.2f s", bundle.name,
                 bundle.version, bundle.precision, device, list(hw), hint, self._async_requests, self.compile_s)

    # -- synchronous --------------------------------------------------------------------------
    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self._request.infer({0: tensor}, share_inputs=True)
        return self._request.get_output_tensor(0).data.copy()

    def detect(self, image: np.ndarray, conf: float | None = None) -> Detections:
        tensor, lb = self.preprocess(image)
        return postprocess(self.infer(tensor), lb, self.conf if conf is None else conf, self.iou, self.max_det)

    # -- asynchronous: the detector's own stage ------------------------------------------------
    def start_async(self, deliver: Callable[[Inferred, Any], None]) -> None:
        """Opens the pool of inference requests; each `submit` ends in `deliver(result, userdata)`:
        detections (decoded, NMS'd and scaled back with this detector's conf/iou/max_det) or the
        failure, never both, exactly once per accepted submit. `deliver` runs on OpenVINO's
        completion thread (or, for a request OpenVINO refused to start, on the submitting thread):
        keep it short and non-blocking. A later `start_async` (a new pipeline on the same detector)
        reuses the pool; results of the earlier one's requests still go to the earlier `deliver`."""
        self._deliver = deliver
        if self._slots:
            return
        for _ in range(self._async_requests):
            slot = _Slot(self.compiled.create_infer_request())
            slot.request.set_callback(functools.partial(self._on_done, slot), None)
            self._slots.append(slot)
            self._free.append(slot)

    def submit(self, image: np.ndarray, userdata: Any, wait_s: float | None = None) -> bool:
        """Letterboxes `image` and starts its inference on a free request, waiting at most `wait_s`
        for one (None: as long as it takes). False: no request came free in time (all busy: the
        model is slow or stuck), nothing was started and nothing will be delivered. Raises
        ValueError for an image that is not a frame (see `check_image`), before any inference. A gray
        (HxW) or BGR frame is converted to the model's channels inside the letterbox, once.

        One thread submits (it owns the letterbox buffer). The input (300 kB of uint8 at 3 channels) is copied
        into the request, so the letterbox of the next frame can start while this one infers."""
        t_start = time.monotonic()
        tensor, lb = self._preprocess_async(image, out=self._staging)
        t_pre = time.monotonic()
        with self._cv:
            if not self._free and not self._cv.wait_for(lambda: self._free, wait_s):
                return False
            slot = self._free.pop()
            slot.since = time.monotonic()
        slot.job = (lb, userdata, self._deliver, t_start, t_pre)
        try:
            self._start(slot, tensor)
        except Exception as e:  # noqa: BLE001 - OpenVINO refused the request: delivered as a failure
            log.error("inference could not start: %s", e)
            self._finish(slot, Inferred(None, f"{type(e).__name__}: {str(e).strip()}", t_start, t_pre,
                                        time.monotonic(), time.monotonic()))
        return True

    def _start(self, slot: _Slot, tensor: np.ndarray) -> None:
        slot.request.start_async({0: tensor}, None, share_inputs=False)

    def _on_done(self, slot: _Slot, _userdata: Any) -> None:
        """OpenVINO's completion: decode straight from the request's output (no copy; the request
        is not reused before this returns), then hand the detections on."""
        t_done = time.monotonic()
        lb = slot.job[0]
        try:
            det = postprocess(slot.request.get_output_tensor(0).data, lb, self.conf, self.iou, self.max_det)
            result = Inferred(det, None, slot.job[3], slot.job[4], t_done, time.monotonic())
        except Exception as e:  # noqa: BLE001 - a failed inference is a result too, never a lost frame
            log.exception("inference or decoding failed")
            result = Inferred(None, f"{type(e).__name__}: {e}", slot.job[3], slot.job[4], t_done, time.monotonic())
        self._finish(slot, result)

    def _finish(self, slot: _Slot, result: Inferred) -> None:
        _, userdata, deliver, *_ = slot.job
        slot.job = None
        try:
            deliver(result, userdata)
        except Exception:  # noqa: BLE001 - never raise into OpenVINO's thread; the request must come back
            log.exception("delivering an inference result failed")
        with self._cv:
            slot.since = None
            self._free.append(slot)
            self._cv.notify_all()

    def oldest_busy_since(self) -> float | None:
        """Monotonic time the longest-running request started (None: all idle): a hung device shows here."""
        with self._cv:
            busy = [s.since for s in self._slots if s.since is not None]
        return min(busy) if busy else None

    def close(self, timeout: float | None = 10.0) -> bool:
        """Releases the compiled model and its requests once every request has returned (a model
        swapped out: its frames in flight complete first). False: a request was still running after
        `timeout`; nothing was released (a request must not lose its model under it)."""
        if not self.wait_idle(timeout):
            return False
        with self._cv:
            self._slots, self._free, self._deliver = [], [], None
        self._request = None
        self.compiled = None
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no request is running (every accepted submit delivered); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: len(self._free) == len(self._slots), timeout)


@dataclass(frozen=True, slots=True)
class Inferred:
    """What the detector's stage delivers for one submitted frame (monotonic seconds)."""

    detections: Detections | None  # None when the inference failed
    error: str | None  # why it failed, in words
    t_start: float  # letterbox started
    t_pre: float  # letterbox done (waiting for a free request comes after)
    t_done: float  # OpenVINO returned
    t_post: float  # detections decoded


class _Slot:
    """One inference request and the job it runs. Owned by the submitting thread from the moment it
    is taken from the free list until it is started, then by OpenVINO's completion until freed."""

    __slots__ = ("request", "job", "since")

    def __init__(self, request) -> None:
        self.request = request
        self.job: tuple | None = None  # (letterbox, userdata, deliver, t_start, t_pre)
        self.since: float | None = None  # monotonic start of the running job; None when free


def open_detector(model_cfg, bundle: ModelBundle, conf: float) -> Detector:
    """Builds the detector the `model:` config section describes, on a bundle already loaded (and
    hash-checked) by `load_bundle`: the service reads and checks the weights once."""
    return Detector(
        bundle,
        device=model_cfg.device,
        threads=model_cfg.threads,
        cache_dir=model_cfg.cache_dir,
        conf=conf,
        iou=model_cfg.iou,
        max_det=model_cfg.max_detections,
        hint=model_cfg.hint,
        async_requests=model_cfg.requests,
        inference_precision=model_cfg.inference_precision,
        expect_classes=model_cfg.classes,
        expect_input=tuple(model_cfg.input_size) if model_cfg.input_size else None,
    )
