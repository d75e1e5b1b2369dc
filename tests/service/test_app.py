"""`inspector run` as a user runs it: summary, signals, bad input."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, extra: str = "", source: str = "{kind: synthetic, parts_per_s: 40}") -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(textwrap.dedent(f"""
        source: {source}
        model: {{path: {REPO / 'models/demo'}}}
        mqtt: {{enabled: false}}
        sampling: {{enabled: false}}
        upload: {{window: null}}
        metrics: {{port: 0}}
        sink: {{jsonl: {tmp_path / 'verdicts.jsonl'}}}
    """) + textwrap.dedent(extra))
    return p


def inspector(*args, **kw):
    return subprocess.run([sys.executable, "-m", "inspector", *args], capture_output=True, text=True, timeout=180, **kw)


def test_run_prints_and_writes_the_summary(tmp_path):
    out = tmp_path / "summary.json"
    r = inspector("run", "--config", str(config(tmp_path)), "--max-frames", "40", "--summary-json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["frames"] == 40
    assert sum(s["verdicts"].values()) == 40
    for stage in ("queue_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "decide_ms", "total_ms"):
        assert set(s["latency_ms"][stage]) >= {"p50", "p95", "p99"}
    gt = s["ground_truth"]
    assert gt["parts"] == 40 and gt["defective"] + gt["good"] == 40
    assert "end-to-end" in r.stdout and "deadline misses" in r.stdout and "escapes" in r.stdout
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    assert len(lines) == 40 and {"part_id", "verdict", "latency_ms"} <= set(json.loads(lines[0]))


def test_sigterm_stops_promptly_and_loses_no_verdict(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(config(tmp_path)),
                             "--summary-json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "verdicts.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and log.stat().st_size > 0):
        time.sleep(0.1)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=20)
    stop_s = time.monotonic() - t0
    assert proc.returncode == 0, stderr[-2000:]
    assert stop_s < 2.0 + 1.0, f"took {stop_s:.2f} s to stop (2 s budget + interpreter exit)"
    s = json.loads(out.read_text())
    assert s["frames"] > 0
    assert len(log.read_text().splitlines()) == s["frames"], "a verdict in flight was lost"




def test_missing_model_exits_2(tmp_path):
    p = config(tmp_path)
    p.write_text(p.read_text().replace(str(REPO / "models/demo"), str(tmp_path / "no-model")))
    r = inspector("run", "--config", str(p), "--max-frames", "1")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_model_config_mismatch_exits_2(tmp_path):
    p = config(tmp_path)
    p.write_text(p.read_text().replace("model: {", "model: {classes: [scratch, dent], "))
    r = inspector("run", "--config", str(p), "--max-frames", "1")
    assert r.returncode == 2 and "classes" in r.stderr


def test_unavailable_device_exits_2_and_lists_devices(tmp_path):
    p = config(tmp_path)
    p.write_text(p.read_text().replace("model: {", "model: {device: NPU, "))
    r = inspector("run", "--config", str(p), "--max-frames", "1")
    assert r.returncode == 2 and "available devices" in r.stderr and "CPU" in r.stderr


def test_bad_config_exits_2(tmp_path):
    p = config(tmp_path, extra="decision: {budget_ms: 0}\n")
    r = inspector("run", "--config", str(p))
    assert r.returncode == 2 and "decision.budget_ms" in r.stderr
