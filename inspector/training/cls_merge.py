"""`inspector dataset merge BASE NEW --out DIR` for classification datasets: merge.py's rules on image-level labels.

One copy per content sha256 (where NEW holds BASE's bytes under another class, NEW's label wins: a reviewer moved
it; the copy keeps BASE's split); groups (image stems, or what members.jsonl records) never span two splits; the
frozen regression set is the `test` split, copied byte for byte and checked against the sha256 its dataset.json
records (made once from BASE's train groups when BASE has none); NEW images of a regression group are left out.
DIR/dataset.json (cls_dataset.describe_rows + version, parents, regression) and DIR/members.jsonl as merge.py's.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from inspector.kernel.atomic_dir import replace_dir
from inspector.training.cls_dataset import ClsImportError, describe_rows, load_cls_dataset, write_cls_description
from inspector.training.dataset_import import DATASET_JSON, SPLITS, file_sha256, refuse_overlap
from inspector.training.importers import IMAGE_SUFFIXES
from inspector.training.merge import (
    MEMBERS,
    REGRESSION_SPLIT,
    Member,
    MergeError,
    group_hash,
    read_meta,
    recorded_members,
    regression_hash,
    source_name,
)


def read_cls_members(root: Path, meta: dict, splits: tuple[str, ...] = SPLITS) -> list[Member]:
    known = recorded_members(root)
    # a reviewed frame's group is its part id (merge.py's rule): the line's frame of a regression part stays out
    review = (meta.get("source") or {}).get("review") or {}
    parts = {i["file"]: i.get("part_id") for i in review.get("items", [])}
    default_source = source_name(root, meta)
    out = []
    for split in splits:
        if not (root / split).is_dir():
            continue
        for d in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for img in sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                k = known.get((split, img.name), {})
                out.append(Member(split, img.name, img, file_sha256(img), d.name, k.get("source", default_source),
                                  str(k.get("group") or parts.get(img.name) or img.stem)))
    return out


def merge_classify(base: Path, new: Path, out: Path, *, val_fraction: float = 0.2, regression_fraction: float = 0.1,
                   seed: int = 0) -> dict:
    try:
        bds, nds = load_cls_dataset(base), load_cls_dataset(new)
    except ClsImportError as e:
        raise MergeError(str(e)) from e
    if bds.classes != nds.classes or bds.pass_class != nds.pass_class:
        raise MergeError(f"the datasets' classes differ: {bds.root} has {bds.classes} (pass {bds.pass_class!r}), "
                         f"{nds.root} has {nds.classes} (pass {nds.pass_class!r})")
    out = Path(out).resolve()
    why = refuse_overlap(out, {"BASE": bds.root, "NEW": nds.root})
    if why is not None:
        raise MergeError(f"{why}: a version is never written over, inside or around its parents")
    if out.exists() and any(out.iterdir()) and not (out / DATASET_JSON).exists():
        raise MergeError(f"{out} exists and is not a dataset: choose an empty or new --out")
    bmeta, nmeta = read_meta(bds.root), read_meta(nds.root)
    frozen = bmeta.get("regression")
    reg = read_cls_members(bds.root, bmeta, (REGRESSION_SPLIT,))
    if frozen and regression_hash(reg) != frozen.get("sha256"):
        raise MergeError(f"{bds.root}: its regression set ({len(reg)} images, {frozen.get('images')} frozen) no longer "
                         f"has the sha256 its dataset.json records ({str(frozen.get('sha256', ''))[:12]}): restore "
                         "it from the version that made it")
    bm = read_cls_members(bds.root, bmeta, tuple(s for s in SPLITS if s != REGRESSION_SPLIT)) + reg
    nm = read_cls_members(nds.root, nmeta)
    if not reg:
        for m in bm:
            if m.split == "train" and group_hash(m.group, seed + 1) < regression_fraction:
                m.split = REGRESSION_SPLIT
        reg = [m for m in bm if m.split == REGRESSION_SPLIT]
    reg_groups, reg_shas = {m.group for m in reg}, {m.sha for m in reg}
    group_split: dict[str, str] = {m.group: m.split for m in bm}
    stats: Counter = Counter()
    by_sha: dict[str, Member] = {}
    for m in bm:
        if m.sha in by_sha:
            stats["duplicates_in_base"] += 1
        else:
            by_sha[m.sha] = m
    for m in nm:
        if m.sha in reg_shas or m.group in reg_groups:
            stats["new_left_out_regression_part"] += 1
            continue
        old = by_sha.get(m.sha)
        if old is not None:
            if old.label != m.label:
                stats["base_relabelled_by_new"] += 1
                old.label, old.source = m.label, m.source
            else:
                stats["duplicates_of_base"] += 1
            continue
        m.split = group_split.get(m.group) or ("val" if group_hash(m.group, seed) < val_fraction else "train")
        group_split[m.group] = m.split
        by_sha[m.sha] = m
    members = list(by_sha.values())
    taken: set[tuple[str, str]] = set()
    for m in members:
        if (m.split, m.name.lower()) in taken:
            stem, suffix = os.path.splitext(m.name)
            m.name = f"{stem}_{m.sha[:12]}{suffix}"
            stats["renamed"] += 1
        taken.add((m.split, m.name.lower()))

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import cv2

        rows = []
        for m in sorted(members, key=lambda m: (m.split, m.label, m.name)):
            (tmp / m.split / m.label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(m.path, tmp / m.split / m.label / m.name)
            img = cv2.imread(str(m.path), cv2.IMREAD_UNCHANGED)
            size = (img.shape[1], img.shape[0]) if img is not None else (0, 0)
            ch = 1 if img is not None and (img.ndim == 2 or img.shape[2] == 1) else 3
            rows.append((m.split, m.label, m.name, m.sha, size, ch))
        splits = [s for s in SPLITS if any(m.split == s for m in members)]
        summary = describe_rows(rows, bds.classes, bds.pass_class, splits)
        parents = [{"path": str(r), "content_sha256": (x.get("sha256") or {}).get("content"),
                    "version": x.get("version", {}).get("number", 1)}
                   for r, x in ((bds.root, bmeta), (nds.root, nmeta))]
        write_cls_description(tmp, summary, {"format": "merge", "parents": parents},
                              {"kind": "merge", "seed": seed, "val_fraction": val_fraction,
                               "regression_fraction": regression_fraction if not frozen else None}, [])
        meta = json.loads((tmp / DATASET_JSON).read_text())
        final_reg = [m for m in members if m.split == REGRESSION_SPLIT]
        per_source: dict[str, Counter] = {}
        for m in members:
            c = per_source.setdefault(m.source, Counter())
            c["images"] += 1
            c[m.split] += 1
        meta.update({
            "version": {"number": int(bmeta.get("version", {}).get("number", 1)) + 1, "parents": parents},
            "counts_per_source": {s: dict(c) for s, c in sorted(per_source.items())},
            "regression": {"split": REGRESSION_SPLIT, "images": len(final_reg), "sha256": regression_hash(final_reg),
                           "frozen_since": (frozen or {}).get("frozen_since") or meta["sha256"]["content"],
                           "note": "never changes between versions: compare candidates on it"},
            "merge": dict(stats)})
        (tmp / DATASET_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp / MEMBERS, "w") as fh:
            for m in sorted(members, key=lambda m: (m.split, m.name)):
                fh.write(json.dumps({"split": m.split, "file": m.name, "class": m.label, "sha256": m.sha,
                                     "label_sha256": m.label_sha, "source": m.source, "group": m.group},
                                    sort_keys=True) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def format_cls_merge(meta: dict) -> str:
    lines = [f"dataset version {meta['version']['number']} (classify): content sha256 {meta['sha256']['content']}"]
    for s, c in meta["counts"].items():
        lines.append(f"  {s:<6}{c['images']:>7} images  " + ", ".join(f"{k} {v}" for k, v in c["per_class"].items()))
    for src, c in meta["counts_per_source"].items():
        lines.append(f"    {src}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    r = meta["regression"]
    lines.append(f"  regression set ({r['split']}): {r['images']} images, sha256 {r['sha256'][:16]} (frozen)")
    if meta["merge"]:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in meta["merge"].items()))
    return "\n".join(lines)
