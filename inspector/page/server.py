"""The page's HTTP server: stdlib `http.server` on its own port, at most `max_clients` event streams.

Endpoints: `GET /` (index.html), `GET /static/<file>` (page.js, page.css), `GET /events` (server-sent
events: `hello` with everything, then `state`, `frame`, `reject`, `delivery`, `alarms` as they happen),
`POST /alarms/<kind>/ack` (the only write; an audit line in the log names the client address).

Security (docs/contracts.md, "Line-side page"): bound to 127.0.0.1 by default. A bind outside 127.0.0.0/8
and ::1 needs a token (INSPECTOR_PAGE__TOKEN, environment only): without one the service refuses to start
(exit 2). With a token configured every request must carry it (`?token=` or `Authorization: Bearer`):
none -> 401, a wrong one -> 403. The acknowledge must also carry the header `X-Inspector-Page: ack`: a
cross-site form or fetch cannot set it without a CORS preflight, which this server never grants. Every
response forbids inline script (Content-Security-Policy), and page.js writes data only with textContent.

Threads: the server's accept loop runs in the background group (kernel/realtime.py: below the frame path); the
handler threads it starts inherit that. A stream's writes time out after SEND_TIMEOUT_S (a browser that
stopped reading is dropped); the connection count is bounded by kernel/http.py's BoundedHTTPServer.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from inspector.config import PageConfig
from inspector.errors import ConfigError
from inspector.kernel import realtime
from inspector.kernel.http import BoundedHTTPServer
from inspector.page.broadcast import Broadcaster, encode
from inspector.page.feed import PageFeed
from inspector.page.view import PageView

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0  # a browser that does not take an event within this long is dropped
KEEPALIVE_S = 15.0  # a comment line when nothing happened: proxies and the browser keep the stream open
EXTRA_CONNECTIONS = 4  # short requests (page, script, acknowledge) beside the event streams
STATIC = {"index.html": "text/html; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
          "page.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` are loopback; any other address or name (0.0.0.0 included) is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(cfg: PageConfig) -> None:
    """Refuses a non-loopback bind without a token (ConfigError: exit 2)."""
    if not is_loopback(cfg.host) and (cfg.token is None or not cfg.token.get_secret_value()):
        raise ConfigError(f"page.host: {cfg.host!r} is not a loopback address (127.0.0.0/8, ::1): the page needs a "
                          "token there; set INSPECTOR_PAGE__TOKEN in the environment, or bind page.host to 127.0.0.1")


def _static(name: str) -> bytes:
    return resources.files("inspector.page").joinpath("static", name).read_bytes()


class LinePage:
    """The page: its feed (on the post thread), its worker, its server. `start()` after the sinks."""

    def __init__(self, cfg: PageConfig, svc: Any) -> None:
        check_bind(cfg)
        self.cfg = cfg
        self.svc = svc
        self.feed = PageFeed()
        self.hub = Broadcaster(cfg.max_clients)
        self.view = PageView(svc, self.feed, self.hub, frame_fps=cfg.frame_fps, frame_width=cfg.frame_width,
                             thumb_width=cfg.thumb_width)
        self.httpd: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.acks = 0
        self.unauthorized = 0

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    @property
    def address(self) -> tuple[str, int]:
        assert self.httpd is not None
        return self.httpd.server_address[0], self.httpd.server_address[1]

    def start(self) -> None:
        token = self.cfg.token.get_secret_value() if self.cfg.token is not None else None
        handler = _handler(self, token or None)
        try:
            self.httpd = BoundedHTTPServer((self.cfg.host, self.cfg.port), handler,
                                           self.cfg.max_clients + EXTRA_CONNECTIONS)
        except OSError as e:
            raise ConfigError(f"page: cannot listen on {self.cfg.host}:{self.cfg.port}: {e}") from e
        self.view.start()
        self._thread = threading.Thread(target=realtime.runs_in("background", self.httpd.serve_forever, "page-http"),
                                        name="page-http", daemon=True)
        self._thread.start()
        log.info("page: the line-side page is at %s%s", self.url, " (token required)" if token else "")

    def stop(self, timeout: float = 1.0) -> None:
        self.hub.close()
        self.view.stop(timeout / 2)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def state(self) -> dict[str, Any]:
        return {**self.hub.state(), "acks": self.acks, "unauthorized": self.unauthorized,
                "errors": self.view.errors, "ticks": self.view.ticks}


def _handler(page: LinePage, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SEND_TIMEOUT_S  # socket timeout: reads and every write of an event stream
        server_version = "inspector-page"
        sys_version = ""

        def _authorized(self, query: dict[str, list[str]]) -> bool:
            if token is None:
                return True
            given = query.get("token", [None])[0]
            auth = self.headers.get("Authorization", "")
            if given is None and auth.startswith("Bearer "):
                given = auth[len("Bearer "):]
            if given is not None and hmac.compare_digest(given.encode(), token.encode()):
                return True
            page.unauthorized += 1
            self._plain(401 if given is None else 403, "a token is required" if given is None else "wrong token")
            return False

        def _plain(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _body(self, data: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if not self._authorized(urllib.parse.parse_qs(url.query)):
                return
            if url.path in ("/", "/index.html"):
                self._body(_static("index.html"), STATIC["index.html"])
            elif url.path.startswith("/static/") and url.path[len("/static/"):] in STATIC:
                name = url.path[len("/static/"):]
                self._body(_static(name), STATIC[name])
            elif url.path == "/events":
                self._events()
            else:
                self._plain(404, "not found")

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            if not self._authorized(urllib.parse.parse_qs(url.query)):
                return
            parts = url.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "alarms" or parts[2] != "ack":
                self._plain(404, "not found")
                return
            if self.headers.get("X-Inspector-Page") != "ack":
                self._plain(403, "acknowledge from the page only (header X-Inspector-Page: ack)")
                return
            kind = urllib.parse.unquote(parts[1])
            who = f"{self.client_address[0]}:{self.client_address[1]}"
            if not page.view.acknowledge(kind, who):
                self._plain(404, f"no open alarm {kind!r}")
                return
            page.acks += 1
            log.warning("AUDIT page: alarm %r acknowledged from %s (user agent %r)", kind, who,
                        self.headers.get("User-Agent", "")[:120])
            self._plain(200, "acknowledged")

        def _events(self):
            client = page.hub.join(f"{self.client_address[0]}:{self.client_address[1]}")
            if client is None:
                self._plain(503, f"too many pages open (page.max_clients {page.hub.max_clients})")
                return
            self.server.when_evicted(self.request, client.close)  # closed for a newer connection: end now
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(b"retry: 2000\n\n" + encode("hello", page.view.snapshot()))
                self.wfile.flush()
                while not client.closed:
                    msgs = client.take(KEEPALIVE_S)
                    self.wfile.write(b"".join(msgs) if msgs else b": keepalive\n\n")
                    self.wfile.flush()
            except OSError:  # the browser went away, or did not read within SEND_TIMEOUT_S
                pass
            finally:
                page.hub.leave(client)

        def log_message(self, *args):  # requests are not news; acknowledgements are logged as audit lines
            pass

    return Handler
