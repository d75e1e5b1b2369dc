"""The lifecycle holds the pipeline as a `ModelSlot` (lifecycle/swap.py) and imports nothing from
service/ (tests/test_layers.py); the service's Pipeline must keep being one."""

from __future__ import annotations

import inspect

from inspector.lifecycle.swap import ModelSlot
from inspector.service.pipeline import Pipeline


def test_the_pipeline_is_the_model_slot_the_lifecycle_swaps():
    assert isinstance(inspect.getattr_static(Pipeline, "model"), property)
    want, got = inspect.signature(ModelSlot.swap), inspect.signature(Pipeline.swap)
    assert list(got.parameters) == list(want.parameters)
    assert [p.default for p in got.parameters.values()] == [p.default for p in want.parameters.values()]
    assert got.return_annotation == want.return_annotation == "SwapResult"
