"""What the service hands to the page: verdicts from the post thread, alarms from the hub.

Both calls return at once and never block: the post thread only replaces one reference (the latest
verdict) and appends to a bounded deque (the rejects still to be drawn: only the last 20 are shown, so an
older one is dropped when the page's worker falls behind, counted); `deque.append` with a maxlen is atomic
in CPython. The worker (view.py) takes from here at its own pace, below the frame path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from inspector.frames import Verdict

REJECTS_KEPT = 20  # the page lists the last 20 rejects


class PageFeed:
    """A post-thread observer in VerdictSink form, and an alarm handler."""

    name = "page"

    def __init__(self, keep: int = REJECTS_KEPT) -> None:
        self.latest: Verdict | None = None  # replaced by the post thread; read by the worker
        self.rejects: deque[Verdict] = deque(maxlen=keep)
        self.alarms: deque[tuple[str, dict[str, Any], float]] = deque(maxlen=200)
        self.wake = threading.Event()  # a reject or an alarm: the worker pushes it now, not at its next tick
        self.verdicts = 0
        self.rejects_seen = 0

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def submit(self, v: Verdict) -> None:
        self.latest = v
        self.verdicts += 1
        if v.actuate:
            self.rejects.append(v)
            self.rejects_seen += 1
            self.wake.set()

    def alarm(self, kind: str, detail: dict[str, Any]) -> None:
        self.alarms.append((kind, dict(detail), time.time()))
        self.wake.set()

    def take_rejects(self) -> list[Verdict]:
        out = []
        while True:
            try:
                out.append(self.rejects.popleft())
            except IndexError:
                return out

    def take_alarms(self) -> list[tuple[str, dict[str, Any], float]]:
        out = []
        while True:
            try:
                out.append(self.alarms.popleft())
            except IndexError:
                return out

    def state(self) -> dict[str, Any]:
        return {"verdicts": self.verdicts, "rejects": self.rejects_seen}
