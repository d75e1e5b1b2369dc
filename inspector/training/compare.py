"""`inspector compare OLD NEW --data DIR [--html OUT]`: is the candidate better than the bundle in service?

One comparison for every model kind; what differs by the bundles' task (how a dataset version's frames are
read, how a model runs on them and is scored, how the report shows it) is the task's part, chosen by the
cards: training/compare_detect.py (boxes: mAP50, per-class recall) or training/compare_classify.py (class
scores: accuracy, NG recall, ROC AUC). Both bundles run as the line runs them (INT8, each at its own card's
thresholds) on two sets of the dataset version DIR:
    regression   its `test` split: the frozen set every candidate is compared on (dataset merge); its
                 sha256 is checked on disk before anything runs
    new          the newly reviewed frames the candidate did not train on: members.jsonl rows of the
                 newest `review:` source (or --new-source) in val.
Per set: the task's metrics, part-level escapes and false rejects, every frame whose part verdict (reject or
pass) changed, and an exact McNemar test on the part verdicts' correctness: b = frames the old model got
right and the candidate wrong, c = the reverse; p = P(X <= min(b, c)) * 2 for X ~ Binomial(b + c, 1/2).
Recommendation: `worse` when either set is significantly worse (b > c, p < alpha), `better` when one is
significantly better and none worse, else `not significant`, with the counts behind it. The old model's
failures on the new frames (escaped parts, false rejects, missed boxes) are listed: what the review caught.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inspector.errors import InspectorError


class CompareError(InspectorError):
    exit_code = 2


@dataclass(frozen=True)
class Pairing:
    """Two bundles of one task checked against a dataset version, ready to run: what a task's `prepare` gives."""
    root: Path
    meta: dict  # the version's dataset.json ({} where it has none)
    regression_sha: str | None  # verified on disk; None: the test split is not a frozen set
    classes: list[str]
    old: dict  # the report's "old" / "new": path, name, version (and what else the task shows)
    new: dict
    frames: Callable[[str, set[str] | None], list]  # a split's frames (only those named, where a set is given)
    judge: Callable[[list], tuple[dict, dict, list[dict]]]  # both models on frames: old report, new report, and an
    # entry a frame with at least file, defective, old_reject, new_reject (old_missed where the task has boxes)
    lead: dict = field(default_factory=dict)  # report fields before "old" / after "classes" that only a task has
    tail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CompareTask:
    """A model kind's part of the comparison."""
    prepare: Callable[[Path, Path, Path], Pairing]  # (old, new, data): bad input raises CompareError
    noun: str  # what McNemar counts: "part verdict(s)"
    summary: Callable[[dict, dict], str]  # old and new report -> the recommendation's figures
    title: Callable[[dict], str]  # what the first line adds after the data's path
    metric_lines: Callable[[dict, dict, list[str]], list[str]]  # old, new report, classes -> the text lines
    render_html: Callable[[dict], str]


def task_of(old: Path, new: Path) -> CompareTask:
    """The task part the cards ask for: classify when either card says so (it refuses a detector then)."""
    from inspector.training.evaluate_classify import is_classify_bundle

    if is_classify_bundle(old) or is_classify_bundle(new):
        from inspector.training.compare_classify import TASK
    else:
        from inspector.training.compare_detect import TASK
    return TASK


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


def verified_regression(root: Path, meta: dict, layout) -> str | None:
    """The frozen regression set's sha256, checked on disk before anything runs (an edited set,
    an image deleted, changed or added, or a label changed, is refused naming what changed). None
    when dataset.json records no frozen set (not a `dataset merge` version): its test split is used
    as it is and the report says it is not frozen. `layout`: merge.Layout, how the version lies on disk."""
    from inspector.training.merge import MergeError, check_regression

    try:
        return check_regression(root, meta, layout)[1]
    except MergeError as e:
        raise CompareError(f"--data: {e}") from e


def compare_set(pairing: Pairing, frames: list, alpha: float) -> dict:
    out: dict = {"images": len(frames)}
    if not frames:
        out.update(old=None, new=None, changed=[], old_failures=[], verdict="not significant",
                   mcnemar={"b_old_right_new_wrong": 0, "c_old_wrong_new_right": 0, "p": 1.0})
        return out
    out["old"], out["new"], entries = pairing.judge(frames)
    b = c = 0
    changed, failures = [], []
    for entry in entries:
        defective, fo, fn = entry["defective"], entry["old_reject"], entry["new_reject"]
        ok_o, ok_n = fo == defective, fn == defective
        b += ok_o and not ok_n
        c += ok_n and not ok_o
        if fo != fn:
            entry["change"] = ("fixed escape" if defective and fn else "new escape" if defective else
                               "fixed false reject" if not fn else "new false reject")
            changed.append(entry)
        if not ok_o or entry.get("old_missed"):
            entry["old_failure"] = ("escape" if defective and not fo else "false reject" if not ok_o else
                                    "missed boxes (part rejected for another)")
            failures.append(entry)
    p = mcnemar(b, c)
    verdict = "better" if c > b and p < alpha else "worse" if b > c and p < alpha else "not significant"
    out.update(changed=changed, old_failures=failures, verdict=verdict,
               mcnemar={"b_old_right_new_wrong": b, "c_old_wrong_new_right": c, "p": round(p, 6)})
    return out


def recommend(sets: dict[str, dict], alpha: float, task: CompareTask) -> str:
    verdicts = {k: s["verdict"] for k, s in sets.items() if s["images"]}
    word = "worse" if "worse" in verdicts.values() else "better" if "better" in verdicts.values() else \
        "not significant"
    parts = []
    for k, s in sets.items():
        if not s["images"]:
            parts.append(f"{k}: no frames")
            continue
        m = s["mcnemar"]
        parts.append(f"{k} ({s['images']} frames): the candidate fixes {m['c_old_wrong_new_right']} {task.noun} "
                     f"and breaks {m['b_old_right_new_wrong']} (McNemar exact p = {m['p']:.3g}); "
                     + task.summary(s["old"], s["new"]))
    return f"{word.upper()} (alpha {alpha}): " + "; ".join(parts)


def compare(old_path: Path, new_path: Path, data: Path, *, new_source: str | None = None, alpha: float = 0.05,
            task: CompareTask | None = None) -> dict:
    task = task or task_of(old_path, new_path)
    p = task.prepare(old_path, new_path, data)
    source, held, in_train = new_frames(p.root, new_source)
    regression = p.frames("test", None)
    fresh = p.frames("val", held) if held else []
    if not regression and not fresh:
        raise CompareError(f"{p.root}: no regression set (test split) and no held-out reviewed frames to compare on")
    sets = {"regression": compare_set(p, regression, alpha), "new": compare_set(p, fresh, alpha)}
    return {**p.lead, "old": p.old, "new": p.new, "data": str(p.root),
            "dataset_content_sha256": (p.meta.get("sha256") or {}).get("content"),
            "regression_sha256": p.regression_sha, "regression_frozen": p.regression_sha is not None,
            "new_source": source, "new_frames_in_train": in_train, "alpha": alpha, "classes": p.classes, **p.tail,
            "sets": sets, "recommendation": recommend(sets, alpha, task)}


def _named(e: dict) -> str:
    return e["file"] + (f" ({e['class']})" if "class" in e else "")


def format_comparison(r: dict, task: CompareTask) -> str:
    lines = [f"compare {r['old']['name']} {r['old']['version']} (old) vs {r['new']['name']} {r['new']['version']} "
             f"(candidate) on {r['data']}{task.title(r)}"]
    for k, s in r["sets"].items():
        what = ("frozen regression set, sha256 verified" if r["regression_frozen"] else
                "test split, not a frozen regression set (dataset.json records none)") if k == "regression" else \
            (f"newly reviewed frames of {r['new_source']}, held out ({r['new_frames_in_train']} more in train)"
             if r["new_source"] else "no newly reviewed frames in this version (no review: source among its images)")
        lines.append(f"\n{k}: {s['images']} frames, {what}")
        if not s["images"]:
            continue
        lines += task.metric_lines(s["old"], s["new"], r["classes"])
        m = s["mcnemar"]
        lines.append(f"  verdicts changed: {len(s['changed'])} (fixed {m['c_old_wrong_new_right']}, broken "
                     f"{m['b_old_right_new_wrong']}; McNemar p = {m['p']:.3g}): {s['verdict']}")
        for e in s["changed"][:20]:
            lines.append(f"    {_named(e)}: {e['change']}")
    fails = r["sets"]["new"]["old_failures"]
    if fails:
        lines.append(f"\nthe old model's failures on the new frames ({len(fails)}):")
        for e in fails[:50]:
            lines.append(f"  {_named(e)}: {e['old_failure']}" + (f"; missed {', '.join(e['old_missed'])}"
                                                                 if e.get("old_missed") else ""))
    lines.append(f"\nrecommendation: {r['recommendation']}")
    return "\n".join(lines)


def compare_cli(old: Path, new: Path, data: Path, *, html_out: str | None, json_out: str | None, new_source: str | None,
                alpha: float) -> int:
    task = task_of(old, new)
    try:
        r = compare(old, new, data, new_source=new_source, alpha=alpha, task=task)
    except CompareError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(format_comparison(r, task))
    if html_out:
        Path(html_out).write_text(task.render_html(r))
        print(f"wrote {html_out}")
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=1) + "\n")
    return 0
