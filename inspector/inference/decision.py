"""The decision: detections + deadline -> verdict. Pure: no I/O, no clock (the caller passes `now`).

Rules, in order:
1. Detections outside the region of interest, or smaller than `min_box_px` on both sides, are
   ignored (fixtures, belt edges and specks the line does not care about).
2. A detection at or above its class threshold is a defect; one within ±`uncertain_margin` of
   its threshold is uncertain (kept for review, see sampler).
3. If `now` is past the deadline (`captured_at + budget_ms`), the verdict is LATE whatever was
   found: the part has already passed the ejector, so the configured fail-safe action applies
   (`on_late: reject` by default) and it is counted. Otherwise REJECT if any defect, else PASS.
4. While the input drift guard says the images left the model's envelope (`under_drift`, applied by
   the pipeline's post thread, which owns the guard): `on_drift: reject` turns a PASS into a REJECT
   with reason `drift`; `hold` does that and also rejects a LATE part whatever `on_late` says (every
   part gets the fail-safe verdict); `alarm` changes nothing. Defects found keep reason `defect`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from inspector.config import DecisionConfig
from inspector.errors import ConfigError
from inspector.frames import (
    Defect,
    Detections,
    Frame,
    ModelInfo,
    Outcome,
    Reason,
    StageTimings,
    Verdict,
)


@dataclass(frozen=True)
class DecisionPolicy:
    classes: tuple[str, ...]
    thresholds: tuple[float, ...]  # by class id
    margin: float
    budget_s: float
    reject_when_late: bool
    roi: tuple[int, int, int, int] | None = None
    min_box_px: float = 0.0

    @staticmethod
    def build(cfg: DecisionConfig, classes: tuple[str, ...], card_thresholds: dict[str, float]) -> DecisionPolicy:
        unknown = sorted(set(cfg.thresholds) - set(classes))
        if unknown:
            raise ConfigError(f"decision.thresholds: unknown class(es) {unknown}; "
                              f"the model's classes are {list(classes)}")
        th = tuple(float(cfg.thresholds.get(c, card_thresholds.get(c, cfg.default_threshold))) for c in classes)
        return DecisionPolicy(classes, th, cfg.uncertain_margin, cfg.budget_ms / 1000.0, cfg.on_late == "reject",
                              cfg.roi, cfg.min_box_px)

    @property
    def conf_floor(self) -> float:
        """The detector's confidence cut: low enough to see the uncertain band."""
        return max(0.01, min(self.thresholds) - self.margin)

    def deadline(self, frame: Frame) -> float:
        return frame.captured_at + self.budget_s


def _defects(det: Detections, policy: DecisionPolicy) -> tuple[tuple[Defect, ...], tuple[Defect, ...]]:
    if len(det) == 0:
        return (), ()
    keep = np.ones(len(det), bool)
    if policy.roi is not None:
        x0, y0, x1, y1 = policy.roi
        cx = (det.xyxy[:, 0] + det.xyxy[:, 2]) / 2
        cy = (det.xyxy[:, 1] + det.xyxy[:, 3]) / 2
        keep &= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    if policy.min_box_px > 0:
        w = det.xyxy[:, 2] - det.xyxy[:, 0]
        h = det.xyxy[:, 3] - det.xyxy[:, 1]
        keep &= (w >= policy.min_box_px) | (h >= policy.min_box_px)
    th = np.asarray(policy.thresholds, np.float32)[det.class_id]
    defects, uncertain = [], []
    for i in np.nonzero(keep)[0]:
        c = int(det.class_id[i])
        conf = float(det.confidence[i])
        d = Defect(policy.classes[c], c, conf, tuple(float(v) for v in det.xyxy[i]))
        if conf >= th[i]:
            defects.append(d)
        if abs(conf - th[i]) <= policy.margin:
            uncertain.append(d)
    return tuple(defects), tuple(uncertain)


def decide(frame: Frame, det: Detections, policy: DecisionPolicy, now: float, now_wall: float,
           timings: StageTimings, model: ModelInfo) -> Verdict:
    defects, uncertain = _defects(det, policy)
    deadline = policy.deadline(frame)
    deadline_wall = frame.captured_wall + policy.budget_s
    if now > deadline:
        return Verdict(frame, Outcome.LATE, policy.reject_when_late, Reason.LATE if policy.reject_when_late else None,
                       defects, uncertain, deadline, deadline_wall, timings, model)
    if defects:
        return Verdict(frame, Outcome.REJECT, True, Reason.DEFECT, defects, uncertain, deadline, deadline_wall,
                       timings, model)
    return Verdict(frame, Outcome.PASS, False, None, (), uncertain, deadline, deadline_wall, timings, model)


def late_verdict(frame: Frame, policy: DecisionPolicy, timings: StageTimings, model: ModelInfo) -> Verdict:
    """For a frame whose deadline passed before inference even started: no point inferring."""
    return Verdict(frame, Outcome.LATE, policy.reject_when_late, Reason.LATE if policy.reject_when_late else None,
                   (), (), policy.deadline(frame), frame.captured_wall + policy.budget_s, timings, model)


def error_verdict(frame: Frame, policy: DecisionPolicy, error: str, timings: StageTimings, model: ModelInfo) -> Verdict:
    """A frame that could not be inspected (corrupt, inference failure): rejected, fail safe."""
    return Verdict(frame, Outcome.REJECT, True, Reason.ERROR, (), (), policy.deadline(frame),
                   frame.captured_wall + policy.budget_s, timings, model, error=error)


def under_drift(v: Verdict, on_drift: str) -> Verdict:
    """`v` while the input is outside the model's envelope (rule 4). Pure; a verdict that already
    actuates keeps its reason (a defect found under drift is still a defect)."""
    if v.actuate or on_drift == "alarm":
        return v
    if v.outcome is Outcome.PASS and on_drift in ("reject", "hold"):
        return replace(v, outcome=Outcome.REJECT, actuate=True, reason=Reason.DRIFT)
    if v.outcome is Outcome.LATE and on_drift == "hold":  # on_late: pass would let an unjudged part through
        return replace(v, actuate=True, reason=Reason.DRIFT)
    return v
