"""`inspector dataset import` of a large export against copying its files (`cp -r`), and its peak RSS.

    .venv/bin/python benchmarks/dataset_import.py [--n 50000] [--format yolo|coco] [--rounds 3] [--dir /tmp/...]

Writes N small synthetic images (64x64 grayscale noise PNG, ~4.2 kB each, every one distinct) with one
box each as a YOLO folder (images/ + labels/ + classes.txt) or a COCO export (images/ + one JSON) under
--dir (outside the repository), then, in rounds, times `cp -r EXPORT COPY` and
`python -m inspector dataset import --from FMT EXPORT --out DS`, each under /usr/bin/time -v, interleaved
(the order alternates) so both see the same page cache and load; outputs are kept until the end (see
below). Prints wall, user and system seconds per round, the ratio import / copy, and the import's peak
RSS (`Maximum resident set size`). Only ratios measured side by side mean anything
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
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


def timed(cmd: list[str]) -> dict:
    """wall, user, sys seconds and peak RSS (MiB) of a command, by /usr/bin/time -v."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.]+)", p.stderr).group(1))
    return {"wall": wall, "user": field("User time (seconds)"), "sys": field("System time (seconds)"),
            "rss": field("Maximum resident set size (kbytes)") / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--format", choices=("yolo", "coco"), default="yolo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/inspector-import-bench")
    ap.add_argument("--keep", action="store_true", help="reuse the export in --dir and keep it afterwards")
    a = ap.parse_args()
    work = Path(a.dir)
    export = work / "export"
    if a.keep and export.is_dir():
        size = sum(p.stat().st_size for p in (export / "images").iterdir())
        for old in work.iterdir():
            if old != export:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        time.sleep(30)  # the discards of what was just deleted settle (above)
    else:
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        size = make_export(export, a.n, a.format)
        print(f"{a.n} images, {size / 1e6:.0f} MB of PNG ({a.format}) written in {time.perf_counter() - t0:.0f} s")
    # Nothing is deleted between rounds: on ext4 mounted with `discard` (this VM), the first files created
    # after an `rm -rf` of 100k files cost 10x the system time (measured: an import of 5000 images took
    # 33 s, 7.5 s sys right after one, 7-8 s, 0.5 s sys in the next two), whichever command came first.
    os.sync()
    rows = []
    for r in range(a.rounds):
        steps = {"cp": ["cp", "-r", str(export), str(work / f"copy{r}")],
                 "import": [sys.executable, "-m", "inspector", "dataset", "import", "--from", a.format, str(export),
                            "--out", str(work / f"ds{r}")]}
        order = ("cp", "import") if r % 2 == 0 else ("import", "cp")  # neither always pays the other's writeback
        got = {k: timed(steps[k]) for k in order}
        c, i = got["cp"], got["import"]
        rows.append((c["wall"], i["wall"], i["rss"]))
        print(f"round {r + 1}: cp -r {c['wall']:.1f} s (user {c['user']:.1f}, sys {c['sys']:.1f}), dataset import "
              f"{i['wall']:.1f} s (user {i['user']:.1f}, sys {i['sys']:.1f}): {i['wall'] / c['wall']:.2f}x; import "
              f"peak RSS {i['rss']:.0f} MiB", flush=True)
    n_ds = sum(1 for _ in (work / "ds0" / "images").rglob("*.png"))
    ratios = sorted(x[1] / x[0] for x in rows)
    print(f"imported {n_ds} images; ratio import / cp -r: median {ratios[len(ratios) // 2]:.2f}x, range "
          f"{ratios[0]:.2f}-{ratios[-1]:.2f}x; peak RSS max {max(x[2] for x in rows):.0f} MiB")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
