"""The bounded on-disk store of sampled frames, and the sink that feeds it from the pipeline.

Layout (dates are the UTC date of capture):

    DIR/YYYY-MM-DD/<id>.jpg        the frame (JPEG, quality from config)
    DIR/YYYY-MM-DD/<id>.txt        pre-labels of the defects + uncertain, in the model kind's format
                                   (`Findings.prelabels`; detect: YOLO `class cx cy w h` normalized)
    DIR/YYYY-MM-DD/<id>.json       sidecar: detections, verdict, sampling reasons, model, config hash
    DIR/YYYY-MM-DD/<id>.uploaded   0-byte marker written by the uploader once jpg+txt are verified

Every file is written atomically (temp file, fsync, rename) and the sidecar last, so a sample is
complete iff its `.json` exists. `Spool.open()` removes what a crash leaves behind: temp files,
jpg/txt without a sidecar, markers without a sidecar.

`max_bytes` is a hard bound on the sum of the sizes of all files under DIR: the encoded sample is
measured in memory first, then the oldest samples are evicted until it fits, then it is written.
The uploader (possibly another process) only ever deletes files or writes 0-byte markers, so it can
only make the real usage smaller than the spool's count; the spool rescans the disk before it
evicts, so uploaded space is reused instead of evicting. Evicting a sample without a marker loses a
frame nobody has seen: it is counted and alarmed.

Encoding and writing run on a writer thread behind a bounded queue (`SamplingSink`); a full queue
drops the sample and counts it. A full disk (ENOSPC) is counted and alarmed; the line keeps running.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from inspector.config import SamplingConfig, SpoolConfig
from inspector.frames import ModelInfo, Verdict, findings_kind, iso_utc
from inspector.kernel.alarms import AlarmThrottle
from inspector.kernel.durable import TMP_SUFFIX, create_synced, fsync_path, write_atomic
from inspector.kernel.priority import lower_thread_priority
from inspector.records import verdict_record
from inspector.review.sampler import SampleDecision, Sampler

log = logging.getLogger(__name__)

Alarm = Callable[[str, dict[str, Any]], None]

SIDECAR_SCHEMA_VERSION = 1
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SAMPLE_SUFFIXES = (".jpg", ".txt", ".json", ".uploaded")


# -- the on-disk layout, shared with the uploader ---------------------------------------------
@dataclass(frozen=True, slots=True)
class SpooledSample:
    """One complete sample on disk (its sidecar exists)."""

    root: Path
    date: str
    id: str

    def path(self, suffix: str) -> Path:
        return self.root / self.date / f"{self.id}{suffix}"

    @property
    def image(self) -> Path:
        return self.path(".jpg")

    @property
    def labels(self) -> Path:
        return self.path(".txt")

    @property
    def sidecar(self) -> Path:
        return self.path(".json")

    @property
    def marker(self) -> Path:
        return self.path(".uploaded")

    @property
    def uploaded(self) -> bool:
        return self.marker.exists()

    def read_sidecar(self) -> dict[str, Any]:
        return json.loads(self.sidecar.read_bytes())

    def mark_uploaded(self) -> None:
        """Called by the uploader once the image and labels are verified at the destination."""
        create_synced(self.marker)

    def drop_payload(self) -> None:
        """After upload: frees the image and labels; the sidecar and marker stay until the manifest is stored."""
        for p in (self.image, self.labels):
            p.unlink(missing_ok=True)

    def remove(self) -> None:
        # Sidecar first: a crash half-way leaves an incomplete sample, which open() cleans.
        for p in (self.sidecar, self.labels, self.image, self.marker):
            p.unlink(missing_ok=True)


def iter_samples(root: Path) -> Iterator[SpooledSample]:
    """Complete samples, oldest first (dates, then ids, which start with the capture time)."""
    root = Path(root)
    if not root.is_dir():
        return
    for date_dir in sorted(p for p in root.iterdir() if p.is_dir() and _DATE_RE.match(p.name)):
        try:
            names = sorted(os.listdir(date_dir))
        except FileNotFoundError:  # removed by the uploader meanwhile
            continue
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                yield SpooledSample(root, date_dir.name, name[: -len(".json")])


def disk_usage(root: Path) -> int:
    """Sum of the sizes of every file under root: what max_bytes bounds."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


# -- what a sample contains --------------------------------------------------------------------
def sample_id(verdict: Verdict) -> str:
    """`YYYYMMDD-HHMMSSmmm-f<frame_id>-<rand>`: sorts by capture time; the random part keeps ids of
    different runs (frame ids restart) apart."""
    t = datetime.fromtimestamp(verdict.frame.captured_wall, tz=UTC)
    return f"{t:%Y%m%d-%H%M%S}{t.microsecond // 1000:03d}-f{verdict.frame_id:08d}-{secrets.token_hex(3)}"


def sidecar_record(verdict: Verdict, decision: SampleDecision, *, sid: str, date: str, image: dict[str, Any],
                   config_hash: str, sampled_wall: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar: the sample's own fields around `records.verdict_record` of its verdict. `extra`
    adds fields of the sampling reason (`shadow`: the shadow model's judgement of the frame)."""
    rec = verdict_record(verdict)
    return {
        **(extra or {}),
        "schema_version": SIDECAR_SCHEMA_VERSION,
        "id": sid,
        "date": date,
        "frame_id": rec["frame_id"],
        "part_id": rec["part_id"],
        "captured_at": rec["captured_at"],
        "captured_wall": rec["captured_wall"],
        "sampled_at": iso_utc(sampled_wall),
        "reason": decision.reason,
        "reasons": list(decision.reasons),
        "dhash": f"{decision.dhash:016x}",
        "verdict": {"outcome": rec["verdict"], "actuate": rec["actuate"], "reason": rec["reason"],
                    "error": rec["error"], "latency_ms": rec["latency_ms"]},
        "defects": rec["defects"],
        "uncertain": rec["uncertain"],
        # classify: every class's probability (the reviewer's and the retraining's view of the margin)
        **({"class_scores": rec["class_scores"]} if "class_scores" in rec else {}),
        "image": image,
        "labels": {"file": f"{sid}.txt", "format": findings_kind(verdict.task).label_format},
        "model": rec["model"],
        "config_hash": config_hash,
    }


@dataclass(frozen=True, slots=True)
class _Encoded:
    date: str
    sid: str
    jpg: bytes
    txt: bytes
    sidecar: bytes

    @property
    def nbytes(self) -> int:
        return len(self.jpg) + len(self.txt) + len(self.sidecar)


# -- the store ----------------------------------------------------------------------------------
class Spool:
    """Bounded store. `write()` is synchronous and called from one thread (SamplingSink's writer)."""

    def __init__(self, cfg: SpoolConfig, *, alarm: Alarm, config_hash: str = "",
                 alarm_interval_s: float = 60.0, rescan_min_s: float = 1.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.root = Path(cfg.dir)
        self._config_hash = config_hash
        self._rescan_min_s = rescan_min_s
        self._wall = wall_clock
        self._lock = threading.Lock()  # the index is read by state() from other threads
        self._order: list[tuple[str, str]] = []  # (date, id), oldest first
        self._sizes: dict[tuple[str, str], int] = {}
        self._used = 0
        self._last_scan = float("-inf")
        self._counts: Counter[str] = Counter()
        # A full spool evicts on every write: at most one alarm per kind and interval.
        self._alarms = AlarmThrottle(alarm, alarm_interval_s)

    # -- start ----------------------------------------------------------------------------------
    def open(self) -> dict[str, int]:
        """Creates DIR, cleans crash leftovers, indexes what is there. Returns what was cleaned."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from inspector.errors import SpoolError

            raise SpoolError(f"spool dir {self.root}: expected a writable directory, got {e}") from e
        cleaned = Counter()
        for date_dir in [p for p in self.root.iterdir() if p.is_dir() and _DATE_RE.match(p.name)]:
            names = os.listdir(date_dir)
            stems: dict[str, set[str]] = {}
            for name in names:
                p = date_dir / name
                if name.endswith(TMP_SUFFIX):
                    p.unlink(missing_ok=True)
                    cleaned["temp_files"] += 1
                    continue
                stem, ext = os.path.splitext(name)
                if ext in _SAMPLE_SUFFIXES:
                    stems.setdefault(stem, set()).add(ext)
            for stem, exts in stems.items():
                if ".json" in exts:
                    continue
                # No sidecar: a write that never finished, or an uploaded sample whose clean-up was
                # cut short. Either way nothing here is needed.
                for ext in exts:
                    (date_dir / f"{stem}{ext}").unlink(missing_ok=True)
                cleaned["incomplete_samples"] += 1
            try:
                date_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass
        self._rescan()
        if cleaned:
            log.warning("spool %s: cleaned crash leftovers %s", self.root, dict(cleaned))
        return dict(cleaned)

    def _rescan(self) -> None:
        """Rebuilds the index from the disk (the uploader may have freed space meanwhile)."""
        order: list[tuple[str, str]] = []
        sizes: dict[tuple[str, str], int] = {}
        used = 0
        for dirpath, _, files in os.walk(self.root):
            date = os.path.basename(dirpath)
            in_date_dir = os.path.dirname(dirpath) == str(self.root) and _DATE_RE.match(date)
            for name in files:
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue
                used += size
                stem, ext = os.path.splitext(name)
                if in_date_dir and ext in _SAMPLE_SUFFIXES:
                    key = (date, stem)
                    sizes[key] = sizes.get(key, 0) + size
                    if ext == ".json":
                        order.append(key)
        # Files of samples without a sidecar (being written elsewhere, or being deleted) count in
        # `used` but are not evictable.
        order.sort()
        with self._lock:
            self._order = order
            self._sizes = {k: sizes[k] for k in order}
            self._used = used
        self._last_scan = time.monotonic()

    # -- write ----------------------------------------------------------------------------------
    def encode(self, verdict: Verdict, decision: SampleDecision, extra: dict[str, Any] | None = None) -> _Encoded:
        img = verdict.frame.image
        h, w = img.shape[:2]
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for frame {verdict.frame_id} (shape {img.shape})")
        jpg = buf.tobytes()
        sid = sample_id(verdict)
        date = datetime.fromtimestamp(verdict.frame.captured_wall, tz=UTC).strftime("%Y-%m-%d")
        image = {"file": f"{sid}.jpg", "width": int(w), "height": int(h), "bytes": len(jpg),
                 "sha256": hashlib.sha256(jpg).hexdigest(), "jpeg_quality": self.cfg.jpeg_quality}
        txt = findings_kind(verdict.task).prelabels(verdict.defects + verdict.uncertain, w, h).encode()
        record = sidecar_record(verdict, decision, sid=sid, date=date, image=image,
                                config_hash=self._config_hash, sampled_wall=self._wall(), extra=extra)
        return _Encoded(date, sid, jpg, txt, json.dumps(record, separators=(",", ":")).encode())

    def write(self, verdict: Verdict, decision: SampleDecision,
              extra: dict[str, Any] | None = None) -> SpooledSample | None:
        """Encodes and stores one sample within the bound. None when it was not stored (counted)."""
        enc = self.encode(verdict, decision, extra)
        need = enc.nbytes
        if need > self.cfg.max_bytes:
            self._counts["dropped_too_large"] += 1
            log.error("spool: sample of %d bytes can never fit max_bytes=%d; dropped", need, self.cfg.max_bytes)
            return None
        if not self._make_room(need):
            self._counts["dropped_no_room"] += 1
            self._raise("spool_full", {"dir": str(self.root), "needed_bytes": need, "used_bytes": self._used,
                                       "max_bytes": self.cfg.max_bytes})
            return None
        date_dir = self.root / enc.date
        written: list[Path] = []
        try:
            date_dir.mkdir(parents=True, exist_ok=True)
            for suffix, data in ((".jpg", enc.jpg), (".txt", enc.txt), (".json", enc.sidecar)):
                p = date_dir / f"{enc.sid}{suffix}"
                write_atomic(p, data)
                written.append(p)
            fsync_path(date_dir)
        except OSError as e:
            for p in reversed(written):  # never leave a half sample behind
                p.unlink(missing_ok=True)
            self._counts["write_errors"] += 1
            kind = "spool_disk_full" if e.errno == errno.ENOSPC else "spool_write_failed"
            self._raise(kind, {"dir": str(self.root), "error": str(e)})
            return None
        key = (enc.date, enc.sid)
        with self._lock:
            if not self._order or key >= self._order[-1]:
                self._order.append(key)
            else:  # a frame captured earlier than the newest stored one (clock step, slow writer)
                bisect.insort(self._order, key)
            self._sizes[key] = need
            self._used += need
        self._counts["written"] += 1
        return SpooledSample(self.root, enc.date, enc.sid)

    def _make_room(self, need: int) -> bool:
        if self._used + need <= self.cfg.max_bytes:
            return True
        if time.monotonic() - self._last_scan >= self._rescan_min_s:
            self._rescan()  # uploads may have freed space: reuse it rather than evict
        while self._used + need > self.cfg.max_bytes and self._order:
            self._evict_oldest()
        return self._used + need <= self.cfg.max_bytes

    def _evict_oldest(self) -> None:
        with self._lock:
            key = self._order.pop(0)
            self._sizes.pop(key, None)
        s = SpooledSample(self.root, *key)
        freed = 0
        present = False
        # `s.marker` builds a new Path on every access, so an identity test (`p is not s.marker`)
        # was always true and a sample the uploader had already removed (only its 0-byte marker
        # left) was counted as evicted. Compare the files themselves.
        marker = s.marker
        for p in (s.sidecar, s.labels, s.image, marker):
            try:
                freed += p.stat().st_size
            except FileNotFoundError:
                continue
            if p != marker:
                present = True
        if not present:  # the uploader finished with it meanwhile: nothing was lost
            marker.unlink(missing_ok=True)  # an orphan marker (its clean-up was cut short)
            with self._lock:
                self._used -= freed
            return
        uploaded = s.uploaded
        s.remove()
        with self._lock:
            self._used -= freed
        self._counts["evicted"] += 1
        if not uploaded:
            self._counts["evicted_unuploaded"] += 1
            self._raise("spool_evicted_unuploaded", {"dir": str(self.root), "last_id": s.id, "date": s.date})
        if not any(k[0] == s.date for k in self._order[:1]):
            try:
                (self.root / s.date).rmdir()
            except OSError:
                pass

    # -- alarms and state ----------------------------------------------------------------------
    def _raise(self, kind: str, detail: dict[str, Any]) -> None:
        self._alarms.raise_alarm(kind, detail)

    def flush_alarms(self) -> None:
        """Delivers throttled alarm counts (at stop)."""
        self._alarms.flush()

    @property
    def used_bytes(self) -> int:
        return self._used

    def state(self) -> dict[str, Any]:
        with self._lock:
            n = len(self._order)
            used = self._used
        return {"samples": n, "bytes": used, "max_bytes": self.cfg.max_bytes, **dict(self._counts)}


# -- the pipeline sink --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Job:
    verdict: Verdict
    decision: SampleDecision
    extra: dict[str, Any] | None = None


class SamplingSink:
    """VerdictSink: samples on the calling (frame) thread, encodes and writes on its own thread."""

    name = "sampling"

    def __init__(self, sampling: SamplingConfig, spool: SpoolConfig, *, model: ModelInfo, config_hash: str,
                 alarm: Alarm, clock: Callable[[], float] = time.monotonic, rng=None,
                 alarm_interval_s: float = 60.0) -> None:
        self.model = model  # the verdicts carry their own model; this one is for state()
        self.sampler = Sampler(sampling, clock=clock, rng=rng)
        self.spool = Spool(spool, alarm=alarm, config_hash=config_hash, alarm_interval_s=alarm_interval_s)
        self._q: queue.Queue[_Job] = queue.Queue(maxsize=spool.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-sampling", daemon=True)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        # The sampler has one caller at a time: the post thread (submit) and the shadow's thread
        # (submit_shadow) take turns under this lock (uncontended: ~0.1 us per verdict).
        self._sample_lock = threading.Lock()
        self._started = False
        self.priority: str | None = None  # what lower_thread_priority did for the writer thread

    def start(self) -> None:
        self.spool.open()
        self._thread.start()
        self._started = True

    def submit(self, verdict: Verdict) -> None:
        if verdict.frame.image is None:
            # A part whose image the source dropped (queue_full): nothing to review, and no JPEG to
            # encode. Counted, so the sampler's totals still add up.
            with self._lock:
                self._counts["no_image"] += 1
            return
        self._offer(verdict, self.sampler.consider)

    def submit_shadow(self, verdict: Verdict, shadow: dict[str, Any]) -> None:
        """A frame the shadow model judged differently from the active one (`verdict`): sampled with
        reason shadow_disagree; the sidecar's `shadow` holds the shadow model's judgement. Any thread."""
        if verdict.frame.image is not None:
            self._offer(verdict, self.sampler.consider_shadow, {"shadow": shadow})

    def _offer(self, verdict: Verdict, consider, extra: dict[str, Any] | None = None) -> None:
        try:
            with self._sample_lock:
                decision = consider(verdict)
        except Exception:  # sampling is best effort: it must never cost the line a verdict
            log.exception("sampler failed on frame %s", verdict.frame_id)
            with self._lock:
                self._counts["sampler_errors"] += 1
            return
        if decision is None:
            return
        try:
            # The frame is immutable and only read by the writer: no copy.
            self._q.put_nowait(_Job(verdict, decision, extra))
            with self._lock:
                self._counts["queued"] += 1
        except queue.Full:
            with self._lock:
                self._counts["dropped_queue_full"] += 1

    def _run(self) -> None:
        # JPEG encoding and fsync must yield the CPU to the frame path (kernel/priority.py).
        self.priority = lower_thread_priority("spool writer")
        while not self._stop.is_set():
            try:
                job = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._write(job)
            finally:
                self._q.task_done()

    def _write(self, job: _Job) -> None:
        try:
            self.spool.write(job.verdict, job.decision, job.extra)
        except Exception:
            log.exception("spool: writing frame %s failed", job.verdict.frame_id)
            with self._lock:
                self._counts["write_failures"] += 1

    def drain(self, timeout: float = 10.0) -> bool:
        """Waits until every queued sample is written (tests, shutdown). True if the queue emptied."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._q.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        # The writer stopped: write what is still queued while time is left, count the rest. If it
        # is still busy (a slow disk), it keeps the spool to itself: the index has one writer.
        while not self._thread.is_alive() and time.monotonic() < deadline:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            self._write(job)
            self._q.task_done()
        lost = 0
        while not self._thread.is_alive():
            try:
                self._q.get_nowait()
                self._q.task_done()
                lost += 1
            except queue.Empty:
                break
        if lost:
            with self._lock:
                self._counts["dropped_at_stop"] += lost
            log.warning("spool: %d sampled frames not written before stop", lost)
        self.spool.flush_alarms()

    def state(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        return {**self.sampler.state(), **counts, "queue": self._q.qsize(), **self.spool.state()}
