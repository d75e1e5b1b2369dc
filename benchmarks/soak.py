"""Soak run (issue 10): the service for N minutes on the synthetic line, with the faults and the
background work a line PC sees, and the figures that show whether it holds up.

    .venv/bin/python benchmarks/soak.py                      # 30 min, the recorded configuration
    .venv/bin/python benchmarks/soak.py --minutes 2 --restart-every-s 40 --upload-every-s 30   # a trial
    .venv/bin/python benchmarks/soak.py --busy-loop --background-priority off   # the frame path vs a CPU hog

What runs, each as its own process on loopback:
- `inspector run` at 10 parts/s (configs/demo.yaml's model, budget and sampling), `--duration`;
- a real Mosquitto, killed -9 (or stopped, `--restart-mode term`) and restarted every 5 minutes on
  the same port with its persistence;
- `inspector upload --now` every minute against a local S3-compatible server (moto, as the tests'
  fixture starts it), while the service keeps spooling samples;
- an independent `mosquitto_sub` on the reject/alarm/status topics (the line side), so every reject
  the service decided is checked by id (inspector/devtools/ledger.py);
- optionally (`--busy-loop`) one process spinning a core beside the service.

What it reports (printed and `<out>/soak.json`): deadline misses (LATE) and latency, physical
escapes (the ledger: rejects not received in time, alarmed or not, and unaccounted ones; the
service's own count beside it), RSS of the service (from /proc every 10 s: start after warm-up,
end, max, slope), open file descriptors, outbox rows/bytes and spool bytes, uploads, /healthz.
Everything is read from outside (summary JSON, /proc, files, HTTP, MQTT), so the script keeps
working as the runtime's internals change. Exit 0 when the issue's targets are met (0 misses,
0 unaccounted rejects, RSS growth < 20 MB), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from inspector.devtools.broker import LocalBroker, free_port
from inspector.devtools.ledger import (
    MosquittoSub,
    account,
    decided_rejects,
    online_boots,
    proc_fds,
    proc_rss_mb,
)
from inspector.review.spool import disk_usage

ACCESS_KEY, SECRET_KEY, REGION = "soak", "soak-secret", "us-east-1"
REPO = Path(__file__).resolve().parents[1]
STATION = "soak"
TARGET_RSS_GROWTH_MB = 20.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    ap.add_argument("--parts-per-s", type=float, default=10.0, help="conveyor pace (default 10)")
    ap.add_argument("--restart-every-s", type=float, default=300.0, help="broker restart period (default 300)")
    ap.add_argument("--restart-mode", choices=["kill", "term"], default="kill", help="kill -9 (default) or SIGTERM")
    ap.add_argument("--upload-every-s", type=float, default=60.0, help="`inspector upload --now` period (default 60)")
    ap.add_argument("--sample-every-s", type=float, default=10.0, help="/proc, files, /healthz sampling (default 10)")
    ap.add_argument("--warmup-s", type=float, default=60.0,
                    help="RSS 'start' is the first sample after this (capped at a quarter of the run)")
    ap.add_argument("--busy-loop", action="store_true", help="one CPU busy-loop process beside the service")
    ap.add_argument("--service-nice", type=int, default=0,
                    help="run `inspector run` at this niceness, as deploy/systemd/inspector.service's Nice=-5 does "
                         "(negative needs root; default 0)")
    ap.add_argument("--background-priority", choices=["nice", "idle", "off"], default=None,
                    help="INSPECTOR_BACKGROUND__PRIORITY for the service (default: the config's)")
    ap.add_argument("--config", default=str(REPO / "configs/demo.yaml"), help="base config (model, budget, sampling)")
    ap.add_argument("--out", default=str(REPO / "build/soak"), help="work folder, emptied first (default build/soak)")
    return ap.parse_args(argv)


# -- the parts --------------------------------------------------------------------------------------
class S3:
    """moto's S3-compatible server on a free loopback port (what tests/fixtures/s3_server.py starts)."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        end = time.monotonic() + 20
        while True:
            try:
                self.client().list_buckets()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))

    def objects(self, bucket: str) -> tuple[int, int]:
        n = size = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                n, size = n + 1, size + int(o["Size"])
        return n, size

    def stop(self) -> None:
        self._server.stop()


def write_config(out: Path, base: str, broker: LocalBroker, s3: S3, bucket: str, metrics_port: int,
                 pace: float) -> Path:
    import yaml

    cfg = yaml.safe_load(Path(base).read_text())
    model = Path(cfg.get("model", {}).get("path", "models/demo"))
    cfg["model"] = {**cfg.get("model", {}), "path": str(model if model.is_absolute() else REPO / model)}
    cfg["source"] = {**cfg.get("source", {}), "kind": "synthetic", "parts_per_s": pace}
    cfg["mqtt"] = {**cfg.get("mqtt", {}), "host": broker.host, "port": broker.port, "station": STATION,
                   "outbox_path": str(out / "outbox.sqlite"), "reconnect_min_s": 0.1, "reconnect_max_s": 1.0}
    cfg["spool"] = {**cfg.get("spool", {}), "dir": str(out / "spool")}
    cfg["upload"] = {**cfg.get("upload", {}), "destination": f"s3://{bucket}/soak", "endpoint_url": s3.endpoint,
                     "window": None, "retries": 2, "backoff_s": 0.2}
    cfg["metrics"] = {**cfg.get("metrics", {}), "host": "127.0.0.1", "port": metrics_port}
    cfg["sink"] = {**cfg.get("sink", {}), "jsonl": str(out / "verdicts.jsonl")}
    path = out / "soak.yaml"
    path.write_text("# written by benchmarks/soak.py\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def outbox_figures(path: Path) -> dict:
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    rows = None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        pass  # busy or not there yet: the bytes still say something
    return {"rows": rows, "bytes": size}


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _slope_mb_per_10min(samples: list[dict]) -> float | None:
    pts = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx, my = sum(t for t, _ in pts) / n, sum(r for _, r in pts) / n
    var = sum((t - mx) ** 2 for t, _ in pts)
    return None if var == 0 else round(sum((t - mx) * (r - my) for t, r in pts) / var * 600, 3)


# -- the run ----------------------------------------------------------------------------------------
def run(a: argparse.Namespace) -> dict:
    out = Path(a.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    duration_s = a.minutes * 60
    warmup_s = min(a.warmup_s, duration_s / 4)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION,
               PYTHONUNBUFFERED="1")
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "INSPECTOR_UPLOAD__ACCESS_KEY", "INSPECTOR_UPLOAD__SECRET_KEY"):
        env.pop(k, None)
    if a.background_priority:
        env["INSPECTOR_BACKGROUND__PRIORITY"] = a.background_priority
    inspector = [sys.executable, "-m", "inspector"]

    broker = LocalBroker(out / "broker").start()
    s3 = S3()
    bucket = "inspector-soak"
    s3.client().create_bucket(Bucket=bucket)
    metrics_port = free_port()
    cfg = write_config(out, a.config, broker, s3, bucket, metrics_port, a.parts_per_s)
    sub = MosquittoSub(broker.host, broker.port, f"inspector/line1/{STATION}",
                       log_path=out / "mosquitto_sub.log").start()
    busy = svc = upload = None
    samples: list[dict] = []
    outages: list[list[float | None]] = []
    uploads: list[dict] = []
    svc_log = (out / "service.log").open("w")
    try:
        sub.wait_persisted(broker.persistence_dir)
        if a.busy_loop:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        niced = ["nice", "-n", str(a.service_nice)] if a.service_nice else []
        svc = subprocess.Popen([*niced, *inspector, "run", "--config", str(cfg), "--duration", f"{duration_s:g}",
                                "--no-live", "--summary-json", str(out / "summary.json")], stdout=svc_log,
                               stderr=subprocess.STDOUT, env=env, cwd=out)
        sub.wait_for(lambda s: online_boots(s.messages()) or svc.poll() is not None, 180, "the service online")
        if svc.poll() is not None:
            raise RuntimeError(f"inspector run exited ({svc.returncode}) at start: see {out / 'service.log'}")
        t0 = time.monotonic()
        next_sample, next_restart, next_upload = t0, t0 + a.restart_every_s, t0 + a.upload_every_s
        print(f"soak: {a.minutes:g} min at {a.parts_per_s:g} parts/s; broker {a.restart_mode} every "
              f"{a.restart_every_s:g} s, upload --now every {a.upload_every_s:g} s, busy loop "
              f"{'on' if busy else 'off'}; work in {out}", flush=True)
        hard_end = t0 + duration_s + 60  # --duration stops it; the margin is for its shutdown
        while svc.poll() is None and time.monotonic() < hard_end:
            now = time.monotonic()
            if now >= next_sample and now - t0 < duration_s - 2:  # not while it stops (--duration)
                next_sample += a.sample_every_s
                s = {"t_s": round(now - t0, 1), "rss_mb": proc_rss_mb(svc.pid), "fds": proc_fds(svc.pid),
                     "outbox": outbox_figures(out / "outbox.sqlite"), "spool_bytes": disk_usage(out / "spool"),
                     "healthz": healthz(metrics_port), "load1": round(os.getloadavg()[0], 2)}
                samples.append(s)
                print(f"  {s['t_s']:7.0f} s  rss {s['rss_mb'] or 0:7.1f} MB  fds {s['fds']}  "
                      f"outbox {s['outbox']['rows']} rows {s['outbox']['bytes'] / 1024:.0f} KiB  "
                      f"spool {s['spool_bytes'] / 1e6:.1f} MB  healthz {s['healthz']}  load {s['load1']}", flush=True)
            if now >= next_restart and now < t0 + duration_s - 5:
                next_restart += a.restart_every_s
                down = time.time()
                broker.kill() if a.restart_mode == "kill" else broker.stop()
                outages.append([down, None])
                broker.start()
                outages[-1][1] = time.time()
                sub.reconnect_now()  # the line side comes back at once, as a PLC gateway should
                print(f"  {now - t0:7.0f} s  broker {a.restart_mode} + restart", flush=True)
            if upload is not None and upload.poll() is not None:
                uploads[-1].update(rc=upload.returncode, s=round(time.monotonic() - uploads[-1].pop("_t"), 2))
                upload = None
            if upload is None and now >= next_upload:
                next_upload += a.upload_every_s
                log = (out / f"upload-{len(uploads)}.log").open("w")
                upload = subprocess.Popen([*inspector, "upload", "--now", "--config", str(cfg)], env=env, cwd=out,
                                          stdout=log, stderr=subprocess.STDOUT)
                log.close()  # the child holds its own copy
                uploads.append({"at_s": round(now - t0, 1), "_t": time.monotonic()})
            time.sleep(0.2)
        if svc.poll() is None:
            svc.terminate()
        rc = svc.wait(60)
        if upload is not None:
            uploads[-1].update(rc=upload.wait(120), s=round(time.monotonic() - uploads[-1].pop("_t"), 2))
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
        boot = (summary.get("sinks", {}).get("mqtt", {}) or {}).get("boot") or online_boots(sub.messages())[0]
        decided = decided_rejects(out / "verdicts.jsonl", line="line1", station=STATION, boot=boot)

        def settled(s: MosquittoSub) -> bool:  # the last rejects and alarms are still arriving
            return not account(decided, s.messages(), boots=(boot,), outages=outages).unaccounted

        try:
            sub.wait_for(settled, 20, "every decided reject received or alarmed")
        except TimeoutError:
            pass  # reported below
        led = account(decided, sub.messages(), boots=(boot,), outages=outages)
        objects, object_bytes = s3.objects(bucket)
    finally:
        for p in (svc, upload, busy):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        svc_log.close()
        sub.stop()
        broker.close()
        s3.stop()
    return build_report(a, summary, rc, led, samples, outages, uploads, objects, object_bytes, warmup_s, out)


def build_report(a, summary, rc, led, samples, outages, uploads, objects, object_bytes, warmup_s, out) -> dict:
    warm = [s for s in samples if s["t_s"] >= warmup_s and s["rss_mb"] is not None] or samples
    rss_start = warm[0]["rss_mb"] if warm else None
    rss_end = samples[-1]["rss_mb"] if samples else None
    lat = (summary.get("latency_ms") or {}).get("total_ms") or {}
    mq = (summary.get("sinks") or {}).get("mqtt") or {}
    esc = summary.get("escapes") if isinstance(summary.get("escapes"), dict) else {}

    def span(key, sub=None):
        vals = [(s[key][sub] if sub else s[key]) for s in samples]
        vals = [v for v in vals if v is not None]
        if not vals:
            return {"start": None, "end": None, "max": None}
        return {"start": vals[0], "end": vals[-1], "max": max(vals)}

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"minutes": a.minutes, "parts_per_s": a.parts_per_s, "restart_every_s": a.restart_every_s,
                     "restart_mode": a.restart_mode, "upload_every_s": a.upload_every_s, "busy_loop": a.busy_loop,
                     "service_nice": a.service_nice,
                     "background_priority": a.background_priority or "config default", "config": a.config},
        "service": {"exit_code": rc, "frames": summary.get("frames"), "fps": summary.get("fps"),
                    "verdicts": summary.get("verdicts"), "deadline_misses": summary.get("deadline_misses"),
                    "budget_ms": summary.get("budget_ms"), "latency_total_ms": lat, "errors": summary.get("errors"),
                    "dropped": summary.get("dropped"), "alarms": summary.get("alarms"), "escapes": esc,
                    "mqtt": {k: mq.get(k) for k in ("published", "acked", "expired", "late_acks", "reconnects",
                                                    "outbox_depth", "write_errors")},
                    "sampling": (summary.get("sinks") or {}).get("sampling")},
        "rejects": led.as_dict(),
        "broker_restarts": len(outages),
        "uploads": {"runs": len(uploads), "failed": sum(1 for u in uploads if u.get("rc") not in (0,)),
                    "max_s": max((u.get("s") or 0 for u in uploads), default=None),
                    "objects": objects, "bytes": object_bytes, "each": uploads},
        "rss_mb": {"start_after_warmup": rss_start, "warmup_s": warmup_s, "end": rss_end,
                   "max": max((s["rss_mb"] for s in samples if s["rss_mb"] is not None), default=None),
                   "growth": None if rss_start is None or rss_end is None else round(rss_end - rss_start, 1),
                   "slope_mb_per_10min_after_warmup": _slope_mb_per_10min(warm)},
        "fds": span("fds"),
        "outbox_rows": span("outbox", "rows"),
        "outbox_bytes": span("outbox", "bytes"),
        "spool_bytes": span("spool_bytes"),
        "healthz_not_200": sum(1 for s in samples if s["healthz"] != 200),
        "samples": samples,
    }
    growth = report["rss_mb"]["growth"]
    # The targets. `late_only` (a copy that reached the line after its deadline, refused there,
    # with the PUBACK in time so the inspector raised nothing) is a physical escape reported beside them.
    report["targets"] = {
        "deadline_misses_0": summary.get("deadline_misses") == 0,
        "unaccounted_rejects_0": not led.unaccounted,
        "no_false_or_foreign": not (led.both_unexplained or led.foreign_received or led.foreign_alarmed),
        "rss_growth_lt_20mb": growth is not None and growth < TARGET_RSS_GROWTH_MB,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    return report


def print_report(r: dict) -> None:
    s, rej, rss = r["service"], r["rejects"], r["rss_mb"]
    lat = s["latency_total_ms"] or {}
    print("\n=== soak result")
    print(f"{r['settings']['minutes']:g} min, {s['frames']} frames ({s['fps']} fps), exit {s['exit_code']}; "
          f"broker restarts {r['broker_restarts']} ({r['settings']['restart_mode']}), "
          f"busy loop {r['settings']['busy_loop']}, background priority {r['settings']['background_priority']}")
    print(f"deadline misses {s['deadline_misses']} (budget {s['budget_ms']} ms), verdicts {s['verdicts']}, "
          f"capture->verdict p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms")
    print(f"rejects decided {rej['decided']}: received in time {rej['received_in_time']} "
          f"(re-sent after an outage {rej['resent_in_time']}), escaped_part alarmed {rej['alarmed']}, "
          f"unaccounted {rej['unaccounted']['count']}, "
          f"reached the line late (not alarmed) {rej['late_only']['count']}, "
          f"in time and alarmed (PUBACK lost/late) {rej['both_explained']['count']}, "
          f"duplicates {rej['duplicates']}; "
          f"physical escapes {rej['physical_escapes']} (service says {(s['escapes'] or {}).get('physical', '-')})")
    print(f"RSS {rss['start_after_warmup']} MB after {rss['warmup_s']:g} s warm-up -> {rss['end']} MB "
          f"(growth {rss['growth']} MB, max {rss['max']}, slope {rss['slope_mb_per_10min_after_warmup']} MB/10 min); "
          f"fds {r['fds']}")
    print(f"outbox rows {r['outbox_rows']}, bytes {r['outbox_bytes']}; spool bytes {r['spool_bytes']}")
    u = r["uploads"]
    print(f"uploads --now {u['runs']} (failed {u['failed']}, longest {u['max_s']} s), {u['objects']} objects "
          f"{u['bytes'] / 1e6:.1f} MB in the bucket; /healthz not 200 in {r['healthz_not_200']} "
          f"of {len(r['samples'])} samples")
    print("targets: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in r["targets"].items()))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    report = run(a)
    print_report(report)
    print(f"report: {Path(a.out).resolve() / 'soak.json'}")
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
