"""Task heads, one module per model kind, found by the model card's `task`.

Adding a kind: a module here with a class that satisfies `base.Head` (its `task`, `preprocessor`,
`fold_input`, `check_model`, `decode` -> its findings in `inspector.frames`), an entry in `HEADS`, and
its decision rule in `inference.decision.RULES` (see docs/architecture.md, "Adding a model kind").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.errors import ModelError
from inspector.inference.heads.base import Head, HeadSettings
from inspector.inference.heads.classify import ClassifyHead
from inspector.inference.heads.detect import DetectHead

#: card `task` -> the head's factory (bundle, settings) -> Head.
HEADS: dict[str, Callable[[Any, HeadSettings], Head]] = {
    DetectHead.task: DetectHead.for_bundle,
    ClassifyHead.task: ClassifyHead.for_bundle,
}


def make_head(bundle: Any, settings: HeadSettings | None = None) -> Head:
    """The head of the bundle's kind (`ModelBundle.task`: the card's `task`; a bare IR is `detect`)."""
    task = bundle.task
    factory = HEADS.get(task)
    if factory is None:
        raise ModelError(f"model {bundle.name} {bundle.version}: task {task!r} has no head in this version "
                         f"(heads: {sorted(HEADS)})")
    return factory(bundle, settings or HeadSettings())


__all__ = ["HEADS", "Head", "HeadSettings", "make_head"]
