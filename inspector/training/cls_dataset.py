"""Image-level labels (OK/NG, or one class per defect type) -> one classification dataset.

Sources (`inspector dataset import --from ...`):
- folders: SRC/<class>/**/<image> (one sub-folder per class, as a reviewer sorts images at the line),
  or SRC/{train,val[,test]}/<class>/... (those splits are kept: an Ultralytics classify dataset, a merge);
- csv: `path,label[,split]` rows (a header row is allowed), paths relative to the CSV's folder;
- labelstudio: `choices` results; cvat: `<tag label=...>` per image (importers.read_export(image_labels=True)).

Layout written (what Ultralytics classify trains on, and what check/merge/train/eval read):
    DIR/{train,val[,test]}/<class>/<name>   the source image bytes, unchanged
    DIR/data.yaml      task: classify, the split folders, the class names (sorted: Ultralytics numbers the
                       class folders in sorted order, so the model's outputs are in this order)
    DIR/dataset.json   task, classes, pass_class, counts per split and class, content hash, split rule,
                       image sizes and channels, every skipped file with its reason

Bad input that makes the whole import meaningless is refused (ClsImportError, exit 2, naming it): a source
with one class only, an empty class folder, a CSV row naming a missing file, a label not among `--classes`,
no pass class. Single bad images (unreadable, the same bytes twice) are skipped and named as in the box import.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from inspector.kernel.atomic_dir import replace_dir
from inspector.training.dataset_import import (
    DATASET_JSON,
    SPLITS,
    SplitRule,
    read_split_file,
    refuse_overlap,
)
from inspector.training.importers import (
    DUPLICATE,
    IMAGE_SUFFIXES,
    INVALID,
    MALFORMED,
    Confine,
    Problem,
    read_export,
    read_file,
    threaded_map,
)

TASK = "classify"
GOOD_DEFAULTS = ("ok", "good")  # the pass class when --good is not given (case-insensitive)
CLS_FORMATS = ("folders", "csv", "labelstudio", "cvat")


class ClsImportError(ValueError):
    """The source cannot make a classification dataset (exit 2); the message names the file or folder."""


@dataclass(frozen=True)
class Labelled:
    image: Path  # the image in the source
    label: str
    where: str  # where the label was read (folder, CSV line, export task), named in messages
    split: str | None = None  # the split the source assigns, if any


@dataclass(frozen=True)
class ClsImportResult:
    out: Path
    summary: dict
    problems: list[Problem]


# --- sources ---------------------------------------------------------------------------------------
def read_folders(src: Path) -> list[Labelled]:
    """SRC/<class>/... or SRC/<split>/<class>/...; every image below a class folder is that class."""
    src = Path(src)
    if not src.is_dir():
        raise ClsImportError(f"{src}: not a folder (--from folders expects one sub-folder per class)")
    subdirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_layout = bool(subdirs) and "train" in {p.name for p in subdirs} and all(p.name in SPLITS for p in subdirs)
    roots = [(p, p.name) for p in subdirs] if split_layout else [(src, None)]
    confine = Confine(src)
    items: list[Labelled] = []
    for root, split in roots:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise ClsImportError(f"{root}: images directly in the folder ({', '.join(sorted(loose)[:3])}): every "
                                 "image must lie in its class's sub-folder (SRC/<class>/<image>)")
        for d in class_dirs:
            files, refused = confine.files(d, IMAGE_SUFFIXES)
            if refused:
                raise ClsImportError(f"{refused[0]} links outside {src}: only images inside the source are read")
            if not files:
                raise ClsImportError(f"class folder {d} holds no image ({', '.join(IMAGE_SUFFIXES)}): an empty "
                                     "class cannot be learnt; remove the folder or fill it")
            items += [Labelled(f, d.name, str(d), split) for f in sorted(files)]
    if split_layout and "val" not in {p.name for p in subdirs}:
        raise ClsImportError(f"{src}: a split layout needs train/ and val/ (found {[p.name for p in subdirs]})")
    return items


def read_csv(path: Path) -> list[Labelled]:
    """`path,label[,split]` rows; a first row `path,label[,split]` is a header. Paths are relative to the CSV's
    folder and must lie inside it (as every importer reads only inside the export)."""
    path = Path(path)
    if not path.is_file():
        raise ClsImportError(f"{path}: not a file (--from csv expects path,label rows)")
    root = path.parent
    confine = Confine(root)
    items: list[Labelled] = []
    missing: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or all(not c.strip() for c in row):
                continue
            cells = [c.strip() for c in row]
            if n == 1 and cells[0].lower() in ("path", "file", "image", "filename") and cells[1:2] == ["label"]:
                continue
            if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                raise ClsImportError(f"{path} line {n}: expected 'path,label[,split]', got {','.join(row)!r}")
            split = cells[2] if len(cells) == 3 and cells[2] else None
            if split is not None and split not in SPLITS:
                raise ClsImportError(f"{path} line {n}: split {split!r} is not one of {list(SPLITS)}")
            p = Path(cells[0].replace("\\", "/"))
            p = p if p.is_absolute() else root / p
            if not confine.holds(p):
                raise ClsImportError(f"{path} line {n}: {cells[0]} lies outside the CSV's folder {root} (only images "
                                     "inside it are read)")
            if not p.is_file():
                missing.append(f"line {n}: {cells[0]}")
                continue
            items.append(Labelled(p, cells[1], f"{path} line {n}", split))
    if missing:
        raise ClsImportError(f"{path} names {len(missing)} image(s) that do not exist ({'; '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''})")
    splits = {i.split for i in items}
    if len(splits) > 1 and None in splits:
        raise ClsImportError(f"{path}: some rows name a split and some do not: give every row one, or none")
    return items


def read_tagged(fmt: str, src: Path) -> tuple[list[Labelled], list[Problem], list[str] | None]:
    """Label Studio `choices` / CVAT tags: one label per image (an image with none, or with two, is skipped)."""
    export = read_export(fmt, src, image_labels=True)
    items, problems = [], list(export.problems)
    for a in export.items:
        tags = sorted(set(a.tags))
        if len(tags) != 1:
            what = "no image-level label" if not tags else f"{len(tags)} image-level labels {tags}"
            problems.append(Problem(str(a.source), f"{a.image.name}: {what} (expected one)", INVALID))
            continue
        items.append(Labelled(a.image, tags[0], str(a.source), a.split))
    return items, problems, export.classes


# --- the import ------------------------------------------------------------------------------------
def pass_class_of(classes: list[str], good: str | None) -> str:
    if good is not None:
        if good not in classes:
            raise ClsImportError(f"--good {good!r} is not one of the classes {classes}")
        return good
    found = [c for c in classes if c.lower() in GOOD_DEFAULTS]
    if len(found) != 1:
        raise ClsImportError(f"no pass class: name it with --good (classes {classes}; default: a class named "
                             f"{' or '.join(GOOD_DEFAULTS)})")
    return found[0]


def import_classify(fmt: str, src: Path, out: Path, *, classes: list[str] | None = None, good: str | None = None,
                    rule: SplitRule | None = None) -> ClsImportResult:
    src, out, rule = Path(src), Path(out), rule or SplitRule()
    root = src if src.is_dir() else src.parent
    why = refuse_overlap(out, {"source": root})
    if why is not None:
        raise ClsImportError(f"{why}: the dataset is written elsewhere, never over or inside its source")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / DATASET_JSON).exists())):
        raise ClsImportError(f"{out} exists and is not a dataset written by `inspector dataset import`: choose an "
                             "empty or new --out")
    if not src.exists():
        raise ClsImportError(f"{src} does not exist")
    problems: list[Problem] = []
    declared = None
    from inspector.training.review_classes import read_review  # a classifier's reviewed export (review.json)

    try:
        reviewed = read_review(fmt, src)
    except ValueError as e:
        raise ClsImportError(str(e)) from None
    if reviewed is not None:  # the review's classes and pass class: all the model's, even those the night lacks
        items = [Labelled(img, label, where) for img, label, where in reviewed.items]
        declared, good = reviewed.classes, good or reviewed.pass_class
    elif fmt == "folders":
        items = read_folders(src)
    elif fmt == "csv":
        items = read_csv(src)
    else:
        items, problems, declared = read_tagged(fmt, src)
    found = sorted({i.label for i in items})
    allowed = classes or declared
    if allowed:
        if len(set(allowed)) != len(allowed):
            raise ClsImportError(f"class names repeat: {allowed}")
        stray = [i for i in items if i.label not in allowed]
        if stray:
            raise ClsImportError(f"label {stray[0].label!r} ({stray[0].where}, {stray[0].image.name}) is not among "
                                 f"the classes {list(allowed)}" + (f" ({len(stray)} images)" if len(stray) > 1 else ""))
        unused = [c for c in allowed if c not in found]
        if unused and reviewed is None:
            raise ClsImportError(f"class {unused[0]!r} has no image in {src} (classes {list(allowed)}): an empty class "
                                 "cannot be learnt")
    names = sorted(found) if reviewed is None else sorted(reviewed.classes)
    if len(names) < 2:
        raise ClsImportError(f"{src}: one class only ({', '.join(names) or 'none'}): a classifier needs the pass "
                             "class and at least one other class")
    good_class = pass_class_of(names, good)
    out = out.resolve()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _build(items, names, good_class, tmp, rule, problems,
                         {"format": fmt, "path": str(src.resolve()),
                          **({"review": reviewed.summary} if reviewed is not None else {})})
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ClsImportResult(out, summary, problems)


def _probe(item: Labelled) -> tuple[str, tuple[int, int], int] | Problem:
    """(sha256, (width, height), channels) of the image, or why it cannot be used."""
    try:
        data = read_file(item.image)
    except OSError as e:
        return Problem(str(item.image), f"unreadable ({e})")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return Problem(str(item.image), "not a decodable image (corrupt or truncated)", MALFORMED)
    gray = img.ndim == 2 or img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1])
                                                  and np.array_equal(img[..., 1], img[..., 2]))
    return hashlib.sha256(data).hexdigest(), (int(img.shape[1]), int(img.shape[0])), 1 if gray else 3


def _build(items: list[Labelled], names: list[str], good: str, tmp: Path, rule: SplitRule,
           problems: list[Problem], source: dict) -> dict:
    ready: list[tuple[Labelled, str, str, tuple[int, int], int]] = []  # item, file name, sha, size, channels
    digests: dict[str, Labelled] = {}
    taken: set[str] = set()
    for item, probe in zip(items, threaded_map(_probe, [(i,) for i in items]), strict=True):
        if isinstance(probe, Problem):
            problems.append(probe)
            continue
        sha, size, ch = probe
        if sha in digests:
            first = digests[sha]
            why = "" if first.label == item.label else f" labelled {first.label!r} there, {item.label!r} here"
            problems.append(Problem(str(item.image), f"the same image bytes as {first.image}{why} (only the first is "
                                                     "imported)", DUPLICATE))
            continue
        digests[sha] = item
        name = item.image.name
        if name.lower() in taken:  # two folders holding part_1.png: keep both, renamed by their content
            name = f"{item.image.stem}-{sha[:8]}{item.image.suffix}"
        taken.add(name.lower())
        ready.append((item, name, sha, size, ch))
    if not ready:
        raise ClsImportError(f"nothing to import ({len(problems)} problems; first: "
                             f"{problems[0] if problems else 'no labelled images'})")
    assignment, rule_desc = _split(ready, rule)
    splits = [s for s in SPLITS if s in assignment.values()]
    if "val" not in splits:
        raise ClsImportError("no image went to val (too few images for --val-fraction?): thresholds are calibrated "
                             "on val")
    tmp.mkdir(parents=True)
    rows = []
    for item, name, sha, size, ch in ready:
        s = assignment[name]
        d = tmp / s / item.label
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.image, d / name)
        rows.append((s, item.label, name, sha, size, ch))
    summary = describe_rows(rows, names, good, splits)
    write_cls_description(tmp, summary, source, rule_desc, problems)
    return summary


def _split(ready: list, rule: SplitRule) -> tuple[dict[str, str], dict]:
    """file name -> split: the source's own splits, a split file, or a seeded fraction per class (stratified:
    each split gets each class's share), by group when --group-by is given."""
    own = {r[0].split for r in ready}
    if rule.split_file is None and None not in own:
        return {r[1]: r[0].split for r in ready}, {"kind": "source", "note": "the splits the source declares"}
    if rule.split_file is not None:
        table = read_split_file(rule.split_file)
        out = {}
        for item, name, *_ in ready:
            s = table.get(item.image.stem) or table.get(Path(name).stem)
            if s is None:
                raise ClsImportError(f"{item.image.name} is not in the split file {rule.split_file}")
            out[name] = s
        return out, {"kind": "split-file", "file": str(rule.split_file)}
    rng = random.Random(rule.seed)
    out: dict[str, str] = {}
    by_class: dict[str, list] = {}
    for r in ready:
        by_class.setdefault(r[0].label, []).append(r)
    for label in sorted(by_class):
        groups: dict[str, list[str]] = {}
        for item, name, *_ in by_class[label]:
            key = name
            if rule.group_by:
                m = re.search(rule.group_by, str(item.image))
                key = (m.group(1) if m and m.groups() else m.group(0)) if m else name
            groups.setdefault(key, []).append(name)
        keys = sorted(groups)
        rng.shuffle(keys)
        n_val = round(len(keys) * rule.val_fraction)
        n_test = round(len(keys) * rule.test_fraction)
        if rule.val_fraction > 0 and n_val == 0 and len(keys) > 1:
            n_val = 1  # every class in val: its threshold and recall need at least one image
        for k, key in enumerate(keys):
            s = "val" if k < n_val else "test" if k < n_val + n_test else "train"
            for name in groups[key]:
                out[name] = s
    return out, {"kind": "random-fraction", "stratified": "by class", "val_fraction": rule.val_fraction,
                 "test_fraction": rule.test_fraction, "seed": rule.seed, "group_by": rule.group_by}


def describe_rows(rows: list[tuple], names: list[str], good: str, splits: list[str]) -> dict:
    """counts, sizes, channels and the content hash of (split, class, name, sha256, (w, h), channels) rows:
    the one definition for import and merge."""
    h = hashlib.sha256()
    counts = {s: {"images": 0, "per_class": dict.fromkeys(names, 0)} for s in splits}
    sizes: Counter = Counter()
    channels = set()
    for s, label, name, sha, size, ch in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        h.update(f"{s}/{label}/{name}:{sha}\n".encode())
        counts[s]["images"] += 1
        counts[s]["per_class"][label] += 1
        sizes[f"{size[0]}x{size[1]}"] += 1
        channels.add(ch)
    content = hashlib.sha256(f"{h.hexdigest()}\n{names}\n{good}".encode()).hexdigest()
    return {"task": TASK, "classes": names, "pass_class": good, "splits": splits, "counts": counts,
            "image_sizes": dict(sizes.most_common(10)), "image_channels": 1 if channels == {1} else 3,
            "sha256": {"images": h.hexdigest(), "content": content}}


def write_cls_description(root: Path, summary: dict, source: dict, split_rule: dict,
                          problems: list[Problem]) -> Path:
    """data.yaml (task: classify) and dataset.json; returns the data.yaml path."""
    names = summary["classes"]
    doc = {"task": TASK, **{s: s for s in summary["splits"]}, "names": dict(enumerate(names)),
           "pass_class": summary["pass_class"]}
    path = Path(root) / "data.yaml"
    path.write_text("# a classification dataset (inspector dataset import): split/class/image, paths relative to "
                    "this file\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    (Path(root) / DATASET_JSON).write_text(json.dumps({
        "format_version": 1, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "source": source,
        **summary, "split_rule": split_rule,
        "skipped": [{"file": p.file, "reason": p.reason, "kind": p.kind} for p in problems],
        "skipped_counts": dict(Counter(p.kind for p in problems))}, indent=2) + "\n")
    return path


# --- reading a classification dataset --------------------------------------------------------------
@dataclass(frozen=True)
class ClsDataset:
    root: Path
    classes: list[str]
    pass_class: str
    splits: list[str]

    def images(self, split: str) -> list[tuple[Path, int]]:
        """(image, class index) of a split, in a stable order."""
        out = []
        for k, c in enumerate(self.classes):
            d = self.root / split / c
            if d.is_dir():
                out += [(f, k) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        return out


def is_classify(data: Path | str | None) -> bool:
    """Whether `data` (a data.yaml, or the dataset folder) is a classification dataset."""
    if data is None:
        return False
    p = Path(data)
    y = p / "data.yaml" if p.is_dir() else p
    try:
        return (yaml.safe_load(y.read_text()) or {}).get("task") == TASK
    except (OSError, yaml.YAMLError, AttributeError):
        return False


def load_cls_dataset(data: Path | str) -> ClsDataset:
    p = Path(data)
    y = p / "data.yaml" if p.is_dir() else p
    try:
        doc = yaml.safe_load(y.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ClsImportError(f"{y}: not a readable data.yaml ({e})") from e
    if doc.get("task") != TASK:
        raise ClsImportError(f"{y}: task is {doc.get('task', 'detect')!r}, expected {TASK!r} (a classification "
                             "dataset from `inspector dataset import --from folders|csv`)")
    names = doc.get("names") or {}
    classes = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    if classes != sorted(classes):
        raise ClsImportError(f"{y}: classes {classes} are not in sorted order (Ultralytics numbers class folders "
                             "sorted): re-import the dataset")
    good = doc.get("pass_class")
    if good not in classes:
        raise ClsImportError(f"{y}: pass_class {good!r} is not one of the classes {classes}")
    return ClsDataset(y.parent.resolve(), classes, good, [s for s in SPLITS if s in doc])


def format_cls_summary(summary: dict) -> str:
    names = summary["classes"]
    w = max(8, *(len(n) for n in names))
    lines = [f"classify: classes ({len(names)}): {', '.join(names)}; pass class {summary['pass_class']!r}",
             f"  {'split':<8}{'images':>8}  " + "".join(f"{n[:w]:>{w + 1}}" for n in names)]
    for s, c in summary["counts"].items():
        lines.append(f"  {s:<8}{c['images']:>8}  " + "".join(f"{c['per_class'][n]:>{w + 1}}" for n in names))
    lines.append(f"image sizes: {summary['image_sizes']}; channels {summary['image_channels']}")
    lines.append(f"content sha256: {summary['sha256']['content']}")
    return "\n".join(lines)


__all__ = ["CLS_FORMATS", "ClsImportError", "import_classify", "is_classify", "load_cls_dataset", "ClsDataset",
           "format_cls_summary", "describe_rows", "write_cls_description", "pass_class_of"]
