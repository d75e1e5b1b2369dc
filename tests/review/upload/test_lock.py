"""One upload pass per spool: `upload --now` and the nightly pass never merge a manifest at once; the
nightly pass skips while another holds the spool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from inspector.config import InspectorConfig
from inspector.review.spool import iter_samples
from inspector.review.upload import LOCK_NAME, NightlyUploader, SpoolBusy, Uploader
from tests.review.upload.spooled import REPO, base_images_cache, fill_spool, manifest_ids, sample_files
from tests.waiting import wait_for


def test_upload_now_and_the_nightly_pass_never_merge_a_manifest_at_once(tmp_path):
    """Two real processes and the in-service pass contend for one spool. Before: no lock, so two
    passes could read-merge-write the same manifest and the later write dropped the other's lines."""
    spool, dest = tmp_path / "spool", tmp_path / "up"
    first = fill_spool(spool, 30, base_images_cache())
    total_bytes = sum(p.stat().st_size for p in spool.rglob("*.jpg"))
    cfg_file = tmp_path / "inspector.yaml"
    cfg_file.write_text(yaml.safe_dump({"spool": {"dir": str(spool)},
                                        "upload": {"destination": f"file://{dest}", "window": None}}))
    cmd = [sys.executable, "-m", "inspector", "upload", "--now", "--config", str(cfg_file)]
    # The cap stretches process A's pass to ~4 s, so that the others arrive while it holds the spool.
    slow = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "INSPECTOR_UPLOAD__BANDWIDTH_BYTES_PER_S":
                                                str(total_bytes // 4)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    other = None
    try:
        lock = spool / LOCK_NAME
        def a_holds_it() -> bool:  # the event: A holds the lock and says so in the file
            assert slow.poll() is None, slow.communicate()
            return f"pid {slow.pid} " in (lock.read_text() if lock.exists() else "")

        wait_for(a_holds_it, 30, "process A holding the spool lock")

        # The in-service pass does not wait: it is refused, naming the holder, and touches nothing.
        cfg = InspectorConfig(spool={"dir": spool}, upload={"destination": f"file://{dest}", "window": None})
        with pytest.raises(SpoolBusy, match=f"pid {slow.pid} "):
            Uploader(spool, cfg.upload).run(lock_timeout_s=0.0)

        # New samples arrive while A runs (A listed its own at the start), and a second
        # `upload --now` (process B) starts: it waits for A, then merges its lines into the same manifests.
        second = fill_spool(spool, 10, base_images_cache(), start=1000)
        other = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        out_a, err_a = slow.communicate(timeout=120)
        out_b, err_b = other.communicate(timeout=120)
    finally:
        for p in (slow, other):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert slow.returncode == 0, out_a + err_a
    assert other.returncode == 0, out_b + err_b
    assert "waiting for it" in err_b and f"pid {slow.pid} " in err_b, err_b
    ids = manifest_ids(dest)
    assert sorted(ids) == sorted({**first, **second}), "a manifest line was lost or duplicated"
    assert sample_files(spool) == []


def test_a_nightly_pass_skips_while_upload_now_holds_the_spool(tmp_path):
    spool = tmp_path / "spool"
    fill_spool(spool, 2, base_images_cache())
    cfg = InspectorConfig(spool={"dir": spool},
                          upload={"destination": f"file://{tmp_path / 'up'}", "window": "00:00-00:00"})
    from inspector.review.upload import SpoolLock

    held = SpoolLock(spool)
    assert held.acquire(0.0)  # another pass (here: this thread, its own open file) holds the spool
    nightly = NightlyUploader(cfg, poll_s=0.01)
    nightly.start()
    try:
        wait_for(lambda: nightly.state()["skipped_busy"] >= 2, 20, lambda: f"two skipped passes: {nightly.state()}")
        st = nightly.state()
        assert st["skipped_busy"] >= 2 and st["passes"] == 0 and len(list(iter_samples(spool))) == 2, st
        held.release()
        wait_for(lambda: nightly.state()["passes"] >= 1, 20, lambda: f"a pass once released: {nightly.state()}")
    finally:
        nightly.stop(5)
    assert nightly.state()["passes"] >= 1 and list(iter_samples(spool)) == []
