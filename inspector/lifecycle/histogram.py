"""A fixed-bucket latency histogram: O(1) per sample, constant size, percentiles within a stated accuracy.

The rollback guard used to keep every latency and sort them all again after every part (92 ms per part
at 10^6 parts, on the post thread). Here a sample only increments one counter of a fixed array:

- buckets are log-spaced: bucket i (1..N) holds [LO * RATIO**(i-1), LO * RATIO**i); bucket 0 holds
  everything below LO, the last one everything from HI up. LO = 0.05 ms, HI = 10 min, RATIO = 1.02:
  822 buckets, whatever the number of samples.
- a bucket reads as its geometric middle, so a percentile inside [LO, HI) is within sqrt(1.02) - 1 =
  0.995 % (call it 1 %) of the sample it stands for. Below LO it reads LO, from HI up it reads HI.
- percentiles are by nearest rank (the smallest value with at least q % of the samples at or below it,
  numpy's `method="inverted_cdf"`); on the guard's window sizes (30..10^6 parts) that is the sample the
  package's linear-interpolated p99 (inspector.stats) lies next to.

Whether a percentile is above a threshold is O(1) per sample: the guard keeps a running count of the
samples in the buckets that read above its threshold (`first_bucket_above`) and compares it with the
rank; `quantile` walks the fixed array (822 steps) and is for reports, not for every part.
"""

from __future__ import annotations

import math
from typing import Any

LO_MS = 0.05
HI_MS = 600_000.0
RATIO = 1.02
_LOG_RATIO = math.log(RATIO)
_INNER = math.ceil(math.log(HI_MS / LO_MS) / _LOG_RATIO)  # buckets between LO and HI
SIZE = _INNER + 2  # + below LO + from HI up
ACCURACY = math.sqrt(RATIO) - 1  # relative, inside [LO, HI)


def bucket_of(ms: float) -> int:
    if not ms >= LO_MS:  # NaN too: a sample with no latency counts as the fastest, never trips a maximum
        return 0
    if ms >= HI_MS:
        return SIZE - 1
    return min(SIZE - 2, 1 + int(math.log(ms / LO_MS) / _LOG_RATIO))


def value_of(bucket: int) -> float:
    """What a sample in `bucket` reads as (the bucket's geometric middle; LO and HI at the ends)."""
    if bucket <= 0:
        return LO_MS
    if bucket >= SIZE - 1:
        return HI_MS
    return LO_MS * RATIO ** (bucket - 1) * math.sqrt(RATIO)


def first_bucket_above(ms: float) -> int:
    """The first bucket whose value is above `ms` (every later bucket's is too)."""
    b = bucket_of(ms)
    while b < SIZE - 1 and value_of(b) <= ms:
        b += 1
    return b if value_of(b) > ms else SIZE


def rank(q: float, n: int) -> int:
    """The nearest rank of the q-th percentile among n samples (1-based): ceil(q/100 * n), at least 1."""
    return max(1, math.ceil(round(q * n, 9) / 100))


class LatencyHistogram:
    """Owned by one thread (the guard holds its lock around it)."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0] * SIZE
        self.n = 0

    def add(self, ms: float) -> int:
        b = bucket_of(ms)
        self.counts[b] += 1
        self.n += 1
        return b

    def quantile(self, q: float) -> float | None:
        """The q-th percentile (0..100] by nearest rank, as its bucket's value; None with no samples."""
        if self.n == 0:
            return None
        want, seen = rank(q, self.n), 0
        for b, c in enumerate(self.counts):
            seen += c
            if seen >= want:
                return value_of(b)
        return HI_MS  # not reached: the counts sum to n

    def to_doc(self) -> dict[str, Any]:
        """Sparse, for the pointer file: {"ratio", "lo_ms", "counts": {bucket: count}}."""
        return {"ratio": RATIO, "lo_ms": LO_MS, "counts": {str(b): c for b, c in enumerate(self.counts) if c}}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LatencyHistogram:
        """Raises ValueError when the doc was written with other buckets or is malformed."""
        if doc.get("ratio") != RATIO or doc.get("lo_ms") != LO_MS:
            raise ValueError(f"histogram with ratio {doc.get('ratio')} / lo_ms {doc.get('lo_ms')}, "
                             f"expected {RATIO} / {LO_MS}")
        h = cls()
        for k, c in dict(doc.get("counts", {})).items():
            b, c = int(k), int(c)
            if not 0 <= b < SIZE or c < 0:
                raise ValueError(f"bucket {k}: count {c} outside the histogram")
            h.counts[b] += c
            h.n += c
        return h
