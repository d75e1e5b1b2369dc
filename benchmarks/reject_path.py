"""The reject's path after the verdict, before/after, interleaved in one run beside the load benchmark's neighbours.

    .venv/bin/python benchmarks/reject_path.py --before 0ddf353 --rounds 6 --parts 300

What it measures, per reject (10 parts/s, 50 ms budget, the verdict 7 ms after capture, as the 10
escapes of the 3000-part acceptance row had it in 5-10 ms):
- `submit` on the post thread (SCHED_FIFO, as `realtime: auto` runs it): how long the pipeline's
  thread is held by the reject (before: the SQLite outbox commit; after: the journal copy);
- capture -> the line's receipt: a subscriber in this process (its network thread at SCHED_FIFO 9,
  like load.py's actuator) stamps each reject; received after capture + 50 ms = a physical escape
  (the reference actuator drops a reject past its payload deadline);
- capture -> PUBACK as the publisher counts it (`ack_ms_p50/p99` of its state).
Each round runs the BEFORE code (`git archive <rev> inspector`, unpacked in a temporary folder) and
the current tree in turn, each a fresh process with its own outbox, against one Mosquitto (SCHED_FIFO
9, as deploy/systemd's drop-in sets it), beside K busy processes at nice 0 and the fsync disk writer
of load.py on the same disk as the outboxes; the order alternates per round (ABBA), so a change in the
machine's other load falls on both alike.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BUDGET_S = 0.050
VERDICT_S = 0.007


# -- the worker: one publisher, fed like the post thread feeds it ------------------------------------
def worker(cfg_json: str, parts: int, rate: float) -> None:
    import paho.mqtt.client  # noqa: F401 - imported before timing starts

    from inspector.config import MQTTConfig, RealtimeConfig
    from inspector.devtools.testing import heartbeat_figures, make_reject
    from inspector.frames import ModelInfo
    from inspector.kernel import realtime
    from inspector.signalling.publisher import MqttPublisher

    realtime.configure(RealtimeConfig(policy="auto"))
    cfg = MQTTConfig.model_validate_json(cfg_json)
    pub = MqttPublisher(cfg, model=ModelInfo("bench", "0", "0" * 64), config_hash="bench",
                        heartbeat_fn=heartbeat_figures)
    pub.start()
    t0 = time.monotonic()
    while not pub.state()["connected"] and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    submit_ms: list[float] = []
    captured: list[float] = []

    def post() -> None:
        realtime.enter("frame", "post")
        period = 1.0 / rate
        nxt = time.monotonic()
        for i in range(parts):
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
            v = make_reject(i + 1, budget_s=BUDGET_S, age_s=VERDICT_S)
            captured.append(v.frame.captured_wall)
            t = time.perf_counter()
            pub.submit(v)
            submit_ms.append((time.perf_counter() - t) * 1000)

    th = threading.Thread(target=post, name="post")
    th.start()
    th.join()
    time.sleep(1.0)  # the last acknowledgements
    st = pub.state()
    pub.stop(2.0)
    print(json.dumps({"boot": st["boot"], "submit_ms": submit_ms, "captured": captured,
                      "physical_escapes": st["physical_escapes"],
                      "ack_ms_p50": st.get("ack_ms_p50"), "ack_ms_p99": st.get("ack_ms_p99"),
                      "fresh_published": st.get("fresh_published"), "journal": st.get("journal")}))


# -- the harness ----------------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def unpack_before(rev: str, into: Path) -> Path:
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "inspector"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="0ddf353", help="git revision of the BEFORE code (default 0ddf353)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--parts", type=int, default=300, help="rejects per run (every part a reject)")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--ks", type=int, default=2, help="busy neighbour processes at nice 0")
    ap.add_argument("--no-disk", action="store_true", help="without the fsync disk writer")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.parts, a.rate)
        return 0

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import paho.mqtt.client as mqtt
    from load import StationBroker, neighbours, schedule_pid

    from inspector.devtools.bench import cpu_name
    from inspector.kernel import realtime

    tmp = Path(tempfile.mkdtemp(prefix="reject-path-", dir="/var/tmp"))  # the disk, like the outbox's
    before = unpack_before(a.before, tmp / "before")
    code = {"before": before, "after": REPO}
    broker = StationBroker(tmp / "broker").start()
    schedule_pid(broker._proc.pid, "realtime")
    got: dict[str, float] = {}  # reject id -> receipt (time.time())

    def on_message(c, u, msg) -> None:
        got[json.loads(msg.payload)["id"]] = time.time()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reject-path-line", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("inspector/+/+/reject", qos=1)
    sub.loop_start()
    try:
        os.sched_setscheduler(sub._thread.native_id, os.SCHED_FIFO, os.sched_param(9))
    except (OSError, AttributeError) as e:
        print(f"(the line's subscriber stays SCHED_OTHER: {e})", file=sys.stderr)
    procs = neighbours(a.ks, not a.no_disk, False, tmp)
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} CPUs; RT throttling {realtime.rt_throttling()}; "
          f"{a.ks} busy + {'no ' if a.no_disk else ''}fsync writer; before = {a.before}", flush=True)
    runs = []
    try:
        time.sleep(2.0)  # the neighbours running
        for r in range(a.rounds):
            for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                work = tmp / f"{which}-{r}"
                work.mkdir()
                cfg = {"host": broker.host, "port": broker.port, "station": f"{which}{r}",
                       "outbox_path": str(work / "outbox.sqlite")}
                env = {**os.environ, "PYTHONPATH": str(code[which])}
                load1 = os.getloadavg()[0]
                p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg), "--parts", str(a.parts),
                                    "--rate", str(a.rate)], cwd=code[which], env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"{which} worker failed: {p.stderr[-2000:]}")
                w = json.loads(p.stdout.strip().splitlines()[-1])
                # capture -> the line's receipt (one clock: this machine's); missing or past 50 ms: an escape
                lat = [(got[rid] - cap) * 1000 if (rid := f"line1-{which}{r}-{w['boot']}-{i}") in got else None
                       for i, cap in enumerate(w["captured"], start=1)]
                line_escapes = sum(x is None or x > BUDGET_S * 1000 for x in lat)
                row = {"round": r, "code": which, "load1": round(load1, 1), "parts": a.parts,
                       "submit_ms": w["submit_ms"], "line_ms": lat, "line_escapes": line_escapes,
                       "service_physical_escapes": w["physical_escapes"], "ack_ms_p50": w["ack_ms_p50"],
                       "ack_ms_p99": w["ack_ms_p99"], "fresh_published": w["fresh_published"]}
                runs.append(row)
                s, ok = w["submit_ms"], [x for x in lat if x is not None]
                print(f"round {r} {which:6s} load1 {load1:4.1f}: submit p50 {pct(s, .5):6.3f} p99 {pct(s, .99):6.2f} "
                      f"max {max(s):6.2f} ms; capture->line p50 {pct(ok, .5):5.1f} p99 {pct(ok, .99):5.1f} "
                      f"max {max(ok, default=float('nan')):5.1f} ms; PUBACK p50/p99 {w['ack_ms_p50']}/{w['ack_ms_p99']}"
                      f" ms; escapes line {line_escapes} / service {w['physical_escapes']}", flush=True)
    finally:
        for p in procs:
            p.kill()
        sub.loop_stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps({"cpu": cpu_name(), "before": a.before, "ks": a.ks, "disk": not a.no_disk,
                                      "runs": runs}, indent=1))
    for which in ("before", "after"):
        mine = [r for r in runs if r["code"] == which]
        s = [x for r in mine for x in r["submit_ms"]]
        ok = [x for r in mine for x in r["line_ms"] if x is not None]
        print(f"{which:6s}: submit on the post thread p50 {pct(s, .5):.3f} p99 {pct(s, .99):.2f} max {max(s):.2f} ms; "
              f"capture->line p50 {pct(ok, .5):.2f} p99 {pct(ok, .99):.2f} max {max(ok):.2f} ms ({len(s)} rejects); "
              f"escapes line {sum(r['line_escapes'] for r in mine)} / service "
              f"{sum(r['service_physical_escapes'] for r in mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
