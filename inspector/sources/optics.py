"""What a line camera's optics do to a frame over time, as deterministic image alterations.

A lamp ages (darker), a diffuser yellows or the white balance drifts (a colour cast), a lens is
knocked out of focus (blur), the gain is raised to compensate (noise), a stream is compressed
(JPEG blocks), stray light flattens the image (brighter with less contrast). Each *family* here is
one such alteration with the magnitudes issue 14 measured the model against (`default`) and
beyond them (`strong`: what the drift guard must notice).

Two steps, so a camera *state* can be held constant: `sample(family, rng, magnitude)` draws the
family's parameters (a frozen `Alteration`), `apply(image, alteration, rng)` renders them (the rng
only for per-frame randomness: sensor noise). `alter(image, family, rng)` does both, as a
dataset perturbation does (one draw per image). Every result is a pure function of the inputs and
the rng's state. Only numpy and OpenCV (runtime-safe: the synthetic camera uses it).

Intensity families work through 256-entry lookup tables (one cv2.LUT over the frame, ~0.3 ms at
1280x720 here); blur, noise, JPEG and geometry through OpenCV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class Family:
    name: str
    meaning: str
    #: parameter -> (low, high) it is drawn from, uniformly, at the issue's magnitudes
    default: Mapping[str, Range]
    #: the same parameters beyond those magnitudes (the drift guard must notice these)
    strong: Mapping[str, Range]
    #: whether the alteration moves pixels (labels must follow: see `transform_boxes`)
    geometric: bool = False


def _f(name: str, meaning: str, default: dict, strong: dict, geometric: bool = False) -> Family:
    return Family(name, meaning, MappingProxyType(default), MappingProxyType(strong), geometric)


# Where a family's draw needs a sign (gamma above or below 1, a scale up or down), the range is a
# *deviation* and the sign is drawn.
FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (
    _f("darker", "exposure/gain down: an ageing lamp, a shorter exposure",
       {"gain": (0.45, 0.65)}, {"gain": (0.2, 0.3)}),
    _f("brighter", "exposure/gain up (clipping highlights)",
       {"gain": (1.25, 1.5)}, {"gain": (1.9, 2.4)}),
    _f("low_contrast", "brighter with less contrast: stray light, a fogged or dirty window",
       {"contrast": (0.6, 0.8), "offset": (30.0, 60.0)}, {"contrast": (0.3, 0.45), "offset": (80.0, 120.0)}),
    _f("white_balance", "colour cast: a gain per channel, drawn independently; their max-min stretched to at "
       "least `spread` about their mean (strong: a cast, not an exposure change)",
       {"gain": (0.8, 1.2), "spread": (0.0, 0.0)}, {"gain": (0.5, 1.5), "spread": (0.7, 0.9)}),
    _f("gamma", "tone curve: gamma exp(+/- deviation) (a camera profile or auto-exposure change)",
       {"deviation": (0.0, 0.35)}, {"deviation": (0.7, 0.9)}),
    _f("jpeg", "JPEG / stream compression at this quality",
       {"quality": (30.0, 30.0)}, {"quality": (8.0, 12.0)}),
    _f("blur", "Gaussian blur: focus drift, vibration (sigma in source pixels)",
       {"sigma": (1.2, 2.0)}, {"sigma": (3.5, 4.5)}),
    _f("defocus", "defocus: a disk (pillbox) kernel of this radius in source pixels",
       {"radius": (1.5, 3.0)}, {"radius": (5.0, 7.0)}),
    _f("noise", "sensor noise: additive Gaussian, sigma in grey levels (gain raised)",
       {"sigma": (8.0, 14.0)}, {"sigma": (20.0, 30.0)}),
    _f("vignetting", "corners darker than the centre by this fraction (aperture, lamp aimed off)",
       {"strength": (0.15, 0.35)}, {"strength": (0.6, 0.8)}),
    _f("geometry", "small scale and rotation about the centre: the camera mount moved",
       {"scale": (0.0, 0.06), "degrees": (0.0, 4.0)}, {"scale": (0.15, 0.2), "degrees": (10.0, 15.0)},
       geometric=True),
)})

#: The families of the issue's table, in its order (what `inspector eval --perturb` reports by default).
ISSUE_FAMILIES: tuple[str, ...] = ("darker", "blur", "noise", "low_contrast", "jpeg", "white_balance")

#: Named magnitudes.
MAGNITUDES = ("default", "strong")


@dataclass(frozen=True)
class Alteration:
    """One family with its drawn parameters (a camera state, applied the same way to every frame)."""

    family: str
    params: Mapping[str, float | tuple[float, ...]]

    def describe(self) -> str:
        def fmt(v):
            return "(" + ", ".join(f"{x:.3g}" for x in v) + ")" if isinstance(v, tuple) else f"{v:.3g}"

        return f"{self.family}[" + ", ".join(f"{k}={fmt(v)}" for k, v in self.params.items()) + "]"


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"optics family: expected one of {sorted(FAMILIES)}, got {name!r}") from None


def ranges(name: str, magnitude: str | Mapping[str, float | Range] = "default") -> dict[str, Range]:
    """The parameter ranges of a family: a named magnitude, or explicit values/ranges.

    Explicit values override the family's default ranges one by one: {"sigma": 4} is sigma 4
    exactly, {"sigma": (3, 5)} draws it within [3, 5]."""
    fam = family(name)
    if isinstance(magnitude, str):
        if magnitude not in MAGNITUDES:
            raise ValueError(f"optics magnitude of {name}: expected one of {MAGNITUDES} or parameters, "
                             f"got {magnitude!r}")
        return dict(getattr(fam, magnitude))
    out = dict(fam.default)
    for k, v in magnitude.items():
        if k not in fam.default:
            raise ValueError(f"optics {name}: parameter expected one of {sorted(fam.default)}, got {k!r}")
        lo, hi = (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[1]))
        if hi < lo:
            raise ValueError(f"optics {name}.{k}: range must be (low, high) with low <= high, got {v!r}")
        out[k] = (lo, hi)
    return out


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def sample(name: str, rng: np.random.Generator, magnitude: str | Mapping[str, float | Range] = "default") -> Alteration:
    """Draws the parameters of one alteration of family `name`."""
    r = ranges(name, magnitude)
    if name == "white_balance":
        g = np.array([_u(rng, r["gain"]) for _ in range(3)])
        need, have = _u(rng, r["spread"]), float(g.max() - g.min())
        if have < need:  # nearly equal gains are an exposure change, not a cast: stretch them apart
            m = float(g.mean())
            if have > 1e-6:
                g = m + (g - m) * (need / have)
            else:
                g = m + need * np.array([-0.5, 0.0, 0.5])[rng.permutation(3)]
            g = g.clip(0.0, None)
        return Alteration(name, MappingProxyType({"gains": tuple(float(x) for x in g)}))
    if name == "gamma":
        return Alteration(name, MappingProxyType({"gamma": math.exp(_sign(rng) * _u(rng, r["deviation"]))}))
    if name == "geometry":
        scale = 1.0 + _sign(rng) * _u(rng, r["scale"])
        return Alteration(name, MappingProxyType({"scale": scale, "degrees": _sign(rng) * _u(rng, r["degrees"])}))
    return Alteration(name, MappingProxyType({k: _u(rng, v) for k, v in r.items()}))


# -- rendering ---------------------------------------------------------------------------------
_LEVELS = np.arange(256, dtype=np.float32)


def _lut(image: np.ndarray, curves: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Applies one 256-entry curve to all channels, or one per channel (BGR)."""
    if isinstance(curves, np.ndarray):
        table = np.clip(np.rint(curves), 0, 255).astype(np.uint8)
        return cv2.LUT(image, table)
    table = np.stack([np.clip(np.rint(c), 0, 255) for c in curves], axis=-1).astype(np.uint8)
    return cv2.LUT(image, table.reshape(256, 1, 3))


def _vignette_mask(h: int, w: int, strength: float) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / ((h - 1) / 2 or 1)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / ((w - 1) / 2 or 1)
    r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0  # 0 at the centre, 1 in the corners
    return (1.0 - strength * r2 ** 1.5)[..., None]  # cos^4-like fall-off, flat in the middle


def geometry_matrix(alt: Alteration, width: int, height: int) -> np.ndarray:
    """The 2x3 affine matrix of a geometry alteration (about the frame centre)."""
    return cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), float(alt.params["degrees"]),
                                   float(alt.params["scale"]))


def transform_boxes(boxes: np.ndarray, alt: Alteration, width: int, height: int) -> np.ndarray:
    """x0,y0,x1,y1 boxes after a geometric alteration (the box around the moved corners, clipped);
    unchanged for photometric families."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not family(alt.family).geometric or len(boxes) == 0:
        return boxes
    m = geometry_matrix(alt, width, height)
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1)
    moved = corners @ m[:, :2].T + m[:, 2]
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    out = np.concatenate([lo, hi], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out.astype(np.float32)


def apply(image: np.ndarray, alt: Alteration, rng: np.random.Generator | None = None) -> np.ndarray:
    """Renders an alteration on an HxWx3 uint8 BGR frame; returns a new uint8 frame.

    `rng` is needed only by `noise` (a fresh draw per frame, as a sensor makes it)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"optics: expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    p, name = alt.params, alt.family
    if name in ("darker", "brighter"):
        return _lut(image, _LEVELS * float(p["gain"]))
    if name == "low_contrast":
        return _lut(image, _LEVELS * float(p["contrast"]) + float(p["offset"]))
    if name == "white_balance":
        return _lut(image, [_LEVELS * float(g) for g in p["gains"]])
    if name == "gamma":
        return _lut(image, 255.0 * (_LEVELS / 255.0) ** float(p["gamma"]))
    if name == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, round(float(p["quality"]))])
        if not ok:
            raise RuntimeError("optics jpeg: encoding failed")
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if name == "blur":
        return cv2.GaussianBlur(image, (0, 0), float(p["sigma"]))
    if name == "defocus":
        r = float(p["radius"])
        k = math.ceil(r)
        kernel = np.zeros((2 * k + 1, 2 * k + 1), np.float32)
        cv2.circle(kernel, (k * 16, k * 16), int(r * 16), 1.0, -1, cv2.LINE_AA, 4)
        return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    if name == "noise":
        if rng is None:
            raise ValueError("optics noise: needs an rng (the noise is drawn per frame)")
        noise = rng.standard_normal(image.shape, dtype=np.float32) * float(p["sigma"])
        return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if name == "vignetting":
        h, w = image.shape[:2]
        return np.clip(image * _vignette_mask(h, w, float(p["strength"])), 0, 255).astype(np.uint8)
    if name == "geometry":
        h, w = image.shape[:2]
        return cv2.warpAffine(image, geometry_matrix(alt, w, h), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    raise ValueError(f"optics family: expected one of {sorted(FAMILIES)}, got {name!r}")


def alter(image: np.ndarray, name: str, rng: np.random.Generator,
          magnitude: str | Mapping[str, float | Range] = "default") -> tuple[np.ndarray, Alteration]:
    """One draw of family `name` rendered on `image`: (altered image, what was drawn)."""
    alt = sample(name, rng, magnitude)
    return apply(image, alt, rng), alt


#: For training: a random camera per frame. Each family is applied with its probability, at
#: magnitudes reaching past the issue's (a model trained up to the edge holds *at* the edge).
TRAINING_MIX: Mapping[str, tuple[float, Mapping[str, Range]]] = MappingProxyType({
    "white_balance": (0.5, {"gain": (0.75, 1.25)}),
    "darker": (0.2, {"gain": (0.4, 0.8)}),
    "brighter": (0.1, {"gain": (1.1, 1.4)}),
    "low_contrast": (0.25, {"contrast": (0.5, 0.85), "offset": (20.0, 75.0)}),
    "gamma": (0.2, {"deviation": (0.0, 0.4)}),
    "vignetting": (0.15, {"strength": (0.1, 0.4)}),
    "blur": (0.2, {"sigma": (0.8, 2.4)}),
    "defocus": (0.05, {"radius": (1.0, 3.0)}),
    # 0.25 / sigma 4-16 (optics1) left 2 of ~187 defective parts escaping at the issue's sigma 8-14 on
    # held-out seed 4004 (1.1 %, the one cell over 1 %), and no threshold found them: more noise in training.
    "noise": (0.4, {"sigma": (4.0, 18.0)}),
    "jpeg": (0.3, {"quality": (20.0, 60.0)}),
})

#: Order a camera applies them in: light and sensor response, then optics, sensor noise, encoder.
_CAMERA_ORDER = ("white_balance", "darker", "brighter", "low_contrast", "gamma", "vignetting",
                 "blur", "defocus", "geometry", "noise", "jpeg")


def random_camera(rng: np.random.Generator,
                  mix: Mapping[str, tuple[float, Mapping[str, Range]]] = TRAINING_MIX,
                  clean: float = 0.25) -> tuple[Alteration, ...]:
    """Draws a random camera state: the reference camera with probability `clean`, else the families
    of `mix` each with its probability, in camera order (~30 % of the draws end up unaltered: the
    model must keep the clean-set bar)."""
    if rng.random() < clean:
        return ()
    out = []
    for name in _CAMERA_ORDER:
        if name in mix:
            p, r = mix[name]
            if rng.random() < p:
                out.append(sample(name, rng, r))
    return tuple(out)


def apply_all(image: np.ndarray, alts: tuple[Alteration, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    for a in alts:
        image = apply(image, a, rng)
    return image

