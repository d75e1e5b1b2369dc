"""The bounded HTTP server's errors: a client that left before its answer is counted and logged at debug,
never printed as a traceback on the service's stderr (socketserver's default: seen as pages of BrokenPipe
tracebacks from /metrics in the test logs); any other handler error is logged with its traceback."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from inspector.kernel.http import BoundedHTTPServer


@pytest.fixture
def server():
    srv = BoundedHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    yield srv
    srv.server_close()


@pytest.mark.parametrize("exc, gone, level", [
    (BrokenPipeError(32, "Broken pipe"), 1, logging.DEBUG),
    (ConnectionResetError(104, "Connection reset by peer"), 1, logging.DEBUG),
    (TimeoutError("timed out"), 1, logging.DEBUG),
    (ValueError("a bug in a handler"), 0, logging.ERROR),
])
def test_handler_errors(server, capsys, caplog, exc, gone, level):
    caplog.set_level(logging.DEBUG, logger="inspector.kernel.http")
    try:
        raise exc
    except Exception:
        server.handle_error(None, ("127.0.0.1", 5555))
    assert capsys.readouterr().err == ""
    assert server.clients_gone == gone
    (rec,) = caplog.records
    assert rec.levelno == level and "127.0.0.1" in rec.getMessage()
    assert (rec.exc_info is not None) == (level == logging.ERROR)


def test_threads_never_pass_the_cap_and_a_connection_no_thread_can_take_is_closed_unserved():
    """Handlers stuck in their work (not in a read the eviction can end): a connection beyond the cap evicts
    the oldest, but its thread cannot end, so the new connection gets no thread of its own: it is closed
    unserved after slot_timeout_s and counted. Before, every connection started a thread (cap + 1 here)."""
    stuck = threading.Event()
    started = threading.Semaphore(0)

    class Busy(BaseHTTPRequestHandler):
        def handle(self):
            started.release()
            stuck.wait(20)

    srv = BoundedHTTPServer(("127.0.0.1", 0), Busy, max_connections=2, slot_timeout_s=0.3)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    clients = []
    try:
        for _ in range(2):
            clients.append(socket.create_connection(srv.server_address, timeout=10))
            assert started.acquire(timeout=10), "a handler thread for each connection within the cap"
        late = socket.create_connection(srv.server_address, timeout=10)
        clients.append(late)
        assert late.recv(1) == b"", "closed unserved: no handler thread ended to make room"
        assert srv.refused == 1 and srv.evicted == 1 and srv.peak_handlers == 2
        stuck.set()
        clients.append(socket.create_connection(srv.server_address, timeout=10))
        assert started.acquire(timeout=10), "served again once the stuck handlers ended"
        assert srv.peak_handlers == 2
    finally:
        stuck.set()
        srv.shutdown()
        srv.server_close()
        for c in clients:
            c.close()


def test_an_evicted_handler_waiting_on_something_else_is_woken_and_the_new_connection_served():
    """An event stream between two events waits on its queue, not its socket: the socket's shutdown would end
    it only at its next write (the page's keep-alive: 15 s) while the new connection waits for its thread.
    `when_evicted` wakes it; without that hook the new connection is closed unserved (refused)."""
    started = threading.Semaphore(0)
    woken: list[bool] = []

    class Stream(BaseHTTPRequestHandler):
        def handle(self):
            wake = threading.Event()
            self.server.when_evicted(self.request, wake.set)
            started.release()
            woken.append(wake.wait(30))

    srv = BoundedHTTPServer(("127.0.0.1", 0), Stream, max_connections=1, slot_timeout_s=10)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    first = second = None
    try:
        first = socket.create_connection(srv.server_address, timeout=10)
        assert started.acquire(timeout=10)
        second = socket.create_connection(srv.server_address, timeout=10)
        assert started.acquire(timeout=20), "the new connection got a handler thread"
        assert woken == [True] and srv.evicted == 1 and srv.refused == 0 and srv.peak_handlers == 1
        assert first.recv(1) == b""
    finally:
        srv.shutdown()
        srv.server_close()
        for c in (first, second):
            if c is not None:
                c.close()
