"""`inspector dataset import` of a large export against copying its files (`cp -r`), and its peak RSS.

    .venv/bin/python benchmarks/dataset_import.py [--n 50000] [--format yolo|coco] [--rounds 3] [--dir /tmp/...]

Writes N small synthetic images (64x64 grayscale noise PNG, ~4.2 kB each, every one distinct) with one
box each as a YOLO folder (images/ + labels/ + classes.txt) or a COCO export (images/ + one JSON) under
--dir (outside the repository), then, in rounds, times `cp -r EXPORT COPY` and
`/usr/bin/time -v python -m inspector dataset import --from FMT EXPORT --out DS`, interleaved (the order
alternates) so both see the same page cache and load. Prints wall seconds per round, the ratio import / copy,
and the import's peak RSS (`Maximum resident set size`). Only ratios measured side by side mean anything
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def make_export(root: Path, n: int, fmt: str) -> int:
    """N distinct 64x64 PNGs with one box each; returns the bytes written."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    total = 0
    images, anns = [], []
    if fmt == "yolo":
        (root / "labels").mkdir()
        (root / "classes.txt").write_text("scratch\npit\n")
    for i in range(n):
        data = cv2.imencode(".png", rng.integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()
        (root / "images" / f"img_{i:06d}.png").write_bytes(data)
        total += len(data)
        if fmt == "yolo":
            (root / "labels" / f"img_{i:06d}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.25\n")
        else:
            images.append({"id": i + 1, "file_name": f"img_{i:06d}.png", "width": 64, "height": 64})
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": i % 2 + 1, "bbox": [24, 24, 16, 16]})
    if fmt == "coco":
        (root / "instances.json").write_text(json.dumps({
            "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "pit"}]}))
    return total


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    return dt, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--format", choices=("yolo", "coco"), default="yolo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/inspector-import-bench")
    a = ap.parse_args()
    work = Path(a.dir)
    shutil.rmtree(work, ignore_errors=True)
    export = work / "export"
    t0 = time.perf_counter()
    size = make_export(export, a.n, a.format)
    print(f"{a.n} images, {size / 1e6:.0f} MB of PNG ({a.format}) written in {time.perf_counter() - t0:.0f} s")
    rows = []
    for r in range(a.rounds):
        shutil.rmtree(work / "copy", ignore_errors=True)
        shutil.rmtree(work / "ds", ignore_errors=True)
        steps = {"cp": ["cp", "-r", str(export), str(work / "copy")],
                 "import": ["/usr/bin/time", "-v", sys.executable, "-m", "inspector", "dataset", "import", "--from",
                            a.format, str(export), "--out", str(work / "ds")]}
        order = ("cp", "import") if r % 2 == 0 else ("import", "cp")  # neither always pays the other's writeback
        got = {k: timed(steps[k]) for k in order}
        (t_cp, _), (t_imp, err) = got["cp"], got["import"]
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024
        rows.append((t_cp, t_imp, rss))
        print(f"round {r + 1}: cp -r {t_cp:.1f} s, dataset import {t_imp:.1f} s ({t_imp / t_cp:.2f}x), "
              f"peak RSS {rss:.0f} MiB", flush=True)
    n_ds = sum(1 for _ in (work / "ds" / "images").rglob("*.png"))
    best = min(rows, key=lambda x: x[1] / x[0])
    print(f"imported {n_ds} images; median ratio {sorted(x[1] / x[0] for x in rows)[len(rows) // 2]:.2f}x, "
          f"best {best[1] / best[0]:.2f}x; peak RSS max {max(x[2] for x in rows):.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
