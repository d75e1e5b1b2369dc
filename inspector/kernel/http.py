"""An HTTP server with a bounded number of handler threads, for the line-side endpoints (`/metrics`, the
operator's page): a flood of idle or slow clients closes the oldest connection, never grows threads."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

#: Seconds a connection may take to send its request (and to take the answer). A scrape is one request
#: of a few hundred bytes answered in ~1 ms (HTTP/1.0: one request per connection); a client that has
#: sent nothing for this long is a half-open socket or a slow-loris, and its handler thread ends.
HANDLER_TIMEOUT_S = 5.0
#: Connections served at once (one thread each). Prometheus plus a watchdog plus an operator's curl need
#: 3; beyond the cap the OLDEST connection is closed for the new one (not the new one refused): a scrape
#: is answered in ms, so the oldest open connection is the idle one, and a flood of idle sockets cannot
#: lock the scraper out for HANDLER_TIMEOUT_S. 500 half-open clients keep at most this many threads: the
#: new connection's thread starts only once the closed one's thread has ended (before, that exit waited for
#: the scheduler: 33 threads for a cap of 16 in a CI run beside four CPU loads on 2 cores).
MAX_CONNECTIONS = 16

log = logging.getLogger(__name__)


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` handler threads: the oldest connection is shut
    down to make room for a new one (its blocked read returns, its thread ends). Counts what it closed."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen backlog: a burst of connects is accepted, then bounded here

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS,
                 slot_timeout_s: float = HANDLER_TIMEOUT_S) -> None:
        self.max_connections = max_connections
        self.slot_timeout_s = slot_timeout_s  # how long a new connection waits for a handler thread to end
        self._open: dict[socket.socket, float] = {}  # connection -> accepted at (monotonic)
        self._wake: dict[socket.socket, Callable[[], None]] = {}  # see when_evicted
        self._open_lock = threading.Lock()
        self.evicted = 0  # connections closed to make room (slow or idle clients)
        self.refused = 0  # connections closed unserved: no handler thread ended within slot_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)  # one per live handler thread
        self._handlers = 0  # handler threads started and not yet done (under _open_lock)
        self.peak_handlers = 0
        self.clients_gone = 0  # clients that left before their answer was written (a scrape timeout)
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        """socketserver prints a traceback to stderr for any handler error; a client that left before its
        answer (BrokenPipe, reset: a scraper's timeout, an evicted idle socket) is counted, and logged at
        debug: it is no fault of the service. Anything else goes to the log with its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self.clients_gone += 1
            log.debug("%s: client %s left: %s", type(self).__name__, client_address, exc)
            return
        log.error("%s: request from %s failed", type(self).__name__, client_address, exc_info=exc)

    def process_request(self, request, client_address) -> None:
        victim = wake = None
        with self._open_lock:
            if len(self._open) >= self.max_connections:
                victim = min(self._open, key=self._open.__getitem__)
                del self._open[victim]
                self.evicted += 1
                wake = self._wake.pop(victim, None)
            self._open[request] = time.monotonic()
        if victim is not None:
            try:  # wakes the victim's handler (its read returns b""); its thread closes the socket
                victim.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if wake is not None:
                wake()
        # The accept loop waits here for a thread to end (the victim's: ms once it runs), so the thread count
        # never passes the cap however late the scheduler runs it. Connections meanwhile wait in the backlog.
        if not self._slots.acquire(timeout=self.slot_timeout_s):
            self.refused += 1
            log.warning("%s: no handler thread ended within %g s; connection from %s closed unserved",
                        type(self).__name__, self.slot_timeout_s, client_address)
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._handlers += 1
            self.peak_handlers = max(self.peak_handlers, self._handlers)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._handler_done()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._handler_done()

    def _handler_done(self) -> None:
        with self._open_lock:
            self._handlers -= 1
        self._slots.release()

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.pop(request, None)
            self._wake.pop(request, None)
        super().shutdown_request(request)

    def when_evicted(self, request, wake: Callable[[], None]) -> None:
        """A handler that waits on something other than its socket (an event stream between two events) says
        how to wake it: the socket's shutdown alone would end it only at its next write, and the accept loop
        waits for its thread (the page's keep-alive is 15 s). Called at once when already evicted."""
        with self._open_lock:
            live = request in self._open
            if live:
                self._wake[request] = wake
        if not live:
            wake()

    @property
    def connections(self) -> int:
        with self._open_lock:
            return len(self._open)
