"""Values that cross threads: frames in, detections, verdicts out. All frozen.

Times: `captured_at` and `deadline` are `time.monotonic()` seconds (immune to NTP steps);
`captured_wall` is the matching UTC epoch second, for payloads and file names only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

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


@dataclass(frozen=True, slots=True)
class Detections:
    """Struct of arrays; boxes are x0, y0, x1, y1 in source-image pixels."""

    xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def select(self, mask: np.ndarray) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])


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
    confidence: float
    box: tuple[float, float, float, float]


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

    @property
    def frame_id(self) -> int:
        return self.frame.frame_id

    @property
    def part_id(self) -> str | None:
        return self.frame.part_id


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
