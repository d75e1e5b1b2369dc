"""Golden parts: a reference whose verdict is known, inspected through the same path as the line's parts.

A model can be wrong in ways no statistic of the input shows (a corrupted IR, a threshold typo, a
camera that moved). A golden part checks the whole inspection end to end (issue 14):

- image mode (`golden.parts[].image`): every `every_s` a timer thread hands the reference image to
  the pipeline (`Pipeline.inject`), which puts it through the same letterbox, model and decision
  when the line is idle (no part for 50 ms), or right after a part once it has waited
  `golden.idle_wait_s`: never in front of a part. The frame is tagged (`Frame.golden`): its
  verdict goes to `GoldenParts.check` instead of the sinks, so it is never actuated, published or
  counted as a part, and it does not feed the drift guard (it is the reference, not the stream).
- part-id mode (`golden.parts[].part_id`, triggered lines): a physical golden part on the belt is a
  part like any other (published, actuated); this observer on the post thread checks its verdict.

The check compares the model's own judgement (defects found or not), not the verdict after
`decision.on_drift` (a golden part inspected while the line is held is still judged). A wrong one
raises `golden_part_failed`; a LATE one is counted as not judged (the next period tries again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspector.config import GoldenConfig, GoldenPartConfig
from inspector.errors import ConfigError
from inspector.frames import Frame, Outcome, Reason, Verdict
from inspector.service import realtime

log = logging.getLogger(__name__)

AlarmFn = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class GoldenPart:
    name: str
    expect: str  # PASS | REJECT
    image: np.ndarray | None  # image mode
    part_id: str | None  # part-id mode
    every_s: float


def judged(v: Verdict) -> str:
    """The model's own judgement of a verdict's frame: REJECT (defects found), PASS, LATE (not judged in
    time) or ERROR (not inspected)."""
    if v.reason is Reason.ERROR:
        return "ERROR"
    if v.outcome is Outcome.LATE:
        return "LATE"
    return "REJECT" if v.defects else "PASS"


def load_parts(cfg: GoldenConfig) -> list[GoldenPart]:
    parts = []
    for i, p in enumerate(cfg.parts):
        img = None
        if p.image is not None:
            img = cv2.imread(str(p.image), cv2.IMREAD_COLOR)
            if img is None:
                raise ConfigError(f"golden.parts[{i}].image: cannot read {p.image} as an image "
                                  f"({'missing' if not p.image.exists() else 'not a readable image file'})")
        parts.append(GoldenPart(_name(p), p.expect, img, p.part_id, p.every_s))
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise ConfigError(f"golden.parts: names must be unique, got {names}")
    return parts


def _name(p: GoldenPartConfig) -> str:
    return p.name or (p.image.name if p.image is not None else str(p.part_id))


class GoldenParts:
    """The timer (image mode), the check (post thread) and the counts (any thread reads `state`).

    A VerdictSink in form (start/submit/stop/state): the service hands it to the pipeline beside the
    sinks for the part-id mode, and `check` as the pipeline's golden callback for the image mode."""

    name = "golden"

    def __init__(self, cfg: GoldenConfig, inject: Callable[[Frame], None] | None, alarm: AlarmFn | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parts = load_parts(cfg)
        self._inject = inject
        self._alarm = alarm
        self._clock = clock
        self._by_id = {p.part_id: p for p in self.parts if p.part_id is not None}
        self._by_name = {p.name: p for p in self.parts}
        self._lock = threading.Lock()
        self.results: Counter[str] = Counter()  # ok | failed | late
        self.last: dict[str, dict[str, Any]] = {}  # name -> the last check
        self._pending: set[str] = set()  # image parts handed to the pipeline and not judged yet
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="golden", daemon=True)

    @property
    def images(self) -> list[GoldenPart]:
        return [p for p in self.parts if p.image is not None]

    # -- timer thread (image mode) ----------------------------------------------------------------
    def start(self) -> None:
        if self.images and self._inject is not None:
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        realtime.enter("service")  # below the frame path (service/realtime.py)
        due = {p.name: self._clock() + p.every_s for p in self.images}
        while not self._stop.is_set():
            now = self._clock()
            for p in self.images:
                if now >= due[p.name]:
                    due[p.name] = now + p.every_s
                    self.offer(p)
            self._stop.wait(max(0.05, min(due.values()) - self._clock()))

    def offer(self, p: GoldenPart) -> bool:
        """Hands one golden image to the pipeline (not if the last one is still waiting for its verdict)."""
        with self._lock:
            if p.name in self._pending:
                return False
            self._pending.add(p.name)
            self._seq += 1
            frame_id = -self._seq  # never a line frame's id (those count up from 0)
        self._inject(Frame(frame_id=frame_id, image=p.image, captured_at=time.monotonic(), captured_wall=time.time(),
                           source="golden", golden=p.name))
        return True

    # -- post thread ------------------------------------------------------------------------------
    def check(self, v: Verdict) -> None:
        """The verdict of a golden frame (image mode): compared, counted, alarmed when wrong."""
        with self._lock:
            self._pending.discard(v.frame.golden or "")
        p = self._by_name.get(v.frame.golden or "")
        if p is not None:
            self._check(p, v)

    def submit(self, v: Verdict) -> None:
        """Every production verdict (part-id mode): a golden part on the belt is checked."""
        if self._by_id and v.part_id is not None:
            p = self._by_id.get(v.part_id)
            if p is not None:
                self._check(p, v)

    def _check(self, p: GoldenPart, v: Verdict) -> None:
        got = judged(v)
        result = "late" if got == "LATE" else ("ok" if got == p.expect else "failed")
        record = {"name": p.name, "expected": p.expect, "got": got, "result": result, "at": time.time(),
                  "frame_id": v.frame_id, "part_id": v.part_id,
                  "defects": [{"class": d.class_name, "confidence": round(d.confidence, 4)} for d in v.defects],
                  "model": f"{v.model.name}@{v.model.version}"}
        if v.error:
            record["error"] = v.error
        with self._lock:
            self.results[result] += 1
            self.last[p.name] = record
        if result == "failed":
            log.error("golden part %s: expected %s, the model said %s (%s)", p.name, p.expect, got, record["defects"])
            if self._alarm is not None:
                try:
                    self._alarm("golden_part_failed", {k: record[k] for k in record if k != "at"})
                except Exception:  # an alarm path must not stop the post thread
                    log.exception("golden_part_failed alarm could not be raised")
        else:
            log.info("golden part %s: %s (expected %s, got %s)", p.name, result, p.expect, got)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"ok": self.results["ok"], "failed": self.results["failed"], "late": self.results["late"],
                    "last": {k: dict(v) for k, v in self.last.items()}}
