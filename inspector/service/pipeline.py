"""Wiring only: source -> [infer thread] -> runner stage (async) -> [completion: decide]
-> [post thread] -> sinks; a [watchdog thread] gives a frame whose inference has not returned by
its deadline the fail-safe LATE verdict.

Threads and what each owns:
- infer thread: reads the source, hands frames to the runner (`submit`), and settles at once the
  frames that need no inference (past their deadline, no image, not a frame).
- OpenVINO's completion thread: the runner delivers its head's findings (or the failure) and the
  decision runs right there, so a verdict costs no thread hand-off after inference.
- watchdog thread: a deadline heap of the frames in inference; at a deadline still unanswered, the
  frame's verdict is LATE. It wakes on its own timer (at the oldest pending deadline, and once per
  budget when idle), never once per frame.
- post thread: the only thread that touches `Stats`, the sinks (and so the sampler and the
  publisher) and the model-health episode (`model_failed` alarms). Every verdict, whoever made
  it, reaches them through the post queue.

Exactly one verdict per frame read: the in-flight table is the arbiter. Whoever removes a frame
from it (its completion, the watchdog at its deadline, or `stop`) makes its verdict; an inference
that returns after its frame was settled is discarded and counted (`discarded_results`).

The work of consecutive frames overlaps: while OpenVINO infers frame N (the GIL is released),
the infer thread letterboxes frame N+1, and the post thread hands frame N-1's verdict to the
sinks. Back-pressure lives in the source's FrameBuffer (free_run keeps the freshest and drops
stale frames itself; triggered keeps every part, and hands over image-less parts when full).

Model swap (issue 13, `swap`, the lifecycle's `ModelSlot`): the model is an `inference.judge.Judge`
(runner, the decision policy built on its card, its ModelInfo). Each frame in flight carries the judge
it was handed to, so its completion, LATE or error verdict names that model. A new judge is handed to
the infer thread, which installs it between two frames (before it hands the next frame to inference);
frames already in the old runner complete there and are judged by it. No frame waits for the switch:
the new runner is compiled and warmed before `swap`, and installing it is one assignment.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inspector.frames import Frame, ModelInfo, Outcome, StageTimings, Verdict
from inspector.inference.decision import (
    DecisionPolicy,
    decide,
    error_verdict,
    late_verdict,
)
from inspector.inference.judge import Judge, SwapResult, make_judge
from inspector.inference.runner import Inferred, Runner
from inspector.kernel import realtime
from inspector.service.sinks import VerdictSink
from inspector.sources.base import FrameSource
from inspector.stats import percentile, summary

log = logging.getLogger(__name__)

_STAGES = ("queue_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "decide_ms", "total_ms")

AlarmFn = Callable[[str, dict[str, Any]], None]

#: An inference request running this long is stuck, not slow: INT8 inference takes ~5 ms on the
#: 2-core line PC and its p99 stayed under 40 ms with other jobs beside it (benchmarks/README.md).
STUCK_AFTER_S = 1.0
#: Verdicts owed this long past the budget mean the pipeline stopped answering (the watchdog
#: answers every frame in inference by its deadline, so only a blocked thread gets here).
STALL_GRACE_S = 1.0

# Post-queue items: (kind, verdict or None, detail).
_VERDICT = "verdict"  # made from the model's detections
_LATE = "late"  # no detections by the deadline (watchdog, no free request, shutdown)
_FAILED = "failed"  # the inference failed: error verdict, model_failed
_REFUSED = "refused"  # not inspected (no image, not a frame): fail-safe verdict for a part, or dropped
_DISCARDED = "discarded"  # an inference returned after its frame was settled
_STUCK = "stuck"  # an inference request has run for longer than stuck_after_s
_END = "end"  # input exhausted and every frame answered
_CLOSE = "close"  # stop the post thread


@dataclass(frozen=True, slots=True, eq=False)  # identity: the in-flight table holds each frame once
class _InFlight:
    frame: Frame
    t_read: float
    deadline: float
    judge: Judge


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    """The pipeline's health, as any thread may read it (`Pipeline.snapshot()`). Ages in seconds.

    `/healthz` should be red when `stalled` (frames were read and no verdict came for longer than
    `stall_after_s`) or when not `model_ok` (the last inference failed, or a request is stuck)."""

    frames_read: int  # frames taken from the source
    verdicts: int  # verdicts made (all outcomes)
    in_flight: int  # frames handed to inference and not answered yet
    oldest_in_flight_age_s: float | None  # since the oldest of them was read
    unanswered: int  # frames read with no verdict (or drop) yet: in flight, or waiting in the post queue
    oldest_unanswered_age_s: float | None
    last_verdict_age_s: float | None
    last_read_age_s: float | None  # since the pipeline last read a frame from the source
    late_in_flight: int  # LATE verdicts for frames whose inference had not returned by their deadline
    discarded_results: int  # inferences that returned after their frame already had its verdict
    model_ok: bool  # False from a failed or stuck inference until an inference returns again
    model_failures: int  # model_failed episodes
    model_error: str | None  # what the last failure was, in words
    busiest_request_s: float | None  # how long the longest-running inference request has run
    stall_after_s: float
    stalled: bool


class _Ring:
    """The last `keep` values in a preallocated float64 array: 8 bytes a value. A deque of Python
    floats costs ~32 (pointer + float object): 6 stages x 200k frames was ~38 MB, which a 24/7 line
    reached after 5.5 h at 10 parts/s (the soak's RSS crept up ~0.6 KB a frame); now at most 9.6 MB,
    and pages are only touched as they fill."""

    __slots__ = ("_a", "_n", "_i")

    def __init__(self, keep: int) -> None:
        self._a = np.empty(keep, dtype=np.float64)
        self._n = 0
        self._i = 0

    def append(self, x: float) -> None:
        self._a[self._i] = x
        self._i = (self._i + 1) % len(self._a)
        self._n = min(self._n + 1, len(self._a))

    def __len__(self) -> int:
        return self._n

    def values(self) -> np.ndarray:
        """A copy, in no particular order (percentiles do not need it)."""
        return self._a[: self._n].copy()


class Stats:
    """Counters and latency samples; written by the post thread only, read by anyone (the counters
    are copied under `lock` by readers that need a consistent set)."""

    def __init__(self, keep: int = 200_000) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.by_model: Counter[tuple[str, str, str]] = Counter()  # (model name, version, outcome): who judged
        self.dropped: Counter[str] = Counter()  # frames without a verdict, by cause (no part to reject)
        self.uninspected: Counter[str] = Counter()  # parts given the fail-safe verdict without inference, by cause
        self.actuations = 0
        self.frames = 0
        self.errors = 0  # inference failures
        self.late_in_flight = 0
        self.discarded_results = 0
        self.truth_parts = 0
        self.defective_parts = 0
        self.good_parts = 0
        self.escapes = 0
        self.false_rejects = 0
        self.lat: dict[str, _Ring] = {s: _Ring(keep) for s in _STAGES}
        self.recent_total: deque[float] = deque(maxlen=1000)
        self.last_verdict_at: float | None = None
        self.started_at = time.monotonic()

    @property
    def last_frame_at(self) -> float | None:
        """The time of the last verdict (the older name)."""
        return self.last_verdict_at

    def add(self, v: Verdict) -> None:
        with self.lock:
            self.frames += 1
            self.outcomes[v.outcome.value] += 1
            self.by_model[(v.model.name, v.model.version, v.outcome.value)] += 1
            if v.reason is not None:
                self.reasons[v.reason.value] += 1
            self.actuations += v.actuate
            t = v.timings
            for s in _STAGES:
                self.lat[s].append(getattr(t, s))
            self.recent_total.append(t.total_ms)
            self.last_verdict_at = time.monotonic()
            if v.frame.truth is not None:
                self.truth_parts += 1
                if v.frame.truth:
                    self.defective_parts += 1
                    self.escapes += not v.actuate
                else:
                    self.good_parts += 1
                    self.false_rejects += v.actuate

    def p99_recent(self) -> float | None:
        with self.lock:
            recent = list(self.recent_total)
        return percentile(recent, 99)

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self.lock:
            lat = {s: vals.values() for s, vals in self.lat.items() if len(vals)}
        return {s: summary(vals) for s, vals in lat.items()}


class Pipeline:
    def __init__(self, source: FrameSource, runner: Runner, policy: DecisionPolicy, sinks: Sequence[VerdictSink],
                 *, max_frames: int | None = None, alarm: AlarmFn | None = None,
                 stuck_after_s: float = STUCK_AFTER_S, drift: Any = None,
                 on_golden: Callable[[Verdict], None] | None = None, golden_wait_s: float = 30.0) -> None:
        self.source = source
        # Issue 14: the input drift guard (service/drift.py DriftMonitor: statistics on the infer thread after
        # the frame went to inference, state and on_drift on the post thread), and golden reference frames
        # (`inject`: inspected when no part came for 50 ms, or after a part once they waited golden_wait_s).
        self.drift = drift
        self._input_stats: dict[int, Any] = {}  # frame_id -> statistics (infer thread sets, post thread pops)
        self.on_golden = on_golden
        self.golden_wait_s = golden_wait_s
        self._golden: deque[tuple[Frame, float]] = deque()
        self._judge = make_judge(runner, policy)
        self._pending: tuple[Judge, threading.Event, list[SwapResult]] | None = None
        self._last_frame_id: int | None = None  # infer thread: the last frame handed on
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.stats = Stats()
        self.stuck_after_s = stuck_after_s
        self._alarm = alarm
        self._stop = threading.Event()
        self._stop_by = math.inf  # monotonic: after stop(), submits wait no longer than this
        self._post: queue.SimpleQueue = queue.SimpleQueue()
        self._read = 0
        self._last_read_at: float | None = None
        self._owed: deque[float] = deque()  # read times of frames not answered yet (infer appends, post pops)
        self._errors: list[BaseException] = []
        # The in-flight table and the watchdog's deadline heap, under one condition.
        self._cv = threading.Condition()
        self._inflight: set[_InFlight] = set()
        self._heap: list[tuple[float, int, _InFlight]] = []
        self._seq = 0
        self._wake_at = -math.inf  # when the watchdog will look next; a sooner deadline wakes it
        self._draining = False
        self._suspect = False  # a frame went LATE with its inference still running: watch for a stuck request
        self._stuck_reported = False
        self._watch_stop = False
        # Model health: post thread only.
        self._model_ok = True
        self._model_failures = 0
        self._model_error: str | None = None
        self._started = False
        self._infer_thread = threading.Thread(target=self._guard(self._infer_loop), name="pipeline-infer", daemon=True)
        self._post_thread = threading.Thread(target=self._guard(self._post_loop), name="pipeline-post", daemon=True)
        self._watch_thread = threading.Thread(target=self._guard(self._watch_loop), name="pipeline-watchdog",
                                              daemon=True)
        self.done = threading.Event()  # set when the source is exhausted or max_frames reached and all is emitted

    # -- the model ------------------------------------------------------------------------------
    @property
    def judge(self) -> Judge:
        """The model the next frame is handed to."""
        return self._judge

    @property
    def detector(self) -> Runner:
        """The runner of the model the next frame is handed to."""
        return self._judge.runner

    @property
    def policy(self) -> DecisionPolicy:
        return self._judge.policy

    @property
    def model(self) -> ModelInfo:
        return self._judge.model

    def swap(self, judge: Judge, timeout: float = 5.0) -> SwapResult:
        """Makes `judge` the model of every frame read from now on, between two frames; returns once
        the infer thread installed it. The old judge's frames in flight complete on it (wait for
        `result.old.runner.wait_idle()` before releasing it). `judge.runner` must be compiled and
        warm: the infer thread only swaps a reference. Raises TimeoutError if the infer thread did not
        come round within `timeout` (then nothing changed), RuntimeError when another swap is pending."""
        judge.runner.start_async(self._on_inferred)
        realtime.adopt(getattr(judge.runner, "native_threads", ()), "frame", "ov-infer")  # before it judges
        done = threading.Event()
        box: list[SwapResult] = []
        with self._cv:
            if self._pending is not None:
                raise RuntimeError("a model swap is already pending")
            if not self._started or not self._infer_thread.is_alive():
                self._install_now(judge, box)
                return box[0]
            self._pending = (judge, done, box)
        if done.wait(timeout):
            return box[0]
        with self._cv:
            if self._pending is not None and self._pending[0] is judge:
                self._pending = None
                raise TimeoutError(f"the infer thread did not reach a frame boundary within {timeout:.1f} s")
        done.wait()  # installed just now
        return box[0]

    def _install_now(self, judge: Judge, box: list[SwapResult]) -> None:
        old = self._judge
        self._judge = judge
        box.append(SwapResult(old, judge, self._last_frame_id, time.monotonic()))

    def _install_pending(self) -> None:
        """Infer thread, between two frames."""
        with self._cv:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        judge, done, box = pending
        self._install_now(judge, box)
        log.info("model %s %s judges from the next frame on (after frame %s; was %s %s)", judge.model.name,
                 judge.model.version, self._last_frame_id, box[0].old.model.name, box[0].old.model.version)
        done.set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.detector.start_async(self._on_inferred)
        realtime.adopt(getattr(self.detector, "native_threads", ()), "frame", "ov-infer")  # OpenVINO's threads
        self._started = True
        self._post_thread.start()
        self._watch_thread.start()
        self._infer_thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stops reading; every frame already read still gets its verdict within `timeout`: those
        whose inference has not returned by then get the fail-safe LATE verdict."""
        if not self._started:
            return
        t_end = time.monotonic() + timeout
        self._stop_by = t_end - min(0.2, timeout / 4)  # what is left is for settling and the sinks
        self._stop.set()
        self._infer_thread.join(max(0.0, self._stop_by - time.monotonic()))
        forced = self._settle_all("shutdown: inference had not returned")
        if forced:
            log.warning("%d frame(s) still in inference at shutdown: fail-safe LATE verdicts", forced)
        self._infer_thread.join(max(0.0, t_end - time.monotonic()))
        self._post.put((_CLOSE, None, t_end))  # the post thread still drains what is owed until t_end
        self._post_thread.join(max(0.1, t_end - time.monotonic()))
        with self._cv:
            self._watch_stop = True
            self._cv.notify_all()
        self._watch_thread.join(max(0.1, t_end - time.monotonic()))
        if self._infer_thread.is_alive() or self._post_thread.is_alive():
            log.error("pipeline did not stop within %.1f s (%d frame(s) without a verdict)", timeout, len(self._owed))
        if not self.detector.wait_idle(0):
            log.warning("an inference request is still running at stop (stuck for %.1f s)",
                        time.monotonic() - (self.detector.oldest_busy_since() or time.monotonic()))

    def raise_if_failed(self) -> None:
        """Errors raised in the pipeline threads are carried back to the owning thread."""
        if self._errors:
            raise self._errors[0]

    def snapshot(self) -> PipelineSnapshot:
        now = time.monotonic()
        with self._cv:
            in_flight = len(self._inflight)
            oldest_read = min((e.t_read for e in self._inflight), default=None)
        owed = len(self._owed)
        try:
            oldest_owed = self._owed[0] if owed else None
        except IndexError:  # answered meanwhile
            oldest_owed = None
        st = self.stats
        last_verdict = st.last_verdict_at
        busy_since = self.detector.oldest_busy_since()
        stall_after = self.policy.budget_s + STALL_GRACE_S
        oldest_owed_age = None if oldest_owed is None else max(0.0, now - oldest_owed)
        return PipelineSnapshot(
            frames_read=self._read,
            verdicts=st.frames,
            in_flight=in_flight,
            oldest_in_flight_age_s=None if oldest_read is None else max(0.0, now - oldest_read),
            unanswered=owed,
            oldest_unanswered_age_s=oldest_owed_age,
            last_verdict_age_s=None if last_verdict is None else max(0.0, now - last_verdict),
            last_read_age_s=None if self._last_read_at is None else max(0.0, now - self._last_read_at),
            late_in_flight=st.late_in_flight,
            discarded_results=st.discarded_results,
            model_ok=self._model_ok,
            model_failures=self._model_failures,
            model_error=self._model_error,
            busiest_request_s=None if busy_since is None else max(0.0, now - busy_since),
            stall_after_s=stall_after,
            stalled=oldest_owed_age is not None and oldest_owed_age > stall_after,
        )

    def _guard(self, fn):
        def run():
            realtime.enter("frame")  # infer, post, watchdog: the frame path (kernel/realtime.py)
            try:
                fn()
            except BaseException as e:  # carried to the owner, who decides
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self._errors.append(e)
                self.done.set()
        return run

    # -- the in-flight table ------------------------------------------------------------------
    def _claim(self, entry: _InFlight, returned: bool = False) -> bool:
        """Removes `entry` from the in-flight table; True if this caller now owns its verdict."""
        with self._cv:
            if returned:  # the model answered: whatever looked stuck was not
                self._suspect = self._stuck_reported = False
            if entry not in self._inflight:
                return False
            self._inflight.remove(entry)
            if self._draining and not self._inflight:
                self._cv.notify_all()
            return True

    def _settle_all(self, why: str) -> int:
        with self._cv:
            entries, self._inflight = list(self._inflight), set()
            self._cv.notify_all()
        for e in entries:
            j = e.judge
            self._post.put((_LATE, late_verdict(e.frame, j.policy, _timings(e.frame, time.monotonic()), j.model),
                            why))
        return len(entries)

    # -- infer thread -------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while True:
            if self._pending is not None:  # a model swap: here, between two frames
                self._install_pending()
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
                    if self._golden:  # idle: no part for 50 ms
                        self._inject_golden()
                    if self.source.finished:
                        break
                    continue
            t_read = time.monotonic()
            self._read += 1
            self._last_read_at = t_read
            self._owed.append(t_read)
            if self._pending is not None:  # the frame just read is the new model's first
                self._install_pending()
            self._handle(frame, t_read, self._judge)
            self._last_frame_id = frame.frame_id
            if self._golden and t_read - self._golden[0][1] > self.golden_wait_s:  # a line never idle
                self._inject_golden()
        with self._cv:  # every frame handed to inference is answered by its deadline (watchdog)
            self._draining = True
            self._cv.wait_for(lambda: not self._inflight)
        self._post.put((_END, None, None))

    def inject(self, frame: Frame) -> None:
        """A golden reference frame (`frame.golden` set), inspected between two parts; any thread."""
        self._golden.append((frame, time.monotonic()))

    def _inject_golden(self) -> None:
        frame = self._golden.popleft()[0]
        now = time.monotonic()
        self._owed.append(now)  # answered like any frame read (its verdict goes to on_golden)
        self._handle(replace(frame, captured_at=now, captured_wall=time.time()), now, self._judge)

    def _handle(self, frame: Frame, t_read: float, judge: Judge) -> None:
        if frame.image is None:  # the source dropped the image (e.g. its queue was full): fail safe, at once
            why = f"image dropped before inspection ({frame.dropped or 'no image'})"
            self._refuse(frame, frame.dropped or "no_image", why, t_read, judge)
            return
        deadline = judge.policy.deadline(frame)
        if t_read > deadline:
            self._post.put((_LATE, late_verdict(frame, judge.policy, _timings(frame, t_read), judge.model), None))
            return
        entry = _InFlight(frame, t_read, deadline, judge)
        with self._cv:
            self._inflight.add(entry)
            heapq.heappush(self._heap, (deadline, self._seq, entry))
            self._seq += 1
            if deadline < self._wake_at:
                self._cv.notify()
        wait_s = max(0.0, min(deadline, self._stop_by) - time.monotonic())
        try:
            started = judge.runner.submit(frame.image, entry, wait_s=wait_s)
        except ValueError as e:  # not a frame (shape/dtype): counted; a part gets the fail-safe verdict
            if self._claim(entry):
                log.warning("frame %s refused: %s", frame.frame_id, e)
                self._refuse(frame, "bad_frame", str(e), t_read, judge)
            return
        if not started and self._claim(entry):  # every request busy until the deadline: slow or stuck model
            self._post.put((_LATE, late_verdict(frame, judge.policy, _timings(frame, time.monotonic()), judge.model),
                            "no free inference request"))
        elif started and self.drift is not None and frame.golden is None:
            # While OpenVINO infers (GIL released): ~0.13 ms at 1280x720 off the part's critical path.
            stats = self.drift.stats(frame.image)
            if stats is not None:
                if len(self._input_stats) > 1024:  # entries whose verdict came first (never: ms vs 0.1 ms)
                    self._input_stats.clear()
                self._input_stats[frame.frame_id] = stats

    def _refuse(self, frame: Frame, cause: str, why: str, t_read: float, judge: Judge) -> None:
        v = None
        if frame.part_id is not None:
            v = error_verdict(frame, judge.policy, why, _timings(frame, t_read), judge.model)
        self._post.put((_REFUSED, v, cause))

    # -- completion (OpenVINO's callback thread) ------------------------------------------------
    def _on_inferred(self, result: Inferred, entry: _InFlight) -> None:
        """The decision runs right here, on the thread that saw the inference finish: a hand-off to
        another thread first would cost a wake-up (~0.1-0.3 ms measured) on every part's critical
        path. It is pure and takes ~0.1 ms; the sinks (disk, network) stay on the post thread, so
        this never blocks OpenVINO on I/O."""
        if not self._claim(entry, returned=result.error is None):
            self._post.put((_DISCARDED, None, result.error))
            return
        frame, judge = entry.frame, entry.judge
        if result.error is not None:
            v = error_verdict(frame, judge.policy, f"inference failed: {result.error}",
                              _timings(frame, time.monotonic()), judge.model)
            self._post.put((_FAILED, v, result.error))
            return
        timings = StageTimings(
            queue_ms=(result.t_start - frame.captured_at) * 1e3,
            preprocess_ms=(result.t_pre - result.t_start) * 1e3,
            infer_ms=(result.t_done - result.t_pre) * 1e3,
            postprocess_ms=(result.t_post - result.t_done) * 1e3,
        )
        found = result.findings
        v = decide(frame, found, judge.policy, time.monotonic(), time.time(), timings, judge.model)
        t_end = time.monotonic()
        v = replace(v, timings=replace(timings, decide_ms=(t_end - result.t_post) * 1e3,
                                       total_ms=(t_end - frame.captured_at) * 1e3))
        self._post.put((_VERDICT, v, found.max_score))  # the drift guard's PSI

    # -- watchdog thread ----------------------------------------------------------------------
    def _watch_loop(self) -> None:
        # Idle, it looks once per budget: a fresh frame's deadline (capture + budget) is then never
        # earlier than the next look, so submitting it needs no wake-up (no cost on the frame path).
        idle_s = max(self.policy.budget_s, 0.01)
        while True:
            expired: list[_InFlight] = []
            stuck_s = None
            with self._cv:
                while True:
                    if self._watch_stop:
                        return
                    now = time.monotonic()
                    heap = self._heap
                    while heap and (heap[0][0] <= now or heap[0][2] not in self._inflight):
                        entry = heapq.heappop(heap)[2]
                        if entry in self._inflight:
                            self._inflight.remove(entry)
                            expired.append(entry)
                    if expired:
                        self._suspect = True
                        if self._draining and not self._inflight:
                            self._cv.notify_all()
                    wake = heap[0][0] if heap else now + idle_s
                    if self._suspect and not self._stuck_reported:
                        since = self.detector.oldest_busy_since()
                        if since is None:
                            self._suspect = False
                        elif now - since >= self.stuck_after_s:
                            self._stuck_reported, self._suspect = True, False
                            stuck_s = now - since
                        else:
                            wake = min(wake, since + self.stuck_after_s)
                    if expired or stuck_s is not None:
                        self._wake_at = -math.inf  # busy: the loop looks again before it sleeps
                        break
                    self._wake_at = wake
                    self._cv.wait(max(0.0, wake - now))
            for e in expired:
                self._post.put((_LATE, late_verdict(e.frame, e.judge.policy, _timings(e.frame, time.monotonic()),
                                                    e.judge.model), "inference had not returned by the deadline"))
            if stuck_s is not None:
                self._post.put((_STUCK, None, f"an inference request has run for {stuck_s:.2f} s "
                                              f"(stuck after {self.stuck_after_s:.2f} s)"))

    # -- post thread --------------------------------------------------------------------------
    def _post_loop(self) -> None:
        # `done` and the close wait on the frames owed, not on the order of markers in the queue: a
        # completion claims its frame before it queues the verdict, so _END (or _CLOSE) can overtake
        # the verdict of the last frame (seen: 1 run in 3 lost it when image-less parts followed).
        ended = False
        close_by: float | None = None
        while True:
            if close_by is None:
                kind, v, detail = self._post.get()
            else:
                left = close_by - time.monotonic()
                if not self._owed or left <= 0:
                    return
                try:
                    kind, v, detail = self._post.get(timeout=left)
                except queue.Empty:
                    return
            if kind is _CLOSE:
                close_by = detail
                continue
            if kind is _END:  # every frame read has been handed out; done once each is answered
                ended = True
                if not self._owed:
                    self.done.set()
                continue
            if kind is _VERDICT:
                self._model_answered()
            elif kind is _LATE:
                if detail is not None:
                    self.stats.late_in_flight += 1
            elif kind is _FAILED:
                self.stats.errors += 1
                self._model_failed("inference failed", detail, v)
            elif kind is _REFUSED:
                if v is None:
                    self.stats.dropped[detail] += 1
                else:
                    self.stats.uninspected[detail] += 1
                    if detail == "bad_frame":
                        self.stats.dropped[detail] += 1
            elif kind is _DISCARDED:
                self.stats.discarded_results += 1
                if detail is None:
                    self._model_answered()
                continue
            elif kind is _STUCK:
                self._model_failed("inference stuck", detail, None)
                continue
            if v is not None and v.frame.golden is not None:  # a reference, not a part: checked, never emitted
                if self.on_golden is not None:
                    try:
                        self.on_golden(v)
                    except Exception:
                        log.exception("golden check failed on %s", v.frame.golden)
            elif v is not None:
                if self.drift is not None:
                    try:
                        v = self.drift.observe(v, self._input_stats.pop(v.frame_id, None),
                                               detail if kind is _VERDICT else None, self._judge)
                    except Exception:  # the guard must never cost a part its verdict
                        log.exception("input drift guard failed on frame %s", v.frame_id)
                self._emit(v)
            self._answered()  # after the sinks have it: a sink that blocks shows as verdicts owed
            if ended and not self._owed:
                self.done.set()

    def _answered(self) -> None:
        try:
            self._owed.popleft()
        except IndexError:
            pass

    def _model_answered(self) -> None:
        if not self._model_ok:
            log.warning("model %s answers again after: %s", self.model.name, self._model_error)
            self._model_ok = True

    def _model_failed(self, what: str, error: str | None, v: Verdict | None) -> None:
        """One `model_failed` alarm per episode: from the first failure until an inference returns."""
        self._model_error = f"{what}: {error}"
        if not self._model_ok:
            return
        self._model_ok = False
        self._model_failures += 1
        model = v.model if v is not None else self.model  # the model that failed, even right after a swap
        log.error("model %s %s %s", model.name, model.version, self._model_error)
        if self._alarm is not None:
            detail: dict[str, Any] = {"what": what, "error": error, "model": model.name, "version": model.version}
            if v is not None:
                detail.update(frame_id=v.frame_id, part_id=v.part_id)
            try:
                self._alarm("model_failed", detail)
            except Exception:  # an alarm path must not stop the verdicts
                log.exception("model_failed alarm could not be raised")

    def _emit(self, v: Verdict) -> None:
        self.stats.add(v)
        for s in self.sinks:
            try:
                s.submit(v)
            except Exception:  # a sink failure is logged and counted, never fatal
                self.stats.dropped[f"sink_{s.name}"] += 1
                log.exception("sink %s failed on frame %s", s.name, v.frame_id)
        if v.outcome is Outcome.LATE:
            log.debug("frame %s LATE (%.1f ms)", v.frame_id, v.timings.total_ms)


def _timings(frame: Frame, now: float) -> StageTimings:
    ms = (now - frame.captured_at) * 1e3
    return StageTimings(queue_ms=ms, total_ms=ms)
