"""Commands: the line-side service and its companions: run, check-config, actuator, upload, schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.cli.common import load_config_arg


def cmd_run(a: argparse.Namespace) -> int:
    from inspector.service.app import run_service

    return run_service(load_config_arg(a.config), max_frames=a.max_frames, duration=a.duration,
                       summary_json=a.summary_json, live=not a.no_live)


def cmd_check_config(a: argparse.Namespace) -> int:
    load_config_arg(a.file)
    print("OK")
    return 0


def cmd_actuator(a: argparse.Namespace) -> int:
    from inspector.signalling.actuator import run_actuator

    return run_actuator(load_config_arg(a.config), expect=a.expect, duration=a.duration)


def cmd_upload(a: argparse.Namespace) -> int:
    from inspector.review.uploader import upload_now

    if not a.now:
        print("inspector upload: only --now is supported from the command line; "
              "the nightly window runs inside `inspector run`", file=sys.stderr)
        return 2
    return upload_now(load_config_arg(a.config))


def cmd_schema(a: argparse.Namespace) -> int:
    from inspector.schemas import write_schemas

    for p in write_schemas(Path(a.out)):
        print(p)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("run", help="run the line-side service")
    s.add_argument("--config", required=True,
                   help="YAML config of the station (see configs/ and schemas/config.schema.json)")
    s.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    s.add_argument("--summary-json", default=None, help="also write the end-of-run summary as JSON")
    s.add_argument("--no-live", action="store_true", help="no live status line even on a terminal")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("check-config", help="validate a config file (exit 2 on error)")
    s.add_argument("file", help="the YAML config file to validate")
    s.set_defaults(fn=cmd_check_config)

    s = sub.add_parser("actuator", help="reference line-side subscriber of rejects")
    s.add_argument("--config", required=True,
                   help="the station's config: the actuator subscribes to its mqtt section's topics")
    s.add_argument("--expect", type=int, default=None, help="exit non-zero unless N distinct rejects arrived")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    s.set_defaults(fn=cmd_actuator)

    s = sub.add_parser("upload", help="upload the spool")
    s.add_argument("--now", action="store_true", help="upload now, ignoring the nightly window")
    s.add_argument("--config", required=True,
                   help="the station's config: its spool and upload sections say what goes where")
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("schema", help="write the JSON Schemas of the config and MQTT payloads")
    s.add_argument("--out", default="schemas", help="folder the JSON Schemas are written to (default: schemas)")
    s.set_defaults(fn=cmd_schema)
