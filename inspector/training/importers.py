"""Readers for labelling-tool exports: each turns one export into `Annotated` images (pixel xyxy
boxes with class names) plus `Problem`s naming the file and the reason for whatever it could not read.

Formats, after their published specs (no converter library: the ones that exist pull in heavy
dependencies or write their own layouts, and each format here is a few dozen lines):
- voc: Pascal VOC XML, one file per image (<filename>, <size>, <object><name>, <bndbox> in pixels).
- coco: COCO instances JSON (images, categories, annotations with bbox = [x, y, w, h] in pixels).
- labelstudio: Label Studio JSON export; `rectanglelabels` results, x/y/width/height in percent
  of the image (original_width/height give the pixels).
- cvat: "CVAT for images 1.1" XML; <image name width height><box label xtl ytl xbr ybr>.
- yolo: a YOLO folder (images/ + labels/, optionally per split) or its data.yaml; normalised cx cy w h.

Images are located relative to the export (by the file name the export records, then by stem).
Nothing here decodes images: the writer does that once, for every format.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import yaml

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("yolo", "voc", "coco", "labelstudio", "cvat")


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Annotated:
    image: Path  # the image file in the source
    source: Path  # the annotation file it came from (named in messages)
    boxes: tuple[Box, ...]
    size: tuple[int, int] | None = None  # (width, height) the annotation claims, checked against the image
    split: str | None = None  # the split the source already assigns (yolo), if any
    normalized: bool = False  # boxes in [0, 1] of the image size (yolo) instead of pixels


@dataclass(frozen=True)
class Problem:
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class Export:
    items: list[Annotated] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    classes: list[str] | None = None  # class order the export declares (coco, cvat, yolo), if any


def read_export(fmt: str, src: Path) -> Export:
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    return {"voc": read_voc, "coco": read_coco, "labelstudio": read_labelstudio, "cvat": read_cvat,
            "yolo": read_yolo}[fmt](src)


# --- image lookup -------------------------------------------------------------------------------
class ImageIndex:
    """Every image under a folder, found by relative path, by file name or by stem: exports record
    images as absolute paths from the labelling machine, upload names or bare stems."""

    def __init__(self, root: Path):
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                self.by_name.setdefault(p.name, []).append(p)
                self.by_stem.setdefault(p.stem, []).append(p)

    def find(self, recorded: str, near: Path | None = None) -> Path | None:
        recorded = unquote(recorded.replace("\\", "/"))
        for base in (near, self.root):
            if base is not None and recorded and (base / recorded).is_file():
                return base / recorded
        name = Path(recorded).name
        for table, key in ((self.by_name, name), (self.by_stem, Path(name).stem), (self.by_stem, name)):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1 and near is not None:  # prefer the one beside the annotation
                close = [h for h in hits if near in h.parents or h.parent.parent == near.parent]
                if len(close) == 1:
                    return close[0]
        return None


# --- Pascal VOC ---------------------------------------------------------------------------------
def read_voc(src: Path) -> Export:
    root = src if src.is_dir() else src.parent
    xmls = [src] if src.is_file() else sorted(src.rglob("*.xml"))
    index = ImageIndex(root)
    out = Export()
    if not xmls:
        out.problems.append(Problem(str(src), "no Pascal VOC .xml files found"))
    for x in xmls:
        try:
            ann = ET.parse(x).getroot()
            if ann.tag != "annotation":
                raise ValueError(f"root element is <{ann.tag}>, expected <annotation>")
            recorded = (ann.findtext("filename") or x.stem).strip()
            size = None
            if ann.find("size") is not None and ann.findtext("size/width"):
                size = (int(float(ann.findtext("size/width"))), int(float(ann.findtext("size/height"))))
            boxes = []
            for o in ann.findall("object"):
                bb = o.find("bndbox")
                if bb is None:
                    raise ValueError(f"object {o.findtext('name')!r} has no <bndbox> (only boxes are supported)")
                # keep difficult=1 boxes: the defect is there, a model that misses it is wrong
                boxes.append(Box((o.findtext("name") or "").strip(), *(float(bb.findtext(k)) for k in
                                                                       ("xmin", "ymin", "xmax", "ymax"))))
        except (ET.ParseError, ValueError, TypeError) as e:
            out.problems.append(Problem(str(x), f"unreadable VOC XML: {e}"))
            continue
        image = index.find(recorded, x.parent) or index.find(x.stem, x.parent)
        if image is None:
            out.problems.append(Problem(str(x), f"image {recorded!r} not found under {root}"))
            continue
        out.items.append(Annotated(image, x, tuple(boxes), size))
    return out


# --- COCO ---------------------------------------------------------------------------------------
def read_coco(src: Path) -> Export:
    files = [src] if src.is_file() else sorted(src.rglob("*.json"))
    out = Export()
    if not files:
        out.problems.append(Problem(str(src), "no COCO instances .json found"))
    cats: dict[int, str] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
            images, anns, categories = doc["images"], doc.get("annotations", []), doc["categories"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            out.problems.append(Problem(str(f), f"not a COCO instances JSON ({type(e).__name__}: {e})"))
            continue
        for c in sorted(categories, key=lambda c: c["id"]):
            cats.setdefault(int(c["id"]), str(c["name"]))
        index = ImageIndex(f.parent)
        by_image: dict[int, list[dict]] = {}
        for a in anns:
            by_image.setdefault(a.get("image_id"), []).append(a)
        for im in images:
            name = str(im.get("file_name", ""))
            path = index.find(name, f.parent)
            if path is None:
                out.problems.append(Problem(str(f), f"image id {im.get('id')} file {name!r} not found "
                                                    f"under {f.parent}"))
                continue
            boxes, bad = [], None
            for a in by_image.get(im.get("id"), []):
                bbox = a.get("bbox")
                if not bbox or len(bbox) != 4:
                    bad = f"annotation id {a.get('id')} has no [x, y, w, h] bbox"
                    break
                if int(a.get("category_id", -1)) not in cats:
                    bad = f"annotation id {a.get('id')} has unknown category_id {a.get('category_id')}"
                    break
                x, y, w, h = (float(v) for v in bbox)
                boxes.append(Box(cats[int(a["category_id"])], x, y, x + w, y + h))
            if bad:
                out.problems.append(Problem(f"{f} ({name})", bad))
                continue
            size = (int(im["width"]), int(im["height"])) if im.get("width") and im.get("height") else None
            out.items.append(Annotated(path, f, tuple(boxes), size))
    out.classes = [cats[k] for k in sorted(cats)] or None
    return out


# --- Label Studio -------------------------------------------------------------------------------
def read_labelstudio(src: Path) -> Export:
    files = [src] if src.is_file() else sorted(src.glob("*.json"))
    out = Export()
    if not files:
        out.problems.append(Problem(str(src), "no Label Studio JSON export found"))
    for f in files:
        try:
            tasks = json.loads(f.read_text())
            if isinstance(tasks, dict):
                tasks = [tasks]
        except json.JSONDecodeError as e:
            out.problems.append(Problem(str(f), f"not JSON: {e}"))
            continue
        index = ImageIndex(f.parent)
        for t in tasks:
            data = t.get("data", {}) if isinstance(t, dict) else {}
            # local-files URLs carry the path in ?d= (/data/local-files/?d=night/a.jpg)
            ref = next((v for v in data.values() if isinstance(v, str) and
                        Path(v.split("?d=")[-1].split("?")[0]).suffix.lower() in IMAGE_SUFFIXES), None)
            where = f"{f} (task {t.get('id') if isinstance(t, dict) else '?'})"
            if ref is None:
                out.problems.append(Problem(where, "task has no image in its data"))
                continue
            # /data/upload/3/1a2b3c4d-part_7.jpg: Label Studio prefixes uploads with an 8-hex id
            name = unquote(ref.split("?d=")[-1].split("?")[0])
            path = index.find(name, f.parent) or index.find(re.sub(r"^[0-9a-f]{8}-", "", Path(name).name), f.parent)
            if path is None:
                out.problems.append(Problem(where, f"image {ref!r} not found under {f.parent}"))
                continue
            annotations = [a for a in t.get("annotations") or t.get("completions") or [] if not a.get("was_cancelled")]
            if not annotations:  # not labelled yet: importing it as a defect-free image would teach its defects away
                out.problems.append(Problem(where, "task has no (non-cancelled) annotation: not labelled yet"))
                continue
            results = annotations[0].get("result", [])
            boxes, size, bad = [], None, None
            for r in results:
                kind, v = r.get("type"), r.get("value", {})
                if kind != "rectanglelabels":
                    bad = f"result {r.get('id')} is {kind!r}, only rectanglelabels (boxes) are supported"
                    break
                if v.get("rotation"):
                    bad = f"result {r.get('id')} is rotated by {v['rotation']} degrees; only axis-aligned boxes"
                    break
                w, h = r.get("original_width"), r.get("original_height")
                if not w or not h:
                    bad = f"result {r.get('id')} lacks original_width/original_height"
                    break
                size = (int(w), int(h))
                x, y = v["x"] * w / 100, v["y"] * h / 100
                for label in v.get("rectanglelabels", [])[:1]:
                    boxes.append(Box(label, x, y, x + v["width"] * w / 100, y + v["height"] * h / 100))
            if bad:
                out.problems.append(Problem(where, bad))
                continue
            out.items.append(Annotated(path, f, tuple(boxes), size))
    return out


# --- CVAT for images 1.1 ------------------------------------------------------------------------
def read_cvat(src: Path) -> Export:
    xml = src if src.is_file() else next(iter(sorted(src.glob("*.xml"))), None)
    out = Export()
    if xml is None:
        out.problems.append(Problem(str(src), "no CVAT annotations.xml found"))
        return out
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        out.problems.append(Problem(str(xml), f"unreadable XML: {e}"))
        return out
    labels = [e.text.strip() for e in root.findall("meta/*/labels/label/name") if e.text]
    out.classes = labels or None
    index = ImageIndex(xml.parent)
    for im in root.findall("image"):
        name = im.get("name", "")
        where = f"{xml} (image {name!r})"
        path = index.find(name, xml.parent)
        if path is None:
            out.problems.append(Problem(where, f"image not found under {xml.parent}"))
            continue
        others = sorted({c.tag for c in im if c.tag not in ("box", "tag")})
        if others:
            out.problems.append(Problem(where, f"holds {', '.join(others)}; only <box> shapes are supported"))
            continue
        try:
            boxes = tuple(Box(b.get("label", ""), *(float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")))
                          for b in im.findall("box") if float(b.get("rotation", 0) or 0) == 0)
            if len(boxes) != len(im.findall("box")):
                raise ValueError("a rotated box (only axis-aligned boxes are supported)")
            size = (int(im.get("width")), int(im.get("height"))) if im.get("width") else None
        except (TypeError, ValueError) as e:
            out.problems.append(Problem(where, f"bad box: {e}"))
            continue
        out.items.append(Annotated(path, xml, boxes, size))
    return out


# --- YOLO ---------------------------------------------------------------------------------------
def read_yolo(src: Path) -> Export:
    """A data.yaml (its splits kept) or a folder holding images/ and labels/ (flat or per split);
    class names from data.yaml, classes.txt, or `--classes` (then labels name them by index)."""
    out = Export()
    candidates = (src / "data.yaml", src / "dataset.yaml")
    yaml_path = src if src.is_file() else next((p for p in candidates if p.exists()), None)
    splits: dict[str, Path] = {}
    if yaml_path is not None:
        data = yaml.safe_load(yaml_path.read_text()) or {}
        root = Path(data.get("path") or yaml_path.parent)
        root = root if root.is_absolute() else yaml_path.parent / root
        names = data.get("names", {})
        out.classes = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        for s in ("train", "val", "test"):
            if isinstance(data.get(s), str):
                splits[s] = root / data[s]
    else:
        root = src
        if (src / "classes.txt").exists():
            out.classes = [n.strip() for n in (src / "classes.txt").read_text().splitlines() if n.strip()]
        img_root = src / "images" if (src / "images").is_dir() else src
        subs = [d for d in ("train", "val", "test") if (img_root / d).is_dir()]
        splits = {d: img_root / d for d in subs} or {None: img_root}
    seen: set[Path] = set()
    for split, img_dir in splits.items():
        for img in sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if img in seen:  # a data.yaml may point train and val at one folder (the synthetic line does)
                continue
            seen.add(img)
            label = _yolo_label_for(img)
            if label is None:  # ultralytics would train it as defect-free; an empty .txt says so on purpose
                out.problems.append(Problem(str(img), "no label file (a defect-free image needs an empty .txt)"))
                continue
            boxes, bad = [], None
            for n, line in enumerate(label.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    if len(parts) != 5:
                        raise ValueError(f"{len(parts)} fields, expected 5 (class cx cy w h)")
                    c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:])
                except ValueError as e:
                    bad = f"line {n}: {e}"
                    break
                name = out.classes[c] if out.classes and 0 <= c < len(out.classes) else f"#{c}"
                # normalised: the writer scales by the real image size (size=None marks that)
                boxes.append(Box(name, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            if bad:
                out.problems.append(Problem(str(label), bad))
                continue
            out.items.append(Annotated(img, label, tuple(boxes), None, split, normalized=True))
    return out


def _yolo_label_for(img: Path) -> Path | None:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            cand = Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
            if cand.exists():
                return cand
    cand = img.with_suffix(".txt")
    return cand if cand.exists() else None
