"""Synthetic dataset splits for the tool chain, made in parallel and reused when complete."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from inspector.sources.conveyor import DEFECT_CLASSES, ConveyorGenerator, render_version

_STAMP = ".complete.json"


def split_is_complete(root: Path, n: int, seed: int, optics_mode: str = "none") -> bool:
    """The folder already holds exactly these `n` parts of `seed`, rendered by this SYNTH_VERSION (and, with
    optics_mode random, through random cameras: issue 14's training mix, stamped `5+optics2`)."""
    stamp, images = Path(root) / _STAMP, Path(root) / "images"
    want = {"n": n, "seed": seed, "synth_version": render_version(optics_mode)}
    return stamp.exists() and json.loads(stamp.read_text()) == want and images.is_dir() \
        and sum(1 for _ in images.glob("*.jpg")) == n


def make_split(root: Path, n: int, seed: int, workers: int = 2, optics_mode: str = "none") -> Path:
    """Writes `n` parts of `seed` under root/{images,labels}; skipped if already complete."""
    root = Path(root)
    stamp = root / _STAMP
    want = {"n": n, "seed": seed, "synth_version": render_version(optics_mode)}
    if split_is_complete(root, n, seed, optics_mode):
        return root
    stamp.unlink(missing_ok=True)
    chunks = [(i * n // workers, (i + 1) * n // workers) for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_chunk, [(root, b - a, seed, a, optics_mode) for a, b in chunks if b > a]))
    stamp.write_text(json.dumps(want))
    return root


def _write_chunk(args) -> None:
    root, n, seed, start, optics_mode = args
    write_synth_dataset(root, n, seed, start=start, optics_mode=optics_mode)


def write_synth_split(root: Path, split: str, n: int, seed: int, workers: int = 2, optics_mode: str = "none") -> Path:
    """The synthetic line as a canonical dataset split: root/images/<split>, root/labels/<split>,
    root/data.yaml and root/dataset.json (rewritten for the splits present). Reused when complete."""
    import shutil

    from inspector.training.dataset_import import write_description

    root = Path(root)
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    stamp = root / f".synth-{split}.json"
    want = {"n": n, "seed": seed, "synth_version": render_version(optics_mode)}
    fresh = not (stamp.exists() and json.loads(stamp.read_text()) == want and img_dir.is_dir()
                 and sum(1 for _ in img_dir.glob("*.jpg")) == n)
    if fresh:
        stamp.unlink(missing_ok=True)
        shutil.rmtree(img_dir, ignore_errors=True)
        shutil.rmtree(lbl_dir, ignore_errors=True)
        tmp = root / f".render-{split}"
        shutil.rmtree(tmp, ignore_errors=True)
        make_split(tmp, n, seed, workers=workers, optics_mode=optics_mode)
        img_dir.parent.mkdir(parents=True, exist_ok=True)
        lbl_dir.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "images").rename(img_dir)
        (tmp / "labels").rename(lbl_dir)
        shutil.rmtree(tmp)
        stamp.write_text(json.dumps(want))
    rules = {s: json.loads((root / f".synth-{s}.json").read_text())
             for s in ("train", "val", "test") if (root / f".synth-{s}.json").exists()}
    source = {"format": "synthetic", "generator": "inspector.sources.conveyor",
              "synth_version": render_version(optics_mode)}
    return write_description(root, list(DEFECT_CLASSES), source, {"kind": "synthetic", "splits": rules})


def write_synth_dataset(out: Path, n: int, seed: int, *, start: int = 0, jpeg_quality: int = 95,
                  optics_mode: str = "none") -> Path:
    """Writes a YOLO dataset (images/, labels/, data.yaml) of `n` parts; returns the data.yaml path."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    gen = ConveyorGenerator(seed, optics_mode=optics_mode)
    for i in range(start, start + n):
        part = gen.part(i)
        stem = f"{seed}_{i:07d}"
        ok, buf = cv2.imencode(".jpg", part.image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for part {i}")
        (out / "images" / f"{stem}.jpg").write_bytes(buf.tobytes())
        (out / "labels" / f"{stem}.txt").write_text(part.yolo_labels())
    return write_synth_data_yaml(out, train="images", val="images")


def write_synth_data_yaml(root: Path, train: str, val: str) -> Path:
    """A flat synthetic dataset's data.yaml: absolute `path`, `train`/`val` folders, the generator's classes."""
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(DEFECT_CLASSES))
    path = Path(root) / "data.yaml"
    path.write_text(f"path: {Path(root).resolve()}\ntrain: {train}\nval: {val}\nnames:\n{names}\n")
    return path
