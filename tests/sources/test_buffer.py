"""The frame buffer's back-pressure: memory is bounded in both modes, and in triggered mode every
part that arrives at a full buffer still gets a verdict (fail safe) and an alarm.

Before: a triggered buffer grew without bound when the detector fell behind (`sources/base.py`)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.config import DecisionConfig, SyntheticSourceConfig
from inspector.devtools.testing import ListSink
from inspector.frames import Frame, Reason
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import Detector
from inspector.kernel.alarms import ALARM_KINDS
from inspector.service.pipeline import Pipeline
from inspector.sources import open_source
from inspector.sources.base import FrameBuffer
from tests.waiting import wait_for

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"
IMAGE = np.zeros((8, 8, 3), np.uint8)


def frame(i: int) -> Frame:
    return Frame(frame_id=i, image=IMAGE, captured_at=float(i), captured_wall=1e9 + i, part_id=f"p{i}", source="t")




@pytest.mark.parametrize(
    "mode, maxsize, backlog, n, kept_ids, imageless_ids, dropped",
    [
        # free_run: the freshest frames win; the oldest are overwritten.
        ("free_run", 3, None, 7, [4, 5, 6], [], {"overwritten": 4}),
        # triggered, within the bound: nothing happens to anybody.
        ("triggered", 4, 100, 4, [0, 1, 2, 3], [], {}),
        # triggered, past queue_size: every part is kept in order; only the first queue_size keep images.
        ("triggered", 2, 100, 6, [0, 1, 2, 3, 4, 5], [2, 3, 4, 5], {"queue_full": 4}),
        # triggered, past max_backlog too: the oldest image-less parts are given up, images stay.
        ("triggered", 2, 4, 7, [0, 1, 5, 6], [5, 6], {"queue_full": 5, "backlog_full": 3}),
        # backlog == queue_size: an arriving part that finds every slot holding an image is given up itself.
        ("triggered", 2, 2, 4, [0, 1], [], {"queue_full": 2, "backlog_full": 2}),
    ],
)
def test_buffer_is_bounded_and_keeps_every_part_it_can(mode, maxsize, backlog, n, kept_ids, imageless_ids, dropped):
    alarms: list[tuple[str, dict]] = []
    buf = FrameBuffer(mode, maxsize, max_backlog=backlog, alarm=lambda k, d: alarms.append((k, d)), source="t")
    for i in range(n):
        buf.put(frame(i))
    out = []
    while (f := buf.get(0.0)) is not None:
        out.append(f)
    assert [f.frame_id for f in out] == kept_ids
    assert [f.frame_id for f in out if f.image is None] == imageless_ids
    assert all(f.dropped == "queue_full" for f in out if f.image is None)
    assert all(f.dropped is None and f.image is IMAGE for f in out if f.image is not None)
    assert sum(f.image is not None for f in out) <= maxsize
    assert buf.counts() == dropped
    buf.flush_alarms()
    assert all(k in ALARM_KINDS for k, _ in alarms)
    if "queue_full" in dropped:
        summed = sum(d.get("count", 1) for k, d in alarms if "part_id" in d)
        assert summed == dropped["queue_full"], alarms  # throttled: the first at once, the rest summed
    lost = [pid for k, d in alarms for pid in d.get("parts_without_verdict", [])]
    if mode == "triggered":  # free_run frames are not parts: overwriting one owes nobody a verdict
        assert lost == [f"p{i}" for i in range(n) if i not in kept_ids], "every part given up is named"
    else:
        assert lost == [] and alarms == []


def test_a_stalled_pipeline_cannot_grow_memory_without_bound():
    buf = FrameBuffer("triggered", 4, max_backlog=64)
    big = np.zeros((480, 640, 3), np.uint8)
    for i in range(10_000):
        buf.put(Frame(frame_id=i, image=big.copy(), captured_at=0.0, captured_wall=0.0, part_id=f"p{i}"))
    assert len(buf) == 64 and buf.high_water == 64
    assert buf.counts() == {"queue_full": 9996, "backlog_full": 9936}


def test_the_first_queue_full_alarm_goes_out_at_once_with_the_part():
    alarms: list[tuple[str, dict]] = []
    buf = FrameBuffer("triggered", 1, max_backlog=10, alarm=lambda k, d: alarms.append((k, d)), source="cam")
    buf.put(frame(0))
    assert alarms == []
    buf.put(frame(1))
    assert [k for k, _ in alarms] == ["queue_full"]
    assert alarms[0][1]["part_id"] == "p1" and alarms[0][1]["source"] == "cam"


@pytest.fixture(scope="module")
def detector():
    b = load_bundle(MODEL, "int8")
    return b, Detector(b, conf=0.05)


def test_parts_past_the_bound_get_the_fail_safe_verdict(detector):
    """The synthetic line in triggered mode runs ahead of a pipeline that has not started (a
    detector that fell behind): the parts past queue_size lose their image, never their verdict."""
    n, queue_size = 8, 2
    alarms: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def alarm(kind, detail):
        with lock:
            alarms.append((kind, detail))

    src = open_source(SyntheticSourceConfig(trigger="triggered", parts_per_s=1000, queue_size=queue_size,
                                            width=320, height=240), max_frames=n, alarm=alarm)
    src.start()
    try:
        wait_for(lambda: src.state().frames == n, 30, f"{n} frames")
        assert src.state().dropped == {"queue_full": n - queue_size}
        bundle, det = detector
        policy = DecisionPolicy.build(DecisionConfig(budget_ms=60_000), bundle.classes, bundle.thresholds)
        sink = ListSink()
        p = Pipeline(src, det, policy, [sink], max_frames=n)
        p.start()
        assert p.done.wait(60), "pipeline did not finish"
        p.stop()
        p.raise_if_failed()
    finally:
        src.stop()
    verdicts = sorted(sink.verdicts, key=lambda v: v.frame_id)
    assert [v.frame_id for v in verdicts] == list(range(n)), "every part gets exactly one verdict"
    imageless = [v for v in verdicts if v.frame.image is None]
    assert [v.frame_id for v in imageless] == list(range(queue_size, n))
    for v in imageless:
        assert v.actuate and v.reason in (Reason.ERROR, Reason.LATE), v  # fail safe: rejected
        assert v.frame.dropped == "queue_full" and v.part_id is not None
    with lock:
        kinds = [k for k, _ in alarms]
    assert kinds and set(kinds) == {"queue_full"}
