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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
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


def recorded_members(root: Path) -> dict[tuple[str, str], dict]:
    """(split, file) -> the members.jsonl row a version recorded."""
    path = root / MEMBERS
    if not path.exists():
        return {}
    rows = (json.loads(x) for x in path.read_text().splitlines() if x.strip())
    return {(r["split"], r["file"]): r for r in rows}


def regression_changes(root: Path, reg: list[Member]) -> list[str]:
    """What differs between the regression set on disk and the one the version recorded
    (members.jsonl): images deleted, added or changed, labels changed or deleted."""
    rec = {f: r for (s, f), r in recorded_members(root).items() if s == REGRESSION_SPLIT}
    now = {m.name: m for m in reg}
    out = [f"images/{REGRESSION_SPLIT}/{n}: deleted" for n in sorted(rec.keys() - now.keys())]
    out += [f"images/{REGRESSION_SPLIT}/{n}: added" for n in sorted(now.keys() - rec.keys())]
    for n in sorted(rec.keys() & now.keys()):
        r, m = rec[n], now[n]
        if r.get("sha256") != m.sha:
            out.append(f"images/{REGRESSION_SPLIT}/{n}: image changed")
        if r.get("label_sha256") and r["label_sha256"] != m.label_sha:
            out.append(f"labels/{REGRESSION_SPLIT}/{os.path.splitext(n)[0]}.txt: label changed or deleted")
    if not out:
        out.append(f"a label changed ({MEMBERS} of this version records no label hashes: which one is not known)")
    return out


def check_regression(root: Path, meta: dict) -> tuple[list[Member], str | None]:
    """The regression set on disk and its sha256, checked against the frozen one dataset.json records
    (None when it records none): an edited set raises MergeError naming what changed."""
    frozen = meta.get("regression")
    reg = read_members(root, meta, (REGRESSION_SPLIT,))
    if not frozen:
        return reg, None
    sha = regression_hash(reg)
    if sha != frozen.get("sha256"):
        changes = regression_changes(root, reg)
        raise MergeError(f"{root}: its regression set ({len(reg)} images, {frozen.get('images')} frozen) no longer has "
                         f"the sha256 its dataset.json records ({str(frozen.get('sha256', ''))[:12]}, now {sha[:12]}): "
                         f"{'; '.join(changes[:20])}{' ...' if len(changes) > 20 else ''}. Restore it from the version "
                         "that made it")
    return reg, sha


def merge_datasets(base: Path, new: Path, out: Path, *, val_fraction: float = 0.2, regression_fraction: float = 0.1,
                   seed: int = 0) -> dict:
    if not (0 <= val_fraction < 1 and 0 <= regression_fraction < 1):
        raise MergeError(f"--val-fraction {val_fraction} and --regression-fraction {regression_fraction} must be in "
                         "[0, 1)")
    broot, nroot = dataset_root(base), dataset_root(new)
    bmeta, nmeta = read_meta(broot), read_meta(nroot)
    bcls, ncls = classes_of(broot), classes_of(nroot)
    if bcls != ncls:
        raise MergeError(f"the datasets' classes differ: {broot} has {bcls}, {nroot} has {ncls}")
    out = Path(out).resolve()
    why = refuse_overlap(out, {"BASE": broot, "NEW": nroot})
    if why is not None:
        raise MergeError(f"{why}: a version is never written over, inside or around its parents")
    if out.exists() and any(out.iterdir()) and not (out / DATASET_JSON).exists():
        raise MergeError(f"{out} exists and is not a dataset: choose an empty or new --out")
    # 1. the regression set: frozen
    frozen = bmeta.get("regression")
    reg, _ = check_regression(broot, bmeta)  # each image is read (hashed) once: the test split here, the rest below
    bm = read_members(broot, bmeta, tuple(s for s in SPLITS if s != REGRESSION_SPLIT)) + reg
    nm = read_members(nroot, nmeta)
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
    for m in members:  # two different images with one stem in a split would share a label file: rename the later
        stem, suffix = os.path.splitext(m.name)
        if (m.split, stem.lower()) in taken:
            stem = f"{stem}_{m.sha[:12]}"
            m.name = stem + suffix
            stats["renamed"] += 1
        taken.add((m.split, stem.lower()))

    # 3. write
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for m in sorted(members, key=lambda m: (m.split, m.name)):
            (tmp / "images" / m.split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / m.split).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(m.path, tmp / "images" / m.split / m.name)
            (tmp / "labels" / m.split / (os.path.splitext(m.name)[0] + ".txt")).write_text(m.label)
        parents = [{"path": str(r.resolve()), "content_sha256": (x.get("sha256") or {}).get("content"),
                    "version": x.get("version", {}).get("number", 1)} for r, x in ((broot, bmeta), (nroot, nmeta))]
        write_description(tmp, bcls, {"format": "merge", "parents": parents},
                          {"kind": "merge", "seed": seed, "val_fraction": val_fraction,
                           "regression_fraction": regression_fraction if not frozen else None,
                           "note": "BASE's splits kept; NEW's groups follow BASE or a seeded hash; one group per "
                                   "split; test = the frozen regression set"},
                          digests={(m.split, m.name): m.sha for m in members})
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
            c["boxes"] += sum(1 for ln in m.label.splitlines() if ln.strip())
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
                                     "source": m.source, "group": m.group}, sort_keys=True) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def format_merge(meta: dict) -> str:
    lines = [f"dataset version {meta['version']['number']}: content sha256 {meta['sha256']['content']}"]
    for s, c in meta["counts"].items():
        lines.append(f"  {s:<6}{c['images']:>7} images {c['boxes']:>7} boxes  "
                     + ", ".join(f"{k} {v}" for k, v in c["per_class"].items()))
    lines.append("  per source:")
    for src, c in meta["counts_per_source"].items():
        lines.append(f"    {src}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    r = meta["regression"]
    lines.append(f"  regression set ({r['split']}): {r['images']} images, sha256 {r['sha256'][:16]} (frozen)")
    if meta["merge"]:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in meta["merge"].items()))
    return "\n".join(lines)
