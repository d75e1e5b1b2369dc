"""One upload pass per spool at a time, across threads and processes.

A pass holds `fcntl.flock` on `<spool>/.upload.lock` (it holds the holder's pid and start time), so the
in-service NightlyUploader and `inspector upload --now` (another process) never read-merge-write a manifest
at the same time, which could lose lines. The nightly uploader skips its pass while the lock is held (tried
again at its next poll); `upload --now` waits. The lock is the kernel's: a SIGKILLed holder releases it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inspector.frames import iso_utc

LOCK_NAME = ".upload.lock"


class SpoolBusy(Exception):
    """Another upload pass (this process or another) holds the spool's upload lock."""


class SpoolLock:
    """`flock` on `<spool>/.upload.lock`: one upload pass per spool, across threads and processes (each
    holder opens the file itself, and flock locks belong to the open file description)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self, timeout_s: float | None, stop: threading.Event | None = None,
                on_wait: Callable[[str], None] | None = None) -> bool:
        """True once held; False when `timeout_s` (None: no limit) passed or `stop` was set first."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
                    os.close(fd)
                    return False
                if not waited and on_wait is not None:
                    on_wait(self.holder())
                waited = True
                # flock has no timeout: poll. A pass takes seconds to hours; 0.1 s costs nothing.
                if stop is not None:
                    stop.wait(0.1)
                else:
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {iso_utc(time.time())}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
