"""The video source on real files written with cv2.VideoWriter: order, pacing, loop, back-pressure,
and a clear SourceError for a file that is missing or not a video."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import VideoSourceConfig
from inspector.errors import SourceError
from inspector.sources import Connection, open_source
from tests.sources.reading import read_all, started_sources

pytestmark = pytest.mark.timeout(30)

N_FRAMES = 20
FPS = 20.0


def write_video(path: Path, n: int = N_FRAMES, fps: float = FPS, size=(160, 120)) -> Path:
    """An MJPG .avi whose frame i is a flat grey of level 6*i (its index survives JPEG)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened(), "this OpenCV build cannot write MJPG .avi"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 6 * i, np.uint8))
    w.release()
    return path


def level(frame) -> int:
    return round(float(frame.image.mean()) / 6)


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_video(tmp_path / "clip.avi")


@pytest.fixture
def started():
    yield from started_sources(VideoSourceConfig)


def test_fast_reads_every_frame_in_order_then_ends(clip, started):
    before = time.time()
    src = started(path=clip, pace="fast")
    frames = read_all(src)
    after = time.time()

    assert [f.frame_id for f in frames] == list(range(N_FRAMES))
    assert [level(f) for f in frames] == list(range(N_FRAMES))
    assert [f.part_id for f in frames] == [f"clip-{i}" for i in range(N_FRAMES)]  # triggered by default
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(a.captured_at <= b.captured_at for a, b in pairwise(frames))
    assert before <= frames[0].captured_wall <= frames[-1].captured_wall <= after  # wall-clock stamps, in order
    assert src.finished
    st = src.state()
    assert st.connection == Connection.ENDED and st.frames == N_FRAMES and not st.dropped


def test_native_pace_follows_the_files_fps(clip, started):
    src = started(path=clip, pace="native", trigger="free_run", queue_size=64)
    t0 = time.monotonic()
    frames = read_all(src)
    elapsed = time.monotonic() - t0

    assert len(frames) == N_FRAMES
    assert all(f.part_id is None for f in frames)  # free_run: frames are not parts
    span = frames[-1].captured_at - frames[0].captured_at
    assert span == pytest.approx((N_FRAMES - 1) / FPS, abs=0.02)  # stamped at their slots
    assert elapsed >= 0.9 * (N_FRAMES - 1) / FPS


def test_fast_triggered_waits_for_a_slow_consumer_and_drops_nothing(clip, started):
    src = started(path=clip, pace="fast", trigger="triggered", queue_size=2)
    frames = []
    deadline = time.monotonic() + 10
    while not src.finished and time.monotonic() < deadline:
        if (f := src.read(timeout=0.05)) is not None:
            frames.append(f)
            time.sleep(0.01)  # slower than the decoder
    assert [f.frame_id for f in frames] == list(range(N_FRAMES))
    assert not src.state().dropped


def test_native_free_run_overwrites_when_the_consumer_stalls(clip, started):
    src = started(path=clip, pace="native", trigger="free_run", queue_size=2)
    # The whole clip plays while nobody reads: wait until the source handed over its last frame.
    deadline = time.monotonic() + 10
    while src.state().frames < N_FRAMES and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.state().frames == N_FRAMES, src.state()
    frames = read_all(src, timeout=0.5)
    assert [f.frame_id for f in frames] == [N_FRAMES - 2, N_FRAMES - 1]  # the freshest survive
    assert src.state().dropped == {"overwritten": N_FRAMES - 2}


def test_loop_starts_again_with_new_ids(clip, started):
    src = started(path=clip, pace="fast", loop=True)
    frames = [src.read(timeout=2.0) for _ in range(2 * N_FRAMES + 5)]

    assert [f.frame_id for f in frames] == list(range(2 * N_FRAMES + 5))
    assert [level(f) for f in frames] == [i % N_FRAMES for i in range(2 * N_FRAMES + 5)]
    assert len({f.part_id for f in frames}) == len(frames)  # part ids stay unique across loops
    assert not src.finished and src.state().connection == Connection.CONNECTED


def test_stop_ends_a_looping_source_quickly(clip, started):
    src = started(path=clip, pace="native", loop=True)
    assert src.read(timeout=2.0) is not None
    src.stop()
    assert not src._thread.is_alive()  # ended within stop()'s bounded join, not abandoned mid-clip


# -- unreadable videos ---------------------------------------------------------------------------
def _garbage(tmp_path: Path) -> Path:
    p = tmp_path / "garbage.avi"
    p.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    return p


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    return p


def _text(tmp_path: Path) -> Path:
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    return p


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.mp4"


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "dir.avi").mkdir()
    return tmp_path / "dir.avi"


@pytest.mark.parametrize(
    "make, expected",
    [
        (_missing, r"nope\.mp4 does not exist \(expected a video file"),
        (_folder, r"dir\.avi is not a file \(expected a video file"),
        (_empty, r"empty\.mp4 (cannot be opened as a video|opened but no frame)"),
        (_text, r"notes\.mp4 (cannot be opened as a video|opened but no frame)"),
        (_garbage, r"garbage\.avi (cannot be opened as a video|opened but no frame)"),
    ],
)
def test_unreadable_video_gives_a_clear_source_error(tmp_path, make, expected):
    src = open_source(VideoSourceConfig(path=make(tmp_path)))
    with pytest.raises(SourceError, match=expected) as e:
        src.start()
    assert "expected" in str(e.value)
    assert src.state().connection == Connection.FAILED and src.state().detail == str(e.value)
    src.stop()  # stopping a source that never started is harmless


def test_truncated_video_plays_what_it_has(tmp_path, started):
    full = write_video(tmp_path / "full.avi", n=40).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full[: len(full) // 2])  # an upload that died half-way
    src = started(path=cut, pace="fast")
    frames = read_all(src)
    assert 0 < len(frames) < 40
    assert src.finished and src.state().connection == Connection.ENDED
