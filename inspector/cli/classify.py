"""The classify side of the offline commands (train extra): `dataset import --from folders|csv` (and Label
Studio choices / CVAT tags with `--task classify`), and the classify branches of check, quantize, model build
and eval. cli/training.py hands over to these when the dataset or the card says `task: classify`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CLS_ONLY_FORMATS = ("folders", "csv")


def wants_classify_import(a: argparse.Namespace) -> bool:
    # a classifier's reviewed export: its review.json says
    from inspector.training.review_classes import is_classify_review

    return a.source_format in CLS_ONLY_FORMATS or getattr(a, "task", None) == "classify" or is_classify_review(a.src)


def cmd_import(a: argparse.Namespace) -> int:
    from inspector.training.cls_dataset import (
        CLS_FORMATS,
        ClsImportError,
        format_cls_summary,
        import_classify,
    )
    from inspector.training.dataset_import import SplitRule

    if getattr(a, "task", None) == "detect":
        print(f"dataset import: --from {a.source_format} carries image-level labels: --task detect does not apply",
              file=sys.stderr)
        return 2
    if a.source_format not in CLS_FORMATS:
        print(f"dataset import: --task classify reads folders, csv, labelstudio (choices) or cvat (tags), not "
              f"{a.source_format}", file=sys.stderr)
        return 2
    if not (0 <= a.val_fraction < 1 and 0 <= a.test_fraction < 1 and a.val_fraction + a.test_fraction < 1):
        print(f"dataset import: --val-fraction {a.val_fraction} and --test-fraction {a.test_fraction} must each be "
              "in [0, 1) and leave images for train", file=sys.stderr)
        return 2
    classes = [c.strip() for c in a.classes.split(",") if c.strip()] if a.classes else None
    rule = SplitRule(split_file=Path(a.split_file) if a.split_file else None, val_fraction=a.val_fraction,
                     test_fraction=a.test_fraction, seed=a.seed, group_by=a.group_by)
    try:
        r = import_classify(a.source_format, Path(a.src), Path(a.out), classes=classes, good=a.good, rule=rule)
    except (ClsImportError, FileNotFoundError, ValueError) as e:
        print(f"dataset import: {e}", file=sys.stderr)
        return 2
    for p in r.problems:
        print(f"skipped {p}", file=sys.stderr)
    print(format_cls_summary(r.summary))
    review = _recorded_review(r.out)
    if review is not None:
        from inspector.training.review_classes import format_summary

        print(format_summary(review))
    print(f"wrote {r.out} (split/class/image, data.yaml, dataset.json)")
    if r.problems:
        print(f"{len(r.problems)} file(s) skipped (listed above and in dataset.json)"
              + ("" if a.skip_bad else "; exit 2 (pass --skip-bad to accept the import without them)"),
              file=sys.stderr)
        return 0 if a.skip_bad else 2
    return 0


def _recorded_review(out: Path) -> dict | None:
    import json

    return ((json.loads((out / "dataset.json").read_text()).get("source") or {}).get("review"))


def cmd_check(a: argparse.Namespace) -> int:
    from inspector.training.dataset_check_classify import check_dataset

    return check_dataset(Path(a.dir), near_dup_bits=a.near_dup_bits, json_out=a.json)


def cmd_quantize(a: argparse.Namespace) -> int:
    from inspector.training.quantize_classify import quantize_classify

    print(quantize_classify(Path(a.model), Path(a.data), Path(a.out), imgsz=a.imgsz, max_drop=a.max_drop,
                            subset_size=a.subset_size, preset=a.preset,
                            calibration=Path(a.calibration) if a.calibration else None))
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    from inspector.training.card_classify import build_classify_cli

    return build_classify_cli(a)


def cmd_eval(a: argparse.Namespace) -> int:
    from inspector.training.evaluate_classify import run_cls_eval_cli, run_cls_perturb_cli

    if a.perturb:
        from inspector.training.perturb_eval import parse_families

        try:
            families = parse_families(a.perturb)
        except ValueError as e:
            print(f"eval --perturb: {e}", file=sys.stderr)
            return 2
        return run_cls_perturb_cli(Path(a.model), Path(a.data) if a.data else None, a.split, families, a.seed,
                                   a.magnitude, "fp32" if a.compare else "int8", a.json)
    return run_cls_eval_cli(Path(a.model), Path(a.data) if a.data else None, a.split, a.compare, a.json)


def is_classify_data(data: str | None) -> bool:
    from inspector.training.cls_dataset import is_classify

    return is_classify(data)


def is_classify_model(model: str) -> bool:
    from inspector.training.evaluate_classify import is_classify_bundle

    return is_classify_bundle(Path(model))
