"""The sampling policy as tables: which strategy keeps which verdict, per-strategy rate limits on an
injected clock, and near-duplicate suppression on real synthetic conveyor frames."""

from __future__ import annotations

import random

import numpy as np
import pytest

from inspector.config import RateLimitsConfig, SamplingConfig, StrategyConfig
from inspector.devtools.testing import blank_image, make_defect, make_verdict
from inspector.frames import Frame
from inspector.review.sampler import Sampler, dhash64
from inspector.sources.conveyor import ConveyorGenerator


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


HIGH = RateLimitsConfig(per_minute=100_000, per_hour=1_000_000, per_day=10_000_000)
OFF = StrategyConfig(enabled=False)


def on(rate: float = 1.0, limits: RateLimitsConfig = HIGH) -> StrategyConfig:
    return StrategyConfig(rate=rate, limits=limits)


def cfg(**kw) -> SamplingConfig:
    base = dict(uncertain=OFF, rejects=OFF, passes=OFF, dedup_window_s=0.0, seed=1)
    return SamplingConfig(**{**base, **kw})


U = (make_defect("pit", 0.42),)
D_SCRATCH = (make_defect("scratch", 0.91),)
D_CRACK = (make_defect("crack", 0.88),)


@pytest.mark.parametrize(
    "config, outcome, defects, uncertain, expected",
    [
        (SamplingConfig(enabled=False), "REJECT", D_SCRATCH, U, None),  # empty: sampling off
        (cfg(), "REJECT", D_SCRATCH, U, None),  # every strategy off
        (cfg(uncertain=on()), "PASS", (), (), None),
        (cfg(uncertain=on()), "PASS", (), U, ("uncertain",)),
        (cfg(rejects=on()), "PASS", (), U, None),
        (cfg(rejects=on()), "REJECT", D_SCRATCH, (), ("reject",)),
        (cfg(uncertain=on(), rejects=on()), "REJECT", D_SCRATCH, U, ("uncertain", "reject")),
        (cfg(passes=on()), "PASS", (), (), ("random_pass",)),
        (cfg(passes=on()), "REJECT", D_SCRATCH, (), None),
        (cfg(passes=on(), rejects=on()), "LATE", (), (), None),  # LATE is neither a pass nor a reject
        (cfg(per_class={"crack": on()}), "REJECT", D_SCRATCH, (), None),
        (cfg(per_class={"crack": on()}), "REJECT", D_CRACK, (), ("class:crack",)),
        (cfg(per_class={"pit": on()}), "PASS", (), U, ("class:pit",)),  # uncertain detections count too
        (cfg(rejects=on(rate=0.0)), "REJECT", D_SCRATCH, (), None),
        (cfg(rejects=on(limits=RateLimitsConfig(per_minute=0))), "REJECT", D_SCRATCH, (), None),
    ],
)
def test_which_strategy_keeps_a_verdict(config, outcome, defects, uncertain, expected):
    v = make_verdict(outcome=outcome, defects=defects, uncertain=uncertain)
    d = Sampler(config, clock=FakeClock()).consider(v)
    got = None if d is None else d.reasons
    assert got == expected, f"expected reasons {expected}, got {got}"


def max_in_window(times: list[float], span: float) -> int:
    """Most events in any half-open window (t - span, t]."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize(
    "limits, period_s, duration_s, expected_kept",
    [
        (RateLimitsConfig(per_minute=0, per_hour=0, per_day=0), 1.0, 600, 0),
        (RateLimitsConfig(per_minute=5, per_hour=1000, per_day=10_000), 1.0, 300, 25),
        (RateLimitsConfig(per_minute=100, per_hour=10, per_day=10_000), 10.0, 7200, 20),
        (RateLimitsConfig(per_minute=100, per_hour=1000, per_day=3), 600.0, 2 * 86400, 6),
    ],
)
@pytest.mark.parametrize("strategy", ["uncertain", "rejects", "passes"])
def test_rate_limits_hold_per_strategy(strategy, limits, period_s, duration_s, expected_kept):
    clock = FakeClock(0.0)
    sampler = Sampler(cfg(**{strategy: on(limits=limits)}), clock=clock)
    outcome = "PASS" if strategy != "rejects" else "REJECT"
    unc = U if strategy == "uncertain" else ()
    v = make_verdict(outcome=outcome, defects=D_SCRATCH if outcome == "REJECT" else (), uncertain=unc)
    kept = []
    for i in range(int(duration_s / period_s)):
        clock.t = i * period_s
        if sampler.consider(v) is not None:
            kept.append(clock.t)
    assert len(kept) == expected_kept, f"expected {expected_kept} samples, got {len(kept)}"
    for span, cap in ((60, limits.per_minute), (3600, limits.per_hour), (86400, limits.per_day)):
        got = max_in_window(kept, span) if kept else 0
        assert got <= cap, f"expected at most {cap} samples in any {span} s, got {got}"


def test_strategies_are_limited_independently():
    # Every frame is an uncertain reject: the uncertain cap (2/min) must not starve the reject
    # strategy (10/min), and no reason may exceed its own cap.
    clock = FakeClock(0.0)
    sampler = Sampler(cfg(uncertain=on(limits=RateLimitsConfig(per_minute=2)),
                          rejects=on(limits=RateLimitsConfig(per_minute=10))), clock=clock)
    v = make_verdict(outcome="REJECT", defects=D_SCRATCH, uncertain=U)
    by_reason: dict[str, list[float]] = {"uncertain": [], "reject": []}
    for i in range(600):  # 10 minutes at 1 frame/s
        clock.t = float(i)
        d = sampler.consider(v)
        for r in d.reasons if d else ():
            by_reason[r].append(clock.t)
    assert max_in_window(by_reason["uncertain"], 60) == 2
    assert max_in_window(by_reason["reject"], 60) == 10
    assert len(by_reason["reject"]) == 100 and len(by_reason["uncertain"]) == 20
    assert sampler.state()["rate_limited"]["uncertain"] > 0


def test_rate_dice_are_seeded_and_near_the_rate():
    v = make_verdict(outcome="REJECT", defects=D_SCRATCH)
    runs = []
    for _ in range(2):
        s = Sampler(cfg(rejects=on(rate=0.2)), clock=FakeClock(), rng=random.Random(42))
        runs.append([s.consider(v) is not None for _ in range(2000)])
    assert runs[0] == runs[1], "expected the same choices from the same seed"
    assert 300 <= sum(runs[0]) <= 500, f"expected ~400 of 2000 at rate 0.2, got {sum(runs[0])}"


@pytest.fixture(scope="module")
def parts() -> list[np.ndarray]:
    """Four conveyor frames of distinct scenes: the first parts of seed 11 whose hashes differ by
    more than twice the default limit, so the table below tests the policy, not the hash's luck."""
    g = ConveyorGenerator(11)
    chosen: list[np.ndarray] = []
    for i in range(40):
        img = g.part(i).image
        if all((dhash64(img) ^ dhash64(c)).bit_count() > 12 for c in chosen):
            chosen.append(img)
        if len(chosen) == 4:
            return chosen
    raise AssertionError("expected 4 well-separated scenes among 40 parts")


def jitter(img: np.ndarray, seed: int) -> np.ndarray:
    """The same scene a moment later: sensor noise of a few grey levels."""
    noise = np.random.default_rng(seed).integers(-3, 4, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def free_run(image: np.ndarray, part_id: str | None = None) -> Frame:
    """A frame as a free-running camera sends it (no part id), or one triggered part."""
    return Frame(frame_id=0, image=image, captured_at=0.0, captured_wall=0.0, part_id=part_id, source="test")


@pytest.mark.parametrize(
    "window_s, hamming, frames, expected_kept",
    [
        (0.0, 6, [(0, "a"), (1, "a")], 2),  # empty: dedup off keeps both
        (10.0, 6, [(0, "a"), (1, "a")], 1),  # the same frame again
        (10.0, 6, [(0, "a"), (1, "a~")], 1),  # the same scene with sensor noise
        (10.0, 6, [(0, "a"), (11, "a")], 2),  # outside the window
        (10.0, 6, [(0, "a"), (1, "b"), (2, "c"), (3, "d")], 4),  # different scenes
        (10.0, 0, [(0, "a"), (1, "a")], 1),  # exact duplicates even at distance 0
        (10.0, 6, [(0, "a"), (1, "a"), (2, "b"), (3, "a~"), (4, "b")], 2),
        (10.0, 6, [(0, "a@P1"), (1, "a@P2"), (2, "a~@P3")], 3),  # triggered: every part is new
        (10.0, 6, [(0, "a@P1"), (1, "a~@P1")], 1),  # the same part triggered twice
        (10.0, 6, [(0, "a"), (1, "a@P1")], 2),  # a part is not a duplicate of the free-run scene
    ],
)
def test_near_duplicates_are_suppressed(parts, window_s, hamming, frames, expected_kept):
    images = {k: parts[i] for i, k in enumerate("abcd")}
    images["a~"] = jitter(parts[0], 5)
    clock = FakeClock(0.0)
    sampler = Sampler(cfg(passes=on(), dedup_window_s=window_s, dedup_hamming=hamming), clock=clock)
    kept = 0
    for t, key in frames:
        clock.t = float(t)
        scene, _, part = key.partition("@")
        kept += sampler.consider(make_verdict(free_run(images[scene], part or None))) is not None
    assert kept == expected_kept, f"expected {expected_kept} kept of {[k for _, k in frames]}, got {kept}"
    assert sampler.state()["duplicates"] == len(frames) - kept


def test_a_suppressed_duplicate_uses_no_quota(parts):
    clock = FakeClock(0.0)
    sampler = Sampler(cfg(passes=on(limits=RateLimitsConfig(per_minute=2)), dedup_window_s=30), clock=clock)
    got = []
    for t, img in enumerate([parts[0], parts[0], parts[0], parts[1]]):
        clock.t = float(t)
        got.append(sampler.consider(make_verdict(free_run(img))) is not None)
    assert got == [True, False, False, True]


def test_dhash_separates_parts_and_ignores_noise():
    g = ConveyorGenerator(11)
    images = [g.part(i).image for i in range(20)]
    hashes = [dhash64(p) for p in images]
    assert all(0 <= h < 2**64 for h in hashes)
    for i, img in enumerate(images):
        assert (dhash64(jitter(img, i)) ^ hashes[i]).bit_count() <= 6, f"part {i}: noise moved the hash"
    # Distinct parts of one type at similar poses may come close (hence part ids in triggered
    # mode); most pairs must still be far apart for free-run dedup to mean anything.
    dist = [(hashes[i] ^ hashes[j]).bit_count() for i in range(20) for j in range(i + 1, 20)]
    far = sum(d > 6 for d in dist) / len(dist)
    assert far >= 0.95, f"expected >= 95% of part pairs more than 6 bits apart, got {far:.1%}"
    assert dhash64(blank_image()) == 0  # a flat image has no gradients
