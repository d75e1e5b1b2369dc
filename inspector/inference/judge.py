"""A judge: a model as the pipeline runs it. Its runner (the compiled model and its task head), the
decision policy built on its card, and the ModelInfo every verdict it makes carries.

The service builds one at start (`lifecycle.manager.open_initial`), the lifecycle builds one per
promote or rollback and hands it to the pipeline (`lifecycle.swap.ModelSlot.swap`); every frame in
flight keeps the judge it was handed to, so a swap never changes who judges a frame already read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from inspector.frames import ModelInfo
from inspector.inference.decision import DecisionPolicy
from inspector.inference.runner import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class Judge:
    runner: Runner
    policy: DecisionPolicy
    model: ModelInfo


@dataclass(frozen=True, slots=True)
class SwapResult:
    """Where a swap happened: frames read up to `last_old_frame_id` were judged by `old`, from
    `first_new_frame_id` on by the new judge (None: no frame was read around the switch yet)."""

    old: Judge
    new: Judge
    last_old_frame_id: int | None
    installed_at: float  # monotonic


def make_judge(runner: Runner, policy: DecisionPolicy) -> Judge:
    """A judge, refused when the runner's head is of another kind than the policy's, or would cut
    findings the decision needs."""
    if runner.head.task != policy.task:
        raise ValueError(f"a {runner.head.task!r} model cannot be judged by a {policy.task!r} decision policy")
    conf = runner.head.settings.conf
    if conf > min(policy.thresholds):
        raise ValueError(f"detector conf {conf} is above the lowest class threshold "
                         f"{min(policy.thresholds):.3f}: defects would be cut before the decision; build the "
                         f"detector with conf=policy.conf_floor ({policy.conf_floor:.3f})")
    if conf > policy.conf_floor:
        log.warning("detector conf %.3f is above the decision's floor %.3f: part of the uncertain band "
                    "(review samples) is not seen", conf, policy.conf_floor)
    return Judge(runner, policy, runner.bundle.info)
