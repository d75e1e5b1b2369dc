"""Files that survive a power cut whole: fsync, and write-to-temp-then-rename.

A reader sees the old file or the new one, never a torn one: the bytes go to a temp file in the same
folder (a rename is atomic only within one file system), which is fsynced before the rename. The rename
itself is durable only once the folder is fsynced too (`sync_dir=True`, or `fsync_path(folder)` after
several writes: the spool writes three files of a sample and syncs their folder once).

Used by the spool (samples, the `.uploaded` marker), the uploader (quarantine reasons, the file://
destination) and the model store (bundle files, the active pointer).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"  # the default temp name is `<name>.tmp`; the spool removes such leftovers at open


def fsync_path(path: Path | str) -> None:
    """fsync of a file or a folder by its path (a folder's fsync makes a rename or a create in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_synced(path: Path | str, mode: int = 0o644) -> None:
    """Creates `path` (empty, or left as it is when it exists) and fsyncs it: a durable marker file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_tmp(path: Path) -> Path:
    """A new, empty temp file beside `path` (mode 0600) whose name no other thread or process uses."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_atomic(path: Path, data: bytes, *, tmp: Path | None = None, mode: int | None = None,
                 gid: int | None = None, sync_dir: bool = False) -> None:
    """Temp file, fsync, rename: readers see the whole file or none of it. `tmp` (default `<name>.tmp`)
    must be unique when several writers write the same name. `mode` and the group `gid` are set on the
    temp file before the rename; `sync_dir` fsyncs the folder after it (the rename is then durable)."""
    tmp = tmp or path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            if gid is not None:
                os.fchown(fh.fileno(), -1, gid)
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_path(path.parent)


def write_atomic_json(path: Path, doc: dict[str, Any], *, mode: int | None = None, gid: int | None = None) -> None:
    """`doc` as indented JSON, atomically and durably (the folder is made if missing and fsynced). The temp
    file has a unique name (two processes may write the same pointer) and is 0600 until `mode` is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1).encode(), tmp=unique_tmp(path), mode=mode, gid=gid,
                 sync_dir=True)
