"""The drift guard's envelope as the model card records it (`input_envelope`): the data model, read and
written here (`Envelope.from_card` / `to_card`), checked by the card's schema (`inspector.bundle.card`) when
a card is read, and used by the guard (`inspector.inference.drift_guard`) and the tool chain that measures
it (`inspector.training.envelope`). What the statistics mean and how they are measured is the guard's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The statistics, in vector order, and what each tells.
STATS: Mapping[str, str] = {
    "luma": "mean grey level of the region (exposure, lamp ageing, gain)",
    "contrast": "mean per-channel standard deviation / mean level (stray light, fog; a gain leaves it)",
    "cast_b": "blue mean / green mean (white balance, colour cast)",
    "cast_r": "red mean / green mean (white balance, colour cast)",
    "clip_low": "fraction of channel values <= 5 (under-exposure)",
    "clip_high": "fraction of channel values >= 250 (over-exposure)",
    "sharpness": "log10 variance of the Laplacian / variance of the sampled grey region (focus; noise raises "
                 "it; a gain or contrast change leaves it)",
    "blockiness": "mean step across 8-px JPEG block columns / mean step inside blocks (stream compression)",
}
STAT_NAMES: tuple[str, ...] = tuple(STATS)

#: Width the region is sampled down to (by striding: no resampling cost). 160 columns keep the
#: sharpness statistic sensitive to a blur of sigma ~2 source px at 640 px frames (see
#: tests/inference/test_drift_guard.py) and cost ~0.1 ms at 1280x720.
SAMPLE_WIDTH = 160
#: Top-confidence bins of the PSI: [0, 0.1) also holds frames without any detection.
PSI_EDGES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 + 1e-9)
#: A judged part whose top detection confidence is in (0, WEAK_BELOW): the model saw something it is not
#: sure of. On the parts the model was validated on such parts are rare (models/demo 1.2.1: 2.0 % of 6600
#: unaltered synthetic parts over 11 seeds, 1.25 % of its 400 validation images): good parts give no
#: detection at all, defective ones 0.7-0.95. An optical change the model was not trained for moves good
#: parts into this band first (gamma 2.2: 15-25 % of parts, false rejects 18-21 %; a 6-px line pattern:
#: false rejects 44 %), long before the reject share can tell (+6 points on a 67 % base is inside its
#: binomial noise at 40 parts). 0.5 rather than 0.6/0.7/0.8: the same 0 false alarms in 6600 parts and
#: the earliest alarms (benchmarks/output_guard.py; docs/contracts.md has the table).
WEAK_BELOW = 0.5


def weak_below_for(task: str, n_classes: int) -> float:
    """Where a part counts as weak for a model kind. `detect`: WEAK_BELOW (the top detection confidence;
    0 means no detection, which is not weak). `classify`: the top class probability is always at least
    1/k of k classes, so the band is k-aware: under halfway between a uniform guess and certainty,
    (1 + 1/k) / 2 (0.75 for OK/NG), the model could not tell the classes apart on that image."""
    if task == "classify":
        k = max(2, int(n_classes))
        return round((1.0 + 1.0 / k) / 2.0, 6)
    return WEAK_BELOW


@dataclass(frozen=True)
class ConfidenceReference:
    """The validation distribution of the per-frame top confidence, as proportions over `PSI_EDGES`."""

    proportions: tuple[float, ...]
    frames: int

    @classmethod
    def from_scores(cls, top_scores: Sequence[float]) -> ConfidenceReference:
        s = np.asarray(top_scores, np.float64)
        if s.size == 0:
            raise ValueError("confidence reference: needs at least one frame's top confidence")
        counts = np.histogram(np.clip(s, 0.0, 1.0), bins=np.asarray(PSI_EDGES))[0]
        return cls(tuple(float(x) for x in counts / counts.sum()), int(s.size))


@dataclass(frozen=True)
class OutputReference:
    """What the model did on the reference: the share of weak detections and of rejects, over `frames`
    parts. `source` says where it came from: "card" (the envelope `model build` / `model envelope`
    wrote from the validation images) or "run" (the first parts of this run)."""

    weak_rate: float
    reject_rate: float | None
    frames: int
    source: str = "card"
    weak_below: float = WEAK_BELOW

    def to_card(self) -> dict[str, Any]:
        return {"weak_rate": round(self.weak_rate, 6), "reject_rate": None if self.reject_rate is None else
                round(self.reject_rate, 6), "frames": self.frames, "weak_below": self.weak_below}

    @classmethod
    def from_card(cls, d: Mapping[str, Any]) -> OutputReference:
        try:
            weak, frames = float(d["weak_rate"]), int(d["frames"])
            rej = None if d.get("reject_rate") is None else float(d["reject_rate"])
            below = float(d.get("weak_below", WEAK_BELOW))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"input_envelope.output: expected {{weak_rate, reject_rate, frames}}, got {dict(d)!r} "
                             f"({e})") from e
        if not (0.0 <= weak <= 1.0 and frames > 0 and (rej is None or 0.0 <= rej <= 1.0) and 0.0 < below <= 1.0):
            raise ValueError(f"input_envelope.output: expected rates in [0, 1] and frames > 0, got {dict(d)!r}")
        return cls(weak, rej, frames, "card", below)

    @classmethod
    def from_parts(cls, top_confidences: Sequence[float], rejected: Sequence[bool], source: str = "card",
                   weak_below: float = WEAK_BELOW) -> OutputReference:
        c = np.asarray(top_confidences, np.float64)
        if c.size == 0:
            raise ValueError("output reference: needs at least one judged part")
        weak = float(np.mean((c > 0) & (c < weak_below)))
        return cls(weak, float(np.mean(np.asarray(rejected, bool))), int(c.size), source, weak_below)


@dataclass(frozen=True)
class Envelope:
    """Bounds of each windowed statistic (and the confidence reference), as the model card records them."""

    bounds: Mapping[str, tuple[float, float]]
    frame_size: tuple[int, int] | None = None  # (width, height) the reference images had
    roi: tuple[int, int, int, int] | None = None
    sample_width: int = SAMPLE_WIDTH
    confidence: ConfidenceReference | None = None
    source: Mapping[str, Any] = field(default_factory=dict)  # how it was made (images, families, quantiles)
    output: OutputReference | None = None  # what the model did on the reference images (the output guard)

    def to_card(self) -> dict[str, Any]:
        return {
            "stats": {k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in self.bounds.items()},
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "roi": list(self.roi) if self.roi else None,
            "sample_width": self.sample_width,
            "confidence": None if self.confidence is None else {
                "edges": [round(e, 6) for e in PSI_EDGES[:-1]] + [1.0],
                "proportions": [round(p, 6) for p in self.confidence.proportions],
                "frames": self.confidence.frames,
            },
            "source": dict(self.source),
            **({} if self.output is None else {"output": self.output.to_card()}),
        }

    @classmethod
    def from_card(cls, d: Mapping[str, Any]) -> Envelope:
        """From `card["input_envelope"]`; a clear error naming the field when it is malformed."""
        try:
            stats = d["stats"]
            bounds = {k: (float(v[0]), float(v[1])) for k, v in stats.items()}
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise ValueError(f"input_envelope.stats: expected {{stat: [low, high]}}, got {d.get('stats')!r} "
                             f"({e})") from e
        unknown = sorted(set(bounds) - set(STAT_NAMES))
        if unknown:
            raise ValueError(f"input_envelope.stats: expected names among {list(STAT_NAMES)}, got {unknown}")
        bad = {k: v for k, v in bounds.items() if not v[0] <= v[1]}
        if bad:
            raise ValueError(f"input_envelope.stats: expected low <= high, got {bad}")
        conf = d.get("confidence")
        ref = None
        if conf:
            props = tuple(float(p) for p in conf["proportions"])
            if len(props) != len(PSI_EDGES) - 1:
                raise ValueError(f"input_envelope.confidence.proportions: expected {len(PSI_EDGES) - 1} bins, "
                                 f"got {len(props)}")
            ref = ConfidenceReference(props, int(conf.get("frames", 0)))
        fs, roi = d.get("frame_size"), d.get("roi")
        out = OutputReference.from_card(d["output"]) if d.get("output") else None
        return cls(bounds, tuple(fs) if fs else None, tuple(roi) if roi else None,
                   int(d.get("sample_width", SAMPLE_WIDTH)), ref, dict(d.get("source", {})), out)
