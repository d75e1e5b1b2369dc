"""`inspector quantize --data <classification data.yaml>`: an INT8 classifier IR with NNCF.

Calibration images: up to `subset_size` of the train split, drawn across classes with a fixed seed (the split
is stored class by class: its first 300 files would all be one class), prepared as the card's `input` says
(cls_infer.prepare). With `max_drop`, NNCF's accuracy control reverts the most harmful layers to float until
the top-1 accuracy drop on the val split is within `max_drop` (absolute), as the detector's mAP50-95 bound.
Reading the float model and writing the INT8 IR with its quantization.json are quantize.py's.
"""

from __future__ import annotations

import random
from pathlib import Path

from inspector.errors import ModelError
from inspector.training import offline
from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.cls_infer import prepare
from inspector.training.quantize import input_shape, load_float_model, save_int8


def _tensors(files: list[Path], hw: tuple[int, int], channels: int) -> list:
    import cv2

    out = []
    for f in files:
        img = cv2.imread(str(f))
        if img is None:
            raise ModelError(f"{f}: not a readable image")
        out.append(prepare(img, hw, channels))
    return out


def quantize_classify(src: Path, data: Path, out: Path, imgsz: int = 224, max_drop: float | None = None,
                      subset_size: int = 300, preset: str = "mixed", seed: int = 0,
                      calibration: Path | None = None) -> Path:
    try:
        ds = load_cls_dataset(data)
    except ClsImportError as e:
        raise ModelError(str(e)) from e
    offline.prepare(Path(out).parent)
    import nncf
    import numpy as np

    model = load_float_model(Path(src), imgsz)
    hw, channels = input_shape(model)
    n_out = int(model.output(0).get_partial_shape()[-1].get_length())
    if n_out != len(ds.classes):
        raise ModelError(f"{src} has {n_out} outputs, the dataset {data} {len(ds.classes)} classes {ds.classes}: "
                         "quantize the model trained on this dataset")
    if calibration is not None:
        from inspector.training.importers import IMAGE_SUFFIXES

        pool = sorted(p for p in Path(calibration).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        pool = [f for f, _ in ds.images("train")]
    if not pool:
        raise ModelError(f"no calibration images in {calibration or ds.root / 'train'}")
    random.Random(seed).shuffle(pool)
    calib = _tensors(pool[:subset_size], hw, channels)
    common = dict(preset=nncf.QuantizationPreset(preset), subset_size=len(calib), fast_bias_correction=True)
    if max_drop is None:
        q = nncf.quantize(model, nncf.Dataset(calib), **common)
    else:
        val = ds.images("val")
        if not val:
            raise ModelError(f"{data}: no val images to measure the accuracy drop on (--max-drop)")
        items = list(zip(_tensors([f for f, _ in val], hw, channels), [k for _, k in val], strict=True))

        def validate(compiled, rows) -> float:
            right = [int(np.argmax(compiled(x)[0])) == k for x, k in rows]
            return float(np.mean(right))

        q = nncf.quantize_with_accuracy_control(
            model, calibration_dataset=nncf.Dataset(calib), validation_dataset=nncf.Dataset(items, lambda r: r[0]),
            validation_fn=validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **common)
    return save_int8(model, q, out, {
        "task": "classify", "preset": preset, "calibration_images": len(calib),
        "calibration": str(calibration or ds.root / "train"), "fast_bias_correction": True,
        "accuracy_control": None if max_drop is None else {"max_drop_top1_accuracy": max_drop,
                                                           "val_data": str(ds.root / "data.yaml")}})
