"""Interrupted stages: `inspector model stage` killed with SIGKILL in the middle of copying a large
bundle leaves its `.staging-*` folder; the next stage and the next service start remove it, and never
a staging folder that a live process is still writing (its flock says so)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from inspector.bundle.hashing import sha256_file
from inspector.bundle.signing import Trust
from inspector.lifecycle.store import ModelRef, ModelStore
from tests.lifecycle.bundles import make_bundle
from tests.lifecycle.conftest import lifecycle_config
from tests.waiting import wait_for

BIG_MB = 300


def _big_bundle(dst, version: str):
    """models/demo's IR with a 300 MB blob appended to its bin (the card's sha256 follows): a stage
    takes seconds to copy and hash it, long enough to be killed in the middle."""
    make_bundle(dst, version)
    card = json.loads((dst / "model_card.json").read_text())
    entry = card["files"]["int8"]
    with open(dst / entry["bin"], "ab") as fh:
        block = os.urandom(1 << 20)  # incompressible, like weights
        for _ in range(BIG_MB):
            fh.write(block)
    entry["bin_sha256"] = sha256_file(dst / entry["bin"])
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    return dst


def _stage_cli(bundle, conf) -> list[str]:
    return [sys.executable, "-m", "inspector", "model", "stage", str(bundle), "--config", str(conf)]


def _kill_mid_copy(bundle, conf, store_root):
    """Starts `inspector model stage` and SIGKILLs it once its staging folder holds part of the bin."""
    p = subprocess.Popen(_stage_cli(bundle, conf), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def copying():
            if p.poll() is not None:
                raise AssertionError(f"the stage ended before it was killed: {p.returncode} {p.stderr.read()}")
            return [f for f in store_root.glob("demo/.staging-*/model_int8.bin") if f.stat().st_size > 0]
        wait_for(copying, 120, "a staging folder with part of the bin")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    assert p.returncode == -signal.SIGKILL
    left = list(store_root.glob("demo/.staging-*"))
    assert len(left) == 1, left
    return left[0]


@pytest.fixture(autouse=True)
def _drop_big_blobs(tmp_path):
    """The 300 MB blobs (up to 3 copies a test) go at teardown: pytest keeps a run's tmp folders, and
    900 MB a test left behind filled a small CI disk. The rest (configs, logs) stays for a failure's reader."""
    yield
    for f in tmp_path.rglob("*.bin"):
        if f.is_file() and f.stat().st_size > (BIG_MB // 2) << 20:
            f.unlink()


@pytest.fixture
def setup(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(json.dumps({"lifecycle": {"store": str(tmp_path / "store"), "station": "st1"}}))
    return conf, tmp_path / "store"


def test_a_killed_stage_is_cleaned_by_the_next_stage_but_not_a_live_one(tmp_path, setup):
    conf, root = setup
    big = _big_bundle(tmp_path / "big", "3.0.0")
    stale = _kill_mid_copy(big, conf, root)
    store = ModelStore(root, "st1")
    assert store.versions() == []  # a staging folder is never listed
    # a stage another process is writing right now: it holds the flock on its folder
    live = root / "demo" / ".staging-4.0.0-live"
    live.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(live)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run(_stage_cli(make_bundle(tmp_path / "small", "2.0.0"), conf), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not stale.exists(), "the killed stage's folder is still there"
        assert live.exists(), "a stage that is still being written was removed"
        assert [str(v.ref) for v in store.versions()] == ["demo@2.0.0"]
    finally:
        holder.stdin.close()
        holder.wait(30)
    # its writer gone (the lock dropped with it), the next clean removes it too
    assert store.clean_staging() == [live] and not live.exists()
    # and the interrupted bundle stages whole afterwards
    r = subprocess.run(_stage_cli(big, conf), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [str(v.ref) for v in store.versions()] == ["demo@2.0.0", "demo@3.0.0"]
    assert not list(root.glob("*/.staging-*"))


def test_the_service_start_removes_a_killed_stage(tmp_path, setup, running):
    conf, root = setup
    stale = _kill_mid_copy(_big_bundle(tmp_path / "big", "3.0.0"), conf, root)
    cfg = lifecycle_config(tmp_path, lifecycle={"station": "st1"})
    svc, rec = running(cfg)
    assert not stale.exists()
    rec.wait(lambda vs: len(vs) >= 1, 60, "a verdict")


def test_a_stage_in_this_process_is_not_cleaned_under_it(tmp_path):
    """clean_staging from another thread while a stage fills its folder leaves it alone."""
    store = ModelStore(tmp_path / "store", "st1")
    seen = []

    def fill_then_clean(tmp):
        seen.append(tmp)
        assert store.clean_staging() == []
        assert tmp.exists()

    bundle = make_bundle(tmp_path / "b", "5.0.0")
    names = [p.name for p in bundle.iterdir()]

    def fill(tmp):
        fill_then_clean(tmp)
        for n in names:
            (tmp / n).write_bytes((bundle / n).read_bytes())

    store._install(ModelRef("demo", "5.0.0"), fill, Trust(), origin="test")  # what stage and pull call
    assert seen and [str(v.ref) for v in store.versions()] == ["demo@5.0.0"]
