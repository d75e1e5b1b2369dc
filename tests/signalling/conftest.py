"""A real full disk for the outbox tests: a 1 MiB tmpfs, filled until the kernel says ENOSPC."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs) to fill up; skipped where mounting is not permitted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder) -> None:
    """Writes a filler file until the filesystem says ENOSPC."""
    with open(folder / "filler", "wb", buffering=0) as f:  # unbuffered: close has nothing left to write
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
