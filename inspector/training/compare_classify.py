"""compare.py's part for image classifiers (card `task: classify`): the classification dataset version
(split/class/image, from `dataset merge`), both bundles' INT8 IRs (cls_infer.ClsIR) deciding at their own card's
thresholds (cls_metrics.decide: NG when an NG class's probability reaches its threshold), scored by
cls_metrics.report (OK/NG accuracy, NG recall, escapes, false rejects, per-class recall, ROC AUC); each frame
keeps both models' class scores. The frozen regression set's check (merge_classify.CLASS_FOLDERS) names an image
added, deleted, changed or moved to another class folder."""

from __future__ import annotations

import json
from pathlib import Path

from inspector.training.compare import CompareError, CompareTask, Pairing, verified_regression


def _bundle(path: Path):
    from inspector.bundle.card import CardRefused, read_card

    try:
        card = read_card(path)[0]
    except CardRefused as e:
        raise CompareError(f"{path}: {e}") from e
    if card.task != "classify":
        raise CompareError(f"{path} is a {card.task} bundle: compare a classifier with a classifier")
    return card


def _judge(rows: list[tuple[Path, int]], cards: dict, irs: dict, ds) -> tuple[dict, dict, list[dict]]:
    import numpy as np

    from inspector.training.cls_metrics import decide, report

    probs = {k: irs[k].probs_of([f for f, _ in rows]) for k in irs}
    labels = np.array([k for _, k in rows])
    truth_ng = labels != ds.classes.index(ds.pass_class)
    reports, ng = {}, {}
    for key in ("old", "new"):
        thr = dict(cards[key].thresholds)
        reports[key] = report(probs[key], labels, ds.classes, ds.pass_class, thr)
        ng[key] = decide(probs[key], ds.classes, ds.pass_class, thr)
    entries = [{"file": f.name, "path": str(f), "class": ds.classes[k], "defective": bool(truth_ng[i]),
                "old_reject": bool(ng["old"][i]), "new_reject": bool(ng["new"][i]),
                "old_scores": {n: round(float(p), 4) for n, p in zip(ds.classes, probs["old"][i], strict=True)},
                "new_scores": {n: round(float(p), 4) for n, p in zip(ds.classes, probs["new"][i], strict=True)}}
               for i, (f, k) in enumerate(rows)]
    return reports["old"], reports["new"], entries


def prepare(old_path: Path, new_path: Path, data: Path) -> Pairing:
    from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
    from inspector.training.cls_infer import ClsIR
    from inspector.training.merge_classify import CLASS_FOLDERS

    root = data.parent if data.is_file() else data
    try:
        ds = load_cls_dataset(root)
    except ClsImportError as e:
        raise CompareError(f"--data {data}: {e}") from e
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    regression_sha = verified_regression(ds.root, meta, CLASS_FOLDERS)
    cards = {"old": _bundle(old_path), "new": _bundle(new_path)}
    for key, path in (("old", old_path), ("new", new_path)):
        if list(cards[key].classes) != ds.classes or cards[key].pass_class != ds.pass_class:
            raise CompareError(f"{path} has classes {list(cards[key].classes)} (pass {cards[key].pass_class!r}), the "
                               f"dataset {root} {ds.classes} (pass {ds.pass_class!r})")
    irs: dict = {}  # compiled on the first set that has frames (not before the sets are known)

    def judge(rows: list[tuple[Path, int]]) -> tuple[dict, dict, list[dict]]:
        irs.update(irs or {k: ClsIR(Path(p) / cards[k].files["int8"].xml)
                           for k, p in (("old", old_path), ("new", new_path))})
        return _judge(rows, cards, irs, ds)

    def frames(split: str, only: set[str] | None) -> list[tuple[Path, int]]:
        if split not in ds.splits:
            return []
        return [r for r in ds.images(split) if only is None or r[0].name in only]

    return Pairing(ds.root, meta, regression_sha, ds.classes,
                   *({"path": str(p), "name": cards[k].name, "version": cards[k].version,
                      "thresholds": dict(cards[k].thresholds)} for k, p in (("old", old_path), ("new", new_path))),
                   frames, judge,
                   lead={"task": "classify"}, tail={"pass_class": ds.pass_class})


def summary(o: dict, n: dict) -> str:
    return (f"accuracy {o['accuracy']:.3f} -> {n['accuracy']:.3f}, escapes {o['escapes']} -> {n['escapes']}, false "
            f"rejects {o['false_rejects']} -> {n['false_rejects']}")


def title(r: dict) -> str:
    return f" (classify; thresholds {r['old']['thresholds']} -> {r['new']['thresholds']})"


def metric_lines(o: dict, n: dict, classes: list[str]) -> list[str]:
    lines = [f"  {label:<14}{o[key]!s:>8} -> {n[key]!s:<8}"
             for key, label in (("accuracy", "accuracy"), ("ng_recall", "NG recall"), ("roc_auc", "ROC AUC"))]
    lines.append(f"  escapes {o['escapes']} -> {n['escapes']} of {o['ng_images']} NG; false rejects "
                 f"{o['false_rejects']} -> {n['false_rejects']} of {o['ok_images']} OK")
    lines.append("  recall per class: " + ", ".join(f"{c} {o['recall_per_class'][c]} -> {n['recall_per_class'][c]}"
                                                    for c in classes))
    return lines


def render_html(r: dict) -> str:
    import base64
    import html

    from inspector.review.gallery import make_thumbnail

    t = html.escape(f"{r['old']['name']} {r['old']['version']} vs {r['new']['name']} {r['new']['version']}")
    body = [f"<h1>{t}</h1><p><b>{html.escape(r['recommendation'])}</b></p>"]
    for k, s in r["sets"].items():
        body.append(f"<h2>{k}: {s['images']} frames</h2>")
        if not s["images"]:
            continue
        rows = "".join(f"<tr><td>{key}</td><td>{s['old'][key]}</td><td>{s['new'][key]}</td></tr>"
                       for key in ("accuracy", "ng_recall", "escapes", "false_rejects", "roc_auc"))
        body.append(f"<table><tr><th></th><th>old</th><th>candidate</th></tr>{rows}</table>")
        for e in s["changed"]:
            thumb = base64.b64encode(make_thumbnail(Path(e["path"]).read_bytes())).decode()
            body.append(f'<figure style="display:inline-block;width:240px"><img src="data:image/jpeg;base64,{thumb}" '
                        f'width="220"><figcaption><b>{html.escape(e["change"])}</b> {html.escape(e["file"])} '
                        f'(truth {html.escape(e["class"])})<br>old {e["old_scores"]}<br>new {e["new_scores"]}'
                        f'</figcaption></figure>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title></head>'
            f'<body style="font-family:system-ui,sans-serif">{"".join(body)}</body></html>\n')


TASK = CompareTask(prepare=prepare, noun="verdict(s)", summary=summary, title=title, metric_lines=metric_lines,
                   render_html=render_html)
