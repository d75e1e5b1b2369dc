"""Events to every connected browser, each through its own bounded queue.

A slow browser never slows the others nor the worker: `publish` appends to each client's deque (maxlen:
the oldest event is dropped and counted) and returns; the client's own HTTP handler thread drains it
with a send timeout (server.py). The live frame is not queued: each client keeps only the newest one.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

QUEUE_EVENTS = 64  # per client: ~20 s of state ticks; a reject burst beyond it drops the oldest (counted)


def encode(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Client:
    def __init__(self, address: str) -> None:
        self.address = address
        self.events: deque[bytes] = deque(maxlen=QUEUE_EVENTS)
        self.frame: bytes | None = None  # only the newest frame waits
        self.dropped = 0
        self.cv = threading.Condition()
        self.closed = False

    def put(self, msg: bytes) -> None:
        with self.cv:
            if len(self.events) == self.events.maxlen:
                self.dropped += 1
            self.events.append(msg)
            self.cv.notify()

    def put_frame(self, msg: bytes) -> None:
        with self.cv:
            self.frame = msg
            self.cv.notify()

    def take(self, timeout: float) -> list[bytes]:
        """What is waiting (events first, then the newest frame); [] after `timeout` or when closed."""
        with self.cv:
            if not self.events and self.frame is None and not self.closed:
                self.cv.wait(timeout)
            out = list(self.events)
            self.events.clear()
            if self.frame is not None:
                out.append(self.frame)
                self.frame = None
            return out

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify()


class Broadcaster:
    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self.refused = 0  # clients turned away (max_clients)
        self.dropped = 0  # events dropped for slow clients that have gone

    def join(self, address: str) -> Client | None:
        with self._lock:
            if len(self._clients) >= self.max_clients:
                self.refused += 1
                return None
            c = Client(address)
            self._clients.add(c)
            return c

    def leave(self, c: Client) -> None:
        with self._lock:
            self._clients.discard(c)
            self.dropped += c.dropped

    def publish(self, event: str, data: Any) -> None:
        msg = encode(event, data)
        for c in self.clients():
            c.put(msg)

    def publish_frame(self, data: Any) -> None:
        msg = encode("frame", data)
        for c in self.clients():
            c.put_frame(msg)

    def clients(self) -> list[Client]:
        with self._lock:
            return list(self._clients)

    def close(self) -> None:
        for c in self.clients():
            c.close()

    def state(self) -> dict[str, Any]:
        cs = self.clients()
        return {"clients": len(cs), "refused": self.refused, "dropped": self.dropped + sum(c.dropped for c in cs)}
