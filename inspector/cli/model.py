"""Commands: `inspector model ...`, the model's life on the line (issue 13; docs/deploy.md).

    build     assemble a bundle from FP32 + INT8 IRs (the tool chain; `inspector model --fp32 ...`, the
              form before the group existed, still works and means `build`)
    sign      write model_card.sig (the plant's build step)
    stage     copy a bundle folder into the store, checked
    pull      download NAME@VERSION from lifecycle.remote into the store, checked
    list      stored versions, which is active, which is in shadow
    promote   switch the running service to NAME@VERSION between two frames
    rollback  switch the running service back to the previous version
    shadow    run NAME@VERSION beside the active model on the running service (--stop ends it)
    report    the shadow's agreement, rejects alone, latencies (printed; --json, --html)

stage/pull/list/sign work on the store directly; promote/rollback/shadow/report talk to the running
service over its control socket (lifecycle.socket). Exit codes: 0 ok, 2 bad input (a bundle refused
by a check, an unknown version), 1 runtime failure (no service, S3 down).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from pathlib import Path
from typing import Any

from inspector.cli.common import load_config_arg


def _store(a):
    from inspector.lifecycle.manager import open_store

    cfg = load_config_arg(a.config)
    store, trust = open_store(cfg)
    return cfg, store, trust


def _ask(a, doc: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    from inspector.lifecycle.control import request

    cfg = load_config_arg(a.config)
    return request(a.socket or cfg.lifecycle.socket, doc, timeout=timeout)


def cmd_stage(a: argparse.Namespace) -> int:
    from inspector.bundle.card import read_card
    from inspector.lifecycle.manager import check_task

    cfg, store, trust = _store(a)
    card = read_card(Path(a.dir))[0]
    check_task(cfg, card.task, f"{a.dir} ({card.name}@{card.version})")  # a kind the station cannot run
    ref = store.stage(Path(a.dir), trust)
    print(f"staged {ref} in {store.path(ref)} (sha256s checked against the card; signature: "
          f"{trust.alg or 'not required'})")
    return 0


def cmd_pull(a: argparse.Namespace) -> int:
    from inspector.errors import ConfigError
    from inspector.lifecycle.store import pull

    cfg, store, trust = _store(a)
    remote = a.remote or cfg.lifecycle.remote
    if remote is None:
        raise ConfigError("no remote store: set lifecycle.remote (s3://bucket/prefix) or pass --remote")
    ref = _parse(a.model)
    pull(store, remote, ref, trust, endpoint_url=a.endpoint_url or cfg.lifecycle.endpoint_url,
         region=cfg.lifecycle.region)
    print(f"pulled {ref} from {remote} into {store.path(ref)} (checked: every sha256"
          f"{', ' + trust.alg + ' signature' if trust.alg else ''}); not active: `inspector model promote {ref}`")
    return 0


def cmd_sign(a: argparse.Namespace) -> int:
    from inspector.bundle.signing import sign_card

    if a.alg == "hmac-sha256":
        key = os.environ.get("INSPECTOR_LIFECYCLE__HMAC_KEY", "")
        if not key:
            print("model sign: hmac-sha256 needs the key in INSPECTOR_LIFECYCLE__HMAC_KEY", file=sys.stderr)
            return 2
        out = sign_card(Path(a.dir), a.alg, hmac_key=key.encode(), key_id=a.key_id)
    else:
        if not a.private_key:
            print("model sign: ed25519 needs --private-key (PEM)", file=sys.stderr)
            return 2
        out = sign_card(Path(a.dir), a.alg, private_key=Path(a.private_key), key_id=a.key_id)
    print(f"wrote {out}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from inspector.errors import InspectorError

    _, store, _ = _store(a)
    active, shadow, running = store.active_ref(), None, False
    try:
        st = _ask(a, {"cmd": "status"}, timeout=10)
        running, shadow = True, st.get("shadow")
    except InspectorError:
        pass
    rows = [{"ref": str(v.ref), "created": v.created, "signed": v.signed, "active": v.ref == active,
             "shadow": shadow == str(v.ref)} for v in store.versions()]
    if a.json:
        print(json.dumps({"store": str(store.root), "station": store.station, "active": str(active) if active else None,
                          "previous": str(store.previous_ref()) if store.previous_ref() else None,
                          "service_running": running, "versions": rows}, indent=2))
        return 0
    print(f"store {store.root}, station {store.station}"
          + ("" if running else " (service not reachable: shadow unknown)"))
    if not rows:
        print("  (no versions)")
    for r in rows:
        flags = ", ".join(f for f, on in (("ACTIVE", r["active"]), ("shadow", r["shadow"]), ("signed", r["signed"]))
                          if on)
        print(f"  {r['ref']:<32} {r['created'] or '':<27} {flags}")
    return 0


def cmd_promote(a: argparse.Namespace) -> int:
    r = _ask(a, {"cmd": "promote", "model": str(_parse(a.model))})
    print(f"promoted {r['active']} (was {r['previous']}): switched after frame {r['last_old_frame_id']}, "
          f"compiled and warmed in {r.get('compile_s', 0):.2f} s")
    return 0


def cmd_rollback(a: argparse.Namespace) -> int:
    r = _ask(a, {"cmd": "rollback", "why": a.why})
    print(f"rolled back to {r['active']} (from {r['previous']}) after frame {r['last_old_frame_id']}")
    return 0


def cmd_shadow(a: argparse.Namespace) -> int:
    if a.stop:
        r = _ask(a, {"cmd": "shadow_stop"})
        print(f"shadow {r['stopped']} stopped")
        print(format_report(r["report"]))
        return 0
    if not a.model:
        print("model shadow: NAME@VERSION or --stop", file=sys.stderr)
        return 2
    r = _ask(a, {"cmd": "shadow", "model": str(_parse(a.model))})
    print(f"shadow {r['shadow']} runs beside the active model (thread {r['priority']})")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    r = _ask(a, {"cmd": "report"}, timeout=30)
    print(format_report(r))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(r, indent=2))
    if a.html:
        Path(a.html).parent.mkdir(parents=True, exist_ok=True)
        Path(a.html).write_text(report_html(r))
    return 0


def _parse(text: str):
    from inspector.errors import ConfigError
    from inspector.lifecycle.store import ModelRef

    try:
        return ModelRef.parse(text)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _ms(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} ms"


def format_report(r: dict[str, Any]) -> str:
    agreement = "-" if r.get("agreement") is None else f"{r['agreement']:.2%}"
    lines = [(f"shadow {r['model']} beside {r.get('active', 'the active model')}: judged {r['judged']} of "
              f"{r['offered']} offered (dropped {r['dropped']} when behind; not compared {r['not_compared'] or 0})"),
             (f"agreement on reject/pass: {agreement} ({r['agree']} agree, {r['disagree']} disagree; "
              f"{r['spooled_disagreements']} sent to the spool as shadow_disagree)"),
             (f"rejected by one model alone: active {r['rejected_alone']['active']}, "
              f"shadow {r['rejected_alone']['shadow']}"),
             f"  {'class':<16}{'both':>7}{'active':>8}{'shadow':>8}{'neither':>9}{'agree':>9}"]
    for c, row in r["per_class"].items():
        ag = "-" if row["agreement"] is None else f"{row['agreement']:.2%}"
        lines.append(f"  {c:<16}{row['both']:>7}{row['active_only']:>8}{row['shadow_only']:>8}{row['neither']:>9}"
                     f"{ag:>9}")
    lat = r["latency_ms"]
    lines.append(f"latency: active inference {_ms(lat['active_infer'])} (capture to verdict "
                 f"{_ms(lat['active_total'])}); shadow inference {_ms(lat['shadow_infer'])}")
    return "\n".join(lines)


def report_html(r: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(c)}</td><td>{row['both']}</td><td>{row['active_only']}</td><td>{row['shadow_only']}"
                   f"</td><td>{row['neither']}</td><td>{row['agreement']}</td></tr>"
                   for c, row in r["per_class"].items())
    alone = "".join(f"<h3>rejected by {e(k)} alone ({r['rejected_alone'][k]})</h3><p>{e(', '.join(ids)) or '-'}</p>"
                    for k, ids in r["rejected_alone_ids"].items())
    return (f"<!doctype html><meta charset=utf-8><title>shadow {e(r['model'])}</title>"
            f"<h1>shadow {e(r['model'])} beside {e(str(r.get('active')))}</h1>"
            f"<pre>{e(format_report(r))}</pre>"
            f"<table border=1><tr><th>class</th><th>both</th><th>active only</th><th>shadow only</th>"
            f"<th>neither</th><th>agreement</th></tr>{rows}</table>{alone}")


def register(sub: argparse._SubParsersAction) -> None:
    from inspector.cli.training import register_model_build

    m = sub.add_parser("model", help="the model's life on the line: build, sign, stage, pull, list, promote, "
                                     "rollback, shadow, report (docs/deploy.md)")
    msub = m.add_subparsers(dest="model_command", required=True)
    register_model_build(msub)

    def common(p: argparse.ArgumentParser, socket: bool = False) -> None:
        p.add_argument("--config", default=None, help="the service's config (lifecycle section: store, remote, keys)")
        if socket:
            p.add_argument("--socket", default=None, help="control socket (default: lifecycle.socket of --config)")

    s = msub.add_parser("sign", help="write DIR/model_card.sig over the card (the plant's build step)")
    s.add_argument("dir", help="bundle folder")
    s.add_argument("--alg", choices=("hmac-sha256", "ed25519"), required=True,
                   help="hmac-sha256: key from INSPECTOR_LIFECYCLE__HMAC_KEY; ed25519: --private-key")
    s.add_argument("--private-key", default=None, help="ed25519: PEM private key (signing extra)")
    s.add_argument("--key-id", default=None, help="a name for the key, written beside the signature")
    s.set_defaults(fn=cmd_sign)

    s = msub.add_parser("stage", help="copy a bundle folder into the store (every sha256 and the signature checked)")
    s.add_argument("dir", help="bundle folder (model_card.json and the files it names)")
    common(s)
    s.set_defaults(fn=cmd_stage)

    s = msub.add_parser("pull", help="download NAME@VERSION from the remote store into the store, checked")
    s.add_argument("model", help="NAME@VERSION")
    s.add_argument("--remote", default=None, help="s3://bucket/prefix (default: lifecycle.remote)")
    s.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: lifecycle.endpoint_url)")
    common(s)
    s.set_defaults(fn=cmd_pull)

    s = msub.add_parser("list", help="stored versions; which is active, which is in shadow")
    s.add_argument("--json", action="store_true", help="print JSON")
    common(s, socket=True)
    s.set_defaults(fn=cmd_list)

    s = msub.add_parser("promote", help="switch the running service to NAME@VERSION between two frames")
    s.add_argument("model", help="NAME@VERSION (in the store)")
    common(s, socket=True)
    s.set_defaults(fn=cmd_promote)

    s = msub.add_parser("rollback", help="switch the running service back to the previous version")
    s.add_argument("--why", default="by command", help="reason, carried in the model_rolled_back alarm")
    common(s, socket=True)
    s.set_defaults(fn=cmd_rollback)

    s = msub.add_parser("shadow", help="run NAME@VERSION beside the active model, without actuating")
    s.add_argument("model", nargs="?", default=None, help="NAME@VERSION (in the store)")
    s.add_argument("--stop", action="store_true", help="stop the shadow (prints its final report)")
    common(s, socket=True)
    s.set_defaults(fn=cmd_shadow)

    s = msub.add_parser("report", help="the shadow's agreement, parts rejected alone and latencies")
    s.add_argument("--json", default=None, help="also write the report as JSON here")
    s.add_argument("--html", default=None, help="also write the report as HTML here")
    common(s, socket=True)
    s.set_defaults(fn=cmd_report)


def legacy_argv(argv: list[str]) -> list[str]:
    """`inspector model --fp32 ...` (the bundle builder before `model` became a group) -> `model build ...`."""
    if len(argv) >= 2 and argv[0] == "model" and argv[1].startswith("--") and argv[1] not in ("-h", "--help"):
        return ["model", "build", *argv[1:]]
    return argv
