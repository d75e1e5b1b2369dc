"""RejectJournal on a real memory-mapped file: what a killed process leaves is read back, nothing else."""

from __future__ import annotations

import pytest

from inspector.errors import PublishError
from inspector.signalling.journal import SLOT, RejectJournal, journal_path, read_pending
from inspector.signalling.outbox import REJECT, NewRow


def row(i: int, payload: str = "{}") -> NewRow:
    return NewRow(id=f"r-{i}", kind=REJECT, payload=payload, deadline=1000.0 + i, ref=f"part {i}")


def test_pending_rows_outlive_the_journal_object_and_released_ones_do_not(tmp_path):
    path = tmp_path / "j"
    j = RejectJournal(path, slots=8)
    slots = [j.put(row(i)) for i in range(5)]
    j.release(slots[:2])
    assert j.pending() == 3
    j._map.flush()  # what a killed process leaves: the mapped pages, without close()
    assert {r.id for r in read_pending(path, slots=8)} == {"r-2", "r-3", "r-4"}
    j.close()  # not empty: kept

    again = RejectJournal(path, slots=8)
    assert sorted(again.recovered().values(), key=lambda r: r.id) == [row(2), row(3), row(4)]
    assert again.pending() == 3  # recovered rows keep their slots until released
    again.release(again.recovered())
    again.close()
    assert not path.exists()  # empty at close: removed


@pytest.mark.parametrize("case, expected", [("full", "full"), ("too_big", "too_big")])
def test_a_row_that_does_not_fit_is_refused_not_lost(tmp_path, case, expected):
    j = RejectJournal(tmp_path / "j", slots=2)
    if case == "full":
        j.put(row(0))
        j.put(row(1))
        assert j.put(row(2)) is None
    else:
        assert j.put(row(0, payload="x" * SLOT)) is None
    assert getattr(j, expected) == 1
    j.close()


def test_a_slot_torn_by_a_kill_mid_copy_is_ignored(tmp_path):
    path = tmp_path / "j"
    j = RejectJournal(path, slots=4)
    j.put(row(0))
    i = j.put(row(1))
    at = i * SLOT + 12
    j._map[at:at + 4] = b"XXXX"  # the body half copied when the process died: crc no longer matches
    j._map.flush()
    j.close()
    again = RejectJournal(path, slots=4)
    assert [r.id for r in again.recovered().values()] == ["r-0"]
    assert again.torn == 1
    again.close()


def test_a_second_process_on_the_same_journal_is_refused(tmp_path):
    j = RejectJournal(tmp_path / "j", slots=2)
    with pytest.raises(PublishError, match="in use by another process"):
        RejectJournal(tmp_path / "j", slots=2)  # flock is per open file: a second open conflicts like a process
    j.close()


def test_one_journal_per_outbox(tmp_path):
    a = journal_path(tmp_path, tmp_path / "a" / "outbox.sqlite")
    b = journal_path(tmp_path, tmp_path / "b" / "outbox.sqlite")
    assert a != b and a.parent == tmp_path
    assert journal_path(tmp_path, tmp_path / "a" / "outbox.sqlite") == a
