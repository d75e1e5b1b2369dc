"""`inspector eval`: accuracy of a model bundle as the runtime runs it (our detector, not torch).

Data: a YOLO data.yaml (its `val` split) or, by default, a held-out synthetic set rendered in
memory from a seed that training never used. Reports mAP50, mAP50-95, per-class precision and
recall at the card's thresholds, and the part-level escape / false-reject rates.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from inspector.bundle.load import ModelBundle, load_bundle
from inspector.errors import ModelError
from inspector.frames import Detections
from inspector.inference.heads import HeadSettings, make_head
from inspector.inference.runner import Runner
from inspector.sources.conveyor import ConveyorGenerator
from inspector.training.metrics import (
    ImageResult,
    at_thresholds,
    average_precision,
    part_level,
)

EVAL_CONF = 0.001  # as ultralytics val: the whole precision-recall curve
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Sample:
    image: np.ndarray
    gt_boxes: np.ndarray
    gt_cls: np.ndarray


def synthetic_samples(n: int, seed: int) -> Iterator[Sample]:
    gen = ConveyorGenerator(seed)
    for i in range(n):
        p = gen.part(i)
        boxes = np.array([d.box for d in p.defects], np.float32).reshape(-1, 4)
        yield Sample(p.image, boxes, np.array([d.class_id for d in p.defects], int))


def data_splits(data_yaml: Path) -> dict[str, Path]:
    """split -> image folder of a data.yaml (`path:` absolute, relative to the yaml, or absent)."""
    from inspector.training.importers import data_yaml_root  # the one rule (a relative --data was joined twice)

    data = yaml.safe_load(Path(data_yaml).read_text()) or {}
    root = data_yaml_root(Path(data_yaml), data)
    return {s: root / data[s] for s in ("train", "val", "test") if isinstance(data.get(s), str)}


def yolo_samples(data_yaml: Path, split: str = "val") -> Iterator[Sample]:
    splits = data_splits(data_yaml)
    if split not in splits:
        raise KeyError(f"{data_yaml} has no {split!r} split (has: {sorted(splits)})")
    img_dir = splits[split]
    for img_path in sorted(p for p in img_dir.glob("*.*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)  # grayscale files: 3 equal channels, as the runtime feeds
        if image is None:
            continue
        h, w = image.shape[:2]
        label = img_path.parent.parent / "labels" / (img_path.stem + ".txt")
        if not label.exists():  # ultralytics' images/<split> -> labels/<split> layout
            label = Path(str(img_path.parent).replace("images", "labels")) / (img_path.stem + ".txt")
        rows = np.loadtxt(label, ndmin=2) if label.exists() and label.stat().st_size else np.zeros((0, 5))
        cls = rows[:, 0].astype(int)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        yield Sample(image, boxes, cls)


def collect(runner: Runner, samples: Iterator[Sample]) -> list[ImageResult]:
    """The runner's findings on each sample, against its ground truth (its head built with conf EVAL_CONF)."""
    out = []
    for s in samples:
        d = runner.find(s.image)
        if not isinstance(d, Detections):
            raise ModelError(f"model {runner.bundle.name}: box metrics (mAP) need a detect model, not "
                             f"{d.task!r}")
        out.append(ImageResult(s.gt_boxes, s.gt_cls, d.xyxy, d.confidence, d.class_id))
    return out


def report(results: list[ImageResult], bundle: ModelBundle, thresholds: np.ndarray | None = None) -> dict:
    nc = len(bundle.classes)
    ap, n_gt = average_precision(results, nc)
    if thresholds is None:
        thresholds = np.array([bundle.thresholds.get(c, 0.5) for c in bundle.classes])
    op = at_thresholds(results, thresholds)
    present = n_gt > 0
    return {
        "model": {"name": bundle.name, "version": bundle.version, "precision": bundle.precision,
                  "sha256": bundle.sha256},
        "images": len(results),
        "mAP50": round(float(ap[present, 0].mean()), 4) if present.any() else 0.0,
        "mAP50-95": round(float(ap[present].mean()), 4) if present.any() else 0.0,
        "per_class": {
            c: {
                "instances": int(n_gt[i]),
                "threshold": round(float(thresholds[i]), 4),
                "AP50": round(float(ap[i, 0]), 4),
                "AP50-95": round(float(ap[i].mean()), 4),
                "precision": round(float(op["precision"][i]), 4),
                "recall": round(float(op["recall"][i]), 4),
            }
            for i, c in enumerate(bundle.classes)
        },
        "parts": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in part_level(results, thresholds).items()},
    }


def evaluate(bundle: ModelBundle, samples: list[Sample], thresholds: np.ndarray | None = None) -> dict:
    runner = Runner(bundle, make_head(bundle, HeadSettings(conf=EVAL_CONF)))
    return report(collect(runner, iter(samples)), bundle, thresholds)


def _model_classes(model: Path) -> list[str]:
    try:
        return list(load_bundle(model, "int8").classes)
    except ModelError:
        return list(load_bundle(model, "fp32").classes)


def format_report(r: dict) -> str:
    lines = [f"{r['model']['name']} {r['model']['version']} [{r['model']['precision']}]  images={r['images']}  "
             f"mAP50={r['mAP50']:.4f}  mAP50-95={r['mAP50-95']:.4f}"]
    lines.append(f"  {'class':<15}{'n':>6}{'thresh':>8}{'AP50':>8}{'AP50-95':>9}{'P':>8}{'R':>8}")
    for c, m in r["per_class"].items():
        lines.append(f"  {c:<15}{m['instances']:>6}{m['threshold']:>8.3f}{m['AP50']:>8.3f}{m['AP50-95']:>9.3f}"
                     f"{m['precision']:>8.3f}{m['recall']:>8.3f}")
    p = r["parts"]
    lines.append(f"  parts: {p['defective_parts']} defective, {p['good_parts']} good; escapes {p['escapes']} "
                 f"({p['escape_rate']:.2%}), false rejects {p['false_rejects']} ({p['false_reject_rate']:.2%})")
    return "\n".join(lines)


def run_eval_cli(model: Path, data: Path | None, json_out: str | None, compare: bool, n: int, seed: int,
                 split: str | None = None) -> int:
    try:
        if data:
            split = split or ("test" if "test" in data_splits(data) else "val")
            samples = list(yolo_samples(data, split))
        else:
            samples = list(synthetic_samples(n, seed))
    except (OSError, KeyError, ValueError, yaml.YAMLError) as e:
        print(f"cannot read evaluation data {data}: {e}", file=sys.stderr)
        return 2
    if not samples:
        print(f"no evaluation images found ({data or f'synthetic seed {seed}'})", file=sys.stderr)
        return 2
    if data:
        from inspector.training.train import dataset_classes

        have, want = _model_classes(model), dataset_classes(data)
        if have != want:
            print(f"the dataset {data} has classes {want}, the model {model} has {have}", file=sys.stderr)
            return 2
    where = f"{data} ({split} split)" if data else f"held-out synthetic set: seed {seed}, {n} frames"
    print(f"evaluating on {where}")
    precisions = ["fp32", "int8"] if compare else ["int8"]
    out = {"data": where, "results": {}}
    for prec in precisions:
        try:
            bundle = load_bundle(model, prec)
        except ModelError:
            if model.suffix == ".xml" or prec == "fp32" and not compare:
                raise
            bundle = load_bundle(model, "fp32")
        r = evaluate(bundle, samples)
        out["results"][bundle.precision] = r
        print(format_report(r))
    if compare and len(out["results"]) == 2:
        f, i = out["results"]["fp32"], out["results"]["int8"]
        out["delta_int8_minus_fp32"] = {"mAP50": round(i["mAP50"] - f["mAP50"], 4),
                                        "mAP50-95": round(i["mAP50-95"] - f["mAP50-95"], 4)}
        print(f"INT8 - FP32: mAP50 {out['delta_int8_minus_fp32']['mAP50']:+.4f}, "
              f"mAP50-95 {out['delta_int8_minus_fp32']['mAP50-95']:+.4f}")
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2))
    return 0
