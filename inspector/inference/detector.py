"""The detect kind ready to run: a `Runner` with the `detect` head (YOLOv8 boxes), built from the
detection settings (conf, iou, max_det), with `detect()` for tools and tests that want boxes.

The service builds its model through the head registry (`runner.open_runner`: the card's `task`
picks the head); training tools, benchmarks and tests that know they hold a detection model use this.
The OpenVINO side is `inference.runner`, the letterbox / decode / NMS `inference.heads.detect`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inspector.frames import Detections
from inspector.inference.heads.base import HeadSettings
from inspector.inference.heads.detect import DetectHead
from inspector.inference.runner import Runner

if TYPE_CHECKING:
    from inspector.bundle.load import ModelBundle


class Detector(Runner):
    """A runner whose head is `DetectHead` with conf/iou/max_det fixed at build."""

    head: DetectHead

    def __init__(self, bundle: ModelBundle, *, conf: float = 0.1, iou: float = 0.7, max_det: int = 300,
                 **runner) -> None:
        super().__init__(bundle, DetectHead.for_bundle(bundle, HeadSettings(conf=conf, iou=iou, max_det=max_det)),
                         **runner)

    @property
    def conf(self) -> float:
        return self.head.settings.conf

    @property
    def iou(self) -> float:
        return self.head.settings.iou

    @property
    def max_det(self) -> int:
        return self.head.settings.max_det

    def detect(self, image: np.ndarray, conf: float | None = None) -> Detections:
        """Boxes of one frame, on the calling thread; `conf` overrides the head's cut for this call."""
        tensor, lb = self.preprocess(image)
        return self.head.decode(self.infer(tensor), lb, conf)


def open_detector(model_cfg, bundle: ModelBundle, conf: float) -> Detector:
    """Builds the detector the `model:` config section describes, on a bundle already loaded (and
    hash-checked) by `load_bundle`: the service reads and checks the weights once."""
    return Detector(
        bundle,
        device=model_cfg.device,
        threads=model_cfg.threads,
        cache_dir=model_cfg.cache_dir,
        conf=conf,
        iou=model_cfg.iou,
        max_det=model_cfg.max_detections,
        hint=model_cfg.hint,
        async_requests=model_cfg.requests,
        inference_precision=model_cfg.inference_precision,
        expect_classes=model_cfg.classes,
        expect_input=tuple(model_cfg.input_size) if model_cfg.input_size else None,
    )
