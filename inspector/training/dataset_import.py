"""`inspector dataset import`: any supported export -> one canonical YOLO dataset.

Layout written (what ultralytics trains on and what every other offline command reads):
    DIR/images/{train,val[,test]}/<name>   the source image bytes, unchanged
    DIR/labels/{train,val[,test]}/<stem>.txt   "class cx cy w h", normalised
    DIR/data.yaml      splits and class names (no `path:`: relative to the yaml, so DIR can move)
    DIR/dataset.json   classes, counts per split and class, source, split rule, content hashes,
                       image channels, and every skipped file with its reason

Every image is decoded once here (an unreadable or truncated image is skipped and named), each
box checked against the decoded size. An image with any bad annotation is skipped whole, not
imported without that box: an unlabelled defect would teach the model that it is background.
The dataset is written to a temporary folder beside DIR and renamed into place, so DIR is
either the previous complete dataset or the new complete one, never half-written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from inspector.kernel.atomic_dir import replace_dir
from inspector.training.importers import (
    DUPLICATE,
    NON_FINITE,
    Annotated,
    Export,
    Problem,
    export_root,
    finite,
    read_export,
    read_file,
    threaded_map,
)
from inspector.training.review_outcomes import apply_review, format_review

SPLITS = ("train", "val", "test")
EDGE_TOLERANCE_PX = 1.0  # VOC/CVAT coordinates are often 1-based: xmax == width + 1 is the edge, not an error
MIN_BOX_PX = 1.0
DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class SplitRule:
    """How images are assigned to splits. One of: a split file, the source's own splits, or a
    seeded random fraction (by group when a grouping pattern is given)."""
    split_file: Path | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    group_by: str | None = None  # regex over the image's path in the source; group = 1st capture group

    def describe(self, used_source_splits: bool) -> dict:
        if self.split_file is not None:
            return {"kind": "split-file", "file": str(self.split_file)}
        if used_source_splits:
            return {"kind": "source", "note": "the splits the source dataset declares"}
        return {"kind": "random-fraction", "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "seed": self.seed, "group_by": self.group_by,
                "note": "groups (or single images) shuffled with the seed; one group never spans two splits"}


@dataclass(frozen=True)
class ImportResult:
    out: Path
    summary: dict
    problems: list[Problem]


@dataclass(frozen=True)
class _Ready:
    """An image checked and already copied into the new dataset's pending folder: its bytes are not
    kept (a 50 000-image import holds one image at a time), its sha256 is."""
    item: Annotated
    name: str
    sha256: str
    rows: list[tuple[int, float, float, float, float]]
    channels: int  # 1 for grayscale (1 channel, or 3 equal channels), else 3
    staged: str  # its copy in the new dataset's pending folder


def refuse_overlap(out: Path, sources: dict[str, Path]) -> str | None:
    """Why `out` may not be written: it is, lies inside or contains one of the sources (writing it
    would replace the source, or read the dataset being written back as input). None when apart."""
    o = Path(os.path.realpath(out))
    for what, p in sources.items():
        r = Path(os.path.realpath(p))
        if o == r:
            return f"--out {out} is the {what} {p}"
        if o.is_relative_to(r):
            return f"--out {out} lies inside the {what} {p}"
        if r.is_relative_to(o):
            return f"--out {out} contains the {what} {p}"
    return None


def write_data_yaml(root: Path, splits: list[str], names: list[str], comment: str) -> Path:
    """data.yaml with a YAML writer: names that YAML would read as something else (no, null, 1.5, #0,
    'dent: deep') are quoted, so every reader (ultralytics, train, check, merge) gets the same strings."""
    doc = {**{s: f"images/{s}" for s in splits}, "names": {i: str(n) for i, n in enumerate(names)}}
    path = Path(root) / "data.yaml"
    path.write_text(f"# {comment}\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True,
                                                      default_flow_style=False))
    return path


def read_split_file(path: Path) -> dict[str, str]:
    """name stem -> split. Accepts a folder (or one file in it) holding train.txt / val.txt [/ test.txt],
    one image per line (stem, file name or path), or one file of `<image> <split>` lines."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    per_split = {s: folder / f"{s}.txt" for s in SPLITS if (folder / f"{s}.txt").exists()}
    out: dict[str, str] = {}
    if path.is_dir() or path.stem in SPLITS:
        if "train" not in per_split or "val" not in per_split:
            raise ValueError(f"{folder}: a split folder needs train.txt and val.txt (found {sorted(per_split)})")
        for split, f in per_split.items():
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if line.strip():
                    _assign(out, Path(line.strip().replace("\\", "/")).stem, split, f, n)
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise ValueError(f"{path} line {n}: expected '<image> <train|val|test>', got {line!r}")
        _assign(out, Path(parts[0].replace("\\", "/")).stem, parts[1], path, n)
    return out


def _assign(out: dict[str, str], stem: str, split: str, f: Path, n: int) -> None:
    if out.get(stem, split) != split:
        raise ValueError(f"{f} line {n}: {stem!r} is already in the {out[stem]} split")
    out[stem] = split


def import_dataset(fmt: str, src: Path, out: Path, *, classes: list[str] | None = None,
                   rule: SplitRule = SplitRule(), log=print) -> ImportResult:
    src, out = Path(src), Path(out)
    _check_out(out, {"export": export_root(src)})
    export = read_export(fmt, src)
    if export.root is not None:  # a data.yaml's `path:` may name another folder than the one given
        _check_out(out, {"export": export.root})
    review = apply_review(fmt, src, export)  # a reviewed `inspector review export`: outcomes, checked strictly
    if review is not None:
        log(format_review(review))
    problems = list(export.problems)
    names = _class_names(export, classes, problems)
    if len(set(names)) != len(names):
        raise ValueError(f"class names repeat: {names}")
    out = out.resolve()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # One pass over the images, each read once (hashed, decoded, checked, copied to tmp/pending) by
        # importers.threaded_map (file I/O, the decoder and sha256 release the GIL), a bounded window in
        # flight: memory holds results without their bytes, not the dataset. Duplicates by dict lookups, in
        # export order (the list scan was quadratic: 9.6 s for 8000 images).
        pending = tmp / "pending"
        pending.mkdir(parents=True)
        ready: list[_Ready] = []
        taken: dict[str, Path] = {}
        digests: dict[str, Path] = {}
        stems: dict[str, Path] = {}
        imported: set[Path] = set()
        for item, (r, problem) in _staged(export.items, names, str(pending)):
            if item.image in imported:
                problems.append(Problem(str(item.source), f"annotates {item.image.name} a second time (only the "
                                                          "first annotation is imported)", DUPLICATE))
                problem = problem or DUPLICATE
            elif problem is not None:
                problems.append(problem)
            elif r.sha256 in digests:  # one image labelled twice: double weight in training, leakage across splits
                problems.append(Problem(str(item.image), f"the same image bytes as {digests[r.sha256]} (only the "
                                                         "first is imported)", DUPLICATE))
                problem = DUPLICATE
            elif r.name.lower() in taken:
                problems.append(Problem(str(item.image), f"a second image named {r.name} (first: "
                                                         f"{taken[r.name.lower()]})", DUPLICATE))
                problem = DUPLICATE
            elif os.path.splitext(r.name)[0] in stems:  # differing only in suffix: one label file for both
                stem = os.path.splitext(r.name)[0]
                problems.append(Problem(str(item.image), f"shares the stem {stem!r} with {stems[stem]} (their "
                                                         "labels would collide)", DUPLICATE))
                problem = DUPLICATE
            if problem is not None:
                if r is not None:
                    os.unlink(r.staged)
                continue
            digests[r.sha256] = taken[r.name.lower()] = stems[os.path.splitext(r.name)[0]] = item.image
            imported.add(item.image)
            ready.append(r)

        assignment, used_source = _split(ready, src, rule, problems)
        ready = [r for r in ready if r.name in assignment]
        if not ready:
            raise ValueError(f"nothing to import from {src} ({len(problems)} problems; first: "
                             f"{problems[0] if problems else 'no annotated images found'})")
        summary = _write(ready, assignment, names, tmp, {
            "format": fmt, "path": str(src.resolve()), **({"review": review} if review is not None else {}),
        }, rule.describe(used_source), problems)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(out, summary, problems)


def _check_out(out: Path, sources: dict[str, Path]) -> None:
    why = refuse_overlap(out, sources)
    if why is not None:
        raise ValueError(f"{why}: the dataset is written elsewhere, never over or inside its source (an import "
                         "onto its own folder deletes the frames it skips)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / DATASET_JSON).exists())):
        raise FileExistsError(f"{out} exists and is not a dataset written by `inspector dataset import`: "
                              "choose an empty or new --out")


def _class_names(export: Export, classes: list[str] | None, problems: list[Problem]) -> list[str]:
    """The class list; a YOLO export without names labels its boxes by class id: `--classes` names
    the ids (id i -> the i-th name), else the ids are the names ('0', '1', ...)."""
    if not export.by_index:
        return list(classes) if classes else (export.classes or sorted({b.label for i in export.items
                                                                        for b in i.boxes}))
    if not classes:
        top = max((int(b.label) for i in export.items for b in i.boxes), default=-1)
        return [str(k) for k in range(top + 1)]
    keep = []
    for item in export.items:
        bad = [b.label for b in item.boxes if int(b.label) >= len(classes)]
        if bad:
            problems.append(Problem(str(item.source), f"class id {bad[0]}: --classes names {len(classes)} classes "
                                                      f"(ids 0..{len(classes) - 1})"))
            continue
        keep.append(replace(item, boxes=tuple(replace(b, label=classes[int(b.label)]) for b in item.boxes)))
    export.items = keep
    return list(classes)


def _staged(items: list[Annotated], names: list[str], pending: str):
    """(item, (ready or None, problem or None)) in export order; a ready image is already in `pending`."""
    return zip(items, threaded_map(_prepare, [(i, item, names, pending) for i, item in enumerate(items)]), strict=True)


def _prepare(i: int, item: Annotated, names: list[str], pending: str) -> tuple[_Ready | None, Problem | None]:
    """Reads the image once: decodes it, checks every box against it, hashes it and writes the bytes
    to pending/<i>. Returns (ready, None) or (None, the problem)."""
    try:
        data = read_file(item.image)
    except OSError as e:
        return None, Problem(str(item.image), f"cannot read: {e}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None or img.size == 0 or not _complete(data, item.image.suffix.lower()):
        return None, Problem(str(item.image), "unreadable or truncated image (the decoder rejected it)")
    h, w = img.shape[:2]
    if item.size is not None and tuple(item.size) != (w, h):
        return None, Problem(str(item.source), f"says the image {item.image.name} is {item.size[0]}x{item.size[1]}, "
                                               f"the file is {w}x{h}")
    rows = []
    for b in item.boxes:
        x1, y1, x2, y2 = (b.x1 * w, b.y1 * h, b.x2 * w, b.y2 * h) if item.normalized else (b.x1, b.y1, b.x2, b.y2)
        if not finite(x1, y1, x2, y2):  # max(0, nan) is 0 and min(w, nan) is w: NaN became a whole-image box
            return None, Problem(str(item.source), f"box {b.label} ({x1:g},{y1:g},{x2:g},{y2:g}) in "
                                                   f"{item.image.name} has a non-finite coordinate", NON_FINITE)
        if b.label not in names:
            return None, Problem(str(item.source), f"class {b.label!r} is not one of {names}")
        tol = EDGE_TOLERANCE_PX
        if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
            return None, Problem(str(item.source), f"box {b.label} ({x1:g},{y1:g},{x2:g},{y2:g}) lies outside the "
                                                   f"{w}x{h} image {item.image.name}")
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
        if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            return None, Problem(str(item.source), f"box {b.label} ({x1:g},{y1:g},{x2:g},{y2:g}) in "
                                                   f"{item.image.name} is degenerate (under {MIN_BOX_PX:g} px)")
        rows.append((names.index(b.label), (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
    channels = 1 if img.ndim == 2 or img.shape[2] == 1 or _equal_channels(img) else 3
    staged = os.path.join(pending, str(i))
    write_new(staged, data)
    return _Ready(item, item.image.name, hashlib.sha256(data).hexdigest(), rows, channels, staged), None


def _equal_channels(img: np.ndarray) -> bool:
    return img.ndim == 3 and img.shape[2] >= 3 and bool(np.array_equal(img[..., 0], img[..., 1])
                                                         and np.array_equal(img[..., 1], img[..., 2]))


def _complete(data: bytes, suffix: str) -> bool:
    """OpenCV decodes a truncated JPEG with grey rows and only a warning: require the end marker
    (some encoders pad after it, hence the search over the last bytes)."""
    if suffix in (".jpg", ".jpeg"):
        return b"\xff\xd9" in data[-64:]
    return True


def _split(ready: list[_Ready], src: Path, rule: SplitRule, problems: list[Problem]) -> tuple[dict[str, str], bool]:
    if rule.split_file is not None:
        table = read_split_file(rule.split_file)
        out = {}
        for r in ready:
            split = table.get(Path(r.name).stem)
            if split is None:
                problems.append(Problem(str(r.item.image), f"not listed in the split file {rule.split_file}"))
            else:
                out[r.name] = split
        return out, False
    if rule.group_by is None and all(r.item.split for r in ready) and any(r.item.split != "train" for r in ready):
        return {r.name: r.item.split for r in ready}, True
    groups: dict[str, list[str]] = {}
    pattern = re.compile(rule.group_by) if rule.group_by else None
    for r in ready:
        key = r.name
        if pattern is not None:
            rel = _relative(r.item.image, src)
            m = pattern.search(rel)
            if m is None:
                problems.append(Problem(str(r.item.image), f"--group-by {rule.group_by!r} does not match {rel!r}"))
                continue
            key = m.group(1) if m.groups() else m.group(0)
        groups.setdefault(key, []).append(r.name)
    keys = sorted(groups)
    random.Random(rule.seed).shuffle(keys)
    n = sum(len(v) for v in groups.values())
    out, n_val, n_test = {}, 0, 0
    for k in keys:
        if n_test < rule.test_fraction * n:
            split = "test"
            n_test += len(groups[k])
        elif n_val < rule.val_fraction * n:
            split = "val"
            n_val += len(groups[k])
        else:
            split = "train"
        for name in groups[k]:
            out[name] = split
    return out, False


def _relative(p: Path, src: Path) -> str:
    base = src if src.is_dir() else src.parent
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _write(ready: list[_Ready], assignment: dict[str, str], names: list[str], tmp: Path, source: dict,
           split_rule: dict, problems: list[Problem]) -> dict:
    """Moves the pending images into their splits, writes labels, data.yaml and dataset.json in tmp."""
    splits = [s for s in SPLITS if s in assignment.values()]
    for s in splits:
        (tmp / "images" / s).mkdir(parents=True)
        (tmp / "labels" / s).mkdir(parents=True)
    files, channels, moves = [], set(), []
    for r in sorted(ready, key=lambda r: (assignment[r.name], r.name)):
        s = assignment[r.name]
        label = "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in r.rows)
        moves.append((r.staged, os.path.join(tmp, "images", s, r.name),
                      os.path.join(tmp, "labels", s, os.path.splitext(r.name)[0] + ".txt"), label))
        files.append((s, r.name, r.sha256, label))
        channels.add(r.channels)
    for _ in threaded_map(_place, moves):
        pass
    shutil.rmtree(tmp / "pending")  # what is left: images no split took (not in the split file, no group)
    write_data_yaml(tmp, splits, names, "written by inspector dataset import; paths relative to this file")
    summary = {
        "format_version": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source,
        "classes": names,
        "splits": splits,
        "split_rule": split_rule,
        **_describe(files, names, splits),
        "image_channels": 1 if channels == {1} else 3,
        "image_channels_note": "1: every image is grayscale (stored with 1 or 3 equal channels); 3: colour",
        "skipped": [{"file": p.file, "reason": p.reason, "kind": p.kind} for p in problems],
        "skipped_counts": dict(sorted(Counter(p.kind for p in problems).items())),
    }
    (tmp / DATASET_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _place(staged: str, image: str, label_path: str, label: str) -> None:
    os.replace(staged, image)
    write_new(label_path, label.encode())


# Raw descriptors for the per-image files: open() adds an isatty ioctl, an fstat and lseeks to each
# (strace of a 5000-image import: 20k ioctl, 35k lseek beside 20k openat), cp -r makes none of them.
def write_new(path: str | os.PathLike, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _describe(files: list[tuple[str, str, str, str]], names: list[str], splits: list[str]) -> dict:
    """counts and sha256 of (split, image name, image sha256, label text) rows; the one definition
    of a dataset's content hash, for import, synth and merge alike."""
    img_hash, lbl_hash = hashlib.sha256(), hashlib.sha256()
    counts = {s: _empty_counts(names) for s in splits}
    for s, name, sha, text in sorted(files, key=lambda f: (f[0], f[1])):
        lname = Path(name).stem + ".txt"
        img_hash.update(f"{s}/{name}:{sha}\n".encode())
        lbl_hash.update(f"{s}/{lname}:{hashlib.sha256(text.encode()).hexdigest()}\n".encode())
        rows = [ln.split() for ln in text.splitlines() if ln.strip()]
        c = counts[s]
        c["images"] += 1
        c["boxes"] += len(rows)
        c["background_images"] += not rows
        for row in rows:
            c["per_class"][names[int(row[0])]] += 1
    content = hashlib.sha256(f"{img_hash.hexdigest()}\n{lbl_hash.hexdigest()}\n{names}".encode()).hexdigest()
    return {"counts": counts,
            "sha256": {"images": img_hash.hexdigest(), "labels": lbl_hash.hexdigest(), "content": content}}


def write_description(root: Path, names: list[str], source: dict, split_rule: dict,
                      digests: dict[tuple[str, str], str] | None = None) -> Path:
    """data.yaml and dataset.json for a canonical dataset already on disk (the synthetic line, a
    merge); the same hashes as `import_dataset` computes for the same files. `digests` ((split,
    image name) -> sha256) spares reading images whose hash the caller has. Returns the data.yaml path."""
    root = Path(root)
    splits = [s for s in SPLITS if (root / "images" / s).is_dir()]
    files = []
    for s in splits:
        for img in sorted((root / "images" / s).iterdir()):
            lbl = root / "labels" / s / (img.stem + ".txt")
            sha = (digests or {}).get((s, img.name)) or file_sha256(img)
            files.append((s, img.name, sha, lbl.read_text() if lbl.exists() else ""))
    path = write_data_yaml(root, splits, names, "paths relative to this file")
    (root / DATASET_JSON).write_text(json.dumps({
        "format_version": 1, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source, "classes": names, "splits": splits, "split_rule": split_rule,
        **_describe(files, names, splits), "image_channels": 3, "skipped": []}, indent=2) + "\n")
    return path


def file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _empty_counts(names: list[str]) -> dict:
    return {"images": 0, "background_images": 0, "boxes": 0, "per_class": dict.fromkeys(names, 0)}


def format_summary(summary: dict) -> str:
    names = summary["classes"]
    lines = [f"classes ({len(names)}): {', '.join(names)}"]
    w = max(8, *(len(n) for n in names))
    lines.append(f"  {'split':<8}{'images':>8}{'boxes':>8}  " + "".join(f"{n[:w]:>{w + 1}}" for n in names))
    for s, c in summary["counts"].items():
        lines.append(f"  {s:<8}{c['images']:>8}{c['boxes']:>8}  "
                     + "".join(f"{c['per_class'][n]:>{w + 1}}" for n in names))
    lines.append(f"split: {summary['split_rule']}")
    lines.append(f"content sha256: {summary['sha256']['content']}")
    return "\n".join(lines)
