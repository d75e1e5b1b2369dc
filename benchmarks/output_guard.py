"""The output guard's false alarms and reach, measured on the real model (OpenVINO, models/demo).

What sizes `drift.output_window` / `drift.output_alpha` (inference/drift_guard.py OutputGuard):

(a) false alarms: N seeds x 600 unaltered synthetic parts (a seed is another line: other parts, other
    defects), each through a fresh OutputGuard, with the card's reference (`input_envelope.output`) and
    with the run's own first `output_baseline` parts as reference. Every entry into drift is a false alarm.
(b) reach: per optical change the training mix does not contain, 150 unaltered parts then the changed
    camera: the parts from the change to `output_drift`, and the false-reject share the change caused.

    .venv/bin/python benchmarks/output_guard.py --seeds 777,1,2,3,4,5,6,7,8,9,10 --json build/output-guard.json

The model runs once per part (top confidence and its own reject); the guard replays those, so one run
measures every window/alpha given with --windows/--alphas side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def hue_rotation(image: np.ndarray, degrees: float) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(degrees / 2)) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def line_pattern(image: np.ndarray, period: float, amplitude: float) -> np.ndarray:
    """A diagonal sinusoidal pattern (moire of a screen, mains flicker on a rolling shutter)."""
    h, w = image.shape[:2]
    x, y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
    pat = amplitude * np.sin(2 * np.pi * (0.8 * x + 0.6 * y) / period)
    return np.clip(image.astype(np.float32) + pat[..., None], 0, 255).astype(np.uint8)


def changes() -> dict:
    from inspector.sources import optics

    def gamma(g):
        return lambda im: optics.apply(im, optics.Alteration("gamma", {"gamma": g}))

    return {"gamma 2.2": gamma(2.2), "gamma 1.8": gamma(1.8), "vignetting 0.7":
            lambda im: optics.apply(im, optics.Alteration("vignetting", {"strength": 0.7})),
            "hue +90": lambda im: hue_rotation(im, 90), "lines 6 px 25": lambda im: line_pattern(im, 6.0, 25.0)}


def model_outputs(detector, thresholds, images) -> tuple[np.ndarray, np.ndarray]:
    conf, rej = [], []
    for im in images:
        d = detector.detect(im)
        conf.append(float(d.confidence.max()) if len(d) else 0.0)
        rej.append(bool(len(d) and (d.confidence >= thresholds[d.class_id]).any()))
    return np.array(conf), np.array(rej)


def replay(conf, rej, reference, window, alpha, baseline) -> list[tuple[int, str]]:
    from inspector.inference.drift_guard import OutputGuard

    g = OutputGuard(reference, window=window, baseline=baseline, alpha=alpha, clear_after=window)
    return [(i, s.statistic) for i in range(len(conf)) if (s := g.update(float(conf[i]), bool(rej[i]))).changed
            and s.in_drift]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models/demo")
    ap.add_argument("--seeds", default="777,1,2,3,4,5,6,7,8,9,10")
    ap.add_argument("--parts", type=int, default=600)
    ap.add_argument("--windows", default="30,40,50")
    ap.add_argument("--alphas", default="1e-3,1e-4")
    ap.add_argument("--baseline", type=int, default=200)
    ap.add_argument("--reach-seeds", default="777,1,2")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from inspector.bundle.envelope import WEAK_BELOW
    from inspector.bundle.load import load_bundle
    from inspector.inference.detector import Detector
    from inspector.service.drift import envelope_of
    from inspector.sources.conveyor import ConveyorGenerator

    bundle = load_bundle(a.model)
    card_ref = envelope_of(bundle.card).output if envelope_of(bundle.card) is not None else None
    if card_ref is None:
        print(f"{a.model}: the card has no input_envelope.output; only the run-baseline rows mean anything")
    th = np.array([bundle.thresholds[c] for c in bundle.classes], np.float32)
    det = Detector(bundle, conf=0.01)
    windows = [int(w) for w in a.windows.split(",")]
    alphas = [float(x) for x in a.alphas.split(",")]
    out: dict = {"model": f"{bundle.info.name}@{bundle.info.version}", "card_reference": None if card_ref is None
                 else card_ref.to_card(), "false_alarms": [], "reach": []}

    null = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        gen = ConveyorGenerator(seed)
        conf, rej = model_outputs(det, th, (gen.part(i).image for i in range(a.parts)))
        null[seed] = (conf, rej)
        weak = float(np.mean((conf > 0) & (conf < WEAK_BELOW)))
        print(f"seed {seed}: {a.parts} unaltered parts, reject share {rej.mean():.3f}, weak share {weak:.3f}",
              flush=True)
    print("\nfalse alarms (entries into output drift) per unaltered run:")
    for ref_name, ref in (("card", card_ref), ("run", None)):
        if ref_name == "card" and card_ref is None:
            continue
        for w in windows:
            for al in alphas:
                per_seed = {s: replay(c, r, ref, w, al, max(a.baseline, w)) for s, (c, r) in null.items()}
                n = sum(len(v) for v in per_seed.values())
                print(f"  reference {ref_name:4} window {w:3} alpha {al:g}: {n} alarms in {len(per_seed)} runs "
                      f"{ {s: v for s, v in per_seed.items() if v} }")
                out["false_alarms"].append({"reference": ref_name, "window": w, "alpha": al, "runs": len(per_seed),
                                            "parts": a.parts, "alarms": n})

    print("\nreach: 150 unaltered parts, then the changed camera (parts from the change to output_drift):")
    for name, change in changes().items():
        for seed in (int(s) for s in a.reach_seeds.split(",")):
            gen = ConveyorGenerator(seed)
            parts = [gen.part(i) for i in range(300)]
            conf, rej = model_outputs(det, th, (change(p.image) for p in parts[150:]))
            good = np.array([not p.defective for p in parts[150:]])
            c0, r0 = null[seed] if seed in null else model_outputs(det, th, (p.image for p in parts[:150]))
            fr = float(rej[good].mean())
            for w in windows:
                for al in alphas:
                    for ref_name, ref, lead in (("card", card_ref, 150), ("run", None, a.baseline + 50)):
                        if ref is None and ref_name == "card":
                            continue
                        if lead > len(c0):
                            c0, r0 = model_outputs(det, th, (gen.part(i).image for i in range(lead)))
                        hits = replay(np.concatenate([c0[:lead], conf]), np.concatenate([r0[:lead], rej]), ref, w,
                                      al, max(a.baseline, w))
                        after = [(i - lead, s) for i, s in hits if i >= lead]
                        before = [h for h in hits if h[0] < lead]
                        row = {"change": name, "seed": seed, "false_reject_share": round(fr, 3), "reference": ref_name,
                               "window": w, "alpha": al, "parts_to_alarm": after[0][0] if after else None,
                               "statistic": after[0][1] if after else None, "alarms_before_change": len(before)}
                        out["reach"].append(row)
                        print(f"  {name:15} seed {seed:4} FR {fr:.3f} ref {ref_name:4} W{w} a{al:g}: "
                              f"{row['parts_to_alarm']} ({row['statistic']})", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
