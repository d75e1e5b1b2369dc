"""The MQTT payloads: pydantic models of what goes on each topic, and how a Verdict becomes one.

These models are the contract with the line (see docs/controls-engineer.md); their JSON Schemas
are generated into schemas/ by `inspector schema`. Every payload has `schema_version`: a consumer
checks it and refuses a major version it does not know. Additive changes (a new optional field)
keep the version; anything else bumps it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from inspector.frames import ModelInfo, Verdict
from inspector.kernel.alarms import CLEARS
from inspector.records import verdict_record

SCHEMA_VERSION = 1


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class _Payload(BaseModel):
    # extra="ignore": a consumer parsing with these models tolerates fields added later under the
    # same schema_version (additive changes); the producer builds every field explicitly.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Payload schema version.")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class DefectOut(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    class_: str = Field(alias="class", description="Defect class name.")
    confidence: float = Field(ge=0, le=1, description="Detector confidence; from an image classifier (model task "
                              "classify), the probability of the class.")
    # the schema: an array, not required (never null on the wire: absent for a classifier's finding)
    box: tuple[float, float, float, float] | SkipJsonSchema[None] = Field(
        None, description="x0, y0, x1, y1 in source-image pixels. Absent (not null) for an image classifier's "
        "finding (model task classify): it judges the whole image.",
        json_schema_extra=lambda schema: schema.pop("default", None))

    @model_serializer(mode="wrap")
    def _no_box_key_without_a_box(self, handler):
        # a detector's defects serialize exactly as before `box` was optional; a classifier's have no `box` key
        out = handler(self)
        if out.get("box", ()) is None:
            del out["box"]
        return out


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(description="Model name.")
    version: str = Field(description="Model version.")
    sha256: str = Field(description="SHA-256 of the model weights that made the decision.")

    @staticmethod
    def of(m: ModelInfo) -> ModelRef:
        return ModelRef(name=m.name, version=m.version, sha256=m.sha256)


class RejectPayload(_Payload):
    """`.../reject`: one per rejected part. QoS 1, not retained; deduplicate by `id`."""

    id: str = Field(min_length=1, description="Unique per reject, the same on every re-send: deduplicate by it.")
    part_id: str | None = Field(description="Part id from the trigger; null in free-run mode.")
    frame_id: int = Field(ge=0, description="Frame counter of the inspector process.")
    captured_at: datetime = Field(description="Capture time, UTC ISO-8601.")
    deadline: datetime = Field(description="UTC ISO-8601. After this instant the part has passed: do NOT actuate.")
    reason: Literal["defect", "late", "error", "drift"] = Field(
        description="defect: defects found; late/error: no verdict in time or inspection failed (fail-safe reject); "
                    "drift: the input left the model's envelope and decision.on_drift rejects (fail safe).")
    defects: list[DefectOut] = Field(description="Defects at or above their class threshold (empty for late/error).")
    model: ModelRef = Field(description="The model that decided.")
    latency_ms: float = Field(ge=0, description="Capture to verdict, milliseconds.")


class VerdictPayload(_Payload):
    """`.../verdict`: every verdict, when enabled. Informational: never actuate from this topic."""

    id: str = Field(min_length=1, description="Unique per verdict (for a reject, the reject's id).")
    part_id: str | None = Field(description="Part id from the trigger; null in free-run mode.")
    frame_id: int = Field(ge=0, description="Frame counter of the inspector process.")
    captured_at: datetime = Field(description="Capture time, UTC ISO-8601.")
    deadline: datetime = Field(description="UTC ISO-8601 deadline of the decision.")
    verdict: Literal["PASS", "REJECT", "LATE"] = Field(description="The outcome.")
    actuate: bool = Field(description="Whether a reject was signalled (on .../reject).")
    reason: Literal["defect", "late", "error", "drift"] | None = Field(
        description="Why it was rejected; null for a pass.")
    defects: list[DefectOut] = Field(description="Defects at or above their class threshold.")
    uncertain: int = Field(ge=0, description="Detections within the uncertain band.")
    model: ModelRef = Field(description="The model that decided.")
    latency_ms: float = Field(ge=0, description="Capture to verdict, milliseconds.")
    error: str | None = Field(None, description="Why the inspection failed, for reason=error.")


class StatusPayload(_Payload):
    """`.../status`, retained: `online` on every (re)connect, `offline` (last will), `stopped`."""

    state: Literal["online", "offline", "stopped"] = Field(
        description="online | offline (last will, process or link lost) | stopped (clean shutdown).")
    at: datetime | None = Field(description="When it was sent; null in the last will (the broker sends it, later).")
    client_id: str = Field(description="MQTT client id of the inspector.")
    boot: str = Field(description="Random id of this process start: a new value means a restart.")
    model: ModelRef | None = Field(None, description="The loaded model (online only).")
    config_hash: str | None = Field(None, description="Hash of the effective config (online only).")
    previous_model: ModelRef | None = Field(None, description="After a model switch (promote, rollback; online "
                                            "only): the model `model` replaced. Null before any switch.")
    model_switched_at: datetime | None = Field(None, description="When the last model switch happened, UTC.")
    model_switch: str | None = Field(None, description="Why: promote, or rollback: <reason> (online only).")


class HeartbeatPayload(_Payload):
    """`.../heartbeat`: every `heartbeat_ms`. A PLC watchdog fails safe when it goes stale."""

    seq: int = Field(ge=0, description="Counter, +1 per heartbeat; restarts at 0 with a new `boot`.")
    at: datetime = Field(description="When it was sent, UTC.")
    boot: str = Field(description="Random id of this process start.")
    uptime_s: float = Field(ge=0, description="Seconds since the publisher started.")
    last_frame_age_s: float | None = Field(None, description="Seconds since the last frame was inspected; "
                                           "null before the first.")
    p99_ms: float | None = Field(None, description="p99 capture-to-verdict latency over recent frames.")
    frames: int | None = Field(None, ge=0, description="Frames inspected since start.")
    outbox_depth: int = Field(ge=0, description="Messages waiting for the broker's acknowledgement.")
    realtime: str | None = Field(None, description="Scheduling of the frame path: `fifo 10`, `rr 10`, "
                                 "`refused (<reason>)`, `demoted (<reason>)` or `off`; null from a publisher "
                                 "without a service.")
    pipeline: dict[str, Any] = Field(default_factory=dict, description="Other pipeline figures (free form).")


class AlarmPayload(_Payload):
    """`.../alarm`: durable events the line must know about. QoS 1, delivered with no expiry."""

    id: str = Field(min_length=1, description="Unique per alarm, stable across re-sends: deduplicate by it.")
    kind: str = Field(min_length=1, description="escaped_part | no_subscribers | outbox_full | camera_lost | "
                      "camera_restored | model_failed | spool_full | ...")
    raised_at: datetime = Field(description="When the condition was detected, UTC.")
    message: str = Field(description="One line for an operator.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Kind-specific facts.")
    reject: RejectPayload | None = Field(None, description="escaped_part: the reject that was not delivered "
                                         "(part, defects).")
    clears: str | None = Field(None, description="Set on an alarm that ends a condition: the kind it clears "
                               "(camera_restored clears camera_lost). Null for an alarm that raises one.")

    @model_validator(mode="before")
    @classmethod
    def _clears_from_the_registry(cls, data: Any) -> Any:
        # Filled from the registry (kernel/alarms.py CLEARS), so every producer sends it the same way.
        if isinstance(data, dict) and data.get("clears") is None and data.get("kind") in CLEARS:
            data = {**data, "clears": CLEARS[data["kind"]]}
        return data


PAYLOADS: dict[str, type[_Payload]] = {
    "reject": RejectPayload,
    "verdict": VerdictPayload,
    "status": StatusPayload,
    "heartbeat": HeartbeatPayload,
    "alarm": AlarmPayload,
}


# -- from a Verdict ----------------------------------------------------------------------------
def _common(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "part_id": rec["part_id"],
        "frame_id": rec["frame_id"],
        "captured_at": utc(rec["captured_wall"]),
        "deadline": utc(rec["deadline_wall"]),
        "defects": [DefectOut(**{"class": d["class"], "confidence": min(max(d["confidence"], 0.0), 1.0),
                                 "box": d.get("box")}) for d in rec["defects"]],
        "model": ModelRef(**rec["model"]),
        "latency_ms": max(rec["latency_ms"], 0.0),
    }


def reject_payload(v: Verdict, reject_id: str) -> RejectPayload:
    """The reject of a verdict, built from `records.verdict_record` like every verdict record."""
    if not v.actuate:
        raise ValueError("expected a verdict with actuate=True (a reject), "
                         f"got outcome {v.outcome.value} actuate=False")
    # A LATE verdict that actuates has reason LATE; keep a reason even if a caller left it unset.
    rec = verdict_record(v)
    return RejectPayload(id=reject_id, reason=rec["reason"] or "late", **_common(rec))


def verdict_payload(v: Verdict, verdict_id: str) -> VerdictPayload:
    rec = verdict_record(v)
    return VerdictPayload(id=verdict_id, verdict=rec["verdict"], actuate=rec["actuate"], reason=rec["reason"],
                          uncertain=len(rec["uncertain"]), error=rec["error"], **_common(rec))


def reject_id(line: str, station: str, boot: str, frame_id: int) -> str:
    """`<line>-<station>-<boot>-<frame_id>`: readable in a log; unique because frame ids restart
    with each process start and `boot` is a fresh random token per start."""
    return f"{line}-{station}-{boot}-{frame_id}"


# -- part-ID handshake with the PLC (inspector/signalling/plc.py; docs/controls-engineer.md) ------------
class PlcTriggerPayload(_Payload):
    """`.../trigger` (PLC -> inspector): one per part the PLC wants inspected. QoS 1, not retained."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Payload schema version (optional from the PLC).")
    part_id: str = Field(min_length=1, max_length=128, description="The PLC's id of the part; echoed in its result.")
    seq: int = Field(ge=0, le=2**63 - 1, description="The PLC's own sequence number; echoed in the result. A repeat "
                     "of (part_id, seq) already answered or in flight is a duplicate and ignored.")
    fired_at: datetime | None = Field(None, description="When the photo-eye fired (UTC ISO-8601); the part's "
                                      "deadline starts there when the PLC's clock agrees with ours.")


class PlcResultPayload(_Payload):
    """`.../result` (inspector -> PLC): exactly one per trigger (result ready + OK/NG). QoS 1, not retained."""

    part_id: str | None = Field(description="The trigger's part_id (null only for a trigger refused as unreadable).")
    seq: int | None = Field(description="The trigger's seq (null when the trigger had none readable).")
    result: Literal["OK", "NG"] = Field(description="OK: let the part pass; NG: divert it.")
    reason: Literal["pass", "defect", "late", "error", "drift", "no_frame", "frame_lost", "ambiguous",
                    "camera_lost", "busy", "bad_trigger"] = Field(
        description="pass/defect: inspected; late/error: no verdict in time or inspection failed; drift: the input "
        "left the model's envelope (decision.on_drift, NG); no_frame: no frame "
        "within the pairing window; frame_lost: the camera's frame of this part arrived broken (incomplete "
        "buffer) or was dropped; ambiguous: the frame could not be attributed to this part alone (two triggers "
        "or two frames within plc.pairing_window_ms); camera_lost / busy: refused at once (station fault / "
        "max_in_flight); bad_trigger: the trigger payload was refused.")
    fail_safe: bool = Field(description="True when `result` is the fail-safe answer, not an inspection.")
    defects: list[DefectOut] = Field(description="Defects at or above their class threshold.")
    frame_id: int | None = Field(description="The inspector's frame id (null without a frame).")
    trigger_at: datetime | None = Field(description="Start of the part's deadline (the PLC's fired_at or the "
                                        "trigger's arrival), UTC ISO-8601.")
    deadline: datetime | None = Field(description="trigger_at + decision.budget_ms: after it the result is late.")
    result_at: datetime = Field(description="When the result was published, UTC ISO-8601.")
    late: bool = Field(description="Published after the deadline.")
    latency_ms: float | None = Field(description="trigger_at to result, milliseconds.")
    error: str | None = Field(None, description="Why the trigger was refused or the inspection failed.")


class PlcReadyPayload(_Payload):
    """`.../ready` (inspector -> PLC): the station's state. QoS 1, RETAINED; the last will says fault."""

    state: Literal["ready", "busy", "fault"] = Field(
        description="ready: triggers are inspected; busy: max_in_flight parts in flight, a trigger now gets the "
        "fail-safe result; fault: do not trust the station (camera lost, inspector down): divert every part.")
    reason: str = Field(description="Why, in words.")
    at: datetime = Field(description="When the state was entered, UTC ISO-8601.")
    in_flight: int = Field(ge=0, description="Triggers not yet answered.")


class PlcAckPayload(_Payload):
    """`.../ack` (PLC -> inspector): the PLC took the result (plc.ack_timeout_ms > 0 makes it expected)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Payload schema version (optional from the PLC).")
    part_id: str = Field(min_length=1, max_length=128, description="The result's part_id.")
    seq: int = Field(ge=0, le=2**63 - 1, description="The result's seq.")


PAYLOADS.update({"trigger": PlcTriggerPayload, "result": PlcResultPayload, "ready": PlcReadyPayload,
                 "ack": PlcAckPayload})
