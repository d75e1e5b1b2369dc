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

from inspector.bundle.load import load_bundle  # noqa: E402
from inspector.config import DecisionConfig  # noqa: E402
from inspector.devtools.bench import ReplaySource, _Collect, pct  # noqa: E402
from inspector.inference.decision import DecisionPolicy  # noqa: E402
from inspector.inference.detector import Detector  # noqa: E402
from inspector.service.pipeline import Pipeline  # noqa: E402
from inspector.sources.conveyor import ConveyorGenerator  # noqa: E402


def variants(bundle, conf):
    def det(**kw):
        return Detector(bundle, conf=conf, warmup=5, **kw)

    return {
        "baseline: latency hint, auto threads, 2 requests": det(),
        "1 request (no overlap of pre/post with inference)": det(async_requests=1),
        "4 requests": det(async_requests=4),
        "1 inference thread (a core left to grab/publish)": det(threads=1),
        "throughput hint (2 streams)": det(hint="throughput"),
        "float layers in bf16 (model.inference_precision: device_default)": det(inference_precision="device_default"),
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
        cm = core.compile_model(str(bundle.xml), "CPU", {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": pin,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
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


def preprocessing_pair(det, bundle, images, k, rounds):
    """Where the u8 -> float, BGR -> RGB, HWC -> CHW conversion runs: inside the OpenVINO graph
    (PrePostProcessor, ours) or in numpy before a float-input model. Letterbox (cv2) in both."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(bundle.xml), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                  "INFERENCE_PRECISION_HINT": "f32"})
    plain = compiled.create_infer_request()
    buf = np.empty((1, *det.input_hw, 3), np.uint8)
    out = {"conversion in the graph (PrePostProcessor)": [], "conversion in numpy": []}
    for r in range(rounds):
        for i in range(k):
            im = images[(r * k + i) % len(images)]
            t0 = time.perf_counter()
            t, _ = det.preprocess(im, out=buf)
            det.infer(t)
            out["conversion in the graph (PrePostProcessor)"].append((time.perf_counter() - t0) * 1e3)
        for i in range(k):
            im = images[(r * k + i) % len(images)]
            t0 = time.perf_counter()
            t, _ = det.preprocess(im, out=buf)
            plain.infer({0: np.ascontiguousarray(t[..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0})
            out["conversion in numpy"].append((time.perf_counter() - t0) * 1e3)
    return out


class GrabLoad:
    """A synthetic camera rendering frames at `rate` in its own thread: the CPU a grab thread
    takes from inference (rendering costs ~15 ms of one core per frame, more than decoding a
    720p JPEG or MJPEG frame)."""

    def __init__(self, rate: float) -> None:
        import threading

        self.rate, self._stop = rate, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        gen = ConveyorGenerator(99)
        i = 0
        while not self._stop.wait(1.0 / self.rate):
            gen.part(i)
            i += 1

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


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
    base = "baseline: latency hint, auto threads, 2 requests"
    loaded = {"baseline + a grab thread rendering 10 frames/s": dets[base],
              "1 inference thread + a grab thread rendering 10 frames/s":
                  dets["1 inference thread (a core left to grab/publish)"]}
    lat.update({name: [] for name in loaded})
    for _ in range(a.rounds):
        for name, det in dets.items():
            lat[name] += run(det, policy, images, k, rate=25.0)
        with GrabLoad(10.0):
            for name, det in loaded.items():
                lat[name] += run(det, policy, images, k, rate=25.0)
    pre = dets["baseline: latency hint, auto threads, 2 requests"].preprocess
    tensors = [np.ascontiguousarray(pre(im)[0][..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0 for im in images]
    lat.update(pinning_pair(bundle, tensors, k, a.rounds))
    lat.update(zero_copy_pair(dets[base], images, k, a.rounds))
    lat.update(preprocessing_pair(dets[base], bundle, images, k, a.rounds))
    res = {name: pct(v) for name, v in lat.items()}
    print(f"{'variant':<66}{'p50':>9}{'p99':>9}   (capture->verdict ms, paced at 25 parts/s; raw rows: inference only)")
    for name, p in res.items():
        print(f"{name:<66}{p['p50']:>9.2f}{p['p99']:>9.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
