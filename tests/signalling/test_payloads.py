"""MQTT payloads: built from verdicts, round-trip as JSON, and the committed JSON Schemas are current."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inspector.devtools.testing import make_reject
from inspector.schemas import write_schemas
from inspector.signalling.payloads import (
    PAYLOADS,
    AlarmPayload,
    HeartbeatPayload,
    RejectPayload,
    StatusPayload,
    reject_id,
    reject_payload,
    verdict_payload,
)

REPO = Path(__file__).resolve().parents[2]
CONTRACT_FIELDS = {"id", "part_id", "frame_id", "captured_at", "deadline", "reason", "defects", "model",
                   "latency_ms", "schema_version"}


def test_reject_payload_carries_the_contract_fields():
    v = make_reject(7, budget_s=2.0, part_id="A-7")
    rid = reject_id("line1", "st2", "boot01", v.frame_id)
    body = json.loads(reject_payload(v, rid).to_json())
    assert set(body) == CONTRACT_FIELDS
    assert body["id"] == "line1-st2-boot01-7"
    assert (body["part_id"], body["frame_id"], body["reason"], body["schema_version"]) == ("A-7", 7, "defect", 1)
    assert body["defects"] == [{"class": "scratch", "confidence": 0.91, "box": [10.0, 20.0, 50.0, 60.0]}]
    assert body["model"] == {"name": "test-model", "version": "0.0.1", "sha256": "0" * 64}
    assert body["captured_at"].endswith("Z") and body["deadline"].endswith("Z")
    captured = datetime.fromisoformat(body["captured_at"])
    deadline = datetime.fromisoformat(body["deadline"])
    assert captured.tzinfo is not None and captured.utcoffset().total_seconds() == 0
    assert abs((deadline - captured).total_seconds() - 2.0) < 1e-3
    assert abs(deadline.timestamp() - v.deadline_wall) < 1e-3


def test_reject_payload_round_trips():
    p = reject_payload(make_reject(3), "x-3")
    assert RejectPayload.model_validate_json(p.to_json()) == p


def test_a_pass_is_not_a_reject():
    with pytest.raises(ValueError, match="expected a verdict with actuate=True.*got outcome PASS"):
        reject_payload(make_reject(1, reject=False), "x")


def test_verdict_payload_of_a_pass():
    body = json.loads(verdict_payload(make_reject(4, reject=False), "v-4").to_json())
    assert (body["verdict"], body["actuate"], body["reason"], body["defects"]) == ("PASS", False, None, [])


def test_consumers_tolerate_fields_added_later():
    body = json.loads(reject_payload(make_reject(5), "x-5").to_json())
    body["added_in_a_later_minor"] = 1
    assert RejectPayload.model_validate(body).id == "x-5"


def test_status_heartbeat_alarm_round_trip():
    now = datetime.now(UTC)
    for p in (StatusPayload(state="offline", at=None, client_id="c", boot="b"),
              HeartbeatPayload(seq=3, at=now, boot="b", uptime_s=1.0, outbox_depth=0),
              AlarmPayload(id="a1", kind="camera_lost", raised_at=now, message="camera lost", detail={"x": 1})):
        assert type(p).model_validate_json(p.to_json()) == p
        assert json.loads(p.to_json())["schema_version"] == 1


def test_write_schemas(tmp_path):
    paths = write_schemas(tmp_path)
    assert [p.name for p in paths] == ["config.schema.json"] + [f"mqtt-{t}.schema.json" for t in PAYLOADS]
    reject = json.loads((tmp_path / "mqtt-reject.schema.json").read_text())
    assert CONTRACT_FIELDS - {"schema_version"} <= set(reject["required"])


def test_committed_payload_schemas_are_current(tmp_path):
    """schemas/ is the contract in the repo: regenerate with `inspector schema --out schemas`."""
    for p in write_schemas(tmp_path):
        if not p.name.startswith("mqtt-"):
            continue  # the config schema is another section's contract
        committed = REPO / "schemas" / p.name
        assert committed.is_file(), f"{committed} missing: run `inspector schema --out schemas`"
        assert committed.read_text() == p.read_text(), f"{committed} is stale: run `inspector schema --out schemas`"


def test_one_verdict_record_feeds_the_payloads_the_jsonl_log_and_the_sidecar(tmp_path):
    """Issue 10: one function turns a Verdict into JSON; payloads no longer import service.sinks."""
    import ast
    from dataclasses import replace

    from inspector.devtools.testing import make_defect
    from inspector.records import verdict_record
    from inspector.review.sampler import SampleDecision
    from inspector.review.spool import sidecar_record
    from inspector.service.sinks import JsonlSink

    v = replace(make_reject(9, budget_s=2.0, part_id="A-9"), uncertain=(make_defect("dent", 0.41),))
    rec = verdict_record(v)
    body = json.loads(reject_payload(v, "r-9").to_json())
    for k in ("part_id", "frame_id", "latency_ms", "model"):
        assert body[k] == rec[k], k
    assert body["defects"] == [{k: d[k] for k in ("class", "confidence", "box")} for d in rec["defects"]]
    assert json.loads(verdict_payload(v, "v-9").to_json())["uncertain"] == len(rec["uncertain"]) == 1

    side = sidecar_record(v, SampleDecision(("uncertain",), 0, 0.0), sid="s", date="d", image={},
                          config_hash="h", sampled_wall=0.0)
    assert (side["defects"], side["uncertain"], side["model"]) == (rec["defects"], rec["uncertain"], rec["model"])
    assert side["verdict"] == {"outcome": "REJECT", "actuate": True, "reason": "defect", "error": None,
                               "latency_ms": rec["latency_ms"]}

    sink = JsonlSink(tmp_path / "v.jsonl")
    sink.start()
    sink.submit(v)
    sink.stop()
    assert json.loads((tmp_path / "v.jsonl").read_text()) == json.loads(json.dumps(rec))

    tree = ast.parse((REPO / "inspector" / "signalling" / "payloads.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "inspector.service.sinks" not in imported and "inspector.records" in imported
