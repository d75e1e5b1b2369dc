"""`inspector model build --data <classification data.yaml>`: a classifier bundle (card `task: classify`).

The card carries the classes (the dataset's sorted order, the IR's output order), the pass class, thresholds
calibrated on the val split for a target NG recall (cls_metrics.calibrate: per NG class, the highest p(class)
that still rejects `target_recall` of its images, INT8 predictions: the operating model), and the FP32-vs-INT8
metrics on the test split (val when there is none: the card says so), as the detector's card does. The files
and the card's common fields are card.py's (ship_files, assemble_card).
"""

from __future__ import annotations

from pathlib import Path

from inspector.bundle.card import CARD_NAME, read_card, write_card
from inspector.errors import ModelError
from inspector.training.card import assemble_card, dataset_record, ship_files, train_info_of
from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.cls_infer import INPUT_NOTE, ClsIR
from inspector.training.cls_metrics import calibrate, format_report, report


def _ir_labels(ir: ClsIR) -> list[str] | None:
    try:
        raw = ir.model.get_rt_info(["model_info", "labels"]).astype(str)
    except RuntimeError:
        return None
    return raw.split() if raw else None


def build_classify_bundle(fp32_xml: Path, int8_xml: Path, out: Path, *, data: Path, name: str, version: str,
                          target_recall: float, command: str, train_info: dict | None = None,
                          calibration: Path | None = None) -> dict:
    try:
        ds = load_cls_dataset(data)
    except ClsImportError as e:
        raise ModelError(str(e)) from e
    irs = {"int8": ClsIR(int8_xml), "fp32": ClsIR(fp32_xml)}
    for p, ir in irs.items():
        if ir.n_out != len(ds.classes):
            raise ModelError(f"the {p} IR {ir.model.get_friendly_name()} has {ir.n_out} outputs, the dataset {data} "
                             f"has {len(ds.classes)} classes {ds.classes}: train on this dataset")
        labels = _ir_labels(ir)
        if labels is not None and labels != ds.classes and len(labels) == len(ds.classes):
            raise ModelError(f"the dataset {data} has classes {ds.classes}, the {p} IR was trained on {labels}")
    if irs["int8"].hw != irs["fp32"].hw or irs["int8"].channels != irs["fp32"].channels:
        raise ModelError(f"the INT8 IR {int8_xml} takes {irs['int8'].channels}x{irs['int8'].hw}, the FP32 IR "
                         f"{fp32_xml} {irs['fp32'].channels}x{irs['fp32'].hw}: quantize the FP32 model this bundle "
                         "ships")
    if "val" not in ds.splits:
        raise ModelError(f"{data}: no val split to calibrate the thresholds on")
    held = "test" if "test" in ds.splits else "val"
    import numpy as np

    val = ds.images("val")
    test = ds.images(held)
    val_labels = np.array([k for _, k in val])
    test_labels = np.array([k for _, k in test])
    p_val = irs["int8"].probs_of([f for f, _ in val])
    thresholds, reached = calibrate(p_val, val_labels, ds.classes, ds.pass_class, target_recall)
    r8 = report(irs["int8"].probs_of([f for f, _ in test]), test_labels, ds.classes, ds.pass_class, thresholds)
    r32 = report(irs["fp32"].probs_of([f for f, _ in test]), test_labels, ds.classes, ds.pass_class, thresholds)

    shipped = ship_files(fp32_xml, int8_xml, Path(out))
    data_yaml = ds.root / "data.yaml"
    card = assemble_card(
        name=name, version=version, task="classify", train_info=train_info, shipped=shipped,
        calibration=Path(calibration) if calibration else ds.root / "train",
        described={
            "classes": ds.classes,
            "pass_class": ds.pass_class,
            "input_size": list(irs["int8"].hw),
            "input_channels": irs["int8"].channels,
            "input": INPUT_NOTE,
            "decision": "NG when any class other than pass_class has probability >= its threshold; the pass "
                        "class's threshold is 1.0 and never rejects",
            "thresholds": thresholds,
            "threshold_calibration": {
                "method": "per NG class, the highest probability of that class that still rejects target_recall of "
                          "its val images (INT8 predictions)",
                "target_recall": target_recall,
                "split": {"data": str(data_yaml), "split": "val", "n": len(val)},
                "recall_reached": {c: round(r, 4) for c, r in reached.items()},
            }},
        dataset=dataset_record(data_yaml),
        evaluation={
            "split": {"data": str(data_yaml), "split": held, "n": len(test), "held_out": held == "test",
                      "note": None if held == "test" else "no test split: metrics on val, which also set the "
                                                          "thresholds"},
            "fp32": r32, "int8": r8,
            "delta_int8_minus_fp32": {k: round(r8[k] - r32[k], 4) for k in ("accuracy", "ng_recall", "roc_auc",
                                                                            "top1_accuracy")
                                      if r8[k] is not None and r32[k] is not None},
        },
        int8_xml=int8_xml, command=command)
    # the schema before the card is written (a bundle the line would refuse is never built), then read back
    write_card(out, card)
    read_card(Path(out) / CARD_NAME)
    print(format_report(r32, f"FP32 on {held}"))
    print(format_report(r8, f"INT8 on {held}"))
    print(f"thresholds: {card['thresholds']} (target NG recall {target_recall} on val: reached "
          f"{card['threshold_calibration']['recall_reached']})")
    return card


def build_classify_cli(a) -> int:
    unsupported = [o for o in ("calibrate_under", "perturbed_eval", "envelope_families") if getattr(a, o, None)]
    if unsupported:
        raise ModelError(f"--{unsupported[0].replace('_', '-')} is not available for a classifier yet (the envelope: "
                         "`inspector model envelope BUNDLE --data IMAGES --families none`)")
    fp32 = Path(a.fp32)
    build_classify_bundle(fp32, Path(a.int8), Path(a.out), data=Path(a.data), name=a.name, version=a.version,
                          target_recall=a.target_recall, command=a.command, train_info=train_info_of(fp32),
                          calibration=Path(a.calibration) if a.calibration else None)
    return 0
