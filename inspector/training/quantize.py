"""`inspector quantize`: any ultralytics .pt, ONNX or OpenVINO IR -> INT8 OpenVINO IR with NNCF.

Calibration images go through the runtime's own letterbox, so INT8 ranges are measured on
exactly what the line feeds the model. The detection head (sigmoid + DFL decode) stays in
float, as ultralytics does: quantizing box decoding costs localisation accuracy (mAP50-95) for
almost no speed. With `--max-drop`, NNCF's accuracy control reverts the most harmful layers to
float until the mAP50-95 drop on the validation set is within bounds (mAP50-95, not mAP50:
localisation is what INT8 loses first, and what the model card's FP32-vs-INT8 row tracks).
Reading the float model and its input, and writing the INT8 IR with what the card records of it
(quantization.json: the settings and the convolutions left in float) are here once for every model kind;
a classifier's calibration images and its top-1 accuracy control are quantize_classify.py's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from inspector.errors import ModelError
from inspector.inference.heads.detect import Preprocessor
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


def head_ignored_scope(model, head_convs: str = "last", keep_float: tuple[str, ...] = ()):
    """Ops kept in float. Always the YOLO head's box decoding and sigmoid (as ultralytics' export
    does); with `head_convs`, also the head's conv branches (`<head>.cv2/cv3`) that regress the
    box distributions: quantizing those cost 3.8 points of mAP50-95 on the demo model (localisation),
    keeping them costs little speed (measured in benchmarks/README.md). `keep_float`: more ops kept in
    float, by friendly-name prefix (e.g. the layers an accuracy-control run ranked most sensitive); a
    prefix that names no op is an error."""
    import nncf

    ops = model.get_ordered_ops()
    extra = [op.get_friendly_name() for op in ops if keep_float and op.get_friendly_name().startswith(keep_float)]
    missing = [p for p in keep_float if not any(n.startswith(p) for n in extra)]
    if missing:
        raise ModelError(f"--keep-float {missing}: no op of the model has a name starting so (names look like "
                         "'__module.model.16.conv/aten::_convolution/Convolution'; quantization.json lists them)")
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return nncf.IgnoredScope(names=extra, validate=False) if extra else None
    head = sigmoids[-1].split("/", 1)[0]
    prefixes = (f"{head}/", f"{head}.dfl")
    if head_convs == "all":
        prefixes += (f"{head}.cv2", f"{head}.cv3")
    elif head_convs == "last":  # only the 1x1 output convs: <head>.cv2.<i>.2 and <head>.cv3.<i>.2
        prefixes += tuple(f"{head}.{b}.{i}.2/" for b in ("cv2", "cv3") for i in range(3))
    names = [op.get_friendly_name() for op in ops
             if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith(prefixes)]
    return nncf.IgnoredScope(names=sorted(set(names + extra)), validate=False)


PRESETS = ("mixed", "performance")
OVERFLOW_FIX = ("first_layer", "enable", "disable")


def quantize(src: Path, calibration: Path, out: Path, imgsz: int = 320, max_drop: float | None = None,
             val_data: Path | None = None, subset_size: int = 300, head_convs_float: str = "last",
             fast_bias_correction: bool = True, preset: str = "mixed", overflow_fix: str = "first_layer",
             max_float_groups: int | None = None, ranking_subset: int | None = None,
             keep_float: tuple[str, ...] = ()) -> Path:
    """`preset`: NNCF's activation quantization (mixed: asymmetric activations, performance: symmetric).
    `overflow_fix`: 7-bit weights where CPUs without VNNI (AVX2, AVX-512 without VNNI) could saturate
    their 16-bit pairwise sums: NNCF's default does it for the first layer only. `max_float_groups`:
    with `max_drop`, accuracy control reverts at most this many groups of layers (its most sensitive
    first, by NNCF's per-layer ranking on `ranking_subset` validation images) even if the drop stays
    above `max_drop`: a cap on what the speed may cost."""
    if preset not in PRESETS:
        raise ModelError(f"quantize preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if overflow_fix not in OVERFLOW_FIX:
        raise ModelError(f"quantize overflow fix {overflow_fix!r}: expected one of {', '.join(OVERFLOW_FIX)}")
    if max_float_groups is not None and (max_drop is None or max_float_groups < 1):
        raise ModelError(f"--max-float-groups {max_float_groups}: needs --max-drop (accuracy control) and "
                         "at least 1 group")
    offline.prepare(Path(out).parent)
    import nncf

    model = load_float_model(src, imgsz)
    hw, channels = input_shape(model)
    calib = calibration_tensors(calibration, hw, subset_size, channels)
    log.info("calibrating on %d images from %s", len(calib), calibration)
    dataset = nncf.Dataset(calib)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = {"first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE,
           "disable": OverflowFix.DISABLE}[overflow_fix]
    common = dict(preset=nncf.QuantizationPreset(preset), subset_size=len(calib),
                  fast_bias_correction=fast_bias_correction,
                  ignored_scope=head_ignored_scope(model, head_convs_float, tuple(keep_float)))
    if max_drop is None:
        q = nncf.quantize(model, dataset, advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix),
                          **common)
    else:
        if val_data is None:
            raise ModelError("--max-drop needs --val-data or --data (a data.yaml whose val split measures mAP50-95)")
        q = _quantize_with_accuracy_control(model, dataset, val_data, hw, max_drop, common, channels,
                                            overflow_fix=fix, max_float_groups=max_float_groups,
                                            ranking_subset=ranking_subset)
    return save_int8(model, q, out, {
        "preset": preset, "calibration_images": len(calib), "fast_bias_correction": fast_bias_correction,
        "head_convs_float": head_convs_float, "overflow_fix": overflow_fix, "keep_float": list(keep_float),
        "accuracy_control": (None if max_drop is None
                             else {"max_drop_mAP50-95": max_drop, "val_data": str(val_data),
                                   "max_float_groups": max_float_groups, "ranking_subset": ranking_subset})})


def input_shape(model) -> tuple[tuple[int, int], int]:
    """The float model's input: (height, width) and channels (NCHW)."""
    ps = model.input(0).get_partial_shape()
    return (int(ps[2].get_length()), int(ps[3].get_length())), int(ps[1].get_length())


def save_int8(model, q, out: Path, settings: dict) -> Path:
    """Writes NNCF's INT8 model `q` of the float `model` as the IR `out`, with ultralytics' rt_info, and beside
    it quantization.json for the model card: the tool, `settings` and which convolutions stayed float (what
    decides both its accuracy and its speed)."""
    import nncf
    import openvino as ov

    _copy_rt_info(model, q)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, out, compress_to_fp16=False)
    float_convs = sorted(op.get_friendly_name() for op in ov.Core().read_model(out).get_ordered_ops()
                         if op.get_type_name() == "Convolution" and not _weights_quantized(op))
    info = {"tool": "nncf", "nncf": nncf.__version__, **settings, "float_convolutions": float_convs}
    out.with_name("quantization.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _quantize_with_accuracy_control(model, dataset, val_data: Path, hw, max_drop: float, common: dict,
                                    channels: int = 3, overflow_fix=None, max_float_groups: int | None = None,
                                    ranking_subset: int | None = None):
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
    )

    from inspector.inference.heads.detect import postprocess
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
    restorer = {"ranking_subset_size": ranking_subset}
    if max_float_groups is not None:
        restorer["max_num_iterations"] = max_float_groups
    return nncf.quantize_with_accuracy_control(
        model, calibration_dataset=dataset, validation_dataset=val, validation_fn=validate,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=(None if overflow_fix is None
                                          else AdvancedQuantizationParameters(overflow_fix=overflow_fix)),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(**restorer), **common)


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
