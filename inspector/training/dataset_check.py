"""`inspector dataset check DIR`: what breaks training silently, found before hours of CPU go into it.

Findings (any one: exit 2):
- image without a label file / label file without an image (ultralytics reads the first as a
  background image: every defect on it becomes a false positive to unlearn);
- unreadable or truncated images (ultralytics drops them with a one-line warning);
- label lines that are malformed, hold an unknown class id, lie outside the image or are degenerate;
- the same image twice (sha256 of the bytes), in one split or across splits;
- near-duplicates across train and val/test: leakage, the validation figure then measures memory,
  not generalisation. A pair is a near-duplicate when its 64-bit dHashes lie within --near-dup-bits
  (default 10: a brightened, re-encoded copy of a flat, noisy image moved 5 bits) AND the high-pass
  32x32 thumbnails correlate >= NEAR_DUP_CORR. dHash alone flags unrelated texture images that
  share a lighting gradient (measured on NEU-DET: 8033 val/train pairs within 10 bits, none a copy;
  their high-pass correlation is 0.11 median, 0.81 max, while such a copy scores 0.997);
- a class with no boxes in train (the model cannot learn it) or in val (no threshold, no metric).
Reported, not failed: the class histogram per split, image sizes, grayscale or colour, and the
box sizes after the letterbox to the model input (boxes under 8 px are at the limit of what the
stride-8 head of a YOLO resolves).
The checks every dataset gets (images read, duplicates, near-duplicates across splits, empty classes, the
missing val split, the report's tail and --json) are here once; a classification dataset's walk (class
folders, conflicting labels, the class balance) is dataset_check_classify.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from inspector.training.importers import IMAGE_SUFFIXES, data_yaml_root, yaml_names

SIZE_BUCKETS = (8, 16, 32, 64, 128)  # px after letterbox: edges of the min-side histogram
SMALL_BOX_PX = 8
NEAR_DUP_CORR = 0.9
EXAMPLES = 10  # findings printed per kind (all of them go to --json)


@dataclass
class Report:
    findings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    classes: list[str] = field(default_factory=list)
    per_split: dict = field(default_factory=dict)
    box_sizes: dict = field(default_factory=dict)
    image_sizes: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)

    def add(self, kind: str, msg: str) -> None:
        self.findings[kind].append(msg)

    @property
    def ok(self) -> bool:
        return not any(self.findings.values())


def _splits(data_yaml: Path) -> tuple[list[str], dict[str, Path]]:
    d = yaml.safe_load(data_yaml.read_text()) or {}
    names = yaml_names(d.get("names"), str(data_yaml))
    if names is None:
        raise ValueError(f"{data_yaml}: no `names`")
    root = data_yaml_root(data_yaml, d)
    return names, {s: root / d[s] for s in ("train", "val", "test") if isinstance(d.get(s), str)}


def label_dir_for(img_dir: Path) -> Path:
    """ultralytics' rule: the last /images/ in the path becomes /labels/."""
    parts = list(img_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:])
    return img_dir


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash: the sign of horizontal gradients on a 9x8 thumbnail."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def _highpass_thumb(gray: np.ndarray) -> np.ndarray:
    """32x32 thumbnail minus its blur, zero-mean, unit norm: the texture detail, not the lighting."""
    t = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    hp = t - cv2.GaussianBlur(t, (0, 0), 3)
    hp -= hp.mean()
    return hp / (np.linalg.norm(hp) + 1e-9)


def near_pairs(a: np.ndarray, b: np.ndarray, max_bits: int, chunk: int = 512) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every a[i], b[j] whose Hamming distance is <= max_bits."""
    if len(a) == 0 or len(b) == 0:
        return []
    bb = b.astype(np.uint64)
    out = []
    for s in range(0, len(a), chunk):
        x = a[s:s + chunk].astype(np.uint64)[:, None] ^ bb[None, :]
        d = np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)
        for i, j in zip(*np.nonzero(d <= max_bits), strict=True):
            out.append((s + int(i), int(j), int(d[i, j])))
    return out


def look_at(rep: Report, path: Path, rel: str, split: str, seen: dict[str, tuple[str, str | None]],
            hashes: dict[str, list], label: str | None = None) -> np.ndarray | None:
    """One image of `split`: undecodable or a JPEG cut short -> unreadable_image and None; else the same bytes
    seen before -> duplicate_image (conflicting_label where they came under another `label`), its size and
    channels counted, its dHash and high-pass thumbnail kept for the cross-split check; returns it decoded."""
    data = path.read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    truncated = path.suffix.lower() in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-64:]
    if img is None or truncated:
        rep.add("unreadable_image", f"{path}" + (" (truncated JPEG)" if img is not None else ""))
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        first, first_label = seen[digest]
        rep.add("conflicting_label" if first_label != label else "duplicate_image",
                f"{rel} has the same bytes as {first}")
    else:
        seen[digest] = (rel, label)
    h, w = img.shape[:2]
    rep.image_sizes[f"{w}x{h}"] += 1
    gray = img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    equal = img.ndim == 2 or img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1])
                                                  and np.array_equal(img[..., 1], img[..., 2]))
    rep.channels["grayscale" if equal else "colour"] += 1
    hashes[split].append((dhash(gray), rel, _highpass_thumb(gray)))
    return img


def check_splits(rep: Report, has_val: bool, hashes: dict[str, list], near_dup_bits: int, unit: str) -> None:
    """After the walk: a class without `unit` (boxes, images) in train or val, no val split, and the val/test
    images that are near copies of a train image."""
    for split in ("train", "val"):
        for c, k in rep.per_split.get(split, {}).get("per_class", {}).items():
            if k == 0:
                rep.add("empty_class", f"class {c!r} has no {unit} in {split}")
    if not has_val:
        rep.add("missing_split", "data.yaml has no val split (thresholds and metrics need one)")
    train = hashes.get("train", [])
    for other in ("val", "test"):
        held = hashes.get(other, [])
        a = np.array([h[0] for h in held], np.uint64)
        b = np.array([h[0] for h in train], np.uint64)
        for i, j, d in near_pairs(a, b, near_dup_bits):
            corr = float((held[i][2] * train[j][2]).sum())
            if corr < NEAR_DUP_CORR:
                continue
            rep.add("near_duplicate_across_splits", f"{held[i][1]} ~ {train[j][1]} (dHash distance {d} bits, "
                    f"thumbnail correlation {corr:.2f})")


def sizes_line(rep: Report) -> str:
    return (f"image sizes: {dict(rep.image_sizes.most_common(5))}"
            + (f" (+{len(rep.image_sizes) - 5} more)" if len(rep.image_sizes) > 5 else "")
            + f"; {dict(rep.channels)}")


def findings_lines(rep: Report) -> list[str]:
    lines = ["check passed: no findings"] if rep.ok else []
    for kind, items in rep.findings.items():
        if items:
            lines.append(f"FAIL {kind}: {len(items)}")
            lines.extend(f"  {m}" for m in items[:EXAMPLES])
            if len(items) > EXAMPLES:
                lines.append(f"  ... {len(items) - EXAMPLES} more (all in --json)")
    return lines


def report_out(rep: Report, text: str, fields: dict, json_out: str | None) -> int:
    """Prints the report, writes --json (ok, the kind's `fields`, sizes, channels, findings); exit 2 on a finding."""
    print(text)
    if json_out:
        Path(json_out).write_text(json.dumps({
            "ok": rep.ok, **fields, "image_sizes": dict(rep.image_sizes), "channels": dict(rep.channels),
            "findings": {k: v for k, v in rep.findings.items() if v}}, indent=2) + "\n")
    return 0 if rep.ok else 2


def run_check(target: Path, imgsz: int = 320, near_dup_bits: int = 10) -> Report:
    target = Path(target)
    data_yaml = target / "data.yaml" if target.is_dir() else target
    rep = Report()
    names, splits = _splits(data_yaml)
    rep.classes = names
    nc = len(names)
    sha_seen: dict[str, tuple[str, str | None]] = {}
    hashes: dict[str, list] = defaultdict(list)
    sizes = {s: Counter() for s in splits}
    for split, img_dir in splits.items():
        if not img_dir.is_dir():
            rep.add("missing_split", f"{split}: {img_dir} is not a folder")
            continue
        lbl_dir = label_dir_for(img_dir)
        images = sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        stems = {p.relative_to(img_dir).with_suffix("").as_posix() for p in images}
        if lbl_dir != img_dir and lbl_dir.is_dir():
            for lbl in sorted(lbl_dir.rglob("*.txt")):
                if lbl.relative_to(lbl_dir).with_suffix("").as_posix() not in stems:
                    rep.add("label_without_image", f"{lbl}")
        per_class = Counter()
        n_images = n_boxes = 0
        for img_path in images:
            img = look_at(rep, img_path, f"{split}/{img_path.relative_to(img_dir).as_posix()}", split, sha_seen,
                          hashes)
            if img is None:
                continue
            n_images += 1
            h, w = img.shape[:2]
            lbl = lbl_dir / img_path.relative_to(img_dir).with_suffix(".txt")
            if not lbl.exists():
                rep.add("image_without_label", f"{img_path} (no {lbl})")
                continue
            scale = imgsz / max(w, h)
            for n, line in enumerate(lbl.read_text().splitlines(), 1):
                f = line.split()
                if not f:
                    continue
                where = f"{lbl}:{n}"
                try:
                    if len(f) != 5:
                        raise ValueError(f"{len(f)} fields, expected 5 (class cx cy w h)")
                    c = int(f[0])
                    cx, cy, bw, bh = (float(v) for v in f[1:])
                except ValueError as e:
                    rep.add("malformed_label", f"{where}: {e}")
                    continue
                if not 0 <= c < nc:
                    rep.add("unknown_class_id", f"{where}: class {c}, data.yaml names {nc} classes (0..{nc - 1})")
                    continue
                eps = 1e-3
                if min(cx - bw / 2, cy - bh / 2) < -eps or max(cx + bw / 2, cy + bh / 2) > 1 + eps:
                    rep.add("box_out_of_range", f"{where}: cx={cx} cy={cy} w={bw} h={bh} leaves the image [0, 1]")
                    continue
                if bw * w < 1 or bh * h < 1:
                    rep.add("degenerate_box", f"{where}: {bw * w:.2f} x {bh * h:.2f} px")
                    continue
                per_class[names[c]] += 1
                n_boxes += 1
                side = min(bw * w, bh * h) * scale
                sizes[split][next((f"<{e}" for e in SIZE_BUCKETS if side < e), f">={SIZE_BUCKETS[-1]}")] += 1
        rep.per_split[split] = {"images": n_images, "boxes": n_boxes,
                                "per_class": {c: per_class.get(c, 0) for c in names}}
    check_splits(rep, "val" in splits, hashes, near_dup_bits, "boxes")
    rep.box_sizes = {s: {k: c[k] for k in [f"<{e}" for e in SIZE_BUCKETS] + [f">={SIZE_BUCKETS[-1]}"]}
                     for s, c in sizes.items()}
    return rep


def format_report(rep: Report, imgsz: int) -> str:
    names = rep.classes
    w = max(8, *(len(n) for n in names))
    lines = [f"classes ({len(names)}): {', '.join(names)}",
             f"  {'split':<8}{'images':>8}{'boxes':>8}  " + "".join(f"{n[:w]:>{w + 1}}" for n in names)]
    for s, c in rep.per_split.items():
        per_class = "".join(f"{c['per_class'][n]:>{w + 1}}" for n in names)
        lines.append(f"  {s:<8}{c['images']:>8}{c['boxes']:>8}  {per_class}")
    lines.append(sizes_line(rep))
    lines.append(f"box size after letterbox to {imgsz} px (shorter side):")
    for s, b in rep.box_sizes.items():
        total = sum(b.values()) or 1
        lines.append(f"  {s:<8}" + "  ".join(f"{k}: {v} ({v / total:.0%})" for k, v in b.items()))
    small = sum(b.get(f"<{SMALL_BOX_PX}", 0) for b in rep.box_sizes.values())
    if small:
        lines.append(f"note: {small} boxes are under {SMALL_BOX_PX} px at {imgsz} px input: at the limit of the "
                     "stride-8 head; consider a larger --imgsz")
    lines += findings_lines(rep)
    return "\n".join(lines)


def check_dataset(target: Path, imgsz: int = 320, near_dup_bits: int = 10, json_out: str | None = None) -> int:
    try:
        rep = run_check(target, imgsz, near_dup_bits)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"dataset check: cannot read {target}: {e}")
        return 2
    return report_out(rep, format_report(rep, imgsz), {"imgsz": imgsz, "classes": rep.classes,
                                                        "per_split": rep.per_split, "box_sizes": rep.box_sizes},
                      json_out)
