"""`inspector eval --model <classify bundle> --data <classification data.yaml>`: accuracy, per-class recall,
NG recall, escapes and false rejects at the card's thresholds, ROC AUC, the confusion matrix (cls_metrics).

`--perturb FAMILY[,FAMILY]`: the OK/NG metrics on altered copies of the split, each image altered once per
family with the detector's draws (perturb_eval.altered), its label unchanged (an image-level label: `geometry`
may shift a defect towards the crop's edge, as a moved part does), judged at the card's thresholds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from inspector.bundle.card import CardRefused, ModelCard, read_card
from inspector.training.cls_dataset import ClsDataset, ClsImportError, load_cls_dataset
from inspector.training.cls_infer import ClsIR
from inspector.training.cls_metrics import format_report, report


def is_classify_bundle(model: Path) -> bool:
    card = Path(model) / "model_card.json"
    if not card.is_file():
        return False
    try:
        return json.loads(card.read_text()).get("task") == "classify"
    except (OSError, ValueError, AttributeError):
        return False


def open_eval(model: Path, data: Path | None) -> tuple[ModelCard, ClsDataset]:
    """The bundle's card and the dataset it is evaluated on, their classes and pass class the same (CardRefused,
    ClsImportError naming what does not fit)."""
    card, _, _ = read_card(model)
    if data is None:
        raise ClsImportError("a classifier is evaluated on a classification dataset: pass --data data.yaml")
    ds = load_cls_dataset(data)
    if list(card.classes) != ds.classes or card.pass_class != ds.pass_class:
        raise ClsImportError(f"the bundle {model} has classes {list(card.classes)} (pass {card.pass_class!r}), the "
                             f"dataset {data} {ds.classes} (pass {ds.pass_class!r})")
    return card, ds


def pick_split(ds: ClsDataset, data: Path | None, split: str | None) -> tuple[str, list]:
    """The split to judge (test, else val, where none is named) and its images; one with none is refused:
    an empty split reported nothing, or failed later with a traceback (eval --perturb)."""
    split = split or ("test" if "test" in ds.splits else "val")
    if split not in ds.splits:
        raise ClsImportError(f"{data or ds.root} has no split {split!r} (has {ds.splits})")
    rows = ds.images(split)
    if not rows:
        raise ClsImportError(f"{data or ds.root}: split {split!r} has no images")
    return split, rows


def run_cls_eval_cli(model: Path, data: Path | None, split: str | None, compare: bool,
                     json_out: str | None) -> int:
    try:
        card, ds = open_eval(model, data)
        split, rows = pick_split(ds, data, split)
    except (CardRefused, ClsImportError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    import numpy as np

    labels = np.array([k for _, k in rows])
    results = {}
    for precision in (("fp32", "int8") if compare else ("int8",)):
        ir = ClsIR(Path(model) / card.files[precision].xml)
        results[precision] = report(ir.probs_of([f for f, _ in rows]), labels, ds.classes, ds.pass_class,
                                    dict(card.thresholds))
        print(format_report(results[precision], f"{card.name} {card.version} [{precision}] on {split}"))
    if compare:
        d = {k: round(results["int8"][k] - results["fp32"][k], 4) for k in ("accuracy", "ng_recall", "roc_auc")
             if results["int8"][k] is not None and results["fp32"][k] is not None}
        print(f"INT8 - FP32: {d}")
    if json_out:
        Path(json_out).write_text(json.dumps({"model": str(model), "data": str(data), "split": split, **results},
                                             indent=2) + "\n")
    return 0


def run_cls_perturb_cli(model: Path, data: Path | None, split: str | None, families: Sequence[str], seed: int,
                        magnitude: str, precision: str, json_out: str | None) -> int:
    import cv2
    import numpy as np

    from inspector.sources import optics
    from inspector.training.perturb_eval import CLEAN, altered

    try:
        card, ds = open_eval(model, data)
        split, rows = pick_split(ds, data, split)
        for f in families:
            if f != CLEAN:
                optics.family(f)
    except (CardRefused, ClsImportError, ValueError, KeyError) as e:
        print(f"eval --perturb: {e}", file=sys.stderr)
        return 2
    images = [cv2.imread(str(f)) for f, _ in rows]
    labels = np.array([k for _, k in rows])
    ir = ClsIR(Path(model) / card.files[precision].xml)
    out = []
    print(f"{card.name} {card.version} [{precision}] on {split}, {len(rows)} images, magnitude {magnitude}")
    print(f"  {'family':<14}{'accuracy':>9}{'NG recall':>10}{'escapes':>9}{'false rej':>10}{'ROC AUC':>9}")
    for name in families:
        judged = images if name == CLEAN else [img for img, _ in altered(images, name, seed, magnitude)]
        probs = np.stack([ir.probs(img) for img in judged])
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
