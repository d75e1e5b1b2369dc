"""The nightly upload inside the service: passes while the local time is inside `upload.window`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from inspector.config import InspectorConfig
from inspector.errors import SpoolError
from inspector.kernel.priority import lower_thread_priority
from inspector.review.spool import Alarm
from inspector.review.upload.backends import Destination
from inspector.review.upload.lock import SpoolBusy
from inspector.review.upload.upload import Uploader, UploadReport

log = logging.getLogger(__name__)


def parse_window(window: str) -> tuple[dtime, dtime]:
    try:
        a, b = window.split("-")
        start, end = dtime.fromisoformat(a), dtime.fromisoformat(b)
    except ValueError as e:
        raise SpoolError(f"upload.window: expected HH:MM-HH:MM, got {window!r}") from e
    return start, end


def in_window(t: dtime, start: dtime, end: dtime) -> bool:
    """[start, end) in local time; crossing midnight (22:00-02:00) allowed; start == end: all day."""
    if start < end:
        return start <= t < end
    if start > end:
        return t >= start or t < end
    return True


class NightlyUploader:
    """Runs upload passes while the local time is inside `upload.window`, every `repass_s`."""

    name = "uploader"

    def __init__(self, config: InspectorConfig, *, now: Callable[[], datetime] | None = None,
                 poll_s: float = 30.0, repass_s: float = 600.0, destination: Destination | None = None,
                 alarm: Alarm | None = None) -> None:
        self.root = Path(config.spool.dir)
        self._alarm = alarm
        self.cfg = cfg = config.upload
        self._window = parse_window(cfg.window) if cfg.window else None
        self._now = now or (lambda: datetime.now().astimezone())
        self._poll_s = poll_s
        self._repass_s = repass_s
        self._destination = destination
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._lock = threading.Lock()
        self._passes = 0
        self._last: UploadReport | None = None
        self._last_pass_at: float | None = None
        self._in_window = False
        self._error: str | None = None
        self._busy = 0  # passes skipped because another pass held the spool
        self._polls = 0  # window checks made (tests wait on it instead of sleeping)
        self.priority: str | None = None  # what lower_thread_priority did for the uploader thread

    def start(self) -> None:
        if self._window is None:
            log.info("upload: no window configured; in-service upload is off (use `inspector upload --now`)")
            return
        self._thread.start()

    def _due(self) -> bool:
        assert self._window is not None
        inside = in_window(self._now().time(), *self._window)
        with self._lock:
            self._in_window = inside
            self._polls += 1
        if not inside:
            self._last_pass_at = None  # the next window starts with a pass
            return False
        return self._last_pass_at is None or time.monotonic() - self._last_pass_at >= self._repass_s

    def _run(self) -> None:
        # Hashing, thumbnails and TLS must yield the CPU to the frame path; the pool threads a pass
        # starts inherit this thread's priority.
        self.priority = lower_thread_priority("uploader")
        while not self._stop.is_set():
            if self._due():
                self._last_pass_at = time.monotonic()
                try:
                    rep = Uploader(self.root, self.cfg, destination=self._destination, stop=self._stop,
                                   alarm=self._alarm).run(lock_timeout_s=0.0)
                    log.info("%s", rep.summary())
                    with self._lock:
                        self._last, self._passes, self._error = rep, self._passes + 1, rep.error
                except SpoolBusy as e:  # `upload --now` is at it: try again at the next poll
                    log.info("upload pass skipped: %s", e)
                    self._last_pass_at = None
                    with self._lock:
                        self._busy += 1
                except Exception as e:  # the line keeps running; the next pass retries
                    log.exception("upload pass failed")
                    with self._lock:
                        self._error = f"{type(e).__name__}: {e}"
            self._stop.wait(self._poll_s)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"window": self.cfg.window, "in_window": self._in_window, "passes": self._passes,
                    "skipped_busy": self._busy, "polls": self._polls,
                    "last": asdict(self._last) if self._last else None, "error": self._error}
