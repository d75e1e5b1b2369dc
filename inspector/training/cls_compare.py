"""`inspector compare OLD NEW --data DIR` for classifier bundles (card `task: classify`): compare.py's question
on image-level labels.

Both bundles' INT8 IRs run on the classification dataset version DIR (split/class/image, from `dataset merge`),
each deciding at its own card's thresholds (cls_metrics.decide: NG when an NG class's probability reaches its
threshold), on two sets:
    regression   the `test` split, the frozen regression set: its sha256 (dataset.json `regression`) is
                 checked on disk before anything runs; an image added, deleted, changed or moved to another
                 class folder is refused naming it
    new          the newly reviewed frames the candidate did not train on: members.jsonl rows of the newest
                 `review:` source (or --new-source) in val
Per set: OK/NG accuracy, NG recall, escapes, false rejects, per-class recall, ROC AUC (cls_metrics.report), every
frame whose verdict changed, and the exact McNemar test on the verdicts' correctness (compare.mcnemar: b = frames
the old model got right and the candidate wrong, c = the reverse). The recommendation follows compare.py: `worse`
when either set is significantly worse, `better` when one is significantly better and none worse.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inspector.training.compare import CompareError, mcnemar, new_frames


def _verified_regression(root: Path, meta: dict) -> str | None:
    from inspector.training.cls_merge import read_cls_members
    from inspector.training.merge import REGRESSION_SPLIT, recorded_members, regression_hash

    frozen = meta.get("regression")
    if not frozen:
        return None
    reg = read_cls_members(root, meta, (REGRESSION_SPLIT,))
    sha = regression_hash(reg)
    if sha == frozen.get("sha256"):
        return sha
    rec = {f: r for (s, f), r in recorded_members(root).items() if s == REGRESSION_SPLIT}
    now = {m.name: m for m in reg}
    changes = [f"{REGRESSION_SPLIT}/{rec[n].get('class', '?')}/{n}: deleted" for n in sorted(rec.keys() - now.keys())]
    changes += [f"{REGRESSION_SPLIT}/{now[n].label}/{n}: added" for n in sorted(now.keys() - rec.keys())]
    for n in sorted(rec.keys() & now.keys()):
        if rec[n].get("sha256") != now[n].sha:
            changes.append(f"{REGRESSION_SPLIT}/{now[n].label}/{n}: image changed")
        if rec[n].get("class") not in (None, now[n].label):
            changes.append(f"{REGRESSION_SPLIT}/{n}: moved from class {rec[n]['class']!r} to {now[n].label!r}")
    raise CompareError(f"--data: {root}: its regression set ({len(reg)} images, {frozen.get('images')} frozen) no "
                       f"longer has the sha256 its dataset.json records ({str(frozen.get('sha256', ''))[:12]}, now "
                       f"{sha[:12]}): {'; '.join(changes[:20]) or 'changed'}. Restore it from the version that made it")


def _bundle(path: Path):
    from inspector.bundle.card import CardRefused, read_card

    try:
        card = read_card(path)[0]
    except CardRefused as e:
        raise CompareError(f"{path}: {e}") from e
    if card.task != "classify":
        raise CompareError(f"{path} is a {card.task} bundle: compare a classifier with a classifier")
    return card


def compare_set(rows: list[tuple[Path, int]], cards: dict, probs: dict, ds, alpha: float) -> dict:
    import numpy as np

    from inspector.training.cls_metrics import decide, report

    out: dict = {"images": len(rows)}
    if not rows:
        out.update(old=None, new=None, changed=[], old_failures=[], verdict="not significant",
                   mcnemar={"b_old_right_new_wrong": 0, "c_old_wrong_new_right": 0, "p": 1.0})
        return out
    labels = np.array([k for _, k in rows])
    truth_ng = labels != ds.classes.index(ds.pass_class)
    ng = {}
    for key in ("old", "new"):
        thr = dict(cards[key].thresholds)
        out[key] = report(probs[key], labels, ds.classes, ds.pass_class, thr)
        ng[key] = decide(probs[key], ds.classes, ds.pass_class, thr)
    b = c = 0
    changed, failures = [], []
    for i, (f, k) in enumerate(rows):
        ok_o, ok_n = bool(ng["old"][i] == truth_ng[i]), bool(ng["new"][i] == truth_ng[i])
        b += int(ok_o and not ok_n)
        c += int(ok_n and not ok_o)
        entry = {"file": f.name, "path": str(f), "class": ds.classes[k], "defective": bool(truth_ng[i]),
                 "old_reject": bool(ng["old"][i]), "new_reject": bool(ng["new"][i]),
                 "old_scores": {n: round(float(p), 4) for n, p in zip(ds.classes, probs["old"][i], strict=True)},
                 "new_scores": {n: round(float(p), 4) for n, p in zip(ds.classes, probs["new"][i], strict=True)}}
        if ng["old"][i] != ng["new"][i]:
            d = bool(truth_ng[i])
            entry["change"] = ("fixed escape" if d and ng["new"][i] else "new escape" if d else
                               "fixed false reject" if not ng["new"][i] else "new false reject")
            changed.append(entry)
        if not ok_o:
            entry["old_failure"] = "escape" if truth_ng[i] else "false reject"
            failures.append(entry)
    p = mcnemar(b, c)
    out.update(changed=changed, old_failures=failures,
               verdict="better" if c > b and p < alpha else "worse" if b > c and p < alpha else "not significant",
               mcnemar={"b_old_right_new_wrong": b, "c_old_wrong_new_right": c, "p": round(p, 6)})
    return out


def recommend(sets: dict[str, dict], alpha: float) -> str:
    verdicts = {k: s["verdict"] for k, s in sets.items() if s["images"]}
    word = "worse" if "worse" in verdicts.values() else "better" if "better" in verdicts.values() else \
        "not significant"
    parts = []
    for k, s in sets.items():
        if not s["images"]:
            parts.append(f"{k}: no frames")
            continue
        m, o, n = s["mcnemar"], s["old"], s["new"]
        parts.append(f"{k} ({s['images']} frames): the candidate fixes {m['c_old_wrong_new_right']} verdict(s) and "
                     f"breaks {m['b_old_right_new_wrong']} (McNemar exact p = {m['p']:.3g}); accuracy "
                     f"{o['accuracy']:.3f} -> {n['accuracy']:.3f}, escapes {o['escapes']} -> {n['escapes']}, false "
                     f"rejects {o['false_rejects']} -> {n['false_rejects']}")
    return f"{word.upper()} (alpha {alpha}): " + "; ".join(parts)


def compare_classify(old_path: Path, new_path: Path, data: Path, *, new_source: str | None = None,
                     alpha: float = 0.05) -> dict:
    from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
    from inspector.training.cls_infer import ClsIR

    root = data.parent if data.is_file() else data
    try:
        ds = load_cls_dataset(root)
    except ClsImportError as e:
        raise CompareError(f"--data {data}: {e}") from e
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    regression_sha = _verified_regression(ds.root, meta)
    cards = {"old": _bundle(old_path), "new": _bundle(new_path)}
    for key, path in (("old", old_path), ("new", new_path)):
        if list(cards[key].classes) != ds.classes or cards[key].pass_class != ds.pass_class:
            raise CompareError(f"{path} has classes {list(cards[key].classes)} (pass {cards[key].pass_class!r}), the "
                               f"dataset {root} {ds.classes} (pass {ds.pass_class!r})")
    source, held, in_train = new_frames(ds.root, new_source)
    regression = ds.images("test") if "test" in ds.splits else []
    fresh = [r for r in ds.images("val") if r[0].name in held] if held else []
    if not regression and not fresh:
        raise CompareError(f"{root}: no regression set (test split) and no held-out reviewed frames to compare on")
    irs = {k: ClsIR(Path(p) / cards[k].files["int8"].xml) for k, p in (("old", old_path), ("new", new_path))}
    sets = {}
    for name, rows in (("regression", regression), ("new", fresh)):
        probs = {k: irs[k].probs_of([f for f, _ in rows]) for k in irs} if rows else {}
        sets[name] = compare_set(rows, cards, probs, ds, alpha)
    return {"task": "classify",
            "old": {"path": str(old_path), "name": cards["old"].name, "version": cards["old"].version,
                    "thresholds": dict(cards["old"].thresholds)},
            "new": {"path": str(new_path), "name": cards["new"].name, "version": cards["new"].version,
                    "thresholds": dict(cards["new"].thresholds)},
            "data": str(ds.root), "dataset_content_sha256": (meta.get("sha256") or {}).get("content"),
            "regression_sha256": regression_sha, "regression_frozen": regression_sha is not None,
            "new_source": source, "new_frames_in_train": in_train, "alpha": alpha, "classes": ds.classes,
            "pass_class": ds.pass_class, "sets": sets, "recommendation": recommend(sets, alpha)}


def format_comparison(r: dict) -> str:
    lines = [f"compare {r['old']['name']} {r['old']['version']} (old) vs {r['new']['name']} {r['new']['version']} "
             f"(candidate) on {r['data']} (classify; thresholds {r['old']['thresholds']} -> {r['new']['thresholds']})"]
    for k, s in r["sets"].items():
        what = ("frozen regression set, sha256 verified" if r["regression_frozen"] else
                "test split, not a frozen regression set (dataset.json records none)") if k == "regression" else \
            f"newly reviewed frames of {r['new_source']}, held out ({r['new_frames_in_train']} more in train)"
        lines.append(f"\n{k}: {s['images']} frames, {what}")
        if not s["images"]:
            continue
        o, n = s["old"], s["new"]
        for key, label in (("accuracy", "accuracy"), ("ng_recall", "NG recall"), ("roc_auc", "ROC AUC")):
            lines.append(f"  {label:<14}{o[key]!s:>8} -> {n[key]!s:<8}")
        lines.append(f"  escapes {o['escapes']} -> {n['escapes']} of {o['ng_images']} NG; false rejects "
                     f"{o['false_rejects']} -> {n['false_rejects']} of {o['ok_images']} OK")
        lines.append("  recall per class: " + ", ".join(f"{c} {o['recall_per_class'][c]} -> {n['recall_per_class'][c]}"
                                                        for c in r["classes"]))
        m = s["mcnemar"]
        lines.append(f"  verdicts changed: {len(s['changed'])} (fixed {m['c_old_wrong_new_right']}, broken "
                     f"{m['b_old_right_new_wrong']}; McNemar p = {m['p']:.3g}): {s['verdict']}")
        for e in s["changed"][:20]:
            lines.append(f"    {e['file']} ({e['class']}): {e['change']}")
    fails = r["sets"]["new"]["old_failures"]
    if fails:
        lines.append(f"\nthe old model's failures on the new frames ({len(fails)}):")
        lines += [f"  {e['file']} ({e['class']}): {e['old_failure']}" for e in fails[:50]]
    lines.append(f"\nrecommendation: {r['recommendation']}")
    return "\n".join(lines)


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


def compare_classify_cli(old: Path, new: Path, data: Path, *, html_out: str | None, json_out: str | None,
                         new_source: str | None, alpha: float) -> int:
    try:
        r = compare_classify(old, new, data, new_source=new_source, alpha=alpha)
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
