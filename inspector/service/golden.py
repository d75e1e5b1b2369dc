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

A golden part that is not judged (ok or failed) for `max_interval_s` is overdue: one
`golden_part_overdue` alarm per episode and the `golden` health check red until it is judged again.
In part-id mode that is a part that never comes (100 000 verdicts without it used to raise nothing);
in image mode a check that is always LATE (a saturated line) or never injected. Without
`golden.max_interval_s`, image parts are watched at 3 x every_s + idle_wait_s (three missed
periods; the injection itself may wait idle_wait_s) and part-id parts are not watched (the plant
decides how often its golden part passes; logged at start). The timer thread watches.
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
from inspector.kernel import realtime

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
        # name -> seconds without a judged check after which the part is overdue (None: not watched)
        self.max_interval = {p.name: _interval(cfg, p) for p in self.parts}
        self._started_at: float | None = None
        self._judged_at: dict[str, float] = {}  # name -> clock() of its last ok/failed check
        self._overdue: dict[str, float] = {}  # name -> clock() it became overdue
        self.overdue_alarms = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="golden", daemon=True)

    @property
    def images(self) -> list[GoldenPart]:
        return [p for p in self.parts if p.image is not None]

    # -- timer thread (image mode) ----------------------------------------------------------------
    def start(self) -> None:
        self._started_at = self._clock()
        unwatched = [n for n, s in self.max_interval.items() if s is None]
        if unwatched:
            log.warning("golden parts %s: not watched for coming too rarely (set golden.max_interval_s)", unwatched)
        if (self.images and self._inject is not None) or len(unwatched) < len(self.parts):
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        realtime.enter("service")  # below the frame path (kernel/realtime.py)
        offering = self.images if self._inject is not None else []
        due = {p.name: self._clock() + p.every_s for p in offering}
        while not self._stop.is_set():
            now = self._clock()
            for p in offering:
                if now >= due[p.name]:
                    due[p.name] = now + p.every_s
                    self.offer(p)
            next_overdue = self.check_overdue()
            wake = min([*due.values(), next_overdue if next_overdue is not None else now + 1.0])
            self._stop.wait(max(0.05, wake - self._clock()))

    def check_overdue(self) -> float | None:
        """Raises `golden_part_overdue` for each watched part not judged within its max interval (once per
        episode); returns the clock() time the next part becomes overdue (None: none watched)."""
        if self._started_at is None:
            return None
        now, nxt, raised = self._clock(), None, []
        with self._lock:
            for name, limit in self.max_interval.items():
                if limit is None or name in self._overdue:
                    continue
                since = self._judged_at.get(name, self._started_at)
                if now - since > limit:
                    self._overdue[name] = now
                    self.overdue_alarms += 1
                    last = self.last.get(name)
                    raised.append({"name": name, "mode": "image" if self._by_name[name].image is not None
                                   else "part_id", "part_id": self._by_name[name].part_id,
                                   "max_interval_s": limit, "since_s": round(now - since, 1),
                                   "never_judged": name not in self._judged_at,
                                   "last_result": None if last is None else last["result"],
                                   "late": self.results["late"]})
                else:
                    nxt = since + limit if nxt is None else min(nxt, since + limit)
        for detail in raised:
            log.error("golden part %s overdue: not judged for %.0f s (max %.0f s)", detail["name"], detail["since_s"],
                      detail["max_interval_s"])
            if self._alarm is not None:
                try:
                    self._alarm("golden_part_overdue", detail)
                except Exception:  # an alarm path must not stop the timer
                    log.exception("golden_part_overdue alarm could not be raised")
        return nxt

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
        back = None
        with self._lock:
            self.results[result] += 1
            self.last[p.name] = record
            if result != "late":  # judged, right or wrong: the part came and the model looked at it
                self._judged_at[p.name] = self._clock()
                back = self._overdue.pop(p.name, None)
        if back is not None:
            log.warning("golden part %s judged again after being overdue (%s)", p.name, result)
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
        now = self._clock()
        with self._lock:
            return {"ok": self.results["ok"], "failed": self.results["failed"], "late": self.results["late"],
                    "last": {k: dict(v) for k, v in self.last.items()},
                    "overdue": sorted(self._overdue), "overdue_alarms": self.overdue_alarms,
                    "max_interval_s": dict(self.max_interval),
                    "since_judged_s": {n: None if self._started_at is None else
                                       round(now - self._judged_at.get(n, self._started_at), 1)
                                       for n in self.max_interval}}


def _interval(cfg: GoldenConfig, p: GoldenPart) -> float | None:
    """Seconds without a judged check after which `p` is overdue (see the module doc)."""
    if cfg.max_interval_s is not None:
        return cfg.max_interval_s
    return 3 * p.every_s + cfg.idle_wait_s if p.image is not None else None
