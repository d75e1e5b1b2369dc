"""What a shadow model costs the active one: the active model's capture-to-verdict p99 on the synthetic
line, without and with a shadow (issue 13 asks for <= 1.2x). Rounds alternate the two variants in one
process, so the load of the machine hits both alike.

    .venv/bin/python benchmarks/shadow.py                      # 3 rounds x 2 variants x 300 parts at 10/s
    .venv/bin/python benchmarks/shadow.py --parts 600 --rounds 2 --json build/shadow-bench.json

The shadow is models/demo's IR under another version (the same cost as a real candidate of the same
architecture), with the default `shadow:` settings (1 inference thread, nice 15, queue 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector.bundle.signing import Trust  # noqa: E402
from inspector.config import InspectorConfig  # noqa: E402
from inspector.devtools.bench import cpu_name  # noqa: E402
from inspector.lifecycle.store import ModelStore  # noqa: E402
from inspector.service.app import Service  # noqa: E402
from inspector.stats import summary  # noqa: E402
from tests.lifecycle.bundles import DEMO, make_bundle  # noqa: E402


def one_run(tmp: Path, shadow: bool, parts: int, pace: float, budget_ms: float, seed: int) -> dict:
    cfg = InspectorConfig(
        source={"kind": "synthetic", "seed": seed, "parts_per_s": pace},
        model={"path": str(DEMO)}, decision={"budget_ms": budget_ms}, mqtt={"enabled": False},
        sampling={"enabled": False}, upload={"window": None}, metrics={"enabled": False},
        lifecycle={"enabled": True, "store": str(tmp / "store"), "socket": str(tmp / f"ctl-{time.time_ns()}.sock")},
        shadow={"enabled": shadow, "model": "demo@9.0.0"},
    )
    svc = Service(cfg, max_frames=parts)
    svc.start()
    while not svc.pipeline.done.wait(0.2):
        svc.pipeline.raise_if_failed()
    st = svc.lifecycle.shadow.state() if shadow else None
    svc.stop(deadline_s=5)
    lat = svc.pipeline.stats.percentiles()
    out = {"shadow": shadow, "parts": svc.pipeline.stats.frames,
           "late": svc.pipeline.stats.outcomes.get("LATE", 0),
           "total_ms": lat["total_ms"], "infer_ms": lat["infer_ms"]}
    if st is not None:
        out["shadow_judged"], out["shadow_dropped"] = st["judged"], st["dropped"]
        out["shadow_infer_ms"] = st["latency_ms"]["shadow_infer"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=300, help="parts per run")
    ap.add_argument("--pace", type=float, default=10.0, help="parts per second")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (without, with)")
    ap.add_argument("--budget-ms", type=float, default=50.0, help="decision.budget_ms")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    ModelStore(tmp / "store", "st1").stage(make_bundle(tmp / "cand", "9.0.0"), Trust())
    runs = []
    for r in range(a.rounds):
        for shadow in (False, True):
            res = one_run(tmp, shadow, a.parts, a.pace, a.budget_ms, seed=777 + r)
            runs.append(res)
            print(f"round {r} shadow={'on ' if shadow else 'off'}: p99 {res['total_ms']['p99']:.2f} ms "
                  f"(p50 {res['total_ms']['p50']:.2f}), infer p99 {res['infer_ms']['p99']:.2f} ms, LATE {res['late']}"
                  + (f", shadow judged {res['shadow_judged']} dropped {res['shadow_dropped']}" if shadow else ""),
                  flush=True)
    off = [x["total_ms"]["p99"] for x in runs if not x["shadow"]]
    on = [x["total_ms"]["p99"] for x in runs if x["shadow"]]
    med = lambda xs: summary(xs, ("p50",))["p50"]  # noqa: E731
    ratio = med(on) / med(off)
    result = {"cpu": cpu_name(), "cores": len(__import__("os").sched_getaffinity(0)), "parts": a.parts,
              "pace": a.pace, "rounds": a.rounds, "p99_ms_without": round(med(off), 2),
              "p99_ms_with": round(med(on), 2), "ratio": round(ratio, 3), "runs": runs}
    print(f"\nactive model p99 (median of {a.rounds} rounds): {med(off):.2f} ms without a shadow, "
          f"{med(on):.2f} ms with one: {ratio:.2f}x on {result['cpu']} ({result['cores']} cores)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
