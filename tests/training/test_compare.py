"""`inspector compare`: the McNemar test on changed part verdicts, and a comparison of the real models/demo with
itself (nothing changes: not significant, zero counts) on a merged dataset's regression set and reviewed frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from inspector.cli import main
from inspector.sources.conveyor import ConveyorGenerator
from inspector.training.compare import mcnemar, recommend
from inspector.training.compare_detect import TASK as DETECT
from inspector.training.dataset_import import write_description
from tests.training.test_merge import image, make_dataset

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["scratch", "pit", "crack", "contamination"]


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (0, 6, 2 / 64),  # all six discordant frames fixed: p = 2 * 0.5^6
    (3, 3, 1.0),
    (1, 9, 2 * 11 / 1024),
    (9, 1, 2 * 11 / 1024),
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar(b, c) == pytest.approx(p)


def test_recommendation_is_worse_when_any_set_is_significantly_worse():
    def s(b, c, verdict):
        parts = {"escapes": 0, "false_rejects": 0}
        return {"images": 20, "verdict": verdict, "mcnemar": {"b_old_right_new_wrong": b, "c_old_wrong_new_right": c,
                                                              "p": mcnemar(b, c)},
                "old": {"parts": parts, "mAP50": 0.5}, "new": {"parts": parts, "mAP50": 0.6}}
    assert recommend({"regression": s(9, 0, "worse"), "new": s(0, 9, "better")}, 0.05, DETECT).startswith("WORSE")
    assert recommend({"regression": s(1, 1, "not significant"), "new": s(0, 9, "better")}, 0.05,
                     DETECT).startswith("BETTER")
    assert "fixes 9 part verdict(s) and breaks 0" in recommend({"new": s(0, 9, "better")}, 0.05, DETECT)


def test_demo_against_itself_changes_nothing(tmp_path, capsys):
    root = tmp_path / "v2"
    gen = ConveyorGenerator(4242)
    rows = []
    for split, idx in (("test", range(0, 6)), ("val", range(6, 12))):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in idx:
            part = gen.part(i)
            cv2.imwrite(str(root / "images" / split / f"p{i}.jpg"), part.image)
            (root / "labels" / split / f"p{i}.txt").write_text(part.yolo_labels())
            rows.append({"split": split, "file": f"p{i}.jpg", "sha256": str(i), "group": part.part_id,
                         "source": "review:2030-03-17..2030-03-17" if split == "val" else "synth:base"})
    write_description(root, CLASSES, {"format": "test"}, {"kind": "test"})
    (root / "members.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    demo = str(REPO / "models" / "demo")
    assert main(["compare", demo, demo, "--data", str(root), "--html", str(tmp_path / "c.html"), "--json",
                 str(tmp_path / "c.json")]) == 0
    r = json.loads((tmp_path / "c.json").read_text())
    assert r["new_source"] == "review:2030-03-17..2030-03-17"
    for s in r["sets"].values():
        assert s["images"] == 6 and s["changed"] == [] and s["verdict"] == "not significant"
        assert s["mcnemar"] == {"b_old_right_new_wrong": 0, "c_old_wrong_new_right": 0, "p": 1.0}
        assert s["old"]["mAP50"] == s["new"]["mAP50"]
    assert r["recommendation"].startswith("NOT SIGNIFICANT")
    assert "recommendation: NOT SIGNIFICANT" in capsys.readouterr().out
    assert (tmp_path / "c.html").read_text().startswith("<!DOCTYPE html>")


def test_compare_refuses_a_dataset_with_nothing_to_compare_on(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    write_description(root, CLASSES, {"format": "test"}, {"kind": "test"})
    demo = str(REPO / "models" / "demo")
    assert main(["compare", demo, demo, "--data", str(root)]) == 2
    assert "no regression set" in capsys.readouterr().err


def _regression_edit(v2: Path, how: str) -> str:
    """Edits v2's frozen regression set as a user might; returns the file the refusal must name."""
    first = sorted((v2 / "images" / "test").iterdir())[0]
    label = v2 / "labels" / "test" / (first.stem + ".txt")
    if how == "image deleted":
        first.unlink()
    elif how == "image changed":
        first.write_bytes(image(999))
    elif how == "image added":
        (v2 / "images" / "test" / "extra.png").write_bytes(image(998))
        (v2 / "labels" / "test" / "extra.txt").write_text("1 0.5 0.5 0.2 0.2\n")
        return "images/test/extra.png: added"
    elif how == "label changed":
        label.write_text("3 0.5 0.5 0.9 0.9\n")
    elif how == "label deleted":
        label.unlink()
    return {"image deleted": f"images/test/{first.name}: deleted", "image changed": f"images/test/{first.name}: image "
            "changed"}.get(how, f"labels/test/{label.name}: label changed or deleted")


@pytest.mark.parametrize("how", ["intact", "image deleted", "image changed", "image added", "label changed",
                                 "label deleted"])
def test_compare_runs_only_on_the_frozen_regression_set(tmp_path, capsys, how):
    base = make_dataset(tmp_path / "base", {"train": list(range(12)), "val": [12, 13]})
    new = make_dataset(tmp_path / "new", {"train": [20, 21]}, review_parts={20: "P20", 21: "P21"})
    v2 = tmp_path / "v2"
    assert main(["dataset", "merge", str(base), str(new), "--out", str(v2), "--regression-fraction", "0.4"]) == 0
    recorded = json.loads((v2 / "dataset.json").read_text())["regression"]
    assert recorded["images"] >= 2
    named = None if how == "intact" else _regression_edit(v2, how)
    demo = str(REPO / "models" / "demo")
    rc = main(["compare", demo, demo, "--data", str(v2), "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr()
    if how == "intact":
        assert rc == 0, out.err
        r = json.loads((tmp_path / "c.json").read_text())
        assert r["regression_sha256"] == recorded["sha256"] and r["regression_frozen"] is True
        assert r["sets"]["regression"]["images"] == recorded["images"]
        assert "frozen regression set, sha256 verified" in out.out
    else:
        assert rc == 2, out.out
        assert "regression set" in out.err and named in out.err, out.err
        assert not (tmp_path / "c.json").exists()
