"""The folder source on real image files: name order, every format, corrupt files skipped and
counted (never fatal), pacing, loop, and a clear SourceError for a missing or empty folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import FolderSourceConfig
from inspector.errors import SourceError
from inspector.sources import Connection, open_source
from tests.sources.reading import read_all, started_sources

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


def write_image(path: Path, value: int, shape=(48, 64, 3), dtype=np.uint8) -> Path:
    assert cv2.imwrite(str(path), np.full(shape, value, dtype)), path
    return path


def good_folder(folder: Path) -> list[str]:
    """Five readable images in five formats; returns their stems in name order."""
    folder.mkdir(exist_ok=True)
    write_image(folder / "a.png", 10)
    write_image(folder / "b.JPG", 20)  # upper-case suffix counts
    write_image(folder / "c.bmp", 30)
    write_image(folder / "d.tif", 40)
    write_image(folder / "e.jpeg", 50)
    return ["a", "b", "c", "d", "e"]


def level(frame) -> int:
    return round(float(frame.image.mean()) / 10) * 10


@pytest.fixture
def started():
    yield from started_sources(FolderSourceConfig)


def test_reads_images_in_name_order_then_ends(tmp_path, started):
    stems = good_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (tmp_path / "sub.png").mkdir()  # ignored: not a file

    src = started(path=tmp_path)
    frames = read_all(src)

    assert [f.part_id for f in frames] == stems  # triggered: one part per image, named after it
    assert [level(f) for f in frames] == [10, 20, 30, 40, 50]
    assert [f.frame_id for f in frames] == list(range(5))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert src.finished
    st = src.state()
    assert st.connection == Connection.ENDED and st.frames == 5 and not st.dropped


def test_corrupt_images_are_skipped_counted_and_logged(tmp_path, started, caplog):
    good_folder(tmp_path)
    (tmp_path / "a2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG" * 20)  # garbage
    png = cv2.imencode(".png", np.full((48, 64, 3), 99, np.uint8))[1].tobytes()
    (tmp_path / "b2.png").write_bytes(png[: len(png) // 2])  # cut short
    (tmp_path / "c2.jpg").write_bytes(b"")  # empty
    (tmp_path / "d2.tiff").write_text("plain text under an image name")

    caplog.set_level(logging.WARNING, logger="inspector.sources.folder")
    src = started(path=tmp_path)
    frames = read_all(src)

    assert [f.part_id for f in frames] == ["a", "b", "c", "d", "e"]
    st = src.state()
    assert st.dropped == {"corrupt": 4}
    assert st.connection == Connection.ENDED
    assert "d2.tiff" in st.detail  # the last one skipped, in words
    logged = caplog.text
    for name in ("a2.jpg", "b2.png", "c2.jpg", "d2.tiff"):
        assert name in logged


_READ_AS = """
import json, sys
from inspector.config import FolderSourceConfig
from inspector.sources import open_source
from tests.sources.reading import read_all
src = open_source(FolderSourceConfig(path=sys.argv[1]))
src.start()
frames = read_all(src)
src.stop()
print(json.dumps({"frames": [f.part_id for f in frames], "dropped": src.state().dropped,
                  "detail": src.state().detail}))
"""


# Root reads any file whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): as root the source runs in a
# child process without those two capabilities (util-linux setpriv), as a service user without them would.
_NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def test_unreadable_file_is_skipped_and_counted(tmp_path):
    good_folder(tmp_path)
    write_image(tmp_path / "b1.png", 70).chmod(0)
    as_root = os.geteuid() == 0
    run = subprocess.run([*(_NO_DAC if as_root else []), sys.executable, "-c", _READ_AS, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["frames"] == ["a", "b", "c", "d", "e"], got  # b1.png (between b and c) skipped
    assert got["dropped"] == {"unreadable": 1} and "b1.png" in got["detail"], got


def test_grey_stays_grey_sixteen_bit_and_alpha_images_become_8_bit(tmp_path, started):
    write_image(tmp_path / "1-grey.png", 80, shape=(30, 40))
    write_image(tmp_path / "2-deep.tif", 0x5000, shape=(30, 40), dtype=np.uint16)
    write_image(tmp_path / "3-alpha.png", 90, shape=(30, 40, 4))

    frames = read_all(started(path=tmp_path))

    # Grey files stay 1 channel: the detector converts them once, in its letterbox (issue 11).
    assert [f.image.shape for f in frames] == [(30, 40), (30, 40), (30, 40, 3)]
    assert all(f.image.dtype == np.uint8 for f in frames)
    assert [int(f.image.flat[0]) for f in frames] == [80, 0x50, 90]


def test_paced_images_are_stamped_at_their_slots(tmp_path, started):
    good_folder(tmp_path)
    src = started(path=tmp_path, parts_per_s=20, trigger="free_run", queue_size=16)
    frames = read_all(src)
    assert len(frames) == 5
    gaps = np.diff([f.captured_at for f in frames])
    assert gaps == pytest.approx([0.05] * 4, abs=0.005)
    assert all(f.part_id is None for f in frames)


def test_loop_repeats_with_distinct_part_ids(tmp_path, started):
    write_image(tmp_path / "x.png", 10)
    write_image(tmp_path / "y.png", 20)
    src = started(path=tmp_path, loop=True)
    frames = [src.read(timeout=2.0) for _ in range(5)]
    assert [f.part_id for f in frames] == ["x", "y", "x-r1", "y-r1", "x-r2"]
    assert not src.finished


def test_loop_over_only_corrupt_images_ends_instead_of_spinning(tmp_path, started):
    (tmp_path / "bad.png").write_bytes(b"nope")
    src = started(path=tmp_path, loop=True)
    assert read_all(src) == []
    assert src.finished
    st = src.state()
    assert st.dropped == {"corrupt": 1} and "no readable image" in st.detail


def test_fast_triggered_waits_for_a_slow_consumer(tmp_path):
    good_folder(tmp_path)
    src = open_source(FolderSourceConfig(path=tmp_path, queue_size=1))
    # Observed, not slept on: the buffer's length at each put, and the reader arriving at a full buffer.
    at_put: list[int] = []
    blocked = threading.Event()
    put, wait_for_room = src._buf.put, src._wait_for_room

    def recording_put(frame):
        at_put.append(len(src._buf))
        return put(frame)

    def recording_wait():
        if len(src._buf) >= 1:
            blocked.set()
        return wait_for_room()

    src._buf.put, src._wait_for_room = recording_put, recording_wait
    src.start()
    try:
        assert blocked.wait(30), "the reader never met a full buffer"
        # The reader holds its second image and waits: nothing more was put.
        assert len(src._buf) == 1 and src.state().frames == 1
        assert len(read_all(src)) == 5 and not src.state().dropped
        assert at_put == [0] * 5, at_put  # every put found room: none was forced into a full buffer
    finally:
        src.stop()


# -- bad folders ---------------------------------------------------------------------------------
def test_missing_folder_is_a_clear_error(tmp_path):
    src = open_source(FolderSourceConfig(path=tmp_path / "nowhere"))
    with pytest.raises(SourceError, match=r"nowhere does not exist \(expected a folder of images\)"):
        src.start()
    assert src.state().connection == Connection.FAILED and "nowhere" in src.state().detail
    src.stop()


def test_a_file_is_not_a_folder(tmp_path):
    f = write_image(tmp_path / "one.png", 1)
    with pytest.raises(SourceError, match=r"one\.png is not a folder"):
        open_source(FolderSourceConfig(path=f)).start()


@pytest.mark.parametrize("others", [0, 2])
def test_folder_without_images_is_a_clear_error(tmp_path, others):
    for i in range(others):
        (tmp_path / f"readme{i}.txt").write_text("x")
    with pytest.raises(SourceError, match=rf"holds no images \(expected files ending in .jpg.*found {others} other"):
        open_source(FolderSourceConfig(path=tmp_path)).start()
