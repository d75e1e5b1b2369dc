"""Nothing in the tool chain tries the network: training, export, quantization and evaluation run
in child processes whose every non-loopback connect or DNS lookup is refused and recorded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")

REPO = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).parents[1] / "offline_guard"


def run_guarded(args, tmp_path, log):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD), str(REPO)])
    env["INSPECTOR_NET_LOG"] = str(log)
    env.pop("YOLO_OFFLINE", None)  # prove our own set-up turns it on, not the test environment
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "ucfg")
    return subprocess.run([sys.executable, "-m", "inspector", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


@pytest.mark.train
@pytest.mark.slow
def test_train_export_quantize_eval_never_touch_the_network(tmp_path):
    log = tmp_path / "net.log"
    r = run_guarded(["train", "--out", str(tmp_path / "t"), "--epochs", "1", "--n-train", "8", "--n-val", "4",
                     "--imgsz", "64", "--batch", "4"], tmp_path, log)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    xml = tmp_path / "t" / "fp32" / "model.xml"
    assert xml.exists()
    r = run_guarded(["synth", "--out", str(tmp_path / "cal"), "--n", "6", "--seed", "3"], tmp_path, log)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_guarded(["quantize", "--model", str(xml), "--calibration", str(tmp_path / "cal" / "images"),
                     "--out", str(tmp_path / "q" / "model.xml"), "--imgsz", "64"], tmp_path, log)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_guarded(["eval", "--model", str(tmp_path / "q" / "model.xml"), "--n", "4", "--seed", "9"], tmp_path, log)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mAP50" in r.stdout
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"network attempts:\n{attempts}"


def test_the_guard_catches_an_attempt(tmp_path):
    """The guard itself must be able to fail, or the test above proves nothing."""
    log = tmp_path / "net.log"
    env = dict(os.environ, PYTHONPATH=str(GUARD), INSPECTOR_NET_LOG=str(log))
    code = ("import socket\ntry:\n    socket.create_connection(('203.0.113.7', 443), timeout=1)\n"
            "except OSError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert "offline guard" in r.stdout
    assert "203.0.113.7" in log.read_text()
