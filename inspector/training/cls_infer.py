"""A classifier IR run directly with OpenVINO, for the offline tools (quantize, model build, eval); the input
preparation is the runtime classify head's (`inspector.inference.heads.classify.prepare`: one preprocessing for
the line and the tools), the one the card records (`input`).

Ultralytics classification validates (and its exported IR expects) `classify_transforms`: the image as RGB,
its shorter side resized to the input size, centre-cropped to input_size, scaled to [0, 1]; the IR's output
is the softmax over the classes in the dataset's sorted class order. Measured on ELPV (300 -> 224 px, the
run's epoch-2 best.pt exported to an FP32 IR): top-1 on the 394 val images 0.7640 here, 0.764 in
Ultralytics' own validation of the same weights.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inspector.inference.heads.classify import prepare

INPUT_NOTE = ("BGR or gray uint8 image; shorter side resized to input_size (area), centre crop to input_size, RGB, "
              "scaled to [0, 1], NCHW float (Ultralytics classify_transforms); output: softmax per class")

__all__ = ["INPUT_NOTE", "ClsIR", "prepare"]


class ClsIR:
    """An FP32 or INT8 classifier IR compiled for the CPU (f32 inference precision, as the runtime runs)."""

    def __init__(self, xml: Path | str):
        import openvino as ov

        core = ov.Core()
        self.model = core.read_model(str(xml))
        ps = self.model.input(0).get_partial_shape()
        self.channels = int(ps[1].get_length())
        self.hw = (int(ps[2].get_length()), int(ps[3].get_length()))
        self.n_out = int(self.model.output(0).get_partial_shape()[-1].get_length())
        self.compiled = core.compile_model(self.model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def probs(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(prepare(img, self.hw, self.channels))[0])[0].astype(np.float64)

    def probs_of(self, files: list[Path]) -> np.ndarray:
        out = np.zeros((len(files), self.n_out))
        for i, f in enumerate(files):
            img = cv2.imread(str(f))  # as Ultralytics reads them: 8-bit BGR (gray as 3 equal channels)
            if img is None:
                raise ValueError(f"{f}: not a readable image")
            out[i] = self.probs(img)
        return out
