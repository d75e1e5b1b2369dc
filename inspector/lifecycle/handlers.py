"""What each control-socket command does on the running service (control.py carries them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def control_handler(svc) -> Callable[[dict[str, Any]], dict[str, Any]]:
    m = svc.lifecycle

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "status":
            return m.status()
        if cmd == "promote":
            return m.promote(_model(req))
        if cmd == "rollback":
            return m.rollback(why=str(req.get("why") or "by command"), by="command")
        if cmd == "shadow":
            return m.shadow_start(_model(req))
        if cmd == "shadow_stop":
            return m.shadow_stop()
        if cmd == "report":
            return m.shadow_report()
        raise ValueError(f"unknown cmd {cmd!r}")

    return handle


def _model(req: dict[str, Any]) -> str:
    model = req.get("model")
    if not isinstance(model, str):
        raise ValueError(f"model: expected NAME@VERSION, got {model!r}")  # noqa: TRY004 - answered as bad input
    return model
