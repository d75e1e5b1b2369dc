"""Real faults for the lifecycle tests: a tmpfs filled to the last byte (ENOSPC from the kernel, not a
mock), mounted where the store keeps its pointer."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest


class FullDisk:
    """A small tmpfs at `mountpoint`; `fill()` takes every byte of it, `free()` gives them back."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.filler = mountpoint / ".filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 16, 4096, 1):  # big steps, then to the last byte
                chunk = b"\0" * size
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        st = os.statvfs(self.mountpoint)
        assert st.f_bavail == 0, f"{self.mountpoint}: {st.f_bavail} blocks still free"

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def mount_tmpfs(mountpoint: Path, size: str = "256k") -> FullDisk:
    """Mounts a tmpfs (needs root with CAP_SYS_ADMIN). Where the kernel refuses: skipped, and under CI
    that skip is a failure (tests/conftest.py): a disk-full test is never silently left out there."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "inspector-full", str(mountpoint)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        why = (f"cannot mount a tmpfs at {mountpoint} ({r.stderr.strip() or r.returncode}): the disk-full tests "
               "need root with CAP_SYS_ADMIN (a container started with --privileged or --cap-add SYS_ADMIN)")
        pytest.skip(why)
    return FullDisk(mountpoint)


def unmount(disk: FullDisk) -> None:
    subprocess.run(["umount", "-l", str(disk.mountpoint)], capture_output=True, timeout=30)
