"""Wiring only: source -> [infer thread] -> OpenVINO async -> [completion: NMS, decide]
-> [post thread] -> sinks.

The work of consecutive frames overlaps: while OpenVINO infers frame N (the GIL is released),
the infer thread letterboxes frame N+1, and the post thread hands frame N-1's verdict to the
sinks. NMS and the decision run in OpenVINO's completion callback, so a verdict costs no thread
hand-off after inference. Queues are bounded by the async request count; the back-pressure
policy lives in the source's FrameBuffer (free_run keeps the freshest, triggered never drops).

Frames whose deadline already passed when they are read are not inferred at all: they get the
fail-safe LATE verdict at once, so a backlog drains fast instead of making every later part late.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from inspector.frames import Frame, Outcome, StageTimings, Verdict
from inspector.inference.decision import (
    DecisionPolicy,
    decide,
    error_verdict,
    late_verdict,
)
from inspector.inference.detector import Detector, postprocess
from inspector.service.sinks import VerdictSink
from inspector.sources.base import FrameSource

log = logging.getLogger(__name__)

_STAGES = ("queue_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "decide_ms", "total_ms")


@dataclass(frozen=True, slots=True)
class _InFlight:
    frame: Frame
    letterbox: Any
    t_read: float
    t_pre: float  # preprocessing done
    t_submit: float


class Stats:
    """Counters and latency samples; written by the post thread only, read by anyone."""

    def __init__(self, keep: int = 200_000) -> None:
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.actuations = 0
        self.frames = 0
        self.errors = 0
        self.truth_parts = 0
        self.defective_parts = 0
        self.good_parts = 0
        self.escapes = 0
        self.false_rejects = 0
        self.lat: dict[str, deque[float]] = {s: deque(maxlen=keep) for s in _STAGES}
        self.recent_total: deque[float] = deque(maxlen=1000)
        self.last_frame_at: float | None = None
        self.started_at = time.monotonic()

    def add(self, v: Verdict) -> None:
        self.frames += 1
        self.outcomes[v.outcome.value] += 1
        if v.reason is not None:
            self.reasons[v.reason.value] += 1
        self.actuations += v.actuate
        t = v.timings
        for s in _STAGES:
            self.lat[s].append(getattr(t, s))
        self.recent_total.append(t.total_ms)
        self.last_frame_at = time.monotonic()
        if v.frame.truth is not None:
            self.truth_parts += 1
            if v.frame.truth:
                self.defective_parts += 1
                self.escapes += not v.actuate
            else:
                self.good_parts += 1
                self.false_rejects += v.actuate

    def p99_recent(self) -> float | None:
        return float(np.percentile(self.recent_total, 99)) if self.recent_total else None

    def percentiles(self) -> dict[str, dict[str, float]]:
        out = {}
        for s, vals in self.lat.items():
            if vals:
                a = np.fromiter(vals, float)
                out[s] = {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
                          "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3)}
        return out


class Pipeline:
    def __init__(self, source: FrameSource, detector: Detector, policy: DecisionPolicy, sinks: Sequence[VerdictSink],
                 *, max_frames: int | None = None, max_frame_age_s: float | None = None) -> None:
        self.source = source
        self.detector = detector
        self.policy = policy
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.max_frame_age_s = max_frame_age_s  # free_run only: older frames are stale
        self.model = detector.bundle.info
        self.stats = Stats()
        self._stop = threading.Event()
        self._post: queue.SimpleQueue = queue.SimpleQueue()
        self._submitted = 0
        self._completed = 0
        self._read = 0
        self._errors: list[BaseException] = []
        self._infer_thread = threading.Thread(target=self._guard(self._infer_loop), name="pipeline-infer", daemon=True)
        self._post_thread = threading.Thread(target=self._guard(self._post_loop), name="pipeline-post", daemon=True)
        self.done = threading.Event()  # set when the source is exhausted or max_frames reached and all is emitted

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.detector.start_async(self._on_inferred)
        self._post_thread.start()
        self._infer_thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stops reading; every frame already read still gets its verdict (within `timeout`)."""
        self._stop.set()
        self._infer_thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._completed < self._submitted and time.monotonic() < deadline:
            time.sleep(0.005)
        self._post.put(None)
        self._post_thread.join(max(0.1, deadline - time.monotonic()))
        if self._completed < self._submitted:
            log.error("%d frame(s) still in flight at shutdown", self._submitted - self._completed)

    def raise_if_failed(self) -> None:
        """Errors raised in the pipeline threads are carried back to the owning thread."""
        if self._errors:
            raise self._errors[0]

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - carried to the owner, who decides
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self._errors.append(e)
                self.done.set()
        return run

    # -- infer thread -------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        buf = np.empty((1, *self.detector.input_hw, 3), np.uint8)
        while True:
            if self._stop.is_set():
                # Frames already captured are parts in flight: each still gets its verdict (late
                # ones at once, without inference). The source is stopped first, so this ends.
                frame = self.source.read(timeout=0.0)
                if frame is None:
                    break
            else:
                if self.max_frames is not None and self._read >= self.max_frames:
                    break
                frame = self.source.read(timeout=0.05)
                if frame is None:
                    if self.source.finished:
                        break
                    continue
            self._read += 1
            t_read = time.monotonic()
            if self.max_frame_age_s is not None and frame.part_id is None and t_read - frame.captured_at > self.max_frame_age_s:
                self.stats.dropped["stale"] += 1
                continue
            if t_read > self.policy.deadline(frame):
                self._emit(late_verdict(frame, self.policy, _timings(frame, t_read), self.model))
                continue
            try:
                tensor, lb = self.detector.preprocess(frame.image, out=buf)
            except ValueError as e:  # wrong shape/dtype: counted; a part gets the fail-safe verdict
                self.stats.dropped["bad_frame"] += 1
                log.warning("frame %s refused: %s", frame.frame_id, e)
                if frame.part_id is not None:
                    self._emit(error_verdict(frame, self.policy, str(e), _timings(frame, t_read), self.model))
                continue
            t_pre = time.monotonic()
            self._submitted += 1
            self.detector.submit(tensor, _InFlight(frame, lb, t_read, t_pre, time.monotonic()))
        self.detector.wait_all()
        self._post.put((None, False))

    # -- completion (OpenVINO's callback thread) ------------------------------------------------
    def _on_inferred(self, raw: np.ndarray, ud: _InFlight) -> None:
        """NMS and the decision run right here, on the thread that saw the inference finish: a
        hand-off to another thread first would cost a wake-up (~0.1-0.3 ms measured) on every
        part's critical path. Both are pure and take ~0.2 ms; the sinks (disk, network) stay on
        the post thread, so this callback never blocks OpenVINO on I/O."""
        t_done = time.monotonic()
        frame = ud.frame
        try:
            det = postprocess(raw, ud.letterbox, self.policy.conf_floor, self.detector.iou, self.detector.max_det)
            t_post = time.monotonic()
            timings = StageTimings(
                queue_ms=(ud.t_read - frame.captured_at) * 1e3,
                preprocess_ms=(ud.t_pre - ud.t_read) * 1e3,
                infer_ms=(t_done - ud.t_submit) * 1e3,
                postprocess_ms=(t_post - t_done) * 1e3,
            )
            v = decide(frame, det, self.policy, time.monotonic(), time.time(), timings, self.model)
            v = _with_timings(v, timings, t_post, time.monotonic(), frame)
            failed = False
        except Exception as e:  # noqa: BLE001 - one bad frame must not stop the line
            log.exception("frame %s: post-processing failed", frame.frame_id)
            v = error_verdict(frame, self.policy, f"{type(e).__name__}: {e}", _timings(frame, time.monotonic()), self.model)
            failed = True
        self._post.put((v, failed))

    # -- post thread --------------------------------------------------------------------------
    def _post_loop(self) -> None:
        while True:
            item = self._post.get()
            if item is None:
                return
            v, failed = item
            if v is None:  # end of input: every callback was queued before this marker
                self.done.set()
                continue
            self._completed += 1
            self.stats.errors += failed
            self._emit(v)

    def _emit(self, v: Verdict) -> None:
        self.stats.add(v)
        for s in self.sinks:
            try:
                s.submit(v)
            except Exception:  # noqa: BLE001 - a sink failure is logged and counted, never fatal
                self.stats.dropped[f"sink_{s.name}"] += 1
                log.exception("sink %s failed on frame %s", s.name, v.frame_id)
        if v.outcome is Outcome.LATE:
            log.debug("frame %s LATE (%.1f ms)", v.frame_id, v.timings.total_ms)


def _timings(frame: Frame, now: float) -> StageTimings:
    ms = (now - frame.captured_at) * 1e3
    return StageTimings(queue_ms=ms, total_ms=ms)


def _with_timings(v: Verdict, t: StageTimings, t_post: float, t_end: float, frame: Frame) -> Verdict:
    from dataclasses import replace

    full = replace(t, decide_ms=(t_end - t_post) * 1e3, total_ms=(t_end - frame.captured_at) * 1e3)
    return replace(v, timings=full)
