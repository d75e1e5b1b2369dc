"""merge.py's Layout for classification datasets (data.yaml `task: classify`): split/class/image folders, the
class folder being an image's label (its label sha256 is the class name's). A member's group is what
members.jsonl records, a reviewed frame's part id, else the image stem (merge.py's rule); two images of one
file name never meet in a split. The description is cls_dataset's (describe_rows: counts, sizes, channels, the
content hash); members.jsonl rows also name the class."""

from __future__ import annotations

import shutil
from pathlib import Path

from inspector.training.cls_dataset import ClsImportError, describe_rows, load_cls_dataset, write_cls_description
from inspector.training.dataset_import import SPLITS, file_sha256
from inspector.training.importers import IMAGE_SUFFIXES
from inspector.training.merge import REGRESSION_SPLIT, Layout, Member, MergeError, recorded_members, source_name


def read_members(root: Path, meta: dict, splits: tuple[str, ...] = SPLITS) -> list[Member]:
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


def _open(p: Path) -> tuple[Path, list[str], str | None]:
    try:
        ds = load_cls_dataset(p)
    except ClsImportError as e:
        raise MergeError(str(e)) from e
    return ds.root, ds.classes, ds.pass_class


def _write(tmp: Path, members: list[Member], classes: list[str], pass_class: str | None, source: dict,
           split_rule: dict) -> None:
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
    write_cls_description(tmp, describe_rows(rows, classes, pass_class, splits), source, split_rule, [])


CLASS_FOLDERS = Layout(
    open=_open, read=read_members, write=_write,
    where=lambda name, label: f"{REGRESSION_SPLIT}/{label}/{name}",
    relabelled=lambda name, row, m: f"{REGRESSION_SPLIT}/{name}: moved from class {row.get('class')!r} to {m.label!r}",
    name_key=str.lower, row=lambda m: {"class": m.label}, counts=lambda m: {},
    split_line=lambda s, c: f"  {s:<6}{c['images']:>7} images  ", kind=" (classify)")
