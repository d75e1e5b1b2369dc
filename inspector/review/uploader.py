"""Moves the spool to the review store: nightly, idempotent, verified, resumable.

Destinations:
  s3://bucket[/prefix]   boto3; `upload.endpoint_url` for MinIO or another S3-compatible store.
                         Credentials: INSPECTOR_UPLOAD__ACCESS_KEY / __SECRET_KEY if set, otherwise
                         boto3's standard chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                         AWS_SESSION_TOKEN, AWS_PROFILE, instance roles). Never the YAML.
  file:///abs/path       a directory (air-gapped sites that sync a share); `file://rel/path` is
                         relative to the working directory (the demo default `file://var/uploads`).

Keys derive from content, so a retry can never duplicate a sample:
  <prefix>/<date>/<sha256 of the jpg>.jpg      the frame
  <prefix>/<date>/<sha256 of the jpg>.txt      YOLO pre-labels (same stem: labelling tools pair them)
  <prefix>/<date>/manifest.jsonl               one line per sample of that capture date: the sidecar
                                               plus the object keys (a "night" is the capture date's
                                               batch; later runs for the same date merge into it)
  <prefix>/<date>/gallery.html                 the review page (inspector.review.gallery)

Per sample: an object already there with the same size and checksum (from one listing per date) is
skipped; otherwise it is PUT with Content-MD5 (the server refuses a corrupted body) and the returned
ETag must equal our MD5 (the server's checksum of what it stored) - for file:// the file is read
back and its size and sha256 compared. Only then does the uploader write the spool's `.uploaded`
marker and delete the jpg and txt. The sidecar stays until the date's manifest that contains it
is stored and verified, so a crash at any point loses nothing: the next run finds the markers and
writes the manifest. A failure that outlives the retries (with exponential backoff) ends the run:
nothing unverified is deleted and everything waits for the next window.

One pass per spool at a time: a pass holds `fcntl.flock` on `<spool>/.upload.lock` (it holds the
holder's pid and start time), so the in-service NightlyUploader and `inspector upload --now` (another
process) never read-merge-write a manifest at the same time, which could lose lines. The nightly
uploader skips its pass while the lock is held (tried again at its next poll); `upload --now` waits.
The lock is the kernel's: a SIGKILLed holder releases it.

A sample whose sidecar cannot be read (not JSON, not an object, no image record, another id) would
stop the night and every later night at the same place; it is moved to `<spool>/quarantine/<date>/`
with a `<id>.reason` file, raised as a `sample_quarantined` alarm, and the rest is uploaded.
Quarantined files still count against `spool.max_bytes` until somebody looks at them and deletes them.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any, Protocol

from inspector.config import InspectorConfig, UploadConfig
from inspector.errors import SpoolError
from inspector.frames import iso_utc
from inspector.kernel.durable import write_atomic
from inspector.kernel.priority import lower_thread_priority
from inspector.kernel.s3 import is_not_found, s3_client, split_s3_url
from inspector.review.gallery import make_thumbnail, render_gallery
from inspector.review.spool import Alarm, SpooledSample, iter_samples

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 60.0


class VerifyError(Exception):
    """The destination does not hold what we sent."""


class UploadFailed(Exception):
    """An object could not be stored within the retries: the run ends, nothing unverified is deleted."""


class SpoolBusy(Exception):
    """Another upload pass (this process or another) holds the spool's upload lock."""


LOCK_NAME = ".upload.lock"
QUARANTINE_DIR = "quarantine"


class SpoolLock:
    """`flock` on `<spool>/.upload.lock`: one upload pass per spool, across threads and processes (each
    holder opens the file itself, and flock locks belong to the open file description)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self, timeout_s: float | None, stop: threading.Event | None = None,
                on_wait: Callable[[str], None] | None = None) -> bool:
        """True once held; False when `timeout_s` (None: no limit) passed or `stop` was set first."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
                    os.close(fd)
                    return False
                if not waited and on_wait is not None:
                    on_wait(self.holder())
                waited = True
                # flock has no timeout: poll. A pass takes seconds to hours; 0.1 s costs nothing.
                if stop is not None:
                    stop.wait(0.1)
                else:
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {iso_utc(time.time())}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def quarantine(s: SpooledSample, why: str) -> Path:
    """Moves every file of `s` to `<spool>/quarantine/<date>/` with a `<id>.reason`; returns that folder."""
    dest = s.root / QUARANTINE_DIR / s.date
    dest.mkdir(parents=True, exist_ok=True)
    for p in (s.image, s.labels, s.marker, s.sidecar):  # the sidecar last: it makes a sample "complete"
        try:
            os.replace(p, dest / p.name)
        except FileNotFoundError:
            pass
    write_atomic(dest / f"{s.id}.reason", (why + "\n").encode())
    return dest


class BadSample(Exception):
    """A spooled sample that can never be uploaded as it is (its sidecar is unreadable)."""


def read_checked_sidecar(s: SpooledSample) -> dict[str, Any]:
    """The sidecar, checked for what the manifest needs; BadSample (with why) otherwise."""
    try:
        sidecar = json.loads(s.sidecar.read_bytes())
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSample(f"sidecar {s.sidecar.name} is not valid JSON: {e}") from e
    if not isinstance(sidecar, dict):
        raise BadSample(f"sidecar {s.sidecar.name}: expected a JSON object, got {type(sidecar).__name__}")
    if sidecar.get("id") != s.id:
        raise BadSample(f"sidecar {s.sidecar.name}: expected id {s.id!r}, got {sidecar.get('id')!r}")
    image = sidecar.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("sha256"), str):
        raise BadSample(f"sidecar {s.sidecar.name}: expected an image record with a sha256, got {image!r:.100}")
    return sidecar


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    md5: str | None  # hex; None when the destination has no cheap checksum (file://, multipart ETag)


class Destination(Protocol):
    url: str

    def key(self, rel: str) -> str: ...

    def uri(self, key: str) -> str:
        """Where a reviewer finds the object (printed in summaries)."""

    def listing(self, prefix: str) -> dict[str, ObjectInfo]: ...

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool: ...

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        """Stores and verifies; raises VerifyError / OSError / botocore errors."""

    def get(self, key: str) -> bytes | None: ...


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


class S3Destination:
    def __init__(self, bucket: str, prefix: str, cfg: UploadConfig) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        keys = {}
        if cfg.access_key is not None and cfg.secret_key is not None:
            keys = {"access_key": cfg.access_key.get_secret_value(), "secret_key": cfg.secret_key.get_secret_value()}
        # retries=1: our own retry loop (`Uploader._retry`) owns the backoff and the give-up (kernel/s3.py).
        self._client = s3_client(endpoint_url=cfg.endpoint_url, region=cfg.region, retries=1,
                                 max_connections=cfg.concurrency + 2, **keys)

    def key(self, rel: str) -> str:
        return _join(self.prefix, rel)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        out: dict[str, ObjectInfo] = {}
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                etag = o.get("ETag", "").strip('"')
                out[o["Key"]] = ObjectInfo(int(o["Size"]), None if "-" in etag else etag)
        return out

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool:
        if info.size != size:
            return False
        if info.md5 is not None:
            return info.md5 == md5
        head = self._client.head_object(Bucket=self.bucket, Key=key)
        return head.get("Metadata", {}).get("sha256") == sha256

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        resp = self._client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
            ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(), Metadata={"sha256": sha256},
        )
        etag = resp.get("ETag", "").strip('"')
        if etag != md5:
            raise VerifyError(f"{key}: expected ETag {md5} (our MD5 of {len(data)} bytes), got {etag!r}")

    def presign(self, key: str, expires_s: int) -> str:
        """A GET URL a labelling tool (or a browser) can fetch without credentials (review export)."""
        return self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                   ExpiresIn=int(expires_s))

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if is_not_found(e):
                return None
            raise


class FileDestination:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.absolute().as_uri()

    def key(self, rel: str) -> str:
        return rel

    def uri(self, key: str) -> str:
        return self._path(key).absolute().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self._path(prefix)
        out: dict[str, ObjectInfo] = {}
        if base.is_dir():
            for p in base.iterdir():
                if p.is_file() and not p.name.endswith(".tmp"):
                    out[f"{prefix}{p.name}"] = ObjectInfo(p.stat().st_size, None)
        return out

    def same(self, key: str, info: ObjectInfo, size: int, md5: str, sha256: str) -> bool:
        p = self._path(key)
        return info.size == size and hashlib.sha256(p.read_bytes()).hexdigest() == sha256

    def put(self, key: str, data: bytes, *, md5: str, sha256: str, content_type: str) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, data, tmp=p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp"), sync_dir=True)
        back = p.read_bytes()
        got = hashlib.sha256(back).hexdigest()
        if len(back) != len(data) or got != sha256:
            raise VerifyError(f"{p}: expected {len(data)} bytes sha256 {sha256}, "
                              f"read back {len(back)} bytes sha256 {got}")

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None


def open_destination(cfg: UploadConfig) -> Destination:
    d = cfg.destination
    if d.startswith("s3://"):
        return S3Destination(*split_s3_url(d), cfg)
    if d.startswith("file://"):
        rest = d[len("file://"):]
        # file:///abs -> /abs; file://rel/path -> ./rel/path (the demo default file://var/uploads)
        return FileDestination(Path(rest) if rest.startswith("/") else Path.cwd() / rest)
    raise SpoolError(f"upload.destination: expected s3://bucket[/prefix] or file://path, got {d!r}")


class Throttle:
    """Average-rate cap shared by the upload workers: each send waits for its slot of the budget."""

    def __init__(self, bytes_per_s: int, stop: threading.Event) -> None:
        self._rate = bytes_per_s
        self._stop = stop
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        if self._rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self._rate
        if start > now:
            self._stop.wait(start - now)


def _retryable(e: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        ParamValidationError,
    )

    if isinstance(e, (NoCredentialsError, ParamValidationError)):
        return False
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) or 500)
        # 4xx are our fault (no bucket, denied) except the throttling/timeout/digest ones.
        return status >= 500 or code in {"RequestTimeout", "SlowDown", "Throttling", "BadDigest", "429", "408"}
    return True  # connection refused/reset, timeouts, VerifyError, OSError


@dataclass(frozen=True)
class UploadReport:
    destination: str
    uploaded: int = 0  # samples sent this run
    skipped: int = 0  # samples whose objects were already there
    resumed: int = 0  # samples stored by an earlier, interrupted run: only their manifest lines were missing
    failed: int = 0  # samples left in the spool because the run failed or stopped
    quarantined: tuple[str, ...] = ()  # ids of samples moved to <spool>/quarantine/ (unreadable)
    bytes: int = 0  # bytes sent
    manifests: tuple[str, ...] = ()  # URIs
    galleries: tuple[str, ...] = ()  # URIs
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0

    def summary(self) -> str:
        return (f"upload to {self.destination}: uploaded {self.uploaded}, skipped {self.skipped}, "
                f"resumed {self.resumed}, failed {self.failed}, quarantined {len(self.quarantined)}, "
                f"bytes {self.bytes}, manifests {len(self.manifests)} "
                f"in {self.duration_s:.1f} s" + (f"; error: {self.error}" if self.error else ""))


@dataclass
class _Tally:
    uploaded: int = 0
    skipped: int = 0
    resumed: int = 0
    gone: int = 0
    bytes: int = 0
    manifests: list[str] = field(default_factory=list)
    galleries: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Uploader:
    """One pass over the spool. `stop` ends it early (between objects); what is left waits."""

    def __init__(self, spool_dir: Path, cfg: UploadConfig, *, destination: Destination | None = None,
                 stop: threading.Event | None = None, gallery: bool = True,
                 today: Callable[[], str] | None = None, alarm: Alarm | None = None) -> None:
        self.root = Path(spool_dir)
        self._alarm = alarm
        self.cfg = cfg
        self.dest = destination if destination is not None else open_destination(cfg)
        self._stop = stop if stop is not None else threading.Event()
        self._abort = threading.Event()
        self._gallery = gallery
        self._today = today or (lambda: datetime.now(UTC).strftime("%Y-%m-%d"))
        self._throttle = Throttle(cfg.bandwidth_bytes_per_s, self._stop)

    # -- retries --------------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        attempts = self.cfg.retries + 1
        for i in range(attempts):
            if self._stop.is_set() or (self._abort.is_set() and i > 0):
                raise UploadFailed(f"{what}: stopped")
            try:
                return fn()
            except Exception as e:
                if not _retryable(e) or i == attempts - 1:
                    raise UploadFailed(f"{what}: {type(e).__name__}: {e} (attempt {i + 1} of {attempts})") from e
                delay = min(_MAX_BACKOFF_S, self.cfg.backoff_s * 2**i)
                log.warning("upload %s failed (%s); retry %d of %d in %.1f s", what, e, i + 1, attempts - 1, delay)
                self._stop.wait(delay)
        raise AssertionError("unreachable")

    def _put(self, key: str, data: bytes, content_type: str, tally: _Tally) -> None:
        md5 = hashlib.md5(data).hexdigest()
        sha = hashlib.sha256(data).hexdigest()
        self._throttle.acquire(len(data))
        self._retry(lambda: self.dest.put(key, data, md5=md5, sha256=sha, content_type=content_type), f"put {key}")
        with tally.lock:
            tally.bytes += len(data)

    # -- one sample -----------------------------------------------------------------------------
    def _line(self, s: SpooledSample, sidecar: dict[str, Any], sha: str) -> dict[str, Any]:
        rel = f"{s.date}/{sha}"
        return {**sidecar, "image_key": self.dest.key(rel + ".jpg"), "labels_key": self.dest.key(rel + ".txt"),
                "image_sha256": sha, "uploaded_at": iso_utc(time.time())}

    def _upload_one(self, s: SpooledSample, listing: dict[str, ObjectInfo], tally: _Tally,
                    thumbs: dict[str, bytes]) -> dict[str, Any] | None:
        if self._abort.is_set() or self._stop.is_set():
            return None
        try:
            sidecar = read_checked_sidecar(s)
            jpg = s.image.read_bytes()
            txt = s.labels.read_bytes()
        except FileNotFoundError:  # evicted by the spool meanwhile (counted and alarmed there)
            with tally.lock:
                tally.gone += 1
            return None
        except BadSample as e:
            self._quarantine(s, str(e), tally)
            return None
        except OSError as e:  # EIO, EACCES: this sample cannot be read; the others can
            self._quarantine(s, f"cannot read its files: {type(e).__name__}: {e}", tally)
            return None
        sha = hashlib.sha256(jpg).hexdigest()
        if sha != sidecar.get("image", {}).get("sha256"):
            log.error("spool sample %s: jpg sha256 %s differs from its sidecar's %s (disk corruption?); "
                      "uploading what is on disk", s.id, sha, sidecar.get("image", {}).get("sha256"))
        line = self._line(s, sidecar, sha)
        sent = False
        for key, data, ctype in ((line["image_key"], jpg, "image/jpeg"), (line["labels_key"], txt, "text/plain")):
            info = listing.get(key)
            # partial, not a lambda: the call binds this iteration's key/info/data (`_retry` calls it at once)
            if info is not None and self._retry(
                    functools.partial(self.dest.same, key, info, len(data), hashlib.md5(data).hexdigest(),
                                      hashlib.sha256(data).hexdigest()), f"check {key}"):
                continue
            self._put(key, data, ctype, tally)
            sent = True
        if self._gallery:
            thumb = make_thumbnail(jpg)
            if thumb is not None:
                thumbs[sha] = thumb
        # Verified: only now may the local copy go. The sidecar stays until the manifest holds it.
        s.mark_uploaded()
        s.drop_payload()
        with tally.lock:
            if sent:
                tally.uploaded += 1
            else:
                tally.skipped += 1
        return line

    def _quarantine(self, s: SpooledSample, why: str, tally: _Tally) -> None:
        try:
            where = quarantine(s, why)
        except OSError as e:  # cannot even move it: left in place, the night goes on without it
            log.error("spool sample %s is unreadable (%s) and cannot be quarantined: %s", s.id, why, e)
            where = None
        log.error("spool sample %s quarantined to %s: %s", s.id, where, why)
        with tally.lock:
            tally.quarantined.append(s.id)
        if self._alarm is not None:
            try:
                self._alarm("sample_quarantined", {"id": s.id, "date": s.date, "why": why,
                                                   "moved_to": str(where) if where else None})
            except Exception:  # an alarm path must not stop the night
                log.exception("sample_quarantined alarm failed")

    # -- one date -------------------------------------------------------------------------------
    def _finish_date(self, date: str, done: list[tuple[SpooledSample, dict[str, Any]]], tally: _Tally,
                     thumbs: dict[str, bytes], pool: ThreadPoolExecutor) -> None:
        mkey = self.dest.key(f"{date}/manifest.jsonl")
        old = self._retry(lambda: self.dest.get(mkey), f"get {mkey}")
        merged: dict[str, dict[str, Any]] = {}
        for raw in (old or b"").splitlines():
            try:
                rec = json.loads(raw)
                merged[rec["id"]] = rec
            except (ValueError, KeyError, TypeError):
                log.error("manifest %s: unreadable line dropped from the merge: %r", mkey, raw[:200])
        for _, line in done:
            merged.setdefault(line["id"], line)  # already there after a crash: keep the stored line
        entries = sorted(merged.values(), key=lambda r: (r.get("captured_wall", 0.0), r["id"]))
        body = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in entries).encode()
        self._put(mkey, body, "application/x-ndjson", tally)
        with tally.lock:
            tally.manifests.append(self.dest.uri(mkey))
        if self._gallery:
            missing = [r for r in entries if r.get("image_sha256") not in thumbs and r.get("image_key")]

            def fetch(r: dict[str, Any]) -> None:
                data = self._retry(lambda: self.dest.get(r["image_key"]), f"get {r['image_key']}")
                t = make_thumbnail(data) if data else None
                if t is not None:
                    thumbs[r["image_sha256"]] = t

            # Thumbnails of samples sent by an earlier run of this date come back from the destination.
            list(pool.map(fetch, missing))
            gkey = self.dest.key(f"{date}/gallery.html")
            html = render_gallery(f"inspector review {date}", entries, thumbs).encode()
            self._put(gkey, html, "text/html; charset=utf-8", tally)
            with tally.lock:
                tally.galleries.append(self.dest.uri(gkey))
        for s, _ in done:
            s.remove()
        if date < self._today():
            try:
                (self.root / date).rmdir()
            except OSError:
                pass  # not empty: a sample arrived or is left for the next run

    # -- the pass -------------------------------------------------------------------------------
    def run(self, lock_timeout_s: float | None = 0.0, on_wait: Callable[[str], None] | None = None) -> UploadReport:
        """One pass under the spool's upload lock. `lock_timeout_s`: how long to wait for another pass to
        finish (None: as long as it takes); SpoolBusy (naming the holder) when it did not."""
        if not self.root.is_dir():
            return UploadReport(destination=self.dest.url)
        lock = SpoolLock(self.root)
        if not lock.acquire(lock_timeout_s, self._stop, on_wait):
            raise SpoolBusy(f"spool {self.root} is being uploaded by another pass ({lock.holder()})")
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> UploadReport:
        t0 = time.monotonic()
        by_date: dict[str, list[SpooledSample]] = defaultdict(list)
        for s in iter_samples(self.root):
            by_date[s.date].append(s)
        total = sum(len(v) for v in by_date.values())
        tally = _Tally()
        error: str | None = None
        thumbs: dict[str, bytes] = {}
        with ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="upload") as pool:
            for date in sorted(by_date):
                if self._stop.is_set():
                    error = error or "stopped"
                    break
                thumbs.clear()  # one date's thumbnails at a time bounds memory
                done: list[tuple[SpooledSample, dict[str, Any]]] = []
                todo: list[SpooledSample] = []
                for s in by_date[date]:
                    if not s.uploaded:
                        todo.append(s)
                        continue
                    # Sent and verified by an earlier run that did not finish: only the manifest is left.
                    try:
                        sidecar = read_checked_sidecar(s)
                    except FileNotFoundError:
                        continue
                    except BadSample as e:
                        self._quarantine(s, str(e), tally)
                        continue
                    s.drop_payload()
                    done.append((s, self._line(s, sidecar, sidecar["image"]["sha256"])))
                    tally.resumed += 1
                try:
                    listing: dict[str, ObjectInfo] = {}
                    if todo:
                        listing = self._retry(functools.partial(self.dest.listing, self.dest.key(f"{date}/")),
                                              f"list {date}")
                    futures = [(s, pool.submit(self._upload_one, s, listing, tally, thumbs)) for s in todo]
                    for s, f in futures:
                        try:
                            line = f.result()
                        except UploadFailed as e:
                            self._abort.set()  # the others stop before their next object
                            error = error or str(e)
                            continue
                        except Exception as e:  # a bug or an unreadable sidecar: keep the sample, go on
                            log.exception("upload of %s failed", s.id)
                            error = error or f"{s.id}: {type(e).__name__}: {e}"
                            continue
                        if line is not None:
                            done.append((s, line))
                    if error is None and done:
                        self._finish_date(date, done, tally, thumbs, pool)
                except UploadFailed as e:
                    error = error or str(e)
                if error is not None:
                    # A night that fails leaves everything for the next window.
                    self._abort.set()
                    break
        failed = total - tally.uploaded - tally.skipped - tally.resumed - tally.gone - len(tally.quarantined)
        return UploadReport(
            destination=self.dest.url, uploaded=tally.uploaded, skipped=tally.skipped, resumed=tally.resumed,
            failed=failed if error else 0, quarantined=tuple(tally.quarantined), bytes=tally.bytes,
            manifests=tuple(tally.manifests),
            galleries=tuple(tally.galleries), error=error, duration_s=time.monotonic() - t0,
        )


def upload_now(cfg: InspectorConfig) -> int:
    """`inspector upload --now`: one pass, a summary line, exit 0 when everything was stored, else 1.
    Waits while another pass (the service's nightly uploader) holds the spool; runs at the background
    priority (a line PC's inference keeps the CPU)."""
    import sys

    from inspector.kernel.priority import lower_thread_priority

    lower_thread_priority("upload --now", cfg.background)

    def waiting(holder: str) -> None:
        print(f"upload: another upload pass holds {Path(cfg.spool.dir) / LOCK_NAME} ({holder}); waiting for it",
              file=sys.stderr, flush=True)

    def alarm(kind: str, detail: dict[str, Any]) -> None:
        print(f"{kind}: {detail['id']} ({detail['why']}) -> {detail['moved_to']}", file=sys.stderr, flush=True)

    rep = Uploader(cfg.spool.dir, cfg.upload, alarm=alarm).run(lock_timeout_s=None, on_wait=waiting)
    print(rep.summary())
    for m in rep.manifests:
        print(f"manifest {m}")
    for g in rep.galleries:
        print(f"gallery  {g}")
    return 0 if rep.ok else 1


# -- inside the service -------------------------------------------------------------------------
def parse_window(window: str) -> tuple[dtime, dtime]:
    try:
        a, b = window.split("-")
        start, end = dtime.fromisoformat(a), dtime.fromisoformat(b)
    except ValueError as e:
        raise SpoolError(f"upload.window: expected HH:MM-HH:MM, got {window!r}") from e
    return start, end


def in_window(t: dtime, start: dtime, end: dtime) -> bool:
    """[start, end) in local time; crossing midnight (22:00-02:00) allowed; start == end: all day."""
    if start < end:
        return start <= t < end
    if start > end:
        return t >= start or t < end
    return True


class NightlyUploader:
    """Runs upload passes while the local time is inside `upload.window`, every `repass_s`."""

    name = "uploader"

    def __init__(self, config: InspectorConfig, *, now: Callable[[], datetime] | None = None,
                 poll_s: float = 30.0, repass_s: float = 600.0, destination: Destination | None = None,
                 alarm: Alarm | None = None) -> None:
        self.root = Path(config.spool.dir)
        self._alarm = alarm
        self.cfg = cfg = config.upload
        self._window = parse_window(cfg.window) if cfg.window else None
        self._now = now or (lambda: datetime.now().astimezone())
        self._poll_s = poll_s
        self._repass_s = repass_s
        self._destination = destination
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._lock = threading.Lock()
        self._passes = 0
        self._last: UploadReport | None = None
        self._last_pass_at: float | None = None
        self._in_window = False
        self._error: str | None = None
        self._busy = 0  # passes skipped because another pass held the spool
        self._polls = 0  # window checks made (tests wait on it instead of sleeping)
        self.priority: str | None = None  # what lower_thread_priority did for the uploader thread

    def start(self) -> None:
        if self._window is None:
            log.info("upload: no window configured; in-service upload is off (use `inspector upload --now`)")
            return
        self._thread.start()

    def _due(self) -> bool:
        assert self._window is not None
        inside = in_window(self._now().time(), *self._window)
        with self._lock:
            self._in_window = inside
            self._polls += 1
        if not inside:
            self._last_pass_at = None  # the next window starts with a pass
            return False
        return self._last_pass_at is None or time.monotonic() - self._last_pass_at >= self._repass_s

    def _run(self) -> None:
        # Hashing, thumbnails and TLS must yield the CPU to the frame path; the pool threads a pass
        # starts inherit this thread's priority.
        self.priority = lower_thread_priority("uploader")
        while not self._stop.is_set():
            if self._due():
                self._last_pass_at = time.monotonic()
                try:
                    rep = Uploader(self.root, self.cfg, destination=self._destination, stop=self._stop,
                                   alarm=self._alarm).run(lock_timeout_s=0.0)
                    log.info("%s", rep.summary())
                    with self._lock:
                        self._last, self._passes, self._error = rep, self._passes + 1, rep.error
                except SpoolBusy as e:  # `upload --now` is at it: try again at the next poll
                    log.info("upload pass skipped: %s", e)
                    self._last_pass_at = None
                    with self._lock:
                        self._busy += 1
                except Exception as e:  # the line keeps running; the next pass retries
                    log.exception("upload pass failed")
                    with self._lock:
                        self._error = f"{type(e).__name__}: {e}"
            self._stop.wait(self._poll_s)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"window": self.cfg.window, "in_window": self._in_window, "passes": self._passes,
                    "skipped_busy": self._busy, "polls": self._polls,
                    "last": asdict(self._last) if self._last else None, "error": self._error}
