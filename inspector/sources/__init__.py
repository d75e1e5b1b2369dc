"""Frame sources behind one protocol; `open_source` builds the one the config names."""

from __future__ import annotations

from inspector.sources.base import Connection, FrameBuffer, FrameSource, SourceState

__all__ = ["Connection", "FrameBuffer", "FrameSource", "SourceState", "open_source"]


def open_source(cfg, max_frames: int | None = None) -> FrameSource:
    """Builds (does not start) the source for a `source:` config section."""
    kind = cfg.kind
    if kind == "synthetic":
        from inspector.sources.synthetic import SyntheticSource

        return SyntheticSource(cfg, max_frames=max_frames)
    if kind == "video":
        from inspector.sources.video import VideoSource

        return VideoSource(cfg)
    if kind == "folder":
        from inspector.sources.folder import FolderSource

        return FolderSource(cfg)
    if kind == "opencv":
        from inspector.sources.opencv import OpenCVSource

        return OpenCVSource(cfg)
    raise ValueError(f"unknown source kind {kind!r}")
