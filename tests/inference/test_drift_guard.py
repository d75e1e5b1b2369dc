"""Drift guard: each camera fault moves its own statistic; hysteresis; the envelope round-trips the card;
a stream switched to a strong fault is caught within 50 parts and an unaltered one never is."""

import dataclasses

import cv2
import numpy as np
import pytest

from inspector.bundle.envelope import PSI_EDGES, STAT_NAMES, ConfidenceReference, Envelope
from inspector.config import DriftConfig
from inspector.devtools.testing import make_defect, make_verdict
from inspector.frames import ModelInfo, Reason
from inspector.inference.decision import under_drift
from inspector.inference.drift_guard import PSI_STAT, DriftGuard, column_median, frame_stats, psi, strided_sample
from inspector.sources import optics
from inspector.sources.conveyor import ConveyorGenerator
from inspector.training.envelope import compute_envelope
from tests.bundle.cards import card_with

IX = {n: i for i, n in enumerate(STAT_NAMES)}


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    gen = ConveyorGenerator(31)
    return [gen.part(i).image for i in range(12)]


@pytest.fixture(scope="module")
def envelope() -> Envelope:
    """What a card for a model validated under the issue's six families at their magnitudes records."""
    gen = ConveyorGenerator(2002)
    return compute_envelope([gen.part(i).image for i in range(60)], optics.ISSUE_FAMILIES, seed=1)


def _mean_stats(images, alt=None) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.mean([frame_stats(im if alt is None else optics.apply(im, alt, rng)) for im in images], axis=0)


@pytest.mark.parametrize(("alt", "stat", "direction"), [
    (optics.Alteration("darker", {"gain": 0.5}), "luma", -1),
    (optics.Alteration("brighter", {"gain": 1.6}), "clip_high", +1),
    (optics.Alteration("low_contrast", {"contrast": 0.6, "offset": 50.0}), "contrast", -1),
    (optics.Alteration("white_balance", {"gains": (1.3, 1.0, 1.0)}), "cast_b", +1),
    (optics.Alteration("white_balance", {"gains": (1.0, 1.0, 0.7)}), "cast_r", -1),
    (optics.Alteration("darker", {"gain": 0.15}), "clip_low", +1),
    (optics.Alteration("blur", {"sigma": 2.0}), "sharpness", -1),
    (optics.Alteration("noise", {"sigma": 12.0}), "sharpness", +1),
    (optics.Alteration("jpeg", {"quality": 30.0}), "blockiness", +1),
])
def test_each_fault_moves_its_statistic(frames, alt, stat, direction):
    clean, moved = _mean_stats(frames), _mean_stats(frames, alt)
    delta = (moved[IX[stat]] - clean[IX[stat]]) * direction
    assert delta > 0.15 * max(abs(clean[IX[stat]]), 0.02)


@pytest.mark.parametrize(("alt", "unmoved"), [
    (optics.Alteration("darker", {"gain": 0.6}), ("contrast", "cast_b", "cast_r", "sharpness")),
    (optics.Alteration("low_contrast", {"contrast": 0.7, "offset": 40.0}), ("cast_b", "cast_r", "sharpness")),
])
def test_gain_and_offset_leave_the_ratio_statistics(frames, alt, unmoved):
    clean, moved = _mean_stats(frames), _mean_stats(frames, alt)
    for s in unmoved:
        assert moved[IX[s]] == pytest.approx(clean[IX[s]], rel=0.05, abs=0.03), s


def test_roi_and_block_phase(frames):
    img = frames[0]
    assert frame_stats(img).shape == (len(STAT_NAMES),)
    # JPEG blocks are on the frame's grid: an ROI starting off the grid must still find them.
    q = optics.apply(img, optics.Alteration("jpeg", {"quality": 20.0}))
    for x0 in (0, 3, 8, 13):
        assert frame_stats(q, (x0, 10, 600, 470))[IX["blockiness"]] > 1.5
        assert frame_stats(img, (x0, 10, 600, 470))[IX["blockiness"]] < 1.3
    with pytest.raises(ValueError, match="at least 16x16 px, got 8x100"):
        frame_stats(img, (0, 0, 8, 100))


def test_envelope_round_trips_the_card(envelope):
    card = envelope.to_card()
    back = Envelope.from_card(card)
    assert set(back.bounds) == set(STAT_NAMES) and back.frame_size == (640, 480)
    for k, (lo, hi) in envelope.bounds.items():
        assert back.bounds[k] == pytest.approx((lo, hi), abs=1e-5)
    assert card["source"]["families"] == list(optics.ISSUE_FAMILIES)


@pytest.mark.parametrize(("card", "message"), [
    ({}, "input_envelope.stats: expected"),
    ({"stats": {"luma": [10, 5]}}, "expected low <= high"),
    ({"stats": {"hue": [0, 1]}}, "expected names among"),
    ({"stats": {"luma": [0, 1]}, "confidence": {"proportions": [1.0]}}, "expected 10 bins, got 1"),
])
def test_bad_envelope_is_named(card, message):
    with pytest.raises(ValueError, match=message):
        Envelope.from_card(card)


def _env(**bounds) -> Envelope:
    return Envelope({k: tuple(v) for k, v in bounds.items()})


def _vec(luma: float) -> np.ndarray:
    v = np.zeros(len(STAT_NAMES))
    v[IX["luma"]] = luma
    return v


def test_hysteresis_enters_after_the_window_and_clears_after_a_while():
    g = DriftGuard(_env(luma=(50, 150)), window=4, enter_after=3, clear_after=5)
    states = [g.update(_vec(100)) for _ in range(10)]
    assert not any(s.in_drift for s in states)
    states = [g.update(_vec(300)) for _ in range(8)]
    # the window median leaves 150 at the 2nd bad frame (100,100,300,300 -> 200); 3 frames outside -> drift at the 4th
    assert [s.in_drift for s in states] == [False, False, False, True, True, True, True, True]
    entered = states[3]
    assert entered.changed and entered.statistic == "luma" and entered.bounds == (50, 150) and entered.value > 150
    assert sum(s.changed for s in states) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        entered.in_drift = False
    back = [g.update(_vec(100)) for _ in range(12)]
    # the median is back inside at the 3rd good frame (300,300,100,100 -> 200 is still out);
    # 5 inside -> clear at the 7th
    assert [s.in_drift for s in back] == [True] * 6 + [False] * 6
    assert back[6].changed and sum(s.changed for s in back) == 1
    assert back[3].statistic == "luma" and back[3].value > 150  # while held, it names what put it there


def test_a_single_odd_frame_does_not_enter_drift():
    g = DriftGuard(_env(luma=(50, 150)), window=8, enter_after=4, clear_after=5)
    for i in range(100):
        s = g.update(_vec(1000 if i % 20 == 0 else 100))  # one frame in 20 far out: the median never leaves
        assert not s.in_drift


def test_psi_is_zero_on_the_reference_and_large_on_a_shift():
    ref = ConfidenceReference.from_scores(np.linspace(0, 0.999, 1000))
    assert psi(ref.proportions, np.full(len(PSI_EDGES) - 1, 20.0)) == pytest.approx(0.0, abs=1e-9)
    shifted = np.zeros(len(PSI_EDGES) - 1)
    shifted[0] = 200  # every frame without a confident detection
    assert psi(ref.proportions, shifted) > 1.0


def test_confidence_drift_enters_once_the_psi_window_is_full():
    rng = np.random.default_rng(0)
    ref_scores = np.concatenate([rng.uniform(0, 0.05, 300), rng.uniform(0.6, 1.0, 700)])  # good parts, defects
    env = dataclasses.replace(_env(luma=(0, 255)), confidence=ConfidenceReference.from_scores(ref_scores))
    g = DriftGuard(env, window=4, enter_after=3, clear_after=10, psi_window=100)
    for c in rng.choice(ref_scores, 300):
        s = g.update(_vec(100), float(c))
        assert not s.in_drift
    assert s.psi is not None and s.psi < 0.25
    # the model goes uncertain: scores pile up in the middle
    caught_at = None
    for i, c in enumerate(rng.uniform(0.3, 0.5, 100)):
        s = g.update(_vec(100), float(c))
        if s.in_drift:
            caught_at = i
            break
    assert s.in_drift and s.statistic == PSI_STAT and s.value > 0.25 and caught_at is not None and caught_at < 60
    assert g.update(_vec(100), None).in_drift  # a frame the model did not score keeps the last PSI


def _run(guard: DriftGuard, gen: ConveyorGenerator, start: int, n: int, alt=None):
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        img = gen.part(i).image
        out.append(guard.update(frame_stats(img if alt is None else optics.apply(img, alt, rng))))
    return out


@pytest.mark.parametrize(("alt", "stats"), [
    (optics.Alteration("white_balance", {"gains": (0.6, 1.0, 1.5)}), {"cast_b", "cast_r"}),
    (optics.Alteration("white_balance", {"gains": (1.5, 1.0, 1.0)}), {"cast_b"}),
    (optics.Alteration("blur", {"sigma": 4.0}), {"sharpness"}),
    (optics.Alteration("noise", {"sigma": 28.0}), {"sharpness", "clip_low", "contrast"}),
    (optics.Alteration("darker", {"gain": 0.22}), {"luma", "clip_low"}),
    (optics.Alteration("low_contrast", {"contrast": 0.35, "offset": 100.0}), {"contrast"}),
])
def test_a_stream_switched_to_a_strong_fault_is_caught_within_50_parts(envelope, alt, stats):
    gen = ConveyorGenerator(777)  # a seed the envelope never saw
    guard = DriftGuard(envelope)
    before = _run(guard, gen, 0, 40)
    assert not any(s.in_drift for s in before)
    after = _run(guard, gen, 40, 50, alt)
    first = next((k for k, s in enumerate(after) if s.in_drift), None)
    assert first is not None, f"{alt.describe()}: no drift in 50 parts; last {after[-1]}"
    assert after[first].changed and after[first].statistic in stats


# -- decision.on_drift (rule 4 of inference/decision.py) and the monitor on the post thread -----------


@pytest.mark.parametrize("outcome, defects, actuate, on_drift, want_outcome, want_actuate, want_reason", [
    ("PASS", (), False, "alarm", "PASS", False, None),
    ("PASS", (), False, "reject", "REJECT", True, "drift"),
    ("PASS", (), False, "hold", "REJECT", True, "drift"),
    ("REJECT", ("d",), True, "hold", "REJECT", True, "defect"),  # a defect found stays a defect
    ("LATE", (), False, "reject", "LATE", False, None),  # on_late: pass keeps its rule under reject
    ("LATE", (), False, "hold", "LATE", True, "drift"),  # ... not under hold: every part fail-safe
    ("LATE", (), True, "hold", "LATE", True, "late"),
])
def test_under_drift(outcome, defects, actuate, on_drift, want_outcome, want_actuate, want_reason):
    v = make_verdict(outcome=outcome, defects=tuple(make_defect() for _ in defects))
    v = dataclasses.replace(v, actuate=actuate, reason=None if not actuate else v.reason or Reason.LATE)
    got = under_drift(v, on_drift)
    assert (got.outcome.value, got.actuate, got.reason.value if got.reason else None) == (
        want_outcome, want_actuate, want_reason)
    assert got.defects == v.defects and got.frame is v.frame


def _state(in_drift: bool, statistic: str):
    from inspector.inference.drift_guard import DriftState

    return DriftState(in_drift, statistic, 1.0, (0.0, 0.5), 100)


@pytest.mark.parametrize("psi_acts, statistic, acting", [
    (False, "luma", True), (False, PSI_STAT, False), (True, PSI_STAT, True)])
def test_a_drift_seen_only_in_the_confidences_alarms_but_acts_only_with_psi_acts(psi_acts, statistic, acting):
    """A batch of bad parts moves the confidences as a camera fault does: by default the PSI does not hold."""
    from inspector.service.drift import DriftMonitor

    env = Envelope({"luma": (0.0, 255.0)})
    mon = DriftMonitor(DriftConfig(psi_acts=psi_acts), "hold", card_with(input_envelope=env.to_card()),
                       ModelInfo("m", "1", "x"))
    assert mon._acting(_state(True, statistic)) is acting and not mon._acting(_state(False, statistic))
    v = make_verdict(outcome="PASS")
    assert mon.observe(v, None, None) is v  # no statistics (a late or image-less frame): nothing changes
    snap = mon.snapshot()
    assert snap["enabled"] and not snap["in_drift"]
    assert snap["unobserved"] == 1 and snap["frames"] == 0  # counted as unmeasured, not fed to the guard


@pytest.mark.parametrize("shape", [(720, 1280, 3), (481, 643, 3), (97, 211, 3), (720, 1280), (481, 643)])
@pytest.mark.parametrize("step", [1, 2, 3, 4, 7, 8, 12, 16, 32])
@pytest.mark.parametrize("roi", [None, (13, 5, 200, 90), (203, 60, 1077, 660)])
def test_strided_sample_is_the_plain_slice(shape, step, roi):
    """The sampling frame_stats runs on (a resize or a whole-pixel copy, for speed) takes exactly the
    pixels of region[::step, ::step], so the statistics and the cards' envelopes do not move."""
    img = np.random.default_rng(step).integers(0, 256, shape, dtype=np.uint8)
    x0, y0, x1, y1 = roi if roi else (0, 0, shape[1], shape[0])
    region = img[y0:min(y1, shape[0]), x0:min(x1, shape[1])]
    got = strided_sample(region, step)
    want = region[::step, ::step]
    assert got.flags.c_contiguous and got.shape == want.shape
    assert np.array_equal(got, want)


def test_frame_stats_of_the_sampled_pixels(frames):
    """frame_stats equals the statistics of the plain strided slice, whatever path sampled it."""
    for img in frames[:3]:
        step = max(1, img.shape[1] // 160)
        plain = np.ascontiguousarray(img[::step, ::step])
        means, stds = cv2.meanStdDev(plain)
        got = frame_stats(img)
        assert got[IX["luma"]] == pytest.approx(float(means.mean()), abs=1e-9)
        assert got[IX["contrast"]] == pytest.approx(float(stds.mean()) / max(float(means.mean()), 1.0), abs=1e-12)
        assert got[IX["clip_low"]] == np.count_nonzero(plain <= 5) / plain.size
        for x0 in (0, 3, 8, 13):  # blockiness: numpy's int16 difference and mean, on every block phase
            rows = img[::16, x0:, 1]
            first = (-x0) % 8 or 8
            cols = [rows[:, first + d::8] for d in (-1, 0, 3, 4)]
            m = min(c.shape[1] for c in cols)
            edge = np.abs(cols[0][:, :m].astype(np.int16) - cols[1][:, :m]).mean()
            inner = np.abs(cols[2][:, :m].astype(np.int16) - cols[3][:, :m]).mean()
            roi = (x0, 0, img.shape[1], img.shape[0])
            assert frame_stats(img, roi)[IX["blockiness"]] == (float(edge) + 0.5) / (float(inner) + 0.5)


@pytest.mark.parametrize("rows", [1, 2, 15, 16, 17])
def test_column_median_is_numpys(rows):
    rng = np.random.default_rng(rows)
    a = rng.normal(size=(rows, len(STAT_NAMES)))
    a[:, 1] = np.round(a[:, 1])  # ties
    a[0, 2], a[-1, 3] = np.inf, -np.inf
    a[rows // 2, 4] = np.nan
    assert np.array_equal(column_median(a), np.median(a, axis=0), equal_nan=True)


def test_the_guards_psi_is_psi():
    ref = ConfidenceReference.from_scores(np.linspace(0, 1, 100))
    guard = DriftGuard(Envelope({"luma": (0.0, 255.0)}, confidence=ref), psi_window=20)
    confs = np.random.default_rng(5).beta(5, 2, 60)
    for c in confs:
        state = guard.update(np.zeros(len(STAT_NAMES)), float(c))
    counts = np.histogram(confs[-20:], bins=np.asarray(PSI_EDGES))[0].astype(float)
    assert state.psi == psi(ref.proportions, counts)


# -- the output guard (what the model does) ------------------------------------------------------------
from inspector.bundle.envelope import OutputReference  # noqa: E402
from inspector.inference.drift_guard import REJECT_STAT, WEAK_STAT, OutputGuard, binomial_band  # noqa: E402


@pytest.mark.parametrize("p, n, alpha", [(0.02, 40, 1e-4), (0.5, 40, 1e-4), (0.69, 40, 1e-3), (0.0, 40, 1e-4)])
def test_binomial_band_leaves_at_most_alpha_on_each_side(p, n, alpha):
    from math import comb

    lo, hi = binomial_band(p, n, alpha)
    pmf = [comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    assert sum(pmf[:lo]) <= alpha and sum(pmf[hi + 1:]) <= alpha
    assert lo == 0 or sum(pmf[:lo + 1]) > alpha  # as tight as it can be
    assert hi == n or sum(pmf[hi:]) > alpha


def _feed(guard: OutputGuard, parts: list[tuple[float, bool]]):
    return [guard.update(c, r) for c, r in parts]


def test_the_output_guard_raises_when_weak_detections_leave_the_cards_band_and_clears_when_back():
    card = OutputReference(weak_rate=0.02, reject_rate=0.67, frames=400)
    g = OutputGuard(card, window=40, baseline=200, alpha=1e-4, clear_after=40)
    assert WEAK_STAT in g.bands and REJECT_STAT not in g.bands  # the reject share waits for the run's baseline
    rng = np.random.default_rng(0)
    normal = [(0.0, False) if rng.random() < 0.33 else (0.85, True) for _ in range(300)]
    assert not any(s.in_drift for s in _feed(g, normal))
    assert set(g.bands) == {WEAK_STAT, REJECT_STAT} and g.reference[REJECT_STAT][1] == "run"
    states = _feed(g, [(0.2, True)] * 20)  # good parts now give weak detections (false rejects)
    entered = [i for i, s in enumerate(states) if s.changed]
    assert entered and entered[0] < 12 and states[entered[0]].statistic == WEAK_STAT
    assert states[-1].value > states[-1].bounds[1]
    back = _feed(g, normal[:120])
    cleared = [i for i, s in enumerate(back) if s.changed]
    assert len(cleared) == 1 and not back[-1].in_drift and cleared[0] >= 40  # a window inside, then clear_after


def test_without_a_card_reference_the_first_parts_of_the_run_are_the_reference():
    g = OutputGuard(None, window=40, baseline=100, alpha=1e-4)
    assert g.bands == {}
    states = _feed(g, [(0.9, True)] * 99)
    assert not any(s.in_drift for s in states) and g.bands == {}  # nothing armed before the baseline
    g.update(0.9, True)
    assert g.reference[WEAK_STAT] == (0.0, "run") and g.reference[REJECT_STAT] == (1.0, "run")
    states = _feed(g, [(0.0, False)] * 40)  # the model stops finding anything: the reject share collapses
    hit = next(s for s in states if s.changed)
    assert hit.in_drift and hit.statistic == REJECT_STAT and hit.value < hit.bounds[0]


def test_the_output_reference_round_trips_the_card_and_bad_ones_are_named():
    ref = OutputReference.from_parts([0.0, 0.3, 0.9, 0.85], [False, True, True, True])
    assert ref.weak_rate == 0.25 and ref.reject_rate == 0.75 and ref.frames == 4
    env = Envelope({"luma": (0.0, 255.0)}, output=ref)
    back = Envelope.from_card(env.to_card())
    assert back.output == ref
    card = env.to_card()
    card["output"]["weak_rate"] = 1.5
    with pytest.raises(ValueError, match="input_envelope.output"):
        Envelope.from_card(card)
