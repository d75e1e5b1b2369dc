"""The line camera's optics, measured: a model's accuracy under each family, and the drift guard's reach.

Accuracy (issue 14's table; a thin entry point over `inspector.training.perturb_eval`, what
`inspector eval --perturb` runs):

    .venv/bin/python benchmarks/optics_eval.py --model models/demo --n 300 --seed 4004 \
        --perturb issue --json build/optics-eval.json

Drift guard (`--guard`): an envelope from N reference frames (seed 2002) and their copies altered by
the validated families, then (a) an unaltered run of 600 parts of another seed (entries into drift:
false alarms) and (b) for each family at the strong magnitude (and the default one), 40 clean parts
then the altered camera: the parts until the guard enters drift (and on which statistic), three
camera draws each:

    .venv/bin/python benchmarks/optics_eval.py --guard --validated issue
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def guard_table(validated: list[str], n_ref: int = 300, clean_parts: int = 600, trials: int = 3) -> int:
    from inspector.inference.drift_guard import DriftGuard, frame_stats
    from inspector.sources import optics
    from inspector.sources.conveyor import ConveyorGenerator
    from inspector.training.envelope import compute_envelope

    ref = ConveyorGenerator(2002)
    env = compute_envelope([ref.part(i).image for i in range(n_ref)], validated, seed=2002)
    print(f"envelope: {n_ref} frames of seed 2002 + altered copies by {validated or 'nothing'}")
    for k, (lo, hi) in env.bounds.items():
        print(f"  {k:<11}{lo:10.4f}{hi:10.4f}")
    gen = ConveyorGenerator(777)
    stats = [frame_stats(gen.part(i).image) for i in range(clean_parts)]
    g = DriftGuard(env)
    entries = [s for s in (g.update(v) for v in stats) if s.changed and s.in_drift]
    print(f"unaltered run, {clean_parts} parts of seed 777: {len(entries)} entries into drift "
          + ", ".join(f"part {s.frames} {s.statistic}={s.value:.3f}" for s in entries[:5]))
    imgs = [gen.part(i).image for i in range(100, 180)]
    print("| family | magnitude | parts to drift (statistic), per camera draw |\n|---|---|---|")
    for mag in ("strong", "default"):
        for name in optics.FAMILIES:
            cells = []
            for t in range(trials):
                alt = optics.sample(name, np.random.default_rng([5, t]), mag)
                g = DriftGuard(env)
                for v in stats[:40]:
                    g.update(v)
                rng = np.random.default_rng(t)
                hit = next(((j + 1, s.statistic) for j, s in enumerate(
                    g.update(frame_stats(optics.apply(im, alt, rng))) for im in imgs) if s.in_drift), None)
                cells.append(f"{alt.describe()}: " + (f"{hit[0]} ({hit[1]})" if hit else f"none in {len(imgs)}"))
            print(f"| {name} | {mag} | " + "; ".join(cells) + " |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--guard" in argv:
        from inspector.training.perturb_eval import parse_families

        ap = argparse.ArgumentParser()
        ap.add_argument("--guard", action="store_true")
        ap.add_argument("--validated", default="issue", help="families the envelope covers: issue, all, a list, none")
        ap.add_argument("--n-ref", type=int, default=300)
        a = ap.parse_args(argv)
        fams = [f for f in parse_families(a.validated) if f != "none"]
        return guard_table(fams, a.n_ref)
    from inspector.training.perturb_eval import main as perturb_main

    return perturb_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
