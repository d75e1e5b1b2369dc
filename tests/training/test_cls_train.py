"""The classify tool chain through the real CLI: dataset import --from folders -> train --task classify ->
quantize (NNCF accuracy control) -> model build (card task: classify) -> eval, on generated 48-px tiles at a
32-px input, built once for the module (about a minute of CPU); then --resume, --init (a classifier's weights,
or a detector's backbone) and a refusal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.bundle.card import read_card
from inspector.cli import main
from tests.training.cls_folders import make_folders
from tests.training.test_offline import GUARD, REPO

pytest.importorskip("ultralytics")
pytestmark = [pytest.mark.train, pytest.mark.slow]


def inspector(cwd: Path, *args, rc: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]),
               INSPECTOR_NET_LOG=str(cwd / "net.log"), YOLO_CONFIG_DIR=str(cwd / "ucfg"))
    r = subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=cwd, timeout=600)
    assert r.returncode == rc, (r.stdout + r.stderr)[-3000:]
    return r


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    make_folders(tmp / "src", {"ok": 36, "ng": 24})
    # in-process where no torch/ultralytics is involved (each subprocess pays their import, ~3 s of CPU)
    assert main(["dataset", "import", "--from", "folders", str(tmp / "src"), "--out", str(tmp / "ds"),
                 "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    data = tmp / "ds" / "data.yaml"
    r = inspector(tmp, "train", "--task", "classify", "--data", data, "--out", tmp / "run", "--imgsz", 32,
                  "--epochs", 2, "--batch", 8, "--workers", 0)
    assert "[inspector train] epoch 2/2  val accuracy" in r.stdout
    inspector(tmp, "quantize", "--model", tmp / "run" / "fp32" / "model.xml", "--data", data,
              "--out", tmp / "int8" / "model.xml", "--max-drop", 0.05)
    assert main(["model", "build", "--fp32", str(tmp / "run" / "fp32" / "model.xml"), "--int8",
                 str(tmp / "int8" / "model.xml"), "--data", str(data), "--out", str(tmp / "bundle"), "--name", "tiles",
                 "--version", "0.0.1", "--target-recall", "0.9", "--command", "tests/training/test_cls_train.py"]) == 0
    return tmp


def test_the_bundle_card_says_classify_with_calibrated_thresholds_and_both_precisions(chain):
    card, raw, _ = read_card(chain / "bundle")
    assert card.task == "classify" and card.classes == ["ng", "ok"] and card.pass_class == "ok"
    assert card.input_size == (32, 32) and card.input_channels == 3
    assert card.thresholds["ok"] == 1.0 and 0 < card.thresholds["ng"] <= 1
    cal = raw["threshold_calibration"]
    assert cal["target_recall"] == 0.9 and cal["recall_reached"]["ng"] >= 0.9
    ev = raw["evaluation"]
    assert ev["split"]["split"] == "test" and ev["split"]["held_out"]
    for p in ("fp32", "int8"):
        assert set(ev[p]) >= {"accuracy", "ng_recall", "escapes", "false_rejects", "roc_auc", "recall_per_class",
                              "confusion_matrix"}
        assert ev[p]["images"] == 15 and ev[p]["ng_images"] == 6
    assert raw["quantization"]["task"] == "classify" and raw["quantization"]["accuracy_control"]
    assert raw["training"]["task"] == "classify" and raw["training"]["pass_class"] == "ok"
    assert raw["dataset"]["content_sha256"] == json.loads((chain / "ds" / "dataset.json").read_text())["sha256"][
        "content"]
    assert not (chain / "net.log").exists() or (chain / "net.log").read_text() == ""


def test_eval_at_the_card_thresholds_gives_the_card_figures(chain):
    assert main(["eval", "--model", str(chain / "bundle"), "--data", str(chain / "ds" / "data.yaml"), "--compare",
                 "--json", str(chain / "eval.json")]) == 0
    got = json.loads((chain / "eval.json").read_text())
    _, raw, _ = read_card(chain / "bundle")
    assert got["split"] == "test"
    for p in ("fp32", "int8"):
        assert got[p] == raw["evaluation"][p]


def test_resume_of_a_finished_run_exports_it_again(chain):
    before = json.loads((chain / "run" / "progress.json").read_text())
    r = inspector(chain, "train", "--resume", "--out", chain / "run")
    assert "already finished all its epochs" in r.stdout
    assert json.loads((chain / "run" / "progress.json").read_text()) == before
    assert json.loads((chain / "run" / "train_info.json").read_text())["resumed"] is True


def test_init_starts_from_the_given_classifier_weights(chain, tmp_path):
    inspector(tmp_path, "train", "--task", "classify", "--data", chain / "ds" / "data.yaml", "--out", tmp_path / "r",
              "--init", chain / "run" / "best.pt", "--imgsz", 32, "--epochs", 1, "--batch", 8, "--workers", 0,
              "--lr0", 1e-6)
    assert json.loads((tmp_path / "r" / "train_plan.json").read_text())["init"] == str(chain / "run" / "best.pt")
    # at a learning rate of 1e-6 one epoch leaves the weights where they were: the same val accuracy
    first = json.loads((chain / "run" / "progress.json").read_text())["best"]["accuracy"]
    assert json.loads((tmp_path / "r" / "progress.json").read_text())["accuracy"] == pytest.approx(first, abs=0.07)


def test_init_from_a_detector_takes_its_backbone(chain, tmp_path):
    r = inspector(tmp_path, "train", "--task", "classify", "--data", chain / "ds" / "data.yaml", "--out",
                  tmp_path / "r", "--init", REPO / "models" / "demo" / "model.pt", "--imgsz", 32, "--epochs", 1,
                  "--batch", 8, "--workers", 0)
    # YOLOv8n-cls layers 0-8 are YOLOv8n's backbone: every one of their tensors is taken over, the head is new
    assert "a detector; its backbone initialises the classifier (150 tensors taken over)" in r.stdout
    assert (tmp_path / "r" / "fp32" / "model.xml").exists()


def test_a_dataset_of_other_classes_is_refused(chain, tmp_path, capsys):
    make_folders(tmp_path / "other", {"good": 4, "dent": 4})
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "other"), "--out", str(tmp_path / "ods"),
                 "--val-fraction", "0.5"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(chain / "bundle"), "--data", str(tmp_path / "ods" / "data.yaml")]) == 2
    err = capsys.readouterr().err
    assert "has classes ['ng', 'ok']" in err and "['dent', 'good']" in err


def test_eval_perturb_judges_altered_copies_at_the_card_thresholds(chain, capsys):
    data = str(chain / "ds" / "data.yaml")
    assert main(["eval", "--model", str(chain / "bundle"), "--data", data, "--perturb", "none,darker,blur",
                 "--json", str(chain / "perturb.json")]) == 0
    rows = {r["family"]: r for r in json.loads((chain / "perturb.json").read_text())["rows"]}
    _, raw, _ = read_card(chain / "bundle")
    assert list(rows) == ["none", "darker", "blur"]
    assert rows["none"]["accuracy"] == raw["evaluation"]["int8"]["accuracy"]  # unaltered: the card's figure
    assert main(["eval", "--model", str(chain / "bundle"), "--data", data, "--perturb", "fog"]) == 2
    assert "--perturb: expected" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--perturb", "none,blur"]], ids=["eval", "eval-perturb"])
def test_a_split_the_dataset_lacks_is_named_exit_2(chain, tmp_path, capsys, extra):
    """eval and eval --perturb refuse a split the dataset does not have (before: --perturb stacked no images
    and failed with a traceback, exit 1)."""
    make_folders(tmp_path / "src", {"ok": 4, "ng": 4})
    assert main(["dataset", "import", "--from", "folders", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                 "--val-fraction", "0.5"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(chain / "bundle"), "--data", str(tmp_path / "ds" / "data.yaml"),
                 "--split", "test", *extra]) == 2
    assert "has no split 'test' (has ['train', 'val'])" in capsys.readouterr().err
