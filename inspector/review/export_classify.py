"""The classify side of `inspector review export`: a classifier's nights as image-level review tasks (export.py
walks the nights, fetches and checks the frames, writes the export; this module is what a classifier's
pre-labels look like in each tool).

A classifier's sample (sidecar `labels.format` "classes") has no boxes: its findings are the class it rejected
for (`defects`, the NG class whose probability reached the card's threshold), the classes within the margin
(`uncertain`) and every class's probability (`class_scores`). The review pre-selects the model's decision: the
rejecting NG class when the part was rejected, else the pass class (the card's `pass_class`; without one, the
highest-probability class), with that class's probability as the score; the reviewer keeps or changes it.

    labelstudio: a `Choices` labelling config (one choice per class, single choice) and per task one
                 prediction `{"type": "choices", "value": {"choices": [class]}, "score": p}`; every class's
                 probability is task data (`scores`), shown in the header.
    cvat:        CVAT for images 1.1 with the labels as `tag` labels and one `<tag source="auto">` per image.
    folders:     OUT/<class>/<sha256>.jpg, the frame in the folder of the class the model chose (every class has
                 its folder, empty ones too, so the reviewer can move a frame anywhere); frames the model chose
                 no class for (no scores: a LATE or failed frame) lie in OUT/_unsorted/.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

FORMAT = "classes"  # = frames.ClassScores.label_format
TARGETS = ("labelstudio", "cvat", "folders")
UNSORTED = "_unsorted"  # folders: frames without a predicted class (never a class name: names are folder names)


def class_prediction(rec: dict[str, Any], classes: list[str], pass_class: str | None = None) -> list[dict[str, Any]]:
    """The model's decision on a classify sample as one prediction `{class, confidence, scores, rejected}` (none
    when the sample carries neither a rejecting class nor scores)."""
    sid = rec["id"]
    scores = rec.get("class_scores") or {}
    for name in [*scores, *(d.get("class") for k in ("defects", "uncertain") for d in rec.get(k) or [])]:
        if name not in classes:
            raise ValueError(f"sample {sid}: class {name!r} is not one of the model's {classes}")
    defects = sorted(rec.get("defects") or [], key=lambda d: -float(d.get("confidence", 0.0)))
    if defects:
        name, p = defects[0]["class"], float(defects[0].get("confidence", 0.0))
    elif pass_class is not None and (scores or rec.get("uncertain")):
        name, p = pass_class, float(scores.get(pass_class, 0.0))
    elif scores:
        name = max(scores, key=lambda c: scores[c])
        p = float(scores[name])
    else:
        return []
    return [{"class": name, "confidence": p, "scores": {c: float(v) for c, v in scores.items()},
             "rejected": bool(defects)}]


def scores_text(pred: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c} {v:.3f}" for c, v in (pred[0]["scores"].items() if pred else ()))


def labeling_config(classes: list[str], from_name: str, to_name: str) -> str:
    """The Label Studio interface of a classifier's review: the frame and one single choice per class."""
    choices = "\n".join(f'    <Choice value="{c}"/>' for c in classes)
    return (f'<View>\n  <Header value="$reasons | verdict $verdict | part $part_id | $night | p: $scores"/>\n'
            f'  <Image name="{to_name}" value="$image" zoom="true"/>\n'
            f'  <Choices name="{from_name}" toName="{to_name}" choice="single" showInline="true" required="true">\n'
            f'{choices}\n  </Choices>\n</View>\n')


def ls_task(it: dict[str, Any], data: dict[str, Any], from_name: str, to_name: str) -> dict[str, Any]:
    """A Label Studio task: export.task_data's `data` plus every class's probability, and the model's class as a
    `choices` prediction."""
    preds = it["predictions"]
    task = {"data": {**data, "scores": scores_text(preds)}, "predictions": []}
    if preds:
        p = preds[0]
        task["predictions"] = [{"model_version": data["model_version"], "score": round(p["confidence"], 4),
                                "result": [{"id": "p0", "from_name": from_name, "to_name": to_name, "type": "choices",
                                            "value": {"choices": [p["class"]]}, "score": round(p["confidence"], 4)}]}]
    return task


CVAT_LABEL = "tag"  # export.cvat_xml's label type for a classifier's classes


def cvat_mark(image: ET.Element, p: dict[str, Any]) -> None:
    """A prediction as CVAT's image-level tag."""
    ET.SubElement(image, "tag", label=p["class"], source="auto")


def folder_of(it: dict[str, Any]) -> str:
    """The folder a frame goes to in a `folders` export: its predicted class, else UNSORTED."""
    return it["predictions"][0]["class"] if it["predictions"] else UNSORTED
