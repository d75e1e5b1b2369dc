"""The synthetic conveyor: deterministic, labelled, varied."""

import subprocess
import sys
from collections import Counter

import numpy as np
import yaml

from inspector.sources.conveyor import DEFECT_CLASSES, ConveyorGenerator


def test_same_seed_same_frames_in_any_order():
    a, b = ConveyorGenerator(5), ConveyorGenerator(5)
    assert np.array_equal(a.part(3).image, b.part(3).image)
    assert a.part(7).defects == ConveyorGenerator(5).part(7).defects
    assert not np.array_equal(a.part(3).image, ConveyorGenerator(6).part(3).image)


def test_frames_labels_and_mix():
    gen = ConveyorGenerator(11)
    parts = [gen.part(i) for i in range(120)]
    for p in parts:
        assert p.image.shape == (480, 640, 3) and p.image.dtype == np.uint8
        for d in p.defects:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
            assert d.name == DEFECT_CLASSES[d.class_id]
    good = sum(not p.defective for p in parts)
    assert 25 <= good <= 55  # about a third defect-free
    classes = Counter(d.name for p in parts for d in p.defects)
    assert set(classes) == set(DEFECT_CLASSES)
    sizes = [max(d.box[2] - d.box[0], d.box[3] - d.box[1]) for p in parts for d in p.defects]
    assert min(sizes) < 20 < 60 < max(sizes)  # varied size


def test_yolo_labels_are_normalised():
    p = next(p for p in (ConveyorGenerator(2).part(i) for i in range(20)) if p.defective)
    rows = [list(map(float, line.split())) for line in p.yolo_labels().splitlines()]
    assert len(rows) == len(p.defects)
    for c, *xywh in rows:
        assert c in range(len(DEFECT_CLASSES)) and all(0 <= v <= 1 for v in xywh)


def test_synth_cli_writes_a_yolo_dataset(tmp_path):
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "inspector", "synth", "--out", str(out), "--n", "24", "--seed", "12345"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list((out / "images").glob("*.jpg"))) == 24
    assert len(list((out / "labels").glob("*.txt"))) == 24
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(DEFECT_CLASSES))
