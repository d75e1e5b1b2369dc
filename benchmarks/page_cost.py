"""What the line-side page costs the frame path: capture -> verdict p99 with 0 and with 5 pages connected,
interleaved in rounds on one running service (same process, same model, same synthetic line).

    .venv/bin/python benchmarks/page_cost.py [--rounds 4] [--parts 150] [--pps 20] [--pages 5]

The page is on in both phases (its worker encodes the live frame at 2 fps and every reject's thumbnail
either way: that is what `page.enabled` costs); the 5 pages are 5 event streams read by a separate process
(as browsers on other machines would: the browsers' own rendering is not the line PC's cost). A reference
run with the page off comes first, on its own service. The result row goes to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector.config import InspectorConfig  # noqa: E402
from inspector.devtools.testing import ObserverSink  # noqa: E402
from inspector.service.app import Service  # noqa: E402

READER = """
import sys, threading, urllib.request
def read(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        while r.read(65536):
            pass
ts = [threading.Thread(target=read, args=(sys.argv[1],), daemon=True) for _ in range(int(sys.argv[2]))]
for t in ts: t.start()
sys.stdin.read()
"""


class Latencies(ObserverSink):
    name = "bench"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase: str | None = None
        self.ms: dict[str, list[float]] = {}
        self.count = 0
        self.cv = threading.Condition(self.lock)

    def submit(self, v) -> None:
        with self.cv:
            if self.phase is not None:
                self.ms.setdefault(self.phase, []).append(v.timings.total_ms)
                self.count += 1
                self.cv.notify_all()

    def collect(self, phase: str, n: int) -> None:
        with self.cv:
            self.phase, self.count = phase, 0
            self.cv.wait_for(lambda: self.count >= n, timeout=n * 2 + 60)
            self.phase = None


def config(pps: float, page: bool) -> InspectorConfig:
    return InspectorConfig(source={"kind": "synthetic", "seed": 777, "parts_per_s": pps},
                           model={"path": str(REPO / "models/demo")}, decision={"budget_ms": 50},
                           mqtt={"enabled": False}, sampling={"enabled": False}, upload={"window": None},
                           metrics={"enabled": False}, page={"enabled": page, "port": 0})


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs), q)), 2) if xs else float("nan")


def run_service(cfg: InspectorConfig, body) -> None:
    svc = Service(cfg)
    lat = Latencies()
    svc.pipeline.sinks.append(lat)
    svc.start()
    try:
        lat.collect("warm-up", 40)
        body(svc, lat)
    finally:
        svc.stop(deadline_s=5)
    return lat


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--parts", type=int, default=150)
    ap.add_argument("--pps", type=float, default=20.0)
    ap.add_argument("--pages", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    off = run_service(config(a.pps, False), lambda svc, lat: lat.collect("page off", a.parts * 2))

    def phases(svc, lat) -> None:
        for r in range(a.rounds):
            lat.collect(f"0 pages#{r}", a.parts)
            readers = subprocess.Popen([sys.executable, "-c", READER, svc.page.url + "events", str(a.pages)],
                                       stdin=subprocess.PIPE)
            end = time.monotonic() + 30
            while svc.page.hub.state()["clients"] < a.pages and time.monotonic() < end:
                time.sleep(0.05)
            assert svc.page.hub.state()["clients"] == a.pages and svc.page.hub.refused == 0, svc.page.hub.state()
            lat.collect(f"{a.pages} pages#{r}", a.parts)
            readers.stdin.close()
            readers.wait(10)
            end = time.monotonic() + 30  # the server notices the closed streams at its next write (<= 0.5 s)
            while svc.page.hub.state()["clients"] > 0 and time.monotonic() < end:
                time.sleep(0.05)
            print(f"round {r + 1}/{a.rounds} done; page state {svc.page.state()}", flush=True)
        print(f"page worker encode ms: p50 {pct(list(svc.page.view.encode_ms), 50)}, "
              f"p99 {pct(list(svc.page.view.encode_ms), 99)}")

    on = run_service(config(a.pps, True), phases)
    rows: dict[str, list[float]] = {k: v for k, v in off.ms.items() if k != "warm-up"}
    per_round: dict[str, list[float]] = {}
    for k, v in on.ms.items():
        if k != "warm-up":
            phase = k.split("#")[0]
            rows.setdefault(phase, []).extend(v)
            per_round.setdefault(phase, []).append(pct(v, 99))
    out = {k: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99), "max": round(max(v), 2),
               **({"p99_per_round": per_round[k]} if k in per_round else {})} for k, v in rows.items()}
    base, five = out["0 pages"]["p99"], out[f"{a.pages} pages"]["p99"]
    out["p99 change with pages"] = round(five / base - 1, 4)
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
