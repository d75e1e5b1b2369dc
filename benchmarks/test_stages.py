"""Per-stage costs: preprocessing placement, FP32 vs INT8 inference, postprocessing + decision.

Run: `.venv/bin/python -m pytest benchmarks --benchmark-only` (or `make bench`). Variants of
one stage share a group, so pytest-benchmark prints them side by side.
"""

import itertools
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from inspector.bundle.load import load_bundle
from inspector.config import DecisionConfig
from inspector.frames import Frame, StageTimings
from inspector.inference.decision import DecisionPolicy, decide
from inspector.inference.heads.detect import PAD_VALUE, Preprocessor, postprocess

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo"


def _numpy_letterbox_float(img, hw=(320, 320)):
    """The obvious alternative: everything on the CPU in numpy, float tensor out."""
    h, w = img.shape[:2]
    r = min(hw[0] / h, hw[1] / w)
    nw, nh = round(w * r), round(h * r)
    top, left = (hw[0] - nh) // 2, (hw[1] - nw) // 2
    out = np.full((hw[0], hw[1], 3), PAD_VALUE, np.uint8)
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh))
    return np.ascontiguousarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None], np.float32) / 255.0


@pytest.mark.benchmark(group="preprocess")
def test_preprocess_cv2_letterbox_u8_then_ppp_in_graph(benchmark, frames, bundle):
    pre = Preprocessor(bundle.input_size)
    buf = np.empty((1, *bundle.input_size, 3), np.uint8)
    it = itertools.cycle(frames)
    benchmark(lambda: pre(next(it), out=buf))


# Grayscale cameras (issue 11): the letterbox of a gray frame (converted once, at the input size) vs a
# BGR frame, at a video frame size and at 5 MP, into a 3-channel and a 1-channel model input; and
# what the sources did before: inflate the gray frame to BGR (a full-frame copy), then letterbox.
LETTERBOX_SIZES = {"1280x720": (720, 1280), "2592x1944": (1944, 2592)}


@pytest.fixture(scope="module")
def sized_frames(frames):
    return {k: [cv2.resize(f, (hw[1], hw[0])) for f in frames[:4]] for k, hw in LETTERBOX_SIZES.items()}


@pytest.mark.benchmark(group="letterbox-channels")
@pytest.mark.parametrize("size", list(LETTERBOX_SIZES))
@pytest.mark.parametrize("layout, channels", [("bgr", 3), ("gray", 3), ("gray_via_bgr_copy", 3), ("gray", 1),
                                              ("bgr", 1)])
def test_letterbox_gray_vs_bgr(benchmark, sized_frames, bundle, size, layout, channels):
    imgs = sized_frames[size]
    if layout != "bgr":
        imgs = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in imgs]
    pre = Preprocessor(bundle.input_size, channels)
    buf = np.empty((1, *bundle.input_size, channels), np.uint8)
    it = itertools.cycle(imgs)
    if layout == "gray_via_bgr_copy":
        benchmark(lambda: pre(cv2.cvtColor(next(it), cv2.COLOR_GRAY2BGR), out=buf))
    else:
        benchmark(lambda: pre(next(it), out=buf))


@pytest.mark.benchmark(group="preprocess")
def test_preprocess_numpy_letterbox_rgb_float_nchw(benchmark, frames):
    it = itertools.cycle(frames)
    benchmark(lambda: _numpy_letterbox_float(next(it)))


@pytest.mark.benchmark(group="infer")
@pytest.mark.parametrize("precision, float_hint", [("int8", "f32"), ("fp32", "f32"), ("fp32", None)],
                         ids=["int8", "fp32", "fp32_ir_cpu_default_precision"])
def test_infer_raw_ir(benchmark, precision, float_hint, float_tensors):
    # FP32 means f32: on CPUs with AMX/AVX512-BF16 OpenVINO runs an FP32 IR in bf16 by default
    # (the third row), faster than INT8 there but not the FP32 the INT8 target compares with.
    props = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_PRECISION_HINT": float_hint} if float_hint else {})
    req = ov.Core().compile_model(str(load_bundle(MODEL, precision).xml), "CPU", props).create_infer_request()
    it = itertools.cycle(float_tensors)
    benchmark(lambda: req.infer({0: next(it)}))


@pytest.mark.benchmark(group="infer")
def test_infer_int8_u8_input_with_ppp(benchmark, detector, frames):
    pre = Preprocessor(detector.input_hw)
    tensors = [pre(f)[0].copy() for f in frames]
    it = itertools.cycle(tensors)
    benchmark(lambda: detector.infer(next(it)))


@pytest.mark.benchmark(group="post")
def test_postprocess_and_decide(benchmark, detector, frames, bundle):
    policy = DecisionPolicy.build(DecisionConfig(), bundle.classes, bundle.thresholds)
    pre = Preprocessor(detector.input_hw)
    raws = []
    for f in frames:
        t, lb = pre(f)
        raws.append((detector.infer(t), lb, f))
    it = itertools.cycle(raws)

    def step():
        raw, lb, f = next(it)
        d = postprocess(raw, lb, policy.conf_floor, 0.7)
        return decide(Frame(0, f, 0.0, 0.0, "p"), d, policy, 0.0, 0.0, StageTimings(), bundle.info)

    benchmark(step)
