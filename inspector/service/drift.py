"""The input drift guard on the frame path: statistics on the infer thread, state on the post thread.

`DriftMonitor` wraps `inference.drift_guard.DriftGuard` for the pipeline (issue 14; contract in
docs/contracts.md, "Input drift guard and golden parts"):

- `stats(image)` runs on the infer thread right after the frame was handed to inference: OpenVINO
  infers with the GIL released, so the ~0.13 ms of numpy/OpenCV (benchmarks/test_drift_guard.py,
  1280x720) is taken from the infer thread's idle time, not from the part's latency.
- `observe(verdict, stats, top_confidence, judge)` runs on the post thread before the verdict goes to
  the sinks: it updates the guard, raises `input_drift` when the stream leaves the envelope and
  `input_restored` (which clears it) when it is back, and applies `decision.on_drift`
  (`decision.under_drift`) to that very verdict. So the alarm and the first held verdict are the same
  frame: no part is emitted as a PASS after the alarm while `hold`/`reject` is configured.
- `snapshot()` is what the report reads (a frozen dict swapped by reference; any thread).

The envelope is the model card's `input_envelope`; without one the image checks are off (one log
line at start) and `snapshot()` says so. On a model switch the guard restarts on the new card's
envelope (a drift in progress is cleared with `input_restored`, `why: model switched`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from inspector.bundle.card import ModelCard
from inspector.bundle.envelope import WEAK_BELOW, Envelope, weak_below_for
from inspector.config import DriftConfig
from inspector.frames import ModelInfo, Verdict
from inspector.inference.decision import under_drift
from inspector.inference.drift_guard import (
    FRAME_STAT,
    PSI_STAT,
    DriftGuard,
    DriftState,
    OutputGuard,
    OutputState,
    Unmeasured,
    frame_stats,
    unmeasured,
)

log = logging.getLogger(__name__)

AlarmFn = Callable[[str, dict[str, Any]], None]


def envelope_of(card: ModelCard | None) -> Envelope | None:
    """The card's envelope, None when it has none (or there is no card: a bare .xml). Parsed once, with the
    card (`inspector.bundle.card.ModelCard`): a malformed one refused the bundle before it got here."""
    return None if card is None else card.envelope


class DriftMonitor:
    """One per pipeline. `stats` on the infer thread, `observe` on the post thread (one owner each)."""

    def __init__(self, cfg: DriftConfig, on_drift: str, card: ModelCard | None, model: ModelInfo,
                 alarm: AlarmFn | None = None) -> None:
        self.cfg, self.on_drift, self._alarm = cfg, on_drift, alarm
        self.entered = 0
        self.cleared = 0
        # The statistics go from the infer thread to the post thread through this deque, in no pairing with
        # the verdicts: the infer thread measures a frame after handing it to OpenVINO, and when OpenVINO's
        # threads (real-time, issue 20) hold both cores until the result, the verdict reaches the post
        # thread first, systematically (measured: 60 of 60 frames; pairing by frame id then measured
        # nothing). The post thread feeds the guard whatever was measured since the last verdict. A frame
        # is never lost: at most it counts one verdict later.
        self._fresh: deque[np.ndarray | Unmeasured] = deque()
        self.measured = 0  # stats() results (infer thread)
        self.observed = 0  # production verdicts seen (post thread)
        self._since: float | None = None
        self.output_entered = 0
        self.output_cleared = 0
        self._output_since: float | None = None
        self._size_warned = False
        self._bind(card, model)

    def _bind(self, card: ModelCard | None, model: ModelInfo) -> None:
        # Everything that can raise comes first: a guard that cannot be built leaves the monitor bound to the
        # model it had (model, envelope and guard always belong together).
        env = envelope_of(card)
        guard = None if env is None else DriftGuard(
            env, window=self.cfg.window, enter_after=self.cfg.enter_after, clear_after=self.cfg.clear_after,
            psi_window=self.cfg.psi_window, psi_threshold=self.cfg.psi_threshold)
        # The output guard (issue 21): the card's output reference when its envelope has one, else the run's
        # first output_baseline judged parts; it watches even a model whose card has no envelope.
        output = None if not self.cfg.output else OutputGuard(
            env.output if env is not None else None, window=self.cfg.output_window,
            baseline=self.cfg.output_baseline, alpha=self.cfg.output_alpha, clear_after=self.cfg.output_window,
            weak_below=WEAK_BELOW if card is None else weak_below_for(card.task, len(card.classes)))
        self.output = output
        self._output_last: OutputState | None = None
        self.model = model
        self.envelope = env
        if env is None:
            self.guard = None
            self.why_off = "the model card has no input_envelope"
            log.warning("input drift guard off: model %s %s has no input_envelope in its card "
                        "(`inspector model envelope` writes one)", model.name, model.version)
        else:
            self.guard = guard
            self.why_off = None
            log.info("input drift guard on: %d statistics of model %s %s's envelope (%s), on_drift %s",
                     len(env.bounds), model.name, model.version,
                     ", ".join(env.source.get("families", [])) or "clean images only", self.on_drift)
        # (state, medians, their names) swapped by reference, read by snapshot: the names travel with the
        # medians because a model switch replaces `guard` before it clears `_last`, and a snapshot taken
        # in between must not label the old guard's medians with the new guard's statistics.
        self._last: tuple[DriftState, np.ndarray | None, list[str]] | None = None

    # -- infer thread ---------------------------------------------------------------------------
    def stats(self, image: np.ndarray) -> None:
        """Measures the frame for the guard: its statistics, or `Unmeasured` (outside the envelope) when
        it does not hold the envelope's region or cannot be measured at all. Queued for the post thread
        (`_fresh`), not returned: the pipeline's pairing by frame id lost them (see __init__)."""
        env = self.envelope
        if env is None:
            return None
        self._fresh.append(self._measure(image, env))
        self.measured += 1
        return None

    def _measure(self, image: np.ndarray, env: Envelope) -> np.ndarray | Unmeasured:
        miss = unmeasured(image, env)
        if miss is not None:
            return miss
        if env.frame_size and not self._size_warned and tuple(env.frame_size) != (image.shape[1], image.shape[0]):
            self._size_warned = True  # the statistics sample ~160 px whatever the size: comparable, but say it
            log.warning("input drift guard: frames are %dx%d, the envelope was measured on %dx%d frames",
                        image.shape[1], image.shape[0], *env.frame_size)
        try:
            return frame_stats(image, env.roi, env.sample_width)
        except ValueError as e:  # not a BGR uint8 frame or a region too small: outside the envelope
            return Unmeasured(FRAME_STAT, "an HxWx3 (BGR) or HxW uint8 frame, region >= 16x16 px", str(e))

    # -- post thread ----------------------------------------------------------------------------
    def observe(self, v: Verdict, stats: np.ndarray | None, top_confidence: float | None, judge=None) -> Verdict:
        """Updates the guard with one production frame and returns its verdict under `on_drift`."""
        if judge is not None and v.model != self.model and judge.model == v.model:
            self._switch(judge)
        guard, output = self.guard, self.output
        acting = False
        self.observed += 1
        if guard is not None:
            # What the infer thread measured since the last verdict (`_fresh`), and `stats` when a caller
            # measured this frame itself. Frames settled without inference (LATE before it started, no
            # image) are never measured: `unobserved` in the report.
            if stats is not None:
                self._fresh.append(stats)
                self.measured += 1
            if top_confidence is not None:  # judged by the model
                guard.add_confidence(top_confidence)
            state = guard.state
            while self._fresh:
                state = guard.update(self._fresh.popleft())
                if state.changed:
                    self._changed(state, v)
                self._last = (state, guard._med, guard._names)  # the report builds its dict on the reader's thread
            acting = self._acting(state)
        if output is not None:
            ostate = output.state
            if top_confidence is not None:  # judged by the model (a LATE or failed frame has no output)
                ostate = output.update(top_confidence, bool(v.defects))
                if ostate.changed:
                    self._output_changed(ostate, v)
                self._output_last = ostate
            acting = acting or ostate.in_drift
        if acting:
            return under_drift(v, self.on_drift)
        return v

    def _output_changed(self, state: OutputState, v: Verdict) -> None:
        now = time.monotonic()
        if state.in_drift:
            self.output_entered += 1
            self._output_since = now
            kind = "output_drift"
            ref = self.output.reference if self.output is not None else {}
            detail = {**state.detail(), "action": self.on_drift, "window": self.cfg.output_window,
                      "reference": {k: {"share": round(sh, 4), "from": src} for k, (sh, src) in ref.items()}}
        else:
            self.output_cleared += 1
            kind = "output_restored"
            detail = {"frames": state.frames,
                      "drift_s": None if self._output_since is None else round(now - self._output_since, 3)}
            self._output_since = None
        self._raise(kind, detail, v)

    def _raise(self, kind: str, detail: dict, v: Verdict) -> None:
        """One alarm of the input or output guard, stamped with the part it was seen on."""
        detail.update(frame_id=v.frame_id, part_id=v.part_id, model=f"{v.model.name}@{v.model.version}")
        log.warning("%s: %s", kind, detail)
        if self._alarm is not None:
            try:
                self._alarm(kind, detail)
            except Exception:  # an alarm path must not stop the verdicts
                log.exception("%s alarm could not be raised", kind)

    def _acting(self, state: DriftState) -> bool:
        return state.in_drift and (self.cfg.psi_acts or state.statistic != PSI_STAT)

    def _changed(self, state: DriftState, v: Verdict) -> None:
        now = time.monotonic()
        if state.in_drift:
            self.entered += 1
            self._since = now
            kind = "input_drift"
            detail = {**state.detail(), "action": self.on_drift if self._acting(state) else "alarm",
                      "psi": None if state.psi is None else round(state.psi, 4)}
        else:
            self.cleared += 1
            kind = "input_restored"
            detail = {"frames": state.frames, "drift_s": None if self._since is None else round(now - self._since, 3)}
            self._since = None
        self._raise(kind, detail, v)

    def _switch(self, judge) -> None:
        was = self.guard is not None and self.guard.state.in_drift
        was_output = self.output is not None and self.output.state.in_drift
        old = self.model
        self._bind(judge.runner.bundle.card, judge.model)
        self._fresh.clear()  # measured against the old envelope
        if was_output:
            self.output_cleared += 1
            self._output_since = None
            if self._alarm is not None:
                self._alarm("output_restored", {"why": "model switched", "model": f"{old.name}@{old.version}",
                                                "to": f"{judge.model.name}@{judge.model.version}"})
        if was:
            self.cleared += 1
            self._since = None
            if self._alarm is not None:
                self._alarm("input_restored", {"why": "model switched", "model": f"{old.name}@{old.version}",
                                               "to": f"{judge.model.name}@{judge.model.version}"})

    def snapshot(self) -> dict[str, Any]:
        """The guard's state for the report; any thread (built from a frozen state and an array that the
        post thread replaces, never mutates)."""
        env, guard, last = self.envelope, self.guard, self._last
        out: dict[str, Any] = {"enabled": guard is not None, "why_off": self.why_off, "on_drift": self.on_drift,
                               "in_drift": False, "acting": False, "statistic": None, "value": None, "bounds": None,
                               "psi": None, "entered": self.entered, "cleared": self.cleared, "frames": 0,
                               # frames + pending + unobserved = production verdicts, whatever the load
                               "unobserved": max(0, self.observed - self.measured), "pending": len(self._fresh),
                               "unmeasured": 0, "expected": None, "actual": None,
                               "medians": {}, "envelope": {} if env is None else
                               {k: [lo, hi] for k, (lo, hi) in env.bounds.items()}}
        out["output"] = self._output_snapshot()
        if out["output"]["in_drift"]:  # what holds the line, when the images themselves are inside
            o = out["output"]
            out.update(acting=True, statistic=o["statistic"], value=o["value"], bounds=o["bounds"])
        if last is None or guard is None:
            return out
        state, med, names = last
        if state.in_drift or not out["output"]["in_drift"]:
            out.update(statistic=state.statistic, value=None if state.value is None else round(state.value, 4),
                       bounds=None if state.bounds is None else [round(b, 4) for b in state.bounds])
        out.update(in_drift=state.in_drift, acting=self._acting(state) or out["output"]["in_drift"],
                   psi=None if state.psi is None else round(state.psi, 4), frames=state.frames,
                   unmeasured=guard.unmeasured, expected=state.expected, actual=state.actual,
                   medians={} if med is None else {n: round(float(m), 5) for n, m in zip(names, med, strict=True)})
        return out


    def _output_snapshot(self) -> dict[str, Any]:
        output, st = self.output, self._output_last
        out: dict[str, Any] = {"enabled": output is not None, "in_drift": False, "statistic": None, "value": None,
                               "bounds": None, "frames": 0, "entered": self.output_entered,
                               "cleared": self.output_cleared, "window": self.cfg.output_window, "reference": {},
                               "shares": {}}
        if output is None:
            return out
        out["reference"] = {k: {"share": round(sh, 4), "from": src} for k, (sh, src) in dict(output.reference).items()}
        out["bands"] = {k: [lo / output.window, hi / output.window] for k, (lo, hi) in dict(output.bands).items()}
        if st is not None:
            out.update(in_drift=st.in_drift, statistic=st.statistic, frames=st.frames,
                       value=None if st.value is None else round(st.value, 4),
                       bounds=None if st.bounds is None else [round(b, 4) for b in st.bounds], shares=dict(st.shares))
        return out


def top_confidence(det) -> float:
    """The highest detection confidence of a frame (0.0 without detections): the PSI's per-frame value."""
    return float(det.confidence.max()) if len(det) else 0.0
