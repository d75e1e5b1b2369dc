"""The full pipeline, per frame: source thread -> letterbox -> async infer -> NMS -> decision.

Each round pushes a batch of frames back to back through a fresh Pipeline on the shared,
compiled detector; `extra_info.per_frame_ms` is the batch time divided by its frames.
"""

import pytest

from inspector.config import DecisionConfig
from inspector.devtools.bench import ReplaySource, _Collect
from inspector.inference.decision import DecisionPolicy
from inspector.service.pipeline import Pipeline

BATCH = 40


@pytest.mark.benchmark(group="pipeline")
def test_pipeline_per_frame(benchmark, detector, frames, bundle):
    policy = DecisionPolicy.build(DecisionConfig(budget_ms=10_000), bundle.classes, bundle.thresholds)

    def batch():
        sink = _Collect()
        src = ReplaySource(frames, rate=10_000.0, n=BATCH)
        p = Pipeline(src, detector, policy, [sink])
        p.start()
        src.start()
        assert p.done.wait(60)
        p.stop()
        assert len(sink.verdicts) == BATCH

    benchmark.pedantic(batch, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["per_frame_ms"] = round(benchmark.stats.stats.median / BATCH * 1e3, 3)
