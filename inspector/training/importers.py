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

Images are located inside the export only (by the file name the export records, then by stem): a
recorded absolute path or `../` that leads out of it, or a link whose target lies outside it, is
never read; the item is skipped and named (kind `outside_export`). An export is written by someone
else: a vendor's file must not pull another customer's images into a training set.
A malformed item (a category without id, an annotation that is not an object, a box value that is
not a finite number) is skipped and named; a file that does not parse is named and read no further.
Nothing here decodes images: the writer does that once, for every format.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import yaml

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("yolo", "voc", "coco", "labelstudio", "cvat")
# Problem kinds, counted in dataset.json `skipped_counts`
OUTSIDE, MALFORMED, NON_FINITE, UNPARSABLE, DUPLICATE, INVALID = "outside_export", "malformed", "non_finite", \
    "unparsable", "duplicate", "invalid"


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
    tags: tuple[str, ...] = ()  # image-level labels (Label Studio `choices`, CVAT <tag>), read with image_labels


@dataclass(frozen=True)
class Problem:
    file: str
    reason: str
    kind: str = INVALID

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class Export:
    items: list[Annotated] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    classes: list[str] | None = None  # class order the export declares (coco, cvat, yolo), if any
    by_index: bool = False  # yolo without names: box labels are the class ids ("0", "1", ...)
    root: Path | None = None  # the folder the export is confined to


class Bad(ValueError):
    """One item the reader cannot use: the reason, and its kind for the counts."""

    def __init__(self, reason: str, kind: str = MALFORMED):
        super().__init__(reason)
        self.kind = kind


def read_export(fmt: str, src: Path, image_labels: bool = False) -> Export:
    """image_labels: also read image-level labels (Label Studio `choices`, CVAT tags) into `tags`, for a
    classification import; the box import leaves it off (a `choices` result there is refused as before)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if fmt in ("labelstudio", "cvat"):
        return {"labelstudio": read_labelstudio, "cvat": read_cvat}[fmt](src, image_labels)
    if image_labels:
        raise ValueError(f"--from {fmt} carries no image-level labels (folders, csv, labelstudio and cvat do)")
    return {"voc": read_voc, "coco": read_coco, "yolo": read_yolo}[fmt](src)


def export_root(src: Path) -> Path:
    src = Path(src)
    return src if src.is_dir() else src.parent


def read_file(path: str | os.PathLike) -> bytes:
    """A whole file through a raw descriptor (no isatty/lseek per file: the import opens two per image)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, os.fstat(fd).st_size + 1)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 16))
        return b"".join(chunks)
    finally:
        os.close(fd)


IO_THREADS = 8  # per-image file work in threads: reads and writes wait on the disk, the GIL is released there
IO_WINDOW = 256  # items handed to the threads at a time: memory holds a window of results, not the dataset


def threaded_map(fn, args: list, threads: int = IO_THREADS):
    """fn(*a) for each a in args, in `threads` threads, IO_WINDOW at a time, results in order. An
    export's files are often not in the page cache (measured: 100 us a read here, against 20 us
    cached): in threads the waits overlap instead of adding up, as do the kernel's writeback stalls."""
    with ThreadPoolExecutor(threads, thread_name_prefix="import-read") as pool:
        for start in range(0, len(args), IO_WINDOW):
            yield from pool.map(lambda a: fn(*a), args[start:start + IO_WINDOW])


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def number(v: object, what: str) -> float:
    """A JSON/XML value that must be a finite number (bools and strings are not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Bad(f"{what} is {v!r}, not a number")
    if not math.isfinite(v):
        raise Bad(f"{what} is non-finite ({v})", NON_FINITE)
    return float(v)


def xml_number(text: str | None, what: str) -> float:
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Bad(f"{what} is {text!r}, not a number") from None
    if not math.isfinite(v):
        raise Bad(f"{what} is non-finite ({text.strip()})", NON_FINITE)  # type: ignore[union-attr]
    return v


def yaml_names(names: object, where: str) -> list[str] | None:
    """`names:` of a data.yaml (a list, or a dict id -> name) as strings. YAML reads an unquoted `no`,
    `null` or `1.5` as False, None, 1.5: such a name is refused, not turned into another word."""
    if names is None:
        return None
    items = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
    if not isinstance(items, list):
        raise ValueError(f"{where}: `names` is a {type(names).__name__}, expected a list or a mapping")
    for i, n in enumerate(items):
        if not isinstance(n, str):
            raise ValueError(f"{where}: class name {i} reads as {n!r} ({type(n).__name__}), not a string: quote it "
                             "(YAML reads unquoted no/yes/on/off/null/~ and numbers as other types)")
    return list(items)


# --- the export's bounds ------------------------------------------------------------------------
class Confine:
    """Whether a path, links resolved, lies inside the export root. Folders are resolved once each
    (an export holds tens of thousands of images in a handful of folders)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.real = Path(os.path.realpath(root))
        self._dirs: dict[str, Path] = {}

    def target(self, p: Path) -> Path:
        if p.is_symlink():
            return Path(os.path.realpath(p))
        d = str(p.parent)
        real = self._dirs.get(d)
        if real is None:
            real = self._dirs[d] = Path(os.path.realpath(d))
        return real / p.name

    def holds(self, p: Path) -> bool:
        return self.target(p).is_relative_to(self.real)

    def refuse(self, p: Path, where: str, named: str | None = None) -> Problem:
        return Problem(where, f"{named or p} resolves to {self.target(p)}, outside the export {self.root}: not read",
                       OUTSIDE)

    def files(self, folder: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[Problem]]:
        """Files under `folder` with these suffixes, sorted; links to folders are not followed (as
        Path.rglob), links to files outside the root are returned as problems."""
        found, refused = [], []
        stack = [str(folder)]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for e in reversed(entries):
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in suffixes:
                    p = Path(e.path)
                    if e.is_symlink() and not Path(os.path.realpath(p)).is_relative_to(self.real):
                        refused.append(p)
                    elif e.is_file():
                        found.append(p)
        return sorted(found), sorted(refused)


# --- image lookup -------------------------------------------------------------------------------
class ImageIndex:
    """Every image under the export root, found by relative path, by file name or by stem: exports
    record images as absolute paths from the labelling machine, upload names or bare stems. Only
    files inside the root are ever returned."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.confine = Confine(root)
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        self.escaping: dict[str, Path] = {}  # name and stem of links that lead outside -> the link
        found, refused = self.confine.files(self.root, IMAGE_SUFFIXES)
        for p in found:
            self.by_name.setdefault(p.name, []).append(p)
            self.by_stem.setdefault(p.stem, []).append(p)
        for p in refused:
            self.escaping.setdefault(p.name, p)
            self.escaping.setdefault(p.stem, p)

    @staticmethod
    def _clean(recorded: str) -> str:
        return unquote(recorded.replace("\\", "/")).strip()

    def find(self, recorded: str, near: Path | None = None) -> Path | None:
        recorded = self._clean(recorded)
        for base in (near, self.root):
            if base is not None and recorded and (base / recorded).is_file() and self.confine.holds(base / recorded):
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

    def missing(self, recorded: str, where: str, near: Path | None = None) -> Problem:
        """Why `find` found nothing: a path that leads outside the export, or no such image in it."""
        clean = self._clean(recorded)
        for base in (near, self.root):
            if base is not None and clean and (base / clean).is_file():  # exists, so find refused it
                return self.confine.refuse(base / clean, where, f"image {recorded!r}")
        for key in (Path(clean).name, Path(Path(clean).name).stem):
            if key in self.escaping:
                return self.confine.refuse(self.escaping[key], where,
                                           f"image {recorded!r} (the link {self.escaping[key]})")
        return Problem(where, f"image file {recorded!r} not found under {self.root}")


def _annotation_files(src: Path, pattern: str, recursive: bool, out: Export) -> list[Path]:
    """The annotation files of an export folder (or the one file given), links outside refused."""
    if src.is_file():
        return [src]
    confine = Confine(src)
    files = sorted(src.rglob(pattern) if recursive else src.glob(pattern))
    for f in files:
        if not confine.holds(f):
            out.problems.append(confine.refuse(f, str(f)))
    return [f for f in files if confine.holds(f)]


def _load_json(f: Path, out: Export) -> object | None:
    try:
        return json.loads(f.read_bytes())  # bytes: UTF-8/16/32 detected; undecodable bytes are a ValueError
    except (OSError, ValueError) as e:
        out.problems.append(Problem(str(f), f"does not parse as JSON ({type(e).__name__}: {e})", UNPARSABLE))
        return None


# --- Pascal VOC ---------------------------------------------------------------------------------
def read_voc(src: Path) -> Export:
    root = export_root(src)
    out = Export(root=root)
    xmls = _annotation_files(src, "*.xml", True, out)
    index = ImageIndex(root)
    if not xmls and not out.problems:
        out.problems.append(Problem(str(src), "no Pascal VOC .xml files found"))
    for x in xmls:
        try:
            ann = ET.parse(x).getroot()
            if ann.tag != "annotation":
                raise ValueError(f"root element is <{ann.tag}>, expected <annotation>")
        except (ET.ParseError, ValueError) as e:
            out.problems.append(Problem(str(x), f"unreadable VOC XML: {e}", MALFORMED))  # one image's file
            continue
        try:
            recorded = (ann.findtext("filename") or x.stem).strip()
            size = None
            if ann.find("size") is not None and ann.findtext("size/width"):
                size = (int(xml_number(ann.findtext("size/width"), "<size><width>")),
                        int(xml_number(ann.findtext("size/height"), "<size><height>")))
            boxes = []
            for o in ann.findall("object"):
                name = (o.findtext("name") or "").strip()
                bb = o.find("bndbox")
                if bb is None:
                    raise Bad(f"object {name!r} has no <bndbox> (only boxes are supported)", INVALID)
                # keep difficult=1 boxes: the defect is there, a model that misses it is wrong
                boxes.append(Box(name, *(xml_number(bb.findtext(k), f"object {name!r} bndbox <{k}>")
                                         for k in ("xmin", "ymin", "xmax", "ymax"))))
        except Bad as e:
            out.problems.append(Problem(str(x), str(e), e.kind))
            continue
        image = index.find(recorded, x.parent) or index.find(x.stem, x.parent)
        if image is None:
            out.problems.append(index.missing(recorded, str(x), x.parent))
            continue
        out.items.append(Annotated(image, x, tuple(boxes), size))
    return out


# --- COCO ---------------------------------------------------------------------------------------
def read_coco(src: Path) -> Export:
    root = export_root(src)
    out = Export(root=root)
    files = _annotation_files(src, "*.json", True, out)
    if not files and not out.problems:
        out.problems.append(Problem(str(src), "no COCO instances .json found"))
    index = ImageIndex(root)
    cats: dict[int, str] = {}
    for f in files:
        doc = _load_json(f, out)
        if doc is None:
            continue
        try:
            if not isinstance(doc, dict):
                raise ValueError(f"the top level is a {type(doc).__name__}, expected an object")
            images, anns, categories = doc["images"], doc.get("annotations", []), doc["categories"]
            for key, v in (("images", images), ("annotations", anns), ("categories", categories)):
                if not isinstance(v, list):
                    raise ValueError(f"`{key}` is a {type(v).__name__}, expected a list")
        except (KeyError, ValueError) as e:
            out.problems.append(Problem(str(f), f"not a COCO instances JSON ({type(e).__name__}: {e})", UNPARSABLE))
            continue
        found: dict[int, str] = {}
        for i, c in enumerate(categories):
            try:
                if not isinstance(c, dict):
                    raise Bad(f"not an object ({c!r:.40})")
                if "id" not in c or isinstance(c["id"], bool) or not isinstance(c["id"], int):
                    raise Bad(f"category has no id (an integer; got {c.get('id')!r}): its annotations cannot be "
                              "placed")
                if not isinstance(c.get("name"), str) or not c["name"]:
                    raise Bad(f"category {c['id']} has no name (a string; got {c.get('name')!r})")
            except Bad as e:
                out.problems.append(Problem(f"{f} (categories[{i}])", str(e), e.kind))
                continue
            found[c["id"]] = c["name"]
        for k in sorted(found):
            cats.setdefault(k, found[k])
        by_image: dict[int | str, list[dict]] = {}
        for i, a in enumerate(anns):
            if not isinstance(a, dict) or not isinstance(a.get("image_id"), (int, str)):
                why = "not an object" if not isinstance(a, dict) else f"image_id is {a.get('image_id')!r}"
                out.problems.append(Problem(f"{f} (annotations[{i}])", f"{why} ({a!r:.60}): the annotation cannot "
                                                                        "be placed", MALFORMED))
                continue
            by_image.setdefault(a["image_id"], []).append(a)
        for i, im in enumerate(images):
            if not isinstance(im, dict) or not isinstance(im.get("id"), (int, str)) or \
                    not isinstance(im.get("file_name"), str) or not im["file_name"]:
                why = "not an object" if not isinstance(im, dict) else "no id and file_name"
                out.problems.append(Problem(f"{f} (images[{i}])", f"{why} ({im!r:.60})", MALFORMED))
                continue
            name = im["file_name"]
            path = index.find(name, f.parent)
            if path is None:
                out.problems.append(index.missing(name, f"{f} (image id {im['id']})", f.parent))
                continue
            try:
                boxes = [_coco_box(a, cats) for a in by_image.get(im["id"], [])]
                size = None
                if im.get("width") and im.get("height"):
                    size = (int(number(im["width"], "width")), int(number(im["height"], "height")))
            except Bad as e:
                out.problems.append(Problem(f"{f} ({name})", str(e), e.kind))
                continue
            out.items.append(Annotated(path, f, tuple(boxes), size))
    out.classes = [cats[k] for k in sorted(cats)] or None
    return out


def _coco_box(a: dict, cats: dict[int, str]) -> Box:
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise Bad(f"annotation id {a.get('id')} has no [x, y, w, h] bbox (got {bbox!r:.40})", INVALID)
    x, y, w, h = (number(v, f"annotation id {a.get('id')}: bbox {bbox}") for v in bbox)
    cid = a.get("category_id")
    if isinstance(cid, bool) or not isinstance(cid, int) or cid not in cats:
        raise Bad(f"annotation id {a.get('id')} has unknown category_id {cid}", INVALID)
    return Box(cats[cid], x, y, x + w, y + h)


# --- Label Studio -------------------------------------------------------------------------------
def read_labelstudio(src: Path, image_labels: bool = False) -> Export:
    root = export_root(src)
    out = Export(root=root)
    files = _annotation_files(src, "*.json", False, out)
    if not files and not out.problems:
        out.problems.append(Problem(str(src), "no Label Studio JSON export found"))
    index = ImageIndex(root)
    for f in files:
        tasks = _load_json(f, out)
        if tasks is None:
            continue
        if isinstance(tasks, dict):
            tasks = [tasks]
        if not isinstance(tasks, list):
            out.problems.append(Problem(str(f), f"the top level is a {type(tasks).__name__}, expected a list of "
                                                "tasks", UNPARSABLE))
            continue
        for k, t in enumerate(tasks):
            if not isinstance(t, dict):
                out.problems.append(Problem(f"{f} (tasks[{k}])", f"not an object ({t!r:.40})", MALFORMED))
                continue
            where = f"{f} (task {t.get('id')})"
            data = t.get("data") if isinstance(t.get("data"), dict) else {}
            # local-files URLs carry the path in ?d= (/data/local-files/?d=night/a.jpg)
            ref = next((v for v in data.values() if isinstance(v, str) and
                        Path(v.split("?d=")[-1].split("?")[0]).suffix.lower() in IMAGE_SUFFIXES), None)
            if ref is None:
                out.problems.append(Problem(where, "task has no image in its data"))
                continue
            # /data/upload/3/1a2b3c4d-part_7.jpg: Label Studio prefixes uploads with an 8-hex id
            name = unquote(ref.split("?d=")[-1].split("?")[0])
            upload = re.sub(r"^[0-9a-f]{8}-", "", Path(name).name)
            path = index.find(name, f.parent) or index.find(upload, f.parent)
            if path is None:
                problem = index.missing(name, where, f.parent)
                if problem.kind != OUTSIDE and index.missing(upload, where, f.parent).kind == OUTSIDE:
                    problem = index.missing(upload, where, f.parent)
                out.problems.append(problem)
                continue
            annotations = t.get("annotations") or t.get("completions") or []
            if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
                out.problems.append(Problem(where, f"annotations is not a list of objects ({annotations!r:.40})",
                                            MALFORMED))
                continue
            annotations = [a for a in annotations if not a.get("was_cancelled")]
            if not annotations:  # not labelled yet: importing it as a defect-free image would teach its defects away
                out.problems.append(Problem(where, "task has no (non-cancelled) annotation: not labelled yet"))
                continue
            try:
                result = annotations[0].get("result", [])
                tags = _ls_choices(result) if image_labels else ()
                boxes, size = _ls_boxes(result) if not image_labels else ([], None)
            except Bad as e:
                out.problems.append(Problem(where, str(e), e.kind))
                continue
            out.items.append(Annotated(path, f, tuple(boxes), size, tags=tags))
    return out


def _ls_boxes(results: object) -> tuple[list[Box], tuple[int, int] | None]:
    if not isinstance(results, list):
        raise Bad(f"result is {results!r:.40}, not a list")
    boxes, size = [], None
    for r in results:
        if not isinstance(r, dict):
            raise Bad(f"a result is not an object ({r!r:.40})")
        rid, kind, v = r.get("id"), r.get("type"), r.get("value")
        if kind != "rectanglelabels":
            raise Bad(f"result {rid} is {kind!r}, only rectanglelabels (boxes) are supported", INVALID)
        if not isinstance(v, dict):
            raise Bad(f"result {rid}: value is {v!r:.40}, not an object")
        if v.get("rotation"):
            raise Bad(f"result {rid} is rotated by {v['rotation']} degrees; only axis-aligned boxes", INVALID)
        if not r.get("original_width") or not r.get("original_height"):
            raise Bad(f"result {rid} lacks original_width/original_height", INVALID)
        w = number(r["original_width"], f"result {rid}: original_width")
        h = number(r["original_height"], f"result {rid}: original_height")
        size = (int(w), int(h))
        x, y, bw, bh = (number(v.get(k), f"result {rid}: value.{k}") for k in ("x", "y", "width", "height"))
        labels = v.get("rectanglelabels")
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
            raise Bad(f"result {rid}: value.rectanglelabels is {labels!r:.40}, expected a list of label names")
        x, y = x * w / 100, y * h / 100
        boxes.append(Box(labels[0], x, y, x + bw * w / 100, y + bh * h / 100))
    return boxes, size


def _ls_choices(results: object) -> tuple[str, ...]:
    """The `choices` of a result list (image-level labels); other result types are ignored here."""
    if not isinstance(results, list):
        raise Bad(f"result is {results!r:.40}, not a list")
    tags = []
    for r in results:
        if not isinstance(r, dict):
            raise Bad(f"a result is not an object ({r!r:.40})")
        if r.get("type") != "choices":
            continue
        v = r.get("value")
        choices = v.get("choices") if isinstance(v, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise Bad(f"result {r.get('id')}: value.choices is {choices!r:.40}, expected a list of label names")
        tags += choices
    return tuple(tags)


# --- CVAT for images 1.1 ------------------------------------------------------------------------
def read_cvat(src: Path, image_labels: bool = False) -> Export:
    root = export_root(src)
    out = Export(root=root)
    xml = next(iter(_annotation_files(src, "*.xml", False, out)), None)
    if xml is None:
        if not out.problems:
            out.problems.append(Problem(str(src), "no CVAT annotations.xml found"))
        return out
    try:
        doc = ET.parse(xml).getroot()
        if doc.tag != "annotations":
            raise ValueError(f"root element is <{doc.tag}>, expected <annotations> (CVAT for images 1.1)")
    except (ET.ParseError, ValueError) as e:
        out.problems.append(Problem(str(xml), f"unreadable CVAT XML: {e}", UNPARSABLE))
        return out
    labels = [e.text.strip() for e in doc.findall("meta/*/labels/label/name") if e.text]
    out.classes = labels or None
    index = ImageIndex(root)
    for im in doc.findall("image"):
        name = im.get("name", "")
        where = f"{xml} (image {name!r})"
        path = index.find(name, xml.parent)
        if path is None:
            out.problems.append(index.missing(name, where, xml.parent))
            continue
        others = sorted({c.tag for c in im if c.tag not in ("box", "tag")})
        if others:
            out.problems.append(Problem(where, f"holds {', '.join(others)}; only <box> shapes are supported"))
            continue
        try:
            boxes = []
            for b in im.findall("box"):
                label = b.get("label", "")
                if xml_number(b.get("rotation", "0") or "0", f"box {label!r} rotation") != 0:
                    raise Bad("a rotated box (only axis-aligned boxes are supported)", INVALID)
                boxes.append(Box(label, *(xml_number(b.get(k), f"box {label!r} {k}")
                                          for k in ("xtl", "ytl", "xbr", "ybr"))))
            size = None
            if im.get("width"):
                size = (int(xml_number(im.get("width"), "width")), int(xml_number(im.get("height"), "height")))
        except Bad as e:
            out.problems.append(Problem(where, f"bad box: {e}", e.kind))
            continue
        tags = tuple(t.get("label", "") for t in im.findall("tag")) if image_labels else ()
        out.items.append(Annotated(path, xml, tuple(boxes), size, tags=tags))
    return out


# --- YOLO ---------------------------------------------------------------------------------------
def data_yaml_root(yaml_path: Path, data: dict) -> Path:
    """The dataset root a data.yaml names: `path:` (absolute, or relative to the yaml), else the
    yaml's folder. (Relative to the yaml's folder once: joining it twice read ds/ds/images.)"""
    p = data.get("path")
    if not p:
        return yaml_path.parent
    p = Path(str(p))
    return p if p.is_absolute() else yaml_path.parent / p


def read_yolo(src: Path) -> Export:
    """A data.yaml (its splits kept) or a folder holding images/ and labels/ (flat or per split);
    class names from data.yaml, classes.txt, or `--classes` (then labels name them by index)."""
    candidates = (src / "data.yaml", src / "dataset.yaml")
    yaml_path = src if src.is_file() else next((p for p in candidates if p.exists()), None)
    splits: dict[str | None, Path] = {}
    if yaml_path is not None:
        try:
            data = yaml.safe_load(yaml_path.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"the top level is a {type(data).__name__}, expected a mapping")
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ValueError(f"{yaml_path}: unreadable data.yaml ({e})") from e
        root = data_yaml_root(yaml_path, data)
        out = Export(root=root, classes=yaml_names(data.get("names"), str(yaml_path)))
        confine = Confine(root)
        for s in ("train", "val", "test"):
            if not isinstance(data.get(s), str):
                continue
            d = root / data[s]
            if not d.is_dir():
                out.problems.append(Problem(str(yaml_path), f"split {s!r}: folder {d} does not exist", INVALID))
            elif not confine.holds(d):
                out.problems.append(confine.refuse(d, str(yaml_path), f"split {s!r}: folder {d}"))
            else:
                splits[s] = d
    else:
        root = src
        out = Export(root=root)
        if (src / "classes.txt").exists():
            out.classes = [n.strip() for n in (src / "classes.txt").read_text().splitlines() if n.strip()]
        img_root = src / "images" if (src / "images").is_dir() else src
        subs = [d for d in ("train", "val", "test") if (img_root / d).is_dir()]
        splits = {d: img_root / d for d in subs} or {None: img_root}
        confine = Confine(root)
    out.by_index = out.classes is None
    seen: set[Path] = set()
    todo = []
    for split, img_dir in splits.items():
        images, refused = confine.files(img_dir, IMAGE_SUFFIXES)
        out.problems.extend(confine.refuse(p, str(p)) for p in refused)
        for img in images:
            if img not in seen:  # a data.yaml may point train and val at one folder (the synthetic line does)
                seen.add(img)
                todo.append((img, split, confine, out.classes))
    for item, problem in threaded_map(_yolo_item, todo):
        if problem is not None:
            out.problems.append(problem)
        else:
            out.items.append(item)
    return out


def _yolo_item(img: Path, split: str | None, confine: Confine, classes: list[str] | None
               ) -> tuple[Annotated | None, Problem | None]:
    label = _yolo_label_for(img)
    if label is None:  # ultralytics would train it as defect-free; an empty .txt says so on purpose
        return None, Problem(str(img), "no label file (a defect-free image needs an empty .txt)")
    if not confine.holds(label):
        return None, confine.refuse(label, str(label))
    try:
        boxes = _yolo_boxes(label, classes)
    except Bad as e:
        return None, Problem(str(label), str(e), e.kind)
    return Annotated(img, label, tuple(boxes), None, split, normalized=True), None


def _yolo_boxes(label: Path, classes: list[str] | None) -> list[Box]:
    boxes = []
    try:
        text = read_file(label).decode()
    except (OSError, UnicodeDecodeError) as e:
        raise Bad(f"unreadable label file ({e})", MALFORMED) from None  # one image's file
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise Bad(f"line {n}: {len(parts)} fields, expected 5 (class cx cy w h)", INVALID)
        try:
            c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:])
        except ValueError as e:
            raise Bad(f"line {n}: {e}", INVALID) from None
        if not finite(cx, cy, w, h):
            raise Bad(f"line {n}: a non-finite value ({line.strip()})", NON_FINITE)
        if c < 0 or (classes is not None and c >= len(classes)):
            raise Bad(f"line {n}: class id {c}, the dataset names {len(classes or [])} classes", INVALID)
        # without names the label is the class id; `--classes` (or the ids themselves) name it later
        name = classes[c] if classes is not None else str(c)
        # normalised: the writer scales by the real image size (size=None marks that)
        boxes.append(Box(name, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def _yolo_label_for(img: Path) -> Path | None:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            cand = Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
            if cand.exists():
                return cand
    cand = img.with_suffix(".txt")
    return cand if cand.exists() else None
