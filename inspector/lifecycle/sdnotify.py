"""systemd's notify protocol with the stdlib: one datagram per message to $NOTIFY_SOCKET.

`deploy/systemd/inspector.service` runs `inspector run` as `Type=notify` with `WatchdogSec=`:
- READY=1 once the service is started (sinks, pipeline, source);
- WATCHDOG=1 every WATCHDOG_USEC/2, but only while verdicts flow (the report's `verdicts` and
  `model` health checks pass): a pipeline that stopped answering stops the pings, and systemd
  restarts the service after WatchdogSec;
- STATUS=<one line> with the figures; STOPPING=1 when the stop begins.

$NOTIFY_SOCKET is a path, or an abstract socket when it starts with `@` (the `@` stands for the
leading NUL byte). Without it (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr is not None and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.address = addr
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process the watchdog is for: ours, or the pings are not ours to send.
        ours = pid is None or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() and ours else None
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Sends `KEY=value` lines (keys upper-cased); False when not under systemd or the send failed."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(msg)
            self.sent += 1
            return True
        except OSError as e:
            self.failed += 1
            if self.failed == 1:
                log.warning("sd_notify to %r failed: %s", self.address, e)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify(ready=1, **({"status": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def status(self, text: str) -> bool:
        return self.notify(status=text)


def verdicts_flow(report) -> bool:
    """The watchdog's condition, read from the service report: verdicts are not stalled and the model
    answers. An idle line (no frames arriving) still counts as flowing: nothing is owed."""
    checks = {c.name: c.ok for c in report.health}
    return checks.get("verdicts", False) and checks.get("model", False)
