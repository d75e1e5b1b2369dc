"""Screening INT8 candidates: mAP50 / mAP50-95 of raw IRs (no thresholds needed) on held-out synthetic
frames, clean and under the optics families that cost INT8 most, with AVX2 kernels unless
ONEDNN_MAX_CPU_ISA is set. A cheap filter before `inspector model build` (thresholds, the issue-14 table),
as used in benchmarks/README.md ("INT8 on an AVX2-only CPU").

    .venv/bin/python benchmarks/int8_screen.py SEED N fp32=models/demo/model_fp32.xml cand=build/x/model.xml
"""

import json
import os
import sys

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # before openvino loads its CPU plugin

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402

from inspector.inference.heads.detect import Preprocessor, postprocess  # noqa: E402
from inspector.training.evaluate import synthetic_samples  # noqa: E402
from inspector.training.metrics import ImageResult, average_precision  # noqa: E402
from inspector.training.perturb_eval import perturb_samples  # noqa: E402
from inspector.training.quantize import to_float_nchw  # noqa: E402

FAMILIES = ("none", "noise", "jpeg", "white_balance")


def main(argv: list[str]) -> int:
    seed, n = int(argv[0]), int(argv[1])
    models = dict(a.split("=", 1) for a in argv[2:])
    base = list(synthetic_samples(n, seed))
    pre = Preprocessor((320, 320), 3)
    core = ov.Core()
    compiled = {k: core.compile_model(x, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for k, x in models.items()}
    out: dict[str, dict] = {}
    for fam in FAMILIES:
        inputs = []
        for s in perturb_samples(base, fam, seed):
            t, lb = pre(s.image)
            inputs.append((to_float_nchw(t), lb, s.gt_boxes, s.gt_cls))
        for name, c in compiled.items():
            res = []
            for x, lb, gb, gc in inputs:
                d = postprocess(np.asarray(c(x)[0]), lb, 0.001, 0.7)
                res.append(ImageResult(gb, gc, d.xyxy, d.confidence, d.class_id))
            ap, n_gt = average_precision(res, int(c.output(0).get_partial_shape()[1].get_length()) - 4)
            ap = ap[n_gt > 0]
            out.setdefault(name, {})[fam] = {"mAP50": round(float(ap[:, 0].mean()), 4),
                                             "mAP50-95": round(float(ap.mean()), 4)}
            print(fam, name, out[name][fam], flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
