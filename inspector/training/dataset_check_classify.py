"""`inspector dataset check DIR` for a classification dataset (data.yaml `task: classify`): the walk of its
class folders; the checks every dataset gets, the report's tail and --json are dataset_check.py's.

Findings (any one: exit 2), each with the file:
- unreadable_image: not decodable, or a JPEG cut short (Ultralytics drops it with a one-line warning);
- duplicate_image: the same bytes twice (sha256), in one split or across splits (double weight, leakage);
- conflicting_label: the same bytes under two classes (a sorting mistake: one of them is wrong);
- near_duplicate_across_splits: a val/test image that is a near copy of a train image (the detector check's
  rule: dHash within --near-dup-bits confirmed by the high-pass thumbnail correlation);
- unknown_class_folder: a folder under a split that is not a class of data.yaml (Ultralytics would number it as
  a class and shift every class after it);
- empty_class: a class without images in train (cannot be learnt) or in val (no threshold, no recall);
- missing_split: no val split, or a split folder that does not exist.
Reported, not failed: images per class and split, the NG share (class balance), image sizes, grayscale vs colour.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.dataset_check import Report, check_splits, findings_lines, look_at, report_out, sizes_line
from inspector.training.dataset_import import SPLITS
from inspector.training.importers import IMAGE_SUFFIXES


def run_check(target: Path, near_dup_bits: int = 10) -> tuple[Report, str]:
    ds = load_cls_dataset(target)
    rep = Report()
    rep.classes = ds.classes
    seen: dict[str, tuple[str, str | None]] = {}  # sha256 -> (where, class)
    hashes: dict[str, list] = defaultdict(list)
    declared = [s for s in SPLITS if s in ds.splits]
    for split in declared:
        d = ds.root / split
        if not d.is_dir():
            rep.add("missing_split", f"{split}: {d} is not a folder")
            continue
        for extra in sorted(p.name for p in d.iterdir() if p.is_dir() and p.name not in ds.classes):
            rep.add("unknown_class_folder", f"{d / extra}: not one of the classes {ds.classes}")
        per_class: Counter = Counter()
        for c in ds.classes:
            for f in sorted((d / c).iterdir()) if (d / c).is_dir() else []:
                if f.suffix.lower() in IMAGE_SUFFIXES and look_at(rep, f, f"{split}/{c}/{f.name}", split, seen,
                                                                  hashes, label=c) is not None:
                    per_class[c] += 1
        rep.per_split[split] = {"images": sum(per_class.values()),
                                "per_class": {c: per_class.get(c, 0) for c in ds.classes}}
    check_splits(rep, "val" in declared, hashes, near_dup_bits, "images")
    return rep, ds.pass_class


def format_report(rep: Report, pass_class: str) -> str:
    names = rep.classes
    w = max(8, *(len(n) for n in names))
    lines = [f"classify: classes ({len(names)}): {', '.join(names)}; pass class {pass_class!r}",
             f"  {'split':<8}{'images':>8}  " + "".join(f"{n[:w]:>{w + 1}}" for n in names) + f"{'NG share':>10}"]
    for s, c in rep.per_split.items():
        ng = c["images"] - c["per_class"].get(pass_class, 0)
        lines.append(f"  {s:<8}{c['images']:>8}  " + "".join(f"{c['per_class'][n]:>{w + 1}}" for n in names)
                     + f"{ng / max(1, c['images']):>10.1%}")
    return "\n".join([*lines, sizes_line(rep), *findings_lines(rep)])


def check_dataset(target: Path, near_dup_bits: int = 10, json_out: str | None = None) -> int:
    try:
        rep, good = run_check(target, near_dup_bits)
    except (OSError, ClsImportError) as e:
        print(f"dataset check: cannot read {target}: {e}")
        return 2
    return report_out(rep, format_report(rep, good), {"task": "classify", "classes": rep.classes, "pass_class": good,
                                                       "per_split": rep.per_split}, json_out)
