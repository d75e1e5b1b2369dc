"""What the lifecycle needs of the pipeline: the model judging now, and a swap between two frames.

The service's pipeline (`service.pipeline.Pipeline`) is one; the lifecycle is handed it as a
`ModelSlot` and imports nothing from service/ (the layer above it, docs/architecture.md "Layers").
"""

from __future__ import annotations

from typing import Protocol

from inspector.frames import ModelInfo
from inspector.inference.judge import Judge, SwapResult


class ModelSlot(Protocol):
    @property
    def model(self) -> ModelInfo:
        """The model the next frame is handed to."""
        ...

    def swap(self, judge: Judge, timeout: float = 5.0) -> SwapResult:
        """Makes `judge` the model of every frame read from now on, between two frames; returns once
        installed. Frames in flight complete on the old judge (`result.old.runner.wait_idle()` before it
        is released). TimeoutError: not installed within `timeout` (nothing changed); RuntimeError:
        another swap is pending."""
        ...
