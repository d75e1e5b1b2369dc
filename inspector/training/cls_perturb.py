"""`inspector eval --perturb FAMILY[,FAMILY]` for a classifier: its OK/NG metrics on altered copies of a split.

Each image is altered once per family with the detector's draws (perturb_eval: rng([seed, crc32(family), i]),
`optics.sample` + `optics.apply`), its label unchanged (an image-level label: `geometry` may shift a defect
towards the crop's edge, as a moved part does), then judged at the card's thresholds (cls_metrics.report).
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from inspector.bundle.card import CardRefused, read_card
from inspector.sources import optics
from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.cls_infer import ClsIR
from inspector.training.cls_metrics import report
from inspector.training.perturb_eval import CLEAN


def perturb_images(images: Sequence[np.ndarray], name: str, seed: int,
                   magnitude: str | Mapping = "default") -> list[np.ndarray]:
    if name == CLEAN:
        return list(images)
    optics.family(name)  # a clear error before any work
    tag = zlib.crc32(name.encode())
    out = []
    for i, img in enumerate(images):
        rng = np.random.default_rng([seed, tag, i])
        out.append(optics.apply(img, optics.sample(name, rng, magnitude), rng))
    return out


def run_cls_perturb_cli(model: Path, data: Path | None, split: str | None, families: Sequence[str], seed: int,
                        magnitude: str, precision: str, json_out: str | None) -> int:
    try:
        card, _, _ = read_card(model)
        if data is None:
            raise ClsImportError("a classifier is evaluated on a classification dataset: pass --data data.yaml")
        ds = load_cls_dataset(data)
        for f in families:
            if f != CLEAN:
                optics.family(f)
    except (CardRefused, ClsImportError, ValueError, KeyError) as e:
        print(f"eval --perturb: {e}", file=sys.stderr)
        return 2
    if list(card.classes) != ds.classes or card.pass_class != ds.pass_class:
        print(f"eval --perturb: the bundle {model} has classes {list(card.classes)}, the dataset {data} "
              f"{ds.classes}", file=sys.stderr)
        return 2
    split = split or ("test" if "test" in ds.splits else "val")
    rows = ds.images(split)
    images = [cv2.imread(str(f)) for f, _ in rows]
    labels = np.array([k for _, k in rows])
    ir = ClsIR(Path(model) / card.files[precision].xml)
    out = []
    print(f"{card.name} {card.version} [{precision}] on {split}, {len(rows)} images, magnitude {magnitude}")
    print(f"  {'family':<14}{'accuracy':>9}{'NG recall':>10}{'escapes':>9}{'false rej':>10}{'ROC AUC':>9}")
    for name in families:
        altered = perturb_images(images, name, seed, magnitude)
        probs = np.stack([ir.probs(img) for img in altered])
        r = report(probs, labels, ds.classes, ds.pass_class, dict(card.thresholds))
        out.append({"family": name, **{k: r[k] for k in ("accuracy", "ng_recall", "escape_rate",
                                                         "false_reject_rate", "roc_auc", "recall_per_class")}})
        print(f"  {name:<14}{r['accuracy']:>9}{r['ng_recall']!s:>10}{r['escape_rate']!s:>9}"
              f"{r['false_reject_rate']!s:>10}{r['roc_auc']!s:>9}")
    if json_out:
        Path(json_out).write_text(json.dumps({"model": str(model), "data": str(data), "split": split,
                                              "precision": precision, "magnitude": magnitude, "seed": seed,
                                              "rows": out}, indent=2) + "\n")
    return 0
