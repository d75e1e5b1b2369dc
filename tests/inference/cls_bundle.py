"""A small image classifier bundle for the classify kind's runtime tests, made with OpenVINO's opset (no
training, seconds): a real IR that OpenVINO compiles and runs through the classify head, whose answer is
known in closed form, so a test can compute what the line must decide.

The network: the mean of the image (the head's RGB in [0, 1], averaged over pixels and channels) = g;
logits (ng, ok) = (-a (g - 0.5), a (g - 0.5)); softmax. So p(ok) = sigmoid(2 a (g - 0.5)): a bright
part is OK, a dark one NG, and `p_ng(gray)` says how sure for a uniform gray level. Classes in the order
Ultralytics gives them (sorted: `ng`, `ok`), `ok` the pass class; the same IR is the bundle's INT8 and
FP32 file (what the tests check is the runtime, not quantization)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from inspector.bundle.hashing import sha256_file

CLASSES = ["ng", "ok"]


def p_ng(gray: int, a: float = 10.0) -> float:
    """p(ng) the bundle gives a uniform image of this gray level (0-255)."""
    g = gray / 255.0
    return 1.0 / (1.0 + math.exp(2 * a * (g - 0.5)))


def make_cls_bundle(dst: Path, version: str = "1.0.0", *, a: float = 10.0, name: str = "demo-cls",
                    input_hw: tuple[int, int] = (32, 32), threshold: float = 0.5) -> Path:
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, *input_hw], np.float32, name="images")
    g = ops.reduce_mean(x, np.array([2, 3], np.int64), keep_dims=False)  # (1, 3)
    w = np.tile(np.array([[-a, a]], np.float32) / 3.0, (3, 1))  # (3, 2): the mean over channels, scaled
    logits = ops.add(ops.matmul(g, ops.constant(w), False, False), ops.constant(np.array([[a / 2, -a / 2]],
                                                                                        np.float32)))
    model = ov.Model([ops.result(ops.softmax(logits, 1))], [x], name)
    model.set_rt_info(" ".join(CLASSES), ["model_info", "labels"])
    dst.mkdir(parents=True, exist_ok=True)
    files = {}
    for precision in ("int8", "fp32"):
        xml = dst / f"model_{precision}.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        files[precision] = {"xml": xml.name, "bin": xml.with_suffix(".bin").name, "xml_sha256": sha256_file(xml),
                            "bin_sha256": sha256_file(xml.with_suffix(".bin"))}
    card = {"name": name, "version": version, "task": "classify", "classes": CLASSES, "pass_class": "ok",
            "input_size": list(input_hw), "input_channels": 3, "thresholds": {"ng": threshold, "ok": 1.0},
            "files": files}
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    return dst
