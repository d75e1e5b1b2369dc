"""Tuning experiments of issue 6, each a before/after pair measured interleaved in one run.

    .venv/bin/python benchmarks/tuning.py [--frames 200] [--json build/tuning.json]

Every variant runs the real pipeline (paced replay source -> letterbox -> OpenVINO -> NMS ->
decision) on the shipped INT8 model; rounds alternate the variants so machine noise hits all of
them alike. Reported: capture->verdict p50/p99 (ms) per variant. Results are recorded in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector.bench import ReplaySource, _Collect, pct  # noqa: E402
from inspector.config import DecisionConfig  # noqa: E402
from inspector.decision import DecisionPolicy  # noqa: E402
from inspector.detector import Detector, load_bundle  # noqa: E402
from inspector.pipeline import Pipeline  # noqa: E402
from inspector.synth import ConveyorGenerator  # noqa: E402


def variants(bundle, conf):
    def det(**kw):
        return Detector(bundle, conf=conf, warmup=5, **kw)

    return {
        "baseline: latency hint, auto threads, 2 requests": det(),
        "1 request (no overlap of pre/post with inference)": det(async_requests=1),
        "4 requests": det(async_requests=4),
        "1 inference thread (a core left to grab/publish)": det(threads=1),
        "throughput hint (2 streams)": det(hint="throughput"),
    }


def run(det, policy, images, n, rate) -> list[float]:
    sink = _Collect()
    src = ReplaySource(images, rate, n)
    p = Pipeline(src, det, policy, [sink])
    p.start()
    src.start()
    p.done.wait(n / rate + 30)
    p.stop()
    src.stop()
    return [v.timings.total_ms for v in sink.verdicts]


def pinning_pair(bundle, tensors, k, rounds):
    """Raw inference with CPU pinning on vs off (an OpenVINO CPU property)."""
    import openvino as ov

    core = ov.Core()
    reqs = {}
    for pin in (True, False):
        cm = core.compile_model(str(bundle.xml), "CPU", {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": pin})
        reqs[f"raw infer, CPU pinning {'on' if pin else 'off'}"] = cm.create_infer_request()
    out = {k_: [] for k_ in reqs}
    for r in range(rounds):
        for name, req in reqs.items():
            for i in range(k):
                t = tensors[(r * k + i) % len(tensors)]
                t0 = time.perf_counter()
                req.infer({0: t})
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def zero_copy_pair(det, images, k, rounds):
    """Our compiled model (uint8 input, PPP inside): input shared with OpenVINO vs copied into it."""
    tensors = [det.preprocess(im)[0].copy() for im in images]
    req = det.compiled.create_infer_request()
    out = {"u8 input shared (zero-copy)": [], "u8 input copied": []}
    for r in range(rounds):
        for name, share in (("u8 input shared (zero-copy)", True), ("u8 input copied", False)):
            for i in range(k):
                t = tensors[(r * k + i) % len(tensors)]
                t0 = time.perf_counter()
                req.infer({0: t}, share_inputs=share)
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    bundle = load_bundle(REPO / "models" / "demo", "int8")
    policy = DecisionPolicy.build(DecisionConfig(budget_ms=1000), bundle.classes, bundle.thresholds)
    gen = ConveyorGenerator(2468)
    images = [gen.part(i).image for i in range(40)]
    dets = variants(bundle, policy.conf_floor)
    k = max(5, a.frames // a.rounds)
    lat = {name: [] for name in dets}
    for r in range(a.rounds):
        for name, det in dets.items():
            lat[name] += run(det, policy, images, k, rate=25.0)
    pre = dets["baseline: latency hint, auto threads, 2 requests"].preprocess
    tensors = [np.ascontiguousarray(pre(im)[0][..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0 for im in images]
    lat.update(pinning_pair(bundle, tensors, k, a.rounds))
    lat.update(zero_copy_pair(dets["baseline: latency hint, auto threads, 2 requests"], images, k, a.rounds))
    res = {name: pct(v) for name, v in lat.items()}
    print(f"{'variant':<56}{'p50':>9}{'p99':>9}   (capture->verdict ms, paced at 25 parts/s; raw rows: inference only)")
    for name, p in res.items():
        print(f"{name:<56}{p['p50']:>9.2f}{p['p99']:>9.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
