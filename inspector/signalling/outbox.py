"""Durable, bounded SQLite queue of messages (rejects, alarms) not yet acknowledged by the broker.

One responsibility: storage. It knows nothing of MQTT; the publisher decides what to send, and
tells the outbox what was acknowledged. A row is written before it is published and deleted only
on a successful acknowledgement, so a broker outage or a `kill -9` of the process loses nothing
that was committed.

Durability choice: WAL journal with `synchronous=NORMAL`. A committed transaction is in the OS
page cache, so it survives the death of this process (the failure the outbox exists for) and a
broker outage. It may roll back the commits since the last checkpoint on a power cut (the
publisher checkpoints every second: `checkpoint()`); FULL would fsync every commit (2-4 ms
measured here, 1-20 ms on industrial flash, and its wear) to cover that case, but a power cut also
stops the line for longer than any reject's deadline, so every row it could lose would only have
become an alarm, and parts in flight around a power cut are quarantined by line procedure anyway.

Expiry: a reject row carries its deadline (UTC epoch seconds). `expire()` turns rejects that can
no longer be delivered in time into alarm rows in the same transaction, so a crash can never
leave a reject that is neither queued nor alarmed. Alarm rows never expire.

Bound: at most `max_rows` rows. When a new row does not fit, the OLDEST rows are evicted (the
newest reject is the only one that can still actuate in time; the oldest rows describe parts long
gone) and folded into one `overflow` row: a durable summary with the number of evicted rows, their
time range and a sample of their ids. Nothing leaves the outbox without a trace. The overflow row
is outside the bound (there is at most one pending at a time).

Thread use: two writers, serialised by a lock around every method. The publisher thread commits
what `MqttPublisher.submit` put in the reject journal (`journal.py`) right after publishing it, and
does everything else; `submit` commits on the caller's thread only where the journal cannot take the
reject (none configured, full, the row too big). One
connection (`check_same_thread=False`) behind the lock keeps the cached depth exact; SQLite's own
file locking would serialise two connections the same way, with a busy-wait instead of a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import PublishError

REJECT = "reject"
ALARM = "alarm"
OVERFLOW = "overflow"  # the summary of evicted rows; published as an `outbox_full` alarm
KINDS = (REJECT, ALARM, OVERFLOW)
_SAMPLE = 100  # evicted ids kept by name in the overflow summary; the count covers the rest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order; AUTOINCREMENT: never reused
    id       TEXT NOT NULL UNIQUE,               -- the message id, stable across re-sends
    kind     TEXT NOT NULL CHECK (kind IN ('reject', 'alarm', 'overflow')),
    payload  TEXT NOT NULL,                      -- the exact bytes published (JSON)
    deadline REAL,                               -- UTC epoch s; NULL: never expires
    created  REAL NOT NULL,
    ref      TEXT                                -- short human reference (part id) for summaries
);
CREATE INDEX IF NOT EXISTS outbox_deadline ON outbox(deadline) WHERE deadline IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    id: str
    kind: str
    payload: str
    deadline: float | None
    created: float
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class NewRow:
    """A row to be added; `seq` and `created` are assigned by the outbox."""

    id: str
    kind: str
    payload: str
    deadline: float | None = None
    ref: str | None = None


# Builds the payload of the overflow row from its summary dict (the publisher makes it an alarm).
OverflowPayload = Callable[[str, dict], str]
# Builds the alarm that replaces an expired reject: (alarm id, payload).
ExpiryAlarm = Callable[[Entry], NewRow]


def _default_overflow_payload(row_id: str, summary: dict) -> str:
    return json.dumps({"id": row_id, "kind": "outbox_full", "detail": summary})


class Outbox:
    def __init__(self, path: Path, max_rows: int, overflow_payload: OverflowPayload = _default_overflow_payload,
                 synchronous: str = "NORMAL", auto_checkpoint: bool = True) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self._overflow_payload = overflow_payload
        self._lock = threading.RLock()
        self.evicted = 0  # rows evicted by this instance (the overflow rows carry the durable count)
        self.overflow_episodes = 0  # overflow summaries started by this instance (one outbox_full alarm each)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves, so a batch is one commit.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise PublishError(f"outbox {self.path}: expected journal_mode wal, got {mode} "
                                   "(a network file system?)")
            self._db.execute(f"PRAGMA synchronous={synchronous}")  # see the module docstring
            self._db.executescript(_SCHEMA)
            self._ckpt: sqlite3.Connection | None = None
            if not auto_checkpoint:
                # Commits never copy the WAL back into the database (up to 1000 pages and an fsync,
                # measured 12-22 ms here): the owner calls `checkpoint()` from its own thread, on a
                # second connection, so a commit in `submit` stays ~0.2 ms.
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                self._ckpt = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
                self._ckpt.execute(f"PRAGMA synchronous={synchronous}")
        except sqlite3.Error as e:
            raise PublishError(f"outbox {self.path}: cannot open as SQLite: {e}") from e
        self._depth = self._count()

    # -- reading -------------------------------------------------------------------------------
    def depth(self) -> int:
        """Rows in the outbox, the overflow summary included (cached: no query)."""
        return self._depth

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending(self, kinds: Iterable[str], after_seq: int = 0, limit: int = 100) -> list[Entry]:
        """Rows of these kinds with seq > after_seq, oldest first (a cursor, so a caller can page)."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, id, kind, payload, deadline, created, ref FROM outbox "
                f"WHERE kind IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?",
                (*kinds, after_seq, limit),
            ).fetchall()
        return [Entry(*r) for r in rows]

    def get(self, row_id: str) -> Entry | None:
        with self._lock:
            r = self._db.execute(
                "SELECT seq, id, kind, payload, deadline, created, ref FROM outbox WHERE id = ?", (row_id,)
            ).fetchone()
        return Entry(*r) if r else None

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM outbox")}

    def due(self, cutoff: float, skip: Iterable[str] = ()) -> list[Entry]:
        """Rejects whose deadline is <= cutoff (read only: works on a full disk), minus `skip`."""
        skip = set(skip)
        with self._lock:
            rows = [Entry(*r) for r in self._db.execute(
                "SELECT seq, id, kind, payload, deadline, created, ref FROM outbox "
                "WHERE kind = ? AND deadline IS NOT NULL AND deadline <= ? ORDER BY seq",
                (REJECT, cutoff),
            )]
        return [e for e in rows if e.id not in skip]

    # -- writing -------------------------------------------------------------------------------
    def put(self, rows: Iterable[NewRow], now: float | None = None) -> list[Entry]:
        """Adds rows in one transaction; a row whose id is already there is ignored (a re-submit).

        Returns the rows evicted to make room (already folded into the overflow summary).
        """
        rows = list(rows)
        if not rows:
            return []
        now = time.time() if now is None else now
        for r in rows:
            if r.kind not in (REJECT, ALARM):
                raise ValueError(f"kind must be {REJECT!r} or {ALARM!r}, got {r.kind!r}")
        try:
            with self._lock, self._tx():
                for r in rows:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO outbox (id, kind, payload, deadline, created, ref) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (r.id, r.kind, r.payload, r.deadline, now, r.ref),
                    )
                    self._depth += cur.rowcount
                evicted = self._enforce_bound(now)
        except PublishError:
            with self._lock:
                self._depth = self._count()  # rolled back: the cached depth must follow
            raise
        self.evicted += len(evicted)
        return evicted

    def delete(self, ids: Iterable[str]) -> int:
        """Removes acknowledged rows; unknown ids are ignored (a late duplicate acknowledgement)."""
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            with self._tx():
                n = 0
                for i in range(0, len(ids), 500):  # SQLite caps the number of parameters
                    chunk = ids[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    n += self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk).rowcount
            self._depth -= n
        return n

    def expire(self, cutoff: float, to_alarm: ExpiryAlarm, skip: Iterable[str] = ()) -> list[tuple[Entry, NewRow]]:
        """Replaces every reject whose deadline is <= cutoff by the alarm `to_alarm` makes of it.

        `skip`: ids not to touch (in flight: their acknowledgement decides). One transaction.
        """
        with self._lock:
            return self._expire(cutoff, to_alarm, skip)

    def _expire(self, cutoff: float, to_alarm: ExpiryAlarm, skip: Iterable[str]) -> list[tuple[Entry, NewRow]]:
        rows = self.due(cutoff, skip)
        if not rows:
            return []
        done = []
        with self._tx():
            for e in rows:
                alarm = to_alarm(e)
                self._db.execute("DELETE FROM outbox WHERE id = ?", (e.id,))
                self._db.execute(
                    "INSERT OR IGNORE INTO outbox (id, kind, payload, deadline, created, ref) "
                    "VALUES (?, ?, ?, NULL, ?, ?)",
                    (alarm.id, ALARM, alarm.payload, e.created, alarm.ref or e.ref),
                )
                done.append((e, alarm))
        # one row out, one in: the depth does not change and the bound still holds
        return done

    def checkpoint(self) -> None:
        """Copies committed WAL pages into the database (PASSIVE: never waits for the writer). Only
        with `auto_checkpoint=False`, from the owner's thread; takes no lock, so writers go on."""
        if self._ckpt is None:
            return
        try:
            self._ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            raise PublishError(f"outbox {self.path}: checkpoint failed: {e}") from e

    def probe(self) -> None:
        """Writes and removes a row in one commit: raises PublishError while the disk is full."""
        with self._lock, self._tx():
            self._db.execute("INSERT INTO outbox (id, kind, payload, created) VALUES ('__probe__', ?, '', 0)", (ALARM,))
            self._db.execute("DELETE FROM outbox WHERE id = '__probe__'")

    def close(self) -> None:
        try:
            if self._ckpt is not None:
                self._ckpt.close()
            with self._lock:
                self._db.close()
        except sqlite3.Error:
            pass

    # -- internals -----------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db, self.path)

    def _enforce_bound(self, now: float) -> list[Entry]:
        overflow = self._db.execute("SELECT COUNT(*) FROM outbox WHERE kind = ?", (OVERFLOW,)).fetchone()[0]
        bounded = self._depth - overflow
        excess = bounded - self.max_rows
        if excess <= 0:
            return []
        victims = [Entry(*r) for r in self._db.execute(
            "SELECT seq, id, kind, payload, deadline, created, ref FROM outbox WHERE kind != ? ORDER BY seq LIMIT ?",
            (OVERFLOW, excess),
        )]
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(v.seq,) for v in victims])
        self._depth -= len(victims)
        self._fold_into_overflow(victims, now)
        return victims

    def _fold_into_overflow(self, victims: list[Entry], now: float) -> None:
        old = self._db.execute("SELECT id, payload FROM outbox WHERE kind = ?", (OVERFLOW,)).fetchone()
        summary = {"evicted": 0, "evicted_rejects": 0, "evicted_alarms": 0, "first_created": None,
                   "last_created": None, "sample": [], "episode": uuid.uuid4().hex}
        if old is not None:
            summary.update(_summary_of(old[1]))
            self._db.execute("DELETE FROM outbox WHERE id = ?", (old[0],))
            self._depth -= 1
        else:
            self.overflow_episodes += 1
        summary["evicted"] += len(victims)
        summary["evicted_rejects"] += sum(v.kind == REJECT for v in victims)
        summary["evicted_alarms"] += sum(v.kind != REJECT for v in victims)
        summary["first_created"] = summary["first_created"] or victims[0].created
        summary["last_created"] = victims[-1].created
        room = _SAMPLE - len(summary["sample"])
        summary["sample"] += [{"id": v.id, "kind": v.kind, "ref": v.ref} for v in victims[:max(room, 0)]]
        # A fresh id each time the summary grows: a version already in flight may be acknowledged
        # (and deleted by its old id) without losing the counts added since. Consumers group the
        # versions by `episode`; the latest carries the cumulative count.
        row_id = f"overflow-{uuid.uuid4().hex}"
        payload = self._overflow_payload(row_id, summary)
        self._db.execute(
            "INSERT INTO outbox (id, kind, payload, deadline, created, ref) VALUES (?, ?, ?, NULL, ?, ?)",
            (row_id, OVERFLOW, _with_summary(payload, summary), now, summary["episode"]),
        )
        self._depth += 1


# The overflow row's payload is built by the caller's factory; the summary is stored beside it
# (under a private key the factory's JSON does not use) so it can be updated without parsing the
# caller's format. It is stripped before publishing by `publishable()`.
_SUMMARY_KEY = "__outbox_summary__"


def _with_summary(payload: str, summary: dict) -> str:
    return json.dumps({_SUMMARY_KEY: summary, "payload": payload})


def _summary_of(stored: str) -> dict:
    return json.loads(stored)[_SUMMARY_KEY]


def publishable(entry: Entry) -> str:
    """The bytes to publish for a row (the overflow row keeps its summary beside the payload)."""
    if entry.kind == OVERFLOW:
        return json.loads(entry.payload)["payload"]
    return entry.payload


class _Transaction:
    """BEGIN IMMEDIATE .. COMMIT, rolling back on error; SQLite errors become PublishError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise PublishError(f"outbox {self.path}: cannot begin a write transaction: {e}") from e

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                self._rollback()
                raise PublishError(f"outbox {self.path}: commit failed (disk full?): {e}") from e
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise PublishError(f"outbox {self.path}: write failed (disk full?): {exc}") from exc
        return False

    def _rollback(self) -> None:
        # On a full disk SQLite may already have rolled the transaction back itself; a second
        # ROLLBACK would then raise "no transaction is active" and hide the real error (measured
        # on a full tmpfs: the publisher lost that tick's rows to it).
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
