"""Commands: the demo and the benchmark (inspector.devtools)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.cli.common import load_config_arg


def cmd_demo(a: argparse.Namespace) -> int:
    from inspector.devtools.demo import run_demo

    return run_demo(a.config, frames=a.frames)


def cmd_bench(a: argparse.Namespace) -> int:
    from inspector.devtools.bench import run_bench

    try:
        w, h = (int(v) for v in a.frame_size.lower().split("x"))
    except ValueError:
        print(f"--frame-size: expected WIDTHxHEIGHT such as 1280x720, got {a.frame_size!r}", file=sys.stderr)
        return 2
    config = load_config_arg(a.config) if a.config else None
    return run_bench(Path(a.model), frames=a.frames, json_out=a.json, config=config, frame_size=(w, h),
                     interval_ms=a.interval_ms)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("demo", help="the whole line on this machine: broker, actuator, run, upload")
    s.add_argument("--config", default="configs/demo.yaml", help="demo config (default: configs/demo.yaml)")
    s.add_argument("--frames", type=int, default=300, help="parts the synthetic line sends (default 300)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("bench", help="side-by-side latency/throughput report")
    s.add_argument("--model", default="models/demo", help="model bundle to benchmark (default: models/demo)")
    s.add_argument("--frames", type=int, default=300, help="frames per measured pattern (default 300)")
    s.add_argument("--json", default=None, help="also write the full report as JSON to this file")
    s.add_argument("--config", default=None, help="config for the end-to-end part (default: built-in)")
    s.add_argument("--frame-size", default="1280x720", help="camera frame WIDTHxHEIGHT (default: a 720p camera)")
    s.add_argument("--interval-ms", type=float, default=100.0, help="paced pattern: one part every N ms (default 100)")
    s.set_defaults(fn=cmd_bench)
