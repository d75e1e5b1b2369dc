"""Input drift guard: does the stream still look like what the model was validated on?

A model trained on one camera's appearance fails silently when the light, focus, white balance or
encoder changes (issue 14 measured demo 1.1.0 passing 70 % of the defective parts under a +/-20 %
per-channel white-balance drift). The guard watches cheap per-frame image statistics of the
inspected region and the model's confidences, and says when the stream leaves the envelope the
model card recorded from its training/validation images (`card["input_envelope"]`).

- `frame_stats(image, roi)`: one vector of `STATS` per frame, on a strided sample of the region
  (~160 px wide whatever the camera) plus a few full-resolution rows for JPEG blockiness. Cost
  measured in benchmarks/test_drift_guard.py (<= 0.3 ms at 1280x720 is the budget).
- `DriftGuard.update(stats, top_confidence)`: the median of the last `window` frames' statistics
  against the envelope's bounds, and a population stability index of the per-frame top
  confidence over the last `psi_window` frames against the validation distribution. Hysteresis:
  in drift after `enter_after` consecutive frames outside, back after `clear_after` consecutive
  frames inside. Returns a frozen `DriftState`; `changed` marks the frame the state flipped (the
  caller raises or clears the `input_drift` alarm then).

Pure numpy/OpenCV, no threads: one owner calls `update` (service/drift.py wires it into the pipeline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# The envelope the guard compares against is the model card's (its data model lives with the card)
from inspector.bundle.envelope import PSI_EDGES, SAMPLE_WIDTH, STAT_NAMES, WEAK_BELOW, Envelope, OutputReference

PSI_STAT = "confidence_psi"
#: A frame the envelope cannot be measured on (smaller than its region, not an image): outside it.
FRAME_STAT = "frame_size"

#: Every this many rows of the region feed the blockiness statistic (at full horizontal resolution).
BLOCK_ROW_STEP = 16
_PSI_EPS = 1e-3  # proportions floored so an empty bin is a large, finite term (the usual PSI smoothing)


def frame_stats(image: np.ndarray, roi: Sequence[int] | None = None, sample_width: int = SAMPLE_WIDTH) -> np.ndarray:
    """The `STATS` vector (float64) of one uint8 frame, BGR (HxWx3) or gray (HxW, HxWx1), on the region
    x0,y0,x1,y1. A gray frame gives the same vector as its 3-equal-channel BGR copy (casts 1.0)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"drift guard: expected an HxWx3 (BGR) or HxW (gray) uint8 frame, got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (0, 0, w, h) if roi is None else (max(0, int(roi[0])), max(0, int(roi[1])),
                                                        min(w, int(roi[2])), min(h, int(roi[3])))
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise ValueError(f"drift guard: region must be at least 16x16 px, got {x1 - x0}x{y1 - y0} ({roi})")
    step = max(1, (x1 - x0) // sample_width)
    small = strided_sample(image[y0:y1, x0:x1], step)
    means, stds = cv2.meanStdDev(small)
    if small.ndim == 2:  # gray: one channel stands for three equal ones
        b = g = r = float(means[0, 0])
        gray, gray_std = small, stds
    else:
        b, g, r = float(means[0, 0]), float(means[1, 0]), float(means[2, 0])
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        _, gray_std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    n = small.size
    # Blockiness: JPEG codes 8x8 blocks independently, so steps between columns 8k-1 and 8k (in frame
    # coordinates) grow with compression while steps inside a block do not.
    rows = image[y0:y1:BLOCK_ROW_STEP, x0:x1] if image.ndim == 2 else image[y0:y1:BLOCK_ROW_STEP, x0:x1, 1]
    first = (-x0) % 8 or 8  # first block-boundary column inside the region
    left, right = rows[:, first - 1::8], rows[:, first::8]
    inl, inr = rows[:, first + 3::8], rows[:, first + 4::8]
    m = min(left.shape[1], right.shape[1], inl.shape[1], inr.shape[1])
    edge = _mean_absdiff(left[:, :m], right[:, :m]) if m else 0.0
    inner = _mean_absdiff(inl[:, :m], inr[:, :m]) if m else 0.0
    gg, luma = max(g, 1.0), (b + g + r) / 3.0
    # Contrast and sharpness are ratios so each family moves its own statistic: a darker lamp lowers
    # the Laplacian's variance as much as a blur does (measured: log10 var 3.41 -> 2.73 at gain 0.55,
    # -> 2.99 at blur sigma 1.6) but leaves its ratio to the grey variance.
    return np.array([
        luma,
        float(stds.mean()) / max(luma, 1.0),
        b / gg,
        r / gg,
        np.count_nonzero(small <= 5) / n,
        np.count_nonzero(small >= 250) / n,
        math.log10((float(lap_std[0, 0]) ** 2 + 1.0) / (float(gray_std[0, 0]) ** 2 + 1.0)),
        (float(edge) + 0.5) / (float(inner) + 0.5),
    ])


def _mean_absdiff(a: np.ndarray, b: np.ndarray) -> float:
    """mean |a - b| of two uint8 arrays: the integer sum is exact in double, so the same value as numpy's
    int16 difference and mean, at a third of the cost (the four column gathers made contiguous first)."""
    return cv2.sumElems(cv2.absdiff(np.ascontiguousarray(a), np.ascontiguousarray(b)))[0] / a.size


_PIXEL3 = np.dtype((np.void, 3))


def strided_sample(region: np.ndarray, step: int) -> np.ndarray:
    """`region[::step, ::step]` as a contiguous array: the same pixels, for a third of numpy's cost.
    numpy gathers a strided HxWx3 view one 3-byte innermost axis at a time (91 us of frame_stats' ~130
    at 1280x720, step 8). For a power-of-two step, OpenCV's nearest-neighbour resize picks exactly
    pixel `step * i` (the ratio and its inverse are exact in binary; 22 us); other steps copy whole
    3-byte pixels as one item each (48 us). tests/inference/test_drift_guard.py checks both paths equal
    the plain slice over odd sizes and regions."""
    rows = region[::step]
    if step == 1:
        return np.ascontiguousarray(rows)
    w = region.shape[1]
    nx = -(-w // step)  # columns 0, step, ..., the last < w
    if step & (step - 1) == 0 and region.strides[-1] == region.itemsize and rows.shape[0] > 0:
        whole = w // step  # the columns inside the last full multiple of step: an exact nearest resize
        if whole == nx:
            return cv2.resize(rows[:, : whole * step], (whole, rows.shape[0]), interpolation=cv2.INTER_NEAREST)
        out = np.empty((rows.shape[0], nx) + rows.shape[2:], rows.dtype)
        if whole:
            out[:, :whole] = cv2.resize(rows[:, : whole * step], (whole, rows.shape[0]),
                                        interpolation=cv2.INTER_NEAREST).reshape(out[:, :whole].shape)
        out[:, whole] = rows[:, whole * step]
        return out
    if rows.ndim == 3 and rows.shape[2] == 3 and rows.strides[1:] == (3, 1):
        return np.ascontiguousarray(rows.view(_PIXEL3)[:, ::step, 0]).view(np.uint8).reshape(rows.shape[0], nx, 3)
    return np.ascontiguousarray(rows[:, ::step])


def column_median(a: np.ndarray) -> np.ndarray:
    """`np.median(a, axis=0)`, the same values (a NaN in a column gives NaN), by one sort: np.median's
    partition and bookkeeping cost ~6x this on the guard's 16x8 window, on every frame."""
    s = np.sort(a, axis=0)
    n = s.shape[0]
    med = s[n // 2].copy() if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    nan = np.isnan(s[-1])  # sort puts NaN last
    if nan.any():
        med[nan] = np.nan
    return med


def psi(reference: Sequence[float], counts: np.ndarray) -> float:
    """Population stability index of observed bin `counts` against reference proportions."""
    q = np.maximum(np.asarray(reference, np.float64), _PSI_EPS)
    p = np.maximum(counts / max(1, counts.sum()), _PSI_EPS)
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True)
class Unmeasured:
    """A frame the guard cannot measure against its envelope. It counts as outside the envelope: a camera
    re-configured, binned or replaced so that the frame no longer holds the region the envelope was
    measured on must raise input_drift, not silence the guard (before, such frames yielded no
    statistics, the guard counted nothing and reported itself enabled)."""

    statistic: str  # FRAME_STAT
    expected: str
    actual: str


def unmeasured(image: np.ndarray, envelope: Envelope) -> Unmeasured | None:
    """Why `frame_stats` cannot measure `image` against `envelope`, or None when it can. The envelope's
    region is its roi, else the whole reference frame (`frame_size`): a frame that does not contain it
    is outside. A larger frame without roi is measured whole (the statistics sample ~SAMPLE_WIDTH
    columns whatever the size, so they stay comparable)."""
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        return Unmeasured(FRAME_STAT, "an HxW or HxWx3 image", f"{type(image).__name__} {shape}")
    h, w = int(shape[0]), int(shape[1])
    if envelope.roi is not None:
        x0, y0, x1, y1 = envelope.roi
        if x1 > w or y1 > h or x0 < 0 or y0 < 0:
            return Unmeasured(FRAME_STAT, f"a frame containing roi {list(envelope.roi)} (>= {x1}x{y1})", f"{w}x{h}")
    elif envelope.frame_size is not None:
        fw, fh = envelope.frame_size
        if w < fw or h < fh:
            return Unmeasured(FRAME_STAT, f">= {fw}x{fh} (the envelope's frames)", f"{w}x{h}")
    return None


@dataclass(frozen=True)
class DriftState:
    """The guard's verdict after one frame (frozen: it crosses to the alarm/metrics side)."""

    in_drift: bool
    #: the statistic furthest outside its bounds (while in drift: the one that put it there, updated)
    statistic: str | None
    value: float | None
    bounds: tuple[float, float] | None
    frames: int  # frames observed so far
    changed: bool = False  # this frame entered or left drift
    psi: float | None = None  # the confidence PSI over the last psi_window frames (None until full)
    #: a frame that could not be measured (statistic FRAME_STAT): what the envelope needs and what came
    expected: str | None = None
    actual: str | None = None

    def detail(self) -> dict[str, Any]:
        """The alarm's detail: which statistic, its value and the envelope it left."""
        out = {"statistic": self.statistic, "value": None if self.value is None else round(self.value, 4),
               "bounds": None if self.bounds is None else [round(self.bounds[0], 4), round(self.bounds[1], 4)],
               "frames": self.frames}
        if self.expected is not None:
            out.update(expected=self.expected, actual=self.actual)
        return out


class DriftGuard:
    """Windowed statistics against an `Envelope`, with hysteresis. Not thread-safe: one owner."""

    def __init__(self, envelope: Envelope, *, window: int = 16, enter_after: int = 4, clear_after: int = 48,
                 psi_window: int = 200, psi_threshold: float = 0.25) -> None:
        if window < 1 or enter_after < 1 or clear_after < 1 or psi_window < 10:
            raise ValueError(f"drift guard: window, enter_after, clear_after >= 1 and psi_window >= 10, got "
                             f"{window}, {enter_after}, {clear_after}, {psi_window}")
        self.envelope = envelope
        self.window, self.enter_after, self.clear_after = window, enter_after, clear_after
        self.psi_window, self.psi_threshold = psi_window, psi_threshold
        idx = [i for i, n in enumerate(STAT_NAMES) if n in envelope.bounds]
        self._idx = np.array(idx, int)
        self._names = [STAT_NAMES[i] for i in idx]
        self._lo = np.array([envelope.bounds[n][0] for n in self._names])
        self._hi = np.array([envelope.bounds[n][1] for n in self._names])
        self._span = np.maximum(self._hi - self._lo, 1e-9)
        self._ring = np.zeros((window, len(STAT_NAMES)))
        self._bins = np.zeros(psi_window, np.int8)
        self._counts = np.zeros(len(PSI_EDGES) - 1)
        self._edges = np.asarray(PSI_EDGES[1:-1])
        self._frames = 0
        self._measured = 0  # frames with statistics (the ring's fill)
        self.unmeasured = 0  # frames that could not be measured (counted outside)
        self._confs = 0
        self._outside = 0  # consecutive frames outside
        self._inside = 0  # consecutive frames inside
        self._state = DriftState(False, None, None, None, 0)
        self._med: np.ndarray | None = None  # the last windowed medians (of the envelope's statistics)

    @property
    def state(self) -> DriftState:
        return self._state

    def medians(self) -> dict[str, float]:
        """The windowed median of each statistic the envelope bounds (empty until the window is full)."""
        med = self._med
        return {} if med is None else {n: float(m) for n, m in zip(self._names, med, strict=True)}

    def update(self, stats: np.ndarray | Unmeasured, top_confidence: float | None = None) -> DriftState:
        """One frame: its `frame_stats` vector (or why it could not be measured: outside the envelope)
        and the highest detection confidence (0.0 if none; None when the model did not run on it)."""
        self._frames += 1
        worst: tuple[float, str, float | None, tuple[float, float] | None] | None = None
        miss = stats if isinstance(stats, Unmeasured) else None
        if miss is not None:
            self.unmeasured += 1
            worst = (math.inf, miss.statistic, None, None)
        else:
            self._ring[self._measured % self.window] = stats
            self._measured += 1
        if miss is None and self._measured >= self.window and len(self._idx):
            # The median, not the mean: one odd frame (a camera glitch, a part covered in glare) would keep a
            # mean outside for a whole window; it never moves the median of 16 frames out.
            med = column_median(self._ring if len(self._idx) == self._ring.shape[1] else self._ring[:, self._idx])
            self._med = med
            out = np.maximum(self._lo - med, med - self._hi) / self._span  # > 0: outside, in spans
            i = int(np.argmax(out))
            worst = (float(out[i]), self._names[i], float(med[i]), (float(self._lo[i]), float(self._hi[i])))
        p = self._update_psi(top_confidence)
        if p is not None and self.envelope.confidence is not None:
            excess = (p - self.psi_threshold) / self.psi_threshold
            if worst is None or excess > worst[0]:
                worst = (excess, PSI_STAT, p, (0.0, self.psi_threshold))
        outside = worst is not None and worst[0] > 0
        self._outside = self._outside + 1 if outside else 0
        self._inside = 0 if outside else self._inside + 1
        was = self._state.in_drift
        now = (self._outside >= self.enter_after) if not was else not (self._inside >= self.clear_after)
        exp = act = None
        if worst is None:
            stat = val = bnd = None
        elif now and was and not outside:  # still held in drift: keep naming what put it there
            st = self._state
            stat, val, bnd, exp, act = st.statistic, st.value, st.bounds, st.expected, st.actual
        else:
            stat, val, bnd = worst[1], worst[2], worst[3]
            if miss is not None:
                exp, act = miss.expected, miss.actual
        self._state = DriftState(now, stat, val, bnd, self._frames, changed=now != was, psi=p, expected=exp,
                                 actual=act)
        return self._state

    def add_confidence(self, top_confidence: float) -> None:
        """One judged frame's top confidence for the PSI, apart from its statistics (the drift monitor
        pairs them in no particular order: see service/drift.py); it counts at the next `update`."""
        self._update_psi(top_confidence)

    def _update_psi(self, conf: float | None) -> float | None:
        if conf is None:
            return None if self._confs < self.psi_window else self._last_psi
        b = int(np.searchsorted(self._edges, min(max(conf, 0.0), 1.0), side="right"))
        slot = self._confs % self.psi_window
        if self._confs >= self.psi_window:
            self._counts[self._bins[slot]] -= 1
        self._bins[slot] = b
        self._counts[b] += 1
        self._confs += 1
        if self._confs < self.psi_window or self.envelope.confidence is None:
            self._last_psi = None
            return None
        q = self._q
        if q is None:  # the reference as psi() floors it, once (psi() converts it on every call)
            q = self._q = np.maximum(np.asarray(self.envelope.confidence.proportions, np.float64), _PSI_EPS)
        p = np.maximum(self._counts / max(1, self._counts.sum()), _PSI_EPS)
        self._last_psi = float(np.sum((p - q) * np.log(p / q)))  # = psi(proportions, counts)
        return self._last_psi

    _last_psi: float | None = None
    _q: np.ndarray | None = None


# -- the output guard: what the model does ------------------------------------------------------------
WEAK_STAT = "weak_detection_rate"
REJECT_STAT = "reject_rate"
OUTPUT_STATS: Mapping[str, str] = {
    WEAK_STAT: f"share of judged parts whose top score is in (0, weak_below): the model unsure (detect: top "
               f"detection confidence under {WEAK_BELOW}; classify: top class probability under (1 + 1/k) / 2)",
    REJECT_STAT: "share of judged parts the model rejected (defects found), before decision.on_drift",
}


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
            + (n - k) * math.log1p(-p))


def binomial_band(p: float, n: int, alpha: float) -> tuple[int, int]:
    """(lo, hi): counts of n Bernoulli(p) trials with P(X < lo) <= alpha and P(X > hi) <= alpha."""
    pmf = [math.exp(_log_binom_pmf(k, n, p)) for k in range(n + 1)]
    lo, acc = 0, 0.0
    while lo < n and acc + pmf[lo] <= alpha:
        acc += pmf[lo]
        lo += 1
    hi, acc = n, 0.0
    while hi > 0 and acc + pmf[hi] <= alpha:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


@dataclass(frozen=True)
class OutputState:
    """The output guard's verdict after one judged part (frozen: it crosses to the report's side)."""

    in_drift: bool
    statistic: str | None
    value: float | None  # the statistic's share over the window
    bounds: tuple[float, float] | None  # the band it must stay in (shares)
    frames: int  # judged parts observed
    changed: bool = False
    armed: tuple[str, ...] = ()  # the statistics with a reference (the others wait for the run's baseline)
    shares: Mapping[str, float] = field(default_factory=dict)  # each statistic's share over the last window

    def detail(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "value": None if self.value is None else round(self.value, 4),
                "bounds": None if self.bounds is None else [round(self.bounds[0], 4), round(self.bounds[1], 4)],
                "frames": self.frames}


class OutputGuard:
    """The model's output against the band its reference allows, over the last `window` judged parts.

    Each statistic is a count of Bernoulli events in the window (a weak detection, a reject); its band is
    the binomial one of the reference share at `alpha` per side, so the false-alarm rate follows from the
    reference, not from a hand-set threshold. The weak-detection share comes from the card (the validation
    images) when it records one; the reject share always from the first `baseline` judged parts of the
    run (a card's validation set has its own defect ratio, a line has another), widened by its own
    estimation error. Enter at the first window outside; clear after `clear_after` consecutive parts
    inside. Counts judged parts only (a LATE part has no model output): a loaded machine fills the window
    more slowly and moves no statistic. Not thread-safe: one owner (the post thread)."""

    def __init__(self, reference: OutputReference | None, *, window: int = 40, baseline: int = 200,
                 alpha: float = 1e-4, clear_after: int = 40, weak_below: float = WEAK_BELOW) -> None:
        if window < 10 or baseline < window or not 0 < alpha < 0.5 or clear_after < 1:
            raise ValueError(f"output guard: window >= 10, baseline >= window, 0 < alpha < 0.5, clear_after >= 1, "
                             f"got {window}, {baseline}, {alpha}, {clear_after}")
        self.window, self.baseline, self.alpha, self.clear_after = window, baseline, alpha, clear_after
        self.card = reference
        # the card's band when it has one, else the model kind's (bundle.envelope.weak_below_for)
        self.weak_below = reference.weak_below if reference is not None else weak_below
        self._weak = np.zeros(window, bool)
        self._rej = np.zeros(window, bool)
        self._n = 0
        self._base_weak = self._base_rej = 0
        self.bands: dict[str, tuple[int, int]] = {}
        self.reference: dict[str, tuple[float, str]] = {}  # statistic -> (share, card | run)
        if reference is not None:
            self._arm(WEAK_STAT, reference.weak_rate, reference.frames, "card")
        self._inside = 0
        self._state = OutputState(False, None, None, None, 0, armed=tuple(self.bands))

    @property
    def state(self) -> OutputState:
        return self._state

    def _arm(self, stat: str, share: float, frames: int, source: str) -> None:
        # The reference share is itself an estimate over `frames` parts: take the band of its 99 % upper
        # (and lower) bound, so a reference of 0 weak detections in 400 images does not make 1 in 40 an alarm.
        err = 2.33 * math.sqrt(max(share * (1 - share), 1.0 / frames) / frames)
        lo = binomial_band(max(0.0, share - err), self.window, self.alpha)[0]
        hi = binomial_band(min(1.0, share + err), self.window, self.alpha)[1]
        # replaced, not mutated: the report reads them from another thread
        self.bands = {**self.bands, stat: (lo, hi)}
        self.reference = {**self.reference, stat: (share, source)}

    def update(self, top_confidence: float, rejected: bool) -> OutputState:
        """One judged part: its top detection confidence (0.0 without detections) and whether the model
        found defects (its own judgement, before decision.on_drift)."""
        weak = 0.0 < top_confidence < self.weak_below
        slot = self._n % self.window
        self._weak[slot], self._rej[slot] = weak, rejected
        self._n += 1
        if self._n <= self.baseline:
            self._base_weak += weak
            self._base_rej += rejected
            if self._n == self.baseline:
                if WEAK_STAT not in self.bands:
                    self._arm(WEAK_STAT, self._base_weak / self.baseline, self.baseline, "run")
                self._arm(REJECT_STAT, self._base_rej / self.baseline, self.baseline, "run")
        worst: tuple[float, str, float, tuple[float, float]] | None = None
        shares: dict[str, float] = {}
        if self._n >= self.window:
            for stat, ring in ((WEAK_STAT, self._weak), (REJECT_STAT, self._rej)):
                k = int(np.count_nonzero(ring))
                shares[stat] = k / self.window
                band = self.bands.get(stat)
                if band is None:
                    continue
                out = max(band[0] - k, k - band[1])  # > 0: outside, in parts
                if worst is None or out > worst[0]:
                    worst = (out, stat, k / self.window, (band[0] / self.window, band[1] / self.window))
        outside = worst is not None and worst[0] > 0
        self._inside = 0 if outside else self._inside + 1
        was = self._state.in_drift
        now = outside if not was else self._inside < self.clear_after
        if worst is None:
            stat = val = bnd = None
        elif now and was and not outside:  # still in drift: keep naming what put it there
            stat, val, bnd = self._state.statistic, self._state.value, self._state.bounds
        else:
            stat, val, bnd = worst[1], worst[2], worst[3]
        self._state = OutputState(now, stat, val, bnd, self._n, changed=now != was, armed=tuple(self.bands),
                                  shares=shares)
        return self._state
