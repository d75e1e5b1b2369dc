"""Tests write only under their tmp folders: a session guard fails the run when any shipped file of the
repository (models/, configs/, schemas/, calibration/) was written, created or removed while it ran, and
names each one. It hashes ~25 files (26 MB): ~0.1 s per session.

A test that must run a command on a shipped model copies it under tmp_path first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUARDED = ("models", "configs", "schemas", "calibration")


def snapshot(root: Path = REPO) -> dict[str, str]:
    """sha256 of every file (content, not mtime: rewriting a file with the same bytes harms nothing)."""
    out: dict[str, str] = {}
    for d in GUARDED:
        for p in sorted((root / d).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changes(before: dict, after: dict) -> list[str]:
    out = [f"created {k}" for k in sorted(after.keys() - before.keys())]
    out += [f"removed {k}" for k in sorted(before.keys() - after.keys())]
    out += [f"written {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return out


@pytest.fixture(scope="session", autouse=True)
def shipped_files_untouched():
    before = snapshot()
    yield
    changed = changes(before, snapshot())
    assert not changed, ("the tests wrote into the repository's shipped files (tests write only under tmp; "
                         "another process editing the checkout during the run reads the same): " + "; ".join(changed))
