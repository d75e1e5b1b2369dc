"""Percentiles, one way for the whole package: the pipeline's stage latencies, the publisher's
acknowledgement times and the bench harness all summarise samples with these two functions, so
a p99 means the same thing in the summary, `/metrics`, the heartbeat and `benchmarks/`.

Linear interpolation between closest ranks (numpy's default, as `np.percentile`): on 1000
samples the p99 is between the 990th and 991st value, not the nearest rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: What `summary` reports by default: the tail the line cares about and the worst case.
DEFAULT_STATS = ("p50", "p95", "p99", "max")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values`; None when there are none."""
    a = _array(values)
    return float(np.percentile(a, q)) if a.size else None


def summary(values: Iterable[float], stats: Sequence[str] = DEFAULT_STATS,
            ndigits: int | None = 3) -> dict[str, float | None]:
    """`{"p50": ..., "p99": ..., "max": ...}` for the names asked: `pNN` (any percentile, `p99.9`
    too), `min`, `max`, `mean`, `n`. Every name maps to None when there are no values."""
    a = _array(values)
    out: dict[str, float | None] = {}
    qs = {s: _quantile(s) for s in stats if s not in ("min", "max", "mean", "n")}
    if any(q is None for q in qs.values()):
        raise ValueError(f"summary: expected pNN (0..100), min, max, mean or n, got {list(stats)}")
    if a.size == 0:
        return {s: (0 if s == "n" else None) for s in stats}
    pct = dict(zip(qs, np.percentile(a, list(qs.values())).tolist(), strict=True)) if qs else {}
    for s in stats:
        if s == "n":
            out[s] = int(a.size)
            continue
        v = pct[s] if s in pct else float({"min": a.min, "max": a.max, "mean": a.mean}[s]())
        out[s] = round(v, ndigits) if ndigits is not None else v
    return out


def _array(values: Iterable[float]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(float, copy=False).ravel()
    return np.fromiter(values, float) if not isinstance(values, (list, tuple)) else np.asarray(values, float)


def _quantile(name: str) -> float | None:
    try:
        q = float(name[1:]) if name.startswith("p") else None
    except ValueError:
        return None
    return q if q is not None and 0 <= q <= 100 else None
