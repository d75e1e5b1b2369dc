"""`inspector demo`: the whole line on one machine, as `make demo` shows it.

A private broker (Mosquitto, or the embedded demo-only broker), the reference actuator
subscribed to rejects, the service on the synthetic conveyor, then the nightly upload run now.
Every part runs as its own process, exactly as on a line PC; nothing here is used in production.

Machine-readable results in var/demo/: `summary.json` (the service's end-of-run summary),
`verdicts.jsonl` (every verdict), `actuator.json` (what the line side received: the reject ids it
actuated, those it refused as past their deadline, duplicates, the reject ids named by
`escaped_part` alarms). tests/devtools/test_demo.py checks every reject against them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from inspector.config import load_config

SUBSCRIBED = "actuator: subscribed (SUBACK received)"  # the demo starts the line only after this line
ACTUATOR_REPORT = "actuator.json"


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run_demo(config: str, frames: int = 300) -> int:
    from inspector.devtools.broker import LocalBroker

    cfg = load_config(config)
    work = Path("var/demo")
    # A fresh demo each time: last run's outbox and spool would otherwise be re-sent/uploaded.
    for name in ("outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "spool", "uploads", "verdicts.jsonl",
                 "summary.json", ACTUATOR_REPORT):
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
    act: subprocess.Popen | None = None
    try:
        _banner("actuator (line side) subscribing to rejects")
        # The reference actuator (what `inspector actuator` runs), writing a JSON report at its stop.
        act = subprocess.Popen([sys.executable, "-m", "inspector.devtools.demo", "actuator", "--config", config,
                                "--duration", f"{listen_s:.0f}", "--report", str(work / ACTUATOR_REPORT)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = _Lines(act)
        if not out.wait(lambda lines: any(SUBSCRIBED in ln for ln in lines), 30.0):
            act.kill()
            print("the actuator did not subscribe within 30 s:\n" + "\n".join(out.lines[-10:]), file=sys.stderr)
            return 1

        _banner(f"inspector run: {frames} parts at {pace:g} parts/s, budget {cfg.decision.budget_ms:g} ms")
        if cfg.page.enabled:  # open it now: it lives as long as the run (docs/controls-engineer.md)
            port = cfg.page.port or _free_port(cfg.page.host)
            env["INSPECTOR_PAGE__PORT"] = str(port)
            print(f"line-side page: http://{cfg.page.host}:{port}/ (open it in a browser during the run)", flush=True)
        summary_path = work / "summary.json"
        run = subprocess.run([*cmd, "run", "--config", config, "--max-frames", str(frames),
                              "--summary-json", str(summary_path)], check=False, env=env)
        if run.returncode != 0:
            act.terminate()
            print(f"inspector run failed (exit {run.returncode})", file=sys.stderr)
            return run.returncode
        summary = json.loads(summary_path.read_text())
        rejects = summary["actuations"]

        _banner(f"actuator: waiting for the {rejects} rejects the inspector signalled")
        # Each reject ends as one line at the actuator: actuated, refused as late, or an escaped_part
        # alarm. Wait for that many (bounded), then stop it: it prints its summary and writes its report.
        out.wait(lambda lines: sum(_accounted(ln) for ln in lines) >= rejects, 15.0)
        act.send_signal(signal.SIGINT)
        act.wait(timeout=15)
        out.join()
        lines = out.lines
        shown = [ln for ln in lines if " REJECT " in ln][:5]
        head = [ln for ln in lines if "REJECT" not in ln and SUBSCRIBED not in ln][:6]
        for ln in head + shown + ["  ..."] + lines[-2:]:
            print(ln)

        _banner("upload of the spool now (normally nightly)")
        up = subprocess.run([*cmd, "upload", "--now", "--config", config], check=False, env=env)
        dest = cfg.upload.destination
        if dest.startswith("file://"):
            root = Path(dest[len("file://"):])
            galleries = sorted(root.rglob("*.html"))
            if galleries:
                print(f"review gallery: {galleries[-1].resolve()}")
        gt = summary.get("ground_truth", {})
        line_side = _read_report(work / ACTUATOR_REPORT)
        _banner("result")
        print(f"{summary['frames']} parts, {rejects} rejects signalled, {summary['deadline_misses']} deadline misses, "
              f"p99 capture->verdict {summary['latency_ms']['total_ms']['p99']:.1f} ms; "
              f"escapes {gt.get('escapes', '-')}/{gt.get('defective', '-')} defective, "
              f"false rejects {gt.get('false_rejects', '-')}/{gt.get('good', '-')} good")
        esc = summary.get("escapes")
        if isinstance(esc, dict) and "physical" in esc:
            print(f"physical escapes {esc['physical']} (parts not stopped in time: missed verdicts, rejects not "
                  f"delivered or acknowledged late), escaped_part alarms {esc.get('escaped_part_alarms', '-')}")
        if line_side:
            print(f"line side: {len(line_side['actuated'])} rejects actuated, "
                  f"{len(line_side['expired'])} refused as late, "
                  f"{len(line_side['escaped_ids'])} named in escaped_part alarms, {line_side['duplicates']} duplicates "
                  f"({work / ACTUATOR_REPORT})")
        return 0 if up.returncode == 0 else up.returncode
    finally:
        if act is not None and act.poll() is None:
            act.kill()
            act.wait()
        broker.stop()


def _free_port(host: str) -> int:
    """A port free now on `host` (the run binds it a moment later; a clash there fails the run with exit 2)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accounted(line: str) -> bool:
    """One actuator output line that settles one reject (actuated, refused as late, or alarmed)."""
    return " REJECT part " in line or "IGNORED expired reject" in line or "ALARM escaped_part" in line


def _read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Lines:
    """A child's stdout collected line by line on a thread, so the demo can wait on what it says."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), name="demo-child-stdout", daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not pred(self.lines):
                left = end - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return pred(self.lines)
                self._cond.wait(min(left, 0.5))
        return True

    def join(self) -> None:
        self._thread.join(5)


def run_actuator_with_report(config: str, duration: float | None, report: Path) -> int:
    """The reference actuator (`inspector actuator`), plus a JSON report of what it received and a
    line when the broker has confirmed its subscription, for the demo and its test."""
    from inspector.devtools.actuator import Actuator

    act = Actuator(load_config(config).mqtt)
    client = getattr(act, "_client", None)
    if client is not None:
        client.on_subscribe = lambda *_a: print(SUBSCRIBED, flush=True)
    else:  # the actuator's client is built elsewhere: connected is the closest event we can see
        threading.Thread(target=lambda: act.connected.wait() and print(SUBSCRIBED, flush=True), name="demo-subscribed",
                         daemon=True).start()

    def on_signal(_signum, _frame):  # the demo's stop: finish cleanly, print the summary, write the report
        act.enough.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = act.run(None, duration)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    data = {"actuated": list(act.actuated), "expired": list(act.expired), "duplicates": act.duplicates,
            "invalid": act.invalid, "escaped_ids": sorted(act.escaped_ids), "alarms": dict(act.alarms),
            "status": act.status, "latencies_ms": [round(x, 3) for x in act.latencies_ms]}
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, report)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inspector.devtools.demo",
                                 description="the demo's actuator with a JSON report (dev tooling)")
    ap.add_argument("command", choices=["actuator"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--report", required=True, type=Path)
    a = ap.parse_args(argv)
    return run_actuator_with_report(a.config, a.duration, a.report)


if __name__ == "__main__":
    sys.exit(main())
