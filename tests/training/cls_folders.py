"""Small generated image-level datasets for the classify tests: gray tiles with noise (ok) and the same with a
dark scratch (ng, or a named defect class): learnable in a few epochs at 32 px, written in milliseconds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def tile(rng: np.random.Generator, label: str, size: int = 48) -> np.ndarray:
    img = np.clip(rng.normal(150, 12, (size, size)), 0, 255).astype(np.uint8)
    if label != "ok":
        x0, y0 = (int(v) for v in rng.integers(4, size // 3, 2))
        x1, y1 = (int(v) for v in rng.integers(2 * size // 3, size - 4, 2))
        thick = 3 if label in ("ng", "scratch") else 7
        cv2.line(img, (x0, y0), (x1, y1), 40, thick)
    return img


def make_folders(root: Path, counts: dict[str, int], seed: int = 0, size: int = 48,
                 prefix: str = "") -> dict[str, list[Path]]:
    """root/<class>/<prefix><class>_<i>.png for each class and count; returns the files per class."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for label, n in counts.items():
        d = Path(root) / label
        d.mkdir(parents=True, exist_ok=True)
        out[label] = []
        for i in range(n):
            p = d / f"{prefix}{label}_{i}.png"
            cv2.imwrite(str(p), tile(rng, label, size))
            out[label].append(p)
    return out
