"""What a reviewer did with the model's pre-annotations, for `dataset import` of a reviewed export.

An export made by `inspector review export` carries `review.json` (beside the Label Studio export
file, or in the CVAT / YOLO folder): the frames that were uploaded and the boxes the model proposed.
Importing the reviewed export compares, per frame, the reviewer's final boxes with those proposals:

    confirmed    a proposed box kept as it was (IoU >= 0.9, same class): the model was right
    adjusted     kept, same class, but moved or resized (IoU >= 0.5)
    relabelled   kept in place (IoU >= 0.5) with another class
    deleted      a proposed box the reviewer removed: a false positive of the model
    added        a box the model did not propose: a miss

and the frame as a whole: `confirmed` (every proposal confirmed, nothing added; a frame without
proposals and without boxes is a confirmed good part), `corrected`, `skipped` (Label Studio: the
reviewer pressed Skip, `was_cancelled`) or `unreviewed` (no annotation yet; in CVAT / YOLO: the frame
was removed from the export). Skipped and unreviewed frames are not imported: an unlabelled defect
would teach the model that it is background. The counts (per class, per sampling reason) and one
record per frame go into dataset.json under `source.review`.

A reviewed export is held to the review it came from, and refused whole (ValueError: exit 2, no
dataset written) when a task names an image that is not in review.json (not from the upload), a
label the review's classes do not have (another labelling config), a box of zero area, a result that
is not a rectangle, or the file is truncated. Messages name the task id.

The walk of a reviewed Label Studio export's tasks (ls_tasks), the per-frame tally (tally) and the
summary's text (format_review) serve both model kinds; a classifier's outcomes (a class kept or
changed instead of boxes) are review_classes.py's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

REVIEW_JSON = "review.json"  # = inspector.review.export.REVIEW_JSON (the runtime package is not imported here)
REVIEW_KIND = "inspector-review"
CONFIRM_IOU = 0.9  # Label Studio stores percent floats, CVAT 2 decimals: an untouched box comes back at IoU > 0.99
MATCH_IOU = 0.5
BOX_OUTCOMES = ("confirmed", "adjusted", "relabelled", "deleted", "added")


def find_review(src: Path) -> Path | None:
    src = Path(src)
    for d in ([src] if src.is_dir() else []) + [src.parent, src.parent.parent]:
        p = d / REVIEW_JSON
        if p.is_file():
            return p
    return None


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_outcomes(proposed: list[tuple[str, list[float]]], final: list[tuple[str, list[float]]]) -> list[dict]:
    """Greedy one-to-one matching by IoU, best pairs first. One record per proposed or final box."""
    pairs = sorted(((_iou(p[1], f[1]), i, j) for i, p in enumerate(proposed) for j, f in enumerate(final)),
                   reverse=True)
    used_p: set[int] = set()
    used_f: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou < MATCH_IOU or i in used_p or j in used_f:
            continue
        same = proposed[i][0] == final[j][0]
        if not same:  # a same-class match elsewhere wins over a relabel of this one
            continue
        used_p.add(i)
        used_f.add(j)
        out.append({"outcome": "confirmed" if iou >= CONFIRM_IOU else "adjusted", "class": final[j][0],
                    "iou": round(iou, 3)})
    for iou, i, j in pairs:
        if iou < MATCH_IOU or i in used_p or j in used_f:
            continue
        used_p.add(i)
        used_f.add(j)
        out.append({"outcome": "relabelled", "class": final[j][0], "was": proposed[i][0], "iou": round(iou, 3)})
    out += [{"outcome": "deleted", "class": proposed[i][0]} for i in range(len(proposed)) if i not in used_p]
    out += [{"outcome": "added", "class": final[j][0]} for j in range(len(final)) if j not in used_f]
    return out


# --- Label Studio: the raw tasks (ids, skips) -----------------------------------------------------
def read_tasks(path: Path) -> list[dict]:
    text = path.read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        done, cut_at = _complete_prefix(text)
        nxt = re.search(r'"id"\s*:\s*(\d+)', text[cut_at:])
        after = f"after task {done[-1]}" if done else "before the first task"
        cut = f"task {nxt.group(1)} is cut off" if nxt else "the next task is cut off"
        raise ValueError(f"{path}: truncated or invalid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                         f"{len(done)} complete task(s), {cut} ({after})") from None
    tasks = [doc] if isinstance(doc, dict) else doc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError(f"{path}: expected a Label Studio JSON export (a list of task objects)")
    return tasks


def _complete_prefix(text: str) -> tuple[list, int]:
    """Ids of the tasks that parse whole before the damage, and where the first broken one starts."""
    dec = json.JSONDecoder()
    i = text.find("[") + 1
    ids: list = []
    while 0 < i < len(text):
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break
        ids.append(obj.get("id") if isinstance(obj, dict) else None)
        i = end
    return ids, i


def _task_image(t: dict) -> str | None:
    data = t.get("data") or {}
    ref = data.get("image")
    if not isinstance(ref, str):
        return None
    return Path(unquote(ref.split("?d=")[-1].split("?")[0])).name


@dataclass(frozen=True)
class LsTask:
    """One task of a reviewed Label Studio export."""
    name: str  # its image's file name, one of review.json's
    where: str  # for messages: the export file, task id and sample
    quiet: str  # how the reader names it in its "not labelled yet" problem (skipped and unreviewed tasks)
    status: str  # done, skipped (the reviewer pressed Skip) or unreviewed
    annotation: dict | None  # done: the first annotation not cancelled (the one the reader takes)


def ls_tasks(path: Path, by_file: dict[str, dict]) -> Iterator[LsTask]:
    """The tasks of a reviewed Label Studio export; a task whose image is not in review.json is refused."""
    for t in read_tasks(path):
        tid = t.get("id", "?")
        sid = (t.get("data") or {}).get("inspector_id")
        where = f"{path} task {tid}" + (f" (sample {sid})" if sid else "")
        name = _task_image(t)
        if name is None or name not in by_file:
            raise ValueError(f"{where}: image {(t.get('data') or {}).get('image')!r} is not in the upload this review "
                             f"was exported from ({len(by_file)} frames listed in {REVIEW_JSON})")
        anns = t.get("annotations") or t.get("completions") or []
        kept = [a for a in anns if isinstance(a, dict) and not a.get("was_cancelled")]  # as the reader: the first
        status = "done" if kept else "skipped" if anns else "unreviewed"
        yield LsTask(name, where, f"{path} (task {t.get('id')})", status, kept[0] if kept else None)


def _ls_status(path: Path, by_file: dict[str, dict], classes: list[str]) -> dict[str, tuple[str, str]]:
    """image file -> (status, where) for every task; raises on what the review refuses."""
    out: dict[str, tuple[str, str]] = {}
    for task in ls_tasks(path, by_file):
        if task.annotation is None:
            out[task.name] = (task.status, task.quiet)
            continue
        where = task.where
        for r in task.annotation.get("result") or []:
            rid = r.get("id", "?")
            if r.get("type") != "rectanglelabels":
                raise ValueError(f"{where}: result {rid} is {r.get('type')!r}; the inspector's labelling config "
                                 "has only rectanglelabels (an export from another labelling config?)")
            v = r.get("value") or {}
            for label in v.get("rectanglelabels") or [None]:
                if label not in classes:
                    raise ValueError(f"{where}: result {rid} has label {label!r}, not one of the review's classes "
                                     f"{classes} (an export from another labelling config?)")
            if not float(v.get("width") or 0) > 0 or not float(v.get("height") or 0) > 0:
                raise ValueError(f"{where}: result {rid} ({label}) is a box of zero area "
                                 f"(width {v.get('width')}, height {v.get('height')} %)")
        out[task.name] = ("done", where)
    return out


def tally(listed: list[dict], status_of: Callable[[str], str], judge: Callable[[dict, dict], str],
          extra: Callable[[dict], dict] = lambda it: {}) -> tuple[list[dict], Counter, dict[str, Counter]]:
    """One record per frame of review.json (file, id, part, night, reasons, verdict, `extra`'s fields, outcome),
    the frames per outcome and per sampling reason. `judge(item, record)` turns an imported frame into confirmed
    or corrected (and adds what the kind records of it)."""
    records, frames, by_reason = [], Counter(), {}
    for it in listed:
        s = status_of(it["file"])
        rec = {**{k: it.get(k) for k in ("file", "id", "part_id", "night", "reasons", "verdict")}, **extra(it)}
        if s == "done":
            s = judge(it, rec)
        rec["outcome"] = s
        frames[s] += 1
        for reason in it.get("reasons") or []:
            by_reason.setdefault(reason, Counter())[s] += 1
        records.append(rec)
    return records, frames, by_reason


# --- the hook ----------------------------------------------------------------------------------------
def apply_review(fmt: str, src: Path, export) -> dict | None:
    """For an export with a review.json: checks it strictly, drops skipped/unreviewed frames from
    `export.items`, fixes the class order to the model's, and returns the review summary. None for an
    ordinary labelled export."""
    src = Path(src)
    review_path = find_review(src)
    if review_path is None:
        return None
    try:
        review = json.loads(review_path.read_text())
        if review.get("kind") != REVIEW_KIND:
            return None
        classes, listed = list(review["classes"]), review["items"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{review_path}: unreadable review manifest ({e})") from e
    by_file = {it["file"]: it for it in listed}

    status: dict[str, tuple[str, str]] = {}
    if fmt == "labelstudio":
        if src.is_dir():
            raise ValueError(f"{src}: pass the reviewed Label Studio export file itself (the folder also holds "
                             "tasks.json, the unreviewed tasks)")
        status = _ls_status(src, by_file, classes)
    # the reader's "not labelled yet" for the tasks that are skipped or unreviewed here: recorded, not an error
    quiet = {w for s, w in status.values() if s in ("skipped", "unreviewed")}
    export.problems = [p for p in export.problems if p.file not in quiet]
    if export.problems:  # strict: a review is imported whole or not at all
        raise ValueError(f"{src}: {len(export.problems)} problem(s) in the reviewed export, nothing imported; "
                         f"first: {export.problems[0]}")
    if export.classes is not None:
        extra = [c for c in export.classes if c not in classes]
        if extra:
            raise ValueError(f"{src}: the export declares labels {extra} that the review's classes {classes} do not "
                             "have (an export from another labelling config)")
    export.classes = classes
    finals: dict[str, list[tuple[str, list[float]]]] = {}
    for item in export.items:
        name = item.image.name
        it = by_file.get(name)
        where = status.get(name, (None, f"{item.source} image {name}"))[1]
        if it is None:
            raise ValueError(f"{where}: image {name} is not in the upload this review was exported from "
                             f"({len(by_file)} frames listed in {review_path})")
        w, h = (it["width"], it["height"]) if item.normalized else (1, 1)
        boxes = []
        for b in item.boxes:
            if b.label not in classes:
                raise ValueError(f"{where}: label {b.label!r} is not one of the review's classes {classes} "
                                 "(an export from another labelling config?)")
            box = [b.x1 * w, b.y1 * h, b.x2 * w, b.y2 * h]
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                raise ValueError(f"{where}: a {b.label} box of zero area ({', '.join(f'{v:g}' for v in box)})")
            boxes.append((b.label, box))
        finals[name] = boxes
        status.setdefault(name, ("done", where))

    keep = {n for n, (s, _) in status.items() if s == "done"}
    export.items = [i for i in export.items if i.image.name in keep]
    boxes_c: Counter = Counter()
    per_class = {c: Counter() for c in classes}

    def judge(it: dict, rec: dict) -> str:
        outs = box_outcomes([(p["class"], p["box"]) for p in it["predictions"]], finals.get(it["file"], []))
        rec["boxes"] = dict(Counter(o["outcome"] for o in outs))
        for o in outs:
            boxes_c[o["outcome"]] += 1
            per_class[o["class"]][o["outcome"]] += 1
        return "confirmed" if all(o["outcome"] == "confirmed" for o in outs) else "corrected"

    records, frames, by_reason = tally(listed, lambda f: status.get(f, ("unreviewed", ""))[0], judge)
    return {
        "review_json": str(review_path.resolve()), "destination": review.get("destination"),
        "since": review.get("since"), "until": review.get("until"), "exported_as": review.get("to"),
        "classes": classes, "frames": len(listed), "imported": len(keep),
        "outcomes": dict(frames), "boxes": {k: boxes_c.get(k, 0) for k in BOX_OUTCOMES},
        "per_class": {c: {k: v.get(k, 0) for k in BOX_OUTCOMES} for c, v in per_class.items()},
        "by_reason": {r: dict(c) for r, c in sorted(by_reason.items())},
        "note": "confirmed: the model's box kept as is; deleted: a false positive; added: a miss. Skipped and "
                "unreviewed frames are not imported.",
        "items": records,
    }


def format_review(r: dict, kind: str = "", detail: str | None = None) -> str:
    """The review's summary: frames per outcome, `detail` (a detector's: boxes per outcome) and per class."""
    o, b = r["outcomes"], r.get("boxes")
    lines = [f"review {r['since']}..{r['until']}{kind}: {r['frames']} frames, imported {r['imported']} "
             f"(confirmed {o.get('confirmed', 0)}, corrected {o.get('corrected', 0)}, skipped {o.get('skipped', 0)}, "
             f"unreviewed {o.get('unreviewed', 0)})",
             detail if detail is not None else
             f"  boxes: confirmed {b['confirmed']}, adjusted {b['adjusted']}, relabelled {b['relabelled']}, "
             f"deleted (false positives) {b['deleted']}, added (misses) {b['added']}"]
    for c, v in r["per_class"].items():
        if any(v.values()):
            lines.append(f"  {c:<15} " + ", ".join(f"{k} {n}" for k, n in v.items()))
    return "\n".join(lines)


def items_by_file(review: dict) -> dict[str, dict]:
    return {i["file"]: i for i in review.get("items", [])}

