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
