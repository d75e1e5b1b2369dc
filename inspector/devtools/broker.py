"""A private MQTT broker on a free loopback port, for the tests and the demo (never for a line).

`LocalBroker` runs `/usr/sbin/mosquitto` with its own config and persistence directory, so it can
be killed with SIGKILL and restarted on the same port with its saved state, like a real broker
crash. Optional: a password file (username/password) and a TLS listener (CA, server cert/key).

When Mosquitto is not installed it falls back to an embedded amqtt broker in a subprocess:
DEMO-ONLY. amqtt speaks MQTT 3.1.1 only (set `mqtt.protocol: v311`), has no persistence across
restarts, no message expiry and no TLS/password support here; `protocols` says what it speaks.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import PublishError

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass(frozen=True, slots=True)
class BrokerTLS:
    """Server side of a TLS listener (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_cert: bool = False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).is_file() and os.access(MOSQUITTO, os.X_OK)


def hash_password(password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """A mosquitto password-file hash ($7$: PBKDF2-SHA512), as `mosquitto_passwd` writes it."""
    salt = salt or os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


class LocalBroker:
    """start() / stop() / kill() / restart(); `host`, `port`. Usable as a context manager."""

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, tls: BrokerTLS | None = None,
                 users: dict[str, str] | None = None, impl: str = "auto", max_queued: int = 100_000) -> None:
        if impl not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"impl must be auto, mosquitto or amqtt, got {impl!r}")
        if impl == "auto":
            impl = "mosquitto" if mosquitto_available() else "amqtt"
        if impl == "amqtt" and (tls or users):
            raise PublishError("the embedded amqtt fallback supports neither TLS nor passwords here: install mosquitto")
        self.impl = impl
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.tls = tls
        self.users = dict(users or {})
        self.max_queued = max_queued
        self._own_dir = workdir is None
        self.workdir = Path(workdir).resolve() if workdir else Path(tempfile.mkdtemp(prefix="inspector-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir = self.workdir / "data"
        self.persistence_dir.mkdir(exist_ok=True)
        self.log_file = self.workdir / "broker.log"
        self._proc: subprocess.Popen | None = None
        self.protocols = ("v5", "v311") if impl == "mosquitto" else ("v311",)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> LocalBroker:
        if self._proc is not None and self._proc.poll() is None:
            return self
        cmd = self._command()
        log = self.log_file.open("ab")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        self._wait_listening(timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: a clean stop (mosquitto saves its state)."""
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        """SIGKILL: a crash; only what was autosaved (every second) survives."""
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGKILL)
        p.wait()

    def restart(self, timeout: float = 10.0) -> LocalBroker:
        """Start again on the same port with the same persistence directory."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        if self.impl == "amqtt":
            return [sys.executable, "-m", "inspector.devtools.broker", "amqtt", self.host, str(self.port)]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._mosquitto_conf())
        return [MOSQUITTO, "-c", str(conf)]

    def _mosquitto_conf(self) -> str:
        lines = [
            "# written by inspector.devtools.broker.LocalBroker: a private test/demo broker",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "autosave_interval 1",  # a kill -9 loses at most ~1 s of broker state
            f"max_queued_messages {self.max_queued}",  # the default 1000 is too few for an offline subscriber
            "set_tcp_nodelay true",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto', who cannot write our dir
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("".join(f"{u}:{hash_password(p)}\n" for u, p in self.users.items()))
            pw.chmod(0o600)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}", f"keyfile {self.tls.key_file}",
                      f"require_certificate {'true' if self.tls.require_client_cert else 'false'}"]
        return "\n".join(lines) + "\n"

    def _wait_listening(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise PublishError(f"{self.impl} broker exited with code {self._proc.returncode} at start "
                                   f"(expected it to listen on {self.host}:{self.port}):\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise PublishError(f"{self.impl} broker not listening on {self.host}:{self.port} after {timeout:.0f} s:\n"
                           f"{self.log_tail()}")


def _amqtt_main(host: str, port: int) -> None:
    """The embedded fallback broker (demo-only), run as `python -m inspector.devtools.broker amqtt HOST PORT`."""
    import asyncio

    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    if sys.argv[1:2] == ["amqtt"] and len(sys.argv) == 4:
        _amqtt_main(sys.argv[2], int(sys.argv[3]))
    else:
        print("usage: python -m inspector.devtools.broker amqtt HOST PORT", file=sys.stderr)
        sys.exit(2)
