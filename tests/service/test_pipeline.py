"""The pipeline on real OpenVINO: every frame gets exactly one verdict, late ones fail safe,
bad frames are counted and never stop the line, all verdicts reach the sinks on one thread, and a
model that stalls or fails still gives every part its verdict by its deadline, with `model_failed`.
"""

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle.load import load_bundle
from inspector.config import DecisionConfig
from inspector.devtools.testing import ListSink, ListSource, blank_image
from inspector.frames import Frame, Outcome, Reason
from inspector.inference.decision import DecisionPolicy
from inspector.inference.detector import Detector
from inspector.service.pipeline import Pipeline
from inspector.sources.base import Connection, SourceState
from inspector.sources.conveyor import ConveyorGenerator
from tests.inference.faults import HeldDetector, RefusingDetector

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(MODEL, "int8")


@pytest.fixture(scope="module")
def detector(bundle):
    return bundle, Detector(bundle, conf=policy_for(bundle).conf_floor)


def policy_for(bundle, budget_ms=5000.0, **kw):
    return DecisionPolicy.build(DecisionConfig(budget_ms=budget_ms, **kw), bundle.classes, bundle.thresholds)


class Alarms:
    def __init__(self) -> None:
        self.raised: list[tuple[str, dict]] = []

    def __call__(self, kind, detail) -> None:
        self.raised.append((kind, detail))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.raised]


class ThreadSink(ListSink):
    """Keeps each verdict with the name of the thread that handed it over."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def submit(self, verdict) -> None:
        self.threads.add(threading.current_thread().name)
        super().submit(verdict)


class FrameListSource(ListSource):
    """Hands over the given frames as they are (e.g. parts whose image the source dropped)."""

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__([f.image for f in frames])
        self._frames = frames

    def read(self, timeout: float) -> Frame | None:
        f = super().read(timeout)
        return None if f is None else replace(self._frames[f.frame_id], captured_at=time.monotonic(),
                                              captured_wall=time.time())


class FeedSource:
    """Frames appear only when the test puts them (a camera the test triggers)."""

    name = "feed"

    def __init__(self) -> None:
        self._q: list[Frame] = []
        self._cv = threading.Condition()
        self._n = 0
        self.closed = False

    def put(self, image, part=True) -> None:
        with self._cv:
            part_id = f"P{self._n}" if part else None
            self._q.append(Frame(self._n, image, time.monotonic(), time.time(), part_id=part_id))
            self._n += 1
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify()

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def read(self, timeout: float) -> Frame | None:
        with self._cv:
            self._cv.wait_for(lambda: self._q or self.closed, timeout)
            return self._q.pop(0) if self._q else None

    @property
    def finished(self) -> bool:
        return self.closed and not self._q

    def state(self) -> SourceState:
        return SourceState(Connection.CONNECTED, frames=self._n)


def run(detector, source, budget_ms=5000.0, sinks=None, alarm=None, **kw):
    bundle, det = detector
    sink = ListSink()
    p = Pipeline(source, det, policy_for(bundle, budget_ms, **kw), [sink, *(sinks or [])], alarm=alarm)
    p.start()
    assert p.done.wait(60), "pipeline did not finish"
    p.stop()
    p.raise_if_failed()
    return p, sink.verdicts


def wait_until(predicate, timeout=30.0):
    """Waits for a condition that has no event of its own (checked every 10 ms)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_every_frame_gets_one_verdict_in_order_of_ids(detector):
    gen = ConveyorGenerator(99)
    parts = [gen.part(i) for i in range(12)]
    p, verdicts = run(detector, ListSource([x.image for x in parts]))
    assert sorted(v.frame_id for v in verdicts) == list(range(12))
    assert p.stats.frames == 12
    for v in verdicts:
        t = v.timings
        assert t.total_ms >= t.infer_ms > 0 and t.preprocess_ms >= 0
        assert v.outcome in (Outcome.PASS, Outcome.REJECT)
    snap = p.snapshot()
    assert (snap.frames_read, snap.verdicts, snap.in_flight, snap.unanswered) == (12, 12, 0, 0)
    assert snap.model_ok and not snap.stalled and snap.discarded_results == 0


def test_frames_already_past_their_deadline_fail_safe_without_inference(detector):
    p, verdicts = run(detector, ListSource([blank_image()] * 5, age_s=1.0), budget_ms=100)
    assert [v.outcome for v in verdicts] == [Outcome.LATE] * 5
    assert all(v.actuate and v.reason is Reason.LATE and v.timings.infer_ms == 0 for v in verdicts)
    assert p.stats.outcomes["LATE"] == 5


def test_on_late_pass_does_not_actuate(detector):
    _, verdicts = run(detector, ListSource([blank_image()] * 3, age_s=1.0), budget_ms=100, on_late="pass")
    assert all(v.outcome is Outcome.LATE and not v.actuate for v in verdicts)


def test_bad_frames_are_counted_and_parts_fail_safe(detector):
    # (a 2-D gray frame is a frame since issue 11: a 2-channel one is not)
    images = [blank_image(), np.zeros((480, 640, 2), np.uint8), np.zeros((10, 10, 3), np.float32), blank_image()]
    p, verdicts = run(detector, ListSource(images))
    assert len(verdicts) == 4
    bad = [v for v in verdicts if v.reason is Reason.ERROR]
    assert len(bad) == 2 and all(v.actuate for v in bad)
    assert p.stats.dropped["bad_frame"] == 2


def test_bad_frames_without_a_part_are_dropped_not_rejected(detector):
    p, verdicts = run(detector, ListSource([np.zeros((5, 5), np.uint8), blank_image()], part_ids=False))
    assert len(verdicts) == 1 and p.stats.dropped["bad_frame"] == 1
    assert p.snapshot().unanswered == 0


@pytest.mark.parametrize("case, source, budget_ms", [
    ("inferred", lambda: ListSource([blank_image()] * 3), 5000),
    ("late at read", lambda: ListSource([blank_image()] * 3, age_s=1.0), 100),
    ("not a frame", lambda: ListSource([np.zeros((480, 640), np.uint8)] * 3), 5000),
    ("image dropped", lambda: FrameListSource([Frame(i, None, 0.0, 0.0, part_id=f"P{i}", dropped="queue_full")
                                               for i in range(3)]), 5000),
])
def test_every_verdict_reaches_stats_and_sinks_on_the_post_thread(detector, case, source, budget_ms):
    sink = ThreadSink()
    p, verdicts = run(detector, source(), budget_ms=budget_ms, sinks=[sink])
    assert len(sink.verdicts) == 3 and p.stats.frames == 3, case
    assert sink.threads == {"pipeline-post"}, f"{case}: verdicts handed over on {sink.threads}"


def test_a_part_whose_image_was_dropped_gets_the_fail_safe_verdict_without_inference(detector, bundle):
    det = RefusingDetector(bundle, conf=policy_for(bundle).conf_floor, fail=set(), warmup=0)
    frames = [Frame(0, blank_image(), 0.0, 0.0, part_id="P0"),
              Frame(1, None, 0.0, 0.0, part_id="P1", dropped="queue_full"),
              Frame(2, blank_image(), 0.0, 0.0, part_id="P2")]
    p, verdicts = run((bundle, det), FrameListSource(frames))
    by_id = {v.frame_id: v for v in verdicts}
    assert sorted(by_id) == [0, 1, 2]
    v = by_id[1]
    assert v.outcome is Outcome.REJECT and v.actuate and v.reason is Reason.ERROR
    assert "queue_full" in v.error and v.timings.infer_ms == 0
    assert det.starts == 2  # the image-less part never reached OpenVINO
    assert p.stats.uninspected == {"queue_full": 1} and "bad_frame" not in p.stats.dropped


def test_a_stalled_model_still_gives_every_part_its_verdict_by_its_deadline(bundle):
    """OpenVINO's completions are held back (a device that stops answering): each part in inference
    gets LATE at its deadline from the watchdog, the part that finds no free request gets LATE at
    its own deadline, `model_failed` is raised once, and the results that come back afterwards are
    discarded and counted, never a second verdict."""
    policy = policy_for(bundle, budget_ms=1500)
    det = HeldDetector(bundle, conf=policy.conf_floor, async_requests=2, warmup=0)
    src, sink, alarms = FeedSource(), ThreadSink(), Alarms()
    p = Pipeline(src, det, policy, [sink], alarm=alarms, stuck_after_s=0.2)
    p.start()
    try:
        src.put(blank_image())
        assert det.held.wait(30), "inference never completed"
        snap = p.snapshot()
        assert snap.in_flight == 1 and snap.oldest_in_flight_age_s is not None and snap.verdicts == 0
        src.put(blank_image())
        src.put(blank_image())  # both requests are held: this one waits for a request until its deadline
        src.close()
        assert p.done.wait(30), "the watchdog did not answer the parts in inference"
        assert [v.outcome for v in sink.verdicts] == [Outcome.LATE] * 3
        assert all(v.actuate and v.reason is Reason.LATE for v in sink.verdicts)
        assert sink.threads == {"pipeline-post"}
        assert alarms.kinds() == ["model_failed"] and alarms.raised[0][1]["what"] == "inference stuck"
        snap = p.snapshot()
        assert not snap.model_ok and snap.model_failures == 1 and snap.late_in_flight == 3
        assert snap.in_flight == 0 and snap.busiest_request_s is not None
    finally:
        det.release.set()
    assert det.wait_idle(30)
    p.stop()
    p.raise_if_failed()
    snap = p.snapshot()
    assert len(sink.verdicts) == 3 and snap.discarded_results == 2
    assert snap.model_ok, "the model answered again"
    assert alarms.kinds() == ["model_failed"]


@pytest.mark.parametrize("budget_ms", [2.0, 6.0, 12.0])
def test_exactly_one_verdict_per_frame_when_inference_races_the_deadline(detector, budget_ms):
    """Budgets around one inference (~5 ms): completions, the watchdog and the wait for a free
    request race for the same frames; each frame still gets one verdict, and every inference that
    lost the race is discarded, counted, not turned into a second verdict."""
    bundle, det = detector
    sink = ThreadSink()
    p = Pipeline(ListSource([blank_image()] * 30), det, policy_for(bundle, budget_ms), [sink])
    p.start()
    assert p.done.wait(60)
    assert det.wait_idle(30)  # inferences that lost the race have come back (and been counted)
    p.stop()
    p.raise_if_failed()
    ids = [v.frame_id for v in sink.verdicts]
    assert sorted(ids) == list(range(30)), "one verdict per frame"
    snap = p.snapshot()
    late = sum(v.outcome is Outcome.LATE for v in sink.verdicts)
    assert snap.discarded_results <= snap.late_in_flight <= late
    assert snap.in_flight == 0 and snap.unanswered == 0 and sink.threads == {"pipeline-post"}


@pytest.mark.parametrize("fail, alarms_raised, errors", [
    (None, 1, 4),  # every inference refused: one episode
    ({0, 1}, 1, 2),  # then the model answers: the episode ends
    ({0, 2}, 2, 2),  # failed, answered, failed again: a second alarm
    (set(), 0, 0),
])
def test_failed_inference_gives_an_error_verdict_and_raises_model_failed(bundle, fail, alarms_raised, errors):
    policy = policy_for(bundle)
    det = RefusingDetector(bundle, conf=policy.conf_floor, fail=fail, async_requests=1, warmup=0)
    alarms = Alarms()
    # One request: the submits run in order, so `fail` names the frames that fail.
    p, verdicts = run((bundle, det), ListSource([blank_image()] * 4), alarm=alarms)
    failed = sorted(v.frame_id for v in verdicts if v.reason is Reason.ERROR)
    assert len(verdicts) == 4 and len(failed) == errors
    assert all(v.actuate and "inference failed" in v.error and "input tensor size" in v.error
               for v in verdicts if v.reason is Reason.ERROR)
    assert p.stats.errors == errors
    assert alarms.kinds() == ["model_failed"] * alarms_raised
    assert p.snapshot().model_ok == (fail is not None and max(fail, default=-1) < 3)


def test_verdicts_that_stop_while_frames_arrive_show_as_stalled(detector):
    """A sink that blocks holds the post thread: frames are read, no verdict comes out."""
    bundle, det = detector
    gate = threading.Event()

    class BlockingSink(ListSink):
        def submit(self, verdict) -> None:
            gate.wait(60)
            super().submit(verdict)

    src, sink = FeedSource(), BlockingSink()
    p = Pipeline(src, det, policy_for(bundle, budget_ms=50), [sink])
    p.start()
    try:
        src.put(blank_image())
        src.put(blank_image())
        assert wait_until(lambda: p.snapshot().stalled), "never reported stalled"
        snap = p.snapshot()
        assert snap.frames_read == 2 and snap.unanswered == 2 and len(sink.verdicts) == 0
        assert snap.oldest_unanswered_age_s > snap.stall_after_s
    finally:
        gate.set()
    src.close()
    assert p.done.wait(30)
    p.stop()
    snap = p.snapshot()
    assert not snap.stalled and snap.unanswered == 0 and snap.verdicts == 2


def test_a_detector_that_would_cut_defects_is_refused(bundle):
    with pytest.raises(ValueError, match="lowest class threshold"):
        Pipeline(ListSource([]), Detector(bundle, conf=0.9, warmup=0), policy_for(bundle), [])


def test_latency_samples_keep_the_last_n_in_a_bounded_array():
    from inspector.service.pipeline import _Ring

    r = _Ring(4)
    assert len(r) == 0 and r.values().size == 0
    for x in range(1, 7):
        r.append(float(x))
    assert len(r) == 4 and sorted(r.values().tolist()) == [3.0, 4.0, 5.0, 6.0]
    assert r.values().nbytes == 4 * 8
