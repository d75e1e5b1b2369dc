"""Optics families: deterministic, each moves the image the way its camera fault does, at the issue's magnitudes."""

import numpy as np
import pytest

from inspector.sources import optics
from inspector.sources.conveyor import ConveyorGenerator


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return ConveyorGenerator(5).part(1).image


def _grad_energy(img: np.ndarray) -> float:
    g = img.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(g, axis=1)).mean())


@pytest.mark.parametrize("name", sorted(optics.FAMILIES))
def test_every_family_is_deterministic_and_keeps_the_frame_format(frame, name):
    a, alt_a = optics.alter(frame, name, np.random.default_rng(3))
    b, alt_b = optics.alter(frame, name, np.random.default_rng(3))
    assert alt_a == alt_b and np.array_equal(a, b)
    assert a.shape == frame.shape and a.dtype == np.uint8
    assert not np.array_equal(a, frame)
    if any(lo < hi for lo, hi in optics.ranges(name).values()):
        c, _ = optics.alter(frame, name, np.random.default_rng(4))
        assert not np.array_equal(a, c)  # another draw, another image


@pytest.mark.parametrize(("name", "param", "low", "high"), [
    ("darker", "gain", 0.45, 0.65),
    ("blur", "sigma", 1.2, 2.0),
    ("noise", "sigma", 8.0, 14.0),
    ("low_contrast", "contrast", 0.6, 0.8),
    ("low_contrast", "offset", 30.0, 60.0),
    ("jpeg", "quality", 30.0, 30.0),
])
def test_default_draws_stay_within_the_issue_magnitudes(name, param, low, high):
    draws = [optics.sample(name, np.random.default_rng(i)).params[param] for i in range(200)]
    assert low <= min(draws) and max(draws) <= high
    if low < high:
        assert max(draws) - min(draws) > 0.8 * (high - low)  # the whole range is used


def test_white_balance_default_is_independent_gains_within_0_8_to_1_2_and_strong_is_a_cast():
    default = [optics.sample("white_balance", np.random.default_rng(i)).params["gains"] for i in range(200)]
    assert all(0.8 <= g <= 1.2 for gains in default for g in gains)
    strong = [optics.sample("white_balance", np.random.default_rng(i), "strong").params["gains"] for i in range(200)]
    assert min(max(g) - min(g) for g in strong) >= 0.7 - 1e-9  # never a mere exposure change


@pytest.mark.parametrize(("name", "effect"), [
    ("darker", lambda a, b: b.mean() < 0.7 * a.mean()),
    ("brighter", lambda a, b: b.mean() > 1.2 * a.mean()),
    ("low_contrast", lambda a, b: b.std() < 0.85 * a.std() and np.percentile(b, 1) > np.percentile(a, 1) + 15),
    ("gamma", lambda a, b: abs(b.mean() - a.mean()) > 1.0),
    ("blur", lambda a, b: _grad_energy(b) < 0.7 * _grad_energy(a)),
    ("defocus", lambda a, b: _grad_energy(b) < 0.8 * _grad_energy(a)),
    ("noise", lambda a, b: _grad_energy(b) > 1.5 * _grad_energy(a)),
    ("vignetting", lambda a, b: b[:20, :20].mean() < 0.9 * a[:20, :20].mean()
     and abs(float(b[230:250, 310:330].mean()) - float(a[230:250, 310:330].mean())) < 2),
    ("jpeg", lambda a, b: 1.0 < np.abs(b.astype(int) - a).mean() < 8.0),
])
def test_each_family_does_what_its_fault_does(frame, name, effect):
    out, _ = optics.alter(frame, name, np.random.default_rng(0))
    assert effect(frame, out)


@pytest.mark.parametrize(("gains", "channel_ratio"), [
    ((1.0, 1.0, 1.5), (1.0, 1.0, 1.5)),
    ((0.6, 1.0, 1.0), (0.6, 1.0, 1.0)),
])
def test_white_balance_is_a_per_channel_gain(gains, channel_ratio):
    img = np.full((8, 8, 3), 100, np.uint8)
    out = optics.apply(img, optics.Alteration("white_balance", {"gains": gains}))
    assert tuple(out[0, 0] / 100.0) == pytest.approx(channel_ratio, abs=0.01)


@pytest.mark.parametrize("name", ["darker", "blur", "noise", "white_balance", "jpeg", "low_contrast"])
def test_strong_is_beyond_default(name):
    d, s = optics.ranges(name, "default"), optics.ranges(name, "strong")
    assert d.keys() == s.keys() and d != s


@pytest.mark.parametrize(("magnitude", "expect"), [
    ({"sigma": 4}, (4.0, 4.0)),
    ({"sigma": (3, 5)}, (3.0, 5.0)),
])
def test_explicit_magnitudes(magnitude, expect):
    assert optics.ranges("blur", magnitude)["sigma"] == expect
    assert expect[0] <= optics.sample("blur", np.random.default_rng(0), magnitude).params["sigma"] <= expect[1]


@pytest.mark.parametrize(("name", "magnitude", "message"), [
    ("fog", "default", "optics family: expected one of"),
    ("blur", "huge", "expected one of ('default', 'strong')"),
    ("blur", {"radius": 2}, "parameter expected one of ['sigma'], got 'radius'"),
    ("blur", {"sigma": (5, 3)}, "low <= high"),
])
def test_bad_family_or_magnitude_is_named(name, magnitude, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        optics.sample(name, np.random.default_rng(0), magnitude)


def test_bad_image_is_refused():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        optics.apply(np.zeros((4, 4), np.uint8), optics.sample("darker", np.random.default_rng(0)))


def test_geometry_moves_the_boxes_with_the_pixels():
    img = np.zeros((200, 300, 3), np.uint8)
    img[90:110, 200:220] = 255  # a bright square right of centre
    alt = optics.Alteration("geometry", {"scale": 1.1, "degrees": 0.0})
    out = optics.apply(img, alt)
    box = optics.transform_boxes(np.array([[200, 90, 220, 110]]), alt, 300, 200)[0]
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert box == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=1.5)
    same = optics.transform_boxes(np.array([[1, 2, 3, 4]]), optics.sample("blur", np.random.default_rng(0)), 300, 200)
    assert same.tolist() == [[1, 2, 3, 4]]


def test_random_camera_is_deterministic_and_mixes_families(frame):
    states = [optics.random_camera(np.random.default_rng(i)) for i in range(100)]
    assert optics.random_camera(np.random.default_rng(7)) == states[7]
    seen = {a.family for s in states for a in s}
    assert seen == set(optics.TRAINING_MIX)
    assert any(len(s) == 0 for s in states) and any(len(s) >= 3 for s in states)  # clean frames stay in the mix
    out = optics.apply_all(frame, states[7], np.random.default_rng(0))
    assert out.shape == frame.shape and out.dtype == np.uint8


def test_config_lists_the_same_families():
    from typing import get_args

    from inspector.config import OpticsFamily

    assert set(get_args(OpticsFamily)) == {"none", *optics.FAMILIES}


def _synthetic(appearance, n):
    from inspector.config import SyntheticSourceConfig
    from inspector.sources.synthetic import SyntheticSource

    cfg = SyntheticSourceConfig(seed=9, parts_per_s=500, trigger="triggered", queue_size=64, appearance=appearance)
    src = SyntheticSource(cfg, max_frames=n)
    src.start()
    try:
        frames = [src.read(10.0) for _ in range(n)]
    finally:
        src.stop()
    assert all(f is not None for f in frames)
    return frames


def test_synthetic_camera_switches_its_appearance_mid_run():
    frames = _synthetic([{"after_parts": 3, "family": "white_balance", "magnitude": "strong"},
                         {"after_parts": 5, "family": "blur", "params": {"sigma": 4}},
                         {"after_parts": 7, "family": "none"}], 9)
    gen = ConveyorGenerator(9)
    parts = [gen.part(i) for i in range(9)]
    clean = [p.image for p in parts]
    same = [np.array_equal(f.image, c) for f, c in zip(frames, clean, strict=True)]
    assert same == [True, True, True, False, False, False, False, True, True]
    # one draw per switch: the same white balance on parts 3 and 4 (the ratio of channel means moves alike)
    cast = [np.array([f.image[..., 0].mean(), f.image[..., 2].mean()]) / max(f.image[..., 1].mean(), 1) for f in frames]
    assert np.abs(cast[3] - cast[4]).max() < 0.05 and np.abs(cast[3] - cast[0]).max() > 0.2
    assert np.array_equal(frames[5].image, optics.apply(clean[5], optics.Alteration("blur", {"sigma": 4.0})))
    # labels unchanged by the optics: each frame's truth is its clean part's defects
    assert [[(t.class_id, t.name, tuple(t.box)) for t in f.truth] for f in frames] == \
        [[(d.class_id, d.name, tuple(d.box)) for d in p.defects] for p in parts]
    assert any(f.truth for f in frames)


@pytest.mark.parametrize(("appearance", "message"), [
    ([{"after_parts": 5, "family": "blur"}, {"after_parts": 5, "family": "none"}], "strictly increasing"),
    ([{"after_parts": 0, "family": "fog"}], "appearance.0.family"),
])
def test_bad_appearance_is_refused_at_load(appearance, message):
    from pydantic import ValidationError

    from inspector.config import SyntheticSourceConfig

    with pytest.raises(ValidationError, match=message):
        SyntheticSourceConfig(appearance=appearance)


def test_bad_appearance_parameter_is_named():
    from inspector.config import SyntheticSourceConfig
    from inspector.errors import ConfigError
    from inspector.sources.synthetic import SyntheticSource

    cfg = SyntheticSourceConfig(appearance=[{"after_parts": 0, "family": "blur", "params": {"radius": 3}}])
    with pytest.raises(ConfigError, match=r"source.appearance\[0\].params: optics blur: parameter expected one of"):
        SyntheticSource(cfg)


def test_conveyor_random_optics_keeps_the_part_and_its_labels():
    from inspector.sources.conveyor import SYNTH_VERSION, render_version

    plain, cams = ConveyorGenerator(5), ConveyorGenerator(5, optics_mode="random")
    changed = 0
    for i in range(12):
        a, b = plain.part(i), cams.part(i)
        assert a.defects == b.defects and a.part_id == b.part_id
        assert np.array_equal(b.image, ConveyorGenerator(5, optics_mode="random").part(i).image)  # deterministic
        changed += not np.array_equal(a.image, b.image)
    assert 6 <= changed < 12  # most frames get a camera state, some stay clean
    assert render_version("none") == SYNTH_VERSION  # stamps of existing datasets stay valid
    assert render_version("random") != SYNTH_VERSION
    with pytest.raises(ValueError, match=r"optics: expected one of \('none', 'random'\), got 'fancy'"):
        ConveyorGenerator(5, optics_mode="fancy")
