"""One upload pass against a real S3-compatible server on loopback and a real directory: a SIGKILLed
run resumed, wrong credentials, a server that is down, idempotent re-runs, the file:// default, credentials
from the environment only."""

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

import pytest
import yaml

from inspector.cli.service import upload_now
from inspector.config import InspectorConfig
from inspector.review.spool import iter_samples
from inspector.review.upload import Uploader
from tests.fixtures.s3_server import free_port
from tests.review.upload.spooled import (
    REPO,
    base_images_cache,
    check_bucket,
    fill_spool,
    local_files,
    s3_config,
    sample_files,
)


def test_a_killed_upload_resumes_and_stores_every_sample_once(tmp_path, s3_server, s3_bucket):
    spool = tmp_path / "spool"
    # 250 samples (was 500: the same kill and resume with half the spool to write, fsync'ed sample by sample:
    # 7 s of the test's wall time at 500, and half the objects for the second run to store).
    expected = fill_spool(spool, 250, base_images_cache())
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
            if n >= 40 or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, \
        f"expected the uploader to be killed mid-run; it ended: {out.decode()[-2000:]}"
    left = len(list(iter_samples(spool)))
    in_bucket = sum(k.endswith(".jpg") for k in s3_server.keys(s3_bucket, "night/"))
    assert 0 < in_bucket < 250 and left > 0, f"expected a half-done night, got {in_bucket} in the bucket, {left} local"
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
