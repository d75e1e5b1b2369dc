"""`inspector dataset import`: each format's export round-trips into the canonical dataset, splits
follow their rule, bad input is named and skipped, and the dataset is never half-written."""

import json
import os
import shutil
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.training.dataset_check import run_check
from inspector.training.evaluate import data_splits
from tests.traced_peak import cli_peak
from tests.training.exports import CLASSES, WRITERS, Drawn, ls_task


def labels_of(out: Path) -> dict[str, list[tuple]]:
    """image name -> sorted label rows, over all splits."""
    rows = {}
    for lbl in out.glob("labels/*/*.txt"):
        img = next(out.glob(f"images/{lbl.parent.name}/{lbl.stem}.*"))
        rows[img.name] = sorted(tuple(round(float(v), 3) for v in ln.split()) for ln in lbl.read_text().splitlines())
    return rows


def expected(drawn: list[Drawn]) -> dict[str, list[tuple]]:
    def row(d, c, x1, y1, x2, y2):
        return (float(CLASSES.index(c)), round((x1 + x2) / 2 / d.width, 3), round((y1 + y2) / 2 / d.height, 3),
                round((x2 - x1) / d.width, 3), round((y2 - y1) / d.height, 3))
    return {d.name: sorted(row(d, *b) for b in d.boxes) for d in drawn}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_round_trips_into_one_canonical_dataset(tmp_path, fmt):
    drawn = WRITERS[fmt](tmp_path / "src", n=8)
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", fmt, str(tmp_path / "src"), "--out", str(out),
               "--classes", ",".join(CLASSES), "--val-fraction", "0.25", "--seed", "1"])
    assert rc == 0
    assert labels_of(out) == expected(drawn)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == list(CLASSES)
    assert meta["source"]["format"] == fmt
    assert meta["counts"]["val"]["images"] == 2 and meta["counts"]["train"]["images"] == 6
    n_boxes = sum(len(d.boxes) for d in drawn)
    assert sum(c["boxes"] for c in meta["counts"].values()) == n_boxes
    assert meta["split_rule"]["kind"] == "random-fraction" and meta["split_rule"]["seed"] == 1
    assert len(meta["sha256"]["content"]) == 64 and meta["skipped"] == []
    assert meta["image_channels"] == 1  # drawn gray: 3 equal channels
    assert run_check(out, imgsz=64).ok


def test_the_content_hash_is_the_same_for_the_same_data_and_changes_with_a_label(tmp_path):
    WRITERS["yolo"](tmp_path / "src", n=6)
    args = ["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--val-fraction", "0.3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    h = [json.loads((tmp_path / d / "dataset.json").read_text())["sha256"] for d in "ab"]
    assert h[0] == h[1]
    lbl = tmp_path / "src" / "labels" / "img_0.txt"
    lbl.write_text("1" + lbl.read_text()[1:])  # the first box relabelled scratch -> pit
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    h2 = json.loads((tmp_path / "c" / "dataset.json").read_text())["sha256"]
    assert h2["images"] == h[0]["images"] and h2["labels"] != h[0]["labels"]


@pytest.mark.parametrize("form", ["folder", "train.txt", "pairs"])
def test_a_split_file_fixes_the_split(tmp_path, form):
    WRITERS["voc"](tmp_path / "src", n=8)
    val = {"img_1", "img_6"}
    sp = tmp_path / "split"
    sp.mkdir()
    if form == "pairs":
        arg = sp / "split.txt"
        arg.write_text("".join(f"JPEGImages/img_{i}.jpg {'val' if f'img_{i}' in val else 'train'}\n" for i in range(8)))
    else:  # NEU-DET's form: train.txt and val.txt, one stem per line
        (sp / "train.txt").write_text("".join(f"img_{i}\n" for i in range(8) if f"img_{i}" not in val))
        (sp / "val.txt").write_text("\n".join(sorted(val)) + "\n")
        arg = sp if form == "folder" else sp / "train.txt"
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "voc", str(tmp_path / "src"), "--out", str(out),
                 "--split-file", str(arg)]) == 0
    assert {p.stem for p in (out / "images" / "val").iterdir()} == val
    assert len(list((out / "images" / "train").iterdir())) == 6


def test_an_image_missing_from_the_split_file_is_named(tmp_path, capsys):
    WRITERS["voc"](tmp_path / "src", n=4)
    (tmp_path / "train.txt").write_text("img_0\nimg_1\n")
    (tmp_path / "val.txt").write_text("img_2\n")
    rc = main(["dataset", "import", "--from", "voc", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
               "--split-file", str(tmp_path / "train.txt")])
    assert rc == 2
    assert "img_3.jpg: not listed in the split file" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_group_never_spans_two_splits(tmp_path, seed):
    src = tmp_path / "src"
    WRITERS["yolo"](src, n=12)
    for i in range(12):  # part ids: three images of each of four parts
        for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
            (src / sub / f"img_{i}{ext}").rename(src / sub / f"part{i % 4}_view{i}{ext}")
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "yolo", str(src), "--out", str(out), "--val-fraction", "0.25",
                 "--seed", str(seed), "--group-by", r"(part\d+)_"]) == 0
    parts = {s: {p.name.split("_")[0] for p in (out / "images" / s).iterdir()} for s in ("train", "val")}
    assert parts["train"] and parts["val"] and not parts["train"] & parts["val"]
    assert json.loads((out / "dataset.json").read_text())["split_rule"]["group_by"] == r"(part\d+)_"


def _voc_unknown_class(src):
    x = src / "Annotations" / "img_3.xml"
    x.write_text(x.read_text().replace("<name>scratch</name>", "<name>dent</name>"))
    return "img_3.xml", "class 'dent' is not one of ['scratch', 'pit']"


def _voc_box_outside(src):
    x = src / "Annotations" / "img_2.xml"
    t = x.read_text()
    start = t.index("<xmax>") + 6
    x.write_text(t[:start] + "140" + t[t.index("</xmax>"):])  # image is 96 px wide
    return "img_2.xml", "lies outside the 96x80 image"


def _voc_corrupt_jpeg(src):
    p = src / "JPEGImages" / "img_5.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return "img_5.jpg", "unreadable or truncated image"


def _voc_size_mismatch(src):
    x = src / "Annotations" / "img_4.xml"
    x.write_text(x.read_text().replace("<width>96</width>", "<width>100</width>"))
    return "img_4.xml", "is 100x80, the file is 96x80"


def _voc_bad_xml(src):
    (src / "Annotations" / "img_6.xml").write_text("<annotation><filename>img_6.jpg</filename>")
    return "img_6.xml", "unreadable VOC XML"


def _coco_missing_image(src):
    (src / "images" / "img_4.jpg").unlink()
    return "instances_default.json", "file 'img_4.jpg' not found"


def _coco_unknown_category(src):
    p = src / "instances_default.json"
    doc = json.loads(p.read_text())
    doc["annotations"][0]["category_id"] = 99
    p.write_text(json.dumps(doc))
    return "img_0.jpg", "unknown category_id 99"


def _ls_polygon(src):
    p = src / "export.json"
    tasks = json.loads(p.read_text())
    d = Drawn("img_2.jpg", 96, 80, (("pit", 10, 10, 30, 30),))
    tasks[2] = ls_task(2, d, kind="polygonlabels")
    p.write_text(json.dumps(tasks))
    return "export.json (task 3)", "is 'polygonlabels', only rectanglelabels"


def _cvat_polygon(src):
    p = src / "annotations.xml"
    t = p.read_text()
    i = t.index('<image id="1"')
    j = t.index(">", i) + 1
    p.write_text(t[:j] + '<polygon label="pit" points="1,1;5,5;1,5"></polygon>' + t[j:])
    return "(image 'img_1.jpg')", "holds polygon; only <box>"


def _ls_unlabelled(src):
    p = src / "export.json"
    tasks = json.loads(p.read_text())
    tasks[4]["annotations"][0]["was_cancelled"] = True
    p.write_text(json.dumps(tasks))
    return "export.json (task 5)", "task has no (non-cancelled) annotation"


def _yolo_no_label(src):
    (src / "labels" / "img_6.txt").unlink()
    return "img_6.jpg", "no label file"


def _yolo_bad_line(src):
    (src / "labels" / "img_7.txt").write_text("0 0.5 0.5 0.1\n")
    return "img_7.txt", "4 fields, expected 5"


BAD = {
    "voc class not in --classes": ("voc", _voc_unknown_class),
    "voc box outside the image": ("voc", _voc_box_outside),
    "corrupt jpeg": ("voc", _voc_corrupt_jpeg),
    "voc size disagrees with the image": ("voc", _voc_size_mismatch),
    "voc xml cut short": ("voc", _voc_bad_xml),
    "coco missing image": ("coco", _coco_missing_image),
    "coco unknown category": ("coco", _coco_unknown_category),
    "labelstudio polygon": ("labelstudio", _ls_polygon),
    "cvat polygon": ("cvat", _cvat_polygon),
    "yolo malformed line": ("yolo", _yolo_bad_line),
    "yolo image without label file": ("yolo", _yolo_no_label),
    "labelstudio task not labelled": ("labelstudio", _ls_unlabelled),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("skip_bad", [False, True])
def test_bad_input_is_named_the_rest_imported_and_exit_2_unless_skip_bad(tmp_path, capsys, case, skip_bad):
    fmt, spoil = BAD[case]
    src = tmp_path / "src"
    WRITERS[fmt](src, n=8)
    file_part, reason = spoil(src)
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(out), "--classes", "scratch,pit",
               *(["--skip-bad"] if skip_bad else [])])
    err = capsys.readouterr().err
    assert rc == (0 if skip_bad else 2), err
    line = next((ln for ln in err.splitlines() if ln.startswith("skipped")), "")
    assert file_part in line and reason in line, err
    meta = json.loads((out / "dataset.json").read_text())
    assert sum(c["images"] for c in meta["counts"].values()) == 7  # the rest is imported
    assert len(meta["skipped"]) == 1 and file_part in meta["skipped"][0]["file"] + meta["skipped"][0]["reason"]


def test_an_image_labelled_twice_is_imported_once(tmp_path, capsys):
    src = tmp_path / "src"
    WRITERS["voc"](src, n=4)
    shutil.copyfile(src / "JPEGImages" / "img_1.jpg", src / "JPEGImages" / "img_9.jpg")
    x = (src / "Annotations" / "img_1.xml").read_text()
    (src / "Annotations" / "img_9.xml").write_text(x.replace("<filename>img_1", "<filename>img_9"))
    rc = main(["dataset", "import", "--from", "voc", str(src), "--out", str(tmp_path / "ds")])
    assert rc == 2
    assert "img_9.jpg: the same image bytes as" in capsys.readouterr().err


def test_the_dataset_is_replaced_whole_or_not_at_all(tmp_path, capsys):
    src = tmp_path / "src"
    WRITERS["yolo"](src, n=6)
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "yolo", str(src), "--out", str(out)]) == 0
    before = json.loads((out / "dataset.json").read_text())["sha256"]
    # an import that fails finds nothing to write: the previous dataset stays as it was
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert main(["dataset", "import", "--from", "yolo", str(empty), "--out", str(out)]) == 2
    assert json.loads((out / "dataset.json").read_text())["sha256"] == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # a folder that is not ours is never overwritten
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["dataset", "import", "--from", "yolo", str(src), "--out", str(other)]) == 2
    assert "is not a dataset written by" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep"


def test_yolo_import_keeps_the_splits_its_data_yaml_declares(tmp_path):
    src = tmp_path / "src"
    WRITERS["yolo"](src, n=6)
    a = tmp_path / "a"
    assert main(["dataset", "import", "--from", "yolo", str(src), "--out", str(a), "--val-fraction", "0.5"]) == 0
    b = tmp_path / "b"
    assert main(["dataset", "import", "--from", "yolo", str(a / "data.yaml"), "--out", str(b)]) == 0
    assert json.loads((b / "dataset.json").read_text())["split_rule"]["kind"] == "source"
    for s in ("train", "val"):
        names = [sorted(p.name for p in (d / "images" / s).iterdir()) for d in (a, b)]
        assert names[0] == names[1]
    assert labels_of(a) == labels_of(b)


@pytest.mark.parametrize("val,test", [("1.0", "0"), ("-0.1", "0"), ("0.6", "0.5")])
def test_split_fractions_out_of_range_are_bad_input(tmp_path, capsys, val, test):
    WRITERS["yolo"](tmp_path / "src", n=4)
    rc = main(["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
               "--val-fraction", val, "--test-fraction", test])
    assert rc == 2 and "--val-fraction" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


# --- files outside the export are never read ---------------------------------------------------------------
def _secret(tmp_path: Path) -> Path:
    """Another customer's part image, outside the export, the same size as the export's images."""
    from tests.training.exports import draw

    d = draw(tmp_path / "outside", n=1, seed=9, prefix="secret")[0]
    return tmp_path / "outside" / d.name


def _point_voc(src: Path, secret: Path, how: str) -> str:
    x = src / "Annotations" / "img_3.xml"
    ref = str(secret) if how == "absolute" else os.path.relpath(secret, x.parent)
    t = x.read_text()
    x.write_text(t[:t.index("<filename>") + 10] + ref + t[t.index("</filename>"):])
    (src / "JPEGImages" / "img_3.jpg").unlink()  # no image of that name inside: only the outside one would do
    return "img_3.xml"


def _point_coco(src: Path, secret: Path, how: str) -> str:
    p = src / "instances_default.json"
    doc = json.loads(p.read_text())
    doc["images"][3]["file_name"] = str(secret) if how == "absolute" else os.path.relpath(secret, src)
    p.write_text(json.dumps(doc))
    (src / "images" / "img_3.jpg").unlink()
    return "instances_default.json"


def _point_cvat(src: Path, secret: Path, how: str) -> str:
    p = src / "annotations.xml"
    ref = str(secret) if how == "absolute" else os.path.relpath(secret, src)
    p.write_text(p.read_text().replace('name="img_3.jpg"', f'name="{ref}"'))
    (src / "images" / "img_3.jpg").unlink()
    return "annotations.xml"


def _point_labelstudio(src: Path, secret: Path, how: str) -> str:
    p = src / "export.json"
    tasks = json.loads(p.read_text())
    ref = str(secret) if how == "absolute" else os.path.relpath(secret, src)
    tasks[3]["data"]["image"] = f"/data/local-files/?d={ref}"
    p.write_text(json.dumps(tasks))
    (src / "images" / "img_3.jpg").unlink()
    return "export.json (task 4)"


def _point_symlink(src: Path, secret: Path, how: str) -> str:
    img = next(src.rglob("img_3.jpg"))
    img.unlink()
    img.symlink_to(secret)
    return "img_3.jpg"


POINT = {"voc": _point_voc, "coco": _point_coco, "cvat": _point_cvat, "labelstudio": _point_labelstudio}


@pytest.mark.parametrize("fmt, how", [*((f, h) for f in sorted(POINT) for h in ("absolute", "../")),
                                      *((f, "symlink") for f in sorted(WRITERS))])
def test_an_image_outside_the_export_is_never_read(tmp_path, capsys, fmt, how):
    secret = _secret(tmp_path)
    src = tmp_path / "src"
    WRITERS[fmt](src, n=8)
    named = (_point_symlink if how == "symlink" else POINT[fmt])(src, secret, how)
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(out), "--classes", "scratch,pit"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = next((ln for ln in err.splitlines() if ln.startswith("skipped") and "outside the export" in ln), "")
    assert named in line, err
    meta = json.loads((out / "dataset.json").read_text())
    assert sum(c["images"] for c in meta["counts"].values()) == 7
    assert meta["skipped_counts"] == {"outside_export": 1}
    assert secret.read_bytes() not in {p.read_bytes() for p in out.glob("images/*/*")}


@pytest.mark.parametrize("recorded", ["/home/annotator/project/images/img_3.jpg", "C:\\labelling\\img_3.jpg",
                                      "images/../images/img_3.jpg"])
def test_a_path_from_the_labelling_pc_still_finds_the_image_inside_the_export(tmp_path, recorded):
    src = tmp_path / "src"
    drawn = WRITERS["coco"](src, n=8)
    p = src / "instances_default.json"
    doc = json.loads(p.read_text())
    doc["images"][3]["file_name"] = recorded  # no such file here: found by its name inside the export
    p.write_text(json.dumps(doc))
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "coco", str(src), "--out", str(out), "--classes", "scratch,pit"]) == 0
    assert labels_of(out) == expected(drawn)


# --- non-finite coordinates --------------------------------------------------------------------------------
def _nan_yolo(src, value):
    (src / "labels" / "img_2.txt").write_text(f"0 0.5 0.5 0.1 0.1\n0 {value} 0.5 0.1 0.1\n")
    return "img_2.txt", "line 2"


def _nan_voc(src, value):
    x = src / "Annotations" / "img_2.xml"
    t = x.read_text()
    x.write_text(t[:t.index("<xmin>") + 6] + value + t[t.index("</xmin>"):])
    return "img_2.xml", "box"


def _nan_coco(src, value):
    p = src / "instances_default.json"
    doc = json.loads(p.read_text())
    a = next(a for a in doc["annotations"] if a["image_id"] == 3)
    a["bbox"][2] = float(value)
    p.write_text(json.dumps(doc))  # json writes NaN / Infinity, and Python's reader accepts them
    return "instances_default.json", "img_2.jpg"


def _nan_cvat(src, value):
    p = src / "annotations.xml"
    t = p.read_text()
    i = t.index("xtl=", t.index('name="img_2.jpg"'))
    p.write_text(t[:i + 5] + value + t[t.index('"', i + 5):])
    return "annotations.xml", "img_2.jpg"


def _nan_labelstudio(src, value):
    p = src / "export.json"
    tasks = json.loads(p.read_text())
    tasks[2]["annotations"][0]["result"][0]["value"]["y"] = float(value)
    p.write_text(json.dumps(tasks))
    return "export.json (task 3)", "result"


NAN = {"yolo": _nan_yolo, "voc": _nan_voc, "coco": _nan_coco, "cvat": _nan_cvat, "labelstudio": _nan_labelstudio}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("fmt", sorted(NAN))
def test_a_non_finite_coordinate_skips_the_image_and_is_named(tmp_path, capsys, fmt, value):
    src = tmp_path / "src"
    WRITERS[fmt](src, n=8)
    file_part, where = NAN[fmt](src, value)
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(out), "--classes", "scratch,pit"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = next((ln for ln in err.splitlines() if ln.startswith("skipped")), "")
    assert file_part in line and where in line and "non-finite" in line, err
    assert "img_2" not in {p.stem for p in out.glob("images/*/*")}
    assert sum(c["images"] for c in json.loads((out / "dataset.json").read_text())["counts"].values()) == 7


# --- class names are YAML strings, whatever they look like -------------------------------------------------
@pytest.mark.parametrize("names", [("no", "null"), ("1.5", "#0"), ("dent: deep", "yes"), ("- x", "[a]"),
                                   ("007", "on"), ("~", "a'b \"c\"")])
def test_class_names_round_trip_through_data_yaml(tmp_path, names):
    import yaml

    from inspector.training.merge import classes_of

    src = tmp_path / "src"
    WRITERS["coco"](src, n=6)
    p = src / "instances_default.json"
    doc = json.loads(p.read_text())
    for c, name in zip(doc["categories"], names, strict=True):
        c["name"] = name
    p.write_text(json.dumps(doc))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["dataset", "import", "--from", "coco", str(src), "--out", str(a), "--val-fraction", "0.5"]) == 0
    assert yaml.safe_load((a / "data.yaml").read_text())["names"] == dict(enumerate(names))
    assert classes_of(a) == list(names)
    assert main(["dataset", "import", "--from", "yolo", str(a / "data.yaml"), "--out", str(b)]) == 0
    assert json.loads((b / "dataset.json").read_text())["classes"] == list(names)
    assert labels_of(a) == labels_of(b)


def test_a_yolo_export_without_names_gets_the_class_ids_as_string_names(tmp_path):
    import yaml

    src = tmp_path / "src"
    drawn = WRITERS["yolo"](src, n=6)
    (src / "classes.txt").unlink()
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "yolo", str(src), "--out", str(out)]) == 0
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "0", 1: "1"}
    assert labels_of(out) == expected(drawn)


# --- --classes names a YOLO export's class ids -------------------------------------------------------------
def test_classes_name_the_ids_of_a_yolo_export_without_names(tmp_path, capsys):
    src = tmp_path / "src"
    drawn = WRITERS["yolo"](src, n=8)
    (src / "classes.txt").unlink()
    (src / "labels" / "img_5.txt").write_text("2 0.5 0.5 0.1 0.1\n")  # a third class: --classes names two
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", "yolo", str(src), "--out", str(out), "--classes", "scratch,pit"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "img_5.txt" in err and "class id 2" in err
    assert labels_of(out) == {k: v for k, v in expected(drawn).items() if k != "img_5.jpg"}
    assert json.loads((out / "dataset.json").read_text())["classes"] == ["scratch", "pit"]


# --- a relative path to a dataset whose data.yaml has no `path:` ------------------------------------------
@pytest.mark.parametrize("arg", ["a", "a/data.yaml"])
def test_a_relative_path_to_an_imported_dataset_imports_it(tmp_path, monkeypatch, arg):
    WRITERS["yolo"](tmp_path / "src", n=6)
    assert main(["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--out", str(tmp_path / "a"),
                 "--val-fraction", "0.5"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "import", "--from", "yolo", arg, "--out", "b"]) == 0
    assert labels_of(tmp_path / "a") == labels_of(tmp_path / "b")
    assert run_check(Path(arg), imgsz=64).per_split["train"]["images"] == 3  # check reads it in place too
    assert data_splits(Path("a/data.yaml")) == {"train": Path("a/images/train"), "val": Path("a/images/val")}  # eval


def test_a_split_folder_data_yaml_names_but_that_is_missing_is_reported(tmp_path, capsys):
    WRITERS["yolo"](tmp_path / "src", n=6)
    a = tmp_path / "a"
    assert main(["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--out", str(a)]) == 0
    (a / "data.yaml").write_text((a / "data.yaml").read_text() + "test: images/test\n")
    rc = main(["dataset", "import", "--from", "yolo", str(a), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "data.yaml" in err and "split 'test'" in err and "does not exist" in err


# --- malformed items are skipped and named; a file that does not parse is bad input ------------------------
def _edit_json(name):
    def wrap(fn):
        def spoil(src):
            p = src / name
            doc = json.loads(p.read_text())
            why = fn(doc)
            p.write_text(json.dumps(doc))
            return why
        return spoil
    return wrap


@_edit_json("instances_default.json")
def _coco_category_without_id(doc):
    del doc["categories"][1]["id"]  # pit: the images with a pit box are then skipped too
    return "categories[1]", "no id"


@_edit_json("instances_default.json")
def _coco_annotation_not_an_object(doc):
    doc["annotations"].append("bbox 1 2 3 4")
    return f"annotations[{len(doc['annotations']) - 1}]", "not an object"


@_edit_json("instances_default.json")
def _coco_image_not_an_object(doc):
    doc["images"].append(17)
    return "images[8]", "not an object"


@_edit_json("instances_default.json")
def _coco_bbox_not_numbers(doc):
    doc["annotations"][0]["bbox"] = ["a", 1, 2, 3]
    return "img_0.jpg", "bbox"


@_edit_json("export.json")
def _ls_result_without_x(doc):
    del doc[1]["annotations"][0]["result"][0]["value"]["x"]
    return "task 2", "value.x"


@_edit_json("export.json")
def _ls_value_not_an_object(doc):
    doc[1]["annotations"][0]["result"][0]["value"] = [1, 2]
    return "task 2", "value"


@_edit_json("export.json")
def _ls_task_not_an_object(doc):
    doc.append("task")
    return "export.json", "not an object"


@_edit_json("export.json")
def _ls_width_not_a_number(doc):
    doc[1]["annotations"][0]["result"][0]["original_width"] = "wide"
    return "task 2", "original_width"


MALFORMED = {
    "coco category without id": ("coco", _coco_category_without_id),
    "coco annotation not an object": ("coco", _coco_annotation_not_an_object),
    "coco image not an object": ("coco", _coco_image_not_an_object),
    "coco bbox not numbers": ("coco", _coco_bbox_not_numbers),
    "labelstudio result without value.x": ("labelstudio", _ls_result_without_x),
    "labelstudio value not an object": ("labelstudio", _ls_value_not_an_object),
    "labelstudio task not an object": ("labelstudio", _ls_task_not_an_object),
    "labelstudio original_width not a number": ("labelstudio", _ls_width_not_a_number),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_item_is_skipped_and_named(tmp_path, capsys, case):
    fmt, spoil = MALFORMED[case]
    src = tmp_path / "src"
    WRITERS[fmt](src, n=8)
    where, why = spoil(src)
    out = tmp_path / "ds"
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(out), "--classes", "scratch,pit"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert any(ln.startswith("skipped") and where in ln and why in ln for ln in err.splitlines()), err
    assert (out / "dataset.json").exists()  # the rest is imported


UNPARSABLE = {
    "coco not json": ("coco", "instances_default.json", b"{\"images\": ["),
    "coco not text": ("coco", "instances_default.json", b"\xff\xfe\x00\x81garbage"),
    "coco a list": ("coco", "instances_default.json", b"[1, 2]"),
    "labelstudio not json": ("labelstudio", "export.json", b"[{\"id\": 1,"),
    "labelstudio a number": ("labelstudio", "export.json", b"42"),
    "cvat xml cut short": ("cvat", "annotations.xml", b"<annotations><image name='img_0.jpg'>"),
    "cvat not text": ("cvat", "annotations.xml", b"\xff\xfe\x00\x81garbage"),
    "cvat another root": ("cvat", "annotations.xml", b"<annotation><filename>img_0.jpg</filename></annotation>"),
}


@pytest.mark.parametrize("case", sorted(UNPARSABLE))
def test_a_file_that_does_not_parse_is_bad_input(tmp_path, capsys, case):
    fmt, name, content = UNPARSABLE[case]
    src = tmp_path / "src"
    WRITERS[fmt](src, n=4)
    (src / name).write_bytes(content)
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(tmp_path / "ds"), "--skip-bad"])
    err = capsys.readouterr().err
    assert rc == 2 and name in err, err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("fmt, content", [("coco", b"{\"images\": ["), ("labelstudio", b"42")])
def test_skip_bad_does_not_accept_a_whole_file_that_does_not_parse(tmp_path, capsys, fmt, content):
    src = tmp_path / "src"
    WRITERS[fmt](src, n=4)
    (src / "more.json").write_bytes(content)  # beside the good export file: the rest imports, exit 2 still
    rc = main(["dataset", "import", "--from", fmt, str(src), "--out", str(tmp_path / "ds"), "--skip-bad"])
    err = capsys.readouterr().err
    assert rc == 2 and "more.json" in err and "do not parse" in err, err
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["skipped_counts"] == {"unparsable": 1}


# --- --out never overlaps the export -----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_out_overlapping_the_source_is_refused(tmp_path, capsys, where):
    WRITERS["yolo"](tmp_path / "src", n=6)
    a = tmp_path / "box" / "a"
    assert main(["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--out", str(a)]) == 0
    (a / "images" / "train" / "unlabelled.jpg").write_bytes(next((a / "images" / "train").iterdir()).read_bytes())
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    out = {"same": a, "inside": a / "next", "containing": tmp_path / "box"}[where]
    rc = main(["dataset", "import", "--from", "yolo", str(a / "data.yaml"), "--out", str(out), "--skip-bad"])
    assert rc == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


# --- memory: one image at a time ---------------------------------------------------------------------------
def test_import_holds_one_image_at_a_time_not_the_dataset(tmp_path):
    import cv2
    import numpy as np

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    rng = np.random.default_rng(0)
    total = 0
    for i in range(200):  # noise does not compress: ~83 kB each, 17 MB together
        data = cv2.imencode(".png", rng.integers(0, 255, (288, 288), dtype=np.uint8))[1].tobytes()
        (src / "images" / f"n{i}.png").write_bytes(data)
        (src / "labels" / f"n{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        total += len(data)
    rc, peak = cli_peak(["dataset", "import", "--from", "yolo", src, "--out", tmp_path / "ds"], tmp_path)
    assert rc == 0
    assert total > 16e6 and peak < total / 4, (total, peak)  # a few images in flight, not all of them
