"""compare.py's part for box detectors (card `task: detect`): the dataset version's YOLO images and labels, both
bundles through the runtime detector at EVAL_CONF (evaluate.collect), mAP50 / per-class recall (evaluate.report),
each frame's kept and missed boxes at the card's thresholds, and the HTML cards with the boxes drawn."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.training.compare import CompareError, CompareTask, Pairing, verified_regression
from inspector.training.evaluate import EVAL_CONF, IMAGE_SUFFIXES, Sample
from inspector.training.metrics import ImageResult, box_iou


@dataclass(frozen=True)
class Frame:
    name: str
    path: Path
    sample: Sample


def load_frames(root: Path, split: str, only: set[str] | None = None) -> list[Frame]:
    d = root / "images" / split
    out = []
    if not d.is_dir():
        return out
    for p in sorted(x for x in d.iterdir() if x.suffix.lower() in IMAGE_SUFFIXES):
        if only is not None and p.name not in only:
            continue
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is None:
            raise CompareError(f"{p}: unreadable image")
        h, w = image.shape[:2]
        lbl = root / "labels" / split / (p.stem + ".txt")
        rows = np.loadtxt(lbl, ndmin=2) if lbl.exists() and lbl.stat().st_size else np.zeros((0, 5))
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        out.append(Frame(p.name, p, Sample(image, boxes, rows[:, 0].astype(int))))
    return out


def _flagged(r: ImageResult, thr: np.ndarray) -> bool:
    return bool(len(r.pred_conf) and (r.pred_conf >= thr[r.pred_cls]).any())


def _missed(r: ImageResult, thr: np.ndarray, classes: list[str]) -> list[str]:
    keep = r.pred_conf >= thr[r.pred_cls] if len(r.pred_conf) else np.zeros(0, bool)
    iou = box_iou(r.gt_boxes, r.pred_boxes[keep])
    same = r.gt_cls[:, None] == r.pred_cls[keep][None, :]
    return [classes[int(c)] for g, c in enumerate(r.gt_cls) if not ((iou[g] >= 0.5) & same[g]).any()]


def _kept(r: ImageResult, thr: np.ndarray) -> list[dict]:
    keep = r.pred_conf >= thr[r.pred_cls] if len(r.pred_conf) else np.zeros(0, bool)
    return [{"cls": int(c), "conf": round(float(s), 3), "box": [round(float(v), 1) for v in b]}
            for b, s, c in zip(r.pred_boxes[keep], r.pred_conf[keep], r.pred_cls[keep], strict=True)]


def _judge(frames: list[Frame], old, new) -> tuple[dict, dict, list[dict]]:
    from inspector.inference.detector import Detector
    from inspector.training.evaluate import collect, report

    classes = list(old.classes)
    results, reports, thr = {}, {}, {}
    for key, bundle in (("old", old), ("new", new)):
        results[key] = collect(Detector(bundle, conf=EVAL_CONF), (f.sample for f in frames))
        reports[key] = report(results[key], bundle)
        thr[key] = np.array([bundle.thresholds.get(c, 0.5) for c in classes])
    entries = []
    for i, f in enumerate(frames):
        ro, rn = results["old"][i], results["new"][i]
        truth = [{"cls": int(k), "box": [round(float(v), 1) for v in bx]}
                 for bx, k in zip(f.sample.gt_boxes, f.sample.gt_cls, strict=True)]
        entries.append({"file": f.name, "path": str(f.path), "defective": len(f.sample.gt_cls) > 0,
                        "old_reject": _flagged(ro, thr["old"]), "new_reject": _flagged(rn, thr["new"]),
                        "truth": truth, "old_boxes": _kept(ro, thr["old"]), "new_boxes": _kept(rn, thr["new"]),
                        "old_missed": _missed(ro, thr["old"], classes), "new_missed": _missed(rn, thr["new"], classes)})
    return reports["old"], reports["new"], entries


def prepare(old_path: Path, new_path: Path, data: Path) -> Pairing:
    from inspector.bundle.load import load_bundle
    from inspector.training.merge import YOLO
    from inspector.training.train import dataset_classes

    root = data.parent if data.is_file() else data
    if not (root / "data.yaml").is_file():
        raise CompareError(f"--data {data}: no data.yaml")
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    regression_sha = verified_regression(root, meta, YOLO)
    old, new = load_bundle(old_path, "int8"), load_bundle(new_path, "int8")
    if list(old.classes) != list(new.classes):
        raise CompareError(f"{old_path} has classes {list(old.classes)}, {new_path} has {list(new.classes)}")
    if dataset_classes(root / "data.yaml") != list(old.classes):
        raise CompareError(f"the dataset {root} has classes {dataset_classes(root / 'data.yaml')}, the models "
                           f"{list(old.classes)}")
    return Pairing(root, meta, regression_sha, list(old.classes),
                   {"path": str(old_path), "name": old.name, "version": old.version},
                   {"path": str(new_path), "name": new.name, "version": new.version},
                   lambda split, only: load_frames(root, split, only), lambda frames: _judge(frames, old, new))


def summary(o: dict, n: dict) -> str:
    return (f"escapes {o['parts']['escapes']} -> {n['parts']['escapes']}, false rejects {o['parts']['false_rejects']} "
            f"-> {n['parts']['false_rejects']}, mAP50 {o['mAP50']:.3f} -> {n['mAP50']:.3f}")


def metric_lines(o: dict, n: dict, classes: list[str]) -> list[str]:
    lines = [f"  mAP50 {o['mAP50']:.3f} -> {n['mAP50']:.3f}   mAP50-95 {o['mAP50-95']:.3f} -> {n['mAP50-95']:.3f}",
             f"  {'class':<15}{'n':>5}{'recall old':>12}{'recall new':>12}"]
    for c in classes:
        a, b = o["per_class"][c], n["per_class"][c]
        lines.append(f"  {c:<15}{a['instances']:>5}{a['recall']:>12.3f}{b['recall']:>12.3f}")
    lines.append(f"  parts: escapes {o['parts']['escapes']} -> {n['parts']['escapes']} of "
                 f"{o['parts']['defective_parts']} defective; false rejects {o['parts']['false_rejects']} -> "
                 f"{n['parts']['false_rejects']} of {o['parts']['good_parts']} good")
    return lines


# --- HTML ---------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:16px;background:#f4f5f7;color:#1d2330}
table{border-collapse:collapse;margin:6px 0 14px}td,th{padding:2px 10px;border-bottom:1px solid #ccd;text-align:right}
th:first-child,td:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.15);width:320px;font-size:12px}
.card svg{display:block;width:320px;height:auto;background:#222}.card div{padding:4px 8px}
.rec{font-size:15px;font-weight:600;padding:8px;background:#fff;border-left:5px solid #557}"""


def _card(e: dict, classes: list[str]) -> str:
    from inspector.review.gallery import make_thumbnail

    data = Path(e["path"]).read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    thumb = make_thumbnail(cv2.imencode(".jpg", img)[1].tobytes())
    s = max(w, h) / 220
    rects = []
    for key, color, dash in (("truth", "#2ecc40", ""), ("old_boxes", "#ff3b30", f' stroke-dasharray="{3 * s} {2 * s}"'),
                             ("new_boxes", "#1e90ff", "")):
        for b in e[key]:
            x0, y0, x1, y1 = b["box"]
            rects.append(f'<rect x="{x0}" y="{y0}" width="{max(x1 - x0, 1)}" height="{max(y1 - y0, 1)}" fill="none" '
                         f'stroke="{color}" stroke-width="{s:.1f}"{dash}/>')
    pic = f'<image href="data:image/jpeg;base64,{base64.b64encode(thumb).decode()}" width="{w}" height="{h}"/>'
    label = html.escape(e.get("change") or e.get("old_failure", ""))
    truth = ", ".join(classes[t["cls"]] for t in e["truth"]) or "good part"
    return (f'<div class="card"><svg viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">{pic}{"".join(rects)}'
            f'</svg><div><b>{label}</b> · {html.escape(e["file"])}<br>truth: {html.escape(truth)}<br>'
            f'old {"REJECT" if e["old_reject"] else "PASS"}, new {"REJECT" if e["new_reject"] else "PASS"}'
            + (f'<br>old missed: {html.escape(", ".join(e["old_missed"]))}' if e["old_missed"] else "")
            + "</div></div>")


def render_html(r: dict) -> str:
    t = html.escape(f"{r['old']['name']} {r['old']['version']} vs {r['new']['name']} {r['new']['version']}")
    body = [f"<h1>{t}</h1><p class=rec>{html.escape(r['recommendation'])}</p>",
            "<p>Boxes: green truth (reviewed labels), dashed red the old model, blue the candidate (each at its "
            "operating thresholds).</p>"]
    for k, s in r["sets"].items():
        body.append(f"<h2>{k}: {s['images']} frames</h2>")
        if not s["images"]:
            continue
        o, n = s["old"], s["new"]
        rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{o['per_class'][c]['instances']}</td>"
                       f"<td>{o['per_class'][c]['recall']:.3f}</td><td>{n['per_class'][c]['recall']:.3f}</td></tr>"
                       for c in r["classes"])
        body.append(f"<table><tr><th></th><th>n</th><th>recall old</th><th>recall new</th></tr>{rows}"
                    f"<tr><td>mAP50</td><td></td><td>{o['mAP50']:.3f}</td><td>{n['mAP50']:.3f}</td></tr>"
                    f"<tr><td>escapes</td><td>{o['parts']['defective_parts']}</td><td>{o['parts']['escapes']}</td>"
                    f"<td>{n['parts']['escapes']}</td></tr><tr><td>false rejects</td><td>{o['parts']['good_parts']}"
                    f"</td><td>{o['parts']['false_rejects']}</td><td>{n['parts']['false_rejects']}</td></tr></table>")
        body.append(f"<h3>verdicts changed ({len(s['changed'])})</h3><div class=grid>"
                    + "".join(_card(e, r["classes"]) for e in s["changed"]) + "</div>")
    fails = r["sets"]["new"]["old_failures"]
    body.append(f"<h2>the old model's failures on the new frames ({len(fails)})</h2><div class=grid>"
                + "".join(_card(e, r["classes"]) for e in fails) + "</div>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>{_CSS}</style>'
            f'</head><body>{"".join(body)}</body></html>\n')


TASK = CompareTask(prepare=prepare, noun="part verdict(s)", summary=summary, title=lambda r: "",
                   metric_lines=metric_lines, render_html=render_html)
