"""The sha256 of model files. Every check of a bundle's files (verify, load, the store) calls these two
functions as `hashing.sha256_file(...)`, not imported by name, so a test can count them: a start and a
promote each hash each file once (tests/bundle/hashes.py). The writers (`model build`) use them too."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    """The sha256 of bytes in memory (a model file read once: these bytes are the ones compiled)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """The sha256 of a file, read in 1 MiB chunks (files that are not kept in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
