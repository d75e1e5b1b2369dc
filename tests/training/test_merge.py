"""`inspector dataset merge`: versions without duplicates, groups in one split, a regression set that never
changes, counts per source; bad input exits 2 with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.cli import main
from inspector.training.dataset_import import write_description
from inspector.training.merge import MEMBERS
from tests.traced_peak import cli_peak

CLASSES = ["scratch", "pit", "crack", "contamination"]


def image(k: int) -> bytes:
    img = np.full((48, 64, 3), 40 + k % 200, np.uint8)
    cv2.putText(img, str(k), (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return cv2.imencode(".png", img)[1].tobytes()


def make_dataset(root: Path, splits: dict[str, list[int]], label: str = "0 0.5 0.5 0.2 0.2\n",
                 review_parts: dict[int, str] | None = None, classes=CLASSES) -> Path:
    for split, ks in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in ks:
            (root / "images" / split / f"img{k}.png").write_bytes(image(k))
            (root / "labels" / split / f"img{k}.txt").write_text(label)
    write_description(root, classes, {"format": "test"}, {"kind": "test"})
    if review_parts is not None:  # what `dataset import` of a reviewed export records: the part of each frame
        meta = json.loads((root / "dataset.json").read_text())
        meta["source"]["review"] = {"since": "2030-03-17", "until": "2030-03-17", "outcomes": {"corrected": 1},
                                    "items": [{"file": f"img{k}.png", "part_id": p} for k, p in review_parts.items()]}
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def members(root: Path) -> list[dict]:
    return [json.loads(x) for x in (root / MEMBERS).read_text().splitlines()]


def merge(base: Path, new: Path, out: Path, *extra: str) -> int:
    return main(["dataset", "merge", str(base), str(new), "--out", str(out), *extra])


def test_versions_keep_the_regression_set_and_groups_and_drop_duplicates(tmp_path):
    base = make_dataset(tmp_path / "base", {"train": list(range(40)), "val": list(range(40, 50))})
    # NEW: 3 frames of part P1, 2 of P2, a copy of base (val) image 45 relabelled, 20 single-frame parts
    parts = {100: "P1", 101: "P1", 102: "P1", 103: "P2", 104: "P2", **{200 + i: f"Q{i}" for i in range(20)}}
    new = make_dataset(tmp_path / "new", {"train": list(parts)}, label="2 0.4 0.4 0.1 0.1\n", review_parts=parts)
    (new / "images" / "train" / "copy45.png").write_bytes(image(45))
    (new / "labels" / "train" / "copy45.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    v2 = tmp_path / "v2"
    assert merge(base, new, v2, "--val-fraction", "0.3", "--regression-fraction", "0.2") == 0
    meta = json.loads((v2 / "dataset.json").read_text())
    rows = members(v2)
    assert len({r["sha256"] for r in rows}) == len(rows) == 50 + len(parts)  # copy45 merged into base's img45
    assert meta["merge"]["base_relabelled_by_new"] == 1
    img45 = next(r for r in rows if r["file"] == "img45.png")
    assert img45["split"] == "val" and img45["source"].startswith("review:")  # BASE's split, the reviewer's label
    assert (v2 / "labels" / "val" / "img45.txt").read_text() == "1 0.5 0.5 0.3 0.3\n"
    splits_of = {}
    for r in rows:
        splits_of.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())  # one group, one split
    assert splits_of["P1"] in ({"train"}, {"val"}) and sum(r["group"] == "P1" for r in rows) == 3
    reg = meta["regression"]
    assert reg["split"] == "test" and reg["images"] == meta["counts"]["test"]["images"] > 0
    assert all(r["source"].startswith("test:base") for r in rows if r["split"] == "test")  # carved from BASE
    assert meta["counts_per_source"]["review:2030-03-17..2030-03-17"]["images"] == len(parts) + 1
    assert meta["version"]["number"] == 2

    # the next night: v2 is the base; its regression set comes through byte for byte
    parts3 = {300 + i: f"R{i}" for i in range(10)}
    new3 = make_dataset(tmp_path / "new3", {"train": list(parts3)}, review_parts=parts3)
    test_file = next(r for r in rows if r["split"] == "test")
    (new3 / "images" / "train" / "leak.png").write_bytes((v2 / "images" / "test" / test_file["file"]).read_bytes())
    v3 = tmp_path / "v3"
    assert merge(v2, new3, v3, "--regression-fraction", "0.9") == 0  # ignored: v2 already has one
    meta3 = json.loads((v3 / "dataset.json").read_text())
    assert meta3["regression"]["sha256"] == reg["sha256"] and meta3["regression"]["frozen_since"] == reg["frozen_since"]
    assert sorted(p.read_bytes() for p in (v3 / "images" / "test").iterdir()) == \
        sorted(p.read_bytes() for p in (v2 / "images" / "test").iterdir())
    assert meta3["merge"]["new_left_out_regression_part"] == 1  # the copy of a regression image stays out
    assert meta3["version"]["number"] == 3 and meta3["sha256"]["content"] != meta["sha256"]["content"]
    assert {r["split"] for r in members(v3) if r["group"] in splits_of} >= {"train"}
    old_splits = {(r["file"], r["split"]) for r in rows}
    assert old_splits <= {(r["file"], r["split"]) for r in members(v3)}  # earlier members keep their split


@pytest.mark.parametrize("case, why", [
    ("classes", "classes differ"),
    ("edited_regression", "no longer has the sha256"),
    ("onto_base", "is the BASE"),
    ("inside_base", "lies inside the BASE"),
    ("around_inputs", "contains the BASE"),
])
def test_bad_merges_exit_2_and_write_nothing(tmp_path, capsys, case, why):
    base = make_dataset(tmp_path / "base", {"train": list(range(10)), "val": [10, 11]})
    new = make_dataset(tmp_path / "new", {"train": [20, 21]}, classes=CLASSES[::-1] if case == "classes" else CLASSES)
    out = tmp_path / "out"
    if case == "edited_regression":
        assert merge(base, new, tmp_path / "v2", "--regression-fraction", "0.5") == 0
        victim = next((tmp_path / "v2" / "labels" / "test").iterdir())
        victim.write_text("3 0.5 0.5 0.9 0.9\n")
        base = tmp_path / "v2"
    named = f"labels/test/{victim.name}: label changed" if case == "edited_regression" else why
    out = {"onto_base": base, "inside_base": base / "v2", "around_inputs": tmp_path}.get(case, out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert merge(base, new, out) == 2
    err = capsys.readouterr().err
    assert why in err and named in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no out, no temp folder, the inputs as they were


def test_merge_holds_one_image_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    noise = {k: cv2.imencode(".png", rng.integers(0, 255, (288, 288), dtype=np.uint8))[1].tobytes() for k in range(100)}
    base = make_dataset(tmp_path / "base", {"train": list(range(50)), "val": [50, 51]})
    new = make_dataset(tmp_path / "new", {"train": list(range(52, 100))})
    total = 0
    for root in (base, new):
        for p in root.glob("images/*/img*.png"):  # noise does not compress: ~83 kB each, 8 MB together
            p.write_bytes(noise[int(p.stem[3:])])
            total += p.stat().st_size
    for root in (base, new):
        write_description(root, CLASSES, {"format": "test"}, {"kind": "test"})
    rc, peak = cli_peak(["dataset", "merge", base, new, "--out", tmp_path / "v2"], tmp_path)
    assert rc == 0 and len(members(tmp_path / "v2")) == 100
    assert total > 7e6 and peak < total / 4, (total, peak)
