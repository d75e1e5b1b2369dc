"""`inspector dataset import` of image-level labels (folders, csv, Label Studio choices, CVAT tags) into a
classification dataset, its bad-input table, and `dataset check` on classification datasets. All in-process CLI
runs on generated 48-px tiles: milliseconds each."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector.cli import main
from inspector.training.cls_dataset import load_cls_dataset
from tests.training.cls_folders import make_folders


def imported(out: Path) -> dict[str, dict[str, set[str]]]:
    """split -> class -> image names, read back from disk."""
    return {s.name: {c.name: {f.name for f in c.iterdir()} for c in s.iterdir() if c.is_dir()}
            for s in out.iterdir() if s.is_dir()}


def test_folders_round_trip_into_a_stratified_classification_dataset(tmp_path):
    files = make_folders(tmp_path / "src", {"ok": 12, "ng": 8})
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(out),
               "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "3"])
    assert rc == 0
    got = imported(out)
    assert {n for s in got.values() for n in s["ok"]} == {p.name for p in files["ok"]}
    assert {n for s in got.values() for n in s["ng"]} == {p.name for p in files["ng"]}
    # stratified: each split holds each class's share
    assert {s: {c: len(v) for c, v in d.items()} for s, d in got.items()} == \
        {"train": {"ok": 6, "ng": 4}, "val": {"ok": 3, "ng": 2}, "test": {"ok": 3, "ng": 2}}
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc["task"] == "classify" and doc["names"] == {0: "ng", 1: "ok"} and doc["pass_class"] == "ok"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == ["ng", "ok"] and meta["pass_class"] == "ok" and meta["image_channels"] == 1
    assert meta["counts"]["val"] == {"images": 5, "per_class": {"ng": 2, "ok": 3}}
    assert meta["split_rule"]["kind"] == "random-fraction" and len(meta["sha256"]["content"]) == 64
    ds = load_cls_dataset(out / "data.yaml")
    assert ds.classes == ["ng", "ok"] and ds.splits == ["train", "val", "test"]
    assert main(["dataset", "check", str(out)]) == 0


def test_good_names_the_pass_class_and_the_source_splits_are_kept(tmp_path):
    src = tmp_path / "src"
    make_folders(src / "train", {"good": 4, "scratch": 3, "dent": 3})
    make_folders(src / "val", {"good": 2, "scratch": 1, "dent": 1}, seed=1)
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "folders", str(src), "--out", str(out)]) == 0  # `good`: default
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["pass_class"] == "good" and meta["classes"] == ["dent", "good", "scratch"]
    assert meta["split_rule"]["kind"] == "source"
    assert meta["counts"]["val"]["per_class"] == {"dent": 1, "good": 2, "scratch": 1}
    assert main(["dataset", "import", "--from", "folders", str(src), "--out", str(tmp_path / "d2"),
                 "--good", "dent"]) == 0
    assert json.loads((tmp_path / "d2" / "dataset.json").read_text())["pass_class"] == "dent"


def test_csv_rows_with_their_own_split(tmp_path):
    files = make_folders(tmp_path / "src" / "imgs", {"ok": 4, "ng": 4})
    rows = ["path,label,split"]
    for label, fs in files.items():
        for k, f in enumerate(fs):
            rows.append(f"imgs/{label}/{f.name},{label},{'val' if k == 0 else 'train'}")
    (tmp_path / "src" / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "csv", str(tmp_path / "src" / "labels.csv"), "--out", str(out)]) == 0
    got = imported(out)
    assert got["val"] == {"ok": {"ok_0.png"}, "ng": {"ng_0.png"}}
    assert len(got["train"]["ok"]) == 3 and len(got["train"]["ng"]) == 3


def _ls_choices(src: Path, files: dict[str, list[Path]]) -> None:
    tasks = []
    for label, fs in files.items():
        for f in fs:
            tasks.append({"id": len(tasks) + 1, "data": {"image": f"/data/upload/1/{len(tasks):08x}-{f.name}"},
                          "annotations": [{"id": 1, "was_cancelled": False, "result": [
                              {"id": "c1", "type": "choices", "from_name": "verdict", "to_name": "image",
                               "value": {"choices": [label]}}]}]})
    (src / "export.json").write_text(json.dumps(tasks))


def _cvat_tags(src: Path, files: dict[str, list[Path]]) -> None:
    labels = "".join(f"<label><name>{c}</name><type>tag</type></label>" for c in files)
    body = "".join(f'<image id="{i}" name="{f.parent.name}/{f.name}" width="48" height="48">'
                   f'<tag label="{label}" source="manual"></tag></image>'
                   for i, (label, f) in enumerate((lb, f) for lb, fs in files.items() for f in fs))
    (src / "annotations.xml").write_text(f"<annotations><version>1.1</version><meta><task><labels>{labels}</labels>"
                                         f"</task></meta>{body}</annotations>")


@pytest.mark.parametrize("fmt,write", [("labelstudio", _ls_choices), ("cvat", _cvat_tags)])
def test_image_level_labels_from_labelling_tools(tmp_path, fmt, write):
    files = make_folders(tmp_path / "src", {"ok": 6, "ng": 4})
    write(tmp_path / "src", files)
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", fmt, "--task", "classify", str(tmp_path / "src"), "--out", str(out),
                 "--val-fraction", "0.25"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == ["ng", "ok"] and meta["skipped"] == []
    assert sum(c["per_class"]["ng"] for c in meta["counts"].values()) == 4
    assert sum(c["per_class"]["ok"] for c in meta["counts"].values()) == 6


def test_the_box_import_still_refuses_a_choices_export(tmp_path):
    files = make_folders(tmp_path / "src", {"ok": 2, "ng": 2})
    _ls_choices(tmp_path / "src", files)
    assert main(["dataset", "import", "--from", "labelstudio", str(tmp_path / "src"), "--out",
                 str(tmp_path / "ds")]) == 2


def _one_class(src: Path) -> list[str]:
    make_folders(src, {"ok": 3})
    return ["--from", "folders", str(src)]


def _empty_class(src: Path) -> list[str]:
    make_folders(src, {"ok": 3, "ng": 3})
    (src / "dent").mkdir()
    return ["--from", "folders", str(src)]


def _csv_missing(src: Path) -> list[str]:
    make_folders(src, {"ok": 3, "ng": 3})
    (src / "l.csv").write_text("ok/ok_0.png,ok\nng/ng_0.png,ng\nng/ng_9.png,ng\n")
    return ["--from", "csv", str(src / "l.csv")]


def _label_not_a_class(src: Path) -> list[str]:
    make_folders(src, {"ok": 3, "ng": 3, "scratch": 2})
    return ["--from", "folders", str(src), "--classes", "ok,ng"]


def _no_pass_class(src: Path) -> list[str]:
    make_folders(src, {"pass": 3, "ng": 3})
    return ["--from", "folders", str(src)]


def _good_not_a_class(src: Path) -> list[str]:
    make_folders(src, {"ok": 3, "ng": 3})
    return ["--from", "folders", str(src), "--good", "fine"]


def _csv_outside(src: Path) -> list[str]:
    make_folders(src.parent / "elsewhere", {"ok": 3})
    make_folders(src, {"ng": 3, "ok": 2})
    (src / "l.csv").write_text("../elsewhere/ok/ok_0.png,ok\nng/ng_0.png,ng\nok/ok_1.png,ok\n")
    return ["--from", "csv", str(src / "l.csv")]


def _csv_unknown_split(src: Path) -> list[str]:
    make_folders(src, {"ok": 2, "ng": 2})
    (src / "l.csv").write_text("ok/ok_0.png,ok,train\nng/ng_0.png,ng,holdout\n")
    return ["--from", "csv", str(src / "l.csv")]


@pytest.mark.parametrize("make,named", [
    (_one_class, "one class only (ok)"),
    (_empty_class, "dent holds no image"),
    (_csv_missing, "line 3: ng/ng_9.png"),
    (_label_not_a_class, "label 'scratch'"),
    (_no_pass_class, "no pass class"),
    (_good_not_a_class, "--good 'fine' is not one of the classes"),
    (_csv_outside, "lies outside the CSV's folder"),
    (_csv_unknown_split, "split 'holdout'"),
    (lambda src: [*_one_class(src), "--val-fraction", "0.6", "--test-fraction", "0.5"], "leave images for train"),
])
def test_bad_input_exits_2_naming_it(tmp_path, capsys, make, named):
    args = make(tmp_path / "src")
    out = tmp_path / "ds"
    assert main(["dataset", "import", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not out.exists()  # nothing written


def test_the_same_bytes_twice_are_skipped_and_named(tmp_path, capsys):
    files = make_folders(tmp_path / "src", {"ok": 6, "ng": 4})
    shutil.copyfile(files["ng"][0], tmp_path / "src" / "ok" / "copy.png")  # sorted as ok too: a sorting mistake
    args = ["dataset", "import", "--from", "folders", str(tmp_path / "src")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "copy.png" in err and "labelled 'ng' there, 'ok' here" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-bad"]) == 0
    meta = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert meta["skipped_counts"] == {"duplicate": 1}


def test_an_unreadable_image_is_skipped_and_named(tmp_path, capsys):
    make_folders(tmp_path / "src", {"ok": 6, "ng": 4})
    (tmp_path / "src" / "ng" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(tmp_path / "ds")]) == 2
    assert "broken.png: not a decodable image" in capsys.readouterr().err


def _dup_across(ds: Path) -> str:
    src = next((ds / "train" / "ng").iterdir())
    shutil.copyfile(src, ds / "val" / "ng" / "again.png")
    return "duplicate_image"


def _relabelled(ds: Path) -> str:
    src = next((ds / "train" / "ng").iterdir())
    shutil.copyfile(src, ds / "val" / "ok" / "again.png")
    return "conflicting_label"


def _stray_folder(ds: Path) -> str:
    (ds / "train" / "dent").mkdir()
    cv2.imwrite(str(ds / "train" / "dent" / "x.png"), np.zeros((8, 8), np.uint8))
    return "unknown_class_folder"


def _empty_val_class(ds: Path) -> str:
    shutil.rmtree(ds / "val" / "ng")
    return "empty_class"


def _unreadable(ds: Path) -> str:
    (ds / "train" / "ok" / "bad.png").write_bytes(b"nope")
    return "unreadable_image"


@pytest.mark.parametrize("spoil", [_dup_across, _relabelled, _stray_folder, _empty_val_class, _unreadable])
def test_check_names_each_finding(tmp_path, capsys, spoil):
    make_folders(tmp_path / "src", {"ok": 6, "ng": 4})
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(ds)]) == 0
    kind = spoil(ds)
    capsys.readouterr()
    assert main(["dataset", "check", str(ds), "--json", str(tmp_path / "r.json")]) == 2
    assert f"FAIL {kind}" in capsys.readouterr().out
    assert kind in json.loads((tmp_path / "r.json").read_text())["findings"]


def test_merge_keeps_a_frozen_regression_set_and_takes_the_reviewers_class(tmp_path, capsys):
    files = make_folders(tmp_path / "src", {"ok": 12, "ng": 8})
    base = tmp_path / "v1"
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(base),
                 "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    # reviewed frames: new ones, and one of BASE's train images sorted into the other class
    new_src = tmp_path / "review"
    make_folders(new_src, {"ok": 4, "ng": 4}, seed=7, prefix="night1-")
    moved = next(f for f in files["ok"] if (base / "train" / "ok" / f.name).exists())
    shutil.copyfile(moved, new_src / "ng" / "moved.png")
    assert main(["dataset", "import", "--from", "folders", str(new_src), "--out", str(tmp_path / "new")]) == 0
    args = ["dataset", "merge", str(base), str(tmp_path / "new")]
    assert main([*args, "--out", str(tmp_path / "v2")]) == 0
    meta = json.loads((tmp_path / "v2" / "dataset.json").read_text())
    assert meta["task"] == "classify" and meta["version"]["number"] == 2
    assert meta["merge"]["base_relabelled_by_new"] == 1
    assert (tmp_path / "v2" / "train" / "ng" / moved.name).exists()  # NEW's class, BASE's split
    assert imported(tmp_path / "v2")["test"] == imported(base)["test"]  # the regression set: BASE's test split
    assert sum(c["images"] for c in meta["counts"].values()) == 20 + 8
    # the regression set is frozen: an edited one is refused, naming the dataset
    v2_test = tmp_path / "v2" / "test" / "ok"
    next(v2_test.iterdir()).unlink()
    capsys.readouterr()
    assert main(["dataset", "merge", str(tmp_path / "v2"), str(tmp_path / "new"), "--out", str(tmp_path / "v3")]) == 2
    assert "regression set" in capsys.readouterr().err


def test_merge_groups_a_reviewed_frame_by_its_part_id(tmp_path):
    """A line that judged parts of the regression set (ELPV's test cells run as the line): their reviewed frames
    (new bytes: the spool's JPEG) are the same parts, so they stay out of training; a frame of a BASE train part
    joins that part's split. The group is the frame's part id, as for boxes (merge.py), not the image's name."""
    from tests.review.cls_night import NIGHT, cls_spool_and_upload

    src = tmp_path / "src"
    files = make_folders(src, {"ok": 8, "ng": 8})
    # BASE names two images by part id: S11-0000000 a regression (test) part, S11-0000001 a train part
    for i in (0, 1):
        files["ok"][i] = files["ok"][i].rename(src / "ok" / f"S11-{i:07d}.png")
    splits = ["test", "train", "train", "train", "val", "val", "test", "test"]
    rows = [f"{c}/{f.name},{c},{s}" for c in ("ok", "ng") for f, s in zip(files[c], splits, strict=True)]
    (src / "base.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    assert main(["dataset", "import", "--from", "csv", str(src / "base.csv"), "--out", str(tmp_path / "v1")]) == 0
    cfg = cls_spool_and_upload(tmp_path / "night", f"file://{tmp_path / 'uploads'}")  # parts S11-0000000 .. 5
    review = tmp_path / "review"
    assert main(["review", "export", str(review), "--config", str(cfg), "--since", NIGHT, "--until", NIGHT,
                 "--to", "folders"]) == 0
    assert main(["dataset", "import", "--from", "folders", str(review), "--out", str(tmp_path / "new")]) == 0
    assert main(["dataset", "merge", str(tmp_path / "v1"), str(tmp_path / "new"), "--out", str(tmp_path / "v2")]) == 0
    meta = json.loads((tmp_path / "v2" / "dataset.json").read_text())
    assert meta["merge"].get("new_left_out_regression_part") == 1
    rows = [json.loads(r) for r in (tmp_path / "v2" / "members.jsonl").read_text().splitlines()]
    new = {r["group"]: r["split"] for r in rows if r["source"].startswith("review:")}
    assert sorted(new) == [f"S11-{i:07d}" for i in range(1, 6)]  # part 0 left out; groups are part ids
    assert new["S11-0000001"] == "train"  # BASE's split of that part


def test_synth_classify_sorts_the_line_frames_by_any_defect(tmp_path):
    from inspector.sources.conveyor import ConveyorGenerator

    assert main(["synth", "--task", "classify", "--out", str(tmp_path / "src"), "--n", "6", "--seed", "5",
                 "--workers", "1"]) == 0
    gen = ConveyorGenerator(5)
    want = {f"5_{i:07d}.jpg": "ng" if gen.part(i).defective else "ok" for i in range(6)}
    got = {f.name: f.parent.name for f in (tmp_path / "src").glob("*/*.jpg")}
    assert got == want and set(want.values()) == {"ok", "ng"}
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                 "--val-fraction", "0.34"]) == 0
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["image_sizes"] == {"640x480": 6}


@pytest.mark.parametrize("args,named", [
    (["train", "--data", "{ds}", "--epochs", "1"], "is a classification dataset (task: classify): train it with "
                                                     "--task classify"),
    (["train", "--task", "classify", "--data", "{ds}", "--augment", "texture"], "a classifier takes one of"),
    (["train", "--task", "classify", "--epochs", "1"], "--task classify needs --data"),
    (["dataset", "import", "--from", "voc", "{src}", "--task", "classify"], "not voc"),
    (["dataset", "import", "--from", "folders", "{src}", "--task", "detect"], "--task detect does not apply"),
    (["model", "build", "--fp32", "f.xml", "--int8", "i.xml", "--data", "{ds}", "--perturbed-eval", "issue"],
     "--perturbed-eval is not available for a classifier yet"),
])
def test_task_mismatches_are_refused_before_any_work(tmp_path, capsys, args, named):
    make_folders(tmp_path / "src", {"ok": 4, "ng": 4})
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                 "--val-fraction", "0.25"]) == 0
    capsys.readouterr()
    subst = {"{ds}": str(tmp_path / "ds" / "data.yaml"), "{src}": str(tmp_path / "src")}
    args = [subst.get(x, x) for x in args]
    out = ["--out", str(tmp_path / "out")]
    assert main([*args, *out]) == 2
    c = capsys.readouterr()
    assert named in c.err + c.out
    assert not (tmp_path / "out" / "run").exists()
