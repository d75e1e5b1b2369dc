"""`inspector train --init WEIGHTS.pt` starts from those weights (issue 11; `retrain` builds on it).

ultralytics 8.4 loads a .pt's weights into the trainer's model only with `pretrained=True`; with False it
trains the .pt's architecture from random weights, silently. One epoch at a tiny learning rate from the
shipped demo weights must therefore still detect the synthetic line's defects (a random start gives mAP50
0.000 after one epoch: measured), and the run's plan must name the weights it started from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_offline import GUARD, REPO

pytest.importorskip("ultralytics")

DEMO_PT = REPO / "models" / "demo" / "model.pt"


def inspector(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]),
               INSPECTOR_NET_LOG=str(tmp_path / "net.log"), YOLO_CONFIG_DIR=str(tmp_path / "ucfg"))
    r = subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


@pytest.mark.train
@pytest.mark.slow
def test_init_fine_tunes_from_the_given_weights(tmp_path):
    ds = tmp_path / "ds"
    for split, n, seed in (("train", 32, 1001), ("val", 32, 2002)):
        inspector(tmp_path, "synth", "--out", ds, "--split", split, "--n", n, "--seed", seed)
    out = tmp_path / "run"
    inspector(tmp_path, "train", "--data", ds / "data.yaml", "--init", DEMO_PT, "--out", out, "--epochs", 1,
              "--imgsz", 256, "--batch", 16, "--workers", 0, "--lr0", 1e-5)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["epoch"] == 1 and progress["mAP50"] > 0.5, progress
    assert json.loads((out / "train_plan.json").read_text())["init"] == str(DEMO_PT)
    assert not (tmp_path / "net.log").exists() or (tmp_path / "net.log").read_text() == ""
