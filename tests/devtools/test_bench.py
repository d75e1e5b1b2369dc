"""`inspector bench` logic: ratios within one arrival pattern, pacing, closed-loop replay."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.devtools.bench import (
    Bench,
    ReplaySource,
    _Collect,
    _timed,
    format_table,
    ratios,
    target,
)

REPO = Path(__file__).resolve().parents[2]


def _p(p50, p99):
    return {"n": 10, "p50": p50, "p95": p99, "p99": p99, "mean": p50}


def _result():
    lat = {"raw_int8": _p(5.0, 6.0), "raw_fp32": _p(9.0, 10.0), "inspector": _p(5.5, 6.5), "ultralytics": _p(8.0, 9.0),
           "raw_int8_paced": _p(9.0, 11.0), "raw_fp32_paced": _p(14.0, 16.0), "inspector_paced": _p(9.5, 11.5),
           "ultralytics_paced": _p(11.0, 13.0)}
    r = {"machine": {"cpu": "test", "cores": 2}, "model": {"name": "m", "version": "1", "input": [320, 320]},
         "frames_per_variant": 10, "paced_interval_ms": 100.0, "latency_ms": lat,
         "throughput": {"openvino_throughput_hint_fps": 200.0, "inspector_sustainable_parts_per_s": 190.0,
                        "inspector_sustainable_parts_per_s_latency_hint": 150.0, "budget_ms": 50.0}}
    r["ratios"] = ratios(r)
    return r


def test_ratios_never_mix_hot_and_paced_floors():
    q = _result()["ratios"]
    assert q["inspector_p50_over_raw_p50"] == 1.1  # 5.5 / 5.0, hot with hot
    assert q["inspector_p50_over_raw_p50_paced"] == round(9.5 / 9.0, 3)  # paced with paced
    assert q["ultralytics_p50_over_inspector_p50_paced"] == round(11.0 / 9.5, 3)
    assert q["int8_speedup_over_fp32_p50"] == 1.8
    assert q["sustainable_over_throughput_hint"] == 0.95
    assert q["ultralytics_p50_over_raw_p50"] == 1.6  # the bound on ultralytics / inspector


def test_stream_ratio_sets_overlapped_parts_per_s_against_a_predict_loop():
    q = _result()["ratios"]
    assert q["inspector_parts_per_s_over_ultralytics_loop_fps"] == round(190.0 / (1e3 / 8.0), 3)
    assert q["inspector_latency_hint_parts_per_s_over_ultralytics_loop_fps"] == round(150.0 / 125.0, 3)
    assert target("ultralytics_p50_over_raw_p50") is None  # context, judged by no target
    table = format_table(_result())
    assert "ultralytics_p50_over_raw_p50 " in table and "(context)" in table


def test_paced_targets_are_the_same_targets():
    assert target("inspector_p50_over_raw_p50_paced") == target("inspector_p50_over_raw_p50") == ("<=", 1.15)


def test_table_marks_missed_targets():
    table = format_table(_result())
    assert "ultralytics_p50_over_inspector_p50_paced" in table
    line = next(ln for ln in table.splitlines() if ln.strip().startswith("ultralytics_p50_over_inspector_p50_paced"))
    assert line.endswith("MISSED")  # 1.158 < 1.3
    line = next(ln for ln in table.splitlines() if ln.strip().startswith("inspector_p50_over_raw_p50 "))
    assert line.endswith("ok")


def test_timed_paces_calls_on_a_fixed_interval():
    starts = []
    lat = _timed(lambda i: starts.append(time.perf_counter()), range(5), 0.02)
    assert len(lat) == 5
    # Parts arrive on a fixed schedule: a late wake-up shortens the next gap but no call ever
    # starts before its slot (gaps alone would flag a catch-up after an overslept sleep).
    ahead = [(starts[0] + k * 0.02) - s for k, s in enumerate(starts)]
    assert max(ahead) <= 0.001, f"expected no call before its slot, got {max(ahead) * 1e3:.2f} ms early"


def test_closed_loop_replay_releases_one_frame_per_verdict():
    gate = threading.Event()
    gate.set()
    src = ReplaySource([np.zeros((8, 8, 3), np.uint8)], rate=0.0, n=3, gate=gate)
    sink = _Collect(gate)
    src.start()
    first = src.read(1.0)
    assert first is not None and src.read(0.1) is None  # the next waits for a verdict
    sink.submit(first)
    assert src.read(1.0) is not None


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.slow
@pytest.mark.skipif(not _cpu_has_bf16(), reason="the bf16 default only exists on CPUs with AVX512-BF16/AMX")
def test_bench_runs_with_onednn_capped_at_avx2(tmp_path):
    """`ONEDNN_MAX_CPU_ISA=AVX2 inspector bench` stands in for an AVX2-only line PC on a newer CPU: OpenVINO
    still picks bf16 for the FP32 IR's default-precision row, which oneDNN then cannot compile (a MaxPool
    without primitive descriptors). The bench skips that row instead of failing; the f32 rows run AVX2."""
    code = ("from pathlib import Path\nfrom inspector.devtools.bench import Bench\n"
            "b = Bench(Path('models/demo'), frames=4, with_ultralytics=False)\n"
            "print(sorted(b.raw))\n")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "['fp32', 'int8']" in r.stdout


def test_bench_runs_a_classifier_through_its_head_and_decision(tmp_path):
    """`inspector bench --model <classify bundle>`: the runner gets the card's head (classify: centre crop, class
    scores), the policy its rule; the raw rows get the head's tensors; the pipeline's verdicts are the classifier's."""
    from tests.inference.cls_bundle import make_cls_bundle

    b = Bench(make_cls_bundle(tmp_path / "cls"), frames=4, with_ultralytics=False)
    assert b.detector.head.task == b.detector_tput.head.task == b.policy.task == "classify"
    assert b.tensors[0].shape == (1, 3, 32, 32) and {"fp32", "int8"} <= set(b.raw)
    assert len(b.raw_block("int8", 3, 0)) == len(b.raw_block("fp32", 3, 0)) == 3
    assert len(b.pipeline_closed_loop(5)) == 5
