"""Samples that can never be uploaded as they are.

A sample whose sidecar cannot be read (not JSON, not an object, no image record, another id) would stop the
night and every later night at the same place; it is moved to `<spool>/quarantine/<date>/` with a
`<id>.reason` file (the uploader raises a `sample_quarantined` alarm), and the rest is uploaded. Quarantined
files still count against `spool.max_bytes` until somebody looks at them and deletes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inspector.kernel.durable import write_atomic
from inspector.review.spool import SpooledSample

QUARANTINE_DIR = "quarantine"


class BadSample(Exception):
    """A spooled sample that can never be uploaded as it is (its sidecar is unreadable)."""


def read_checked_sidecar(s: SpooledSample) -> dict[str, Any]:
    """The sidecar, checked for what the manifest needs; BadSample (with why) otherwise."""
    try:
        sidecar = json.loads(s.sidecar.read_bytes())
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSample(f"sidecar {s.sidecar.name} is not valid JSON: {e}") from e
    if not isinstance(sidecar, dict):
        raise BadSample(f"sidecar {s.sidecar.name}: expected a JSON object, got {type(sidecar).__name__}")
    if sidecar.get("id") != s.id:
        raise BadSample(f"sidecar {s.sidecar.name}: expected id {s.id!r}, got {sidecar.get('id')!r}")
    image = sidecar.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("sha256"), str):
        raise BadSample(f"sidecar {s.sidecar.name}: expected an image record with a sha256, got {image!r:.100}")
    return sidecar


def quarantine(s: SpooledSample, why: str) -> Path:
    """Moves every file of `s` to `<spool>/quarantine/<date>/` with a `<id>.reason`; returns that folder."""
    dest = s.root / QUARANTINE_DIR / s.date
    dest.mkdir(parents=True, exist_ok=True)
    for p in (s.image, s.labels, s.marker, s.sidecar):  # the sidecar last: it makes a sample "complete"
        try:
            os.replace(p, dest / p.name)
        except FileNotFoundError:
            pass
    write_atomic(dest / f"{s.id}.reason", (why + "\n").encode())
    return dest
