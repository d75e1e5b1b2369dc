"""Second bundles for the lifecycle tests, made from models/demo without training: the same INT8 IR
under a new version in its card (sha256s recomputed), optionally with other thresholds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from inspector.bundle.hashing import sha256_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"


def make_bundle(dst: Path, version: str, *, thresholds: dict[str, float] | None = None, name: str = "demo",
                fp32: bool = False) -> Path:
    """A bundle folder at `dst`: models/demo's INT8 IR (and FP32 with fp32=True) under `name@version`."""
    card = json.loads((DEMO / "model_card.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    files = {}
    for precision, entry in card["files"].items():
        if precision == "fp32" and not fp32:
            continue
        for kind in ("xml", "bin"):
            shutil.copyfile(DEMO / entry[kind], dst / entry[kind])
        files[precision] = {**entry, "xml_sha256": sha256_file(dst / entry["xml"]),
                            "bin_sha256": sha256_file(dst / entry["bin"])}
    card.update(name=name, version=version, files=files)
    if thresholds is not None:
        card["thresholds"] = {**card["thresholds"], **thresholds}
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    return dst


def reject_everything(dst: Path, version: str) -> Path:
    """A candidate that rejects every part: models/demo's INT8 IR with a constant added to the class
    scores of its first 8 anchors (graph surgery with OpenVINO's opset, no training), so every frame
    has defects of confidence >= 0.6; the card (version, sha256s) is rewritten to match."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    make_bundle(dst, version)
    card = json.loads((dst / "model_card.json").read_text())
    entry = card["files"]["int8"]
    model = ov.Core().read_model(DEMO / entry["xml"])
    out = model.get_results()[0].input_value(0)  # the head's output, before its Result node
    channels, anchors = (int(d.get_length()) for d in out.get_partial_shape()[1:])
    bias = np.zeros((1, channels, anchors), np.float32)
    bias[0, 4, :8] = 0.6  # class 0 on 8 anchors: a handful of boxes, cheap NMS
    forced = ops.add(out, ops.constant(bias))
    new = ov.Model([ops.result(forced)], model.get_parameters(), "reject_everything")
    labels = model.get_rt_info(["model_info", "labels"])
    new.set_rt_info(labels.astype(str), ["model_info", "labels"])
    ov.save_model(new, dst / entry["xml"], compress_to_fp16=False)
    entry.update(xml_sha256=sha256_file(dst / entry["xml"]), bin_sha256=sha256_file(dst / entry["bin"]))
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    return dst
