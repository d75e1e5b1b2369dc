"""Shadow run over 300 parts: the candidate judges the active model's frames
without actuating, the report gives agreement per class and the parts each model rejected alone,
disagreements are in the spool with reason shadow_disagree, and the shadow's threads (its own and
OpenVINO's) run at a lower OS priority while the active model's keep theirs. Correctness only: the
cost to the active model's p99 is measured in benchmarks/shadow.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from inspector.bundle.signing import Trust
from inspector.frames import Outcome
from inspector.lifecycle.control import request
from inspector.lifecycle.shadow import ShadowRunner
from inspector.lifecycle.store import ModelStore
from inspector.review.spool import iter_samples
from tests.lifecycle.bundles import reject_everything
from tests.lifecycle.conftest import V1, lifecycle_config, wait_done

CANDIDATE = "demo@7.0.0"


def _nice_by_thread() -> dict[int, int]:
    out = {}
    for t in Path("/proc/self/task").iterdir():
        try:
            out[int(t.name)] = os.getpriority(os.PRIO_PROCESS, int(t.name))
        except OSError:
            pass
    return out


# One run of 300 parts (15 s at 20/s; was 600). Every assertion below is a count of this run's own parts
# (judged + dropped + errors = offered, agree + disagree = judged, one spooled sample per disagreement, per
# class both + active_only + shadow_only + neither = judged): none needs a longer line, and the candidate that
# rejects everything disagrees with the active model's passes from the first parts on.
@pytest.mark.slow
def test_shadow_run(tmp_path, running):
    n = 300
    candidate = reject_everything(tmp_path / "cand", "7.0.0")
    cfg = lifecycle_config(tmp_path, source={"parts_per_s": 20}, sampling={
        "enabled": True, "seed": 1, "uncertain": {"enabled": False}, "rejects": {"enabled": False},
        "passes": {"enabled": False}, "dedup_window_s": 0,
        "shadow_disagree": {"limits": {"per_minute": 10_000, "per_hour": 10_000, "per_day": 10_000}}},
        spool={"queue_size": 1000})
    before = set(_nice_by_thread())
    svc, rec = running(cfg, max_frames=n)
    # The active model's threads are all there once it has judged parts (OpenVINO makes its inference
    # threads on the first requests, the sinks theirs on the first verdicts): a snapshot taken before that
    # counted a late service thread as the shadow's (a fresh-clone run beside a busy CPU thread).
    rec.wait(lambda vs: len(vs) >= 20, 60, "20 verdicts from the active model")
    main_threads = _nice_by_thread()
    svc.lifecycle.store.stage(candidate, Trust())
    r = request(cfg.lifecycle.socket, {"cmd": "shadow", "model": CANDIDATE})
    assert r["priority"] == f"nice {cfg.shadow.nice}"
    others = {t.native_id for t in threading.enumerate() if t.name != "lifecycle-shadow"}  # e.g. control
    shadow_threads = {tid: n for tid, n in _nice_by_thread().items() if tid not in set(main_threads) | others}
    # The shadow's own thread and the inference threads OpenVINO made for its model inherit its niceness.
    assert shadow_threads and set(shadow_threads.values()) == {cfg.shadow.nice}, shadow_threads
    assert {n for tid, n in main_threads.items() if tid not in before} <= {0, cfg.background.nice}

    wait_done(svc, 120)
    assert svc.lifecycle.shadow.drain(30)
    rep = request(cfg.lifecycle.socket, {"cmd": "report"})
    assert rep["model"] == CANDIDATE and rep["active"] == str(V1)
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "inspector", "model", "report", "--socket", str(cfg.lifecycle.socket),
                        "--json", str(out / "shadow.json"), "--html", str(out / "shadow.html")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "agreement on reject/pass" in r.stdout and "scratch" in r.stdout
    assert json.loads((out / "shadow.json").read_text())["model"] == CANDIDATE
    assert "<table" in (out / "shadow.html").read_text()
    svc.stop(deadline_s=5)

    # Nothing the shadow judged actuated: every verdict came from the active model.
    assert {v.model.version for v in rec.verdicts} == {V1.version} and len(rec.verdicts) == n
    active_rejects = sum(v.outcome is Outcome.REJECT for v in rec.verdicts)
    judged = rep["judged"]
    assert judged > 0 and judged + rep["dropped"] + rep["not_compared"].get("shadow_error", 0) == rep["offered"]
    assert rep["offered"] + sum(rep["not_compared"].values()) <= n  # offered from the moment it was ready
    # The candidate rejects every part: it agrees on the active model's rejects, disagrees on its passes.
    assert rep["rejected_alone"]["active"] == 0
    assert rep["disagree"] == rep["rejected_alone"]["shadow"] > 0
    assert 0 < rep["agreement"] < 1 and rep["agree"] + rep["disagree"] == judged
    assert set(rep["per_class"]) == {"scratch", "pit", "crack", "contamination"}
    for row in rep["per_class"].values():
        assert row["both"] + row["active_only"] + row["shadow_only"] + row["neither"] == judged
    assert rep["per_class"]["scratch"]["active_only"] == 0  # the candidate finds class 0 on every part
    assert rep["latency_ms"]["shadow_infer"]["p99"] > 0 and rep["latency_ms"]["active_infer"]["p50"] > 0
    assert active_rejects > 0

    samples = [s.read_sidecar() for s in iter_samples(cfg.spool.dir)]
    assert samples and all(s["reason"] == "shadow_disagree" for s in samples)
    assert len(samples) == rep["spooled_disagreements"]
    for s in samples:
        assert s["model"]["version"] == V1.version and s["shadow"]["model"]["version"] == "7.0.0"
        assert s["verdict"]["outcome"] != s["shadow"]["verdict"] or s["defects"] != s["shadow"]["defects"]


def test_a_shadow_that_falls_behind_drops_its_own_frames(tmp_path, running):
    """The post thread never waits for the shadow: with a stalled shadow every frame after the first is
    dropped by the shadow and counted, and every part still gets its verdict. The shadow comes from the
    config's `shadow:` section here (started with the service)."""
    cfg = lifecycle_config(tmp_path, source={"parts_per_s": 30}, shadow={"enabled": True, "model": CANDIDATE})
    ModelStore(cfg.lifecycle.store, "st1").stage(reject_everything(tmp_path / "cand", "7.0.0"), Trust())
    gate = threading.Event()
    real = ShadowRunner._judge
    ShadowRunner._judge = lambda self, v: (gate.wait(60), real(self, v))  # stuck on its first frame
    try:
        svc, rec = running(cfg, max_frames=90)
        wait_done(svc, 120)
        st = svc.lifecycle.shadow.state()
    finally:
        gate.set()
        ShadowRunner._judge = real
    assert len(rec.verdicts) == 90
    assert st["offered"] > 0 and st["dropped"] >= st["offered"] - cfg.shadow.queue - 1
