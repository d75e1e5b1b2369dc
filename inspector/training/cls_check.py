"""`inspector dataset check DIR` for a classification dataset (data.yaml `task: classify`).

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

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.dataset_check import EXAMPLES, NEAR_DUP_CORR, Report, _highpass_thumb, dhash, near_pairs
from inspector.training.dataset_import import SPLITS
from inspector.training.importers import IMAGE_SUFFIXES


def run_cls_check(target: Path, near_dup_bits: int = 10) -> tuple[Report, str]:
    ds = load_cls_dataset(target)
    rep = Report()
    rep.classes = ds.classes
    seen: dict[str, tuple[str, str]] = {}  # sha256 -> (where, class)
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
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                data = f.read_bytes()
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
                truncated = f.suffix.lower() in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-64:]
                if img is None or truncated:
                    rep.add("unreadable_image", f"{f}" + (" (truncated JPEG)" if img is not None else ""))
                    continue
                rel = f"{split}/{c}/{f.name}"
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    first, first_class = seen[digest]
                    kind = "conflicting_label" if first_class != c else "duplicate_image"
                    rep.add(kind, f"{rel} has the same bytes as {first}")
                else:
                    seen[digest] = (rel, c)
                per_class[c] += 1
                h, w = img.shape[:2]
                rep.image_sizes[f"{w}x{h}"] += 1
                gray = img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
                equal = img.ndim == 2 or img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1])
                                                              and np.array_equal(img[..., 1], img[..., 2]))
                rep.channels["grayscale" if equal else "colour"] += 1
                hashes[split].append((dhash(gray), rel, _highpass_thumb(gray)))
        rep.per_split[split] = {"images": sum(per_class.values()),
                                "per_class": {c: per_class.get(c, 0) for c in ds.classes}}
    for split in ("train", "val"):
        for c, k in rep.per_split.get(split, {}).get("per_class", {}).items():
            if k == 0:
                rep.add("empty_class", f"class {c!r} has no images in {split}")
    if "val" not in declared:
        rep.add("missing_split", "data.yaml has no val split (thresholds and metrics need one)")
    train = hashes.get("train", [])
    for other in ("val", "test"):
        held = hashes.get(other, [])
        a = np.array([h[0] for h in held], np.uint64)
        b = np.array([h[0] for h in train], np.uint64)
        for i, j, dist in near_pairs(a, b, near_dup_bits):
            corr = float((held[i][2] * train[j][2]).sum())
            if corr >= NEAR_DUP_CORR:
                rep.add("near_duplicate_across_splits", f"{held[i][1]} ~ {train[j][1]} (dHash distance {dist} bits, "
                        f"thumbnail correlation {corr:.2f})")
    return rep, ds.pass_class


def format_cls_report(rep: Report, pass_class: str) -> str:
    names = rep.classes
    w = max(8, *(len(n) for n in names))
    lines = [f"classify: classes ({len(names)}): {', '.join(names)}; pass class {pass_class!r}",
             f"  {'split':<8}{'images':>8}  " + "".join(f"{n[:w]:>{w + 1}}" for n in names) + f"{'NG share':>10}"]
    for s, c in rep.per_split.items():
        ng = c["images"] - c["per_class"].get(pass_class, 0)
        lines.append(f"  {s:<8}{c['images']:>8}  " + "".join(f"{c['per_class'][n]:>{w + 1}}" for n in names)
                     + f"{ng / max(1, c['images']):>10.1%}")
    lines.append(f"image sizes: {dict(rep.image_sizes.most_common(5))}"
                 + (f" (+{len(rep.image_sizes) - 5} more)" if len(rep.image_sizes) > 5 else "")
                 + f"; {dict(rep.channels)}")
    if rep.ok:
        lines.append("check passed: no findings")
    for kind, items in rep.findings.items():
        if items:
            lines.append(f"FAIL {kind}: {len(items)}")
            lines.extend(f"  {m}" for m in items[:EXAMPLES])
            if len(items) > EXAMPLES:
                lines.append(f"  ... {len(items) - EXAMPLES} more (all in --json)")
    return "\n".join(lines)


def check_cls_dataset(target: Path, near_dup_bits: int = 10, json_out: str | None = None) -> int:
    try:
        rep, good = run_cls_check(target, near_dup_bits)
    except (OSError, ClsImportError) as e:
        print(f"dataset check: cannot read {target}: {e}")
        return 2
    print(format_cls_report(rep, good))
    if json_out:
        Path(json_out).write_text(json.dumps({
            "ok": rep.ok, "task": "classify", "classes": rep.classes, "pass_class": good, "per_split": rep.per_split,
            "image_sizes": dict(rep.image_sizes), "channels": dict(rep.channels),
            "findings": {k: v for k, v in rep.findings.items() if v}}, indent=2) + "\n")
    return 0 if rep.ok else 2
