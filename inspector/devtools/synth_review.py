"""A stand-in reviewer for the synthetic line (tests, docs/retraining.md's manual run): answers the Label Studio
tasks of `inspector review export` with the synthetic generator's ground truth, in the JSON a Label Studio
export of the reviewed project has. Each task's part id (`S<seed>-<index>`) re-renders the part's truth.

Like a person starting from the pre-annotation: a proposed box that matches a true defect (same class, IoU >=
0.5) is kept untouched when it fits (IoU >= 0.9: a confirmation) and redrawn on the truth otherwise; a proposed
box with no true defect is deleted (a false positive); a true defect nobody proposed is added (a miss).

    python -m inspector.devtools.synth_review REVIEW_DIR/tasks.json --out REVIEW_DIR/reviewed.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from inspector.review.export import ls_result
from inspector.sources.conveyor import ConveyorGenerator

PART_RE = re.compile(r"^S(\d+)-(\d+)$")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def review_tasks(tasks: list[dict], *, defect_free_ratio: float = 1 / 3) -> tuple[list[dict], dict]:
    gens: dict[tuple[int, int, int], ConveyorGenerator] = {}
    out, counts = [], {"confirmed": 0, "redrawn": 0, "deleted": 0, "added": 0, "tasks": 0}
    for k, t in enumerate(tasks):
        m = PART_RE.match(str(t["data"].get("part_id")))
        if m is None:
            raise ValueError(f"task {k}: part id {t['data'].get('part_id')!r} is not a synthetic part (S<seed>-<n>)")
        pred = t["predictions"][0]["result"] if t.get("predictions") else []
        w, h = (pred[0]["original_width"], pred[0]["original_height"]) if pred else (640, 480)
        key = (int(m.group(1)), w, h)
        gen = gens.setdefault(key, ConveyorGenerator(key[0], w, h, defect_free_ratio))
        truth = [(d.name, list(d.box)) for d in gen.part(int(m.group(2))).defects]
        proposed = []
        for r in pred:
            v = r["value"]
            x0, y0 = v["x"] * w / 100, v["y"] * h / 100
            proposed.append((v["rectanglelabels"][0], [x0, y0, x0 + v["width"] * w / 100, y0 + v["height"] * h / 100]))
        result, used = [], set()
        for i, (cls, box) in enumerate(proposed):
            best = max(((j, _iou(box, tb)) for j, (tc, tb) in enumerate(truth) if tc == cls and j not in used),
                       key=lambda x: x[1], default=(None, 0.0))
            if best[0] is None or best[1] < 0.5:
                counts["deleted"] += 1
                continue
            used.add(best[0])
            keep = {x: y for x, y in pred[i].items() if x != "score"}
            if best[1] >= 0.9:
                counts["confirmed"] += 1
                result.append(keep)
            else:
                counts["redrawn"] += 1
                result.append(ls_result(truth[best[0]][1], cls, w, h, keep["id"]))
        for j, (cls, box) in enumerate(truth):
            if j not in used:
                counts["added"] += 1
                result.append(ls_result(box, cls, w, h, f"truth{j}"))
        counts["tasks"] += 1
        out.append({"id": k + 1, "data": t["data"], "predictions": t.get("predictions", []),
                    "annotations": [{"id": 1000 + k, "completed_by": 1, "was_cancelled": False, "result": result,
                                     "ground_truth": False, "lead_time": 1.0}]})
    return out, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", help="tasks.json of `inspector review export --to labelstudio`")
    p.add_argument("--out", required=True, help="the 'reviewed' Label Studio export to write")
    p.add_argument("--defect-free-ratio", type=float, default=1 / 3, help="the line's source.defect_free_ratio")
    a = p.parse_args(argv)
    try:
        reviewed, counts = review_tasks(json.loads(Path(a.tasks).read_text()), defect_free_ratio=a.defect_free_ratio)
    except (OSError, ValueError, KeyError) as e:
        print(f"synth_review: {e}", file=sys.stderr)
        return 2
    Path(a.out).write_text(json.dumps(reviewed, indent=1) + "\n")
    print(f"reviewed {counts['tasks']} tasks: confirmed {counts['confirmed']}, redrawn {counts['redrawn']}, "
          f"deleted {counts['deleted']}, added {counts['added']} boxes -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
