"""The one JSON record of a verdict: what every consumer outside the process reads about it.

`verdict_record` is the single place a `Verdict` becomes JSON. The JSONL audit log writes it as
is; the MQTT payloads (`signalling.payloads`) and the spool sidecar (`review.spool`) are built
from it, so a field means the same thing (and is rounded the same way) everywhere.
"""

from __future__ import annotations

from typing import Any

from inspector.frames import Defect, Verdict, iso_utc


def defect_record(d: Defect) -> dict[str, Any]:
    """A finding: class name and id, confidence (4 decimals; a classifier's probability of the class), box x0, y0,
    x1, y1 (0.1 px); a whole-image finding (classify) has no `box` key."""
    rec = {"class": d.class_name, "class_id": int(d.class_id), "confidence": round(float(d.confidence), 4)}
    if d.box is not None:
        rec["box"] = [round(float(x), 1) for x in d.box]
    return rec


def verdict_record(v: Verdict) -> dict[str, Any]:
    """The verdict as JSON-able data. `captured_wall`/`deadline_wall` are UTC epoch seconds (full
    precision, for the payload timestamps); `captured_at`/`deadline` the same instants as ISO-8601."""
    f = v.frame
    return {
        "frame_id": f.frame_id,
        "part_id": f.part_id,
        "captured_at": f.captured_iso,
        "captured_wall": f.captured_wall,
        "deadline": iso_utc(v.deadline_wall),
        "deadline_wall": v.deadline_wall,
        "verdict": v.outcome.value,
        "actuate": v.actuate,
        "reason": v.reason.value if v.reason else None,
        "error": v.error,
        "defects": [defect_record(d) for d in v.defects],
        "uncertain": [defect_record(d) for d in v.uncertain],
        "latency_ms": round(v.timings.total_ms, 3),
        "model": {"name": v.model.name, "version": v.model.version, "sha256": v.model.sha256},
        # classify only (a detect record has no such key): the probability of every class, 4 decimals
        **({} if v.class_scores is None else {"class_scores": {c: round(float(p), 4) for c, p in v.class_scores}}),
    }
