"""Which verdicts are kept for review: a pure policy (injected clock and dice, no I/O).

Runs on the frame thread, so it does the cheap checks first: strategy eligibility and the dice, then
the rate windows, and only when some strategy still wants the frame does it hash the image for the
near-duplicate check (a 64-bit dHash of a subsampled grayscale image, ~0.1 ms on 640x480).

Near-duplicates are what a free-running camera sends while the line stands still: the same scene
for minutes. A triggered frame is one physical part, and parts of one type at the same pose look
alike at 64 bits (measured: of 435 pairs of distinct synthetic parts, one within 5 bits; median
21), so frames with different `part_id`s are never duplicates of each other.

Strategies (config `sampling`):
  uncertain      verdict.uncertain is non-empty (the decision stage puts every detection within
                 ±uncertain_margin of its class threshold there; for a classifier, every NG class whose
                 probability is within the margin of its threshold: the probability margin)
  reject         outcome REJECT, kept with probability `rejects.rate`
  random_pass    outcome PASS, kept with probability `passes.rate` (to catch escapes)
  class:<name>   a detection (defect or uncertain) of that class, per `per_class[name]`
  shadow_disagree  the shadow model (issue 13) and the active model disagreed on this frame; offered by
                 the shadow's thread through `consider_shadow`, never by `consider`

Rate limits are exact sliding windows per strategy: a strategy admits a frame only if it admitted
fewer than `per_minute` frames in the last 60 s, `per_hour` in the last 3600 s and `per_day` in the
last 86400 s. A frame kept for several reasons counts against every strategy that admitted it, so
"samples carrying reason X" never exceed X's limits. Memory is bounded by the limits (one timestamp
per admitted frame per window).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from inspector.config import RateLimitsConfig, SamplingConfig, StrategyConfig
from inspector.frames import Outcome, Verdict

UNCERTAIN = "uncertain"
REJECT = "reject"
RANDOM_PASS = "random_pass"
CLASS_PREFIX = "class:"
SHADOW_DISAGREE = "shadow_disagree"

# Recent kept hashes compared per frame; far above what the rate limits let through in a dedup window.
_MAX_RECENT = 4096


class Dice(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SampleDecision:
    """Why a verdict is kept. Travels with the frame to the spool and into the manifest."""

    reasons: tuple[str, ...]  # every strategy that admitted the frame, in strategy order
    dhash: int  # 64-bit perceptual hash of the frame (0 when dedup is off)
    decided_at: float  # sampler clock

    @property
    def reason(self) -> str:
        return self.reasons[0]


_GRAY = np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma weights
# Half a grey level of the cell means: steps smaller than this are sensor noise in flat regions
# (belt, flange face), which would otherwise flip bits at random between two shots of one scene.
_DEAD_ZONE = 0.5


def dhash64(image: np.ndarray) -> int:
    """64-bit difference hash: 9x8 grayscale cells, one bit per horizontal neighbour comparison.

    The image is subsampled by striding (~60 rows) before the area resize, so the hash reads a few
    thousand pixels instead of the whole frame (~0.1 ms at 640x480 on the frame thread). Float
    arithmetic and a small dead zone keep flat regions from flipping bits under sensor noise.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 and (image.ndim != 3 or image.shape[2] != 3):
        raise ValueError(f"expected an HxWx3 BGR or HxW gray image, got shape {image.shape}")
    h, w = image.shape[:2]
    step = max(1, min(h, w) // 60)
    # A gray frame is its own luma: the same hash as its 3-equal-channel BGR copy (the weights sum to 1).
    sub = image[::step, ::step].astype(np.float32)
    gray = sub if image.ndim == 2 else sub @ _GRAY
    tiny = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    bits = tiny[:, 1:] > tiny[:, :-1] + _DEAD_ZONE
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


class SlidingWindows:
    """Exact sliding-window counters for one strategy's per-minute/hour/day limits."""

    def __init__(self, limits: RateLimitsConfig) -> None:
        self._spans: tuple[tuple[float, int, deque[float]], ...] = (
            (60.0, limits.per_minute, deque()),
            (3600.0, limits.per_hour, deque()),
            (86400.0, limits.per_day, deque()),
        )

    def has_room(self, now: float) -> bool:
        for span, cap, times in self._spans:
            while times and times[0] <= now - span:
                times.popleft()
            if len(times) >= cap:
                return False
        return True

    def take(self, now: float) -> None:
        for _, _, times in self._spans:
            times.append(now)


@dataclass(frozen=True, slots=True)
class _Strategy:
    reason: str
    cfg: StrategyConfig
    windows: SlidingWindows


class Sampler:
    """`consider(verdict)` -> SampleDecision or None. Call from one thread (the frame thread)."""

    def __init__(self, cfg: SamplingConfig, clock: Callable[[], float] = time.monotonic,
                 rng: Dice | None = None) -> None:
        # A monotonic default: the windows are durations, and an NTP step must not open or close them.
        self.cfg = cfg
        self._clock = clock
        self._rng: Dice = rng if rng is not None else random.Random(cfg.seed)
        self._uncertain = _Strategy(UNCERTAIN, cfg.uncertain, SlidingWindows(cfg.uncertain.limits))
        self._reject = _Strategy(REJECT, cfg.rejects, SlidingWindows(cfg.rejects.limits))
        self._pass = _Strategy(RANDOM_PASS, cfg.passes, SlidingWindows(cfg.passes.limits))
        self._classes = {name: _Strategy(CLASS_PREFIX + name, s, SlidingWindows(s.limits))
                         for name, s in cfg.per_class.items()}
        self._shadow = _Strategy(SHADOW_DISAGREE, cfg.shadow_disagree, SlidingWindows(cfg.shadow_disagree.limits))
        self._recent: deque[tuple[float, int, str | None]] = deque(maxlen=_MAX_RECENT)
        self._lock = threading.Lock()  # guards the counters read by state() from other threads
        self._considered = 0
        self._duplicates = 0
        self._sampled: Counter[str] = Counter()
        self._limited: Counter[str] = Counter()

    def _eligible(self, v: Verdict) -> list[_Strategy]:
        out = []
        if v.uncertain:
            out.append(self._uncertain)
        if v.outcome is Outcome.REJECT:
            out.append(self._reject)
        elif v.outcome is Outcome.PASS:
            out.append(self._pass)
        if self._classes:
            names = {d.class_name for d in v.defects} | {d.class_name for d in v.uncertain}
            out.extend(s for n, s in self._classes.items() if n in names)
        return out

    def consider(self, verdict: Verdict) -> SampleDecision | None:
        with self._lock:
            self._considered += 1
        return self._admit(verdict, self._eligible(verdict))

    def consider_shadow(self, verdict: Verdict) -> SampleDecision | None:
        """A frame the shadow model judged differently: kept per the shadow_disagree strategy (its dice
        and rate limits), deduplicated like any sample. The caller serialises it with `consider`."""
        return self._admit(verdict, [self._shadow])

    def _admit(self, verdict: Verdict, eligible: list[_Strategy]) -> SampleDecision | None:
        if not self.cfg.enabled:
            return None
        now = self._clock()
        admitted: list[_Strategy] = []
        for s in eligible:
            if not s.cfg.enabled:
                continue
            # Dice before windows: a frame the dice reject must not use up the strategy's quota.
            if s.cfg.rate < 1.0 and self._rng.random() >= s.cfg.rate:
                continue
            if not s.windows.has_room(now):
                with self._lock:
                    self._limited[s.reason] += 1
                continue
            admitted.append(s)
        if not admitted:
            return None
        h = 0
        if self.cfg.dedup_window_s > 0:
            h = dhash64(verdict.frame.image)
            part = verdict.frame.part_id
            if self._is_duplicate(h, part, now):
                with self._lock:
                    self._duplicates += 1
                return None
            self._recent.append((now, h, part))
        for s in admitted:
            s.windows.take(now)
        reasons = tuple(s.reason for s in admitted)
        with self._lock:
            self._sampled.update(reasons)
        return SampleDecision(reasons=reasons, dhash=h, decided_at=now)

    def _is_duplicate(self, h: int, part_id: str | None, now: float) -> bool:
        horizon = now - self.cfg.dedup_window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        limit = self.cfg.dedup_hamming
        return any((h ^ other).bit_count() <= limit and other_part == part_id
                   for _, other, other_part in self._recent)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "considered": self._considered,
                "sampled": dict(self._sampled),
                "rate_limited": dict(self._limited),
                "duplicates": self._duplicates,
            }
