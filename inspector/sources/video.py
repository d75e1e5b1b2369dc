"""A video file as a camera: its frames at the file's own fps, or as fast as the pipeline takes them.

Pacing:
- `native`: frame n is "captured" at `t0 + n / fps`, like a camera that does not wait for anybody.
  Its `captured_at` is that slot, even when the frame reaches the buffer later (the pipeline was
  behind, or decoding was slow), so lateness shows up as deadline misses instead of being hidden.
- `fast`: frames are stamped when read and handed over only when the buffer has room (a file can
  wait), so nothing is dropped or late because of the source.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2

from inspector.config import VideoSourceConfig
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.sources.base import Connection, FileSource
from inspector.sources.convert import normalize_image

log = logging.getLogger(__name__)

# Container metadata is sometimes missing or absurd (0, NaN, 90000 for raw streams); the
# fallback keeps a `native` demo going at a camera-like pace rather than refusing the file.
_FALLBACK_FPS = 25.0
_MAX_FPS = 1000.0


class VideoSource(FileSource):
    name = "video"

    def __init__(self, cfg: VideoSourceConfig, alarm=None) -> None:
        super().__init__(cfg, alarm)
        self.path = Path(cfg.path)
        self._cap: cv2.VideoCapture | None = None
        self._first = None  # the frame decoded at start() to prove the file is usable
        self._fps = _FALLBACK_FPS

    # -- lifecycle ------------------------------------------------------------------------------
    def _start(self) -> None:
        cap = self._open()
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(
                f"video source: {self.path} opened but no frame could be decoded "
                "(expected at least one frame; the file may be empty, truncated, or use a codec FFmpeg lacks)"
            )
        fps = cap.get(cv2.CAP_PROP_FPS)
        if 0 < fps <= _MAX_FPS:
            self._fps = fps
        elif self.cfg.pace == "native":
            log.warning("video source: %s reports fps=%r; pacing at %.0f fps instead", self.path, fps, _FALLBACK_FPS)
        self._cap, self._first = cap, image
        with self._lock:
            self._connection = Connection.CONNECTED

    def _open(self) -> cv2.VideoCapture:
        p = self.path
        if not p.exists():
            raise SourceError(f"video source: {p} does not exist (expected a video file, e.g. .mp4 or .avi)")
        if not p.is_file():
            raise SourceError(f"video source: {p} is not a file (expected a video file, e.g. .mp4 or .avi)")
        if not os.access(p, os.R_OK):
            raise SourceError(f"video source: {p} is not readable by this user (expected read permission)")
        try:
            # FFmpeg explicitly: CAP_ANY could pick the image-sequence backend for odd names.
            cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        except cv2.error as e:  # raised by some backends instead of returning a closed capture
            raise SourceError(f"video source: {p} cannot be opened: {e}") from e
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"video source: {p} cannot be opened as a video "
                "(expected a container/codec FFmpeg can decode, e.g. MJPG .avi or H.264 .mp4; "
                f"size {p.stat().st_size} bytes)"
            )
        return cap

    def stop(self) -> None:
        super().stop()
        # The reader thread releases its capture on the way out; this covers start() without run.
        if not self._thread.is_alive() and self._cap is not None:
            self._cap.release()
            self._cap = None

    # -- reader thread --------------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self._fps
        cap = self._cap
        image = self._first
        self._first = None
        frame_id = 0
        in_pass = 0  # frames decoded in this pass over the file, good or bad
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                if image is None:
                    ok, image = cap.read()
                    if not ok:
                        image = None
                        if not self.cfg.loop or in_pass == 0:
                            break
                        # Reopen rather than seek: seeking is unreliable for some containers.
                        cap.release()
                        try:
                            cap = self._cap = self._open()
                        except SourceError as e:
                            log.error("%s", e)
                            with self._lock:
                                self._connection, self._detail = Connection.FAILED, str(e)
                            break
                        in_pass = 0
                        continue
                in_pass += 1
                bgr, why = normalize_image(image)
                image = None
                if bgr is None:
                    with self._lock:
                        self._dropped["bad_frame"] += 1
                        self._detail = f"frame {frame_id}: {why}"
                    log.warning("video source: %s frame %d skipped: %s", self.path, frame_id, why)
                    frame_id += 1
                    continue
                if self.cfg.pace == "native":
                    slot = t0 + frame_id * period
                    delay = slot - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    captured_at = slot
                    if self.cfg.trigger == "triggered" and not self._wait_for_room():
                        break
                else:
                    if not self._wait_for_room():
                        break
                    captured_at = time.monotonic()
                self._buf.put(
                    Frame(
                        frame_id=frame_id,
                        image=bgr,
                        captured_at=captured_at,
                        captured_wall=time.time() - (time.monotonic() - captured_at),
                        part_id=f"{self.path.stem}-{frame_id}" if self.cfg.trigger == "triggered" else None,
                        source=self.name,
                    )
                )
                with self._lock:
                    self._produced += 1
                    self._last_at = captured_at
                frame_id += 1
        finally:
            if cap is not None:
                cap.release()
            self._cap = None
            with self._lock:
                if self._connection != Connection.FAILED:
                    self._connection = Connection.ENDED
            self._done = True
