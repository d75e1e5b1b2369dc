"""One upload pass: the spool's samples to the destination, verified, resumable, with retries.

Keys derive from content, so a retry can never duplicate a sample:
  <prefix>/<date>/<sha256 of the jpg>.jpg      the frame
  <prefix>/<date>/<sha256 of the jpg>.txt      YOLO pre-labels (same stem: labelling tools pair them)
  <prefix>/<date>/manifest.jsonl               one line per sample of that capture date: the sidecar
                                               plus the object keys (a "night" is the capture date's
                                               batch; later runs for the same date merge into it)
  <prefix>/<date>/gallery.html                 the review page (inspector.review.gallery)

Per sample: an object already there with the same size and checksum (from one listing per date) is
skipped; otherwise it is PUT and verified (backends.py). Only then does the uploader write the spool's
`.uploaded` marker and delete the jpg and txt. The sidecar stays until the date's manifest that contains it
is stored and verified, so a crash at any point loses nothing: the next run finds the markers and
writes the manifest. A failure that outlives the retries (with exponential backoff) ends the run:
nothing unverified is deleted and everything waits for the next window.

A pass runs under the spool's upload lock (lock.py); an unreadable sample is quarantined (quarantine.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.config import UploadConfig
from inspector.frames import iso_utc
from inspector.review.gallery import make_thumbnail, render_gallery
from inspector.review.spool import Alarm, SpooledSample, iter_samples
from inspector.review.upload.backends import Destination, ObjectInfo, open_destination
from inspector.review.upload.lock import SpoolBusy, SpoolLock
from inspector.review.upload.quarantine import BadSample, quarantine, read_checked_sidecar

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 60.0


class UploadFailed(Exception):
    """An object could not be stored within the retries: the run ends, nothing unverified is deleted."""


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
