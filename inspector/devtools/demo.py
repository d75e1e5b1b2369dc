"""`inspector demo`: the whole line on one machine, as `make demo` shows it.

A private broker (Mosquitto, or the embedded demo-only broker), the reference actuator
subscribed to rejects, the service on the synthetic conveyor, then the nightly upload run now.
Every part runs as its own process, exactly as on a line PC; nothing here is used in production.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from inspector.config import load_config


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run_demo(config: str, frames: int = 300) -> int:
    from inspector.devtools.broker import LocalBroker

    cfg = load_config(config)
    work = Path("var/demo")
    # A fresh demo each time: last run's outbox and spool would otherwise be re-sent/uploaded.
    for name in ("outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "spool", "uploads", "verdicts.jsonl"):
        p = work / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    _banner("broker")
    broker = LocalBroker(work / "broker").start()
    print(f"{broker.impl} on {broker.host}:{broker.port}"
          + ("" if broker.impl == "mosquitto" else "  (embedded broker: DEMO ONLY, no durable store, MQTT 3.1.1)"))
    env = dict(os.environ, INSPECTOR_MQTT__HOST=broker.host, INSPECTOR_MQTT__PORT=str(broker.port))
    if "v5" not in broker.protocols:
        env["INSPECTOR_MQTT__PROTOCOL"] = "v311"
    cmd = [sys.executable, "-m", "inspector"]
    pace = getattr(cfg.source, "parts_per_s", 10.0) or 10.0
    listen_s = frames / pace + 25.0
    try:
        _banner("actuator (line side) subscribing to rejects")
        act = subprocess.Popen([*cmd, "actuator", "--config", config, "--duration", f"{listen_s:.0f}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)  # let it subscribe before the first part arrives

        _banner(f"inspector run: {frames} parts at {pace:g} parts/s, budget {cfg.decision.budget_ms:g} ms")
        summary_path = work / "summary.json"
        run = subprocess.run([*cmd, "run", "--config", config, "--max-frames", str(frames),
                              "--summary-json", str(summary_path)], env=env)
        if run.returncode != 0:
            act.terminate()
            print(f"inspector run failed (exit {run.returncode})", file=sys.stderr)
            return run.returncode
        summary = json.loads(summary_path.read_text())
        rejects = summary["actuations"]

        _banner(f"actuator: waiting for the {rejects} rejects the inspector signalled")
        time.sleep(1.0)  # the last rejects are in flight
        act.send_signal(signal.SIGINT)  # it stops and prints its summary
        out, _ = act.communicate(timeout=15)
        lines = out.splitlines()
        shown = [ln for ln in lines if " REJECT " in ln][:5]
        for ln in [ln for ln in lines if "REJECT" not in ln][:6] + shown + ["  ..."] + lines[-2:]:
            print(ln)

        _banner("upload of the spool now (normally nightly)")
        up = subprocess.run([*cmd, "upload", "--now", "--config", config], env=env)
        dest = cfg.upload.destination
        if dest.startswith("file://"):
            root = Path(dest[len("file://"):])
            galleries = sorted(root.rglob("*.html"))
            if galleries:
                print(f"review gallery: {galleries[-1].resolve()}")
        gt = summary.get("ground_truth", {})
        _banner("result")
        print(f"{summary['frames']} parts, {rejects} rejects signalled, {summary['deadline_misses']} deadline misses, "
              f"p99 capture->verdict {summary['latency_ms']['total_ms']['p99']:.1f} ms; "
              f"escapes {gt.get('escapes', '-')}/{gt.get('defective', '-')} defective, "
              f"false rejects {gt.get('false_rejects', '-')}/{gt.get('good', '-')} good")
        return 0 if up.returncode == 0 else up.returncode
    finally:
        broker.stop()
