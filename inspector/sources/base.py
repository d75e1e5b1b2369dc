"""The frame-source protocol and its observable state; the shared machinery of finite sources (FileSource)
and of live cameras (LiveSource, Backoff)."""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from inspector.frames import Frame
from inspector.kernel import realtime
from inspector.kernel.alarms import AlarmThrottle

log = logging.getLogger(__name__)


class Connection(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # a finite source (file, folder) has no more frames
    FAILED = "failed"  # cannot be opened at all (bad path, unreadable file)


@dataclass(frozen=True)
class SourceState:
    connection: Connection
    frames: int = 0  # frames delivered
    # frames dropped, by cause (stale, overwritten, corrupt, queue_full: image dropped but the part got
    # its fail-safe verdict, backlog_full: part given up without a verdict...)
    dropped: dict[str, int] | None = None
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
    Memory is bounded in both modes.

    - `free_run`: a live stream; when the buffer is full the oldest frame is overwritten
      (counted as `overwritten`) so the pipeline always sees the freshest.
    - `triggered`: every frame is a part, and every part is owed a verdict. At most `maxsize`
      frames keep their image. A part that arrives when they are all taken keeps its metadata
      (frame id, part id, capture time) but not its image: it is queued in order as
      `Frame(image=None, dropped="queue_full")`, so the pipeline gives it the fail-safe verdict at
      once, counted as `queue_full` and raised as a (throttled) `queue_full` alarm. Image-less
      parts cost ~0.3 KiB each, and `max_backlog` bounds them too: beyond it the oldest
      image-less part is given up (no verdict can be made for it), counted as `backlog_full`,
      and its part id is named in a `queue_full` alarm. Only a stalled pipeline gets there: a
      running one drains image-less parts without inference.
    """

    # Part ids given up are sent in batches: the first at once, then one alarm per interval (or
    # per this many ids), so a stalled pipeline at 10 parts/s sends one alarm a minute, not ten a second.
    LOST_BATCH = 500

    def __init__(self, mode: str, maxsize: int, *, max_backlog: int | None = None,
                 alarm: Callable[[str, dict[str, Any]], None] | None = None, source: str = "",
                 alarm_interval_s: float = 60.0) -> None:
        self.mode = mode
        self._maxsize = maxsize
        self._max_backlog = max(max_backlog or maxsize, maxsize)
        self._q: collections.deque[Frame] = collections.deque()
        self._images = 0  # frames in _q that hold an image (the memory that matters)
        self._cv = threading.Condition()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.high_water = 0
        self._source = source
        self._alarm = alarm
        self._alarm_interval_s = alarm_interval_s
        # Alarm bookkeeping is the producer's (one grabber thread per buffer); flush_alarms() runs after it stopped.
        self._throttle = AlarmThrottle(alarm, alarm_interval_s) if alarm is not None else None
        self._lost: list[str] = []
        self._lost_sent_at = float("-inf")

    def put(self, frame: Frame) -> None:
        image_dropped = False
        lost: Frame | None = None
        with self._cv:
            if self.mode == "free_run":
                if len(self._q) >= self._maxsize:
                    self._q.popleft()
                    self._images -= 1
                    self.dropped["overwritten"] += 1
            else:
                if frame.image is not None and self._images >= self._maxsize:
                    frame = replace(frame, image=None, dropped="queue_full")
                    self.dropped["queue_full"] += 1
                    image_dropped = True
                if len(self._q) >= self._max_backlog:
                    lost = self._give_up_oldest_imageless(frame)
            if lost is not frame:
                self._q.append(frame)
                self._images += frame.image is not None
            self.high_water = max(self.high_water, len(self._q))
            self._cv.notify()
        if image_dropped and self._throttle is not None:
            self._throttle.raise_alarm("queue_full", {
                "source": self._source, "part_id": frame.part_id, "frame_id": frame.frame_id,
                "queue_size": self._maxsize, "verdict": "fail-safe (image dropped before inspection)"})
        if lost is not None:
            self.dropped["backlog_full"] += 1
            self._lost.append(str(lost.part_id if lost.part_id is not None else lost.frame_id))
            now = time.monotonic()
            if len(self._lost) >= self.LOST_BATCH or now - self._lost_sent_at >= self._alarm_interval_s:
                self._send_lost(now)

    def _give_up_oldest_imageless(self, incoming: Frame) -> Frame:
        """Removes and returns the oldest image-less part (the incoming one when none is queued)."""
        for i, f in enumerate(self._q):
            if f.image is None:
                del self._q[i]
                return f
        return incoming

    def _send_lost(self, now: float) -> None:
        ids, self._lost = self._lost, []
        self._lost_sent_at = now
        if self._alarm is None or not ids:
            return
        try:
            self._alarm("queue_full", {"source": self._source, "max_backlog": self._max_backlog,
                                       "parts_without_verdict": ids, "count": len(ids),
                                       "verdict": "none: given up, the backlog of parts was full"})
        except Exception:  # an alarm path must not stop the grabber
            log.exception("queue_full alarm failed")

    def flush_alarms(self) -> None:
        """Delivers throttled counts and pending part ids (call after the producer stopped)."""
        if self._throttle is not None:
            self._throttle.flush()
        self._send_lost(time.monotonic())

    def get(self, timeout: float) -> Frame | None:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            if not self._q:
                return None
            frame = self._q.popleft()
            self._images -= frame.image is not None
            return frame

    def counts(self) -> dict[str, int]:
        with self._cv:
            return dict(self.dropped)

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

    def __init__(self, cfg, alarm: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self._buf = FrameBuffer(cfg.trigger, cfg.queue_size, max_backlog=cfg.max_backlog, alarm=alarm,
                                source=self.name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=realtime.runs_in("frame", self._run), name=f"source-{self.name}",
                                        daemon=True)
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
        if not self._thread.is_alive():
            self._buf.flush_alarms()

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
        with self._lock:
            dropped = collections.Counter(self._dropped)
            connection, detail = self._connection, self._detail
            produced, last = self._produced, self._last_at
        dropped.update(self._buf.counts())
        if connection == Connection.ENDED and not self.finished:
            connection = Connection.CONNECTED  # frames still wait in the buffer
        return SourceState(
            connection=connection,
            frames=produced,
            dropped=dict(dropped),
            last_frame_age_s=None if last is None else max(0.0, time.monotonic() - last),
            detail=detail,
        )


class Backoff:
    """Capped exponential backoff between reconnect attempts: `initial_s`, doubled after each wait up to
    `max_s`, back to `initial_s` (`reset`) once a connection worked. Owned by the thread that reconnects."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.delay_s = initial_s  # the next wait

    def wait(self, stop: threading.Event) -> bool:
        """Waits the current delay, then doubles it (capped); True when `stop` was set (stop at once)."""
        stopped = stop.wait(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return stopped

    def reset(self) -> None:
        self.delay_s = self.initial_s


class LiveSource:
    """Shared machinery of the live cameras (OpenCV, GenICam): the FrameBuffer their grabber fills, the stop
    event, the connection state under one lock, and the reconnect backoff (`source.reconnect_initial_ms`,
    doubled up to `reconnect_max_ms`). A live camera has no last frame.

    Subclasses start their threads in `start()` (calling `_refused(e)` when the camera can never work) and
    report `state()`; the fields below are written under `_lock`.
    """

    name = "live"

    def __init__(self, cfg, alarm: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        # triggered: a part arriving at a full buffer loses its image, not its verdict (see FrameBuffer).
        self._buf = FrameBuffer(cfg.trigger, cfg.queue_size, max_backlog=cfg.max_backlog, alarm=alarm,
                                source=self.name)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the fields below (and a subclass's own, where it says so)
        self._connection = Connection.CONNECTING
        self._detail = ""
        self._reconnects = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._last_frame_at: float | None = None
        self._backoff = Backoff(cfg.reconnect_initial_ms / 1000, cfg.reconnect_max_ms / 1000)

    def _refused(self, e: Exception) -> None:
        """`start()` found that the camera can never work (bad URL, unknown camera, refused feature)."""
        with self._lock:
            self._connection, self._detail = Connection.FAILED, str(e)

    @property
    def finished(self) -> bool:
        return False  # a live camera has no last frame
