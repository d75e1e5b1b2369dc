"""`inspector review export` on nights uploaded by the real uploader (S3-compatible server on loopback, or a
folder), and `inspector dataset import` of what a reviewer hands back: outcomes recorded, bad input refused whole."""

from __future__ import annotations

import copy
import hashlib
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.config import SpoolConfig, load_config
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.frames import ModelInfo
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool
from inspector.review.upload import Uploader
from inspector.sources.conveyor import ConveyorGenerator
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
T0 = 1_900_000_000.0  # 2030-03-17 UTC
NIGHT = "2030-03-17"
N = 6


def spool_and_upload(tmp_path: Path, destination: str, endpoint: str | None = None, task: str = "detect") -> Path:
    """N conveyor parts sampled with the model's boxes (each part's first true defect as a defect, an invented
    uncertain pit), judged by a model of kind `task`, uploaded; returns the line config."""
    spool = Spool(SpoolConfig(dir=tmp_path / "spool", max_bytes=1 << 30), alarm=lambda k, d: None)
    spool.open()
    gen = ConveyorGenerator(7)
    for i in range(N):
        part = gen.part(i)
        defects = tuple(make_defect(d.name, 0.8, d.box) for d in part.defects[:1])
        v = make_verdict(synth_frame(i, image=part.image, captured_wall=T0 + i),
                         outcome="REJECT" if defects else "PASS",
                         defects=defects, uncertain=(make_defect("pit", 0.4, (20.0, 30.0, 60.0, 70.0)),),
                         model=ModelInfo("demo", "1.1.0", "ab" * 32))
        reasons = ("uncertain",) if i % 2 else ("uncertain", "random_pass")
        spool.write(replace(v, task=task), SampleDecision(reasons, i, 0.0))
    cfg_path = tmp_path / "line.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"path": str(REPO / "models" / "demo")}, "mqtt": {"enabled": False},
        "spool": {"dir": str(tmp_path / "spool")},
        "upload": {"destination": destination, "endpoint_url": endpoint, "window": None, "retries": 1,
                   "backoff_s": 0.05}}))
    rep = Uploader(tmp_path / "spool", load_config(cfg_path).upload, gallery=False).run()
    assert rep.ok and rep.uploaded == N, rep.summary()
    return cfg_path


@pytest.fixture
def s3_night(tmp_path, s3_bucket, s3_server):
    return spool_and_upload(tmp_path, f"s3://{s3_bucket}/night", s3_server.endpoint_url)


@pytest.fixture
def file_night(tmp_path):
    return spool_and_upload(tmp_path, f"file://{tmp_path / 'uploads'}")


def export(cfg: Path, out: Path, to: str, *extra: str) -> int:
    return main(["review", "export", str(out), "--config", str(cfg), "--since", NIGHT, "--until", NIGHT, "--to", to,
                 *extra])


def test_labelstudio_tasks_point_at_the_uploaded_objects_with_the_models_boxes(tmp_path, s3_night, s3_bucket,
                                                                                s3_server):
    out = tmp_path / "review"
    assert export(s3_night, out, "labelstudio", "--publish") == 0
    tasks = json.loads((out / "tasks.json").read_text())
    review = json.loads((out / "review.json").read_text())
    assert len(tasks) == N and review["classes"] == ["scratch", "pit", "crack", "contamination"]
    for t, it in zip(tasks, review["items"], strict=True):
        # a presigned GET URL: fetched without credentials, the exact uploaded bytes
        assert "X-Amz-Signature=" in t["data"]["image"]
        body = urllib.request.urlopen(t["data"]["image"], timeout=10).read()
        assert hashlib.sha256(body).hexdigest() == it["image_sha256"] == t["data"]["image_sha256"]
        assert (out / "images" / f"{it['image_sha256']}.jpg").read_bytes() == body
        assert t["data"]["verdict"] in ("PASS", "REJECT") and t["data"]["reasons"].startswith("uncertain")
        pred = t["predictions"][0]
        assert pred["model_version"] == "demo 1.1.0"
        pit = pred["result"][-1]  # the uncertain pit at (20, 30, 60, 70) of 640x480, in percent
        assert pit["value"]["rectanglelabels"] == ["pit"] and pit["score"] == 0.4
        assert pit["value"]["x"] == pytest.approx(100 * 20 / 640)
        assert pit["value"]["height"] == pytest.approx(100 * 40 / 480)
    config = (out / "labeling_config.xml").read_text()
    assert ET.fromstring(config).find("RectangleLabels").get("toName") == "image"
    # --publish: the export sits beside the nights on the same server
    keys = s3_server.keys(s3_bucket, "night/reviews/")
    assert {k.rsplit("/", 1)[1] for k in keys} == {"tasks.json", "review.json", "labeling_config.xml"}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("spoil", ["signature", "expires", "other object"])
def test_a_tampered_presigned_url_is_refused(tmp_path, s3_night, spoil):
    out = tmp_path / "review"
    assert export(s3_night, out, "labelstudio", "--expires", "3600") == 0
    tasks = json.loads((out / "tasks.json").read_text())
    url = tasks[0]["data"]["image"]
    assert _get(url)[0] == 200
    if spoil == "signature":
        sig = url.rsplit("X-Amz-Signature=", 1)[1][:64]
        bad = url.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    elif spoil == "expires":
        bad = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=604800")  # a longer life than was signed
    else:  # the signature of one frame on another frame's key
        other = tasks[1]["data"]["image"]
        bad = other.split("?", 1)[0] + "?" + url.split("?", 1)[1]
    assert bad != url
    status, body = _get(bad)
    assert status == 403 and b"SignatureDoesNotMatch" in body, (status, body[:300])


def test_an_expired_presigned_url_is_refused(tmp_path, s3_night):
    out = tmp_path / "review"
    assert export(s3_night, out, "labelstudio", "--expires", "1") == 0
    url = json.loads((out / "tasks.json").read_text())[0]["data"]["image"]
    # The URL lives 1 s from its X-Amz-Date (whole seconds): wait for the server to call it expired.
    status, body = wait_for(lambda: (lambda r: r if r[0] != 200 else None)(_get(url)), timeout=30,
                            what="the presigned URL to expire")
    assert status == 403 and b"Request has expired" in body, (status, body[:300])


def test_file_destination_gives_label_studio_local_files_urls(tmp_path, file_night):
    out = tmp_path / "review"
    assert export(file_night, out, "labelstudio") == 0
    t = json.loads((out / "tasks.json").read_text())[0]
    assert t["data"]["image"].startswith(f"/data/local-files/?d={NIGHT}/")
    rel = t["data"]["image"].split("?d=")[1]
    assert (tmp_path / "uploads" / rel).is_file()


def reviewed(tasks: list[dict], edits: dict[int, str]) -> list[dict]:
    """A Label Studio export as the server writes it after review: the pre-annotation copied into an annotation
    (what the editor does when the reviewer starts from the prediction), then edited."""
    out = []
    for k, t in enumerate(copy.deepcopy(tasks)):
        result = t["predictions"][0]["result"]
        edit = edits.get(k, "confirm")
        ann = {"id": 100 + k, "was_cancelled": edit == "skip", "result": [] if edit == "skip" else result}
        if edit == "delete":
            ann["result"] = result[:-1]  # the uncertain pit was not a pit
        if edit == "add":
            value = {**result[-1]["value"], "x": 50.0, "y": 50.0, "width": 5.0, "height": 4.0,
                     "rectanglelabels": ["crack"]}
            ann["result"] = result + [{**result[-1], "id": "new", "value": value}]
        out.append({"id": 1 + k, "data": t["data"], "annotations": [] if edit == "none" else [ann],
                    "predictions": [7]})
    return out


def test_reviewed_label_studio_export_records_what_the_reviewer_did(tmp_path, file_night, capsys):
    out = tmp_path / "review"
    assert export(file_night, out, "labelstudio") == 0
    tasks = json.loads((out / "tasks.json").read_text())
    (out / "reviewed.json").write_text(json.dumps(reviewed(tasks, {1: "delete", 2: "add", 3: "skip", 4: "none"})))
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "labelstudio", str(out / "reviewed.json"), "--out", str(ds)]) == 0
    meta = json.loads((ds / "dataset.json").read_text())
    r = meta["source"]["review"]
    assert meta["classes"] == ["scratch", "pit", "crack", "contamination"]  # model order, not sorted names
    assert r["outcomes"] == {"confirmed": 2, "corrected": 2, "skipped": 1, "unreviewed": 1}
    assert r["boxes"]["deleted"] == 1 and r["boxes"]["added"] == 1 and r["per_class"]["pit"]["deleted"] == 1
    assert r["per_class"]["crack"]["added"] == 1 and r["imported"] == 4
    assert sum(c["images"] for c in meta["counts"].values()) == 4  # skipped and unreviewed frames stay out
    by = {i["id"]: i for i in r["items"]}
    assert all(i["part_id"].startswith("S7-") for i in by.values())
    assert "deleted (false positives) 1, added (misses) 1" in capsys.readouterr().out


@pytest.mark.parametrize("to", ["cvat", "yolo"])
def test_cvat_and_yolo_exports_come_back_as_confirmations_when_untouched(tmp_path, file_night, to):
    out = tmp_path / "review"
    assert export(file_night, out, to) == 0
    if to == "cvat":
        root = ET.parse(out / "annotations.xml").getroot()
        assert root.findtext("version") == "1.1" and len(root.findall("image")) == N
        assert {b.get("source") for b in root.iter("box")} == {"auto"}
        src = out / "annotations.xml"
    else:
        assert (out / "classes.txt").read_text().split() == ["scratch", "pit", "crack", "contamination"]
        src = out
        # the reviewer removes one frame from the folder: not reviewed, not imported
        victim = sorted((out / "images").iterdir())[0]
        victim.unlink()
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", to, str(src), "--out", str(ds)]) == 0
    r = json.loads((ds / "dataset.json").read_text())["source"]["review"]
    assert r["boxes"]["deleted"] == r["boxes"]["added"] == 0
    assert r["outcomes"] == ({"confirmed": N} if to == "cvat" else {"confirmed": N - 1, "unreviewed": 1})


def _bad_foreign_image(tasks):
    tasks[2]["data"]["image"] = "/data/local-files/?d=elsewhere/not-uploaded.jpg"
    return "task 3", "not in the upload"


def _bad_unknown_class(tasks):
    tasks[1]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["dent"]
    return "task 2", "'dent'"


def _bad_zero_area(tasks):
    tasks[4]["annotations"][0]["result"][-1]["value"]["width"] = 0
    return "task 5", "zero area"


@pytest.mark.parametrize("spoil", [_bad_foreign_image, _bad_unknown_class, _bad_zero_area, "truncate"])
def test_bad_review_exports_are_refused_whole_naming_the_task(tmp_path, file_night, capsys, spoil):
    out = tmp_path / "review"
    assert export(file_night, out, "labelstudio") == 0
    tasks = reviewed(json.loads((out / "tasks.json").read_text()), {})
    if spoil == "truncate":
        text = json.dumps(tasks, indent=1)
        cut = text.index('"id": 4,')
        (out / "reviewed.json").write_text(text[:cut + 40])
        where, why = "task 4 is cut off", "truncated"
    else:
        where, why = spoil(tasks)
        (out / "reviewed.json").write_text(json.dumps(tasks))
    ds = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "labelstudio", str(out / "reviewed.json"), "--out", str(ds)]) == 2
    err = capsys.readouterr().err
    assert where in err and why in err, err
    assert not ds.exists() and not list(tmp_path.glob(".ds.tmp-*"))  # nothing half-written


def test_a_cvat_export_with_another_label_set_is_refused(tmp_path, file_night, capsys):
    out = tmp_path / "review"
    assert export(file_night, out, "cvat") == 0
    xml = (out / "annotations.xml").read_text().replace("<name>contamination</name>", "<name>dent</name>")
    (out / "annotations.xml").write_text(xml)
    rc = main(["dataset", "import", "--from", "cvat", str(out / "annotations.xml"), "--out", str(tmp_path / "d")])
    assert rc == 2
    assert "['dent']" in capsys.readouterr().err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("args, why", [
    (["--since", "2030-03-20", "--until", "2030-03-21"], "no uploaded samples"),
    (["--since", "2030-03-20", "--until", "2030-03-19"], "is before --since"),
    (["--since", "20300317"], "expected a date YYYY-MM-DD"),
])
def test_bad_date_ranges_exit_2(tmp_path, file_night, capsys, args, why):
    rc = main(["review", "export", str(tmp_path / "r"), "--config", str(file_night), "--to", "yolo", *args])
    assert rc == 2 and why in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_night_judged_by_another_model_kind_than_the_configs_is_refused_naming_both(tmp_path, capsys):
    """Samples whose pre-labels are a classifier's (sidecar labels.format 'classes') under a config whose model is
    a detector are refused naming both kinds, not exported with the detector's classes (test_cls_export.py has the
    classifier's own review export)."""
    cfg = spool_and_upload(tmp_path, f"file://{tmp_path / 'uploads'}", task="classify")
    assert export(cfg, tmp_path / "out", "labelstudio") == 2
    err = capsys.readouterr().err
    assert "the samples are a classify model's (pre-labels 'classes'), the config's model" in err
    assert "is a detect bundle" in err
    assert not (tmp_path / "out").exists()
