"""The control channel: a Unix domain socket the running service listens on, for `inspector model`.

Why a Unix socket (and not an MQTT command topic): it never leaves the machine, needs no broker
credentials or TLS set-up to be safe, and the kernel authenticates the caller. Who may switch a
model is decided by file permissions: the socket is created 0600 (only the service's user) or 0660
with `lifecycle.socket_group`, in a folder the service creates 0700 (0750 with a group). On top,
each connection's peer credentials (SO_PEERCRED) are checked: root, the service's own user, or (0660)
a member of the group; anyone else is answered `forbidden` and nothing runs.

Protocol (docs/contracts.md): one request per connection, one JSON object per line each way.
    -> {"cmd": "status" | "promote" | "rollback" | "shadow" | "shadow_stop" | "report", ...}
    <- {"ok": true, "result": {...}}  or  {"ok": false, "error": "<why>", "exit_code": 2 | 1}
`promote` and `shadow` take "model": "NAME@VERSION"; `rollback` takes an optional "why".
A request line longer than 64 KiB is refused.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.errors import InspectorError
from inspector.kernel import realtime

log = logging.getLogger(__name__)

#: How long a refused peer may take to send its request before it gets the refusal anyway.
REFUSED_READ_S = 2.0
MAX_LINE = 64 * 1024
COMMANDS = ("status", "promote", "rollback", "shadow", "shadow_stop", "report")


class ControlError(InspectorError):
    """The control socket could not be reached, or refused the request."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ControlServer:
    def __init__(self, path: Path | str, handle: Callable[[dict[str, Any]], dict[str, Any]], *,
                 mode: str = "0600", group: str | None = None) -> None:
        self.path = Path(path)
        self._handle = handle
        self.mode = int(mode, 8)
        self.group = group
        self._gid = grp.getgrnam(group).gr_gid if group else None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.refused = 0
        self.served = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750 if self._gid is not None else 0o700)
        if self.path.exists() or self.path.is_symlink():
            if _listening(self.path):
                raise InspectorError(f"control socket {self.path}: another service already listens on it")
            self.path.unlink()  # left by a service that was killed
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # umask for the bind: the socket never exists with looser permissions, not even for an instant.
        old = os.umask(0o777 & ~self.mode)
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        if self._gid is not None:
            os.chown(self.path, -1, self._gid)
        s.listen(8)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="lifecycle-control", daemon=True)
        self._thread.start()
        log.info("control socket %s (mode %s%s)", self.path, oct(self.mode),
                 f", group {self.group}" if self.group else "")

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        realtime.enter("service")
        # Normal priority on purpose: a promote compiles the next active model on this thread's
        # children, and OpenVINO's threads inherit the niceness of their creator (manager.py).
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            threading.Thread(target=self._one, args=(conn,), name="lifecycle-control-conn", daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        realtime.enter("lifecycle")  # a promote's compile and warm-up: below a real-time frame path (realtime.py)
        with conn:
            conn.settimeout(600)
            who = self._peer(conn)
            if who is not None:
                self.refused += 1
                log.warning("control socket: refused %s", who)
                # Its request is read (bounded) before the refusal goes: closing first made the client's send
                # fail with EPIPE, or its unread bytes reset the connection, so the refused user saw an OS
                # error instead of "forbidden" (seen in a CI run under load).
                _drain_refused(conn)
                try:
                    _send(conn, {"ok": False, "error": f"forbidden: {who}", "exit_code": 2})
                except OSError:
                    pass
                return
            try:
                req = _recv(conn)
            except EOFError:  # connected and left (a liveness probe: `_listening` of a second service)
                return
            except (ValueError, OSError) as e:
                try:
                    _send(conn, {"ok": False, "error": f"bad request: {e}", "exit_code": 2})
                except OSError:
                    pass
                return
            self.served += 1
            cmd = req.get("cmd")
            if cmd not in COMMANDS:
                _send(conn, {"ok": False, "error": f"cmd: expected one of {list(COMMANDS)}, got {cmd!r}",
                             "exit_code": 2})
                return
            try:
                result = self._handle(req)
                reply = {"ok": True, "result": result}
            except InspectorError as e:
                reply = {"ok": False, "error": str(e), "exit_code": e.exit_code}
            except (ValueError, KeyError) as e:
                reply = {"ok": False, "error": f"bad request: {e}", "exit_code": 2}
            except Exception as e:
                log.exception("control command %s failed", cmd)
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "exit_code": 1}
            try:
                _send(conn, reply)
            except OSError:
                log.warning("control socket: the client left before the answer to %s", cmd)

    def _peer(self, conn: socket.socket) -> str | None:
        """None when the peer may use the socket, else who it is (SO_PEERCRED: pid, uid, gid)."""
        try:
            pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
        except OSError as e:
            return f"peer credentials unavailable ({e})"
        if uid in (0, os.geteuid()):
            return None
        if self._gid is not None and (gid == self._gid or self._gid in _groups(pid)):
            return None
        return f"uid {uid} (pid {pid}) is neither root, the service's user nor in group {self.group}"


def _groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _send(conn: socket.socket, doc: dict[str, Any]) -> None:
    conn.sendall(json.dumps(doc, default=str).encode() + b"\n")


def _drain_refused(conn: socket.socket) -> None:
    """Reads a refused peer's request, whatever it holds, for at most REFUSED_READ_S in all (one deadline,
    not one per recv: a peer dripping a byte a second would otherwise hold this thread for hours)."""
    end = time.monotonic() + REFUSED_READ_S
    got = 0
    while got <= MAX_LINE:
        left = end - time.monotonic()
        if left <= 0:
            return
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except OSError:
            return
        if not chunk or b"\n" in chunk:
            return
        got += len(chunk)


def _recv(conn: socket.socket) -> dict[str, Any]:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ValueError(f"request longer than {MAX_LINE} bytes")
    if not buf:
        raise EOFError("the peer closed without a request")
    line = buf.split(b"\n", 1)[0]
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")  # noqa: TRY004 - bad input, like bad JSON
    return doc


def request(path: Path | str, doc: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Sends one request to the service's control socket; returns `result` or raises ControlError."""
    path = Path(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError as e:
            raise ControlError(f"control socket {path} does not exist: is `inspector run` running with "
                               "lifecycle.enabled: true (and the same lifecycle.socket)?") from e
        except PermissionError as e:
            raise ControlError(f"control socket {path}: permission denied (the socket is "
                               "0600/0660: run as the service's user or a member of lifecycle.socket_group)",
                               exit_code=2) from e
        except OSError as e:
            raise ControlError(f"control socket {path}: cannot connect ({e}); is the service running?") from e
        _send(s, doc)
        try:
            reply = _recv(s)
        except (ValueError, OSError, EOFError) as e:
            raise ControlError(f"control socket {path}: no valid answer ({e})") from e
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "refused"), exit_code=int(reply.get("exit_code", 1)))
    return reply.get("result", {})
