"""Issue 14's tools as a plant runs them: `inspector eval --perturb` (a model on altered copies of a set) and
`inspector model envelope` (the drift guard's envelope written into a bundle's card, sha256 entries intact)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.bundle.load import load_bundle

REPO = Path(__file__).resolve().parents[2]


def inspector(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector", *args], capture_output=True, text=True, timeout=300,
                          check=False, cwd=REPO)


def test_eval_perturb_reports_each_family(tmp_path):
    out = tmp_path / "eval.json"
    r = inspector("eval", "--model", "models/demo", "--n", "12", "--seed", "5005", "--perturb", "none,blur",
                  "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [x["family"] for x in rows] == ["none", "blur"]
    assert all(0 <= x["mAP50"] <= 1 and 0 <= x["escape_rate"] <= 1 for x in rows)
    assert "| blur (sigma 1.2-2) |" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["eval", "--perturb", "sepia"], "--perturb: expected 'all', 'issue' or names"),
    (["model", "envelope", "models/demo", "--families", "sepia"], "--perturb: expected"),
    (["model", "envelope", "models/demo", "--roi", "1,2,3"], "--roi: expected x0,y0,x1,y1"),
])
def test_bad_input_exits_2_naming_it(args, message):
    r = inspector(*args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]


def test_model_envelope_writes_the_card_and_keeps_it_loadable(tmp_path):
    bundle = tmp_path / "demo"
    shutil.copytree(REPO / "models/demo", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    card.pop("input_envelope", None)
    (bundle / "model_card.json").write_text(json.dumps(card, indent=2))
    r = inspector("model", "envelope", str(bundle), "--n", "16", "--families", "blur", "--roi", "40,40,600,440")
    assert r.returncode == 0, r.stderr[-2000:]
    load_bundle(bundle)  # every sha256 entry still matches its file
    got = json.loads((bundle / "model_card.json").read_text())
    env = got["input_envelope"]
    assert env["roi"] == [40, 40, 600, 440] and env["source"]["families"] == ["blur"] and env["source"]["n"] == 16
    assert env["confidence"]["frames"] == 16
    assert {k: v for k, v in got.items() if k != "input_envelope"} == card  # nothing else in the card changed
