"""The reject ledger: every reject the service decided, against what the line received or was told escaped.

Dev tooling (tests/service/test_full_service.py, benchmarks/soak.py), never on the line. It reads only
what a line integrator can see from outside the service:

- decided: the JSONL verdict log (`actuate: true`) and the process's `boot` -> reject ids
  `<line>-<station>-<boot>-<frame_id>` (docs/contracts.md);
- received: an independent `mosquitto_sub` (QoS 1, persistent session, so a broker restart loses
  nothing queued for it) on `.../reject`, `.../alarm` and `.../status`, each message stamped with the
  subscriber's receipt time (same host, same wall clock as the payload deadlines);
- escaped: `escaped_part` alarms name the reject (`reject.id`, or `detail.reject_id`).

What "each reject exactly once" can mean under at-least-once MQTT (QoS 1): the broker may deliver a
reject twice (a re-send after a reconnect whose PUBACK was lost), so the line deduplicates by `id`.
Exactly once is then a property of the ledger after deduplication, per decided id:
- accounted: its first copy arrived before its deadline (the ejector acts), or an `escaped_part`
  alarm names it (the line knows the part passed); an id only received after its deadline and not
  alarmed is an unaccounted physical escape;
- not both: received in time AND alarmed is a false alarm unless the publisher could not have had
  the PUBACK by the deadline: the broker went down between forwarding it and acknowledging it
  (an outage began after the copy arrived and before the deadline), or the alarm itself says the
  acknowledgement came after the deadline (a late PUBACK is an escape: the part was not known to
  be stopped in time);
- nothing foreign: no reject or escape alarm for an id the service never decided.
Raw duplicates (copies beyond the first) are counted and reported, not failed: QoS 1 allows them.

A PUBACK says the broker has the reject, not that the line got it. After a broker restart the
inspector re-sends at once; a subscriber that reconnects later finds the reject queued in its
session, with the message expiry the inspector set (whole seconds left, rounded down). Mosquitto
2.0 keeps expiry times in whole seconds and drops a message only once its second has passed, so a
queued reject can still be delivered up to ~1 s after its deadline: the payload's `deadline` is
authoritative (the reference actuator refuses a late one), and the ledger counts such a copy as
`late_only` (a physical escape the inspector did not alarm). The line's subscriber must therefore
reconnect promptly after a broker restart; `MosquittoSub.reconnect_now` does what a PLC gateway
with a short reconnect delay would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from inspector.signalling.payloads import reject_id

_MSG = "MSG "  # prefix of a message line in mosquitto_sub's output (-F), debug lines never start with it


@dataclass(frozen=True, slots=True)
class Message:
    topic: str  # last topic level: reject, alarm, status, ...
    payload: dict | None  # None when not JSON
    at: float  # receipt, epoch seconds (mosquitto_sub's %U)


class MosquittoSub:
    """`mosquitto_sub` as the line's independent subscriber: QoS 1, persistent session, every message
    stamped at receipt. It reconnects by itself after a broker restart (libmosquitto's loop); should the
    process exit anyway, it is started again with the same client id, so its queued session resumes."""

    def __init__(self, host: str, port: int, topic_root: str, *, topics: Iterable[str] = ("reject", "alarm", "status"),
                 protocol: str = "v5", client_id: str | None = None, log_path: Path | None = None) -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError(f"expected a loopback broker host for a dev subscriber, got {host!r}")
        self.host, self.port = host, port
        self.topic_root = topic_root
        self.topics = tuple(topics)
        self.protocol = protocol
        self.client_id = client_id or f"ledger-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self._lock = threading.Lock()
        self._msgs: list[Message] = []
        self.subscribed_at: list[float] = []  # one per SUBACK (first connect and every reconnect)
        self.respawns = 0
        self._stopping = threading.Event()
        self._now = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def _command(self) -> list[str]:
        cmd = ["mosquitto_sub", "-h", self.host, "-p", str(self.port), "-q", "1", "-c", "-i", self.client_id,
               "-k", "5", "-d", "-F", _MSG + "%U %t %p"]
        cmd += ["-V", "mqttv5", "-x", "3600"] if self.protocol == "v5" else ["-V", "mqttv311"]
        for t in self.topics:
            cmd += ["-t", f"{self.topic_root}/{t}"]
        # Line-buffered stdout: without it the debug lines (SUBACK) reach us only with the next message.
        return (["stdbuf", "-oL"] if shutil.which("stdbuf") else []) + cmd

    def start(self, timeout: float = 10.0) -> MosquittoSub:
        self._spawn()
        self._thread = threading.Thread(target=self._read, name="mosquitto-sub", daemon=True)
        self._thread.start()
        self.wait_for(lambda s: s.subscribed_at, timeout, "mosquitto_sub's SUBACK")
        return self

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      bufsize=1)

    def _read(self) -> None:
        log = self.log_path.open("a") if self.log_path else None
        try:
            while True:
                proc = self._proc
                for line in proc.stdout:
                    if log:
                        log.write(line)
                    self._line(line.rstrip("\n"))
                proc.wait()
                if self._stopping.is_set() or self.respawns >= 100:
                    return
                self.respawns += 1  # it gave up, or reconnect_now(): the same session again
                if not self._now.is_set():
                    self._stopping.wait(0.2)
                self._now.clear()
                if self._stopping.is_set():
                    return
                self._spawn()
        finally:
            if log:
                log.close()

    def reconnect_now(self, timeout: float = 10.0) -> None:
        """Reconnects at once (a new process, same client id: the persistent session resumes, so
        nothing queued for us is lost; an unacknowledged copy may come twice). mosquitto_sub retries
        only once a second by itself; a subscriber that comes back that late after a broker restart
        may find a reject expired in its queue, or get it late (see the module docstring)."""
        n = len(self.subscribed_at)
        self._now.set()
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
        self.wait_for(lambda s: len(s.subscribed_at) > n, timeout, "mosquitto_sub's SUBACK after reconnect_now")

    def _line(self, line: str) -> None:
        if line.startswith(_MSG):
            try:
                _, at, topic, payload = line.split(" ", 3)
            except ValueError:
                return
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
            with self._lock:
                body = body if isinstance(body, dict) else None
                self._msgs.append(Message(topic.rsplit("/", 1)[-1], body, float(at)))
        elif line.startswith("Subscribed (mid"):
            with self._lock:
                self.subscribed_at.append(time.time())

    def messages(self, topic: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self._msgs if topic is None or m.topic == topic]

    def wait_for(self, pred: Callable[[MosquittoSub], object], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self):
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")

    def wait_persisted(self, persistence_dir: Path, timeout: float = 10.0) -> None:
        """Until the broker has autosaved after our SUBACK: a kill -9 then keeps our session."""
        since = self.subscribed_at[-1]
        db = Path(persistence_dir) / "mosquitto.db"

        def saved(_s) -> bool:
            try:
                return db.stat().st_mtime > since + 0.01
            except OSError:
                return False

        self.wait_for(saved, timeout, f"the broker's autosave of {db} after the subscription")

    def stop(self) -> None:
        self._stopping.set()
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._thread is not None:
            self._thread.join(5)


# -- what the service decided ----------------------------------------------------------------------
def decided_rejects(jsonl: Path, *, line: str, station: str, boot: str) -> dict[str, dict]:
    """Reject id -> its verdict record, for every `actuate: true` line of the JSONL verdict log and
    of its rotated backups (`<jsonl>.1`, `.2`, ... as sink.jsonl_max_bytes rotates it)."""
    jsonl = Path(jsonl)
    backups = [p for p in jsonl.parent.glob(jsonl.name + ".*") if p.suffix[1:].isdigit()]
    out: dict[str, dict] = {}
    for path in [*sorted(backups, key=lambda p: -int(p.suffix[1:])), jsonl]:  # oldest first
        with path.open() as fh:
            for n, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except ValueError as e:  # a torn line would be a defect of the log: say where
                    raise ValueError(f"{path}:{n}: expected a JSON verdict record, got {text[:80]!r} ({e})") from e
                if rec.get("actuate"):
                    out[reject_id(line, station, boot, int(rec["frame_id"]))] = rec
    return out


def online_boots(msgs: Iterable[Message], client_id: str | None = None) -> list[str]:
    """Boots announced by `online` status messages, in order of first appearance."""
    seen: list[str] = []
    for m in msgs:
        p = m.payload or {}
        mine = client_id is None or p.get("client_id") == client_id
        if m.topic == "status" and p.get("state") == "online" and mine and p.get("boot") and p["boot"] not in seen:
            seen.append(p["boot"])
    return seen


def escaped_id(alarm: dict) -> str | None:
    """The reject id an `escaped_part` alarm names (None for other kinds)."""
    if alarm.get("kind") != "escaped_part":
        return None
    rej = alarm.get("reject") or {}
    return rej.get("id") or (alarm.get("detail") or {}).get("reject_id")


def epoch_of(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v).timestamp()  # Python >= 3.11 reads a trailing Z
        except ValueError:
            return None
    return None


def _deadline(payload: dict) -> float | None:
    return epoch_of(payload.get("deadline"))


def says_late_ack(alarm: dict, deadline: float | None) -> bool:
    """True when an escaped_part alarm states that the PUBACK came after the reject's deadline: a
    detail field about the ack holding a time past the deadline, or its reason saying so."""
    detail = alarm.get("detail") or {}
    for k, v in detail.items():
        t = epoch_of(v)
        if "ack" in k.lower() and t is not None and deadline is not None and t > deadline:
            return True
    why = " ".join(str(detail.get(k, "")) for k in ("why", "reason")) + " " + str(alarm.get("message", ""))
    return bool(re.search(r"ack\w*[^.;]*\bafter\b|\blate (pub)?ack|acknowledged late", why, re.IGNORECASE))


# -- the ledger ------------------------------------------------------------------------------------
@dataclass
class Ledger:
    decided: int = 0
    received_in_time: int = 0  # distinct decided ids whose first copy came before the deadline
    resent_in_time: int = 0  # of those: decided while the broker was down, delivered in time after it
    alarmed: int = 0  # distinct decided ids named by an escaped_part alarm
    copies: int = 0  # reject messages received for decided ids (with duplicates)
    duplicates: int = 0  # copies beyond the first (QoS 1 re-sends): the line drops them by id
    both_explained: list[str] = field(default_factory=list)  # in time AND alarmed, PUBACK could not be in time
    both_unexplained: list[str] = field(default_factory=list)  # in time AND alarmed with no reason: false alarm
    late_only: list[str] = field(default_factory=list)  # received only after the deadline, not alarmed
    unaccounted: list[str] = field(default_factory=list)  # neither received in time nor alarmed
    foreign_received: list[str] = field(default_factory=list)  # reject ids the service never decided
    foreign_alarmed: list[str] = field(default_factory=list)  # escaped_part for ids never decided
    alarms: dict[str, int] = field(default_factory=dict)  # distinct alarms by kind

    def problems(self) -> list[str]:
        out = []
        for name in ("unaccounted", "late_only", "both_unexplained", "foreign_received", "foreign_alarmed"):
            ids = getattr(self, name)
            if ids:
                out.append(f"{name}: {len(ids)} e.g. {sorted(ids)[:5]}")
        return out

    @property
    def physical_escapes(self) -> int:
        """Decided rejects the ejector did not get in time (alarmed or not)."""
        return self.decided - self.received_in_time

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("both_explained", "both_unexplained", "late_only", "unaccounted", "foreign_received",
                  "foreign_alarmed"):
            d[k] = {"count": len(d[k]), "ids": sorted(d[k])[:20]}
        d["physical_escapes"] = self.physical_escapes
        return d


def account(decided: dict[str, dict], msgs: Iterable[Message], *, boots: Iterable[str],
            outages: Iterable[tuple[float, float | None]] = ()) -> Ledger:
    """The ledger of `decided` (id -> record) against the subscriber's messages. `boots`: the service
    processes whose ids count (a foreign id with one of these boots is a defect); `outages`: (down,
    up) epoch times of the broker (kill -9 or stop, then start; up None while still down)."""
    boots = tuple(boots)
    outages = [(a, b if b is not None else float("inf")) for a, b in outages]
    first: dict[str, Message] = {}
    copies: Counter[str] = Counter()
    alarm_by_id: dict[str, dict] = {}
    escaped: dict[str, dict] = {}
    kinds: Counter[str] = Counter()
    foreign_rx: set[str] = set()
    foreign_al: set[str] = set()
    for m in msgs:
        p = m.payload
        if p is None:
            continue
        if m.topic == "reject":
            rid = p.get("id")
            if rid in decided:
                copies[rid] += 1
                first.setdefault(rid, m)
            elif any(f"-{b}-" in str(rid) for b in boots):
                foreign_rx.add(str(rid))
        elif m.topic == "alarm":
            aid = p.get("id")
            if aid in alarm_by_id:
                continue  # a re-sent alarm: deduplicated by its id like the rejects
            alarm_by_id[aid] = p
            kinds[p.get("kind", "?")] += 1
            rid = escaped_id(p)
            if rid is None:
                continue
            if rid in decided:
                escaped.setdefault(rid, p)
            elif any(f"-{b}-" in rid for b in boots):
                foreign_al.add(rid)
    led = Ledger(decided=len(decided), alarms=dict(kinds), foreign_received=sorted(foreign_rx),
                 foreign_alarmed=sorted(foreign_al))
    led.copies = sum(copies.values())
    led.duplicates = sum(n - 1 for n in copies.values())
    led.alarmed = len(escaped)
    for rid in decided:
        m = first.get(rid)
        deadline = _deadline(m.payload) if m else None
        in_time = m is not None and deadline is not None and m.at <= deadline
        alarm = escaped.get(rid)
        if in_time:
            led.received_in_time += 1
            captured = epoch_of(m.payload.get("captured_at"))
            if captured is not None and any(down <= captured <= up for down, up in outages):
                led.resent_in_time += 1
            if alarm is not None:
                lost_ack = any(m.at - 1.0 <= down <= deadline for down, _ in outages)
                (led.both_explained if lost_ack or says_late_ack(alarm, deadline) else led.both_unexplained).append(rid)
        elif alarm is None:
            (led.late_only if m is not None else led.unaccounted).append(rid)
    return led


# -- /proc figures (soak) ---------------------------------------------------------------------------
def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


