"""`inspector review export`: the uploaded nights as a labelling tool's tasks, the model's boxes as
pre-annotations, so a reviewer corrects instead of drawing from nothing.

Reads `<destination>/<date>/manifest.jsonl` for every capture date in [since, until] (what the
nightly uploader wrote), downloads each frame once and checks it against the manifest's sha256,
and writes one review folder OUT (to a temporary folder beside it, then renamed: never half-written):

    OUT/images/<sha256>.jpg      the frames, named as uploaded (local copies: `dataset import` reads the
                                 pixels from here and finds them by the name the tasks' URLs end with)
    OUT/review.json              what was exported: classes in model order, per sample its part id,
                                 night, sampling reasons, verdict, model version and the boxes the
                                 model proposed. `dataset import` of the reviewed export compares
                                 the reviewer's boxes with these (confirmed / deleted / added) and
                                 refuses images that are not listed here (not from the upload).
    labelstudio: OUT/tasks.json (Label Studio tasks: `data.image` points at the uploaded object, a
                 presigned S3 URL or a local-files URL; `predictions` hold the boxes in percent with
                 scores and the model version; reasons and verdict are task data, for filters) and
                 OUT/labeling_config.xml (the project's labelling interface).
    cvat:        OUT/annotations.xml (CVAT for images 1.1; the boxes as source="auto" shapes).
    yolo:        OUT/labels/<sha256>.txt and OUT/classes.txt (the boxes to edit).

Pre-annotations are every box the model reported: defects (at or above threshold) and uncertain
ones (within the margin around it), so the reviewer sees what made the frame interesting.

A classifier's nights (pre-labels in format "classes") are image-level reviews instead (review/export_classify.py):
labelstudio with a `Choices` config and the model's class pre-selected, cvat with tags, or folders (one folder
per class). One export holds one model kind: nights that mix kinds, or a target the kind has no form for (yolo
for a classifier, folders for a detector), are refused (exit 2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from inspector.bundle import CARD_NAME
from inspector.bundle.card import read_card
from inspector.bundle.signing import BundleRefused
from inspector.errors import InspectorError
from inspector.kernel.atomic_dir import replace_dir
from inspector.review import export_classify

REVIEW_JSON = "review.json"
REVIEW_KIND = "inspector-review"
TARGETS = ("labelstudio", "cvat", "yolo", "folders")
# by label format
KIND_TARGETS = {"yolo": ("labelstudio", "cvat", "yolo"), export_classify.FORMAT: export_classify.TARGETS}
KIND_TASK = {"yolo": "detect", export_classify.FORMAT: "classify"}
FROM_NAME, TO_NAME = "label", "image"  # the labelling config's control and object names
MAX_DAYS = 400  # a date range longer than this is a typo, not a review
PRESIGN_MAX_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days


class ReviewExportError(InspectorError):
    exit_code = 2


@dataclass(frozen=True)
class ExportResult:
    out: Path
    samples: int
    nights: list[str]
    missing_nights: list[str]
    published: list[str]


def parse_date(s: str, what: str) -> dt.date:
    try:
        if len(s) != 10:  # fromisoformat also takes 20300317, which reads like a typo here
            raise ValueError(s)
        return dt.date.fromisoformat(s)
    except ValueError:
        raise ReviewExportError(f"{what}: expected a date YYYY-MM-DD, got {s!r}") from None


def nights(since: dt.date, until: dt.date) -> list[str]:
    if until < since:
        raise ReviewExportError(f"--until {until} is before --since {since}")
    n = (until - since).days + 1
    if n > MAX_DAYS:
        raise ReviewExportError(f"--since {since} --until {until} spans {n} days; at most {MAX_DAYS}")
    return [(since + dt.timedelta(days=i)).isoformat() for i in range(n)]


def model_classes(cfg) -> list[str]:
    """Class names in model order: the bundle's card, else the config's model.classes."""
    return model_info(cfg)[0]


def model_info(cfg) -> tuple[list[str], str | None, str | None]:
    """(class names in model order, the pass class of a classifier's card or None, the card's task or None)."""
    card = Path(cfg.model.path) / CARD_NAME
    if card.exists():
        try:
            c = read_card(card)[0]
        except BundleRefused as e:
            raise ReviewExportError(str(e)) from e
        return list(c.classes), c.pass_class, c.task
    if cfg.model.classes:
        return list(cfg.model.classes), None, None
    raise ReviewExportError(f"no class list: {card} does not exist and the config names no model.classes")


def read_manifest(dest, date: str) -> list[dict[str, Any]] | None:
    raw = dest.get(dest.key(f"{date}/manifest.jsonl"))
    if raw is None:
        return None
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "id" not in rec or "image_key" not in rec:
                raise ValueError("expected an object with id and image_key")
        except ValueError as e:
            raise ReviewExportError(f"{dest.uri(dest.key(f'{date}/manifest.jsonl'))} line {n}: {e}") from e
        out.append(rec)
    return out


def image_url(dest, key: str, mode: str, expires_s: int, document_root: Path | None) -> str:
    """Where the labelling tool loads the frame from."""
    if mode == "presigned":
        if not hasattr(dest, "presign"):
            raise ReviewExportError(f"--image-url presigned needs an s3:// destination, not {dest.url}")
        return dest.presign(key, expires_s)
    if mode == "s3":  # for a Label Studio S3 source storage that presigns itself
        return dest.uri(key)
    if mode == "local-files":  # Label Studio's local-files storage, served under its document root
        path = Path(dest.root / key).resolve() if hasattr(dest, "root") else None
        if path is None:
            raise ReviewExportError(f"--image-url local-files needs a file:// destination, not {dest.url}")
        root = (document_root or dest.root).resolve()
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise ReviewExportError(f"{path} is not under the local-files document root {root}") from None
        return "/data/local-files/?d=" + quote(rel.as_posix())
    raise ReviewExportError(f"unknown --image-url {mode!r}")


def _boxes(rec: dict[str, Any], classes: list[str], pass_class: str | None = None) -> list[dict[str, Any]]:
    out = []
    for kind in ("defects", "uncertain"):
        for d in rec.get(kind) or []:
            name = d.get("class")
            if name not in classes:
                raise ReviewExportError(f"sample {rec['id']}: class {name!r} is not one of the model's {classes}")
            out.append({"class": name, "confidence": float(d.get("confidence", 0.0)),
                        "box": [float(v) for v in d["box"]], "uncertain": kind == "uncertain"})
    return out


#: the sample's pre-label format (sidecar `labels.format`, the model kind's `Findings.label_format`) -> its
#: predictions as the targets write them. A kind's review export adds its format here.
def _classes(rec: dict[str, Any], classes: list[str], pass_class: str | None = None) -> list[dict[str, Any]]:
    try:
        return export_classify.class_prediction(rec, classes, pass_class)
    except ValueError as e:
        raise ReviewExportError(str(e)) from None


PREDICTIONS = {"yolo": _boxes, export_classify.FORMAT: _classes}


def label_format(rec: dict[str, Any]) -> str:
    return (rec.get("labels") or {}).get("format", "yolo")


def predictions(rec: dict[str, Any], classes: list[str], pass_class: str | None = None) -> list[dict[str, Any]]:
    fmt = label_format(rec)
    read = PREDICTIONS.get(fmt)
    if read is None:
        raise ReviewExportError(f"sample {rec['id']}: pre-labels in format {fmt!r}, which review export does not "
                                f"write (formats: {sorted(PREDICTIONS)})")
    return read(rec, classes, pass_class)


def review_kind(items: list[dict[str, Any]], to: str) -> str:
    """The one label format of the export's samples, refused when they mix kinds or `to` has no form for it."""
    kinds: dict[str, list[str]] = {}
    for it in items:
        kinds.setdefault(it["format"], []).append(it["id"])
    if len(kinds) > 1:
        parts = [f"{len(ids)} of format {f!r} ({KIND_TASK.get(f, '?')}; first {ids[0]})" for f, ids in kinds.items()]
        raise ReviewExportError("the nights mix model kinds (" + ", ".join(parts) + "): one export reviews one kind; "
                                "export the nights of each model separately (--since/--until)")
    (fmt,) = kinds
    if to not in KIND_TARGETS.get(fmt, ()):
        raise ReviewExportError(f"--to {to}: the samples are a {KIND_TASK.get(fmt, fmt)} model's (pre-labels "
                                f"{fmt!r}), which review export writes as {', '.join(KIND_TARGETS.get(fmt, ()))}")
    return fmt


def review_items(dest, dates: list[str], classes: list[str], pass_class: str | None = None,
                 to: str | None = None) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The samples of the nights; with `to`, their one model kind is checked (review_kind) before their
    predictions are read (a mixed export is refused as such, not by the first foreign class)."""
    items, found, missing, recs_of = [], [], [], []
    seen: set[str] = set()
    for date in dates:
        recs = read_manifest(dest, date)
        if recs is None:
            missing.append(date)
            continue
        found.append(date)
        for r in recs:
            img = r.get("image") or {}
            sha = r.get("image_sha256") or img.get("sha256")
            if sha in seen:  # the same bytes sampled twice are one object upstream: review them once
                continue
            seen.add(sha)
            model = r.get("model") or {}
            items.append({
                "id": r["id"], "file": f"{sha}.jpg", "night": date, "image_key": r["image_key"], "image_sha256": sha,
                "width": int(img.get("width", 0)), "height": int(img.get("height", 0)),
                "part_id": r.get("part_id"), "frame_id": r.get("frame_id"), "captured_at": r.get("captured_at"),
                "reason": r.get("reason"), "reasons": list(r.get("reasons") or [r.get("reason")]),
                "verdict": (r.get("verdict") or {}).get("outcome"),
                "model": {"name": model.get("name"), "version": model.get("version"), "sha256": model.get("sha256")},
                "format": label_format(r),
            })
            recs_of.append(r)
    if items and to is not None:
        review_kind(items, to)
    for it, r in zip(items, recs_of, strict=True):
        it["predictions"] = predictions(r, classes, pass_class)
    return items, found, missing


def labeling_config(classes: list[str]) -> str:
    """The Label Studio labelling interface of inspector reviews (one rectangle label per class)."""
    palette = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")
    labels = "\n".join(f'    <Label value="{c}" background="{palette[i % len(palette)]}"/>'
                       for i, c in enumerate(classes))
    return (f'<View>\n  <Header value="$reasons | verdict $verdict | part $part_id | $night"/>\n'
            f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def ls_result(box: list[float], cls: str, w: int, h: int, rid: str, score: float | None = None) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    r = {"id": rid, "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
         "original_width": w, "original_height": h, "image_rotation": 0,
         "value": {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h,
                   "rotation": 0, "rectanglelabels": [cls]}}
    if score is not None:
        r["score"] = round(score, 4)
    return r


def task_data(it: dict[str, Any], url: str) -> dict[str, Any]:
    """A Label Studio task's data (what filters and the header show), for every model kind."""
    return {"image": url, "inspector_id": it["id"], "image_sha256": it["image_sha256"], "night": it["night"],
            "reasons": ",".join(it["reasons"]), "reason": it["reason"], "verdict": it["verdict"],
            "part_id": it["part_id"], "frame_id": it["frame_id"],
            "model_version": f"{it['model']['name']} {it['model']['version']}"}


def ls_task(it: dict[str, Any], url: str) -> dict[str, Any]:
    w, h = it["width"], it["height"]
    preds = it["predictions"]
    data = task_data(it, url)
    return {
        "data": data,
        "predictions": [{
            "model_version": data["model_version"],
            "score": round(max((p["confidence"] for p in preds), default=0.0), 4),
            "result": [ls_result(p["box"], p["class"], w, h, f"p{k}", p["confidence"]) for k, p in enumerate(preds)],
        }],
    }


def _cvat_box(image: ET.Element, p: dict[str, Any]) -> None:
    x0, y0, x1, y1 = p["box"]
    ET.SubElement(image, "box", label=p["class"], source="auto", occluded="0", xtl=f"{x0:.2f}", ytl=f"{y0:.2f}",
                  xbr=f"{x1:.2f}", ybr=f"{y1:.2f}", z_order="0")


def cvat_xml(items: list[dict[str, Any]], classes: list[str], name: str, label_type: str = "rectangle",
             mark=_cvat_box) -> bytes:
    """CVAT for images 1.1: the classes as labels of `label_type` and each prediction drawn by `mark` (a
    detector's boxes; a classifier's tags: export_classify.cvat_mark)."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = name
    ET.SubElement(task, "size").text = str(len(items))
    labels = ET.SubElement(task, "labels")
    for c in classes:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = c
        ET.SubElement(lab, "type").text = label_type
        ET.SubElement(lab, "attributes")
    for k, it in enumerate(items):
        im = ET.SubElement(root, "image", id=str(k), name=f"images/{it['file']}", width=str(it["width"]),
                           height=str(it["height"]))
        for p in it["predictions"]:
            mark(im, p)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")


def yolo_label(it: dict[str, Any], classes: list[str]) -> str:
    w, h = it["width"], it["height"]
    rows = []
    for p in it["predictions"]:
        x0, y0, x1, y1 = (min(max(v, 0.0), lim) for v, lim in zip(p["box"], (w, h, w, h), strict=True))
        if x1 > x0 and y1 > y0:
            rows.append(f"{classes.index(p['class'])} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                        f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n")
    return "".join(rows)


def export_review(cfg, since: dt.date, until: dt.date, to: str, out: Path, *, image_url_mode: str = "auto",
                  expires_s: int = PRESIGN_MAX_S, document_root: Path | None = None, publish: bool = False,
                  log=print) -> ExportResult:
    from inspector.review.upload import open_destination

    if to not in TARGETS:
        raise ReviewExportError(f"--to: expected one of {TARGETS}, got {to!r}")
    if publish and to == "folders":  # what --publish stores is the export's files, not the frames themselves
        raise ReviewExportError("--publish stores the export's files beside the nights; a folders export is the "
                                "frames themselves, sorted: copy the folder to the reviewer instead")
    if not 1 <= expires_s <= PRESIGN_MAX_S:
        raise ReviewExportError(f"--expires: expected 1..{PRESIGN_MAX_S} s (S3 presigned URLs), got {expires_s}")
    dest = open_destination(cfg.upload)
    classes, pass_class, task = model_info(cfg)
    dates = nights(since, until)
    items, found, missing = review_items(dest, dates, classes, pass_class, to)
    if not items:
        raise ReviewExportError(f"no uploaded samples in {dest.url} for {since}..{until} "
                                f"(nights with a manifest: {found or 'none'})")
    fmt = review_kind(items, to)
    if task is not None and task != KIND_TASK[fmt]:
        raise ReviewExportError(f"the samples are a {KIND_TASK[fmt]} model's (pre-labels {fmt!r}), the config's model "
                                f"{cfg.model.path} is a {task} bundle: review a night with the model kind that judged "
                                "it (its classes)")
    classify = fmt == export_classify.FORMAT
    mode = image_url_mode if image_url_mode != "auto" else ("presigned" if hasattr(dest, "presign") else "local-files")

    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / REVIEW_JSON).exists():
        raise ReviewExportError(f"{out} exists and is not a review export: choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        tasks = []
        for it in items:
            data = dest.get(it["image_key"])
            if data is None:
                raise ReviewExportError(f"sample {it['id']} (night {it['night']}): {dest.uri(it['image_key'])} is "
                                        "named in the manifest but not in the upload")
            sha = hashlib.sha256(data).hexdigest()
            if sha != it["image_sha256"]:
                raise ReviewExportError(f"sample {it['id']}: {dest.uri(it['image_key'])} has sha256 {sha}, the "
                                        f"manifest says {it['image_sha256']}")
            (tmp / "images" / it["file"]).write_bytes(data)
            if not (it["width"] and it["height"]):
                import cv2
                import numpy as np

                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                it["height"], it["width"] = img.shape[:2]
            if to == "labelstudio":
                url = image_url(dest, it["image_key"], mode, expires_s, document_root)
                tasks.append(export_classify.ls_task(it, task_data(it, url), FROM_NAME, TO_NAME) if classify
                             else ls_task(it, url))
        name = f"inspector review {since}..{until}"
        if to == "labelstudio":
            (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")
            (tmp / "labeling_config.xml").write_text(
                export_classify.labeling_config(classes, FROM_NAME, TO_NAME) if classify else labeling_config(classes))
        elif to == "cvat":
            (tmp / "annotations.xml").write_bytes(
                cvat_xml(items, classes, name, export_classify.CVAT_LABEL, export_classify.cvat_mark) if classify
                else cvat_xml(items, classes, name))
        elif to == "folders":  # the frames sorted into their predicted class's folder (images/ holds none)
            for d in [*classes, export_classify.UNSORTED]:
                (tmp / d).mkdir()
            for it in items:
                (tmp / "images" / it["file"]).rename(tmp / export_classify.folder_of(it) / it["file"])
            (tmp / "images").rmdir()
        else:
            (tmp / "labels").mkdir()
            for it in items:
                (tmp / "labels" / f"{it['image_sha256']}.txt").write_text(yolo_label(it, classes))
            (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
        review = {"kind": REVIEW_KIND, "format_version": 1,
                  "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "destination": dest.url, "since": since.isoformat(), "until": until.isoformat(), "to": to,
                  "image_url": mode if to == "labelstudio" else None, "classes": classes,
                  "task": KIND_TASK[fmt], "pass_class": pass_class if classify else None,
                  "nights": found, "nights_without_manifest": missing, "items": items}
        (tmp / REVIEW_JSON).write_text(json.dumps(review, indent=1) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    published = []
    if publish:  # the export beside the nights it covers, for a reviewer's machine to fetch
        base = f"reviews/{since}_{until}-{to}"
        for f in sorted(p for p in out.iterdir() if p.is_file()):
            data = f.read_bytes()
            key = dest.key(f"{base}/{f.name}")
            dest.put(key, data, md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(),
                     content_type="application/json" if f.suffix == ".json" else "application/xml")
            published.append(dest.uri(key))
    return ExportResult(out, len(items), found, missing, published)
