"""What a reviewer did with a classifier's pre-selected classes, for `dataset import` of a reviewed export.

`inspector review export` of a classifier's nights (review.json `task: classify`) pre-selects the model's decision
per frame: the rejecting NG class, else the pass class. The reviewed export comes back through the classify import
(`dataset import --from labelstudio|cvat|folders`, cls_dataset.import_classify), which hands it here; per frame:

    confirmed    the reviewer kept the model's class
    corrected    the reviewer chose another class (relabelled; `misses`: the model passed an NG part,
                 `false_rejects`: it rejected a good one)
    skipped      Label Studio: the reviewer pressed Skip (`was_cancelled`)
    unreviewed   no annotation yet (Label Studio), the frame removed from the XML or left without a tag (CVAT),
                 the frame removed or left in _unsorted/ (folders)

Skipped and unreviewed frames are not imported. The dataset's classes are the review's (the model's, all of them,
so `dataset merge` with the model's dataset finds the same classes even when a night saw one class only), and its
pass class is the card's. A reviewed export is held to its review and refused whole (ValueError: exit 2, nothing
written) when a frame is not in review.json, a label is not one of the review's classes, a frame carries two
labels, a Label Studio result is not a `choices` result, or the file is truncated; messages name the task/image.
The task walk, the per-frame tally and the summary's text are review_outcomes.py's.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from inspector.training.importers import IMAGE_SUFFIXES, read_export
from inspector.training.review_outcomes import REVIEW_KIND, find_review, format_review, ls_tasks, tally

TASK = "classify"
UNSORTED = "_unsorted"  # = inspector.review.export_classify.UNSORTED (the runtime package is not imported here)
FORMATS = ("labelstudio", "cvat", "folders")


@dataclass(frozen=True)
class Reviewed:
    """A reviewed classify export: the frames to import as (image, label), the review's classes, pass class,
    and the summary recorded in dataset.json under `source.review`."""

    items: list[tuple[Path, str, str]]  # image, label, where
    classes: list[str]
    pass_class: str | None
    summary: dict


def review_of(src: Path) -> tuple[Path, dict] | None:
    """(review.json, its content) when `src` is (in) a classifier's review export, else None."""
    path = find_review(Path(src))
    if path is None:
        return None
    try:
        review = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: unreadable review manifest ({e})") from e
    if not isinstance(review, dict) or review.get("kind") != REVIEW_KIND or review.get("task") != TASK:
        return None
    return path, review


def is_classify_review(src: Path | str) -> bool:
    try:
        return review_of(Path(src)) is not None
    except ValueError:
        return True  # a classify review that does not parse: the classify import names the error


def read_review(fmt: str, src: Path) -> Reviewed | None:
    """The reviewed frames of a classifier's review export, checked strictly; None when `src` is not one."""
    found = review_of(src)
    if found is None:
        return None
    path, review = found
    try:
        classes, listed = list(review["classes"]), list(review["items"])
        by_file = {it["file"]: it for it in listed}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable review manifest (no {e})") from e
    if fmt not in FORMATS:
        raise ValueError(f"{path} is a classifier's review: import it --from labelstudio, cvat or folders, not {fmt}")
    if fmt == "labelstudio":
        final = _labelstudio(Path(src), by_file, classes)
    elif fmt == "cvat":
        final = _cvat(Path(src), by_file, classes)
    else:
        final = _folders(Path(src), by_file, classes)
    summary = _summary(path, review, classes, listed, final)
    items = [(img, label, where) for status, label, img, where in final.values() if status == "done"]
    return Reviewed(items, classes, review.get("pass_class"), summary)


# each reader: file name -> (status, label or None, image path or None, where)
def _labelstudio(src: Path, by_file: dict, classes: list[str]) -> dict[str, tuple]:
    if src.is_dir():
        raise ValueError(f"{src}: pass the reviewed Label Studio export file itself (the folder also holds "
                         "tasks.json, the unreviewed tasks)")
    out: dict[str, tuple] = {}
    quiet = set()  # the reader's "not labelled yet" of skipped/unreviewed tasks: recorded here, not an error
    for task in ls_tasks(src, by_file):
        if task.annotation is None:
            out[task.name] = (task.status, None, None, task.where)
            quiet.add(task.quiet)
            continue
        chosen = []
        for r in task.annotation.get("result") or []:
            rid = r.get("id", "?") if isinstance(r, dict) else "?"
            if not isinstance(r, dict) or r.get("type") != "choices":
                raise ValueError(f"{task.where}: result {rid} is {r.get('type') if isinstance(r, dict) else r!r}; a "
                                 "classifier's review has only choices (an export from another labelling config?)")
            chosen += (r.get("value") or {}).get("choices") or []
        out[task.name] = ("done", _one(chosen, classes, task.where), None, task.where)
    export = read_export("labelstudio", src, image_labels=True)  # the images, found as every import finds them
    problems = [p for p in export.problems if p.file not in quiet]
    if problems:
        raise ValueError(f"{src}: {len(problems)} problem(s) in the reviewed export, nothing imported; first: "
                         f"{problems[0]}")
    paths = {a.image.name: a.image for a in export.items}
    for name, (status, label, _, where) in list(out.items()):
        if status == "done":
            out[name] = (status, label, paths[name], where)
    return out


def _cvat(src: Path, by_file: dict, classes: list[str]) -> dict[str, tuple]:
    export = read_export("cvat", src, image_labels=True)
    if export.problems:
        raise ValueError(f"{src}: {len(export.problems)} problem(s) in the reviewed export, nothing imported; first: "
                         f"{export.problems[0]}")
    extra = [c for c in export.classes or [] if c not in classes]
    if extra:
        raise ValueError(f"{src}: the export declares labels {extra} that the review's classes {classes} do not have "
                         "(an export from another labelling config)")
    out: dict[str, tuple] = {}
    for a in export.items:
        name, where = a.image.name, f"{a.source} image {a.image.name}"
        if name not in by_file:
            raise ValueError(f"{where}: not in the upload this review was exported from ({len(by_file)} frames "
                             "listed in review.json)")
        if a.boxes:
            raise ValueError(f"{where}: holds boxes; a classifier's review has only tags")
        out[name] = ("done", _one(list(a.tags), classes, where), a.image, where) if a.tags else \
            ("unreviewed", None, None, where)
    return out


def _folders(src: Path, by_file: dict, classes: list[str]) -> dict[str, tuple]:
    if not src.is_dir():
        raise ValueError(f"{src}: a folders review is the export's folder (one sub-folder per class)")
    loose = sorted(p.name for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise ValueError(f"{src}: images directly in the folder ({', '.join(loose[:3])}): put each in its class's "
                         f"folder ({', '.join(classes)}) or in {UNSORTED}/")
    out: dict[str, tuple] = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in classes and d.name != UNSORTED:
            raise ValueError(f"{d}: folder {d.name!r} is not one of the review's classes {classes} (or {UNSORTED})")
        for f in sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            if f.is_symlink():
                raise ValueError(f"{f}: a link; a review folder holds the exported frames themselves")
            where = f"{d.name}/{f.relative_to(d)}"
            if f.name not in by_file:
                raise ValueError(f"{src}: {where} is not in the upload this review was exported from "
                                 f"({len(by_file)} frames listed in review.json)")
            if f.name in out:
                raise ValueError(f"{src}: {f.name} lies in two folders ({out[f.name][3]} and {where})")
            out[f.name] = ("unreviewed", None, None, where) if d.name == UNSORTED else ("done", d.name, f, where)
    return out


def _one(chosen: list, classes: list[str], where: str) -> str:
    labels = sorted(set(chosen))
    if len(labels) != 1:
        raise ValueError(f"{where}: {len(labels)} labels {labels} (a classifier's review takes exactly one class)")
    if labels[0] not in classes:
        raise ValueError(f"{where}: label {labels[0]!r} is not one of the review's classes {classes} (an export from "
                         "another labelling config?)")
    return labels[0]


def _summary(path: Path, review: dict, classes: list[str], listed: list[dict], final: dict[str, tuple]) -> dict:
    pass_class = review.get("pass_class")
    labels: Counter = Counter()
    per_class = {c: Counter() for c in classes}

    def judge(it: dict, rec: dict) -> str:
        was = rec["predicted"]
        label = rec["label"] = final[it["file"]][1]
        if label == was:
            labels["confirmed"] += 1
            per_class[label]["confirmed"] += 1
            return "confirmed"
        labels["relabelled"] += 1
        per_class[label]["relabelled_to"] += 1
        if was is not None:
            per_class[was]["relabelled_from"] += 1
        if pass_class is not None and was == pass_class:
            labels["misses"] += 1  # the model passed what the reviewer calls NG: an escape it would make
        elif pass_class is not None and label == pass_class and was is not None:
            labels["false_rejects"] += 1
        return "corrected"

    records, frames, by_reason = tally(
        listed, lambda file: final.get(file, ("unreviewed",))[0], judge,
        extra=lambda it: {"predicted": it["predictions"][0]["class"] if it.get("predictions") else None})
    keys = ("confirmed", "relabelled_to", "relabelled_from")
    return {
        "review_json": str(path.resolve()), "task": TASK, "destination": review.get("destination"),
        "since": review.get("since"), "until": review.get("until"), "exported_as": review.get("to"),
        "classes": classes, "pass_class": pass_class, "frames": len(listed),
        "imported": sum(1 for s, *_ in final.values() if s == "done"), "outcomes": dict(frames),
        "labels": {k: labels.get(k, 0) for k in ("confirmed", "relabelled", "misses", "false_rejects")},
        "per_class": {c: {k: v.get(k, 0) for k in keys} for c, v in per_class.items()},
        "by_reason": {r: dict(c) for r, c in sorted(by_reason.items())},
        "note": "confirmed: the model's class kept; misses: passed by the model, NG for the reviewer; false_rejects: "
                "rejected by the model, the pass class for the reviewer. Skipped and unreviewed frames are not "
                "imported.",
        "items": records,
    }


def format_summary(r: dict) -> str:
    c = r["labels"]
    return format_review(r, " (classify)", f"  classes: confirmed {c['confirmed']}, relabelled {c['relabelled']} "
                                           f"(misses {c['misses']}, false rejects {c['false_rejects']})")
