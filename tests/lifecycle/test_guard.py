"""The rollback guard's band check (pure logic: verdict stand-ins carry a model, an outcome and a
latency): its p99 comes from a fixed-bucket histogram, within the stated accuracy of numpy's, and its
memory and per-part work do not grow with the number of parts watched."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from inspector.config import RollbackGuardConfig
from inspector.frames import ModelInfo, Outcome
from inspector.lifecycle import histogram
from inspector.lifecycle.guard import RollbackGuard
from inspector.lifecycle.histogram import ACCURACY, LatencyHistogram

M = ModelInfo("demo", "99.0.0", "0" * 64)


def _verdict(ms: float, reject: bool = False, model: ModelInfo = M):
    return SimpleNamespace(model=model, outcome=Outcome.REJECT if reject else Outcome.PASS,
                           timings=SimpleNamespace(total_ms=ms))


def _samples(kind: str, n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":  # a latency's usual shape
        return rng.lognormal(np.log(12.0), 0.35, n)
    if kind == "bimodal":  # most parts fast, a slow tail (a GC, a busy core)
        return np.where(rng.random(n) < 0.97, rng.normal(8.0, 0.5, n), rng.normal(45.0, 5.0, n)).clip(0.1)
    if kind == "uniform":
        return rng.uniform(0.2, 400.0, n)
    return rng.exponential(3.0, n) + 0.06  # "exponential"


@pytest.mark.parametrize("kind", ["lognormal", "bimodal", "uniform", "exponential"])
@pytest.mark.parametrize("n", [30, 1000, 100_000])
@pytest.mark.parametrize("q", [50, 99])
def test_histogram_percentiles_are_within_the_stated_accuracy_of_numpy(kind, n, q):
    x = _samples(kind, n)
    h = LatencyHistogram()
    for v in x:
        h.add(float(v))
    exact = float(np.percentile(x, q, method="inverted_cdf"))  # nearest rank, what the histogram reports
    assert abs(h.quantile(q) - exact) <= ACCURACY * exact + 1e-12, (h.quantile(q), exact)
    # and next to the package's (linear) p99 on the same samples: within one order statistic
    xs = np.sort(x)
    k = histogram.rank(q, n) - 1
    lo, hi = xs[max(0, k - 1)], xs[min(n - 1, k + 1)]
    assert lo * (1 - ACCURACY) <= h.quantile(q) <= hi * (1 + ACCURACY)


def test_the_histogram_round_trips_through_the_pointer_doc():
    h = LatencyHistogram()
    for v in _samples("bimodal", 5000):
        h.add(float(v))
    again = LatencyHistogram.from_doc(h.to_doc())
    assert again.counts == h.counts and again.n == h.n and again.quantile(99) == h.quantile(99)
    with pytest.raises(ValueError, match="ratio"):
        LatencyHistogram.from_doc({**h.to_doc(), "ratio": 1.1})


def _sizes(guard: RollbackGuard) -> int:
    """Bytes held by the guard's containers (lists, dicts and the histogram's counts)."""
    held = [v for v in vars(guard).values() if isinstance(v, list | dict | tuple)]
    held += [guard._hist.counts] if hasattr(guard, "_hist") else []
    return sum(sys.getsizeof(c) for c in held)


def test_the_guard_holds_a_bounded_structure_whatever_the_parts():
    cfg = RollbackGuardConfig(enabled=True, parts=1_000_000, min_parts=20, p99_ms_max=1000.0, reject_rate_max=0.9)
    guard = RollbackGuard(cfg, on_trip=lambda r: None, on_accept=lambda m: None)
    guard.arm(M)
    x = _samples("lognormal", 20_000)
    for v in x[:1000]:
        guard.submit(_verdict(float(v)))
    at_1000 = _sizes(guard)
    for v in x[1000:]:
        guard.submit(_verdict(float(v)))
    assert _sizes(guard) == at_1000, "the guard's memory grew with the parts it watched"
    assert guard.armed and guard.parts_watched == 20_000
    p99 = guard.progress()
    assert LatencyHistogram.from_doc(p99["latency_ms"]).n == 20_000
    assert len(p99["latency_ms"]["counts"]) <= histogram.SIZE


def test_the_per_part_check_does_not_walk_the_histogram(monkeypatch):
    """The band is checked after every part; the p99 check is a running count, not a scan or a sort:
    `quantile` (822 steps) is called only when the guard trips or accepts, never per part."""
    calls = []
    real = LatencyHistogram.quantile
    monkeypatch.setattr(LatencyHistogram, "quantile", lambda self, q: calls.append(q) or real(self, q))
    cfg = RollbackGuardConfig(enabled=True, parts=50_000, min_parts=20, p99_ms_max=200.0)
    guard = RollbackGuard(cfg, on_trip=lambda r: None, on_accept=lambda m: None)
    guard.arm(M)
    for v in _samples("lognormal", 49_999):
        guard.submit(_verdict(float(v)))
    assert calls == [] and guard.armed
    guard.submit(_verdict(10.0))
    assert calls == [99] and guard.last["tripped"] is False


@pytest.mark.parametrize("kind", ["lognormal", "bimodal"])
def test_the_guard_trips_on_p99_when_the_histogram_p99_crosses_the_maximum(kind):
    x = np.concatenate([_samples(kind, 3000), np.full(200, 150.0)])  # a slow tail starts at part 3001
    tripped = []
    cfg = RollbackGuardConfig(enabled=True, parts=10_000, min_parts=30, p99_ms_max=100.0)
    guard = RollbackGuard(cfg, on_trip=tripped.append, on_accept=lambda m: None)
    guard.arm(M)
    fed = 0
    for v in x:
        guard.submit(_verdict(float(v)))
        fed += 1
        if tripped:
            break
    (result,) = tripped
    n = result["parts"]
    assert n == fed and n > 3000 and "p99 latency" in result["why"] and "p99_ms_max" in result["why"]
    exact = [float(np.percentile(x[:k], 99, method="inverted_cdf")) for k in (n - 1, n)]
    assert exact[0] <= 100.0 * (1 + ACCURACY) and exact[1] > 100.0 * (1 - ACCURACY)
    assert result["p99_ms"] > 100.0


def test_progress_resumes_the_watch():
    cfg = RollbackGuardConfig(enabled=True, parts=100, min_parts=20, reject_rate_max=0.5)
    guard = RollbackGuard(cfg, on_trip=lambda r: None, on_accept=lambda m: None)
    guard.arm(M)
    for i in range(40):
        guard.submit(_verdict(10.0 + i, reject=i % 4 == 0))
    saved = guard.progress()
    assert (saved["model"], saved["parts"], saved["rejects"]) == ("demo@99.0.0", 40, 10)
    again = RollbackGuard(cfg, on_trip=lambda r: None, on_accept=lambda m: None)
    again.arm(M, resume=saved)
    assert again.state()["parts"] == 40 and again.progress() == saved
    with pytest.raises(ValueError, match="latencies for"):
        again.arm(M, resume={**saved, "parts": 41})
