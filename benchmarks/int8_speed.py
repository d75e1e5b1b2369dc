"""INT8 candidates against their FP32 IR, interleaved in one process: raw OpenVINO sync inference,
LATENCY hint, float layers in f32 (as `inspector bench`'s `raw_int8` / `raw_fp32` rows), hot.

    .venv/bin/python benchmarks/int8_speed.py --fp32 models/demo/model_fp32.xml \\
        --int8 shipped=models/demo/model_int8.xml --int8 ptq=build/x/model.xml --isa avx2 --rounds 12

`--isa avx2` caps oneDNN at AVX2 (ONEDNN_MAX_CPU_ISA, read when OpenVINO's CPU plugin loads): an
AVX-512/VNNI machine then runs the kernels an AVX2-only line PC runs (`jit_avx2_I8`, `brgconv_avx2_f32`;
`--show-kernels` lists them). Each round times every model on the same `--frames` frames in turn; the
speed-up is FP32 p50 / INT8 p50 per round, reported as the median over rounds, which a neighbour's load
shifts far less than the absolute figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, help="FP32 IR (.xml): the reference")
    ap.add_argument("--int8", action="append", required=True, metavar="NAME=XML", help="an INT8 candidate (repeat)")
    ap.add_argument("--isa", choices=("native", "avx2", "avx512_core", "avx512_core_vnni"), default="native",
                    help="cap oneDNN's instruction set (default: what the CPU has)")
    ap.add_argument("--frames", type=int, default=40, help="frames per model per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--show-kernels", action="store_true", help="print the convolution kernels each model runs")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.isa != "native":  # before openvino loads the CPU plugin
        os.environ["ONEDNN_MAX_CPU_ISA"] = a.isa.upper()

    import numpy as np
    import openvino as ov

    from inspector.devtools.bench import cpu_name
    from inspector.inference.heads.detect import Preprocessor
    from inspector.sources.conveyor import ConveyorGenerator

    models = {"fp32": a.fp32}
    for item in a.int8:
        name, sep, xml = item.partition("=")
        if not sep or not xml:
            ap.error(f"--int8 {item!r}: expected NAME=XML")
        models[name] = xml
    core = ov.Core()
    requests, kernels = {}, {}
    for name, xml in models.items():
        compiled = core.compile_model(xml, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        requests[name] = compiled.create_infer_request()
        count = collections.Counter()
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if rt["layerType"].astype(str) == "Convolution":
                count[f"{rt['primitiveType'].astype(str)}/{rt['runtimePrecision'].astype(str)}"] += 1
        kernels[name] = dict(count)
        if a.show_kernels:
            print(f"{name}: {dict(count)}")
    gen = ConveyorGenerator(2468, width=1280, height=720)
    ps = core.read_model(a.fp32).input(0).get_partial_shape()
    hw = (int(ps[2].get_length()), int(ps[3].get_length()))
    pre = Preprocessor(hw, int(ps[1].get_length()))
    tensors = [np.ascontiguousarray(pre(gen.part(i).image)[0][..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0
               for i in range(a.frames)]
    for req in requests.values():  # warm-up
        for t in tensors[:10]:
            req.infer({0: t})
    times: dict[str, list[float]] = {n: [] for n in models}
    ratios: dict[str, list[float]] = {n: [] for n in models if n != "fp32"}
    for r in range(a.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))  # neither always runs first
        per_round = {}
        for name in order:
            req, ts = requests[name], []
            for t in tensors:
                t0 = time.perf_counter()
                req.infer({0: t})
                ts.append((time.perf_counter() - t0) * 1000.0)
            times[name] += ts
            per_round[name] = statistics.median(ts)
        for name in ratios:
            ratios[name].append(per_round["fp32"] / per_round[name])
    out = {"cpu": cpu_name(), "isa": a.isa, "load_average": os.getloadavg(), "frames": a.frames, "rounds": a.rounds,
           "models": {n: {"xml": models[n], "p50_ms": round(statistics.median(times[n]), 3),
                          "p90_ms": round(float(np.percentile(times[n], 90)), 3),
                          "p5_ms": round(float(np.percentile(times[n], 5)), 3), "kernels": kernels[n],
                          **({"speedup_p50_median_of_rounds": round(statistics.median(ratios[n]), 3),
                              "speedup_p50_min_max_rounds": [round(min(ratios[n]), 3), round(max(ratios[n]), 3)]}
                             if n in ratios else {})} for n in models}}
    print(f"CPU {out['cpu']}, isa {a.isa}, load average {out['load_average'][0]:.2f}, "
          f"{a.rounds} rounds x {a.frames} frames")
    # Under load the fastest frames are the ones nothing preempted: FP32 p5 / INT8 p5 is a second,
    # load-robust reading of the same speed-up.
    fp5 = out["models"]["fp32"]["p5_ms"]
    for n in ratios:
        out["models"][n]["speedup_p5"] = round(fp5 / out["models"][n]["p5_ms"], 3)
    print(f"{'model':<24}{'p5 ms':>9}{'p50 ms':>9}{'p90 ms':>9}{'FP32/INT8 p50':>15}{'p5':>8}"
          "  (p50: min-max over rounds)")
    for n, m in out["models"].items():
        sp = (f"{m['speedup_p50_median_of_rounds']:>15.3f}{m['speedup_p5']:>8.3f}  {m['speedup_p50_min_max_rounds']}"
              if n in ratios else "")
        print(f"{n:<24}{m['p5_ms']:>9.2f}{m['p50_ms']:>9.2f}{m['p90_ms']:>9.2f}{sp}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
