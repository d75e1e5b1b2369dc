"""`inspector dataset merge BASE NEW --out DIR`: the next version of a training set.

    - no duplicate images: one copy per content sha256; where NEW (reviewed labels) and BASE hold the
      same bytes, NEW's labels win (a reviewer corrected them) and the copy keeps BASE's split;
    - groups never split: a group (the part id of a reviewed frame, from the review record in NEW's
      dataset.json; the image stem otherwise) lies in one split. BASE keeps its splits; a NEW group
      seen in BASE follows it, the others go to val when a seeded hash of the group falls under
      --val-fraction (a hash, not a shuffle: a group keeps its split in every later version);
    - a frozen regression set, the `test` split, that candidates are always compared on: copied byte
      for byte from BASE when BASE has one (its sha256 is checked), else made once from BASE's train
      groups (--regression-fraction). NEW frames of a regression part are left out (leakage).
    - DIR/dataset.json: the usual description (content hash, counts per split and class) plus the
      version, its parents' hashes, counts per source and the regression set's hash; DIR/members.jsonl:
      one line per image (split, file, sha256, source, group), what `inspector compare` reads to find
      the newly reviewed frames. Written to a temporary folder and renamed.
One merge for every model kind; how a kind's dataset lies on disk (YOLO images/ + labels/ here, a classifier's
split/class/image in merge_classify.py: how members are read and written, how a regression image is named in an
error, which names may not meet in a split) is its Layout, chosen by BASE's data.yaml.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from inspector.errors import InspectorError
from inspector.kernel.atomic_dir import replace_dir
from inspector.training.dataset_import import DATASET_JSON, SPLITS, file_sha256, refuse_overlap, write_description
from inspector.training.importers import yaml_names

MEMBERS = "members.jsonl"
REGRESSION_SPLIT = "test"


class MergeError(InspectorError):
    exit_code = 2


@dataclass
class Member:
    """One image of a version: where its bytes are (read once, to hash them; copied, never held),
    its label text and where it came from."""
    split: str
    name: str
    path: Path
    sha: str
    label: str
    source: str
    group: str

    @property
    def label_sha(self) -> str:
        return hashlib.sha256(self.label.encode()).hexdigest()


def dataset_root(p: Path) -> Path:
    p = Path(p)
    root = p.parent if p.is_file() else p
    if not (root / "data.yaml").is_file():
        raise MergeError(f"{p}: not a dataset folder (no data.yaml)")
    return root


def read_meta(root: Path) -> dict:
    try:
        return json.loads((root / DATASET_JSON).read_text())
    except FileNotFoundError:
        raise MergeError(f"{root}: no {DATASET_JSON} (write datasets with `inspector dataset import`, "
                         "`inspector synth --split` or `inspector dataset merge`)") from None
    except ValueError as e:
        raise MergeError(f"{root / DATASET_JSON}: unreadable ({e})") from e


def classes_of(root: Path) -> list[str]:
    try:
        names = yaml_names((yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names"),
                           str(root / "data.yaml"))
    except (ValueError, yaml.YAMLError) as e:
        raise MergeError(str(e)) from e
    if names is None:
        raise MergeError(f"{root / 'data.yaml'}: no names")
    return names


def source_name(root: Path, meta: dict) -> str:
    review = (meta.get("source") or {}).get("review")
    if review:
        return f"review:{review.get('since')}..{review.get('until')}"
    fmt = (meta.get("source") or {}).get("format") or (meta.get("source") or {}).get("generator") or "dataset"
    return f"{fmt}:{root.name}@{(meta.get('sha256') or {}).get('content', '')[:12]}"


def read_members(root: Path, meta: dict, splits: tuple[str, ...] = SPLITS) -> list[Member]:
    known = {}
    if (root / MEMBERS).exists():
        for line in (root / MEMBERS).read_text().splitlines():
            r = json.loads(line)
            known[(r["split"], r["file"])] = r
    review = (meta.get("source") or {}).get("review") or {}
    parts = {i["file"]: i.get("part_id") for i in review.get("items", [])}
    default_source = source_name(root, meta)
    out = []
    for split in splits:
        d = root / "images" / split
        if not d.is_dir():
            continue
        for img in sorted(p for p in d.iterdir() if p.is_file()):
            lbl = root / "labels" / split / (img.stem + ".txt")
            k = known.get((split, img.name), {})
            group = k.get("group") or parts.get(img.name) or img.stem
            out.append(Member(split, img.name, img, file_sha256(img), lbl.read_text() if lbl.exists() else "",
                              k.get("source", default_source), str(group)))
    return out


def group_hash(group: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64


def regression_hash(members: list[Member]) -> str:
    h = hashlib.sha256()
    for m in sorted(members, key=lambda m: m.name):
        h.update(f"{m.name}:{m.sha}:{m.label_sha}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Layout:
    """How a model kind's dataset version lies on disk: merge's (and the regression check's) task part."""
    open: Callable[[Path], tuple[Path, list[str], str | None]]  # root, classes, pass class; MergeError if not one
    read: Callable[[Path, dict, tuple[str, ...]], list[Member]]  # (root, its dataset.json, splits)
    write: Callable[[Path, list[Member], list[str], str | None, dict, dict], None]  # files + data.yaml + dataset.json
    where: Callable[[str, str], str]  # (file, label) -> how a regression image is named in an error
    relabelled: Callable[[str, dict, Member], str]  # (file, its members.jsonl row, now) -> what an error says
    name_key: Callable[[str], str]  # two members of one split never share it (a renamed copy gets the sha)
    row: Callable[[Member], dict]  # members.jsonl fields besides split, file, sha256, label_sha256, source, group
    counts: Callable[[Member], dict]  # counts_per_source besides images and splits
    split_line: Callable[[str, dict], str]  # format_merge's line of a split's counts
    kind: str = ""  # format_merge's heading: what kind of dataset


def recorded_members(root: Path) -> dict[tuple[str, str], dict]:
    """(split, file) -> the members.jsonl row a version recorded."""
    path = root / MEMBERS
    if not path.exists():
        return {}
    rows = (json.loads(x) for x in path.read_text().splitlines() if x.strip())
    return {(r["split"], r["file"]): r for r in rows}


def regression_changes(root: Path, reg: list[Member], layout: Layout) -> list[str]:
    """What differs between the regression set on disk and the one the version recorded
    (members.jsonl): images deleted, added or changed, labels changed or deleted."""
    rec = {f: r for (s, f), r in recorded_members(root).items() if s == REGRESSION_SPLIT}
    now = {m.name: m for m in reg}
    out = [f"{layout.where(n, rec[n].get('class', '?'))}: deleted" for n in sorted(rec.keys() - now.keys())]
    out += [f"{layout.where(n, now[n].label)}: added" for n in sorted(now.keys() - rec.keys())]
    for n in sorted(rec.keys() & now.keys()):
        r, m = rec[n], now[n]
        if r.get("sha256") != m.sha:
            out.append(f"{layout.where(n, m.label)}: image changed")
        if r.get("label_sha256") and r["label_sha256"] != m.label_sha:
            out.append(layout.relabelled(n, r, m))
    if not out:
        out.append(f"a label changed ({MEMBERS} of this version records no label hashes: which one is not known)")
    return out


def check_regression(root: Path, meta: dict, layout: Layout) -> tuple[list[Member], str | None]:
    """The regression set on disk and its sha256, checked against the frozen one dataset.json records
    (None when it records none): an edited set raises MergeError naming what changed."""
    frozen = meta.get("regression")
    reg = layout.read(root, meta, (REGRESSION_SPLIT,))
    if not frozen:
        return reg, None
    sha = regression_hash(reg)
    if sha != frozen.get("sha256"):
        changes = regression_changes(root, reg, layout)
        raise MergeError(f"{root}: its regression set ({len(reg)} images, {frozen.get('images')} frozen) no longer has "
                         f"the sha256 its dataset.json records ({str(frozen.get('sha256', ''))[:12]}, now {sha[:12]}): "
                         f"{'; '.join(changes[:20])}{' ...' if len(changes) > 20 else ''}. Restore it from the version "
                         "that made it")
    return reg, sha


def _yolo_open(p: Path) -> tuple[Path, list[str], str | None]:
    root = dataset_root(p)
    return root, classes_of(root), None


def _yolo_write(tmp: Path, members: list[Member], classes: list[str], pass_class: str | None, source: dict,
                split_rule: dict) -> None:
    for m in sorted(members, key=lambda m: (m.split, m.name)):
        (tmp / "images" / m.split).mkdir(parents=True, exist_ok=True)
        (tmp / "labels" / m.split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(m.path, tmp / "images" / m.split / m.name)
        (tmp / "labels" / m.split / (os.path.splitext(m.name)[0] + ".txt")).write_text(m.label)
    write_description(tmp, classes, source, split_rule, digests={(m.split, m.name): m.sha for m in members})


YOLO = Layout(
    open=_yolo_open, read=read_members, write=_yolo_write,
    where=lambda name, label: f"images/{REGRESSION_SPLIT}/{name}",
    relabelled=lambda name, row, m: f"labels/{REGRESSION_SPLIT}/{os.path.splitext(name)[0]}.txt: label changed or "
                                    "deleted",
    name_key=lambda name: os.path.splitext(name)[0].lower(),  # images of one stem would share a label file
    row=lambda m: {}, counts=lambda m: {"boxes": sum(1 for ln in m.label.splitlines() if ln.strip())},
    split_line=lambda s, c: f"  {s:<6}{c['images']:>7} images {c['boxes']:>7} boxes  ")


def layout_of(data: Path) -> Layout:
    """The layout of the dataset `data` (a data.yaml or its folder): class folders where its data.yaml says
    task: classify."""
    from inspector.training.cls_dataset import is_classify

    if is_classify(data):
        from inspector.training.merge_classify import CLASS_FOLDERS

        return CLASS_FOLDERS
    return YOLO


def merge_datasets(base: Path, new: Path, out: Path, *, val_fraction: float = 0.2, regression_fraction: float = 0.1,
                   seed: int = 0, layout: Layout | None = None) -> dict:
    if not (0 <= val_fraction < 1 and 0 <= regression_fraction < 1):
        raise MergeError(f"--val-fraction {val_fraction} and --regression-fraction {regression_fraction} must be in "
                         "[0, 1)")
    layout = layout or layout_of(base)
    (broot, bcls, bpass), (nroot, ncls, npass) = layout.open(base), layout.open(new)
    bmeta, nmeta = read_meta(broot), read_meta(nroot)
    if (bcls, bpass) != (ncls, npass):
        def said(cls: list[str], good: str | None) -> str:
            return f"{cls}" + (f" (pass {good!r})" if good is not None else "")
        raise MergeError(f"the datasets' classes differ: {broot} has {said(bcls, bpass)}, {nroot} has "
                         f"{said(ncls, npass)}")
    out = Path(out).resolve()
    why = refuse_overlap(out, {"BASE": broot, "NEW": nroot})
    if why is not None:
        raise MergeError(f"{why}: a version is never written over, inside or around its parents")
    if out.exists() and any(out.iterdir()) and not (out / DATASET_JSON).exists():
        raise MergeError(f"{out} exists and is not a dataset: choose an empty or new --out")
    # 1. the regression set: frozen
    frozen = bmeta.get("regression")
    reg, _ = check_regression(broot, bmeta, layout)  # each image is read (hashed) once: the test split here
    bm = layout.read(broot, bmeta, tuple(s for s in SPLITS if s != REGRESSION_SPLIT)) + reg
    nm = layout.read(nroot, nmeta, SPLITS)
    if not reg:  # first version: carve it from BASE's train groups, once
        for m in bm:
            if m.split == "train" and group_hash(m.group, seed + 1) < regression_fraction:
                m.split = REGRESSION_SPLIT
        reg = [m for m in bm if m.split == REGRESSION_SPLIT]
    reg_groups = {m.group for m in reg}
    reg_shas = {m.sha for m in reg}

    # 2. BASE's splits fix each of its groups' split; NEW follows them or the group hash
    group_split: dict[str, str] = {}
    leaks = Counter()
    for m in bm:
        if group_split.setdefault(m.group, m.split) != m.split:
            leaks[m.group] += 1
    stats = Counter()
    by_sha: dict[str, Member] = {}
    for m in bm:
        if m.sha in by_sha:
            stats["duplicates_in_base"] += 1
            continue
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
        split = group_split.get(m.group) or ("val" if group_hash(m.group, seed) < val_fraction else "train")
        group_split[m.group] = split
        m.split = split
        by_sha[m.sha] = m
    members = list(by_sha.values())
    taken: set[tuple[str, str]] = set()
    for m in members:  # two different images with one name (YOLO: one stem) in a split: rename the later
        if (m.split, layout.name_key(m.name)) in taken:
            stem, suffix = os.path.splitext(m.name)
            m.name = f"{stem}_{m.sha[:12]}{suffix}"
            stats["renamed"] += 1
        taken.add((m.split, layout.name_key(m.name)))

    # 3. write
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        parents = [{"path": str(r.resolve()), "content_sha256": (x.get("sha256") or {}).get("content"),
                    "version": x.get("version", {}).get("number", 1)} for r, x in ((broot, bmeta), (nroot, nmeta))]
        layout.write(tmp, members, bcls, bpass, {"format": "merge", "parents": parents},
                     {"kind": "merge", "seed": seed, "val_fraction": val_fraction,
                      "regression_fraction": regression_fraction if not frozen else None,
                      "note": "BASE's splits kept; NEW's groups follow BASE or a seeded hash; one group per "
                              "split; test = the frozen regression set"})
        meta = json.loads((tmp / DATASET_JSON).read_text())
        final_reg = [m for m in members if m.split == REGRESSION_SPLIT]
        reg_sha = regression_hash(final_reg)
        if frozen and reg_sha != frozen["sha256"]:
            raise MergeError("internal: the regression set changed while merging")  # never: it is copied as is
        per_source: dict[str, Counter] = {}
        for m in members:
            c = per_source.setdefault(m.source, Counter())
            c["images"] += 1
            c[m.split] += 1
            c.update(layout.counts(m))
        meta.update({
            "version": {"number": int(bmeta.get("version", {}).get("number", 1)) + 1, "parents": parents},
            "counts_per_source": {s: dict(c) for s, c in sorted(per_source.items())},
            "regression": {"split": REGRESSION_SPLIT, "images": len(final_reg), "sha256": reg_sha,
                           "frozen_since": (frozen or {}).get("frozen_since") or meta["sha256"]["content"],
                           "note": "never changes between versions: compare candidates on it"},
            "merge": {**dict(stats), "groups_split_in_base": len(leaks), "groups": len(group_split)},
            "review": ((nmeta.get("source") or {}).get("review") or {}).get("outcomes"),
        })
        (tmp / DATASET_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp / MEMBERS, "w") as fh:
            for m in sorted(members, key=lambda m: (m.split, m.name)):
                fh.write(json.dumps({"split": m.split, "file": m.name, "sha256": m.sha, "label_sha256": m.label_sha,
                                     "source": m.source, "group": m.group, **layout.row(m)}, sort_keys=True) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def format_merge(meta: dict, layout: Layout = YOLO) -> str:
    lines = [f"dataset version {meta['version']['number']}{layout.kind}: content sha256 {meta['sha256']['content']}"]
    for s, c in meta["counts"].items():
        lines.append(layout.split_line(s, c) + ", ".join(f"{k} {v}" for k, v in c["per_class"].items()))
    lines.append("  per source:")
    for src, c in meta["counts_per_source"].items():
        lines.append(f"    {src}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    r = meta["regression"]
    lines.append(f"  regression set ({r['split']}): {r['images']} images, sha256 {r['sha256'][:16]} (frozen)")
    if meta["merge"]:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in meta["merge"].items()))
    return "\n".join(lines)
