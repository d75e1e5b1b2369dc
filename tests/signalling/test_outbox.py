"""The durable outbox, pure (no broker): order, idempotence, acknowledgement, expiry, bound."""

from __future__ import annotations

import json
import sqlite3

import pytest

from inspector.signalling.outbox import (
    ALARM,
    OVERFLOW,
    REJECT,
    NewRow,
    Outbox,
    publishable,
)
from tests.signalling.conftest import fill


def reject(i: int, deadline: float | None = 100.0) -> NewRow:
    return NewRow(id=f"r{i}", kind=REJECT, payload=json.dumps({"id": f"r{i}"}), deadline=deadline, ref=f"P{i}")


def alarm(i: int) -> NewRow:
    return NewRow(id=f"a{i}", kind=ALARM, payload=json.dumps({"id": f"a{i}"}))


def to_alarm(e):
    return NewRow(id=f"escaped-{e.id}", kind=ALARM, payload=json.dumps({"escaped": e.id}))


@pytest.fixture
def ob(tmp_path):
    o = Outbox(tmp_path / "ob.sqlite", max_rows=10)
    yield o
    o.close()


def test_empty_outbox(ob):
    assert ob.depth() == 0
    assert ob.pending((REJECT, ALARM)) == []
    assert ob.put([]) == []
    assert ob.delete([]) == 0
    assert ob.expire(1e12, to_alarm) == []


def test_wal_journal(ob, tmp_path):
    db = sqlite3.connect(tmp_path / "ob.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_come_back_in_order_and_a_resubmit_is_ignored(ob):
    ob.put([reject(1), alarm(1), reject(2)])
    ob.put([reject(1)])  # same id again: one row
    assert ob.depth() == 3
    assert [e.id for e in ob.pending((REJECT,))] == ["r1", "r2"]
    assert [e.id for e in ob.pending((REJECT, ALARM))] == ["r1", "a1", "r2"]
    first = ob.pending((REJECT,), limit=1)[0]
    assert [e.id for e in ob.pending((REJECT,), after_seq=first.seq)] == ["r2"]


def test_only_acknowledged_rows_are_deleted(ob):
    ob.put([reject(1), reject(2), alarm(1)])
    assert ob.delete(["r1", "nope"]) == 1
    assert ob.ids() == {"r2", "a1"}
    assert ob.depth() == 2


def test_rows_survive_reopening(tmp_path):
    o = Outbox(tmp_path / "ob.sqlite", max_rows=10)
    o.put([reject(1, deadline=123.5), alarm(1)])
    o.close()
    o2 = Outbox(tmp_path / "ob.sqlite", max_rows=10)
    assert o2.depth() == 2
    e = o2.get("r1")
    assert (e.kind, e.deadline, e.ref, json.loads(e.payload)) == (REJECT, 123.5, "P1", {"id": "r1"})
    o2.close()


@pytest.mark.parametrize("cutoff, expired", [
    (49.9, []),
    (50.0, ["r1"]),            # deadline == cutoff counts as too late
    (1e12, ["r1", "r2"]),      # alarms never expire
])
def test_expire_turns_late_rejects_into_alarms(ob, cutoff, expired):
    ob.put([reject(1, deadline=50.0), reject(2, deadline=60.0), alarm(1)])
    done = ob.expire(cutoff, to_alarm)
    assert [e.id for e, _ in done] == expired
    assert ob.depth() == 3  # one row out, one in
    for rid in expired:
        assert ob.get(rid) is None
        assert ob.get(f"escaped-{rid}").kind == ALARM
        assert ob.get(f"escaped-{rid}").deadline is None


def test_expire_skips_rows_in_flight(ob):
    ob.put([reject(1, deadline=1.0), reject(2, deadline=1.0)])
    done = ob.expire(10.0, to_alarm, skip={"r1"})
    assert [e.id for e, _ in done] == ["r2"]
    assert ob.get("r1") is not None


def test_reaching_the_bound_evicts_the_oldest_into_one_overflow_alarm(ob):
    ob.put([reject(i) for i in range(10)])
    assert ob.pending((OVERFLOW,)) == []
    evicted = ob.put([reject(10), reject(11)])
    assert [e.id for e in evicted] == ["r0", "r1"]
    assert ob.get("r0") is None and ob.get("r11") is not None
    (ov,) = ob.pending((OVERFLOW,))
    body = json.loads(publishable(ov))
    assert body["kind"] == "outbox_full" and body["id"] == ov.id
    assert body["detail"]["evicted"] == 2 and body["detail"]["evicted_rejects"] == 2
    assert [s["id"] for s in body["detail"]["sample"]] == ["r0", "r1"]
    # The summary grows (new id, same episode), and stays outside the bound: 10 bounded rows + 1.
    ob.put([alarm(1)])
    (ov2,) = ob.pending((OVERFLOW,))
    body2 = json.loads(publishable(ov2))
    assert ov2.id != ov.id and body2["detail"]["episode"] == body["detail"]["episode"]
    assert body2["detail"]["evicted"] == 3
    assert ob.depth() == 11


def test_bound_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_rows must be >= 1, got 0"):
        Outbox(tmp_path / "x.sqlite", max_rows=0)


def test_unusable_path_is_a_publish_error(tmp_path):
    from inspector.errors import PublishError

    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(PublishError, match="cannot open as SQLite"):
        Outbox(tmp_path / "dir.sqlite", max_rows=10)


def test_a_full_disk_is_a_publish_error_and_the_outbox_goes_on_after(full_disk):
    from inspector.errors import PublishError

    o = Outbox(full_disk / "ob.sqlite", max_rows=1000)
    o.put([reject(0)])
    fill(full_disk)
    big = [NewRow(id=f"big{i}", kind=REJECT, payload="x" * 20_000, deadline=None) for i in range(20)]
    with pytest.raises(PublishError, match="disk full"):
        o.put(big)
    assert o.depth() == 1 and o.ids() == {"r0"}  # rolled back whole, the cache follows
    with pytest.raises(PublishError, match="disk full"):
        o.probe()  # what the publisher asks while degraded with nothing held in memory
    assert [e.id for e in o.due(1e12)] == ["r0"]  # reading still works on a full disk
    (full_disk / "filler").unlink()
    o.probe()
    o.put(big)  # the same connection works again once there is room: the caller's retry lands
    assert o.depth() == 21
    o.close()


@pytest.mark.parametrize("mode, pragma", [("NORMAL", 1), ("FULL", 2)])
def test_synchronous_mode_is_what_was_asked(tmp_path, mode, pragma):
    o = Outbox(tmp_path / "ob.sqlite", max_rows=10, synchronous=mode)
    assert o._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    o.close()
    with pytest.raises(ValueError, match="synchronous must be NORMAL or FULL, got 'OFF'"):
        Outbox(tmp_path / "x.sqlite", max_rows=10, synchronous="OFF")


def test_due_lists_late_rejects_read_only(ob):
    ob.put([reject(1, deadline=50.0), reject(2, deadline=60.0), alarm(1)])
    assert [e.id for e in ob.due(55.0)] == ["r1"]
    assert [e.id for e in ob.due(1e12, skip={"r1"})] == ["r2"]
    assert ob.depth() == 3


def test_two_threads_write_one_outbox(ob):
    """submit() commits on the caller's thread while the publisher thread writes too: the lock
    keeps every row and the cached depth exact."""
    import threading

    big = Outbox(ob.path.with_name("big.sqlite"), max_rows=10_000)

    def writer(prefix):
        for i in range(200):
            big.put([NewRow(id=f"{prefix}{i}", kind=REJECT, payload="{}", deadline=1e12)])

    threads = [threading.Thread(target=writer, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert big.depth() == 400 == len(big.ids())
    big.close()
