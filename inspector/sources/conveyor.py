"""Synthetic conveyor: top-down frames of a machined flange on a belt, with ground truth.

One generator feeds three consumers: `inspector synth` (a YOLO dataset for training and
evaluation, written by training/datasets.py), the `synthetic` frame source of the pipeline (a
paced conveyor whose parts carry their ground truth, so a run can count escapes and false
rejects), and the tests.

Every frame is a pure function of (seed, index): `ConveyorGenerator(seed).part(i)` is the same
image on every machine and in any order, so datasets can be made in parallel and a part seen in a
run can be regenerated for a bug report. Only numpy and OpenCV are used (runtime-safe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.sources import optics

#: Bumped whenever rendering changes: datasets stamped with another version are rebuilt.
SYNTH_VERSION = 5

#: Camera optics a frame can be rendered with. "none": the reference camera (frames as SYNTH_VERSION
#: always made them). "random": each frame then goes through a random camera state drawn from
#: `optics.TRAINING_MIX` (white balance, exposure, contrast, gamma, vignetting, blur, noise, JPEG),
#: from a random stream of its own: the part, its defects and labels are the same as with "none".
OPTICS_MODES = ("none", "random")
#: Bumped whenever optics.TRAINING_MIX or how it is applied changes.
OPTICS_VERSION = 2


def render_version(optics_mode: str = "none") -> int | str:
    """What a dataset's stamp records: SYNTH_VERSION for the reference camera (existing stamps stay
    valid), "<SYNTH_VERSION>+optics<OPTICS_VERSION>" for random optics (never equal to a plain one)."""
    if optics_mode not in OPTICS_MODES:
        raise ValueError(f"optics: expected one of {OPTICS_MODES}, got {optics_mode!r}")
    return SYNTH_VERSION if optics_mode == "none" else f"{SYNTH_VERSION}+optics{OPTICS_VERSION}"

#: Defect classes, in model class-id order. The model card and the config must agree with this.
DEFECT_CLASSES: tuple[str, ...] = ("scratch", "pit", "crack", "contamination")

FRAME_WIDTH = 640
FRAME_HEIGHT = 480

#: Optics: how large the part appears, relative to the v3 framing (flange 250-320 px across a
#: 640 px frame). A line camera is framed so the part fills the field of view and the smallest
#: defect spans at least ~3 px at the detector's 320 px input (the usual sizing rule for
#: inspection optics); at 1.0 a scratch was 1-1.5 px wide there and pits were the size of the
#: flange's bolt holes, so the model could not tell scratch from crack (measured: scratch
#: recall 0.77 at IoU 0.5 but 0.98 class-agnostic at IoU 0.3). Part and defect sizes scale
#: with it; sensor noise, blur and belt texture do not.
MAGNIFICATION = 1.3


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _within(a: Box, b: Box, gap: float) -> bool:
    """Whether boxes `a` and `b` overlap or come closer than `gap`."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


@dataclass(frozen=True)
class GroundTruthDefect:
    class_id: int
    name: str
    #: x0, y0, x1, y1 in source pixels.
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class SynthPart:
    index: int
    part_id: str
    image: np.ndarray = field(repr=False)  # HxWx3 uint8 BGR
    defects: tuple[GroundTruthDefect, ...]

    @property
    def defective(self) -> bool:
        return bool(self.defects)

    def yolo_labels(self) -> str:
        h, w = self.image.shape[:2]
        lines = []
        for d in self.defects:
            x0, y0, x1, y1 = d.box
            lines.append(
                f"{d.class_id} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
            )
        return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class _Flange:
    cx: float
    cy: float
    radius: float
    bore: float
    holes: tuple[tuple[float, float, float], ...]  # (x, y, r)


class ConveyorGenerator:
    """Deterministic frames of flanges on a conveyor belt.

    `defect_free_ratio` of the parts carry no defect; the others carry 1-3 defects of any class.
    Hard negatives (dust, glare, belt texture and stains, laser-etched lot numbers) appear on
    good and defective parts alike so the model must learn the defects, not the clutter.
    """

    def __init__(
        self,
        seed: int,
        width: int = FRAME_WIDTH,
        height: int = FRAME_HEIGHT,
        defect_free_ratio: float = 1 / 3,
        optics_mode: str = "none",
    ) -> None:
        render_version(optics_mode)  # refuses an unknown mode
        if not 0.0 <= defect_free_ratio <= 1.0:
            raise ValueError(f"defect_free_ratio must be within [0, 1], got {defect_free_ratio}")
        if width < 320 or height < 240:
            raise ValueError(f"frame must be at least 320x240, got {width}x{height}")
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self.defect_free_ratio = float(defect_free_ratio)
        self.optics_mode = optics_mode
        self._scale = min(width / FRAME_WIDTH, height / FRAME_HEIGHT)
        #: pixels per unit on the part (frame scale times the optics' magnification)
        self._mag = self._scale * MAGNIFICATION
        self._belt = self._make_belt(np.random.default_rng([self.seed, 0xBE17]))

    # -- public -------------------------------------------------------------------------------
    def part(self, index: int) -> SynthPart:
        rng = np.random.default_rng([self.seed, int(index)])
        frame = self._belt_frame(rng)
        flange = self._place_flange(rng)
        alpha = self._draw_flange(frame, flange, rng)
        self._draw_belt_clutter(frame, alpha, rng)
        defects: list[GroundTruthDefect] = []
        if rng.random() >= self.defect_free_ratio:
            for _ in range(int(rng.integers(1, 4))):
                d = self._draw_defect(frame, alpha, flange, rng, taken=[x.box for x in defects])
                if d is not None:
                    defects.append(d)
        self._draw_part_clutter(frame, alpha, flange, rng)
        image = self._finish(frame, rng)
        if self.optics_mode == "random":
            orng = np.random.default_rng([self.seed, int(index), 0x0971C5])
            image = optics.apply_all(image, optics.random_camera(orng), orng)
        return SynthPart(
            index=int(index),
            part_id=f"S{self.seed}-{int(index):07d}",
            image=image,
            defects=tuple(defects),
        )

    # -- belt ---------------------------------------------------------------------------------
    def _make_belt(self, rng: np.random.Generator) -> np.ndarray:
        """A belt tile twice the frame width: the frame is a moving window over it."""
        h, w = self.height, self.width * 2
        base = float(rng.uniform(55, 85))
        y = np.arange(h, dtype=np.float32)[:, None]
        x = np.arange(w, dtype=np.float32)[None, :]
        weave = 4.0 * np.sin(y * 2 * np.pi / 5.0) + 3.0 * np.sin(x * 2 * np.pi / 7.0 + y * 0.3)
        grain = rng.normal(0, 5, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
        grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR)
        belt = base + weave + grain
        # Belt splices: dark seams across the belt (a hard negative: long, straight, dark).
        for sx in rng.integers(0, w, size=2):
            belt[:, max(0, sx - 2) : sx + 2] -= 18
        tint = np.array([1.0, 1.02, 1.05], np.float32)
        return np.clip(belt[..., None] * tint, 0, 255).astype(np.float32)

    def _belt_frame(self, rng: np.random.Generator) -> np.ndarray:
        off = int(rng.integers(0, self.width))
        return self._belt[:, off : off + self.width].copy()

    # -- the part -----------------------------------------------------------------------------
    def _place_flange(self, rng: np.random.Generator) -> _Flange:
        s, m = self._scale, self._mag
        radius = float(rng.uniform(125, 160)) * m
        # The part fills most of the frame height: it moves less before it would leave it.
        cx = self.width / 2 + float(rng.uniform(-50, 50)) * s
        cy = self.height / 2 + float(rng.uniform(-20, 20)) * s
        bore = radius * float(rng.uniform(0.28, 0.36))
        n = int(rng.choice([4, 6, 8]))
        rot = float(rng.uniform(0, 2 * np.pi))
        pcd = radius * 0.70
        hr = radius * float(rng.uniform(0.06, 0.08))
        holes = tuple(
            (cx + pcd * math.cos(rot + 2 * np.pi * k / n), cy + pcd * math.sin(rot + 2 * np.pi * k / n), hr)
            for k in range(n)
        )
        return _Flange(cx, cy, radius, bore, holes)

    def _draw_flange(self, frame: np.ndarray, f: _Flange, rng: np.random.Generator) -> np.ndarray:
        """Renders the flange in place; returns its coverage (alpha) for the whole frame."""
        h, w = frame.shape[:2]
        pad = 24  # room for the soft cast shadow
        x0, x1 = max(0, int(f.cx - f.radius - pad)), min(w, int(f.cx + f.radius + pad))
        y0, y1 = max(0, int(f.cy - f.radius - pad)), min(h, int(f.cy + f.radius + pad))
        xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        dx, dy = xx - f.cx, yy - f.cy
        roi = frame[y0:y1, x0:x1]
        # Cast shadow on the belt, from an overhead light slightly off axis (soft edge, analytic).
        rs = cv2.magnitude(dx - 7, dy - 9)
        roi *= (1.0 - 0.45 * np.clip(0.5 + (f.radius - rs) / 14.0, 0, 1))[..., None]

        r = cv2.magnitude(dx, dy)
        a = np.clip(f.radius - r + 0.5, 0, 1) * np.clip(r - f.bore + 0.5, 0, 1)
        base = float(rng.uniform(140, 195))
        light = float(rng.uniform(0, 2 * np.pi))
        metal = base + (22.0 / f.radius) * (dx * math.cos(light) + dy * math.sin(light))
        metal += 5.0 * np.sin(r * (2 * np.pi / float(rng.uniform(2.8, 4.5))))  # turning marks
        metal += 38.0 * ((r > f.radius - 7) | (r < f.bore + 5))  # chamfers catch the light
        for hx, hy, hr in f.holes:  # drilled holes and their chamfers, in small windows
            hx0, hx1 = max(x0, int(hx - hr - 5)), min(x1, int(hx + hr + 6))
            hy0, hy1 = max(y0, int(hy - hr - 5)), min(y1, int(hy + hr + 6))
            if hx0 >= hx1 or hy0 >= hy1:
                continue
            sl = (slice(hy0 - y0, hy1 - y0), slice(hx0 - x0, hx1 - x0))
            rh = cv2.magnitude(xx[sl] - hx, yy[sl] - hy)
            a[sl] *= np.clip(rh - hr + 0.5, 0, 1)
            metal[sl] += 30.0 * ((rh > hr) & (rh < hr + 3))
        tint = np.array([1.03, 1.0, 0.97], np.float32) * float(rng.uniform(0.97, 1.03))
        a3 = a[..., None]
        roi *= 1 - a3
        roi += (metal[..., None] * tint) * a3

        alpha = np.zeros((h, w), np.float32)
        alpha[y0:y1, x0:x1] = a
        return alpha

    # -- defects ------------------------------------------------------------------------------
    def _surface_point(self, f: _Flange, rng: np.random.Generator, margin: float) -> tuple[float, float]:
        for _ in range(50):
            rho = float(rng.uniform(f.bore + margin, f.radius - margin))
            phi = float(rng.uniform(0, 2 * np.pi))
            x, y = f.cx + rho * math.cos(phi), f.cy + rho * math.sin(phi)
            if all(math.hypot(x - hx, y - hy) > hr + margin for hx, hy, hr in f.holes):
                return x, y
        return f.cx + (f.bore + f.radius) / 2, f.cy

    def _draw_defect(
        self, frame: np.ndarray, alpha: np.ndarray, f: _Flange, rng: np.random.Generator,
        taken: Sequence[Box] = (),
    ) -> GroundTruthDefect | None:
        """Draws one defect that does not touch the `taken` boxes (None when none fits).

        Defects never overlap: a pit under a patch of rust or inside a crack's box is invisible or
        ambiguous, and no annotator would label it apart (v4 let them overlap; most pits the model
        missed sat inside another defect's box)."""
        class_id = int(rng.integers(0, len(DEFECT_CLASSES)))
        s = self._mag
        gap, half = 4 * s, int(75 * s)
        for _ in range(4):
            cx, cy = self._surface_point(f, rng, margin=12 * s)
            x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
            x1, y1 = min(self.width, int(cx) + half), min(self.height, int(cy) + half)
            lc = (cx - x0, cy - y0)  # defect centre in ROI coordinates
            shape = (y1 - y0, x1 - x0)
            layers = getattr(self, f"_defect_{DEFECT_CLASSES[class_id]}")(shape, lc, rng, s)
            a = alpha[y0:y1, x0:x1]
            support = np.zeros(shape, bool)
            for layer, _ in layers:
                layer *= a
                support |= layer > 0.25
            ys, xs = np.nonzero(support)
            if len(xs) < 6:
                continue
            box = (float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1))
            if any(_within(box, t, gap) for t in taken):
                continue
            roi = frame[y0:y1, x0:x1]
            for layer, color in layers:
                roi += layer[..., None] * np.asarray(color, np.float32)
            return GroundTruthDefect(class_id, DEFECT_CLASSES[class_id], box)
        return None

    @staticmethod
    def _polyline_layer(shape, pts, thickness) -> np.ndarray:
        layer = np.zeros(shape, np.float32)
        cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA, 4)
        return layer

    def _defect_scratch(self, shape, c, rng, s):
        # A groove cut into machined metal: a dark trough with a thin bright lip on one side.
        # (A bright-only line vanishes on brightly lit metal, where it clips at 255.)
        length = float(rng.uniform(40, 120)) * s
        ang = float(rng.uniform(0, np.pi))
        d = np.array([math.cos(ang), math.sin(ang)])
        n = np.array([-d[1], d[0]])
        t = np.linspace(-0.5, 0.5, 24)[:, None]
        bow = float(rng.uniform(-0.12, 0.12)) * length
        pts = np.array(c) + t * length * d + (1 - 4 * t * t) * bow * n
        groove = self._polyline_layer(shape, pts, max(2, round(float(rng.uniform(2, 3.5)) * s)))
        lip = self._polyline_layer(shape, pts + n * 2.0 * s * float(rng.choice([-1, 1])), 1)
        k = float(rng.uniform(55, 90))
        return [(groove, (-k, -k, -k)), (lip, (40.0, 40.0, 40.0))]

    def _defect_pit(self, shape, c, rng, s):
        radius = float(rng.uniform(6, 12)) * s
        core = np.zeros(shape, np.float32)
        cv2.ellipse(core, (int(c[0] * 16), int(c[1] * 16)),
                    (int(radius * 16), int(radius * float(rng.uniform(0.75, 1.0)) * 16)),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        core = cv2.GaussianBlur(core, (0, 0), 0.8)
        rim = np.zeros(shape, np.float32)
        light = float(rng.uniform(0, 360))
        cv2.ellipse(rim, (int(c[0] * 16), int(c[1] * 16)), (int(radius * 16), int(radius * 16)),
                    light, -70, 70, 1.0, 2, cv2.LINE_AA, 4)
        k = float(rng.uniform(70, 110))
        return [(core, (-k, -k, -k)), (rim, (45.0, 45.0, 45.0))]

    def _defect_crack(self, shape, c, rng, s):
        # A fatigue crack: a jagged path of short kinked segments, widest where it started and
        # tapering to hairline tips, often branching. (v4 drew a smooth, even-width path that
        # read as a scratch: the model called 5 of 7 missed cracks scratches at IoU > 0.8.)
        segments = int(rng.integers(7, 13))
        ang = float(rng.uniform(0, 2 * np.pi))
        pts = [np.array(c, float)]
        for _ in range(segments):
            ang += float(rng.choice([-1, 1])) * float(rng.uniform(0.3, 0.9))
            step = float(rng.uniform(4, 9)) * s
            pts.append(pts[-1] + step * np.array([math.cos(ang), math.sin(ang)]))
        pts = np.array(pts)
        pts -= (pts.mean(axis=0) - np.array(c))  # centre the crack on the chosen point
        layer = np.zeros(shape, np.float32)
        wide = max(2, round(3.5 * s))
        for i in range(len(pts) - 1):  # taper: full width in the middle, 1 px at the tips
            w = 1 + (wide - 1) * (1 - abs(2 * (i + 0.5) / (len(pts) - 1) - 1))
            layer = np.maximum(layer, self._polyline_layer(shape, pts[i:i + 2], max(1, round(w))))
        if rng.random() < 0.5:  # a branch
            j = int(rng.integers(2, len(pts) - 1))
            b_ang = ang + float(rng.choice([-1, 1])) * float(rng.uniform(0.6, 1.2))
            branch = [pts[j]]
            for _ in range(int(rng.integers(2, 5))):
                b_ang += float(rng.uniform(-0.5, 0.5))
                branch.append(branch[-1] + float(rng.uniform(5, 9)) * s * np.array([math.cos(b_ang), math.sin(b_ang)]))
            layer = np.maximum(layer, self._polyline_layer(shape, np.array(branch), max(2, round(2 * s))))
        k = float(rng.uniform(85, 125))
        return [(layer, (-k, -k, -k))]

    def _defect_contamination(self, shape, c, rng, s):
        layer = np.zeros(shape, np.float32)
        size = float(rng.uniform(10, 24)) * s
        for _ in range(int(rng.integers(3, 7))):
            off = rng.normal(0, size * 0.45, 2)
            axes = (int(size * float(rng.uniform(0.3, 0.7)) * 16), int(size * float(rng.uniform(0.2, 0.5)) * 16))
            cv2.ellipse(layer, (int((c[0] + off[0]) * 16), int((c[1] + off[1]) * 16)), axes,
                        float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
        layer = np.minimum(layer * 1.4, 1.0)
        if rng.random() < 0.6:  # rust: orange-brown in BGR
            color = (-float(rng.uniform(90, 130)), -float(rng.uniform(40, 70)), float(rng.uniform(-10, 20)))
        else:  # cutting-oil residue: dark with a green-blue cast
            color = (-float(rng.uniform(40, 60)), -float(rng.uniform(55, 80)), -float(rng.uniform(90, 120)))
        return [(layer, color)]

    # -- hard negatives -----------------------------------------------------------------------
    def _draw_belt_clutter(self, frame: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
        """Stains and debris on the belt: dark blobs that are not on the part, hence not defects."""
        h, w = frame.shape[:2]
        for _ in range(int(rng.integers(0, 4))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            if alpha[y, x] > 0:
                continue
            r = int(rng.integers(4, 18))
            cv2.ellipse(frame, (x, y), (r, int(r * rng.uniform(0.4, 1))), float(rng.uniform(0, 180)),
                        0, 360, (30, 32, 34), -1, cv2.LINE_AA)

    def _draw_part_clutter(self, frame: np.ndarray, alpha: np.ndarray, f: _Flange, rng: np.random.Generator) -> None:
        h, w = frame.shape[:2]
        s = self._mag
        # Laser-etched lot number: a harmless, deliberate mark.
        if rng.random() < 0.7:
            x, y = self._surface_point(f, rng, margin=20 * s)
            text = f"LOT {int(rng.integers(1000, 9999))}"
            k = float(rng.uniform(25, 45))
            self._local_layer(frame, alpha, x, y, int(50 * s), -k, lambda layer, c: cv2.putText(
                layer, text, (int(c[0] - 30 * s), int(c[1])), cv2.FONT_HERSHEY_PLAIN, 0.9 * s, 1.0, 1, cv2.LINE_AA))
        # Specular glare: large and soft, unlike any defect.
        for _ in range(int(rng.integers(0, 3))):
            x, y = self._surface_point(f, rng, margin=5)
            axes = (int(rng.uniform(20, 45) * s), int(rng.uniform(8, 20) * s))
            ang = float(rng.uniform(0, 180))
            k = float(rng.uniform(30, 60))

            def glare(layer, c, axes=axes, ang=ang):
                cv2.ellipse(layer, (int(c[0]), int(c[1])), axes, ang, 0, 360, 1.0, -1)
                layer[:] = cv2.GaussianBlur(layer, (0, 0), 9 * s)

            self._local_layer(frame, alpha, x, y, int(80 * s), k, glare)
        # Dust: tiny specks anywhere.
        n = int(rng.integers(5, 40))
        xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
        vals = rng.choice([-40.0, 50.0], n)
        frame[ys, xs] += vals[:, None]

    @staticmethod
    def _local_layer(frame, alpha, x, y, half, gain, draw) -> None:
        """Draws a grey-level mark in a window around (x, y), limited to the part's surface."""
        h, w = frame.shape[:2]
        x0, y0 = max(0, int(x) - half), max(0, int(y) - half)
        x1, y1 = min(w, int(x) + half), min(h, int(y) + half)
        layer = np.zeros((y1 - y0, x1 - x0), np.float32)
        draw(layer, (x - x0, y - y0))
        frame[y0:y1, x0:x1] += (layer * alpha[y0:y1, x0:x1] * gain)[..., None]

    # -- camera -------------------------------------------------------------------------------
    def _finish(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gain = float(rng.uniform(0.8, 1.2))
        offset = float(rng.uniform(-12, 12))
        frame *= gain
        frame += offset
        if rng.random() < 0.3:  # motion blur along the belt
            k = int(rng.integers(2, 5))
            frame = cv2.blur(frame, (k, 1))
        elif rng.random() < 0.5:
            frame = cv2.GaussianBlur(frame, (0, 0), float(rng.uniform(0.4, 1.0)))
        noise = rng.standard_normal(frame.shape[:2], dtype=np.float32) * float(rng.uniform(1.5, 5))
        frame += noise[..., None]
        return np.clip(frame, 0, 255).astype(np.uint8)
