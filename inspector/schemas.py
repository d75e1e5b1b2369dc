"""Writes the JSON Schemas of the contracts (config and MQTT payloads) for the repo and the line.

The files are committed (schemas/): a change to a contract shows up as a diff in review.
"""

from __future__ import annotations

import json
from pathlib import Path

from inspector.config import json_schema
from inspector.signalling.payloads import PAYLOADS, SCHEMA_VERSION


def write_schemas(out_dir: Path) -> list[Path]:
    """Writes config.schema.json and mqtt-<topic>.schema.json; returns the paths, in order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = {"config.schema.json": json_schema()}
    for topic, model in PAYLOADS.items():
        schema = model.model_json_schema(by_alias=True)
        schema["$comment"] = f"MQTT topic <prefix>/<line>/<station>/{topic}, schema_version {SCHEMA_VERSION}"
        docs[f"mqtt-{topic}.schema.json"] = schema
    written = []
    for name, schema in docs.items():
        path = out_dir / name
        # Sorted keys and a trailing newline: regenerating an unchanged contract is a no-op diff.
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
