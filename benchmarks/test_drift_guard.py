"""Cost of the input drift guard per frame (issue 14's budget: <= 0.3 ms at 1280x720).

Run: `.venv/bin/python -m pytest benchmarks/test_drift_guard.py --benchmark-only`. The frames are
the synthetic line rendered at 1280x720 (as the bench's 720p rows); the envelope is a wide one, so
every statistic is computed and compared (the cost does not depend on the verdict).
"""

import numpy as np
import pytest

from inspector.bundle.envelope import STAT_NAMES, ConfidenceReference, Envelope
from inspector.inference.drift_guard import DriftGuard, frame_stats
from inspector.sources.conveyor import ConveyorGenerator


@pytest.fixture(scope="module")
def frames_720p():
    gen = ConveyorGenerator(2468, 1280, 720)
    return [gen.part(i).image for i in range(8)]


@pytest.fixture
def guard():
    env = Envelope({n: (-1e9, 1e9) for n in STAT_NAMES},
                   confidence=ConfidenceReference.from_scores(np.linspace(0, 1, 100)))
    return DriftGuard(env)


@pytest.mark.benchmark(group="drift-guard")
def test_frame_stats_720p(benchmark, frames_720p):
    it = iter(range(10**9))
    benchmark(lambda: frame_stats(frames_720p[next(it) % len(frames_720p)]))


@pytest.mark.benchmark(group="drift-guard")
def test_frame_stats_720p_roi(benchmark, frames_720p):
    it = iter(range(10**9))
    benchmark(lambda: frame_stats(frames_720p[next(it) % len(frames_720p)], (203, 60, 1077, 660)))


@pytest.mark.benchmark(group="drift-guard")
def test_guard_update_only(benchmark, guard, frames_720p):
    stats = [frame_stats(f) for f in frames_720p]
    it = iter(range(10**9))
    benchmark(lambda: guard.update(stats[next(it) % len(stats)], 0.5))


@pytest.mark.benchmark(group="drift-guard")
def test_guard_per_frame_720p(benchmark, guard, frames_720p):
    """What the line pays per frame: the statistics plus the windowed comparison and the PSI."""
    it = iter(range(10**9))

    def one():
        i = next(it)
        return guard.update(frame_stats(frames_720p[i % len(frames_720p)]), (i % 10) / 10)

    state = benchmark(one)
    assert not state.in_drift
