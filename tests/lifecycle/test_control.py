"""The control socket: created 0600 (or 0660 with a group), and nobody else may switch a model: the
kernel refuses the connect, and where the file mode would let them in, the peer-credential check does."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from inspector.lifecycle.control import ControlError, ControlServer, request
from tests.waiting import wait_for

NOBODY = 65534


def _as_nobody(path: str, send_when=None) -> dict:
    """Connects and sends one request as uid/gid 65534 from a child process; returns what it got.
    `send_when`: called in the parent once the child is connected; the child sends after it returns."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                if send_when is not None:
                    os.read(go_r, 1)
                s.sendall(b'{"cmd": "promote", "model": "demo@9.9.9"}\n')
                out = s.recv(65536)
        except OSError as e:
            out = json.dumps({"os_error": type(e).__name__}).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    if send_when is not None:
        send_when()
        os.write(go_w, b"g")
    data = os.read(r, 65536)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def server(tmp_path):
    calls = []
    srv = ControlServer(tmp_path / "run" / "ctl.sock", lambda req: calls.append(req) or {"done": req["cmd"]})
    srv.start()
    yield srv, calls
    srv.stop()


def test_the_socket_is_0600_and_answers_its_owner(server):
    srv, calls = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(srv.path.parent).st_mode) == 0o700
    assert request(srv.path, {"cmd": "status"}) == {"done": "status"}
    with pytest.raises(ControlError, match="cmd: expected one of") as e:
        request(srv.path, {"cmd": "format_disk"})
    assert e.value.exit_code == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_switch_a_model():
    base = Path(tempfile.mkdtemp(prefix="inspector-ctl-", dir="/tmp"))  # pytest's tmp is 0700: nobody can't reach
    os.chmod(base, 0o755)
    calls = []
    srv = ControlServer(base / "run" / "ctl.sock", lambda req: calls.append(req) or {})
    srv.start()
    try:
        _refused(srv, calls)
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def _refused(srv, calls):
    os.chmod(srv.path.parent, 0o755)  # let nobody reach the socket file: the file mode refuses
    assert _as_nobody(str(srv.path)) == {"os_error": "PermissionError"}
    os.chmod(srv.path, 0o666)  # a mistaken chmod: the peer credentials still refuse
    got = _as_nobody(str(srv.path))
    assert got["ok"] is False and got["error"].startswith("forbidden: uid 65534")
    assert calls == [] and srv.refused == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_refused_user_whose_request_comes_after_the_check_is_told_forbidden():
    """The client sends once the server has already checked its credentials (a slow or descheduled client):
    it still gets the refusal, not EPIPE / ECONNRESET (before: the server answered and closed at once)."""
    base = Path(tempfile.mkdtemp(prefix="inspector-ctl-", dir="/tmp"))
    os.chmod(base, 0o755)
    calls = []
    srv = ControlServer(base / "run" / "ctl.sock", lambda req: calls.append(req) or {})
    srv.start()
    try:
        os.chmod(srv.path.parent, 0o755)
        os.chmod(srv.path, 0o666)
        got = _as_nobody(str(srv.path), send_when=lambda: wait_for(lambda: srv.refused == 1, 10, "the peer check"))
        assert got.get("ok") is False and got["error"].startswith("forbidden: uid 65534"), got
        assert calls == []
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_second_service_on_the_same_socket_is_refused(server, tmp_path):
    srv, _ = server
    from inspector.errors import InspectorError

    with pytest.raises(InspectorError, match="another service already listens"):
        ControlServer(srv.path, lambda req: {}).start()


def test_a_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "ctl.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # left by a killed service
    srv = ControlServer(path, lambda req: {"ok": 1})
    srv.start()
    try:
        assert request(path, {"cmd": "status"}) == {"ok": 1}
    finally:
        srv.stop()
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_refused_user_who_drips_bytes_is_answered_without_waiting_for_the_whole_line():
    """The refused peer's request is read for REFUSED_READ_S in all, not per byte: a client sending one
    byte every 0.3 s and never a newline gets "forbidden" long before it would have sent 40 (12 s). Before,
    each recv had its own 2 s, so such a client held its server thread for as long as it kept dripping."""
    base = Path(tempfile.mkdtemp(prefix="inspector-ctl-", dir="/tmp"))
    os.chmod(base, 0o755)
    srv = ControlServer(base / "run" / "ctl.sock", lambda req: {})
    srv.start()
    os.chmod(srv.path.parent, 0o755)
    os.chmod(srv.path, 0o666)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nobody, dripping
        sent, got = 0, b""
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(srv.path))
                s.settimeout(0.3)
                while sent < 40 and not got:
                    s.sendall(b"{")
                    sent += 1
                    try:
                        got = s.recv(65536)
                    except TimeoutError:
                        pass
        except OSError as e:
            got = repr(e).encode()
        os.write(w, json.dumps({"sent": sent, "got": got.decode(errors="replace")}).encode())
        os._exit(0)
    os.close(w)
    try:
        out = json.loads(os.read(r, 65536))
        os.waitpid(pid, 0)
        assert "forbidden: uid 65534" in out["got"], out
        assert out["sent"] < 40, f"the refusal came only after the client stopped sending: {out}"
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
