"""Small labelling-tool exports made by the tests themselves (drawn with cv2): Pascal VOC, COCO,
Label Studio, CVAT for images 1.1 and YOLO, each written after the format's published layout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

CLASSES = ("scratch", "pit")


@dataclass(frozen=True)
class Drawn:
    name: str  # image file name
    width: int
    height: int
    boxes: tuple[tuple[str, int, int, int, int], ...]  # label, x1, y1, x2, y2 (pixels)


def draw(out_dir: Path, n: int = 8, size: tuple[int, int] = (96, 80), seed: int = 0,
         prefix: str = "img") -> list[Drawn]:
    """n grayscale-looking parts, each with one or two defects: a bright scratch, a dark pit."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    drawn = []
    for i in range(n):
        img = np.full((h, w, 3), 110, np.uint8)
        img[:] += rng.integers(0, 25, (h, w, 1), dtype=np.uint8)
        boxes = []
        x = int(rng.integers(5, w // 2 - 20))
        y = int(rng.integers(5, h - 30))
        cv2.line(img, (x, y), (x + 18, y + 20), (230, 230, 230), 2)
        boxes.append(("scratch", x - 1, y - 1, x + 20, y + 22))
        if i % 2 == 0:
            cx, cy = int(rng.integers(w // 2 + 8, w - 10)), int(rng.integers(10, h - 10))
            cv2.circle(img, (cx, cy), 5, (30, 30, 30), -1)
            boxes.append(("pit", cx - 6, cy - 6, cx + 6, cy + 6))
        name = f"{prefix}_{i}.jpg"
        cv2.imwrite(str(out_dir / name), img)
        drawn.append(Drawn(name, w, h, tuple(boxes)))
    return drawn


def write_voc(src: Path, n: int = 8, seed: int = 0) -> list[Drawn]:
    drawn = draw(src / "JPEGImages", n, seed=seed)
    (src / "Annotations").mkdir(parents=True, exist_ok=True)
    for d in drawn:
        objs = "".join(
            f"<object><name>{escape(c)}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{k % 2}"
            f"</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>"
            for k, (c, x1, y1, x2, y2) in enumerate(d.boxes))
        # some exports (NEU-DET's) record the file name without its extension
        fname = d.name if d.name.endswith(("0.jpg", "2.jpg", "4.jpg")) else Path(d.name).stem
        (src / "Annotations" / (Path(d.name).stem + ".xml")).write_text(
            f"<annotation><folder>JPEGImages</folder><filename>{fname}</filename><size><width>{d.width}</width>"
            f"<height>{d.height}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")
    return drawn


def coco_doc(drawn: list[Drawn]) -> dict:
    cats = [{"id": i + 1, "name": c, "supercategory": "defect"} for i, c in enumerate(CLASSES)]
    images, anns = [], []
    for i, d in enumerate(drawn):
        images.append({"id": i + 1, "file_name": d.name, "width": d.width, "height": d.height})
        for c, x1, y1, x2, y2 in d.boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": CLASSES.index(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return {"info": {"description": "test"}, "images": images, "annotations": anns, "categories": cats}


def write_coco(src: Path, n: int = 8, seed: int = 0) -> list[Drawn]:
    drawn = draw(src / "images", n, seed=seed)
    (src / "instances_default.json").write_text(json.dumps(coco_doc(drawn)))
    return drawn


def ls_task(i: int, d: Drawn, kind: str = "rectanglelabels") -> dict:
    results = []
    for k, (c, x1, y1, x2, y2) in enumerate(d.boxes):
        if kind == "rectanglelabels":
            value = {"x": 100 * x1 / d.width, "y": 100 * y1 / d.height, "width": 100 * (x2 - x1) / d.width,
                     "height": 100 * (y2 - y1) / d.height, "rotation": 0, "rectanglelabels": [c]}
        else:
            value = {"points": [[100 * x1 / d.width, 100 * y1 / d.height], [100 * x2 / d.width, 100 * y1 / d.height],
                                [100 * x2 / d.width, 100 * y2 / d.height]], "polygonlabels": [c]}
        results.append({"id": f"r{i}-{k}", "type": kind, "from_name": "label", "to_name": "image",
                        "original_width": d.width, "original_height": d.height, "image_rotation": 0, "value": value})
    # uploads are renamed <8 hex>-<name> by Label Studio
    return {"id": i + 1, "data": {"image": f"/data/upload/1/{i:08x}-{d.name}"},
            "annotations": [{"id": i + 1, "completed_by": 1, "result": results, "was_cancelled": False}]}


def write_labelstudio(src: Path, n: int = 8, seed: int = 0) -> list[Drawn]:
    drawn = draw(src / "images", n, seed=seed)
    (src / "export.json").write_text(json.dumps([ls_task(i, d) for i, d in enumerate(drawn)]))
    return drawn


def write_cvat(src: Path, n: int = 8, seed: int = 0) -> list[Drawn]:
    drawn = draw(src / "images", n, seed=seed)
    labels = "".join(f"<label><name>{c}</name><color>#ff0000</color><type>rectangle</type><attributes/></label>"
                     for c in CLASSES)
    body = []
    for i, d in enumerate(drawn):
        boxes = "".join(f'<box label="{c}" source="manual" occluded="0" xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" '
                        f'ybr="{y2:.2f}" z_order="0"></box>' for c, x1, y1, x2, y2 in d.boxes)
        body.append(f'<image id="{i}" name="{d.name}" width="{d.width}" height="{d.height}">{boxes}</image>')
    (src / "annotations.xml").write_text(
        f"<?xml version='1.0' encoding='utf-8'?>\n<annotations><version>1.1</version><meta><task><id>1</id>"
        f"<name>t</name><size>{len(drawn)}</size><labels>{labels}</labels></task></meta>{''.join(body)}</annotations>")
    return drawn


def write_yolo(src: Path, n: int = 8, seed: int = 0) -> list[Drawn]:
    drawn = draw(src / "images", n, seed=seed)
    (src / "labels").mkdir(parents=True, exist_ok=True)
    (src / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for d in drawn:
        (src / "labels" / (Path(d.name).stem + ".txt")).write_text("".join(
            f"{CLASSES.index(c)} {(x1 + x2) / 2 / d.width:.6f} {(y1 + y2) / 2 / d.height:.6f} "
            f"{(x2 - x1) / d.width:.6f} {(y2 - y1) / d.height:.6f}\n" for c, x1, y1, x2, y2 in d.boxes))
    return drawn


WRITERS = {"voc": write_voc, "coco": write_coco, "labelstudio": write_labelstudio, "cvat": write_cvat,
           "yolo": write_yolo}
