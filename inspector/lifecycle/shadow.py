"""Shadow run: a candidate model judges the same frames as the active one, without actuating.

It must never cost the active model a deadline, so it only uses spare capacity:
- its own compiled model and its own inference request (`Detector(..., async_requests=1)`), with
  `shadow.threads` inference threads (1 by default: the active model keeps its cores);
- its own thread at a lower OS priority (`shadow.nice`). The model is compiled ON that thread after
  it lowered itself, so the inference threads OpenVINO creates for it inherit the niceness (Linux:
  a new thread inherits its creator's nice value; checked in tests/lifecycle/test_shadow.py). The
  active model is compiled on normal-priority threads and keeps its priority;
- it is fed from the pipeline's post thread (after the active verdict went to the sinks) through a
  bounded queue (`shadow.queue`, 1): when it is behind, the new frame is dropped and counted, the
  post thread never waits.

Per judged frame it records agreement on the outcome (reject or pass) and, per class, whether each
model found a defect of that class. Frames where the two disagree (outcome, or the set of defect
classes) go to the review spool with reason `shadow_disagree`. LATE and error verdicts of the active
model are not compared (the active model did not judge them): counted as `not_compared`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from inspector.config import BackgroundConfig
from inspector.frames import Outcome, StageTimings, Verdict
from inspector.inference.decision import DecisionPolicy, decide
from inspector.kernel.priority import lower_thread_priority
from inspector.records import defect_record
from inspector.stats import summary

log = logging.getLogger(__name__)

_LAT_KEEP = 20_000  # latency samples kept per model (a shift at 10 parts/s is 288 000 parts: a recent window)


class ShadowRunner:
    """One candidate beside the active model. `offer` from the post thread; the rest on its thread.

    `build(ref)` returns (runner, policy) for the candidate, compiled on the calling thread."""

    name = "shadow"

    def __init__(self, ref: str, build: Callable[[], tuple[Any, DecisionPolicy]], cfg, *,
                 spool_sink=None, nice: int | None = None) -> None:
        self.ref = ref
        self.cfg = cfg
        self._build = build
        self._spool = spool_sink
        self._nice = cfg.nice if nice is None else nice
        self._q: queue.Queue[Verdict | None] = queue.Queue(maxsize=cfg.queue)
        self._lock = threading.Lock()
        self.ready = threading.Event()  # the candidate is compiled and takes frames
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle-shadow", daemon=True)
        self.runner = None  # inference.runner.Runner, once built
        self.policy: DecisionPolicy | None = None
        self.priority = "not started"
        self.started_wall = time.time()
        # counters (written under _lock by the shadow thread, dropped also by the post thread)
        self.offered = 0
        self.judged = 0
        self.dropped = 0  # frames the shadow had no time for
        self.not_compared = Counter()  # active verdicts not made by the model (LATE, error, no image)
        self.agree = 0
        self.disagree = 0
        self.classes: dict[str, Counter] = {}
        self.rejected_alone = {"active": 0, "shadow": 0}
        self.rejected_alone_ids: dict[str, deque[str]] = {"active": deque(maxlen=cfg.keep_ids),
                                                          "shadow": deque(maxlen=cfg.keep_ids)}
        self.spooled = 0
        self.active_models: Counter[str] = Counter()
        self._lat_active_infer: deque[float] = deque(maxlen=_LAT_KEEP)
        self._lat_active_total: deque[float] = deque(maxlen=_LAT_KEEP)
        self._lat_shadow_infer: deque[float] = deque(maxlen=_LAT_KEEP)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        runner = self.runner
        if runner is not None and not self._thread.is_alive():
            runner.close(0.5)

    # -- the post thread's side --------------------------------------------------------------------
    def submit(self, v: Verdict) -> None:
        """Offers the active verdict's frame to the shadow: never blocks (full queue: dropped, counted)."""
        if not self.ready.is_set() or self._stop.is_set():
            return
        why = None
        if v.frame.image is None:
            why = "no_image"
        elif v.outcome is Outcome.LATE:
            why = "late"
        elif v.error is not None:
            why = "error"
        if why is not None:
            with self._lock:
                self.not_compared[why] += 1
            return
        try:
            self._q.put_nowait(v)
            with self._lock:
                self.offered += 1
        except queue.Full:
            with self._lock:
                self.offered += 1
                self.dropped += 1

    # -- the shadow thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        self.priority = lower_thread_priority("shadow", BackgroundConfig(priority="nice", nice=self._nice))
        try:
            self.runner, self.policy = self._build()  # compiled here: its threads inherit our niceness
        except Exception as e:
            log.exception("shadow model %s could not be built", self.ref)
            self.failed = f"{type(e).__name__}: {e}"
            self.ready.set()
            return
        log.info("shadow model %s ready (thread %s, %d inference thread(s))", self.ref, self.priority,
                 self.cfg.threads)
        self.ready.set()
        while not self._stop.is_set():
            v = self._q.get()
            try:
                if v is None:
                    break
                self._judge(v)
            except Exception:
                log.exception("shadow %s failed on frame %s", self.ref, v.frame_id)
                with self._lock:
                    self.not_compared["shadow_error"] += 1
            finally:
                self._q.task_done()

    def drain(self, timeout: float) -> bool:
        """Waits until the frames already queued are judged (tests, a final report). True if they were."""
        end = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return not self._q.unfinished_tasks

    def _judge(self, v: Verdict) -> None:
        t0 = time.monotonic()
        found = self.runner.find(v.frame.image)
        infer_ms = (time.monotonic() - t0) * 1e3
        frame = v.frame
        # Judged as if on time: the shadow compares decisions, its own lateness is not the part's.
        mine = decide(frame, found, self.policy, frame.captured_at, frame.captured_wall,
                      StageTimings(infer_ms=infer_ms), self.runner.bundle.info)
        a_rej, s_rej = v.outcome is Outcome.REJECT, mine.outcome is Outcome.REJECT
        a_cls = {d.class_name for d in v.defects}
        s_cls = {d.class_name for d in mine.defects}
        agree = a_rej == s_rej
        part = str(frame.part_id if frame.part_id is not None else frame.frame_id)
        with self._lock:
            self.judged += 1
            self.active_models[f"{v.model.name}@{v.model.version}"] += 1
            self.agree += agree
            self.disagree += not agree
            for c in self.policy.classes:
                row = self.classes.setdefault(c, Counter())
                a, s = c in a_cls, c in s_cls
                row["both" if a and s else "active_only" if a else "shadow_only" if s else "neither"] += 1
            if a_rej and not s_rej:
                self.rejected_alone["active"] += 1
                self.rejected_alone_ids["active"].append(part)
            elif s_rej and not a_rej:
                self.rejected_alone["shadow"] += 1
                self.rejected_alone_ids["shadow"].append(part)
            self._lat_active_infer.append(v.timings.infer_ms)
            self._lat_active_total.append(v.timings.total_ms)
            self._lat_shadow_infer.append(infer_ms)
        if (not agree or a_cls != s_cls) and self._spool is not None:
            info = self.runner.bundle.info
            self._spool.submit_shadow(v, {
                "model": {"name": info.name, "version": info.version, "sha256": info.sha256},
                "verdict": mine.outcome.value, "defects": [defect_record(d) for d in mine.defects],
                "infer_ms": round(infer_ms, 3)})
            with self._lock:
                self.spooled += 1

    # -- report -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self._lock:
            judged = self.judged
            classes = {c: dict(row) for c, row in self.classes.items()}
            out: dict[str, Any] = {
                "model": self.ref,
                "ready": self.ready.is_set() and self.failed is None,
                "failed": self.failed,
                "priority": self.priority,
                "offered": self.offered,
                "judged": judged,
                "dropped": self.dropped,
                "not_compared": dict(self.not_compared),
                "agree": self.agree,
                "disagree": self.disagree,
                "agreement": round(self.agree / judged, 4) if judged else None,
                "rejected_alone": dict(self.rejected_alone),
                "rejected_alone_ids": {k: list(v) for k, v in self.rejected_alone_ids.items()},
                "spooled_disagreements": self.spooled,
                "active_models": dict(self.active_models),
                "latency_ms": {
                    "active_infer": summary(list(self._lat_active_infer)) if judged else None,
                    "active_total": summary(list(self._lat_active_total)) if judged else None,
                    "shadow_infer": summary(list(self._lat_shadow_infer)) if judged else None,
                },
            }
        per_class = {}
        for c, row in classes.items():
            n = sum(row.values())
            per_class[c] = {**{k: row.get(k, 0) for k in ("both", "active_only", "shadow_only", "neither")},
                            "agreement": round((row.get("both", 0) + row.get("neither", 0)) / n, 4) if n else None}
        out["per_class"] = per_class
        return out
