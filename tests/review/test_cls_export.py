"""`inspector review export` of a classifier's nights (models/demo-cls: ng, ok) uploaded by the real uploader, and
`inspector dataset import` of what the reviewer hands back (CVAT tags, folders; the Label Studio round trip is in
test_labelstudio.py): the model's class pre-selected, the review's outcomes recorded, a mixed or wrong export
refused whole."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from inspector.cli import main
from tests.review.cls_night import NIGHT, P_NG, PREDICTED, cls_spool_and_upload
from tests.review.test_export import spool_and_upload

N = len(P_NG)


@pytest.fixture
def cls_night(tmp_path):
    return cls_spool_and_upload(tmp_path, f"file://{tmp_path / 'uploads'}")


def export(cfg, out, to: str, since: str = NIGHT) -> int:
    return main(["review", "export", str(out), "--config", str(cfg), "--since", since, "--until", NIGHT, "--to", to])


def test_labelstudio_tasks_preselect_the_models_class_with_its_probability(tmp_path, cls_night):
    out = tmp_path / "review"
    assert export(cls_night, out, "labelstudio") == 0
    config = ET.fromstring((out / "labeling_config.xml").read_text())
    choices = config.find("Choices")
    assert choices.get("toName") == "image" and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == ["ng", "ok"]
    assert config.find("RectangleLabels") is None
    tasks = json.loads((out / "tasks.json").read_text())
    review = json.loads((out / "review.json").read_text())
    assert review["task"] == "classify" and review["pass_class"] == "ok" and review["classes"] == ["ng", "ok"]
    by_part = {t["data"]["part_id"]: t for t in tasks}
    for i, p in enumerate(P_NG):
        t = by_part[f"S11-{i:07d}"]
        (r,) = t["predictions"][0]["result"]
        assert r["type"] == "choices" and r["from_name"] == "label" and r["to_name"] == "image"
        assert r["value"] == {"choices": [PREDICTED[i]]}
        # the score is the chosen class's probability: p(ng) when rejected, p(ok) = 1 - p(ng) when passed
        assert r["score"] == pytest.approx(p if PREDICTED[i] == "ng" else 1 - p, abs=1e-4)
        assert t["data"]["scores"] == f"ng {p:.3f}, ok {1 - p:.3f}"


@pytest.mark.parametrize("to, move, outcomes, labels", [
    # untouched: every frame confirmed, nothing relabelled
    ("cvat", {}, {"confirmed": N}, {"confirmed": N, "relabelled": 0, "misses": 0, "false_rejects": 0}),
    ("folders", {}, {"confirmed": N}, {"confirmed": N, "relabelled": 0, "misses": 0, "false_rejects": 0}),
    # part 3 (p(ng) 0.70, passed) is NG: a miss; part 0 (0.95, rejected) is good: a false reject; part 4 left out
    ("cvat", {3: "ng", 0: "ok", 4: None}, {"confirmed": 3, "corrected": 2, "unreviewed": 1},
     {"confirmed": 3, "relabelled": 2, "misses": 1, "false_rejects": 1}),
    ("folders", {3: "ng", 0: "ok", 4: None}, {"confirmed": 3, "corrected": 2, "unreviewed": 1},
     {"confirmed": 3, "relabelled": 2, "misses": 1, "false_rejects": 1}),
])
def test_cvat_tags_and_folders_come_back_with_what_the_reviewer_did(tmp_path, cls_night, to, move, outcomes, labels):
    out = tmp_path / "review"
    assert export(cls_night, out, to) == 0
    items = json.loads((out / "review.json").read_text())["items"]
    file_of = {int(it["part_id"][-7:]): it["file"] for it in items}
    if to == "cvat":
        root = ET.parse(out / "annotations.xml").getroot()
        assert {lab.findtext("type") for lab in root.iter("label")} == {"tag"}
        images = {im.get("name").split("/")[-1]: im for im in root.findall("image")}
        assert [images[file_of[i]].find("tag").get("label") for i in range(N)] == list(PREDICTED)
        assert {t.get("source") for t in root.iter("tag")} == {"auto"} and not list(root.iter("box"))
        for i, label in move.items():
            im = images[file_of[i]]
            if label is None:
                root.remove(im)  # the reviewer removed the frame from the task: not reviewed
            else:
                im.find("tag").set("label", label)
                im.find("tag").set("source", "manual")
        ET.ElementTree(root).write(out / "annotations.xml")
        src = out / "annotations.xml"
    else:
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["_unsorted", "ng", "ok"]
        assert [(out / PREDICTED[i] / file_of[i]).is_file() for i in range(N)] == [True] * N
        for i, label in move.items():  # the reviewer moves frames between the class folders
            shutil.move(out / PREDICTED[i] / file_of[i], out / (label or "_unsorted") / file_of[i])
        src = out
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", to, str(src), "--out", str(ds), "--val-fraction", "0.4"]) == 0
    meta = json.loads((ds / "dataset.json").read_text())
    r = meta["source"]["review"]
    assert meta["task"] == "classify" and meta["classes"] == ["ng", "ok"] and meta["pass_class"] == "ok"
    assert r["outcomes"] == outcomes and r["labels"] == labels and r["imported"] == N - (4 in move)
    truth = {i: move.get(i, PREDICTED[i]) for i in range(N) if move.get(i, "") is not None}
    on_disk = {f.name: f.parent.name for f in ds.glob("*/*/*.jpg")}
    assert on_disk == {file_of[i]: label for i, label in truth.items()}


@pytest.mark.parametrize("to", ["labelstudio", "cvat", "folders"])
def test_a_night_of_both_model_kinds_is_refused_naming_both(tmp_path, to, capsys):
    """Two nights: one judged by the detector, one by the classifier: one export reviews one kind."""
    cls_spool_and_upload(tmp_path / "c", f"file://{tmp_path / 'uploads'}")
    spool_and_upload(tmp_path / "d", f"file://{tmp_path / 'uploads'}")  # the same night: the manifests merge
    cfg = tmp_path / "c" / "line.yaml"
    assert export(cfg, tmp_path / "out", to) == 2
    err = capsys.readouterr().err
    assert "the nights mix model kinds" in err and "'yolo' (detect" in err and "'classes' (classify" in err, err
    assert not (tmp_path / "out").exists()


def test_publish_of_a_folders_export_is_refused(tmp_path, cls_night, capsys):
    assert main(["review", "export", str(tmp_path / "out"), "--config", str(cls_night), "--since", NIGHT, "--to",
                 "folders", "--publish"]) == 2
    assert "a folders export is the frames themselves" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, to, why", [
    ("classify", "yolo", "the samples are a classify model's (pre-labels 'classes'), which review export writes as "
                         "labelstudio, cvat, folders"),
    ("detect", "folders", "the samples are a detect model's (pre-labels 'yolo'), which review export writes as "
                          "labelstudio, cvat, yolo"),
])
def test_a_target_the_kind_has_no_form_for_is_refused(tmp_path, capsys, kind, to, why):
    make = cls_spool_and_upload if kind == "classify" else spool_and_upload
    cfg = make(tmp_path, f"file://{tmp_path / 'uploads'}")
    assert export(cfg, tmp_path / "out", to) == 2
    assert why in capsys.readouterr().err and not (tmp_path / "out").exists()


def _two_tags(root, images, file_of):
    im = images[file_of[1]]
    im.append(ET.Element("tag", label="ng", source="manual"))
    return f"image {file_of[1]}", "2 labels ['ng', 'ok']"


def _unknown_tag(root, images, file_of):
    images[file_of[2]].find("tag").set("label", "dent")
    return f"{file_of[2]}", "label 'dent' is not one of the review's classes ['ng', 'ok']"


def _a_box(root, images, file_of):
    ET.SubElement(images[file_of[0]], "box", label="ng", xtl="1", ytl="1", xbr="9", ybr="9")
    return f"{file_of[0]}", "holds boxes; a classifier's review has only tags"


@pytest.mark.parametrize("spoil", [_two_tags, _unknown_tag, _a_box])
def test_bad_cvat_reviews_are_refused_whole(tmp_path, cls_night, capsys, spoil):
    out = tmp_path / "review"
    assert export(cls_night, out, "cvat") == 0
    file_of = {int(it["part_id"][-7:]): it["file"] for it in json.loads((out / "review.json").read_text())["items"]}
    root = ET.parse(out / "annotations.xml").getroot()
    images = {im.get("name").split("/")[-1]: im for im in root.findall("image")}
    where, why = spoil(root, images, file_of)
    ET.ElementTree(root).write(out / "annotations.xml")
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "cvat", str(out / "annotations.xml"), "--out", str(ds)]) == 2
    err = capsys.readouterr().err
    assert where in err and why in err, err
    assert not ds.exists()


@pytest.mark.parametrize("spoil, why", [
    ("stray folder", "folder 'dent' is not one of the review's classes ['ng', 'ok'] (or _unsorted)"),
    ("foreign image", "is not in the upload this review was exported from"),
    ("loose image", "images directly in the folder"),
])
def test_bad_folder_reviews_are_refused_whole(tmp_path, cls_night, capsys, spoil, why):
    out = tmp_path / "review"
    assert export(cls_night, out, "folders") == 0
    some = next((out / "ok").iterdir())
    if spoil == "stray folder":
        (out / "dent").mkdir()
        shutil.move(some, out / "dent" / some.name)
    elif spoil == "foreign image":
        shutil.copyfile(some, out / "ng" / "from-elsewhere.jpg")
    else:
        shutil.move(some, out / some.name)
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "folders", str(out), "--out", str(ds)]) == 2
    assert why in capsys.readouterr().err and not ds.exists()


def _ls_reviewed(tasks: list[dict]) -> list[dict]:
    """A Label Studio export after review: each task's prediction copied into its annotation (as the editor does)."""
    return [{"id": 1 + k, "data": t["data"], "predictions": [7],
             "annotations": [{"id": 100 + k, "was_cancelled": False, "result": t["predictions"][0]["result"]}]}
            for k, t in enumerate(tasks)]


def _ls_box(tasks):
    tasks[1]["annotations"][0]["result"] = [{"id": "b1", "type": "rectanglelabels", "from_name": "label",
                                             "to_name": "image", "value": {"rectanglelabels": ["ng"]}}]
    return "task 2", "result b1 is 'rectanglelabels'; a classifier's review has only choices"


def _ls_unknown_class(tasks):
    tasks[2]["annotations"][0]["result"][0]["value"]["choices"] = ["dent"]
    return "task 3", "label 'dent' is not one of the review's classes ['ng', 'ok']"


def _ls_two_classes(tasks):
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["ng", "ok"]
    return "task 1", "2 labels ['ng', 'ok']"


@pytest.mark.parametrize("spoil", [_ls_box, _ls_unknown_class, _ls_two_classes, "truncate"])
def test_bad_label_studio_reviews_are_refused_whole_naming_the_task(tmp_path, cls_night, capsys, spoil):
    out = tmp_path / "review"
    assert export(cls_night, out, "labelstudio") == 0
    tasks = _ls_reviewed(json.loads((out / "tasks.json").read_text()))
    if spoil == "truncate":
        text = json.dumps(tasks, indent=1)
        (out / "reviewed.json").write_text(text[:text.index('"id": 4,') + 40])
        where, why = "task 4 is cut off", "truncated"
    else:
        where, why = spoil(tasks)
        (out / "reviewed.json").write_text(json.dumps(tasks))
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "labelstudio", str(out / "reviewed.json"), "--out", str(ds)]) == 2
    err = capsys.readouterr().err
    assert where in err and why in err, err
    assert not ds.exists() and not list(tmp_path.glob(".ds.tmp-*"))
