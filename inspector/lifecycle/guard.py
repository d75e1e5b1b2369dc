"""The rollback guard: watches the parts a newly promoted model judges and trips when its reject
rate or its p99 latency leaves the configured band (`lifecycle.guard`).

It runs on the pipeline's post thread (VerdictSink-shaped), so it sees every verdict exactly once and
in the order the sinks do. Per part it does O(1) work whatever the number of parts watched: the
latencies go into a fixed-bucket histogram (histogram.py: 822 log-spaced buckets, a p99 within 1 % of
the sample it stands for), and the p99 check is one running count of the parts whose latency reads
above `p99_ms_max`, compared with the p99's rank. (It used to keep every latency and sort them all
after every part: 92 ms per part at 10^6 parts.)
Tripping and accepting only call back: the manager does the swap on its own thread, never here.

The guard's progress (`progress()`: model, parts, rejects, the histogram's non-empty buckets) is kept
in the station's pointer file by the manager, so a restart right after a promotion resumes the watch
(`arm(model, resume=...)`) instead of dropping it (docs/contracts.md, "Rollback guard").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from inspector.frames import ModelInfo, Outcome, Verdict
from inspector.lifecycle.histogram import LatencyHistogram, first_bucket_above, rank


class RollbackGuard:
    name = "rollback_guard"

    def __init__(self, cfg, on_trip: Callable[[dict[str, Any]], None], on_accept: Callable[[ModelInfo], None]) -> None:
        self.cfg = cfg
        self._on_trip = on_trip
        self._on_accept = on_accept
        self._lock = threading.Lock()
        self._model: ModelInfo | None = None  # armed: the model being watched
        self._parts = 0
        self._rejects = 0
        self._hist = LatencyHistogram()
        # the first bucket reading above p99_ms_max, and how many parts fell at or past it
        self._p99_bucket = None if cfg.p99_ms_max is None else first_bucket_above(cfg.p99_ms_max)
        self._slow = 0
        self.last: dict[str, Any] | None = None  # the last verdict of the guard (trip or accept)

    def arm(self, model: ModelInfo, resume: dict[str, Any] | None = None) -> None:
        """Starts watching `model`; `resume` (a `progress()` of the same model, from the pointer file)
        carries on from the parts already watched. Raises ValueError on a malformed `resume`."""
        parts, rejects, hist = 0, 0, LatencyHistogram()
        if resume is not None:
            parts, rejects = int(resume["parts"]), int(resume["rejects"])
            hist = LatencyHistogram.from_doc(resume["latency_ms"])
            if not 0 <= rejects <= parts or hist.n != parts:
                raise ValueError(f"guard progress: {rejects} rejects and {hist.n} latencies for {parts} parts")
        slow = 0 if self._p99_bucket is None else sum(hist.counts[self._p99_bucket:])
        with self._lock:
            self._model, self._parts, self._rejects, self._hist, self._slow = model, parts, rejects, hist, slow

    def disarm(self) -> None:
        with self._lock:
            self._model = None

    @property
    def armed(self) -> bool:
        return self._model is not None

    @property
    def parts_watched(self) -> int:
        return self._parts

    def progress(self) -> dict[str, Any] | None:
        """What the pointer file keeps of an armed guard; None when disarmed."""
        with self._lock:
            m = self._model
            if m is None:
                return None
            return {"model": f"{m.name}@{m.version}", "parts": self._parts, "rejects": self._rejects,
                    "latency_ms": self._hist.to_doc()}

    # VerdictSink form: the post thread calls submit.
    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def submit(self, v: Verdict) -> None:
        if self._model is None or v.model != self._model:
            return
        with self._lock:
            if self._model is None:
                return
            self._parts += 1
            self._rejects += v.outcome is Outcome.REJECT
            b = self._hist.add(v.timings.total_ms)
            if self._p99_bucket is not None and b >= self._p99_bucket:
                self._slow += 1
            n = self._parts
            why = self._outside(n) if n >= self.cfg.min_parts else None
            model = self._model
            if why is None and n < self.cfg.parts:
                return
            self._model = None
            self.last = {"model": f"{model.name}@{model.version}", "parts": n,
                         "reject_rate": round(self._rejects / n, 4),
                         "p99_ms": _round(self._hist.quantile(99)), "tripped": why is not None, "why": why}
            result = dict(self.last)
        if why is not None:
            self._on_trip(result)
        else:
            self._on_accept(model)

    def _outside(self, n: int) -> str | None:
        c = self.cfg
        rate = self._rejects / n
        if c.reject_rate_max is not None and rate > c.reject_rate_max:
            return (f"reject rate {rate:.1%} over {n} parts is above the band's maximum "
                    f"{c.reject_rate_max:.1%} (lifecycle.guard.reject_rate_max)")
        if c.reject_rate_min is not None and rate < c.reject_rate_min:
            return (f"reject rate {rate:.1%} over {n} parts is below the band's minimum "
                    f"{c.reject_rate_min:.1%} (lifecycle.guard.reject_rate_min)")
        # p99 above the maximum <=> more parts read above it than the p99's rank leaves above: O(1).
        if self._p99_bucket is not None and self._slow > n - rank(99, n):
            p99 = self._hist.quantile(99)  # once, for the message: the guard trips here
            return (f"p99 latency {p99:.1f} ms over {n} parts is above the band's maximum "
                    f"{c.p99_ms_max:g} ms (lifecycle.guard.p99_ms_max)")
        return None

    def state(self) -> dict[str, Any]:
        with self._lock:
            m = self._model
            return {"armed": m is not None, "watching": None if m is None else f"{m.name}@{m.version}",
                    "parts": self._parts if m is not None else None, "parts_to_watch": self.cfg.parts,
                    "last": self.last}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
