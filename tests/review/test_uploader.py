"""The uploader against a real S3-compatible server on loopback and a real directory: a SIGKILLed
run resumed, a server that is down, idempotent re-runs, the file:// default, the nightly window."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector.cli.service import upload_now
from inspector.config import InspectorConfig, SpoolConfig
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.frames import ModelInfo
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool, iter_samples
from inspector.review.upload import (
    LOCK_NAME,
    NightlyUploader,
    SpoolBusy,
    Uploader,
    in_window,
    parse_window,
)
from inspector.sources.conveyor import ConveyorGenerator
from tests.fixtures.s3_server import free_port

REPO = Path(__file__).resolve().parents[2]
REASONS = [("uncertain",), ("reject",), ("random_pass",), ("uncertain", "class:crack")]


def fill_spool(root: Path, n: int, images: list[np.ndarray], *, t0: float = 1_900_000_000.0,
               start: int = 0) -> dict[str, str]:
    """Writes n samples (numbered from `start`) through the real Spool. Returns {sample id: jpg sha256}.
    The number is stamped on each image so every sample has its own content."""
    spool = Spool(SpoolConfig(dir=root, max_bytes=1 << 30, jpeg_quality=50), alarm=lambda k, d: None,
                  config_hash="feedbeef")
    spool.open()
    out = {}
    for i in range(start, start + n):
        img = images[i % len(images)].copy()
        cv2.putText(img, f"#{i}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        # Two capture dates, so that two manifests are made.
        frame = synth_frame(i, image=img, captured_wall=t0 + i + (86400.0 if i - start >= n // 2 else 0.0))
        v = make_verdict(frame, outcome="REJECT" if i % 2 else "PASS",
                         defects=(make_defect("crack", 0.9, (300.0, 200.0, 360.0, 250.0)),) if i % 2 else (),
                         uncertain=(make_defect("pit", 0.45, (100.0, 120.0, 140.0, 170.0)),),
                         model=ModelInfo("demo", "1.0.0", "cd" * 32))
        s = spool.write(v, SampleDecision(REASONS[i % len(REASONS)], i, 0.0))
        out[s.id] = hashlib.sha256(s.image.read_bytes()).hexdigest()
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def sample_files(root: Path) -> list[Path]:
    """Files left in the spool, the upload lock file aside (it stays: deleting a flock file races)."""
    return [p for p in root.rglob("*.*") if p.name != LOCK_NAME]


def s3_config(spool: Path, bucket: str, endpoint: str, **upload) -> InspectorConfig:
    return InspectorConfig(spool={"dir": spool}, upload={
        "destination": f"s3://{bucket}/night", "endpoint_url": endpoint, "retries": 2, "backoff_s": 0.05,
        "window": None, **upload})


def check_bucket(s3, bucket: str, expected: dict[str, str]) -> None:
    """Every sample exactly once (image + labels), manifests complete, a gallery per date."""
    keys = s3.keys(bucket, "night/")
    jpgs = sorted(k for k in keys if k.endswith(".jpg"))
    want_shas = set(expected.values())
    assert len(jpgs) == len(expected), f"expected {len(expected)} images in the bucket, got {len(jpgs)}"
    assert {k.rsplit("/", 1)[1][:-4] for k in jpgs} == want_shas
    assert {k[:-4] for k in keys if k.endswith(".txt")} == {k[:-4] for k in jpgs}
    manifests = sorted(k for k in keys if k.endswith("manifest.jsonl"))
    assert len(manifests) == 2, f"expected one manifest per capture date, got {manifests}"
    lines = []
    client = s3.client()
    for m in manifests:
        body = client.get_object(Bucket=bucket, Key=m)["Body"].read().decode()
        day = m.split("/")[1]
        recs = [json.loads(x) for x in body.splitlines()]
        assert all(r["date"] == day and r["image_key"].startswith(f"night/{day}/") for r in recs)
        lines += recs
        assert m.replace("manifest.jsonl", "gallery.html") in keys
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)) == len(expected), \
        f"expected {len(expected)} distinct manifest lines, got {len(ids)}"
    assert {r["id"]: r["image_sha256"] for r in lines} == expected
    assert all(r["image_key"] in keys and r["labels_key"] in keys and r["reasons"] for r in lines)


def test_a_killed_upload_resumes_and_stores_every_sample_once(tmp_path, s3_server, s3_bucket):
    spool = tmp_path / "spool"
    expected = fill_spool(spool, 500, base_images_cache())
    total_bytes = sum(p.stat().st_size for p in spool.rglob("*.jpg"))
    cfg_file = tmp_path / "inspector.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "spool": {"dir": str(spool)},
        "upload": {"destination": f"s3://{s3_bucket}/night", "endpoint_url": s3_server.endpoint_url,
                   "retries": 2, "backoff_s": 0.05, "window": None},
    }))
    # The bandwidth cap stretches the first run to ~15 s so that it is killed mid-way.
    env = {**os.environ, **s3_server.env(), "INSPECTOR_UPLOAD__BANDWIDTH_BYTES_PER_S": str(total_bytes // 15)}
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "upload", "--now", "--config", str(cfg_file)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = sum(k.endswith(".jpg") for k in s3_server.keys(s3_bucket, "night/"))
            if n >= 80 or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, \
        f"expected the uploader to be killed mid-run; it ended: {out.decode()[-2000:]}"
    left = len(list(iter_samples(spool)))
    in_bucket = sum(k.endswith(".jpg") for k in s3_server.keys(s3_bucket, "night/"))
    assert 0 < in_bucket < 500 and left > 0, f"expected a half-done night, got {in_bucket} in the bucket, {left} local"
    assert not any(k.endswith("manifest.jsonl") for k in s3_server.keys(s3_bucket, "night/"))

    # Run again, as cron would: the same command without the cap.
    env.pop("INSPECTOR_UPLOAD__BANDWIDTH_BYTES_PER_S")
    again = subprocess.run([sys.executable, "-m", "inspector", "upload", "--now", "--config", str(cfg_file)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, f"expected exit 0, got {again.returncode}: {again.stdout}{again.stderr[-3000:]}"
    summary = again.stdout.splitlines()[0]
    counts = dict(re.findall(r"(uploaded|skipped|resumed|failed) (\d+)", summary))
    assert counts["failed"] == "0" and sum(int(counts[k]) for k in ("uploaded", "skipped", "resumed")) == left, summary
    assert sample_files(spool) == [], "expected no sample files left locally"
    check_bucket(s3_server, s3_bucket, expected)


@pytest.mark.parametrize("creds", ["wrong secret", "unknown key"])
def test_an_upload_signed_with_wrong_credentials_is_refused_at_once_and_nothing_moves(tmp_path, s3_server,
                                                                                      s3_bucket, creds):
    """The server checks the SigV4 signature: a 403 is final (no retry), exit 1, the spool kept whole."""
    spool = tmp_path / "spool"
    fill_spool(spool, 4, base_images_cache())
    before = local_files(spool)
    cfg_file = tmp_path / "inspector.yaml"
    cfg_file.write_text(yaml.safe_dump({"spool": {"dir": str(spool)}, "upload": {
        "destination": f"s3://{s3_bucket}/night", "endpoint_url": s3_server.endpoint_url, "retries": 3,
        "backoff_s": 0.05, "window": None}}))
    env = {**os.environ, **s3_server.env()}
    if creds == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key[::-1]
        code = "SignatureDoesNotMatch"
    else:
        env["AWS_ACCESS_KEY_ID"] = "AKIANOSUCHKEY0000000"
        code = "InvalidAccessKeyId"
    run = subprocess.run([sys.executable, "-m", "inspector", "upload", "--now", "--config", str(cfg_file)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 1, f"expected exit 1, got {run.returncode}: {out[-3000:]}"
    assert code in out and "(attempt 1 of 4)" in out, f"expected a final {code} on the first attempt: {out[-3000:]}"
    assert s3_server.keys(s3_bucket) == {}
    assert local_files(spool) == before


_IMAGES: list[np.ndarray] = []


def base_images_cache() -> list[np.ndarray]:
    if not _IMAGES:
        # Real conveyor frames at the generator's smallest size: 500 of them must upload quickly.
        g = ConveyorGenerator(31, width=320, height=240)
        _IMAGES.extend(g.part(i).image for i in range(8))
    return _IMAGES


def test_with_the_server_down_nothing_is_deleted_and_the_next_run_completes(tmp_path, s3_server, s3_bucket):
    spool = tmp_path / "spool"
    expected = fill_spool(spool, 24, base_images_cache())
    before = local_files(spool)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    rep = Uploader(spool, s3_config(spool, s3_bucket, dead, retries=1, backoff_s=0.01).upload).run()
    assert not rep.ok and rep.failed == 24 and rep.uploaded == 0 and rep.error
    assert local_files(spool) == before, "expected every local file untouched after a failed night"

    rep = Uploader(spool, s3_config(spool, s3_bucket, s3_server.endpoint_url).upload).run()
    assert rep.ok and rep.uploaded == 24, rep.summary()
    assert sample_files(spool) == []
    check_bucket(s3_server, s3_bucket, expected)


def test_objects_already_there_are_skipped_and_nothing_is_duplicated(tmp_path, s3_server, s3_bucket):
    spool = tmp_path / "spool"
    expected = fill_spool(spool, 12, base_images_cache())
    copy = tmp_path / "copy"
    shutil.copytree(spool, copy)
    cfg = s3_config(spool, s3_bucket, s3_server.endpoint_url).upload
    first = Uploader(spool, cfg).run()
    assert first.ok and first.uploaded == 12
    shutil.rmtree(spool)
    copy.rename(spool)  # the same samples again, as if the markers had been lost
    again = Uploader(spool, cfg).run()
    assert again.ok and again.skipped == 12 and again.uploaded == 0, again.summary()
    assert sample_files(spool) == []
    check_bucket(s3_server, s3_bucket, expected)
    assert Uploader(spool, cfg).run().manifests == ()  # nothing left to do


def test_upload_now_to_the_file_default_writes_manifest_and_gallery(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # background off: upload_now lowers the calling thread's priority, here pytest's own.
    cfg = InspectorConfig(spool={"dir": "var/spool"}, upload={"window": None}, background={"priority": "off"})
    assert cfg.upload.destination == "file://var/uploads"
    expected = fill_spool(tmp_path / "var/spool", 10, base_images_cache())
    assert upload_now(cfg) == 0
    out = capsys.readouterr().out
    assert "uploaded 10, skipped 0, resumed 0, failed 0, quarantined 0" in out, out
    assert (tmp_path / "var/uploads").as_uri() in out
    dest = tmp_path / "var/uploads"
    days = sorted(p.name for p in dest.iterdir())
    assert len(days) == 2
    lines = []
    for day in days:
        assert (dest / day / "gallery.html").stat().st_size > 1000
        lines += [json.loads(x) for x in (dest / day / "manifest.jsonl").read_text().splitlines()]
    assert {r["id"]: r["image_sha256"] for r in lines} == expected
    for r in lines:
        data = (dest / r["image_key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["image_sha256"]
        assert (dest / r["labels_key"]).exists()
    assert sample_files(tmp_path / "var/spool") == []


@pytest.mark.parametrize(
    "window, at, inside",
    [
        ("00:00-00:00", "12:00", True),  # start == end: all day
        ("01:00-05:00", "00:59", False),
        ("01:00-05:00", "01:00", True),
        ("01:00-05:00", "04:59", True),
        ("01:00-05:00", "05:00", False),
        ("22:00-02:00", "23:30", True),  # crosses midnight
        ("22:00-02:00", "01:59", True),
        ("22:00-02:00", "02:00", False),
        ("22:00-02:00", "12:00", False),
    ],
)
def test_upload_window(window, at, inside):
    assert in_window(dtime.fromisoformat(at), *parse_window(window)) is inside


def test_the_nightly_uploader_runs_inside_its_window(tmp_path):
    spool = tmp_path / "spool"
    fill_spool(spool, 4, base_images_cache())
    now = {"t": datetime(2031, 1, 1, 12, 0)}
    cfg = InspectorConfig(spool={"dir": spool},
                          upload={"destination": f"file://{tmp_path / 'up'}", "window": "01:00-05:00"})
    nightly = NightlyUploader(cfg, now=lambda: now["t"], poll_s=0.02)
    nightly.start()
    try:
        deadline = time.monotonic() + 20
        while nightly.state()["polls"] < 3 and time.monotonic() < deadline:  # it looked, outside its window
            time.sleep(0.01)
        assert nightly.state()["polls"] >= 3
        assert nightly.state()["passes"] == 0 and len(list(iter_samples(spool))) == 4
        now["t"] = datetime(2031, 1, 2, 1, 30)
        deadline = time.monotonic() + 20
        while nightly.state()["passes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        nightly.stop(5)
    st = nightly.state()
    assert st["passes"] == 1 and st["in_window"] and st["last"]["uploaded"] == 4, st
    assert list(iter_samples(spool)) == []


def test_s3_credentials_come_from_the_environment_only(tmp_path, s3_server, s3_bucket, monkeypatch):
    spool = tmp_path / "spool"
    fill_spool(spool, 2, base_images_cache())
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    rep = Uploader(spool, s3_config(spool, s3_bucket, s3_server.endpoint_url).upload).run()
    assert not rep.ok and "credentials" in rep.error.lower() and len(list(iter_samples(spool))) == 2
    monkeypatch.setenv("INSPECTOR_UPLOAD__ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("INSPECTOR_UPLOAD__SECRET_KEY", s3_server.secret_key)
    cfg = s3_config(spool, s3_bucket, s3_server.endpoint_url)
    dumped = cfg.model_dump(mode="json")["upload"]  # what config_hash sees
    assert cfg.upload.access_key is not None and "access_key" not in dumped and "secret_key" not in dumped
    rep = Uploader(spool, cfg.upload).run()
    assert rep.ok and rep.uploaded == 2, rep.summary()


# -- one pass at a time; a bad sample does not stop the night ------------------------------------
def _manifest_ids(dest: Path) -> list[str]:
    return [json.loads(x)["id"] for m in sorted(dest.rglob("manifest.jsonl")) for x in m.read_text().splitlines()]


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
        deadline = time.monotonic() + 30  # wait for the event: A holds the lock and says so in the file
        while time.monotonic() < deadline and f"pid {slow.pid} " not in (lock.read_text() if lock.exists() else ""):
            assert slow.poll() is None, slow.communicate()
            time.sleep(0.02)
        assert f"pid {slow.pid} " in lock.read_text()

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
    ids = _manifest_ids(dest)
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
        deadline = time.monotonic() + 20
        while nightly.state()["skipped_busy"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        st = nightly.state()
        assert st["skipped_busy"] >= 2 and st["passes"] == 0 and len(list(iter_samples(spool))) == 2, st
        held.release()
        while nightly.state()["passes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        nightly.stop(5)
    assert nightly.state()["passes"] >= 1 and list(iter_samples(spool)) == []


def _corrupt(s, how: str) -> None:
    if how == "garbage":
        s.sidecar.write_bytes(b"\x00\xffnot json")
    elif how == "truncated":
        s.sidecar.write_bytes(s.sidecar.read_bytes()[:40])
    elif how == "no_image":
        side = json.loads(s.sidecar.read_text())
        del side["image"]
        s.sidecar.write_text(json.dumps(side))
    elif how == "list":
        s.sidecar.write_text("[1, 2]")
    elif how == "other_id":
        side = json.loads(s.sidecar.read_text())
        s.sidecar.write_text(json.dumps({**side, "id": "someone-else"}))
    elif how == "marked_then_truncated":  # sent by an interrupted run; only its manifest line was left
        s.mark_uploaded()
        s.drop_payload()
        s.sidecar.write_bytes(b"{")


@pytest.mark.parametrize("how, words", [
    ("garbage", "not valid JSON"),
    ("truncated", "not valid JSON"),
    ("no_image", "expected an image record"),
    ("list", "expected a JSON object, got list"),
    ("other_id", "expected id"),
    ("marked_then_truncated", "not valid JSON"),
])
def test_a_corrupt_sidecar_is_quarantined_and_the_rest_uploaded(tmp_path, how, words):
    """Before: one unreadable sidecar ended the night, and every later night at the same sample."""
    spool, dest = tmp_path / "spool", tmp_path / "up"
    expected = fill_spool(spool, 6, base_images_cache())
    bad = sorted(iter_samples(spool), key=lambda s: s.id)[1]
    _corrupt(bad, how)
    bad_files = {p.name for p in bad.root.rglob(f"{bad.id}.*")}
    alarms: list[tuple[str, dict]] = []
    cfg = InspectorConfig(spool={"dir": spool}, upload={"destination": f"file://{dest}", "window": None})
    rep = Uploader(spool, cfg.upload, alarm=lambda k, d: alarms.append((k, d))).run()
    assert rep.ok and rep.quarantined == (bad.id,), rep.summary()
    assert rep.uploaded == 5 and "quarantined 1" in rep.summary()
    assert sorted(_manifest_ids(dest)) == sorted(k for k in expected if k != bad.id)
    assert [(k, d["id"]) for k, d in alarms] == [("sample_quarantined", bad.id)]
    assert words in alarms[0][1]["why"]
    q = spool / "quarantine" / bad.date
    assert {p.name for p in q.iterdir()} == bad_files | {f"{bad.id}.reason"}
    assert words in (q / f"{bad.id}.reason").read_text()
    assert list(iter_samples(spool)) == []
    # The next night has nothing left to stumble on.
    again = Uploader(spool, cfg.upload).run()
    assert again.ok and again.uploaded == 0 and again.quarantined == ()


def test_the_uploader_thread_runs_at_background_priority(tmp_path):
    spool = tmp_path / "spool"
    fill_spool(spool, 1, base_images_cache())
    cfg = InspectorConfig(spool={"dir": spool}, upload={"destination": f"file://{tmp_path / 'up'}",
                                                        "window": "00:00-00:00"}, background={"nice": 13})
    from inspector.kernel import priority

    priority.configure(cfg.background)
    try:
        nightly = NightlyUploader(cfg, poll_s=0.01)
        nightly.start()
        try:
            deadline = time.monotonic() + 20
            while nightly.priority is None and time.monotonic() < deadline:
                time.sleep(0.01)
            tid = nightly._thread.native_id
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5): nice
        finally:
            nightly.stop(5)
    finally:
        priority.configure(type(cfg.background)())
    assert nightly.priority == "nice 13" and nice == 13
