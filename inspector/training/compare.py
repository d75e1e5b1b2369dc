"""`inspector compare OLD NEW --data DIR [--html OUT]`: is the candidate better than the bundle in service?

Both bundles run as the line runs them (INT8 through the runtime detector, each at its own card's
thresholds) on two sets of the dataset version DIR:
    regression   its `test` split: the frozen set every candidate is compared on (dataset merge);
    new          the newly reviewed frames the candidate did not train on: members.jsonl rows of the
                 newest `review:` source (or --new-source) in val.
Per set: mAP50, per-class recall at the operating thresholds, part-level escapes and false rejects,
every frame whose part verdict (reject or pass) changed, and an exact McNemar test on the part
verdicts' correctness: b = frames the old model got right and the candidate wrong, c = the reverse;
p = P(X <= min(b, c)) * 2 for X ~ Binomial(b + c, 1/2). Recommendation: `worse` when either set is
significantly worse (b > c, p < alpha), `better` when one is significantly better and none worse,
else `not significant`, with the counts behind it. The old model's failures on the new frames
(escaped parts, false rejects, missed boxes) are listed: what the review caught.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.training.evaluate import EVAL_CONF, IMAGE_SUFFIXES, Sample
from inspector.training.metrics import ImageResult, box_iou


class CompareError(InspectorError):
    exit_code = 2


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


def new_frames(root: Path, source: str | None) -> tuple[str | None, set[str], int]:
    """(source, held-out file names of it, how many of its frames are in train)."""
    path = root / "members.jsonl"
    if not path.exists():
        return None, set(), 0
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if source is None:
        reviews = sorted({r["source"] for r in rows if r["source"].startswith("review:")},
                         key=lambda s: s.split("..")[-1])
        source = reviews[-1] if reviews else None
    if source is None:
        return None, set(), 0
    held = {r["file"] for r in rows if r["source"] == source and r["split"] == "val"}
    return source, held, sum(r["source"] == source and r["split"] == "train" for r in rows)


def mcnemar(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


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


def compare_set(frames: list[Frame], old, new, alpha: float) -> dict:
    from inspector.inference.detector import Detector
    from inspector.training.evaluate import collect, report

    out: dict = {"images": len(frames)}
    results = {}
    for key, bundle in (("old", old), ("new", new)):
        res = collect(Detector(bundle, conf=EVAL_CONF), (f.sample for f in frames))
        results[key] = res
        out[key] = report(res, bundle) if frames else None
    if not frames:
        out.update(changed=[], mcnemar={"b_old_right_new_wrong": 0, "c_old_wrong_new_right": 0, "p": 1.0},
                   verdict="not significant", old_failures=[])
        return out
    classes = list(old.classes)
    thr = {k: np.array([b.thresholds.get(c, 0.5) for c in classes]) for k, b in (("old", old), ("new", new))}
    b = c = 0
    changed, failures = [], []
    for i, f in enumerate(frames):
        ro, rn = results["old"][i], results["new"][i]
        defective = len(f.sample.gt_cls) > 0
        fo, fn = _flagged(ro, thr["old"]), _flagged(rn, thr["new"])
        ok_o, ok_n = fo == defective, fn == defective
        b += ok_o and not ok_n
        c += ok_n and not ok_o
        truth = [{"cls": int(k), "box": [round(float(v), 1) for v in bx]}
                 for bx, k in zip(f.sample.gt_boxes, f.sample.gt_cls, strict=True)]
        entry = {"file": f.name, "path": str(f.path), "defective": defective, "old_reject": fo, "new_reject": fn,
                 "truth": truth, "old_boxes": _kept(ro, thr["old"]), "new_boxes": _kept(rn, thr["new"]),
                 "old_missed": _missed(ro, thr["old"], classes), "new_missed": _missed(rn, thr["new"], classes)}
        if fo != fn:
            entry["change"] = ("fixed escape" if defective and fn else "new escape" if defective else
                               "fixed false reject" if not fn else "new false reject")
            changed.append(entry)
        if not ok_o or entry["old_missed"]:
            entry["old_failure"] = ("escape" if defective and not fo else "false reject" if not ok_o else
                                    "missed boxes (part rejected for another)")
            failures.append(entry)
    p = mcnemar(b, c)
    verdict = "better" if c > b and p < alpha else "worse" if b > c and p < alpha else "not significant"
    out.update(changed=changed, old_failures=failures, verdict=verdict,
               mcnemar={"b_old_right_new_wrong": b, "c_old_wrong_new_right": c, "p": round(p, 6)})
    return out


def recommend(sets: dict[str, dict], alpha: float) -> str:
    verdicts = {k: s["verdict"] for k, s in sets.items() if s["images"]}
    worse = [k for k, v in verdicts.items() if v == "worse"]
    better = [k for k, v in verdicts.items() if v == "better"]
    word = "worse" if worse else "better" if better else "not significant"
    parts = []
    for k, s in sets.items():
        if not s["images"]:
            parts.append(f"{k}: no frames")
            continue
        m = s["mcnemar"]
        o, n = s["old"], s["new"]
        parts.append(f"{k} ({s['images']} frames): the candidate fixes {m['c_old_wrong_new_right']} part verdict(s) "
                     f"and breaks {m['b_old_right_new_wrong']} (McNemar exact p = {m['p']:.3g}); escapes "
                     f"{o['parts']['escapes']} -> {n['parts']['escapes']}, false rejects {o['parts']['false_rejects']} "
                     f"-> {n['parts']['false_rejects']}, mAP50 {o['mAP50']:.3f} -> {n['mAP50']:.3f}")
    return f"{word.upper()} (alpha {alpha}): " + "; ".join(parts)


def verified_regression(root: Path, meta: dict) -> str | None:
    """The frozen regression set's sha256, checked on disk before anything runs (an edited set,
    an image deleted, changed or added, or a label changed, is refused naming what changed). None
    when dataset.json records no frozen set (not a `dataset merge` version): its test split is used
    as it is and the report says it is not frozen."""
    from inspector.training.merge import MergeError, check_regression

    try:
        return check_regression(root, meta)[1]
    except MergeError as e:
        raise CompareError(f"--data: {e}") from e


def compare(old_path: Path, new_path: Path, data: Path, *, new_source: str | None = None, alpha: float = 0.05) -> dict:
    from inspector.bundle.load import load_bundle

    root = data.parent if data.is_file() else data
    if not (root / "data.yaml").is_file():
        raise CompareError(f"--data {data}: no data.yaml")
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    regression_sha = verified_regression(root, meta)
    old, new = load_bundle(old_path, "int8"), load_bundle(new_path, "int8")
    if list(old.classes) != list(new.classes):
        raise CompareError(f"{old_path} has classes {list(old.classes)}, {new_path} has {list(new.classes)}")
    from inspector.training.train import dataset_classes

    if dataset_classes(root / "data.yaml") != list(old.classes):
        raise CompareError(f"the dataset {root} has classes {dataset_classes(root / 'data.yaml')}, the models "
                           f"{list(old.classes)}")
    source, held, in_train = new_frames(root, new_source)
    regression = load_frames(root, "test")
    fresh = load_frames(root, "val", held) if held else []
    if not regression and not fresh:
        raise CompareError(f"{root}: no regression set (test split) and no held-out reviewed frames to compare on")
    sets = {"regression": compare_set(regression, old, new, alpha), "new": compare_set(fresh, old, new, alpha)}
    return {"old": {"path": str(old_path), "name": old.name, "version": old.version},
            "new": {"path": str(new_path), "name": new.name, "version": new.version},
            "data": str(root), "dataset_content_sha256": (meta.get("sha256") or {}).get("content"),
            "regression_sha256": regression_sha, "regression_frozen": regression_sha is not None,
            "new_source": source, "new_frames_in_train": in_train, "alpha": alpha, "classes": list(old.classes),
            "sets": sets, "recommendation": recommend(sets, alpha)}


def format_comparison(r: dict) -> str:
    lines = [f"compare {r['old']['name']} {r['old']['version']} (old) vs {r['new']['name']} {r['new']['version']} "
             f"(candidate) on {r['data']}"]
    for k, s in r["sets"].items():
        what = ("frozen regression set, sha256 verified" if r["regression_frozen"] else
                "test split, not a frozen regression set (dataset.json records none)") if k == "regression" else \
            f"newly reviewed frames of {r['new_source']}, held out ({r['new_frames_in_train']} more in train)"
        lines.append(f"\n{k}: {s['images']} frames, {what}")
        if not s["images"]:
            continue
        o, n = s["old"], s["new"]
        lines.append(f"  mAP50 {o['mAP50']:.3f} -> {n['mAP50']:.3f}   mAP50-95 {o['mAP50-95']:.3f} -> "
                     f"{n['mAP50-95']:.3f}")
        lines.append(f"  {'class':<15}{'n':>5}{'recall old':>12}{'recall new':>12}")
        for c in r["classes"]:
            a, b = o["per_class"][c], n["per_class"][c]
            lines.append(f"  {c:<15}{a['instances']:>5}{a['recall']:>12.3f}{b['recall']:>12.3f}")
        lines.append(f"  parts: escapes {o['parts']['escapes']} -> {n['parts']['escapes']} of "
                     f"{o['parts']['defective_parts']} defective; false rejects {o['parts']['false_rejects']} -> "
                     f"{n['parts']['false_rejects']} of {o['parts']['good_parts']} good")
        m = s["mcnemar"]
        lines.append(f"  verdicts changed: {len(s['changed'])} (fixed {m['c_old_wrong_new_right']}, broken "
                     f"{m['b_old_right_new_wrong']}; McNemar p = {m['p']:.3g}): {s['verdict']}")
        for e in s["changed"][:20]:
            lines.append(f"    {e['file']}: {e['change']}")
    fails = r["sets"]["new"]["old_failures"]
    if fails:
        lines.append(f"\nthe old model's failures on the new frames ({len(fails)}):")
        for e in fails[:50]:
            lines.append(f"  {e['file']}: {e['old_failure']}" + (f"; missed {', '.join(e['old_missed'])}"
                                                                  if e["old_missed"] else ""))
    lines.append(f"\nrecommendation: {r['recommendation']}")
    return "\n".join(lines)


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


def compare_cli(old: Path, new: Path, data: Path, *, html_out: str | None, json_out: str | None, new_source: str | None,
                alpha: float) -> int:
    from inspector.training.cls_evaluate import is_classify_bundle

    if is_classify_bundle(old) or is_classify_bundle(new):  # image-level labels: training/cls_compare.py
        from inspector.training.cls_compare import compare_classify_cli

        return compare_classify_cli(old, new, data, html_out=html_out, json_out=json_out, new_source=new_source,
                                    alpha=alpha)
    try:
        r = compare(old, new, data, new_source=new_source, alpha=alpha)
    except CompareError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(format_comparison(r))
    if html_out:
        Path(html_out).write_text(render_html(r))
        print(f"wrote {html_out}")
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=1) + "\n")
    return 0
