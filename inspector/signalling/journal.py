"""Rejects decided but not yet in the outbox, in shared memory that outlives the process.

One responsibility: keep a reject from the moment `MqttPublisher.submit` returns until the publisher
thread has committed it to the SQLite outbox, without a system call on the caller's thread. The
journal is a file on a tmpfs (`mqtt.reject_journal_dir`, default /dev/shm) mapped into memory: a
write is a copy into the page cache, so a `kill -9` (or any death of the process) cannot lose it, and
no disk, lock or GIL release lies on the pipeline's post thread. Why not the outbox commit there:
SQLite's commit is 3-4 calls that release the GIL and write to the disk; beside an fsync loop it took
p99 17.6 ms, max 26 ms on the post thread (benchmarks/README.md, reject path), which with the broker's
round trip pushed rejects whose verdict came in 5-10 ms past a 50 ms deadline.

What it does not survive: a power cut or a reboot (tmpfs), the same class of failure the outbox's
`synchronous=NORMAL` already accepts (docs/contracts.md, durability); the line stops for longer than
any reject's deadline then, so such a reject could only have become an `escaped_part` alarm.

Layout: `SLOTS` fixed slots of `SLOT` bytes. A slot: a 12-byte header (state, length, crc32 of the
body) and the body (the row as JSON). Writing: body, then length and crc, then the state last; a
slot torn by a kill in the middle of the copy has no valid state or crc and is ignored: its `submit`
had not returned, so the reject had not been handed over. Free slots are a LIFO stack (a deque: its
append/pop are atomic under the GIL, so the writer (the post thread) and the releaser (the publisher
thread) need no lock), so a quiet line touches a few pages of the tmpfs file, not all of it.

Thread use: `put` from the submitting thread, `release` from the publisher thread, `recover` and
`close` from whoever owns the publisher's start and stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from inspector.errors import PublishError
from inspector.signalling.outbox import NewRow

log = logging.getLogger(__name__)

SLOT = 8192  # bytes per slot: a reject with ~60 defects fits; a bigger one is committed the old way
SLOTS = 512  # 4 MiB of tmpfs at most (sparse: only slots ever used take memory)
_HEADER = struct.Struct("<III")  # state, body length, crc32(body)
_PENDING = 0x52454A31  # "REJ1": the slot holds a reject not yet in the outbox
_FREE = 0


def journal_path(folder: Path, outbox_path: Path) -> Path:
    """One journal per outbox (two inspectors on one PC have two outboxes): named by its absolute path."""
    key = hashlib.sha256(str(Path(outbox_path).resolve()).encode()).hexdigest()[:16]
    return Path(folder) / f"inspector-rejects-{key}.journal"


def _encode(row: NewRow) -> bytes:
    return json.dumps([row.id, row.kind, row.payload, row.deadline, row.ref], separators=(",", ":")).encode()


def _decode(body: bytes) -> NewRow:
    rid, kind, payload, deadline, ref = json.loads(body)
    return NewRow(id=rid, kind=kind, payload=payload, deadline=deadline, ref=ref)


class RejectJournal:
    def __init__(self, path: Path, slots: int = SLOTS, slot_size: int = SLOT) -> None:
        self.path = Path(path)
        self.slots, self.slot_size = slots, slot_size
        self.full = 0  # puts refused: no free slot (the caller commits to the outbox itself)
        self.too_big = 0  # puts refused: the row is bigger than a slot
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise PublishError(f"reject journal {self.path}: cannot open: {e.strerror or e}") from e
        try:
            # Two processes on one journal would free each other's slots: the second is refused.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            raise PublishError(f"reject journal {self.path}: in use by another process "
                               "(two inspectors on one outbox_path?)") from e
        try:
            size = slots * slot_size
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, size)  # sparse on tmpfs; a file of another layout is read first
            self._map = mmap.mmap(self._fd, size)
        except (OSError, ValueError) as e:
            os.close(self._fd)
            raise PublishError(f"reject journal {self.path}: cannot map {slots} x {slot_size} bytes: {e}") from e
        self._free: deque[int] = deque()
        self._recovered: dict[int, NewRow] = {}
        self.torn = 0
        for i in reversed(range(slots)):
            row = self._read(i)
            if row is None:
                self._map[i * slot_size:i * slot_size + 4] = b"\0\0\0\0"  # a torn slot is not read again
                self._free.append(i)
            else:
                self._recovered[i] = row

    # -- the submitting thread -------------------------------------------------------------------
    def put(self, row: NewRow) -> int | None:
        """Stores the row; returns its slot, or None when it does not fit (no free slot, too big):
        then the caller must make it durable some other way. No system call, no lock."""
        body = _encode(row)
        if len(body) > self.slot_size - _HEADER.size:
            self.too_big += 1
            return None
        try:
            i = self._free.pop()
        except IndexError:
            self.full += 1
            return None
        at = i * self.slot_size
        m = self._map
        m[at + _HEADER.size:at + _HEADER.size + len(body)] = body
        m[at + 4:at + 12] = _HEADER.pack(0, len(body), zlib.crc32(body))[4:]
        m[at:at + 4] = _HEADER.pack(_PENDING, 0, 0)[:4]  # last: the slot counts from here
        return i

    # -- the publisher thread --------------------------------------------------------------------
    def release(self, slots: Iterable[int]) -> None:
        """The rows of these slots are in the outbox (or delivered): their slots are free again."""
        m = self._map
        for i in slots:
            at = i * self.slot_size
            m[at:at + 4] = b"\0\0\0\0"
            self._free.append(i)

    def pending(self) -> int:
        return self.slots - len(self._free)

    # -- start and stop ----------------------------------------------------------------------------
    def recovered(self) -> dict[int, NewRow]:
        """Rows a previous process left (slot -> row), read at open; they stay pending until released."""
        return dict(self._recovered)

    def close(self, unlink_if_empty: bool = True) -> None:
        try:
            empty = len(self._free) == self.slots
            self._map.close()
            if empty and unlink_if_empty:
                with contextlib.suppress(OSError):
                    self.path.unlink()
        finally:
            os.close(self._fd)  # releases the flock

    def _read(self, i: int) -> NewRow | None:
        at = i * self.slot_size
        state, n, crc = _HEADER.unpack_from(self._map, at)
        if state != _PENDING:
            return None
        body = bytes(self._map[at + _HEADER.size:at + _HEADER.size + n]) if n <= self.slot_size - _HEADER.size else b""
        if not body or zlib.crc32(body) != crc:
            self.torn += 1  # killed while writing it: its submit had not returned
            return None
        try:
            return _decode(body)
        except (ValueError, TypeError) as e:
            self.torn += 1
            log.error("reject journal %s: slot %d unreadable (%s): ignored", self.path, i, e)
            return None


def read_pending(path: Path, slots: int = SLOTS, slot_size: int = SLOT) -> list[NewRow]:
    """The rows a journal file holds, read only (for tests and `inspector` diagnostics)."""
    data = Path(path).read_bytes() if Path(path).exists() else b""
    out = []
    for i in range(min(slots, len(data) // slot_size)):
        at = i * slot_size
        state, n, crc = _HEADER.unpack_from(data, at)
        body = data[at + _HEADER.size:at + _HEADER.size + n]
        if state == _PENDING and body and zlib.crc32(body) == crc:
            out.append(_decode(body))
    return out
