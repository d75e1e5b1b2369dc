"""What the file-backed source tests share: sources started per test and stopped after it, and reading
until the source says it is finished."""

from __future__ import annotations

import time

from inspector.sources import open_source


def started_sources(make_config):
    """Body of a `started` fixture: `start(...)` opens and starts the source `make_config(...)` describes
    (a config class and its fields, or `lambda cfg: cfg`); all are stopped after the test."""
    sources = []

    def start(*args, **kw):
        src = open_source(make_config(*args, **kw))
        src.start()
        sources.append(src)
        return src

    yield start
    for s in sources:
        s.stop()


def read_all(src, limit: int = 1000, timeout: float = 2.0) -> list:
    """Frames until the source is finished, or until none came for `timeout` seconds."""
    frames = []
    quiet_since = time.monotonic()
    while not src.finished and len(frames) < limit and time.monotonic() - quiet_since < timeout:
        f = src.read(timeout=0.05)  # short polls, as the pipeline does, so `finished` is seen at once
        if f is not None:
            frames.append(f)
            quiet_since = time.monotonic()
    return frames
