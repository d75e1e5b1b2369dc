"""Where verdicts go: the sink interface and the JSONL audit sink.

The pipeline hands every verdict to each sink with `submit()`, which must return at once: a sink
never blocks the frame loop. Slow work (MQTT, disk) happens on the sink's own thread.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from inspector.frames import Verdict
from inspector.kernel.priority import lower_thread_priority
from inspector.records import verdict_record

log = logging.getLogger(__name__)


class VerdictSink(Protocol):
    name: str

    def start(self) -> None: ...

    def submit(self, verdict: Verdict) -> None:
        """Takes the verdict; must not block. Never drops a reject silently."""

    def stop(self, timeout: float = 2.0) -> None:
        """Flushes what it can within `timeout` and stops its threads."""

    def state(self) -> dict[str, Any]:
        """A small JSON-able view for the status line, heartbeat and metrics."""


class JsonlSink:
    """Appends each verdict to a JSON-lines file from a writer thread (an audit log); one line is
    `records.verdict_record` of the verdict, the record the MQTT payloads and sidecars share.

    Bounded on disk: when a write would take the file past `max_bytes` it is rotated the way
    `logging.handlers.RotatingFileHandler` does (`<path>` -> `<path>.1` -> ... -> `<path>.<backups>`,
    the oldest deleted), so the log never holds more than `max_bytes x (backups + 1)` (plus one
    batch). Bounded in memory: at most `max_pending` lines wait for a stuck disk; more are dropped.
    A failed write (disk full, I/O error) is counted (`errors`: verdicts not logged, `last_error`),
    logged once per distinct error, and the file is reopened on the next batch: the line keeps running.
    """

    name = "jsonl"

    def __init__(self, path: Path, *, max_bytes: int = 64 * 1024**2, backups: int = 8,
                 max_pending: int = 50_000) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_pending = max_pending  # ~25 MB of lines (~0.5 KB each): 80 min at 10 parts/s
        self._buf: list[str] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-jsonl", daemon=True)
        self._fh = None
        self._size = 0
        self._logged_error: str | None = None
        # counters: written by the writer thread (dropped: by the submitter, under the lock)
        self.written = 0
        self.errors = 0
        self.dropped = 0
        self.rotations = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, verdict: Verdict) -> None:
        line = json.dumps(verdict_record(verdict))
        with self._lock:
            if len(self._buf) >= self.max_pending:
                self.dropped += 1
                return
            self._buf.append(line)
            self._lock.notify()

    def _run(self) -> None:
        lower_thread_priority("verdict log")  # the audit log may wait; the frame path may not
        try:
            while True:
                with self._lock:
                    while not self._buf and not self._stop.is_set():
                        self._lock.wait(0.5)
                    batch, self._buf = self._buf, []
                if batch:
                    self._write(batch)
                elif self._stop.is_set():
                    return
        finally:
            self._close()

    def _write(self, batch: list[str]) -> None:
        data = ("\n".join(batch) + "\n").encode()
        try:
            if self._fh is None:
                self._fh = self.path.open("ab")
                self._size = self._fh.tell()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)
            self.written += len(batch)
            self._logged_error = None
        except OSError as e:  # full disk, I/O error: counted and logged, the line keeps running
            self.errors += len(batch)
            self.last_error = f"{type(e).__name__}: {e}"
            if self.last_error != self._logged_error:  # once per distinct error, not once per batch
                self._logged_error = self.last_error
                log.error("verdict log %s: write failed (%s); %d verdict(s) not logged (counted in errors)",
                          self.path, e, len(batch))
            self._close()  # its buffer holds the failed bytes: reopen for the next batch

    def _rotate(self) -> None:
        self._close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        self._fh = self.path.open("ab")
        self._size = 0

    def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:  # the failed flush again: already counted
                pass

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        return {"written": self.written, "errors": self.errors, "dropped": self.dropped,
                "rotations": self.rotations, "bytes": self._size, "last_error": self.last_error}
