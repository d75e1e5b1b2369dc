"""Synthetic dataset splits for the tool chain, made in parallel and reused when complete."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from inspector.sources.conveyor import render_version, write_dataset

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
    write_dataset(root, n, seed, start=start, optics_mode=optics_mode)


def write_synth_split(root: Path, split: str, n: int, seed: int, workers: int = 2, optics_mode: str = "none") -> Path:
    """The synthetic line as a canonical dataset split: root/images/<split>, root/labels/<split>,
    root/data.yaml and root/dataset.json (rewritten for the splits present). Reused when complete."""
    import shutil

    from inspector.sources.conveyor import DEFECT_CLASSES
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
