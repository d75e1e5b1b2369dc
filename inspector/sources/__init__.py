"""Frame sources behind one protocol; `open_source` builds the one the config names."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from inspector.config import SOURCE_KINDS
from inspector.sources.base import Connection, FrameBuffer, FrameSource, SourceState

__all__ = ["Connection", "FrameBuffer", "FrameSource", "SourceState", "open_source"]

# kind -> (module, class), imported lazily: a line that reads RTSP never imports a camera SDK.
IMPLEMENTATIONS = {
    "synthetic": ("inspector.sources.synthetic", "SyntheticSource"),
    "video": ("inspector.sources.video", "VideoSource"),
    "folder": ("inspector.sources.folder", "FolderSource"),
    "opencv": ("inspector.sources.opencv", "OpenCVSource"),
    "genicam": ("inspector.sources.genicam", "GenICamSource"),  # optional extra: Aravis via gi
}
assert set(IMPLEMENTATIONS) == set(SOURCE_KINDS), "every config source kind needs an implementation"


def open_source(cfg, max_frames: int | None = None,
                alarm: Callable[[str, dict[str, Any]], None] | None = None) -> FrameSource:
    """Builds (does not start) the source for a `source:` config section. `alarm(kind, detail)` receives
    the source's alarms (`queue_full` in triggered mode); the service passes its AlarmHub's raise_alarm."""
    try:
        module, name = IMPLEMENTATIONS[cfg.kind]
    except KeyError:
        raise ValueError(f"source.kind: expected one of {sorted(IMPLEMENTATIONS)}, got {cfg.kind!r}") from None
    cls = getattr(importlib.import_module(module), name)
    if cfg.kind == "synthetic":
        return cls(cfg, max_frames=max_frames, alarm=alarm)
    return cls(cfg, alarm=alarm)
