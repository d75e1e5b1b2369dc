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
    `records.verdict_record` of the verdict, the record the MQTT payloads and sidecars share."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._buf: list[str] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-jsonl", daemon=True)
        self.written = 0
        self.errors = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, verdict: Verdict) -> None:
        line = json.dumps(verdict_record(verdict))
        with self._lock:
            self._buf.append(line)
            self._lock.notify()

    def _run(self) -> None:
        with self.path.open("a") as fh:
            while True:
                with self._lock:
                    while not self._buf and not self._stop.is_set():
                        self._lock.wait(0.5)
                    batch, self._buf = self._buf, []
                if batch:
                    try:
                        fh.write("\n".join(batch) + "\n")
                        fh.flush()
                        self.written += len(batch)
                    except OSError as e:  # full disk: counted and logged, the line keeps running
                        self.errors += len(batch)
                        log.error("verdict log %s: write failed (%s); %d verdicts not logged", self.path, e, len(batch))
                elif self._stop.is_set():
                    return

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        return {"written": self.written, "errors": self.errors}
