"""`inspector dataset check`: a clean dataset passes; each way a dataset breaks training silently is
found, named, and exits 2."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.cli import main
from inspector.training.dataset_check import dhash, near_pairs, run_check
from tests.training.exports import WRITERS


@pytest.fixture
def dataset(tmp_path) -> Path:
    WRITERS["yolo"](tmp_path / "src", n=8)
    out = tmp_path / "ds"
    assert main(["dataset", "import", "--from", "yolo", str(tmp_path / "src"), "--out", str(out),
                 "--val-fraction", "0.25", "--seed", "1"]) == 0
    return out


def first(ds: Path, split: str, kind: str = "images") -> Path:
    return sorted((ds / kind / split).iterdir())[0]


def _no_label(ds):
    (ds / "labels" / "train" / (first(ds, "train").stem + ".txt")).unlink()


def _no_image(ds):
    (ds / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")


def _append(row):
    def spoil(ds):
        lbl = first(ds, "train", "labels")
        lbl.write_text(lbl.read_text() + row)
    return spoil


def _duplicate(ds):
    img = first(ds, "train")
    shutil.copyfile(img, img.with_name("copy.jpg"))
    shutil.copyfile(ds / "labels" / "train" / (img.stem + ".txt"), ds / "labels" / "train" / "copy.txt")


def _leak(ds):
    """A training image, slightly brighter and re-encoded, in val: a near-duplicate, not a byte copy."""
    img = first(ds, "train")
    near = cv2.convertScaleAbs(cv2.imread(str(img)), alpha=1.0, beta=6)
    cv2.imwrite(str(ds / "images" / "val" / "leak.jpg"), near, [cv2.IMWRITE_JPEG_QUALITY, 85])
    shutil.copyfile(ds / "labels" / "train" / (img.stem + ".txt"), ds / "labels" / "val" / "leak.txt")


def _empty_class(ds):
    for lbl in (ds / "labels" / "val").iterdir():
        lbl.write_text("".join(ln + "\n" for ln in lbl.read_text().splitlines() if not ln.startswith("1 ")))


def _truncated(ds):
    img = first(ds, "val")
    img.write_bytes(img.read_bytes()[:300])


def _not_an_image(ds):
    (ds / "images" / "train" / "notes.png").write_bytes(b"not a png")
    (ds / "labels" / "train" / "notes.txt").write_text("")


CASES = {
    "image_without_label": _no_label,
    "label_without_image": _no_image,
    "box_out_of_range": _append("0 0.95 0.5 0.3 0.2\n"),
    "degenerate_box": _append("0 0.5 0.5 0.0 0.1\n"),
    "unknown_class_id": _append("7 0.5 0.5 0.1 0.1\n"),
    "malformed_label": _append("0 0.5 0.5\n"),
    "duplicate_image": _duplicate,
    "near_duplicate_across_splits": _leak,
    "empty_class": _empty_class,
    "unreadable_image": _truncated,
    "unreadable_image ": _not_an_image,
}


def test_a_clean_dataset_passes(dataset, capsys):
    assert main(["dataset", "check", str(dataset), "--imgsz", "64"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "scratch" in out and "box size after letterbox to 64 px" in out


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_finding_is_named_and_exits_2(dataset, capsys, kind):
    CASES[kind](dataset)
    assert main(["dataset", "check", str(dataset / "data.yaml"), "--json", str(dataset / "report.json")]) == 2
    out = capsys.readouterr().out
    assert f"FAIL {kind.strip()}: 1" in out, out
    found = {k for k, v in run_check(dataset).findings.items() if v}
    assert found == {kind.strip()}  # nothing else fires on the same data


def test_box_sizes_are_reported_after_the_letterbox(dataset, capsys):
    # images are 96x80; at a 32 px input the 12 px pits shrink to 4 px: under the 8 px line
    assert main(["dataset", "check", str(dataset), "--imgsz", "32"]) == 0
    out = capsys.readouterr().out
    assert "boxes are under 8 px at 32 px input" in out
    assert "<8: 0 (0%)" not in out.split("box size")[1].splitlines()[1]


def test_dhash_sees_a_reencoded_copy_and_not_a_different_image():
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.integers(0, 255, (120, 160), dtype=np.uint8), (0, 0), 4)
    b = cv2.GaussianBlur(rng.integers(0, 255, (120, 160), dtype=np.uint8), (0, 0), 4)
    ok, enc = cv2.imencode(".jpg", cv2.add(a, 5), [cv2.IMWRITE_JPEG_QUALITY, 70])
    a2 = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
    h = np.array([dhash(a), dhash(a2), dhash(b)], np.uint64)
    pairs = {(i, j) for i, j, _ in near_pairs(h[:1], h[1:], 4)}
    assert pairs == {(0, 0)}
