"""Replace a folder as one step: a dataset, an export or a bundle is either the old one or the new one,
never half of each (readers see one rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: Path, out: Path) -> None:
    """Moves the finished folder `tmp` to `out`; an existing `out` is renamed aside first and removed
    after, so a crash between the two renames leaves a complete folder under one of the names."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
