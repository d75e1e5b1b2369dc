"""The nightly uploader: the window (crossing midnight, all day), passes inside it, its thread's priority."""

from __future__ import annotations

import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import pytest

from inspector.config import InspectorConfig
from inspector.review.spool import iter_samples
from inspector.review.upload import NightlyUploader, in_window, parse_window
from tests.review.upload.spooled import base_images_cache, fill_spool


@pytest.mark.parametrize(
    "window, at, inside",
    [
        ("00:00-00:00", "12:00", True),  # start == end: all day
        ("01:00-05:00", "00:59", False),
        ("01:00-05:00", "01:00", True),
        ("01:00-05:00", "04:59", True),
        ("01:00-05:00", "05:00", False),
        ("22:00-02:00", "23:30", True),  # crosses midnight
        ("22:00-02:00", "01:59", True),
        ("22:00-02:00", "02:00", False),
        ("22:00-02:00", "12:00", False),
    ],
)
def test_upload_window(window, at, inside):
    assert in_window(dtime.fromisoformat(at), *parse_window(window)) is inside


def test_the_nightly_uploader_runs_inside_its_window(tmp_path):
    spool = tmp_path / "spool"
    fill_spool(spool, 4, base_images_cache())
    now = {"t": datetime(2031, 1, 1, 12, 0)}
    cfg = InspectorConfig(spool={"dir": spool},
                          upload={"destination": f"file://{tmp_path / 'up'}", "window": "01:00-05:00"})
    nightly = NightlyUploader(cfg, now=lambda: now["t"], poll_s=0.02)
    nightly.start()
    try:
        deadline = time.monotonic() + 20
        while nightly.state()["polls"] < 3 and time.monotonic() < deadline:  # it looked, outside its window
            time.sleep(0.01)
        assert nightly.state()["polls"] >= 3
        assert nightly.state()["passes"] == 0 and len(list(iter_samples(spool))) == 4
        now["t"] = datetime(2031, 1, 2, 1, 30)
        deadline = time.monotonic() + 20
        while nightly.state()["passes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        nightly.stop(5)
    st = nightly.state()
    assert st["passes"] == 1 and st["in_window"] and st["last"]["uploaded"] == 4, st
    assert list(iter_samples(spool)) == []


def test_the_uploader_thread_runs_at_background_priority(tmp_path):
    spool = tmp_path / "spool"
    fill_spool(spool, 1, base_images_cache())
    cfg = InspectorConfig(spool={"dir": spool}, upload={"destination": f"file://{tmp_path / 'up'}",
                                                        "window": "00:00-00:00"}, background={"nice": 13})
    from inspector.kernel import priority

    priority.configure(cfg.background)
    try:
        nightly = NightlyUploader(cfg, poll_s=0.01)
        nightly.start()
        try:
            deadline = time.monotonic() + 20
            while nightly.priority is None and time.monotonic() < deadline:
                time.sleep(0.01)
            tid = nightly._thread.native_id
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5): nice
        finally:
            nightly.stop(5)
    finally:
        priority.configure(type(cfg.background)())
    assert nightly.priority == "nice 13" and nice == 13
