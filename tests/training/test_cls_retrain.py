"""`inspector retrain` of a classifier bundle: models/demo-cls fine-tuned for one epoch on a dataset version made
through the CLI (tests/training/test_cls_compare.make_version), the candidate's card (task, classes, parent,
retrain record, the parent's accuracy control), then `inspector compare` of parent and candidate on the frozen
regression set; and what retrain refuses for a classifier before any training (exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.cli import main
from tests.training.cls_folders import make_folders
from tests.training.test_cls_compare import DEMO_CLS, make_version
from tests.training.test_merge import make_dataset

REPO = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).parents[1] / "offline_guard"  # the training tools' no-network guard (test_offline.py)


@pytest.mark.train
@pytest.mark.slow
def test_retrain_of_demo_cls_makes_a_candidate_that_compare_takes(tmp_path):
    pytest.importorskip("ultralytics")
    data = make_version(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]),
               INSPECTOR_NET_LOG=str(tmp_path / "net.log"), YOLO_CONFIG_DIR=str(tmp_path / "ucfg"))
    r = subprocess.run([sys.executable, "-m", "inspector", "retrain", "--from", str(DEMO_CLS), "--data", str(data),
                        "--out", str(tmp_path / "cand"), "--epochs", "1", "--batch", "8", "--workers", "0",
                        "--work", str(tmp_path / "w"), "--version", "0.1.1-rc.1"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    card = json.loads((tmp_path / "cand" / "model_card.json").read_text())
    parent = json.loads((DEMO_CLS / "model_card.json").read_text())
    assert card["task"] == "classify" and card["classes"] == ["ng", "ok"] and card["pass_class"] == "ok"
    assert card["version"] == "0.1.1-rc.1" and card["input_size"] == parent["input_size"]
    assert card["parent"]["version"] == "0.1.0" and card["parent"]["thresholds"] == parent["thresholds"]
    assert card["parent"]["card_sha256"] == hashlib.sha256((DEMO_CLS / "model_card.json").read_bytes()).hexdigest()
    meta = json.loads((data / "dataset.json").read_text())
    assert card["retrain"]["dataset_version"]["regression_sha256"] == meta["regression"]["sha256"]
    assert card["retrain"]["from_weights_sha256"] == parent["float_weights"]["sha256"]
    # the parent's INT8 accuracy control (max top-1 drop) kept
    assert card["retrain"]["max_drop"] == parent["quantization"]["accuracy_control"]["max_drop_top1_accuracy"]
    assert card["evaluation"]["split"]["split"] == "test" and card["evaluation"]["split"]["held_out"]
    assert main(["compare", str(DEMO_CLS), str(tmp_path / "cand"), "--data", str(data), "--json",
                 str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["regression_frozen"] and c["sets"]["regression"]["images"] == 16
    assert c["new"]["version"] == "0.1.1-rc.1" and c["new"]["thresholds"] == card["thresholds"]


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
