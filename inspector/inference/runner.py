"""The OpenVINO runner: compile a bundle's model for a device, keep its inference requests, run frames.

What depends on the kind of model (the input conversion, which outputs can be read, decoding into
findings) is the task head's (`inference.heads`); the runner is the same for every kind: it checks
the IR against the card (labels, input size, channels), lets the head fold its input conversion into
the model and check the outputs, compiles with the config's device/threads/hint/precision, notes
OpenVINO's threads of this model (the pipeline schedules them: kernel/realtime.py), and runs frames
synchronously (`find`) or through its own pool of requests (`start_async` / `submit`).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.bundle import ir
from inspector.errors import ModelError
from inspector.frames import Findings
from inspector.inference.heads import Head, HeadSettings, make_head

if TYPE_CHECKING:
    from inspector.bundle.load import ModelBundle

log = logging.getLogger(__name__)


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


class Runner:
    """A compiled model and its task head.

    `find()` is synchronous. The stage the pipeline runs is asynchronous: `start_async(deliver)`
    then `submit(image, userdata, wait_s)` per frame; the completion delivers the frame's findings
    (preprocessing, inference and the head's decoding all inside) or its failure. The caller never
    sees the raw output or the preprocessing's context. `oldest_busy_since()` tells a watchdog how
    long the slowest request has run; `wait_idle()` waits for every request to return."""

    def __init__(
        self,
        bundle: ModelBundle,
        head: Head,
        *,
        device: str = "CPU",
        threads: int = 0,
        cache_dir: Path | None = None,
        expect_classes: list[str] | None = None,
        expect_input: tuple[int, int] | None = None,
        hint: str = "latency",
        async_requests: int = 0,
        warmup: int = 2,
        inference_precision: str = "f32",
    ) -> None:
        import openvino as ov

        self.bundle = bundle
        self.head = head
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
            # this); else the files (a bare .xml, a tool's second runner on the same bundle).
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
        head.check_model(model, bundle.xml)
        model = head.fold_input(model)

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
        self.preprocess = head.preprocessor()
        self._request = self.compiled.create_infer_request()
        optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._async_requests = async_requests or max(2, optimal)
        self.hint = hint
        # The async pool (start_async): requests, the free list and the input buffer of the
        # submitting thread. Guarded by _cv: submit waits on it for a free request.
        self._cv = threading.Condition()
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._deliver: Callable[[Inferred, Any], None] | None = None
        self._staging = np.empty((1, *hw, channels), np.uint8)
        self._preprocess_async = head.preprocessor()  # its own buffers: find() may run on another thread
        grey = np.full((1, *hw, channels), 114, np.uint8)  # an input tensor of a plain grey frame
        for _ in range(warmup):
            self._request.infer({0: grey})
        self.native_threads = threads_since(before)  # streams executor (and, first model, oneTBB's workers)
        log.info("model %s %s (%s, %s) on %s ready: input %s, %s hint, %d requests, compiled in %.2f s", bundle.name,
                 bundle.version, head.task, bundle.precision, device, list(hw), hint, self._async_requests,
                 self.compile_s)

    # -- synchronous --------------------------------------------------------------------------
    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self._request.infer({0: tensor}, share_inputs=True)
        return self._request.get_output_tensor(0).data.copy()

    def find(self, image: np.ndarray) -> Findings:
        """One frame through preprocessing, inference and the head's decoding, on the calling thread."""
        tensor, ctx = self.preprocess(image)
        return self.head.decode(self.infer(tensor), ctx)

    # -- asynchronous: the runner's own stage --------------------------------------------------
    def start_async(self, deliver: Callable[[Inferred, Any], None]) -> None:
        """Opens the pool of inference requests; each `submit` ends in `deliver(result, userdata)`:
        findings (decoded by the head with its settings) or the failure, never both, exactly once
        per accepted submit. `deliver` runs on OpenVINO's completion thread (or, for a request
        OpenVINO refused to start, on the submitting thread): keep it short and non-blocking. A
        later `start_async` (a new pipeline on the same runner) reuses the pool; results of the
        earlier one's requests still go to the earlier `deliver`."""
        self._deliver = deliver
        if self._slots:
            return
        for _ in range(self._async_requests):
            slot = _Slot(self.compiled.create_infer_request())
            slot.request.set_callback(functools.partial(self._on_done, slot), None)
            self._slots.append(slot)
            self._free.append(slot)

    def submit(self, image: np.ndarray, userdata: Any, wait_s: float | None = None) -> bool:
        """Preprocesses `image` and starts its inference on a free request, waiting at most `wait_s`
        for one (None: as long as it takes). False: no request came free in time (all busy: the
        model is slow or stuck), nothing was started and nothing will be delivered. Raises
        ValueError for an image that is not a frame (`heads.base.check_image`), before any inference.
        A gray (HxW) or BGR frame is converted to the model's channels in the preprocessing, once.

        One thread submits (it owns the input buffer). The input (300 kB of uint8 at 3 channels) is copied
        into the request, so the preprocessing of the next frame can start while this one infers."""
        t_start = time.monotonic()
        tensor, ctx = self._preprocess_async(image, out=self._staging)
        t_pre = time.monotonic()
        with self._cv:
            if not self._free and not self._cv.wait_for(lambda: self._free, wait_s):
                return False
            slot = self._free.pop()
            slot.since = time.monotonic()
        slot.job = (ctx, userdata, self._deliver, t_start, t_pre)
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
        is not reused before this returns), then hand the findings on."""
        t_done = time.monotonic()
        ctx = slot.job[0]
        try:
            found = self.head.decode(slot.request.get_output_tensor(0).data, ctx)
            result = Inferred(found, None, slot.job[3], slot.job[4], t_done, time.monotonic())
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
    """What the runner's stage delivers for one submitted frame (monotonic seconds)."""

    findings: Findings | None  # None when the inference failed
    error: str | None  # why it failed, in words
    t_start: float  # preprocessing started
    t_pre: float  # preprocessing done (waiting for a free request comes after)
    t_done: float  # OpenVINO returned
    t_post: float  # findings decoded


class _Slot:
    """One inference request and the job it runs. Owned by the submitting thread from the moment it
    is taken from the free list until it is started, then by OpenVINO's completion until freed."""

    __slots__ = ("request", "job", "since")

    def __init__(self, request) -> None:
        self.request = request
        self.job: tuple | None = None  # (preprocessing context, userdata, deliver, t_start, t_pre)
        self.since: float | None = None  # monotonic start of the running job; None when free


def open_runner(model_cfg, bundle: ModelBundle, conf: float) -> Runner:
    """The runner the `model:` config section describes, with the head of the bundle's kind (its card's
    `task`), on a bundle already loaded (and hash-checked): the service reads and checks the weights once.
    `conf`: the decision's floor (`DecisionPolicy.conf_floor`), below which the head drops findings."""
    head = make_head(bundle, HeadSettings(conf=conf, iou=model_cfg.iou, max_det=model_cfg.max_detections))
    return Runner(
        bundle,
        head,
        device=model_cfg.device,
        threads=model_cfg.threads,
        cache_dir=model_cfg.cache_dir,
        hint=model_cfg.hint,
        async_requests=model_cfg.requests,
        inference_precision=model_cfg.inference_precision,
        expect_classes=model_cfg.classes,
        expect_input=tuple(model_cfg.input_size) if model_cfg.input_size else None,
    )
