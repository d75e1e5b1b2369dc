"""The alarm registry is the truth: every kind raised in the package is listed, every listed kind is
raised somewhere; the hub counts, replays and refuses unknown kinds; the throttle sums."""

import ast
from pathlib import Path

import pytest

from inspector.kernel.alarms import ALARM_KINDS, AlarmHub, AlarmThrottle, UnknownAlarm

PACKAGE = Path(__file__).resolve().parents[2] / "inspector"
# Calls whose first argument is an alarm kind, wherever alarms are made in the package.
RAISERS = {"raise_alarm", "_raise", "_alarm_row", "record", "alarm", "_alarm", "count_alarm"}


def _raised_kinds() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "devtools" in path.parts or "training" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            first = node.args[0]
            if name in RAISERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            # conditional kinds: `kind = "a" if ... else "b"` feeding a raiser
            if name in RAISERS and isinstance(first, ast.Name):
                found.setdefault(f"<variable {first.id}>", []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.IfExp):
                for branch in (node.body, node.orelse):
                    if isinstance(branch, ast.Constant) and branch.value in ALARM_KINDS:
                        found.setdefault(branch.value, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_every_raised_kind_is_registered():
    literal = {k: v for k, v in _raised_kinds().items() if not k.startswith("<")}
    unknown = {k: v for k, v in literal.items() if k not in ALARM_KINDS}
    assert not unknown, f"alarm kinds raised but not in ALARM_KINDS: {unknown}"


def test_every_registered_kind_is_raised_somewhere():
    raised = set(_raised_kinds())
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "alarms.py")
    never = [k for k in ALARM_KINDS if k not in raised and f'"{k}"' not in source]
    assert not never, f"listed in ALARM_KINDS but raised nowhere: {never}"


def test_hub_counts_replays_and_refuses_unknown_kinds():
    hub = AlarmHub()
    hub.raise_alarm("camera_lost", {"source": "cam"})  # before a handler: kept
    got = []
    hub.attach(lambda kind, detail: got.append((kind, detail["source"])))
    hub.raise_alarm("camera_lost", {"source": "cam2"})
    hub.record("escaped_part")
    assert got == [("camera_lost", "cam"), ("camera_lost", "cam2")]
    assert hub.snapshot() == {"camera_lost": 2, "escaped_part": 1}
    with pytest.raises(UnknownAlarm, match="no_such_kind"):
        hub.raise_alarm("no_such_kind", {})


def test_throttle_sends_the_first_at_once_and_sums_the_rest():
    now = [0.0]
    out = []
    t = AlarmThrottle(lambda kind, detail: out.append((kind, detail["count"])), interval_s=60, clock=lambda: now[0])
    for _ in range(5):
        t.raise_alarm("spool_full", {})
    assert out == [("spool_full", 1)]
    now[0] = 61.0
    t.raise_alarm("spool_full", {})
    assert out == [("spool_full", 1), ("spool_full", 5)]
    t.flush()
    assert out == [("spool_full", 1), ("spool_full", 5)]


def test_throttle_flush_due_sends_only_the_sums_whose_interval_passed_and_counts_what_was_folded():
    now = [0.0]
    out = []
    t = AlarmThrottle(lambda kind, detail: out.append((kind, detail["count"], detail.get("n"))), interval_s=60,
                      clock=lambda: now[0])
    for i in range(3000):  # a PLC sending garbage
        t.raise_alarm("plc_bad_trigger", {"n": i})
    now[0] = 30.0
    t.raise_alarm("plc_no_frame", {"n": -1})  # another kind goes out at once
    t.flush_due()
    assert out == [("plc_bad_trigger", 1, 0), ("plc_no_frame", 1, -1)]
    now[0] = 60.0
    t.flush_due()  # the burst stopped: its sum still goes out at the interval, with the last detail
    assert out[2:] == [("plc_bad_trigger", 2999, 2999)]
    t.flush_due()
    assert len(out) == 3 and dict(t.folded) == {"plc_bad_trigger": 2998, "plc_no_frame": 0}
