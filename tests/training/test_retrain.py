"""`inspector retrain` refuses what cannot make a candidate, before any training: a parent without float weights
(a bundle built before bundles kept model.pt, as demo 1.1.0), a dataset with other classes, a candidate over its
parent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inspector.cli import main
from tests.training.test_merge import CLASSES, make_dataset

pytest.importorskip("ultralytics")


def bundle_without_float_weights(dst: Path) -> Path:
    shutil.copytree("models/demo", dst, ignore=shutil.ignore_patterns("model.pt"))
    card = json.loads((dst / "model_card.json").read_text())
    card["float_weights"] = None
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    return dst


@pytest.mark.parametrize("case, why", [
    ("no_weights", "holds no float weights"),
    ("missing_weights_file", "--weights"),
    ("classes", "a candidate keeps its parent's classes"),
    ("onto_parent", "never overwrites the bundle in service"),
])
def test_retrain_refuses_bad_input_with_exit_2(tmp_path, capsys, case, why):
    ds = make_dataset(tmp_path / "ds", {"train": [1, 2, 3], "val": [4]},
                      classes=CLASSES[::-1] if case == "classes" else CLASSES)
    out = str(tmp_path / "cand")
    parent = bundle_without_float_weights(tmp_path / "old") if case in ("no_weights", "missing_weights_file") \
        else "models/demo"
    if case == "onto_parent":  # a copy: were the check to regress, the shipped bundle stays untouched
        parent = out = str(shutil.copytree("models/demo", tmp_path / "parent"))
        before = {p.name: p.read_bytes() for p in Path(parent).iterdir()}
    args = ["retrain", "--from", str(parent), "--data", str(ds), "--out", out, "--work", str(tmp_path / "w")]
    if case == "missing_weights_file":
        args += ["--weights", str(tmp_path / "nope.pt")]
    if case == "onto_parent":
        args += ["--weights", __file__]  # any file: the check on --out comes first
    assert main(args) == 2
    assert why in capsys.readouterr().err
    assert not (tmp_path / "cand").exists() and not (tmp_path / "w").exists()
    if case == "onto_parent":
        assert {p.name: p.read_bytes() for p in Path(parent).iterdir()} == before
