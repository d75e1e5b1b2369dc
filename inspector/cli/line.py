"""Commands for line integration: `inspector plc-sim` plays the PLC of the part-ID handshake."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspector.cli.common import load_config_arg


def cmd_plc_sim(a: argparse.Namespace) -> int:
    from inspector.devtools.plc_sim import PlcSimulator

    cfg = load_config_arg(a.config)
    budget = a.budget_ms if a.budget_ms is not None else cfg.decision.budget_ms
    sim = PlcSimulator(cfg.mqtt, budget_ms=budget, send_fired_at=not a.no_fired_at)
    try:
        sim.start()
    except ConnectionError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        rep = sim.run(a.parts, a.rate, prefix=a.prefix, first_seq=a.first_seq, answer_timeout_s=a.answer_timeout_s)
    finally:
        sim.stop()
    rep["budget_ms"] = budget
    lat = rep["latency_ms"] or {}
    print(f"plc-sim: {rep['answered']}/{rep['sent']} triggers answered (part id + seq checked), "
          f"{rep['unexpected']} unexpected result(s), OK {rep['ok']} NG {rep['ng']} (fail-safe {rep['fail_safe']}: "
          f"{rep['reasons']}), late {rep['late']} at {budget:g} ms; trigger->result p50 {lat.get('p50')} ms "
          f"p99 {lat.get('p99')} ms max {lat.get('max')} ms")
    if rep["missing"]:
        print(f"  unanswered: {', '.join(rep['missing'])}", file=sys.stderr)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rep, indent=2))
    bad = rep["missing"] or rep["unexpected"] or (a.strict and (rep["late"] or rep["fail_safe"]))
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("plc-sim",
                       help="play the PLC: publish part triggers, check every result (part id, seq, lateness)")
    s.add_argument("--config", required=True, help="the inspector's config (mqtt section: broker and topics)")
    s.add_argument("--parts", type=int, default=300, help="triggers to send")
    s.add_argument("--rate", type=float, default=10.0, help="triggers per second")
    s.add_argument("--prefix", default="P", help="part id prefix")
    s.add_argument("--first-seq", type=int, default=0, help="sequence number of the first trigger")
    s.add_argument("--budget-ms", type=float, default=None, help="lateness limit (default: decision.budget_ms)")
    s.add_argument("--no-fired-at", action="store_true", help="do not send the photo-eye time")
    s.add_argument("--answer-timeout-s", type=float, default=5.0, help="wait this long for the last results")
    s.add_argument("--strict", action="store_true", help="exit 1 on any late or fail-safe result too")
    s.add_argument("--json", default=None, help="write the report as JSON")
    s.set_defaults(fn=cmd_plc_sim)
