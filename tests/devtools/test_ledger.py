"""The reject ledger's rules (pure logic): what counts as delivered, alarmed, both, late, foreign.
The real end-to-end use is tests/service/test_full_service.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inspector.devtools.ledger import Message, account, decided_rejects, says_late_ack

BOOT = "b00t"
T0 = 1_800_000_000.0  # capture time of every reject below
DEADLINE = T0 + 2.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def rid(n: int) -> str:
    return f"line1-st1-{BOOT}-{n}"


def reject(n: int, at: float) -> Message:
    return Message("reject", {"id": rid(n), "captured_at": iso(T0), "deadline": iso(DEADLINE)}, at)


def escaped(n: int, at: float, **detail) -> Message:
    return Message("alarm", {"id": f"escaped-{rid(n)}", "kind": "escaped_part", "raised_at": iso(at),
                             "detail": {"reject_id": rid(n), **detail}, "reject": {"id": rid(n)}}, at)


DECIDED = {rid(1): {}}


@pytest.mark.parametrize(("msgs", "outages", "field", "expected_problem"), [
    ([reject(1, T0 + 0.1)], [], "received_in_time", None),
    ([reject(1, T0 + 0.1), reject(1, T0 + 0.2)], [], "duplicates", None),  # QoS 1 re-send: counted, not failed
    ([escaped(1, DEADLINE)], [], "alarmed", None),
    ([reject(1, DEADLINE + 0.5), escaped(1, DEADLINE)], [], "alarmed", None),  # late copy, but alarmed
    ([], [], "unaccounted", "unaccounted"),
    ([reject(1, DEADLINE + 0.5)], [], "late_only", "late_only"),  # reached the line after its deadline
    ([reject(1, T0 + 0.1), escaped(1, DEADLINE)], [], "both_unexplained", "both_unexplained"),  # a false alarm
    # the broker went down after forwarding it, before the PUBACK reached the inspector
    ([reject(1, T0 + 0.1), escaped(1, DEADLINE)], [(T0 + 0.12, T0 + 5)], "both_explained", None),
    # the alarm itself says the PUBACK came after the deadline
    ([reject(1, T0 + 0.1), escaped(1, DEADLINE + 0.3, acked_at=DEADLINE + 0.3)], [], "both_explained", None),
    ([reject(1, T0 + 0.1), Message("reject", {"id": rid(99), "deadline": iso(DEADLINE)}, T0)], [],
     "foreign_received", "foreign_received"),
    ([reject(1, T0 + 0.1), escaped(99, DEADLINE)], [], "foreign_alarmed", "foreign_alarmed"),
])
def test_account_rules(msgs, outages, field, expected_problem):
    led = account(DECIDED, msgs, boots=(BOOT,), outages=outages)
    value = getattr(led, field)
    assert (len(value) if isinstance(value, list) else value) == 1, led
    problems = led.problems()
    if expected_problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(expected_problem)


def test_resent_in_time_counts_rejects_decided_while_the_broker_was_down():
    led = account(DECIDED, [reject(1, T0 + 1.0)], boots=(BOOT,), outages=[(T0 - 1.0, T0 + 0.5)])
    assert led.resent_in_time == 1 and led.physical_escapes == 0


@pytest.mark.parametrize(("detail", "message", "expected"), [
    ({"why": "deadline passed before the broker acknowledged it"}, "", False),
    ({"why": "the broker acknowledged it 230 ms after its deadline"}, "", True),  # the publisher's wording
    ({"puback_at": iso(DEADLINE + 1)}, "", True),
    ({"puback_at": iso(DEADLINE - 1)}, "", False),
])
def test_says_late_ack(detail, message, expected):
    assert says_late_ack({"kind": "escaped_part", "detail": detail, "message": message}, DEADLINE) is expected


def test_decided_rejects_reads_actuating_lines_of_the_log_and_its_backups_and_names_a_torn_line(tmp_path):
    log = tmp_path / "v.jsonl"
    log.write_text('{"frame_id": 3, "actuate": true}\n{"frame_id": 4, "actuate": false}\n')
    assert list(decided_rejects(log, line="line1", station="st1", boot=BOOT)) == [rid(3)]
    (tmp_path / "v.jsonl.1").write_text('{"frame_id": 1, "actuate": true}\n')  # rotated: read too, oldest first
    assert list(decided_rejects(log, line="line1", station="st1", boot=BOOT)) == [rid(1), rid(3)]
    log.write_text('{"frame_id": 3, "actuate": true}\n{"frame_id": 4, "act')
    with pytest.raises(ValueError, match=r"v.jsonl:2: expected a JSON verdict record"):
        decided_rejects(log, line="line1", station="st1", boot=BOOT)
