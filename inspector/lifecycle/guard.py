"""The rollback guard: watches the parts a newly promoted model judges and trips when its reject
rate or its p99 latency leaves the configured band (`lifecycle.guard`).

It runs on the pipeline's post thread (VerdictSink-shaped: O(1) per verdict, a sort of at most
`parts` latencies while armed), so it sees every verdict exactly once and in the order the sinks do.
Tripping and accepting only call back: the manager does the swap on its own thread, never here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from inspector.frames import ModelInfo, Outcome, Verdict
from inspector.stats import percentile


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
        self._totals: list[float] = []
        self.last: dict[str, Any] | None = None  # the last verdict of the guard (trip or accept)

    def arm(self, model: ModelInfo) -> None:
        with self._lock:
            self._model, self._parts, self._rejects, self._totals = model, 0, 0, []

    def disarm(self) -> None:
        with self._lock:
            self._model = None

    @property
    def armed(self) -> bool:
        return self._model is not None

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
            self._totals.append(v.timings.total_ms)
            n = self._parts
            why = self._outside(n) if n >= self.cfg.min_parts else None
            model = self._model
            if why is None and n < self.cfg.parts:
                return
            self._model = None
            self.last = {"model": f"{model.name}@{model.version}", "parts": n,
                         "reject_rate": round(self._rejects / n, 4),
                         "p99_ms": _round(percentile(self._totals, 99)), "tripped": why is not None, "why": why}
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
        if c.p99_ms_max is not None:
            p99 = percentile(self._totals, 99)
            if p99 is not None and p99 > c.p99_ms_max:
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
