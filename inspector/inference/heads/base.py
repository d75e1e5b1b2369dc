"""What a task head is: the part of a model kind between the frame and its findings.

The runner (`inference.runner`) owns OpenVINO (compile, devices, threads, the request pool); a head
owns what depends on the kind of model: how a frame becomes the model's input tensor (`preprocessor`,
plus the conversions folded into the compiled model by `fold_input`), which IR outputs it can read
(`check_model`), and how the output becomes findings (`decode`). A head is built once per compiled
model and is immutable; its preprocessors keep per-thread buffers, so each thread asks for its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from inspector.frames import Findings

#: frame (uint8 HxWx3 BGR or HxW gray) and an optional reused input buffer -> (input tensor, what `decode`
#: needs to map the output back to the frame: a letterbox, or None).
Preprocess = Callable[..., tuple[np.ndarray, Any]]


@dataclass(frozen=True, slots=True)
class HeadSettings:
    """The decoding settings of the `model:` config section; each kind uses those that apply to it."""

    conf: float = 0.1  # findings scored below this are dropped in decoding (the decision's floor)
    iou: float = 0.7  # detect: NMS overlap
    max_det: int = 300  # detect: boxes kept after NMS


class Head(Protocol):
    task: ClassVar[str]  # the card's `task` this head decodes
    settings: HeadSettings

    def check_model(self, model: Any, where: Path) -> None:
        """Refuses (ModelError naming `where`) an IR whose outputs this head cannot decode."""
        ...

    def fold_input(self, model: Any) -> Any:
        """The model with the head's input conversion folded in (OpenVINO PrePostProcessor), taking the
        uint8 NHWC tensor the preprocessor makes."""
        ...

    def preprocessor(self) -> Preprocess:
        """A fresh frame -> tensor step with its own buffers (one per thread that submits). The tensor is
        (1, H, W, C) uint8 at the card's input size and channels: the runner's reused input buffer (`out`)
        and its warm-up tensor have that shape; anything else the model needs goes into `fold_input`."""
        ...

    def decode(self, output: np.ndarray, ctx: Any) -> Findings:
        """The model's first output for one frame -> findings in the frame's coordinates."""
        ...


class UltralyticsHead:
    """What the heads of Ultralytics IRs share: built from the bundle's classes, input size and channels, and
    the same folded input conversion (uint8 NHWC BGR or gray -> float NCHW, RGB for a 3-channel model, / 255).
    A kind adds its `task`, `check_model`, `preprocessor` and `decode`."""

    def __init__(self, classes: tuple[str, ...], input_hw: tuple[int, int], channels: int,
                 settings: HeadSettings) -> None:
        self.classes, self.input_hw, self.channels, self.settings = classes, input_hw, channels, settings

    @classmethod
    def for_bundle(cls, bundle: Any, settings: HeadSettings):
        return cls(bundle.classes, bundle.input_size, bundle.channels, settings)

    def fold_input(self, model: Any) -> Any:
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        ppp = PrePostProcessor(model)
        color = ColorFormat.BGR if self.channels == 3 else ColorFormat.GRAY
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(color)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if self.channels == 3:  # ultralytics models take RGB; a 1-channel model takes the gray level as is
            steps.convert_color(ColorFormat.RGB)
        steps.scale(255.0)
        return ppp.build()


def check_image(image: Any) -> None:
    """A frame must be uint8 BGR (HxWx3) or grayscale (HxW or HxWx1), at least 8x8; anything else is
    refused here, not deep in OpenVINO."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(image).__name__}")
    if (image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3))
            or min(image.shape[:2]) < 8):
        raise ValueError(f"frame must be HxWx3 (BGR) or HxW / HxWx1 (gray) uint8, at least 8x8, got shape "
                         f"{image.shape} dtype {image.dtype}")
