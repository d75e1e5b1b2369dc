"""Values that cross threads: frames in, findings, verdicts out. All frozen.

Findings are what a model kind's head decodes from its output (`inspector.inference.heads`): boxes
(`Detections`, task `detect`) or class scores of the whole image (`ClassScores`, task `classify`).
Whatever reads them past the head (the decision, the drift guard, the spool's pre-labels) goes through
what every kind has (`Findings`: `task`, `max_score`, `label_format`, `prelabels`), never through boxes.

Times: `captured_at` and `deadline` are `time.monotonic()` seconds (immune to NTP steps);
`captured_wall` is the matching UTC epoch second, for payloads and file names only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class TruthBox:
    """A ground-truth defect (synthetic source only)."""

    class_id: int
    name: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Frame:
    frame_id: int
    image: np.ndarray | None = field(repr=False)  # uint8 HxWx3 BGR or HxW gray; None only when `dropped` says why
    captured_at: float  # monotonic seconds
    captured_wall: float  # UTC epoch seconds
    part_id: str | None = None  # set in triggered mode: one frame per part
    source: str = ""
    truth: tuple[TruthBox, ...] | None = None  # known ground truth, when the source has it
    # Why the image was dropped before inspection (e.g. "queue_full": a triggered part arrived while
    # the source's buffer was full); the part still needs its fail-safe verdict. None: a normal frame.
    dropped: str | None = None
    # Set on a golden reference frame (issue 14: the name of the golden part): inspected through the same
    # path, never actuated, never counted as a production part. None: a frame from the line.
    golden: str | None = None

    @property
    def captured_iso(self) -> str:
        return iso_utc(self.captured_wall)


class Findings(Protocol):
    """What a head found in one frame, as every reader past the head sees it (one class per model kind).

    `prelabels(found, width, height)` writes the defects and uncertain findings the decision kept (`Defect`s)
    as the pre-label file a labelling tool opens, in `label_format` (named in the spool's sidecar)."""

    task: ClassVar[str]  # the model card's `task` this kind's head decodes
    label_format: ClassVar[str]

    def __len__(self) -> int: ...

    @property
    def max_score(self) -> float:
        """The highest score found (0.0 when nothing was): the output drift guard's statistic."""
        ...

    @staticmethod
    def prelabels(found: tuple[Defect, ...], width: int, height: int) -> str: ...

    @property
    def class_scores(self) -> tuple[float, ...] | None:
        """Every class's score by class id for a whole-image kind (the verdict and the spool's sidecar carry
        them); None for a kind whose findings are not one score per class (boxes)."""
        ...


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes (task `detect`). Struct of arrays; boxes are x0, y0, x1, y1 in source-image pixels."""

    task: ClassVar[str] = "detect"
    label_format: ClassVar[str] = "yolo"

    xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def max_score(self) -> float:
        return float(self.confidence.max()) if len(self) else 0.0

    @property
    def class_scores(self) -> None:
        return None

    def select(self, mask: np.ndarray) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])

    @staticmethod
    def prelabels(found: tuple[Defect, ...], width: int, height: int) -> str:
        """YOLO lines `class_id cx cy w h`, normalized to [0, 1] and clipped to the image."""
        lines = []
        for d in found:
            x0, y0, x1, y1 = (min(max(v, 0.0), lim) for v, lim in zip(d.box, (width, height, width, height),
                                                                        strict=True))
            if x1 <= x0 or y1 <= y0:
                continue
            lines.append(f"{d.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
        return "".join(line + "\n" for line in lines)


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Class probabilities of the whole image (task `classify`): one score per class of the card, by class id.

    The classifier's head decodes into this; its decision rule (`inference.decision.RULES`) is what turns it
    into defects."""

    task: ClassVar[str] = "classify"
    label_format: ClassVar[str] = "classes"

    scores: np.ndarray  # (C,) float32

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def max_score(self) -> float:
        return float(self.scores.max()) if len(self) else 0.0

    @property
    def class_scores(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.scores)

    @property
    def top(self) -> int:
        """The class id of the highest score."""
        return int(self.scores.argmax())

    @staticmethod
    def prelabels(found: tuple[Defect, ...], width: int, height: int) -> str:
        """One class id a line, each once, in the order found (a whole-image label has no box)."""
        ids = dict.fromkeys(int(d.class_id) for d in found)
        return "".join(f"{i}\n" for i in ids)


#: The findings of each model kind, by the card's `task`.
FINDINGS: dict[str, type[Detections] | type[ClassScores]] = {Detections.task: Detections,
                                                             ClassScores.task: ClassScores}


def findings_kind(task: str) -> type[Detections] | type[ClassScores]:
    try:
        return FINDINGS[task]
    except KeyError:
        raise ValueError(f"unknown model task {task!r} (known: {sorted(FINDINGS)})") from None


class Outcome(enum.StrEnum):
    PASS = "PASS"
    REJECT = "REJECT"
    LATE = "LATE"  # no verdict before the deadline: the configured fail-safe action applies


class Reason(enum.StrEnum):
    DEFECT = "defect"
    LATE = "late"
    ERROR = "error"
    DRIFT = "drift"  # the input left the model's envelope and decision.on_drift rejects (fail safe)


@dataclass(frozen=True, slots=True)
class Defect:
    class_name: str
    class_id: int
    confidence: float  # detect: the box's confidence; classify: the probability of the class
    box: tuple[float, float, float, float] | None  # None: a whole-image finding (classify), no box


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Milliseconds spent in each stage of one frame; `total_ms` is capture to verdict."""

    queue_ms: float = 0.0  # capture until preprocessing started (grab + waiting)
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0
    decide_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Verdict:
    frame: Frame = field(repr=False)
    outcome: Outcome
    actuate: bool  # True: the part must be rejected (REJECT, or LATE/ERROR with on_late=reject)
    reason: Reason | None  # why it is rejected; None for a pass
    defects: tuple[Defect, ...]  # detections at or above their class threshold
    uncertain: tuple[Defect, ...]  # detections within the uncertain band around a threshold
    deadline: float  # monotonic seconds
    deadline_wall: float  # UTC epoch seconds
    timings: StageTimings
    model: ModelInfo
    error: str | None = None  # set when reason is ERROR
    task: str = "detect"  # the kind of model that judged it (card `task`): what `defects` were found as
    # classify: the probability of every class, (name, score) in the card's class order; None: boxes (detect),
    # or no findings (a LATE or error verdict)
    class_scores: tuple[tuple[str, float], ...] | None = None

    @property
    def frame_id(self) -> int:
        return self.frame.frame_id

    @property
    def part_id(self) -> str | None:
        return self.frame.part_id


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
