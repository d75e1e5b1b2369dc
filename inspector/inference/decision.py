"""The decision: findings + deadline -> verdict. Pure: no I/O, no clock (the caller passes `now`).

Rules 1-2 depend on the model kind: each kind's rule (`RULES`, keyed by the card's `task`) turns its
head's findings into defects and uncertain findings; rules 3-4 are the same for every kind.

Rules, in order:
1. `detect`: detections outside the region of interest, or smaller than `min_box_px` on both sides,
   are ignored (fixtures, belt edges and specks the line does not care about).
2. `detect`: a detection at or above its class threshold is a defect; one within ±`uncertain_margin`
   of its threshold is uncertain (kept for review, see sampler).
   `classify` (no rule 1: the model judges the whole image, `roi` and `min_box_px` are refused): the part
   is NG when any class other than the card's `pass_class` has a probability at or above its threshold
   (with one NG class: p(NG) = 1 - p(pass) reaching the threshold; the pass class never rejects), each
   such class a defect with its probability and no box; an NG class within ±`uncertain_margin` of its
   threshold is uncertain (the probability margin the sampler keeps frames on).
3. If `now` is past the deadline (`captured_at + budget_ms`), the verdict is LATE whatever was
   found: the part has already passed the ejector, so the configured fail-safe action applies
   (`on_late: reject` by default) and it is counted. Otherwise REJECT if any defect, else PASS.
4. While the input drift guard says the images left the model's envelope (`under_drift`, applied by
   the pipeline's post thread, which owns the guard): `on_drift: reject` turns a PASS into a REJECT
   with reason `drift`; `hold` does that and also rejects a LATE part whatever `on_late` says (every
   part gets the fail-safe verdict); `alarm` changes nothing. Defects found keep reason `defect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inspector.config import DecisionConfig
from inspector.errors import ConfigError, ModelError
from inspector.frames import (
    ClassScores,
    Defect,
    Detections,
    Findings,
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
    task: str = "detect"  # the model kind (card `task`): which rule in RULES makes the defects
    pass_class: str | None = None  # classify: the class that passes a part (card `pass_class`)

    @staticmethod
    def build(cfg: DecisionConfig, classes: tuple[str, ...], card_thresholds: dict[str, float],
              task: str = "detect", pass_class: str | None = None) -> DecisionPolicy:
        unknown = sorted(set(cfg.thresholds) - set(classes))
        if unknown:
            raise ConfigError(f"decision.thresholds: unknown class(es) {unknown}; "
                              f"the model's classes are {list(classes)}")
        if task not in RULES:
            raise ModelError(f"model task {task!r} has no decision rule in this version (rules: {sorted(RULES)})")
        if task == "classify":
            if pass_class not in classes:
                raise ModelError(f"a classify model needs its pass class among its classes {list(classes)} "
                                 f"(card pass_class), got {pass_class!r}")
            boxes_only = [f"decision.{k}" for k in ("roi", "min_box_px") if getattr(cfg, k)]
            if boxes_only:
                raise ConfigError(f"{', '.join(boxes_only)}: applies to boxes (task detect); this model is a "
                                  f"classifier (task classify) that judges the whole image: remove it")
        th = tuple(float(cfg.thresholds.get(c, card_thresholds.get(c, cfg.default_threshold))) for c in classes)
        return DecisionPolicy(classes, th, cfg.uncertain_margin, cfg.budget_ms / 1000.0, cfg.on_late == "reject",
                              cfg.roi, cfg.min_box_px, task, pass_class if task == "classify" else None)

    @property
    def conf_floor(self) -> float:
        """The detector's confidence cut: low enough to see the uncertain band."""
        return max(0.01, min(self.thresholds) - self.margin)

    def deadline(self, frame: Frame) -> float:
        return frame.captured_at + self.budget_s


Found = tuple[tuple[Defect, ...], tuple[Defect, ...]]  # (defects, uncertain)


def _box_defects(det: Detections, policy: DecisionPolicy) -> Found:
    """Rules 1-2 for boxes."""
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


def _class_defects(found: ClassScores, policy: DecisionPolicy) -> Found:
    """Rule 2 for class scores: every NG class (not the pass class) at or above its threshold is a defect,
    within ±margin of it uncertain; a finding without a box (the whole image)."""
    if len(found) != len(policy.classes):
        raise ValueError(f"the classifier gave {len(found)} scores for {len(policy.classes)} classes")
    defects, uncertain = [], []
    for c, (name, th) in enumerate(zip(policy.classes, policy.thresholds, strict=True)):
        if name == policy.pass_class:
            continue
        p = float(found.scores[c])
        d = Defect(name, c, p, None)
        if p >= th:
            defects.append(d)
        if abs(p - th) <= policy.margin:
            uncertain.append(d)
    return tuple(defects), tuple(uncertain)


#: card `task` -> the kind's rules 1-2: (its head's findings, the policy) -> (defects, uncertain).
RULES: dict[str, Callable[[Any, DecisionPolicy], Found]] = {
    Detections.task: _box_defects,
    ClassScores.task: _class_defects,
}


def decide(frame: Frame, found: Findings, policy: DecisionPolicy, now: float, now_wall: float,
           timings: StageTimings, model: ModelInfo) -> Verdict:
    if found.task != policy.task:
        raise ValueError(f"findings of a {found.task!r} model given to a {policy.task!r} decision")
    defects, uncertain = RULES[policy.task](found, policy)
    deadline = policy.deadline(frame)
    deadline_wall = frame.captured_wall + policy.budget_s
    task = policy.task
    raw = found.class_scores
    scores = None if raw is None else tuple(zip(policy.classes, raw, strict=True))
    if now > deadline:
        return Verdict(frame, Outcome.LATE, policy.reject_when_late, Reason.LATE if policy.reject_when_late else None,
                       defects, uncertain, deadline, deadline_wall, timings, model, task=task, class_scores=scores)
    if defects:
        return Verdict(frame, Outcome.REJECT, True, Reason.DEFECT, defects, uncertain, deadline, deadline_wall,
                       timings, model, task=task, class_scores=scores)
    return Verdict(frame, Outcome.PASS, False, None, (), uncertain, deadline, deadline_wall, timings, model, task=task,
                   class_scores=scores)


def late_verdict(frame: Frame, policy: DecisionPolicy, timings: StageTimings, model: ModelInfo) -> Verdict:
    """For a frame whose deadline passed before inference even started: no point inferring."""
    return Verdict(frame, Outcome.LATE, policy.reject_when_late, Reason.LATE if policy.reject_when_late else None,
                   (), (), policy.deadline(frame), frame.captured_wall + policy.budget_s, timings, model,
                   task=policy.task)


def error_verdict(frame: Frame, policy: DecisionPolicy, error: str, timings: StageTimings, model: ModelInfo) -> Verdict:
    """A frame that could not be inspected (corrupt, inference failure): rejected, fail safe."""
    return Verdict(frame, Outcome.REJECT, True, Reason.ERROR, (), (), policy.deadline(frame),
                   frame.captured_wall + policy.budget_s, timings, model, error=error, task=policy.task)


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
