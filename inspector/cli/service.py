"""Commands: the line-side service and its companions: run, check-config, actuator, upload, schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.cli.common import load_config_arg

if TYPE_CHECKING:
    from inspector.config import InspectorConfig


def cmd_run(a: argparse.Namespace) -> int:
    from inspector.service.app import run_service

    return run_service(load_config_arg(a.config), max_frames=a.max_frames, duration=a.duration,
                       summary_json=a.summary_json, live=not a.no_live)


def cmd_check_config(a: argparse.Namespace) -> int:
    load_config_arg(a.file)
    print("OK")
    return 0


def cmd_actuator(a: argparse.Namespace) -> int:
    from inspector.devtools.actuator import run_actuator

    return run_actuator(load_config_arg(a.config), expect=a.expect, duration=a.duration)


def cmd_upload(a: argparse.Namespace) -> int:
    if not a.now:
        print("inspector upload: only --now is supported from the command line; "
              "the nightly window runs inside `inspector run`", file=sys.stderr)
        return 2
    return upload_now(load_config_arg(a.config))


def upload_now(cfg: InspectorConfig) -> int:
    """`inspector upload --now`: one pass, a summary line, exit 0 when everything was stored, else 1.
    Waits while another pass (the service's nightly uploader) holds the spool; runs at the background
    priority (a line PC's inference keeps the CPU)."""
    from inspector.kernel.priority import lower_thread_priority
    from inspector.review.upload import LOCK_NAME, Uploader

    lower_thread_priority("upload --now", cfg.background)

    def waiting(holder: str) -> None:
        print(f"upload: another upload pass holds {Path(cfg.spool.dir) / LOCK_NAME} ({holder}); waiting for it",
              file=sys.stderr, flush=True)

    def alarm(kind: str, detail: dict[str, Any]) -> None:
        print(f"{kind}: {detail['id']} ({detail['why']}) -> {detail['moved_to']}", file=sys.stderr, flush=True)

    rep = Uploader(cfg.spool.dir, cfg.upload, alarm=alarm).run(lock_timeout_s=None, on_wait=waiting)
    print(rep.summary())
    for m in rep.manifests:
        print(f"manifest {m}")
    for g in rep.galleries:
        print(f"gallery  {g}")
    return 0 if rep.ok else 1


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
