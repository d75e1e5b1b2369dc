"""`inspector quantize` options that decide INT8 speed on CPUs without VNNI: which convolutions stay in
float (`--head-float`, `--keep-float`), the preset and NNCF's overflow fix, recorded in quantization.json
(the model card's `quantization`); bad combinations are refused with exit 2 naming the option.
Real NNCF on the demo model's FP32 IR, calibrated on a handful of synthetic frames."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nncf")

REPO = Path(__file__).resolve().parents[2]
FP32 = REPO / "models" / "demo" / "model_fp32.xml"
HEAD_OUT = tuple(f"__module.model.22.{b}.{i}.2/" for b in ("cv2", "cv3") for i in range(3))
NECK_CONV = "__module.model.16.conv/"


def cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    r = cli(d, "synth", "--out", d / "cal", "--n", "6", "--seed", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "cal" / "images"


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.parametrize(("args", "float_prefixes", "recorded"), [
    # every convolution in INT8 but the DFL decode; symmetric activations, 7-bit weights everywhere
    (("--head-float", "none", "--preset", "performance", "--overflow-fix", "enable"), (),
     {"preset": "performance", "overflow_fix": "enable", "head_convs_float": "none"}),
    # the shipped recipe (preset, overflow fix and the head's six 1x1 output convs, and the DFL decode, in float)
    # with one more layer kept in float by name: exactly those 7 + DFL in float, so a default that kept another
    # conv in float, or lost a head conv, fails here too (the shipped recipe alone was a case of its own, ~6 s of a
    # quiet 2-core run for the same path)
    (("--keep-float", NECK_CONV), HEAD_OUT + (NECK_CONV,),
     {"preset": "mixed", "overflow_fix": "first_layer", "head_convs_float": "last", "keep_float": [NECK_CONV]}),
])
def test_float_scope_and_recipe_are_what_was_asked(tmp_path, calibration, args, float_prefixes, recorded):
    out = tmp_path / "q" / "model.xml"
    r = cli(tmp_path, "quantize", "--model", FP32, "--calibration", calibration, "--out", out, *args)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    info = json.loads((out.parent / "quantization.json").read_text())
    floats = info["float_convolutions"]
    dfl = [n for n in floats if n.startswith("__module.model.22.dfl")]
    assert len(dfl) == 1  # the box decoding's fixed conv is never quantized
    others = sorted(set(floats) - set(dfl))
    assert len(others) == len(float_prefixes)
    assert all(any(n.startswith(p) for n in others) for p in float_prefixes), others
    for key, value in recorded.items():
        assert info[key] == value, key


@pytest.mark.train
@pytest.mark.parametrize(("args", "message"), [
    (("--keep-float", "__module.model.99.conv/"), "--keep-float ['__module.model.99.conv/']: no op"),
    (("--max-float-groups", "3"), "--max-float-groups 3: needs --max-drop"),
])
def test_bad_options_are_named(tmp_path, calibration, args, message):
    r = cli(tmp_path, "quantize", "--model", FP32, "--calibration", calibration, "--out", tmp_path / "q.xml", *args)
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    assert message in r.stderr
    assert not (tmp_path / "q.xml").exists()
