"""The frame-source protocol and its observable state."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from inspector.frames import Frame


class Connection(str, enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # a finite source (file, folder) has no more frames
    FAILED = "failed"  # cannot be opened at all (bad path, unreadable file)


@dataclass(frozen=True)
class SourceState:
    connection: Connection
    frames: int = 0  # frames delivered
    dropped: dict[str, int] | None = None  # frames dropped, by cause (stale, overwritten, corrupt...)
    last_frame_age_s: float | None = None
    reconnects: int = 0
    detail: str = ""  # last error, in words


class FrameSource(Protocol):
    name: str

    def start(self) -> None:
        """Opens the source; raises SourceError if it can never work (bad path, bad URL)."""

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None if none arrived within `timeout` (check `state()`)."""

    def stop(self) -> None: ...

    def state(self) -> SourceState: ...

    @property
    def finished(self) -> bool:
        """True when a finite source has delivered its last frame."""


class FrameBuffer:
    """Hand-over between a grabber thread and the pipeline, with a named back-pressure policy.

    - `triggered`: every frame is a part; nothing is dropped. If the pipeline falls behind, frames
      wait here and come out late, where the deadline policy gives them the fail-safe verdict.
    - `free_run`: a live stream; when the buffer is full the oldest frame is overwritten
      (counted as `overwritten`) so the pipeline always sees the freshest.
    """

    def __init__(self, mode: str, maxsize: int) -> None:
        import collections
        import threading

        self.mode = mode
        self._maxsize = maxsize
        self._q: collections.deque[Frame] = collections.deque()
        self._cv = threading.Condition()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.high_water = 0

    def put(self, frame: Frame) -> None:
        with self._cv:
            if self.mode == "free_run" and len(self._q) >= self._maxsize:
                self._q.popleft()
                self.dropped["overwritten"] += 1
            self._q.append(frame)
            self.high_water = max(self.high_water, len(self._q))
            self._cv.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            return self._q.popleft() if self._q else None

    def __len__(self) -> int:
        return len(self._q)


class FileSource:
    """Shared machinery of the finite sources (video file, image folder): one reader thread feeds a
    FrameBuffer; it waits for room instead of dropping (files can wait) and reports its state.

    Subclasses implement `_start()` (open, raise SourceError if it can never work) and `_run()`
    (the reader loop), updating `_produced`, `_dropped`, `_last_at`, `_connection`, `_detail`
    under `_lock`, and setting `_done` at the end.
    """

    name = "file"

    def __init__(self, cfg) -> None:
        import collections
        import threading

        self.cfg = cfg
        self._buf = FrameBuffer(cfg.trigger, cfg.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._lock = threading.Lock()  # guards the fields below, written by the reader thread
        self._produced = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._last_at: float | None = None
        self._connection = Connection.CONNECTING
        self._detail = ""
        self._done = False

    def _start(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        from inspector.errors import SourceError

        try:
            self._start()
        except SourceError as e:
            with self._lock:
                self._connection, self._detail = Connection.FAILED, str(e)
            raise
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _wait_for_room(self) -> bool:
        """Blocks while the buffer is full (a file can wait; nothing is dropped). False on stop."""
        while len(self._buf) >= self.cfg.queue_size:
            if self._stop.wait(0.005):
                return False
        return True

    def read(self, timeout: float) -> Frame | None:
        return self._buf.get(timeout)

    @property
    def finished(self) -> bool:
        return self._done and len(self._buf) == 0

    def state(self) -> SourceState:
        import collections
        import time

        with self._lock:
            dropped = collections.Counter(self._dropped)
            connection, detail = self._connection, self._detail
            produced, last = self._produced, self._last_at
        dropped.update(self._buf.dropped)
        if connection == Connection.ENDED and not self.finished:
            connection = Connection.CONNECTED  # frames still wait in the buffer
        return SourceState(
            connection=connection,
            frames=produced,
            dropped=dict(dropped),
            last_frame_age_s=None if last is None else max(0.0, time.monotonic() - last),
            detail=detail,
        )
