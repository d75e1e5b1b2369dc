"""The synthetic line as image-level labels: conveyor frames sorted into OUT/ok and OUT/ng (NG = the part carries
any defect), the folder layout `inspector dataset import --from folders` reads, the way a reviewer at a line
sorts images. The frames are the line's own (640x480 JPEG, as `inspector synth` and the demo source render them).
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from inspector.sources.conveyor import ConveyorGenerator, render_version


def _chunk(args) -> dict:
    out, seed, start, stop, optics_mode = args
    gen = ConveyorGenerator(seed, optics_mode=optics_mode)
    counts = {"ok": 0, "ng": 0}
    for i in range(start, stop):
        part = gen.part(i)
        label = "ng" if part.defective else "ok"
        ok, buf = cv2.imencode(".jpg", part.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for part {i}")
        (Path(out) / label / f"{seed}_{i:07d}.jpg").write_bytes(buf.tobytes())
        counts[label] += 1
    return counts


def write_ok_ng_folders(out: Path, n: int, seed: int, workers: int = 2, optics_mode: str = "none") -> dict:
    """Renders parts 0..n-1 of `seed` into out/ok and out/ng; returns the counts (also in out/synth.json)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    for label in ("ok", "ng"):
        (out / label).mkdir(parents=True, exist_ok=True)
    chunks = [(str(out), seed, k * n // workers, (k + 1) * n // workers, optics_mode) for k in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_chunk, [c for c in chunks if c[3] > c[2]]))
    counts = {k: sum(p[k] for p in parts) for k in ("ok", "ng")}
    (out / "synth.json").write_text(json.dumps({"generator": "inspector.sources.conveyor", "seed": seed, "n": n,
                                                "optics": optics_mode, "synth_version": render_version(optics_mode),
                                                "label": "ng: the part carries any defect", **counts}, indent=2))
    return counts
