"""What `inspector retrain` refuses for a classifier bundle before any training (exit 2). The retrain itself (demo-cls
fine-tuned for one epoch, the candidate's card: task, classes, parent, retrain record, the parent's accuracy
control; `compare` of parent and candidate on the frozen regression set) is proved by
tests/test_cls_retraining_loop.py, which runs the same command through the CLI on its merged version: a second
retrain here cost ~16 s of a quiet 2-core run for the same proof."""

from __future__ import annotations

import shutil

import pytest

from inspector.cli import main
from tests.training.cls_folders import make_folders
from tests.training.test_cls_compare import DEMO_CLS
from tests.training.test_merge import make_dataset


@pytest.mark.parametrize("case, why", [
    ("classes", "a candidate keeps its parent's classes"),
    ("detect data", "task is 'detect', expected 'classify'"),
    ("onto parent", "never overwrites the bundle in service"),
])
def test_retrain_of_a_classifier_refuses_bad_input_with_exit_2(tmp_path, capsys, case, why):
    parent, out = str(DEMO_CLS), str(tmp_path / "cand")
    if case == "detect data":
        ds = make_dataset(tmp_path / "ds", {"train": [1, 2, 3], "val": [4]})
    else:
        make_folders(tmp_path / "src", {"ok": 6, "scratch": 6} if case == "classes" else {"ok": 6, "ng": 6})
        ds = tmp_path / "ds"
        assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(ds)]) == 0
    if case == "onto parent":  # a copy: were the check to regress, the shipped bundle stays untouched
        parent = out = str(shutil.copytree(DEMO_CLS, tmp_path / "parent"))
    capsys.readouterr()
    assert main(["retrain", "--from", parent, "--data", str(ds), "--out", out, "--work", str(tmp_path / "w")]) == 2
    assert why in capsys.readouterr().err
    assert not (tmp_path / "cand").exists() and not (tmp_path / "w").exists()
