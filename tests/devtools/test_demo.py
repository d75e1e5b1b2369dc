"""`inspector demo` end to end, as `make demo` runs it: private broker, actuator, the service on
the synthetic line, the spool, and the upload with its manifest and gallery."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.devtools.broker import mosquitto_available

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
def test_demo_runs_the_whole_line(tmp_path):
    env = dict(os.environ, INSPECTOR_MODEL__PATH=str(REPO / "models" / "demo"))
    r = subprocess.run([sys.executable, "-m", "inspector", "demo", "--config", str(REPO / "configs" / "demo.yaml"),
                        "--frames", "120"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    summary = json.loads((tmp_path / "var/demo/summary.json").read_text())
    assert summary["frames"] == 120 and summary["actuations"] > 0
    # The actuator on the line side received rejects with ids, deduplicated.
    m = re.search(r"summary: rejects actuated (\d+); duplicates (\d+)", out)
    assert m and int(m.group(1)) > 0, out[-3000:]
    # Sampled frames left the spool for the destination: manifest lines carry their reasons, and the gallery exists.
    day = next((tmp_path / "var/demo/uploads").iterdir())
    lines = [json.loads(x) for x in (day / "manifest.jsonl").read_text().splitlines()]
    assert lines and all(x["reasons"] and x["verdict"] and x["model"] for x in lines)
    gallery = (day / "gallery.html").read_text()
    assert gallery.count("data:image/jpeg;base64,") >= 1  # self-contained thumbnails
