"""`inspector quantize`: any ultralytics .pt, ONNX or OpenVINO IR -> INT8 OpenVINO IR with NNCF.

Calibration images go through the runtime's own letterbox, so INT8 ranges are measured on
exactly what the line feeds the model. The detection head (sigmoid + DFL decode) stays in
float, as ultralytics does: quantizing box decoding costs localisation accuracy (mAP50-95) for
almost no speed. With `--max-drop`, NNCF's accuracy control reverts the most harmful layers to
float until the mAP50-95 drop on the validation set is within bounds (mAP50-95, not mAP50:
localisation is what INT8 loses first, and what the model card's FP32-vs-INT8 row tracks).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from inspector.errors import ModelError
from inspector.inference.detector import Preprocessor
from inspector.training import offline

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def load_float_model(src: Path, imgsz: int):
    """Reads the source model as an OpenVINO model (exporting/converting when needed)."""
    import openvino as ov

    src = Path(src)
    if not src.exists():
        raise ModelError(f"model {src} does not exist")
    if src.suffix == ".xml":
        return ov.Core().read_model(src)
    if src.suffix == ".onnx":
        return ov.convert_model(src)
    if src.suffix == ".pt":
        from inspector.training.train import export_ir

        xml = export_ir(src, src.parent / f"{src.stem}_fp32_ir", imgsz)
        return ov.Core().read_model(xml)
    raise ModelError(f"{src}: expected a .pt, .onnx or .xml model")


def calibration_folder(calibration: str | None, data: str | None) -> Path:
    """--calibration wins; else the train split of --data (the images the model learnt from)."""
    if calibration:
        return Path(calibration)
    if not data:
        raise ModelError("quantize needs --data (calibrates on its train split) or --calibration FOLDER")
    import yaml

    d = yaml.safe_load(Path(data).read_text()) or {}
    if "train" not in d:
        raise ModelError(f"{data}: no train split to calibrate on")
    # No `path:` (what `dataset import` writes): relative to the yaml's folder, taken once (it joined the
    # folder twice for a relative --data: ds/ds/images/train).
    root = Path(d["path"]) if d.get("path") else Path(".")
    return (root if root.is_absolute() else Path(data).parent / root) / d["train"]


def calibration_tensors(folder: Path, input_hw: tuple[int, int], limit: int, channels: int = 3) -> list[np.ndarray]:
    import cv2

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelError(f"no calibration images (jpg/png/bmp) under {folder}; make them with "
                         f"`inspector synth --out {folder} --n 300 --seed 3003`")
    pre = Preprocessor(input_hw, channels)  # a 1-channel model: the runtime's own BGR -> luma
    out = []
    for f in files[:limit]:
        img = cv2.imread(str(f))
        if img is None:
            log.warning("calibration image %s unreadable, skipped", f)
            continue
        out.append(to_float_nchw(pre(img)[0]))
    return out


def to_float_nchw(u8_nhwc: np.ndarray) -> np.ndarray:
    """What the float IR expects: RGB (or gray), [0, 1], NCHW (the runtime folds this into the graph)."""
    return np.ascontiguousarray(u8_nhwc[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def head_ignored_scope(model, head_convs: str = "last"):
    """Ops kept in float. Always the YOLO head's box decoding and sigmoid (as ultralytics' export
    does); with `head_convs`, also the head's conv branches (`<head>.cv2/cv3`) that regress the
    box distributions: quantizing those cost 3.8 points of mAP50-95 on the demo model (localisation),
    keeping them costs little speed (measured in benchmarks/README.md)."""
    import nncf

    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return None
    head = sigmoids[-1].split("/", 1)[0]
    prefixes = (f"{head}/", f"{head}.dfl")
    if head_convs == "all":
        prefixes += (f"{head}.cv2", f"{head}.cv3")
    elif head_convs == "last":  # only the 1x1 output convs: <head>.cv2.<i>.2 and <head>.cv3.<i>.2
        prefixes += tuple(f"{head}.{b}.{i}.2/" for b in ("cv2", "cv3") for i in range(3))
    names = [op.get_friendly_name() for op in ops
             if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith(prefixes)]
    return nncf.IgnoredScope(names=names, validate=False)


def quantize(src: Path, calibration: Path, out: Path, imgsz: int = 320, max_drop: float | None = None,
             val_data: Path | None = None, subset_size: int = 300, head_convs_float: str = "last",
             fast_bias_correction: bool = True) -> Path:
    offline.prepare(Path(out).parent)
    import nncf
    import openvino as ov

    model = load_float_model(src, imgsz)
    ps = model.input(0).get_partial_shape()
    hw = (int(ps[2].get_length()), int(ps[3].get_length()))
    channels = int(ps[1].get_length())
    calib = calibration_tensors(calibration, hw, subset_size, channels)
    log.info("calibrating on %d images from %s", len(calib), calibration)
    dataset = nncf.Dataset(calib)
    common = dict(preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib),
                  fast_bias_correction=fast_bias_correction, ignored_scope=head_ignored_scope(model, head_convs_float))
    if max_drop is None:
        q = nncf.quantize(model, dataset, **common)
    else:
        if val_data is None:
            raise ModelError("--max-drop needs --val-data or --data (a data.yaml whose val split measures mAP50-95)")
        q = _quantize_with_accuracy_control(model, dataset, val_data, hw, max_drop, common, channels)
    _copy_rt_info(model, q)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, out, compress_to_fp16=False)
    # How this INT8 IR was made, for the model card: which ops stayed float is what decides
    # both its accuracy and its speed.
    float_convs = sorted(op.get_friendly_name() for op in ov.Core().read_model(out).get_ordered_ops()
                         if op.get_type_name() == "Convolution" and not _weights_quantized(op))
    info = {"tool": "nncf", "nncf": nncf.__version__, "preset": "mixed", "calibration_images": len(calib),
            "fast_bias_correction": fast_bias_correction, "head_convs_float": head_convs_float,
            "accuracy_control": (None if max_drop is None
                                 else {"max_drop_mAP50-95": max_drop, "val_data": str(val_data)}),
            "float_convolutions": float_convs}
    out.with_name("quantization.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _quantize_with_accuracy_control(model, dataset, val_data: Path, hw, max_drop: float, common: dict,
                                    channels: int = 3):
    import nncf

    from inspector.inference.detector import postprocess
    from inspector.training.evaluate import yolo_samples
    from inspector.training.metrics import ImageResult, average_precision

    pre = Preprocessor(hw, channels)
    items = []
    for s in yolo_samples(val_data):
        tensor, lb = pre(s.image)
        items.append((to_float_nchw(tensor), lb, s.gt_boxes, s.gt_cls))
    nc = int(model.output(0).get_partial_shape()[1].get_length()) - 4

    def validate(compiled, data) -> float:
        results = []
        for x, lb, gb, gc in data:
            raw = compiled(x)[0]
            d = postprocess(np.asarray(raw), lb, 0.001, 0.7)
            results.append(ImageResult(gb, gc, d.xyxy, d.confidence, d.class_id))
        ap, n_gt = average_precision(results, nc)
        return float(ap[n_gt > 0].mean())  # mAP50-95

    val = nncf.Dataset(items, lambda item: item[0])
    return nncf.quantize_with_accuracy_control(
        model, calibration_dataset=dataset, validation_dataset=val, validation_fn=validate,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **common)


def _weights_quantized(conv) -> bool:
    """Whether a convolution runs in INT8: its weights pass through a FakeQuantize (the model as
    NNCF returns it) or are stored as 8-bit constants behind Convert/scale (as saved)."""
    node = conv.input(1).get_source_output().get_node()
    for _ in range(5):
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8")
        if node.get_input_size() == 0:
            return False
        node = node.input(0).get_source_output().get_node()
    return False


def _copy_rt_info(src, dst) -> None:
    # The runtime checks labels and input layout from rt_info: keep ultralytics' model_info.
    for key in ("model_type", "labels", "reverse_input_channels", "pad_value", "scale_values", "iou_threshold",
                "resize_type"):
        try:
            dst.set_rt_info(src.get_rt_info(["model_info", key]).astype(str), ["model_info", key])
        except RuntimeError:
            pass
