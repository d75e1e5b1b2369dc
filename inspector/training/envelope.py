"""The input envelope of a model: the range of each drift-guard statistic it was validated on.

`compute_envelope(images, families)` measures `drift_guard.frame_stats` on reference images (the
validation split) and on copies of them altered by the optics families the model holds under
(issue 14: the card's per-family metrics say which), and keeps per statistic the
[q, 1 - q] quantiles widened by `margin` of their span. The model card records it as
`card["input_envelope"]` (`Envelope.to_card()`); the runtime guard compares the windowed mean of
each statistic against it. With a model bundle, the validation distribution of the per-frame top
confidence is recorded too (the guard's population stability index).

Why the altered copies belong in it: the envelope is what the model was *shown to hold under*,
not what one camera happened to look like. A model validated under a +/-20 % white-balance drift
should not alarm (or, with `on_drift: hold`, reject everything) inside that drift.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from inspector.bundle.card import ModelCard
from inspector.bundle.envelope import (
    SAMPLE_WIDTH,
    STAT_NAMES,
    ConfidenceReference,
    Envelope,
    OutputReference,
    weak_below_for,
)
from inspector.inference.decision import DecisionPolicy
from inspector.inference.drift_guard import frame_stats
from inspector.sources import optics

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def folder_images(folder: Path) -> Iterator[np.ndarray]:
    """The images of a folder (or of a YOLO data.yaml's folder `images/`), in name order."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix in (".yaml", ".yml"):
        folder = folder.parent / "images"
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"envelope: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"envelope: cannot read image {p}")
        yield img


def reference_stats(images: Iterable[np.ndarray], families: Sequence[str] = (), seed: int = 0,
                    roi: Sequence[int] | None = None, sample_width: int = SAMPLE_WIDTH) -> tuple[np.ndarray, tuple]:
    """(N x len(STATS) array, frame size): each image, then each altered copy (default magnitude)."""
    rows, size = [], None
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise ValueError(f"envelope: images must share one frame size, got {size} then {(w, h)} (image {i})")
        rows.append(frame_stats(img, roi, sample_width))
        for name in families:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), i])
            rows.append(frame_stats(optics.alter(img, name, rng)[0], roi, sample_width))
    if not rows:
        raise ValueError("envelope: no reference images")
    return np.array(rows), size


def bounds_from_stats(stats: np.ndarray, quantile: float = 0.002,
                      margin: float = 0.1) -> dict[str, tuple[float, float]]:
    """Per statistic: the [quantile, 1 - quantile] range widened by `margin` of its span on each side."""
    if not 0 <= quantile < 0.5 or margin < 0:
        raise ValueError(f"envelope: quantile within [0, 0.5) and margin >= 0, got {quantile}, {margin}")
    lo, hi = np.quantile(stats, quantile, axis=0), np.quantile(stats, 1 - quantile, axis=0)
    pad = margin * (hi - lo)
    return {n: (float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i, n in enumerate(STAT_NAMES)}


def top_confidences(bundle, images: Iterable[np.ndarray], conf_floor: float) -> list[float]:
    """Per image, the model's top score (`Findings.max_score`: a detector's highest detection confidence,
    0.0 without one; a classifier's top class probability)."""
    return model_outputs(bundle, images, conf_floor)[0]


def model_outputs(bundle, images: Iterable[np.ndarray], conf_floor: float,
                  policy: DecisionPolicy | None = None) -> tuple[list[float], list[bool]]:
    """Per image, the top score (`Findings.max_score`) and whether the decision's rule for the bundle's
    kind (`decision.RULES`) finds a defect under `policy` (all False without one): the output guard's
    reference. The same runner and head as the line, so a classifier's envelope is measured as it runs."""
    from inspector.inference.decision import RULES
    from inspector.inference.heads import HeadSettings, make_head
    from inspector.inference.runner import Runner

    runner = Runner(bundle, make_head(bundle, HeadSettings(conf=conf_floor)))
    confs, rejects = [], []
    for img in images:
        found = runner.find(img)
        confs.append(found.max_score)
        rejects.append(policy is not None and bool(RULES[policy.task](found, policy)[0]))
    return confs, rejects


def compute_envelope(images: Sequence[np.ndarray], families: Sequence[str] = (), *, seed: int = 0,
                     roi: Sequence[int] | None = None, quantile: float = 0.002, margin: float = 0.1,
                     bundle=None, conf_floor: float = 0.05, sample_width: int = SAMPLE_WIDTH,
                     policy: DecisionPolicy | None = None) -> Envelope:
    """The envelope of `images` and their copies altered by `families` (see the module doc). With a
    bundle, the top-score distribution, and with its decision `policy` the output guard's reference
    (share of weak parts, `weak_below_for` the bundle's kind, and of rejects on the unaltered images)."""
    for name in families:
        optics.family(name)
    stats, size = reference_stats(images, families, seed, roi, sample_width)
    conf = output = None
    if bundle is not None:
        tops, rejects = model_outputs(bundle, images, conf_floor, policy)
        conf = ConfidenceReference.from_scores(tops)
        if policy is not None:
            output = OutputReference.from_parts(tops, rejects,
                                                weak_below=weak_below_for(bundle.task, len(bundle.classes)))
    return Envelope(
        bounds=bounds_from_stats(stats, quantile, margin),
        frame_size=size,
        roi=tuple(int(v) for v in roi) if roi is not None else None,
        sample_width=sample_width,
        confidence=conf,
        source={"images": len(images), "families": list(families), "magnitude": "default", "seed": seed,
                "quantile": quantile, "margin": margin, "conf_floor": conf_floor if bundle is not None else None},
        output=output,
    )


def families_held(card: ModelCard | None, mAP50: float = 0.90, escapes: float = 0.01,
                  false_rejects: float = 0.05) -> list[str] | None:
    """The optics families the card's per-family held-out metrics say the model holds under (issue 14's bar);
    None when the card has no per-family metrics (`evaluation.perturbed`)."""
    per = ((card.evaluation if card is not None else None) or {}).get("perturbed")
    if not per:
        return None
    return [f for f, r in per.items() if f != "none" and r.get("mAP50", 0) >= mAP50
            and r.get("escape_rate", 1) <= escapes and r.get("false_reject_rate", 1) <= false_rejects]


def write_card_envelope(bundle_dir: Path, images: Sequence[np.ndarray], families: Sequence[str], *,
                        roi: Sequence[int] | None = None, confidences: bool = True, seed: int = 0,
                        source: dict | None = None) -> Envelope:
    """Computes the envelope of `images` (+ `families`) and writes it into the bundle's card as
    `input_envelope`. The card's sha256 entries are of the model files, which this does not touch; the
    bundle is loaded again (every sha256 checked) before returning. A signature over the card
    (model_card.sig) no longer matches afterwards: sign it again."""

    from inspector.bundle.card import read_card, write_card
    from inspector.bundle.load import load_bundle

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir, "int8")
    floor = policy = None
    if confidences:
        from inspector.config import DecisionConfig

        policy = DecisionPolicy.build(DecisionConfig(), bundle.classes, bundle.thresholds, task=bundle.task,
                                      pass_class=bundle.card.pass_class if bundle.card is not None else None)
        floor = policy.conf_floor
    env = compute_envelope(images, families, seed=seed, roi=roi, bundle=bundle if confidences else None,
                           conf_floor=floor or 0.05, policy=policy)
    env = Envelope(env.bounds, env.frame_size, env.roi, env.sample_width, env.confidence,
                   {**env.source, **(source or {})}, env.output)
    _, raw, _ = read_card(bundle_dir)  # written back as it was, with the new envelope
    raw["input_envelope"] = env.to_card()
    write_card(bundle_dir, raw)  # the schema first: an envelope the runtime would refuse is never written
    load_bundle(bundle_dir, "int8")
    return env
