"""Load benchmark: the demo line beside the neighbours a line PC has, per scheduling mode, side by side.

    .venv/bin/python benchmarks/load.py                                    # K = 0, 1, 2 x off, nice, realtime
    .venv/bin/python benchmarks/load.py --parts 3000 --ks 2 --modes realtime --no-mem   # the acceptance row
    .venv/bin/python benchmarks/load.py --parts 300 --ks 2 --modes realtime --switch both  # stage+promote+rollback

Each row: `inspector run` on configs/demo.yaml (synthetic line, 10 parts/s, 50 ms budget, models/demo,
on_late: reject) for N parts, a real Mosquitto (a fresh one per row) and the reference actuator
(`devtools/actuator.py`, the line side) on the reject topic, beside:
- K busy CPU threads at nice 0 (each its own process running `while True: pass`: a Python thread in one
  process would share one GIL, i.e. one core, with its siblings);
- a disk writer: 1 MB written and fsync'ed in a loop (`--no-disk` drops it);
- a memory-bandwidth hog: numpy copies between two 64 MB arrays in a loop (`--no-mem` drops it).

Scheduling modes (the station: the inspector and its same-PC broker):
- off: `realtime.policy: off`, both at nice 0 (what a new user gets without the deploy unit);
- nice: `realtime.policy: off`, both under `nice -n -5` (what deploy/systemd set before real time);
- realtime: `realtime.policy: auto` (SCHED_FIFO frame path), the broker at SCHED_FIFO 9 (the drop-in
  deploy/systemd/mosquitto.service.d/inspector.conf).
Rows of one K run back to back, modes interleaved, so the rest of the machine loads them alike; the
1-minute load average before each row is recorded (other work on the PC shows there).

Columns: LATE verdicts, physical escapes (the service's count: missed verdicts + rejects not delivered
before their deadline + acknowledged after it; and the line's: decided rejects the actuator did not get in
time), capture->verdict p99 and max. `--switch both` adds to each row the same run with `inspector model
stage` + `promote` + `rollback` (CLI, as an operator does) of a candidate during the run.
The actuator is measuring equipment standing in for the PLC (another machine on a real line): it runs in
this process with its network thread at SCHED_FIFO 9 in every mode, so it never adds lateness of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector.config import MQTTConfig  # noqa: E402
from inspector.devtools.actuator import Actuator  # noqa: E402
from inspector.devtools.bench import cpu_name  # noqa: E402
from inspector.devtools.broker import LocalBroker  # noqa: E402
from inspector.kernel import realtime  # noqa: E402

PY = sys.executable
EXTRA_ENV: dict[str, str] = {}  # --env KEY=VALUE: config overrides for every row (INSPECTOR_<SECTION>__<FIELD>)
BUSY = "while True: pass"
DISK = """
import os, sys
buf = os.urandom(1 << 20)
with open(sys.argv[1], 'wb') as fh:
    while True:
        fh.seek(0); fh.write(buf); fh.flush(); os.fsync(fh.fileno())
"""
MEM = """
import numpy as np
a = np.ones(8 << 20); b = np.empty_like(a)
while True:
    np.copyto(b, a); np.copyto(a, b)
"""


class StationBroker(LocalBroker):
    """The devtools broker, with its persistence autosave period as the station's broker would have it."""

    autosave_s = 1  # LocalBroker's: a kill -9 loses at most ~1 s of broker state

    def _mosquitto_conf(self) -> str:
        return super()._mosquitto_conf().replace("autosave_interval 1", f"autosave_interval {self.autosave_s}")


def neighbours(k: int, disk: bool, mem: bool, work: Path) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([PY, "-c", BUSY]) for _ in range(k)]
    if disk:
        procs.append(subprocess.Popen([PY, "-c", DISK, str(work / "disk-writer.bin")]))
    if mem:
        procs.append(subprocess.Popen([PY, "-c", MEM]))
    return procs


def schedule_pid(pid: int, mode: str, rt_priority: int = 9) -> None:
    """Every thread of `pid` as the mode sets the station's broker."""
    for tid in realtime.task_ids(pid):
        try:
            if mode == "realtime":
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(rt_priority))
            elif mode == "nice":
                os.setpriority(os.PRIO_PROCESS, tid, -5)
        except OSError as e:
            print(f"  (cannot schedule {pid}/{tid} for {mode}: {e})", file=sys.stderr)


def write_config(work: Path, broker: LocalBroker, station: str, lifecycle: bool) -> Path:
    cfg = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    cfg["model"]["path"] = str(REPO / "models/demo")
    cfg["mqtt"].update(host=broker.host, port=broker.port, station=station, outbox_path=str(work / "outbox.sqlite"))
    cfg["spool"]["dir"] = str(work / "spool")
    cfg["upload"] = {"destination": f"file://{work / 'uploads'}", "window": None}
    cfg["sink"]["jsonl"] = str(work / "verdicts.jsonl")
    if lifecycle:
        cfg["lifecycle"] = {"enabled": True, "store": str(work / "store"), "socket": str(work / "control.sock")}
    p = work / "line.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def switch_models(cfg: Path, work: Path, parts: int, verdicts: Path, log: list[str]) -> None:
    """stage + promote + rollback through the CLI, from a tenth of the run on (the promote's compile takes
    5-15 s on a loaded 2-core PC: run at least 600 parts so the rollback comes before the end)."""
    from tests.lifecycle.bundles import make_bundle

    cand = make_bundle(work / "candidate", "99.0.0")
    while _lines(verdicts) < parts // 10:
        time.sleep(0.2)
    for args in (["stage", str(cand)], ["promote", "demo@99.0.0"], ["rollback", "--why", "load benchmark"]):
        t0 = time.monotonic()
        r = subprocess.run([PY, "-m", "inspector", "model", *args, "--config", str(cfg)], capture_output=True,
                           text=True, timeout=300)
        log.append(f"model {args[0]}: rc {r.returncode} in {time.monotonic() - t0:.2f} s"
                   + ("" if r.returncode == 0 else f" ({(r.stderr or r.stdout).strip()[-300:]})"))
        if args[0] == "promote":
            time.sleep(3)  # the candidate judges for ~30 parts before the rollback


def _lines(p: Path) -> int:
    try:
        with p.open("rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def one_row(root: Path, k: int, mode: str, parts: int, disk: bool, mem: bool, switch: bool) -> dict:
    name = f"k{k}-{mode}" + ("-switch" if switch else "")
    work = root / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = StationBroker(work / "broker").start()
    schedule_pid(broker._proc.pid, mode)
    station = f"load-{name}"
    cfg = write_config(work, broker, station, lifecycle=switch)
    mq = MQTTConfig(host=broker.host, port=broker.port, station=station, heartbeat_ms=1000)
    act = Actuator(mq, out=open(os.devnull, "w"), client_id=f"act-{name}")
    act.start()
    if not act.subscribed.wait(30):
        raise RuntimeError("the actuator could not subscribe")
    if act._client._thread is not None:  # the measuring equipment: never late of its own
        os.sched_setscheduler(act._client._thread.native_id, os.SCHED_FIFO, os.sched_param(9))
    load1 = os.getloadavg()[0]
    hogs = neighbours(k, disk, mem, work)
    env = {**os.environ, "INSPECTOR_REALTIME__POLICY": "auto" if mode == "realtime" else "off", **EXTRA_ENV}
    cmd = [PY, "-m", "inspector", "run", "--config", str(cfg), "--max-frames", str(parts),
           "--summary-json", str(work / "summary.json"), "--no-live"]
    if mode == "nice":
        cmd = ["nice", "-n", "-5", *cmd]
    switch_log: list[str] = []
    t0 = time.monotonic()
    try:
        with open(work / "service.log", "w") as log:
            svc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
            sw = None
            if switch:
                sw = threading.Thread(target=switch_models, args=(cfg, work, parts, work / "verdicts.jsonl",
                                                                  switch_log), daemon=True)
                sw.start()
            rc = svc.wait(timeout=parts / 10 * 3 + 180)
            if sw is not None:
                sw.join(60)
    finally:
        for p in hogs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    wall = time.monotonic() - t0
    s = json.loads((work / "summary.json").read_text())
    decided = s["actuations"]
    end = time.monotonic() + 10
    while len(act.actuated) + len(act.expired) < decided and time.monotonic() < end:
        time.sleep(0.1)
    act.stop()
    broker.close()
    lat = s["latency_ms"]["total_ms"]
    row = {"k": k, "mode": mode, "switch": switch, "parts": s["frames"], "rc": rc, "wall_s": round(wall, 1),
           "load1_before": round(load1, 2), "late": s["verdicts"]["LATE"],
           "escapes_service": s["escapes"]["physical"],
           "escapes_line": max(0, decided - len(act.actuated)), "rejects_decided": decided,
           "rejects_in_time": len(act.actuated), "rejects_expired_at_actuator": len(act.expired),
           "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"],
           "realtime": s.get("realtime", {}).get("in_force"), "alarms": s["alarms"], "switch_log": switch_log,
           "neighbours": {"busy": k, "disk_writer": disk, "memory_hog": mem}}
    print(f"{name:>20}: LATE {row['late']:4d}  escapes {row['escapes_service']:4d} (line {row['escapes_line']:4d})  "
          f"p99 {row['p99_ms']:7.2f}  max {row['max_ms']:7.2f} ms  [{row['realtime']}; load1 {load1:.1f}]"
          + (f"  {'; '.join(switch_log)}" if switch_log else ""), flush=True)
    return row


def table(rows: list[dict]) -> str:
    out = ["| neighbours | scheduling | parts | LATE | physical escapes (service / line) | p99 ms | max ms | "
           "load1 before |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["neighbours"]
        what = ", ".join(x for x in (f"{r['k']} busy" if r["k"] else "", "disk" if n["disk_writer"] else "",
                                     "mem" if n["memory_hog"] else "") if x) or "nothing"
        sched = r["mode"] + (" + stage/promote/rollback" if r["switch"] else "")
        out.append(f"| {what} | {sched} | {r['parts']} | {r['late']} | {r['escapes_service']} / {r['escapes_line']} "
                   f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['load1_before']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=600, help="parts per row (default 600: 60 s at 10 parts/s)")
    ap.add_argument("--ks", default="0,1,2", help="busy threads beside the service, comma separated (default 0,1,2)")
    ap.add_argument("--modes", default="off,nice,realtime", help="scheduling modes (default off,nice,realtime)")
    ap.add_argument("--no-disk", action="store_true", help="without the fsync disk writer")
    ap.add_argument("--no-mem", action="store_true", help="without the memory-bandwidth hog")
    ap.add_argument("--switch", choices=("no", "yes", "both"), default="no",
                    help="stage + promote + rollback a candidate during the run (both: each row without and with)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every row, e.g. INSPECTOR_BACKGROUND__PRIORITY=idle")
    ap.add_argument("--broker-autosave-s", type=int, default=1,
                    help="Mosquitto's autosave_interval (default 1, the devtools broker's; its save blocks the broker)")
    ap.add_argument("--out", default=str(REPO / "build/load"), help="work folder (default build/load)")
    ap.add_argument("--json", default=None, help="write the rows here (default <out>/load.json)")
    a = ap.parse_args(argv)
    root = Path(a.out)
    EXTRA_ENV.update(kv.split("=", 1) for kv in a.env)
    StationBroker.autosave_s = a.broker_autosave_s
    root.mkdir(parents=True, exist_ok=True)
    switches = {"no": (False,), "yes": (True,), "both": (False, True)}[a.switch]
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} CPUs; RT throttling {realtime.rt_throttling()}; "
          f"{a.parts} parts per row at 10 parts/s, 50 ms budget", flush=True)
    rows = []
    for k in [int(x) for x in a.ks.split(",")]:
        for mode in a.modes.split(","):
            for sw in switches:
                rows.append(one_row(root, k, mode, a.parts, not a.no_disk, not a.no_mem, sw))
    result = {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "rt_throttling": realtime.rt_throttling(),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    Path(a.json or root / "load.json").write_text(json.dumps(result, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
