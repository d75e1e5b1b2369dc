"""The spool on a real disk: the hard size bound under a sustained stream, eviction accounting and
alarms, crash leftovers (hand-made and from a SIGKILLed writer), and what a sample contains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import (
    RateLimitsConfig,
    SamplingConfig,
    SpoolConfig,
    StrategyConfig,
)
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.frames import ModelInfo
from inspector.review.sampler import SampleDecision
from inspector.review.spool import SamplingSink, Spool, disk_usage, iter_samples
from inspector.sources.conveyor import ConveyorGenerator

MIB = 1024 * 1024
MODEL = ModelInfo("demo", "1.2.3", "ab" * 32)
DECISION = SampleDecision(("uncertain", "reject"), 0x1234, 0.0)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    g = ConveyorGenerator(21)
    return [g.part(i).image for i in range(6)]


class Alarms:
    def __init__(self) -> None:
        self.raised: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def __call__(self, kind: str, detail: dict) -> None:
        with self._lock:
            self.raised.append((kind, detail))

    def count(self, kind: str) -> int:
        return sum(d.get("count", 1) for k, d in self.raised if k == kind)


def test_disk_use_never_exceeds_max_bytes_under_a_sustained_stream(tmp_path, images):
    spool_dir = tmp_path / "spool"
    alarms = Alarms()
    everything = StrategyConfig(rate=1.0, limits=RateLimitsConfig(per_minute=100_000, per_hour=1_000_000,
                                                                  per_day=10_000_000))
    sink = SamplingSink(
        SamplingConfig(uncertain=everything, rejects=everything, passes=everything, dedup_window_s=0, seed=3),
        SpoolConfig(dir=spool_dir, max_bytes=1 * MIB, jpeg_quality=90, queue_size=8),
        model=MODEL, config_hash="c0ffee", alarm=alarms, alarm_interval_s=0.0,
    )
    sink.start()
    peak = 0
    watching = True

    def watch() -> None:  # an independent observer of the real disk while the writer works
        nonlocal peak
        while watching:
            peak = max(peak, disk_usage(spool_dir))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(120):
            v = make_verdict(synth_frame(i, image=images[i % len(images)]), outcome="REJECT",
                             defects=(make_defect(),), uncertain=(make_defect("pit", 0.41),))
            sink.submit(v)
            peak = max(peak, disk_usage(spool_dir))
            if i % 10 == 9:
                # Bursts of 10 into 8 slots, so that the queue fills; then wait until it drained (the
                # writer runs at background priority and may be slow beside other work) so that
                # enough is written to overflow max_bytes and evict.
                assert sink.drain(30), "expected the writer to drain its queue within 30 s"
        assert sink.drain(30), "expected the writer to drain its queue within 30 s"
    finally:
        watching = False
        watcher.join()
        sink.stop()
    st = sink.state()
    final = disk_usage(spool_dir)
    assert peak <= MIB and final <= MIB, f"expected disk use <= {MIB} bytes, peak {peak}, final {final}"
    assert st["bytes"] == final, f"expected the spool's count {st['bytes']} to equal the disk's {final}"
    assert st["written"] + st.get("dropped_queue_full", 0) == st["sampled"]["reject"] == 120
    assert st["evicted"] > 0 and st["evicted"] == st["evicted_unuploaded"]
    assert st["written"] - st["evicted"] == st["samples"] == len(list(iter_samples(spool_dir)))
    assert alarms.count("spool_evicted_unuploaded") == st["evicted_unuploaded"]


def _verdict(i: int, images, wall: float | None = None):
    return make_verdict(synth_frame(i, image=images[i % len(images)], captured_wall=wall), outcome="REJECT",
                        defects=(make_defect(),))


def test_evicting_uploaded_samples_raises_no_alarm(tmp_path, images):
    alarms = Alarms()
    spool = Spool(SpoolConfig(dir=tmp_path, max_bytes=MIB, jpeg_quality=90), alarm=alarms, alarm_interval_s=0.0)
    spool.open()
    first = [spool.write(_verdict(i, images), DECISION) for i in range(6)]
    for s in first[:4]:
        s.mark_uploaded()  # what the uploader does once the objects are verified
    while spool.state().get("evicted", 0) < 6:
        spool.write(_verdict(7, images), DECISION)
    st = spool.state()
    assert st["evicted"] == 6 and st["evicted_unuploaded"] == 2
    assert alarms.count("spool_evicted_unuploaded") == 2
    assert not any(s.sidecar.exists() or s.marker.exists() for s in first)
    assert disk_usage(tmp_path) <= MIB


def test_alarms_are_throttled_but_counted(tmp_path, images):
    alarms = Alarms()
    spool = Spool(SpoolConfig(dir=tmp_path, max_bytes=MIB, jpeg_quality=90), alarm=alarms, alarm_interval_s=3600)
    spool.open()
    for i in range(40):
        spool.write(_verdict(i, images), DECISION)
    n = spool.state()["evicted_unuploaded"]
    assert n > 2 and len(alarms.raised) == 1, "expected one alarm at once, the rest held back"
    spool.flush_alarms()
    assert len(alarms.raised) == 2 and alarms.count("spool_evicted_unuploaded") == n


def test_uploaded_space_is_reused_before_evicting(tmp_path, images):
    alarms = Alarms()
    spool = Spool(SpoolConfig(dir=tmp_path, max_bytes=MIB, jpeg_quality=90), alarm=alarms, alarm_interval_s=0.0,
                  rescan_min_s=0.0)
    spool.open()
    written = [spool.write(_verdict(i, images), DECISION) for i in range(8)]
    for s in written:  # another process uploads everything and frees the payloads
        s.mark_uploaded()
        s.drop_payload()
    for i in range(8):
        spool.write(_verdict(i, images), DECISION)
    assert spool.state().get("evicted_unuploaded", 0) == 0 and not alarms.raised


@pytest.mark.parametrize(
    "files, kept",
    [
        ({}, set()),  # empty spool
        ({"a.jpg.tmp": b"x" * 10}, set()),  # a temp file of an interrupted write
        ({"a.jpg": b"j", "a.txt": b"t"}, set()),  # crashed before its sidecar: incomplete
        ({"a.jpg": b"j", "a.txt": b"t", "a.json": b"{}"}, {"a.jpg", "a.txt", "a.json"}),  # complete
        ({"a.json": b"{}", "a.uploaded": b""}, {"a.json", "a.uploaded"}),  # uploaded, manifest pending
        ({"a.uploaded": b"", "a.jpg": b"j"}, set()),  # upload clean-up cut short
        ({"a.jpg": b"j", "a.txt": b"t", "a.json": b"{}", "a.json.tmp": b"{", "b.jpg": b"j", "b.txt.tmp": b"t"},
         {"a.jpg", "a.txt", "a.json"}),
    ],
)
def test_crash_leftovers_are_cleaned_at_start(tmp_path, files, kept):
    day = tmp_path / "2031-01-02"
    day.mkdir()
    for name, data in files.items():
        (day / name).write_bytes(data)
    spool = Spool(SpoolConfig(dir=tmp_path), alarm=Alarms())
    spool.open()
    left = set(os.listdir(day)) if day.exists() else set()
    assert left == kept, f"expected {sorted(kept)} to remain, got {sorted(left)}"
    assert spool.used_bytes == disk_usage(tmp_path)


_WRITER = """
import sys, time
from pathlib import Path
from inspector.config import SpoolConfig
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.sources.conveyor import ConveyorGenerator
img = ConveyorGenerator(5).part(0).image
spool = Spool(SpoolConfig(dir=Path(sys.argv[1]), max_bytes=4 * 1024 * 1024), alarm=lambda k, d: None)
spool.open()
print("ready", flush=True)
i = 0
while True:
    spool.write(make_verdict(synth_frame(i, image=img), outcome="REJECT", defects=(make_defect(),)),
                SampleDecision(("reject",), 0, 0.0))
    i += 1
"""


def test_a_killed_writer_leaves_only_complete_samples_after_open(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(list(iter_samples(tmp_path))) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    spool = Spool(SpoolConfig(dir=tmp_path), alarm=Alarms())
    spool.open()
    samples = list(iter_samples(tmp_path))
    assert len(samples) >= 10
    for day in tmp_path.iterdir():
        for name in os.listdir(day):
            assert not name.endswith(".tmp"), f"expected no temp files after open(), found {name}"
            stem = name.rsplit(".", 1)[0]
            assert (day / f"{stem}.json").exists(), f"expected {name} to belong to a complete sample"
    for s in samples:
        assert s.image.exists() and s.labels.exists()
        assert cv2.imdecode(np.frombuffer(s.image.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is not None
        assert s.read_sidecar()["image"]["bytes"] == s.image.stat().st_size


def test_a_sample_holds_frame_labels_and_sidecar(tmp_path, images):
    spool = Spool(SpoolConfig(dir=tmp_path, jpeg_quality=75), alarm=Alarms(), config_hash="cafe1234")
    spool.open()
    frame = synth_frame(42, image=images[0], captured_wall=1_900_000_000.25)
    defects = (make_defect("crack", 0.93, (320.0, 240.0, 384.0, 288.0)),)
    uncertain = (make_defect("pit", 0.41, (-10.0, 0.0, 54.0, 48.0)),)  # partly outside: clipped
    s = spool.write(make_verdict(frame, outcome="REJECT", defects=defects, uncertain=uncertain, model=MODEL), DECISION)
    assert s is not None and s.date == "2030-03-17" and s.image.parent == tmp_path / "2030-03-17"
    img = cv2.imdecode(np.frombuffer(s.image.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    rows = [line.split() for line in s.labels.read_text().splitlines()]
    assert rows == [["2", "0.550000", "0.550000", "0.100000", "0.100000"],
                    ["1", "0.042188", "0.050000", "0.084375", "0.100000"]]
    side = json.loads(s.sidecar.read_text())
    assert side["reasons"] == ["uncertain", "reject"] and side["reason"] == "uncertain"
    assert side["model"] == {"name": "demo", "version": "1.2.3", "sha256": "ab" * 32}
    assert side["config_hash"] == "cafe1234"
    assert (side["frame_id"], side["part_id"]) == (42, "S7-0000042")
    assert side["captured_at"] == "2030-03-17T17:46:40.250Z"
    assert side["verdict"]["outcome"] == "REJECT" and side["verdict"]["actuate"] is True
    assert [d["class"] for d in side["defects"]] == ["crack"] and side["uncertain"][0]["confidence"] == 0.41
    assert side["image"]["bytes"] == s.image.stat().st_size and side["image"]["jpeg_quality"] == 75


@pytest.mark.parametrize("task, fmt, labels", [
    ("detect", "yolo", "2 0.550000 0.550000 0.100000 0.100000\n1 0.042188 0.050000 0.084375 0.100000\n"),
    ("classify", "classes", "2\n1\n"),  # a whole-image class: its id, once
])
def test_a_samples_pre_labels_are_in_the_format_of_the_model_kind_that_judged_it(tmp_path, images, task, fmt,
                                                                                 labels):
    spool = Spool(SpoolConfig(dir=tmp_path), alarm=Alarms())
    spool.open()
    found = (make_defect("crack", 0.93, (320.0, 240.0, 384.0, 288.0)),
             make_defect("pit", 0.41, (-10.0, 0.0, 54.0, 48.0)), make_defect("crack", 0.71, (0.0, 0.0, 64.0, 48.0)))
    v = replace(make_verdict(synth_frame(1, image=images[0]), outcome="REJECT", defects=found[:1],
                             uncertain=found[1:], model=MODEL), task=task)
    s = spool.write(v, DECISION)
    want = labels if task == "classify" else labels + "2 0.050000 0.050000 0.100000 0.100000\n"
    assert s.labels.read_text() == want
    assert json.loads(s.sidecar.read_text())["labels"] == {"file": s.labels.name, "format": fmt}


def test_a_write_error_is_counted_and_alarmed_and_the_spool_goes_on(tmp_path, images):
    alarms = Alarms()
    spool = Spool(SpoolConfig(dir=tmp_path), alarm=alarms, alarm_interval_s=0.0)
    spool.open()
    (tmp_path / "2030-03-17").write_text("not a directory")  # the date folder cannot be created
    assert spool.write(_verdict(1, images, wall=1_900_000_000.0), DECISION) is None
    assert spool.state()["write_errors"] == 1 and alarms.count("spool_write_failed") == 1
    assert spool.write(_verdict(2, images, wall=1_900_100_000.0), DECISION) is not None


def test_a_sample_the_uploader_already_removed_is_not_counted_as_evicted(tmp_path, images):
    """Before: `p is not s.marker` compared a Path with a freshly built one, always true, so a sample
    of which only the 0-byte marker was left (the uploader's clean-up cut short) counted as evicted."""
    alarms = Alarms()
    spool = Spool(SpoolConfig(dir=tmp_path, max_bytes=MIB, jpeg_quality=90), alarm=alarms, alarm_interval_s=0.0)
    spool.open()
    first = [spool.write(_verdict(i, images), DECISION) for i in range(6)]
    for s in first[:3]:  # the uploader stored them and got as far as the marker in remove()
        s.mark_uploaded()
        for p in (s.sidecar, s.labels, s.image):
            p.unlink()
    spool._rescan_min_s = float("inf")  # evict from the index as it was, as between two rescans
    while spool.state().get("evicted", 0) < 3:
        spool.write(_verdict(7, images), DECISION)
    st = spool.state()
    assert st["evicted"] == 3 and st["evicted_unuploaded"] == 3, st  # the three real ones, not six
    assert not any(s.marker.exists() for s in first[:3]), "the marker left behind is cleaned"
    assert alarms.count("spool_evicted_unuploaded") == 3


def test_a_part_without_an_image_is_not_sampled(tmp_path, images):
    from dataclasses import replace

    sink = SamplingSink(SamplingConfig(seed=1), SpoolConfig(dir=tmp_path), model=MODEL, config_hash="c",
                        alarm=Alarms())
    sink.start()
    try:
        v = _verdict(1, images)
        dropped = replace(v, frame=replace(v.frame, image=None, dropped="queue_full"))
        sink.submit(dropped)  # a part whose image the source dropped: nothing to review or encode
        assert sink.drain(10)
    finally:
        sink.stop()
    st = sink.state()
    assert st["no_image"] == 1 and st.get("sampler_errors", 0) == 0 and st["samples"] == 0


@pytest.mark.parametrize("policy, nice, expect_nice, expect_policy", [
    ("nice", 12, 12, os.SCHED_OTHER),
    ("idle", 10, None, os.SCHED_IDLE),
    ("off", 10, None, os.SCHED_OTHER),
])
def test_the_spool_writer_runs_at_background_priority(tmp_path, policy, nice, expect_nice, expect_policy):
    from inspector.config import BackgroundConfig
    from inspector.kernel import priority

    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    priority.configure(BackgroundConfig(priority=policy, nice=nice))
    try:
        sink = SamplingSink(SamplingConfig(seed=1), SpoolConfig(dir=tmp_path), model=MODEL, config_hash="c",
                            alarm=Alarms())
        sink.start()
        try:
            deadline = time.monotonic() + 10
            while sink.priority is None and time.monotonic() < deadline:  # set first thing on the writer
                time.sleep(0.005)
            tid = sink._thread.native_id
            stat = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            thread_nice, thread_policy = int(stat[16]), os.sched_getscheduler(tid)  # proc(5) field 19: nice
        finally:
            sink.stop()
    finally:
        priority.configure(BackgroundConfig())
    assert thread_nice == (expect_nice if expect_nice is not None else base_nice), sink.priority
    assert thread_policy == expect_policy, sink.priority
    assert os.getpriority(os.PRIO_PROCESS, 0) == base_nice, "only the writer thread is lowered"
