"""Where the inspector's latency over raw inference goes, stage by stage, interleaved in one run.

    .venv/bin/python benchmarks/overhead.py [--rounds 10] [--k 20] [--size 640x480]

Each round measures, on the same frames and the shipped INT8 model:
  raw          plain IR, float NCHW tensor, sync infer, LATENCY hint (the floor of `inspector bench`)
  ppp_sync     our compiled model (u8 BGR NHWC in, conversion inside the graph), sync infer
  ppp_async    the same through AsyncInferQueue: start_async -> callback (thread hand-off cost)
  letterbox    cv2 letterbox into the reused input buffer
  post         head decode + NMS + scale back, at the decision's confidence floor
  pipeline     capture -> verdict through the real Pipeline, paced so each frame finds it idle
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector.devtools.bench import Bench, pct  # noqa: E402
from inspector.inference.heads.detect import postprocess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--size", default="640x480")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    b = Bench(REPO / "models/demo", frames=a.rounds * a.k, frame_size=(w, h), with_ultralytics=False)
    det = b.detector
    lat: dict[str, list[float]] = {k: [] for k in ("raw", "ppp_sync", "ppp_async", "letterbox", "post", "pipeline")}
    import openvino as ov

    q = ov.AsyncInferQueue(det.compiled, 1)
    done = threading.Event()
    t_cb = [0.0]

    def cb(req, ud):
        t_cb[0] = time.perf_counter()
        done.set()

    q.set_callback(cb)
    buf = np.empty((1, *det.input_hw, 3), np.uint8)
    for r in range(a.rounds):
        lat["raw"] += b.raw_block("int8", a.k, r * a.k)
        for i in range(a.k):
            im = b.images[(r * a.k + i) % len(b.images)]
            t0 = time.perf_counter()
            tensor, lb = det.preprocess(im, out=buf)
            t1 = time.perf_counter()
            raw = det.infer(tensor)
            t2 = time.perf_counter()
            postprocess(raw, lb, b.policy.conf_floor, det.iou, det.max_det)
            t3 = time.perf_counter()
            lat["letterbox"].append((t1 - t0) * 1e3)
            lat["ppp_sync"].append((t2 - t1) * 1e3)
            lat["post"].append((t3 - t2) * 1e3)
            done.clear()
            t4 = time.perf_counter()
            q.start_async({0: tensor}, None, share_inputs=False)
            done.wait()
            lat["ppp_async"].append((t_cb[0] - t4) * 1e3)
            time.sleep(0.002)
        vals, _ = b.pipeline_run(rate=1000.0 / max(3 * float(np.median(lat["raw"])), 5.0), n=a.k)
        lat["pipeline"] += vals
    for k, v in lat.items():
        print(f"{k:10s} {pct(v)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
