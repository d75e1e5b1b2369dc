"""The bounded HTTP server's errors: a client that left before its answer is counted and logged at debug,
never printed as a traceback on the service's stderr (socketserver's default: seen as pages of BrokenPipe
tracebacks from /metrics in the test logs); any other handler error is logged with its traceback."""

from __future__ import annotations

import logging
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
