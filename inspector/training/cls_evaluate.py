"""`inspector eval --model <classify bundle> --data <classification data.yaml>`: accuracy, per-class recall,
NG recall, escapes and false rejects at the card's thresholds, ROC AUC, the confusion matrix (cls_metrics)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inspector.bundle.card import CardRefused, read_card
from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
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


def run_cls_eval_cli(model: Path, data: Path | None, split: str | None, compare: bool,
                     json_out: str | None) -> int:
    try:
        card, _, _ = read_card(model)
        if data is None:
            raise ClsImportError("a classifier is evaluated on a classification dataset: pass --data data.yaml")
        ds = load_cls_dataset(data)
    except (CardRefused, ClsImportError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    if list(card.classes) != ds.classes or card.pass_class != ds.pass_class:
        print(f"eval: the bundle {model} has classes {list(card.classes)} (pass {card.pass_class!r}), the dataset "
              f"{data} {ds.classes} (pass {ds.pass_class!r})", file=sys.stderr)
        return 2
    split = split or ("test" if "test" in ds.splits else "val")
    if split not in ds.splits:
        print(f"eval: {data} has no split {split!r} (has {ds.splits})", file=sys.stderr)
        return 2
    import numpy as np

    rows = ds.images(split)
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
