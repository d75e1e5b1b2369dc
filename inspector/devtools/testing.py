"""Fakes and factories for tests of pure logic. Real boundaries (broker, OpenVINO, S3, RTSP)
are never faked: tests start the real thing. Each engineer appends their own helpers below."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from inspector.frames import Frame
from inspector.sources.base import Connection, SourceState


class ObserverSink:
    """A post-thread observer for tests and benchmarks: a VerdictSink with nothing to start, stop or report;
    subclasses say what `submit` records."""

    name = "observer"

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def submit(self, v) -> None:
        raise NotImplementedError


class ListSink:
    """A VerdictSink that keeps every verdict (for asserting on what the pipeline emitted)."""

    name = "list"

    def __init__(self) -> None:
        self.verdicts: list = []
        self._lock = threading.Lock()

    def start(self) -> None:
        pass

    def submit(self, verdict) -> None:
        with self._lock:
            self.verdicts.append(verdict)

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"verdicts": len(self.verdicts)}


class ListSource:
    """A FrameSource over given images, stamped as captured when read (or `age_s` earlier)."""

    name = "list"

    def __init__(self, images: Iterable[Any], part_ids: bool = True, age_s: float = 0.0) -> None:
        self._images = list(images)
        self._i = 0
        self._part_ids = part_ids
        self._age_s = age_s

    def start(self) -> None:
        pass

    def read(self, timeout: float) -> Frame | None:
        if self._i >= len(self._images):
            time.sleep(min(timeout, 0.01))
            return None
        i, self._i = self._i, self._i + 1
        return Frame(frame_id=i, image=self._images[i], captured_at=time.monotonic() - self._age_s,
                     captured_wall=time.time() - self._age_s, part_id=f"P{i}" if self._part_ids else None,
                     source=self.name)

    def stop(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return self._i >= len(self._images)

    def state(self) -> SourceState:
        return SourceState(Connection.ENDED if self.finished else Connection.CONNECTED, frames=self._i)


def blank_image(h: int = 480, w: int = 640) -> np.ndarray:
    return np.full((h, w, 3), 90, np.uint8)


# -- verdict factories (sampling, spool, uploader, gallery tests) -------------------------------
def make_defect(class_name: str = "scratch", confidence: float = 0.9,
                box: tuple[float, float, float, float] = (100.0, 100.0, 160.0, 140.0), class_id: int | None = None):
    from inspector.frames import Defect
    from inspector.sources.conveyor import DEFECT_CLASSES

    if class_id is None:
        class_id = DEFECT_CLASSES.index(class_name) if class_name in DEFECT_CLASSES else 0
    return Defect(class_name=class_name, class_id=class_id, confidence=confidence, box=box)


def synth_frame(index: int = 0, seed: int = 7, *, frame_id: int | None = None, image: np.ndarray | None = None,
                captured_wall: float | None = None) -> Frame:
    """A frame of the synthetic conveyor (part `index` of `seed`), or of `image` when given."""
    if image is None:
        from inspector.sources.conveyor import ConveyorGenerator

        image = ConveyorGenerator(seed).part(index).image
    return Frame(frame_id=index if frame_id is None else frame_id, image=image, captured_at=time.monotonic(),
                 captured_wall=time.time() if captured_wall is None else captured_wall,
                 part_id=f"S{seed}-{index:07d}", source="test")


def make_verdict(frame: Frame | None = None, *, outcome: str = "PASS", defects: tuple = (), uncertain: tuple = (),
                 model=None):
    """A Verdict as the decision stage would make it; `outcome` is PASS, REJECT or LATE."""
    from inspector.frames import ModelInfo, Outcome, Reason, StageTimings, Verdict

    frame = frame if frame is not None else Frame(0, blank_image(), time.monotonic(), time.time())
    out = Outcome(outcome)
    reason = {Outcome.PASS: None, Outcome.REJECT: Reason.DEFECT, Outcome.LATE: Reason.LATE}[out]
    return Verdict(frame=frame, outcome=out, actuate=out is not Outcome.PASS, reason=reason,
                   defects=tuple(defects), uncertain=tuple(uncertain), deadline=frame.captured_at + 0.05,
                   deadline_wall=frame.captured_wall + 0.05, timings=StageTimings(total_ms=12.5),
                   model=model or ModelInfo("demo", "1.0.0", "0" * 64))


# -- MQTT: rejects with real deadlines, and a fake inspector process (publisher tests) ----------
TEST_MODEL_INFO = ("test-model", "0.0.1", "0" * 64)


def make_reject(frame_id: int, *, budget_s: float = 5.0, age_s: float = 0.0, part_id: str | None = None,
                reject: bool = True, latency_ms: float = 12.5):
    """A REJECT (one scratch) or PASS captured `age_s` ago with deadline `captured + budget_s`:
    a negative `budget_s - age_s` makes a reject that is already past its deadline."""
    from inspector.frames import (
        Defect,
        ModelInfo,
        Outcome,
        Reason,
        StageTimings,
        Verdict,
    )

    wall, mono = time.time() - age_s, time.monotonic() - age_s
    frame = Frame(frame_id=frame_id, image=_TINY, captured_at=mono, captured_wall=wall,
                  part_id=part_id if part_id is not None else f"P{frame_id:06d}", source="test")
    defects = (Defect("scratch", 0, 0.91, (10.0, 20.0, 50.0, 60.0)),) if reject else ()
    return Verdict(frame=frame, outcome=Outcome.REJECT if reject else Outcome.PASS, actuate=reject,
                   reason=Reason.DEFECT if reject else None, defects=defects, uncertain=(),
                   deadline=mono + budget_s, deadline_wall=wall + budget_s,
                   timings=StageTimings(total_ms=latency_ms), model=ModelInfo(*TEST_MODEL_INFO))


_TINY = np.zeros((1, 1, 3), np.uint8)


def heartbeat_figures() -> dict:
    return {"last_frame_age_s": 0.1, "p99_ms": 20.0, "frames": 0}


def fake_inspector(argv: list[str] | None = None) -> int:
    """`python -m inspector.devtools.testing fake-inspector --config MQTT.json --n N`: an MqttPublisher fed
    with synthetic rejects, printing JSON lines; the tests SIGKILL it to check the outbox."""
    import argparse
    import json
    import os
    import signal
    from pathlib import Path

    from inspector.config import MQTTConfig
    from inspector.frames import ModelInfo
    from inspector.signalling.publisher import MqttPublisher

    p = argparse.ArgumentParser(prog="fake-inspector")
    p.add_argument("--config", required=True, help="MQTTConfig as a JSON file")
    p.add_argument("--n", type=int, default=0, help="rejects to submit")
    p.add_argument("--rate", type=float, default=200.0, help="rejects per second")
    p.add_argument("--budget-s", type=float, default=5.0)
    p.add_argument("--short-every", type=int, default=0, help="every k-th reject gets --short-budget-s")
    p.add_argument("--short-budget-s", type=float, default=1.0)
    p.add_argument("--first-frame", type=int, default=1)
    p.add_argument("--linger", type=float, default=1e9, help="seconds to keep running after the last reject")
    p.add_argument("--kill-after", type=int, default=0, help="SIGKILL itself right after the k-th submit returns")
    p.add_argument("--burst", type=int, default=0, help="the last BURST rejects back to back (no pause between)")
    a = p.parse_args(argv)
    cfg = MQTTConfig.model_validate_json(Path(a.config).read_text())
    pub = MqttPublisher(cfg, model=ModelInfo(*TEST_MODEL_INFO), config_hash="test", heartbeat_fn=heartbeat_figures)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    pub.start()
    print(json.dumps({"event": "started", "boot": pub.boot, "leftovers": pub.leftovers,
                      "journal_recovered": pub.journal_recovered}), flush=True)
    for i in range(a.n):
        if done.is_set():
            break
        short = a.short_every and i % a.short_every == 0
        pub.submit(make_reject(a.first_frame + i, budget_s=a.short_budget_s if short else a.budget_s))
        if a.kill_after and i + 1 == a.kill_after:  # nothing of the process may run after submit returned
            os.kill(os.getpid(), signal.SIGKILL)
        if i < a.n - a.burst:
            time.sleep(1.0 / a.rate)
    print(json.dumps({"event": "submitted", "n": a.n}), flush=True)
    done.wait(a.linger)
    pub.stop(2.0)
    print(json.dumps({"event": "stopped", "state": pub.state()}), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["fake-inspector"]:
        sys.exit(fake_inspector(sys.argv[2:]))
    print("usage: python -m inspector.devtools.testing fake-inspector --config MQTT.json [--n N] ...", file=sys.stderr)
    sys.exit(2)
