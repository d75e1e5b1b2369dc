"""A live camera through OpenCV (an RTSP/HTTP URL or a USB/V4L2 device): one reader thread keeps the
freshest frame, reconnects with capped exponential backoff, and reports the connection's state.

- Open and read timeouts are passed to FFmpeg at open time (`CAP_PROP_OPEN_TIMEOUT_MSEC`,
  `CAP_PROP_READ_TIMEOUT_MSEC` are open-only properties): a frozen server (TCP open, no data)
  makes `read()` fail after the read timeout, and the reader reconnects.
- V4L2 devices ignore those two properties, so `state()` also runs a watchdog: no frame for
  longer than the read timeout is reported as `reconnecting`, whatever the backend is doing.
- Back-pressure is the buffer's policy: `free_run` keeps the freshest frames (older ones are
  `overwritten`; a frame older than `max_frame_age_ms` when read is dropped as `stale`);
  `triggered` never drops a part: past `queue_size` a part keeps its metadata without its image
  and gets the fail-safe verdict, with a `queue_full` alarm (see FrameBuffer).
- A frame of the wrong layout is converted when it can be (grey → BGR) and otherwise counted as
  `bad_frame`.
- Credentials never sit in the configured URL (the config refuses them): `username` and the
  password from INSPECTOR_SOURCE__PASSWORD are percent-encoded into the URL only when the capture
  is opened, and every URL in logs and state is redacted.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from urllib.parse import quote, urlsplit, urlunsplit

import cv2

from inspector.config import OpenCVSourceConfig, redact_url
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.kernel import realtime
from inspector.sources.base import Connection, LiveSource, SourceState
from inspector.sources.convert import normalize_image

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "udp", "tcp", "srt")

# OpenCV has no per-capture property for the RTSP transport: FFmpeg options come only from this
# environment variable, read when a capture is opened. It is process-wide, so it is set and
# restored under one lock around each RTSP open (opens of different sources are serialized).
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_env_lock = threading.Lock()

# A failed read that took at least this share of the read timeout was a timeout (frozen stream),
# a faster one means the stream ended or the server closed the connection.
_TIMEOUT_SHARE = 0.8


def ffmpeg_capture_options(existing: str | None, transport: str) -> str:
    """`existing` FFmpeg capture options ("key;value|key;value") with rtsp_transport set to ours."""
    kept = [kv for kv in (existing or "").split("|") if kv and not kv.startswith("rtsp_transport;")]
    return "|".join([f"rtsp_transport;{transport}", *kept])


def redact(url: str) -> str:
    """The URL without its password, for logs and state (see `inspector.config.redact_url`)."""
    return redact_url(url)


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with `username:password@` added, both percent-encoded (RFC 3986 userinfo: a `/`, `@`, `:`
    or `%` in a password would otherwise end or split it). FFmpeg decodes them before it authenticates."""
    if username is None and password is None:
        return url
    parts = urlsplit(url)
    userinfo = quote(username or "", safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


class OpenCVSource(LiveSource):
    name = "opencv"

    def __init__(self, cfg: OpenCVSourceConfig, alarm=None) -> None:
        super().__init__(cfg, alarm)  # buffer, stop, lock, connection state, backoff (LiveSource)
        self.target = redact(cfg.url) if cfg.url is not None else f"device {cfg.device}"
        self._thread = threading.Thread(target=realtime.runs_in("frame", self._run), name="source-opencv", daemon=True)
        # under _lock too (reader thread vs. state()/read()):
        self._delivered = 0
        self._grabbed = 0  # frames put into the buffer; ids continue across reconnects
        self._connected_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Checks the target and starts the reader; a camera that is down now is retried, not refused."""
        try:
            self._check_target()
        except SourceError as e:
            self._refused(e)
            raise
        self._thread.start()

    def _check_target(self) -> None:
        url = self.cfg.url
        if url is not None:
            m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://\S+$", url)
            if m is None:
                raise SourceError(
                    f"opencv source: url {redact(url)!r} is not a URL (expected scheme://host/..., "
                    f"scheme one of {', '.join(URL_SCHEMES)}; for a file use the video source)"
                )
            if m.group(1).lower() not in URL_SCHEMES:
                raise SourceError(
                    f"opencv source: url scheme {m.group(1)!r} is not supported "
                    f"(expected one of {', '.join(URL_SCHEMES)}; for a file use the video source)"
                )

    def stop(self) -> None:
        self._stop.set()
        # A read blocks at most read_timeout and an open at most open_timeout; beyond that the
        # daemon thread is abandoned rather than holding up shutdown.
        if self._thread.is_alive():
            self._thread.join(min(2.0, (self.cfg.read_timeout_ms + 500) / 1000))
        if not self._thread.is_alive():
            self._buf.flush_alarms()

    # -- reader thread --------------------------------------------------------------------------
    def _open(self) -> tuple[cv2.VideoCapture | None, str]:
        """(opened capture, "") or (None, why) within the open timeout."""
        cfg = self.cfg
        try:
            if cfg.url is not None:
                password = cfg.password.get_secret_value() if cfg.password is not None else None
                url = with_credentials(cfg.url, cfg.username, password)
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, cfg.open_timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, cfg.read_timeout_ms,
                ]
                if cfg.url.lower().startswith("rtsp"):
                    with _env_lock:
                        saved = os.environ.get(_FFMPEG_OPTIONS_ENV)
                        os.environ[_FFMPEG_OPTIONS_ENV] = ffmpeg_capture_options(saved, cfg.rtsp_transport)
                        try:
                            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
                        finally:
                            if saved is None:
                                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
                            else:
                                os.environ[_FFMPEG_OPTIONS_ENV] = saved
                else:
                    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
            else:
                # V4L2 rejects the FFmpeg-only timeout properties; the watchdog in state() stands in.
                backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
                cap = cv2.VideoCapture(cfg.device, backend)
        except cv2.error as e:  # its text may quote the URL: redacted
            return None, f"cannot open {self.target}: {redact(str(e))}"
        if not cap.isOpened():
            cap.release()
            if cfg.url is not None:
                return None, (f"cannot open {self.target} within {cfg.open_timeout_ms} ms "
                              "(server down, wrong path, or no video)")
            return None, f"cannot open {self.target} (no such camera, or it is busy)"
        return cap, ""

    def _run(self) -> None:
        backoff = self._backoff
        was_connected = False
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            cap, why = self._open()
            if cap is None:
                detail = f"{why}; attempt {attempt}, next in {backoff.delay_s:.2f} s"
                with self._lock:
                    self._connection = Connection.RECONNECTING if was_connected else Connection.CONNECTING
                    self._detail = detail
                log.warning("opencv source: %s", detail)
                if backoff.wait(self._stop):
                    break
                continue
            if self._stop.is_set():  # stop() came during a long open: do not report "connected"
                cap.release()
                break
            detail = f"connected to {self.target}" + (f" after {attempt} attempts" if attempt > 1 else "")
            with self._lock:
                self._connection = Connection.CONNECTED
                self._connected_at = time.monotonic()
                if was_connected:
                    self._reconnects += 1
                self._detail = detail
            log.info("opencv source: %s", detail)
            was_connected = True
            got_frame, why = self._read_until_lost(cap)
            cap.release()
            if self._stop.is_set():
                break
            if got_frame:
                # The connection worked: start the backoff over. A server that accepts and then
                # fails at once keeps doubling it instead, so it is not hammered.
                backoff.reset()
                attempt = 0
            detail = f"{why}; reconnecting in {backoff.delay_s:.2f} s"
            with self._lock:
                self._connection = Connection.RECONNECTING
                self._detail = detail
            log.warning("opencv source: %s", detail)
            if backoff.wait(self._stop):
                break
        with self._lock:
            self._detail = "stopped"

    def _read_until_lost(self, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Reads into the buffer until the stream fails; (any frame read, why it was lost)."""
        got = False
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok, image = cap.read()
            except cv2.error as e:
                return got, f"read failed on {self.target}: {e}"
            now = time.monotonic()
            if not ok:
                took = now - t
                if took >= _TIMEOUT_SHARE * self.cfg.read_timeout_ms / 1000:
                    return got, (
                        f"no frame from {self.target} for {took:.2f} s (read timeout {self.cfg.read_timeout_ms} ms): "
                        "stream frozen or network down"
                    )
                return got, f"stream from {self.target} ended (connection closed or decode error)"
            got = True
            bgr, why = normalize_image(image)
            if bgr is None:
                with self._lock:
                    self._dropped["bad_frame"] += 1
                    self._detail = f"bad frame from {self.target}: {why}"
                continue
            frame_id = self._grabbed  # only this thread writes it
            self._buf.put(
                Frame(
                    frame_id=frame_id,
                    image=bgr,
                    captured_at=now,
                    captured_wall=time.time(),
                    part_id=f"{self.name}-{frame_id}" if self.cfg.trigger == "triggered" else None,
                    source=self.name,
                )
            )
            with self._lock:
                self._last_frame_at = now
                self._grabbed += 1
        return got, "stopped"

    # -- consumer side --------------------------------------------------------------------------
    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        max_age = self.cfg.max_frame_age_ms / 1000
        while True:
            frame = self._buf.get(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if self.cfg.trigger == "free_run" and time.monotonic() - frame.captured_at > max_age:
                # A live view is useless when old: skip to a fresher frame, counted.
                with self._lock:
                    self._dropped["stale"] += 1
                continue
            with self._lock:
                self._delivered += 1
            return frame

    def state(self) -> SourceState:
        now = time.monotonic()
        with self._lock:
            connection, detail = self._connection, self._detail
            last, since = self._last_frame_at, self._connected_at
            dropped = Counter(self._dropped)
            delivered, reconnects = self._delivered, self._reconnects
        dropped.update(self._buf.counts())
        age = None if last is None else now - last
        # Watchdog: a backend that ignores the read timeout (V4L2) can block in read() for long;
        # no frame for longer than the timeout means the camera is lost, whatever the thread knows.
        silent_since = last if last is not None and since is not None and last >= since else since
        timeout_s = self.cfg.read_timeout_ms / 1000
        if connection == Connection.CONNECTED and silent_since is not None and now - silent_since > 1.5 * timeout_s:
            connection = Connection.RECONNECTING
            detail = (f"no frame from {self.target} for {now - silent_since:.2f} s "
                      f"(read timeout {self.cfg.read_timeout_ms} ms)")
        return SourceState(
            connection=connection,
            frames=delivered,
            dropped=dict(dropped),
            last_frame_age_s=age,
            reconnects=reconnects,
            detail=detail,
        )
