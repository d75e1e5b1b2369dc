"""MQTT publisher: the verdict sink that signals rejects to the line, durably and never late.

Responsibility: move rejects and alarms from the outbox to the broker, and keep the line told
whether the inspector is alive (retained status with a last will, heartbeat). It owns the MQTT
connection; storage is `outbox.Outbox`, payload shapes are `payloads`, the client is built by
`mqtt_client.make_client`.

Threads:
- the caller (the pipeline's post thread, not the inference path) writes each REJECT into the
  reject journal inside `submit` (`journal.py`: a copy into a memory-mapped tmpfs file, no system
  call, ~10 us), so a `kill -9` cannot lose a reject once `submit` returned, and enqueues it; alarms
  and informational verdicts are only enqueued. Without a journal (`mqtt.reject_journal_dir: null`,
  or it is full or cannot open) the caller commits the reject to the outbox itself, as before: one
  SQLite commit, p99 17.6 ms beside an fsync loop (benchmarks/README.md, reject path). A failed
  commit (disk full) hands the row over in memory instead;
- paho's network thread (`loop_start`) connects, reconnects with capped backoff and runs the
  callbacks, which only enqueue events (and publish the birth message on connect);
- the publisher thread publishes a journalled reject AT ONCE, then commits it to the outbox while
  the broker's PUBACK is on its way, and frees its journal slot (the row is durable in the outbox
  from then on; a reject is never in neither). It also publishes the other rows, deletes them on
  PUBACK, turns expired rejects into alarms, sends the heartbeat. Each tick it first turns its
  events into state (rows to write, acknowledged ids to delete) with no I/O, then does the I/O;
  an exception in any I/O step leaves that state in place for the next tick, so no row,
  acknowledgement or stop is lost.

Disk full (`outbox_degraded`): rows that cannot be committed are published from memory (a
bounded map; when it is full the oldest go, each reject counted as an escape), an
`outbox_degraded` alarm is raised once per episode (delivered from memory too) and `state()`
says `outbox_degraded: true`; the write is retried every second and the episode ends when the
memory rows are in the outbox again. Durability is degraded, delivery is not.

Never late: on MQTT v5 a reject carries a message expiry of the whole seconds left to its deadline
(rounded down), so the broker drops it before the part has passed. A reject with less than 1 s
left cannot be given an exact expiry: with `subsecond_rejects: expire_1s` (default) it is published
with a 1 s expiry and its payload `deadline` is authoritative (subscribers drop it once passed);
with `subsecond_rejects: alarm` it is not published and becomes an `escaped_part` alarm. Paho
re-sends its own in-flight messages after a reconnect with their ORIGINAL expiry, which would let
a reject out late; so on every connect its queue is emptied and the outbox, the single source of
truth, re-publishes with fresh expiries. A PUBACK that arrives after the reject's deadline also
raises `escaped_part` (the part was not stopped in time, as far as the inspector can know).

Physical escapes: rejects acknowledged late and rejects never delivered in time (expired,
evicted from a full outbox, dropped from memory) are counted in `state()` with a bounded record
of the frames concerned (`escapes()`), so the service report counts them beside verdict escapes.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MQTTConfig
from inspector.errors import PublishError
from inspector.frames import ModelInfo, Verdict, iso_utc
from inspector.kernel import realtime
from inspector.signalling.journal import RejectJournal, journal_path
from inspector.signalling.mqtt_client import connect_kwargs, make_client, password_in_clear
from inspector.signalling.outbox import (
    ALARM,
    OVERFLOW,
    REJECT,
    Entry,
    NewRow,
    Outbox,
    publishable,
)
from inspector.signalling.payloads import (
    AlarmPayload,
    HeartbeatPayload,
    ModelRef,
    RejectPayload,
    StatusPayload,
    reject_id,
    reject_payload,
    utc,
    verdict_payload,
)
from inspector.stats import summary

log = logging.getLogger(__name__)

WINDOW = 100  # messages in flight per connection: enough to fill a LAN, small enough to re-send
_TICK_S = 0.05  # housekeeping period of the publisher thread (expiry sweep, heartbeat check)
_REFUSED_RETRY_S = 1.0  # a message the broker refused (reason >= 0x80) is tried again after this
_WRITE_RETRY_S = 1.0  # while the outbox cannot write (disk full), a durable write is tried this often
_CHECKPOINT_S = 1.0  # WAL -> database copy period, on the mqtt-checkpoint thread (see Outbox.checkpoint)
_MEMORY_MAX = 10_000  # rows kept in memory while the outbox cannot write (capped by outbox_max)
_ESCAPES_KEPT = 1000  # escape records kept for the service report (counters cover the rest)
_NO_SUBSCRIBERS = 0x10
_AUTH_CODES = {0x86, 0x87, 0x8C}  # bad user name or password, not authorized, bad auth method
_HEARTBEAT_KEYS = ("last_frame_age_s", "p99_ms", "frames", "realtime")

AlarmCounter = Callable[[str], None]


# -- events into the publisher thread (frozen: they cross threads) -----------------------------
@dataclass(frozen=True, slots=True)
class _Reject:
    """A reject `submit` made (or the journal kept from a previous process: `captured_wall` None).
    `durable`: committed to the outbox by the caller; `slot`: held in that journal slot instead."""

    row: NewRow
    captured_wall: float | None
    durable: bool
    evicted: tuple[Entry, ...] = ()
    slot: int | None = None


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A verdict for the informational .../verdict topic."""

    verdict: Verdict


@dataclass(frozen=True, slots=True)
class _Alarm:
    kind: str
    detail: dict
    raised_at: float


@dataclass(frozen=True, slots=True)
class _Ack:
    gen: int
    mid: int
    code: int
    name: str
    at: float  # time.time() when paho's network thread got the PUBACK: what "acknowledged late" means


@dataclass(frozen=True, slots=True)
class _Up:
    gen: int


@dataclass(frozen=True, slots=True)
class _Down:
    gen: int


@dataclass(frozen=True, slots=True)
class _Stop:
    until: float  # monotonic


@dataclass(frozen=True, slots=True)
class _InFlight:
    entry: Entry
    gen: int


@dataclass(frozen=True, slots=True)
class Escape:
    """A part whose reject did not reach the line in time (a physical escape)."""

    reject_id: str
    frame_id: int | None
    part_id: str | None
    why: str  # late_ack | expired | evicted | dropped
    this_boot: bool  # the reject was made by this process (its frame id is one of this run's)
    at: float = field(default_factory=time.time)


class _Client(mqtt.Client):
    """paho's client, but a failed (re)connect reports its exception: paho swallows it inside
    `loop_forever`, and 'certificate verify failed' is exactly what an operator needs to read."""

    connect_error_hook: Callable[[BaseException], None] | None = None
    attempts = 0  # connection attempts, for the state: proof that it keeps retrying

    def reconnect(self) -> mqtt.MQTTErrorCode:
        self.attempts += 1
        try:
            return super().reconnect()
        except OSError as e:
            if self.connect_error_hook is not None:
                self.connect_error_hook(e)
            raise


def _ack_percentiles(ms: list[float]) -> dict[str, float | None]:
    return {f"ack_ms_{k}": v for k, v in summary(ms, ("p50", "p99")).items()}


def _purge_paho_queue(client: mqtt.Client) -> None:
    # Private paho state (pinned paho-mqtt <3): the messages it would re-send after a reconnect
    # carry their original MessageExpiryInterval, i.e. too long by the outage. The outbox re-sends
    # them instead, with the time actually left. Called from on_connect, before paho re-sends.
    with client._out_message_mutex:
        client._out_messages.clear()
        client._inflight_messages = 0


def _memory_entry(row: NewRow, now: float) -> Entry:
    return Entry(seq=0, id=row.id, kind=row.kind, payload=row.payload, deadline=row.deadline, created=now, ref=row.ref)


class MqttPublisher:
    """VerdictSink that publishes rejects (durably), verdicts (optionally), status, heartbeat, alarms."""

    name = "mqtt"

    def __init__(self, cfg: MQTTConfig, *, model: ModelInfo, config_hash: str,
                 heartbeat_fn: Callable[[], dict], alarm_counter: AlarmCounter | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.config_hash = config_hash
        self.heartbeat_fn = heartbeat_fn
        # Alarms this publisher creates itself (escaped_part, no_subscribers, outbox_full,
        # outbox_degraded) are counted here too: the service passes its AlarmHub's `record`.
        self.alarm_counter = alarm_counter
        self.boot = uuid.uuid4().hex[:12]
        self.client_id = cfg.client_id or f"inspector-{cfg.line}-{cfg.station}"
        root = cfg.topic_root
        self.topics = {t: f"{root}/{t}" for t in ("reject", "verdict", "status", "heartbeat", "alarm")}
        self.v5 = cfg.protocol == "v5"
        # The smallest time left for which a reject is still published (see module docstring).
        self.min_left_s = 1.0 if (self.v5 and cfg.subsecond_rejects == "alarm") else 0.0
        self.memory_max = min(cfg.outbox_max, _MEMORY_MAX)
        self.password_in_clear = password_in_clear(cfg)

        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        # The outbox's WAL checkpoint (a PASSIVE copy + fsync: 6-33 ms measured beside an fsync loop, 12-22 ms
        # quiet) runs on a background thread of its own: on the publisher thread, a reject arriving during it
        # waited, and was acknowledged after its deadline (issue 20 load benchmark, 8 escapes in 600 parts).
        self._ckpt_thread = threading.Thread(target=realtime.runs_in("background", self._checkpoint_loop),
                                             name="mqtt-checkpoint", daemon=True)
        self._ckpt_stop = threading.Event()
        self._outbox: Outbox | None = None
        self._journal: RejectJournal | None = None
        self.journal_state = "off (mqtt.reject_journal_dir: null)" if cfg.reject_journal_dir is None else "not started"
        self._fresh: list[NewRow] = []  # journalled rejects of this tick: published before they are committed
        self._slot_of: dict[str, int] = {}  # journalled rows not yet in the outbox -> their journal slot
        self.journal_recovered = 0  # rejects a previous process left in the journal only
        self.journal_fallbacks = 0  # rejects the caller committed itself (journal full, row too big, none)
        self.fresh_published = 0  # rejects published before their outbox commit
        self._client: _Client | None = None
        self._started_at = time.monotonic()
        # network-thread view
        self._net_gen = 0
        self._connected = False
        self._last_error: str | None = None
        self._logged_error: str | None = None
        # publisher-thread view: what the events of a tick became, kept until its I/O succeeded
        self._gen = 0
        self._up = False
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = {REJECT: 0, ALARM: 0}
        self._retry_at = 0.0
        self._next_hb = 0.0
        self._nosub_episode = False
        self._stop: _Stop | None = None
        self._to_write: list[NewRow] = []  # rows to commit to the outbox
        self._to_delete: set[str] = set()  # acknowledged ids still in the outbox (not to re-send, not to expire)
        self._verdicts: deque[Verdict] = deque(maxlen=10_000)
        self._memory: OrderedDict[str, Entry] = OrderedDict()  # rows the outbox could not take (disk full)
        self._degraded = False  # read by submit(): skip the disk while it is known to be full
        self._degraded_error: str | None = None  # why, while degraded (kept as last_error across reconnects)
        self._write_retry_at = 0.0
        self._escaped_ids: OrderedDict[str, None] = OrderedDict()  # rejects already counted as escaped
        self._overflow_counted = 0
        # counters (ints written by one thread, read by anyone)
        self.published = 0
        self.acked = 0
        # Capture -> PUBACK of this process's rejects: what the line actually waits for.
        self._captured: dict[str, float] = {}
        self.ack_ms: deque[float] = deque(maxlen=10_000)
        self.expired = 0
        self.late_acks = 0
        self.undelivered = 0
        self._escapes: deque[Escape] = deque(maxlen=_ESCAPES_KEPT)
        self.alarms = 0
        self.no_subscribers = 0
        self.refused = 0
        self.reconnects = 0
        self.heartbeats = 0
        self.verdicts_published = 0
        self.verdicts_dropped = 0
        self.leftovers = 0
        self.write_errors = 0
        self.degraded_episodes = 0
        self.degraded_dropped = 0
        self.step_errors = 0

    # -- VerdictSink -----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        self._outbox = Outbox(cfg.outbox_path, cfg.outbox_max, overflow_payload=self._overflow_payload,
                              auto_checkpoint=False)  # checkpoints on this thread, not in submit
        self.leftovers = self._outbox.depth() + self._open_journal()
        if self.leftovers:
            log.warning("outbox %s: %d message(s) left by a previous run: re-sent with the same ids, "
                        "or alarmed if their deadline passed", cfg.outbox_path, self.leftovers)
        self._client = self._make_client()
        # connect_async + loop_start: the TCP connect happens on paho's thread, so start-up never
        # waits for the broker; a broker that is down is retried with the capped backoff.
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                                   **connect_kwargs(cfg, session_expiry_s=0))
        self._client.loop_start()
        # paho's network thread carries each reject out and its PUBACK back: frame path (kernel/realtime.py)
        realtime.adopt_thread(getattr(self._client, "_thread", None), "frame", "mqtt-network")
        self._thread.start()
        self._ckpt_thread.start()

    def _open_journal(self) -> int:
        """Opens the reject journal and hands its leftovers (rejects a killed process had not yet
        committed) to the publisher thread like fresh ones; returns how many. Without a journal
        the caller's thread commits each reject itself (slower, as safe)."""
        folder = self.cfg.reject_journal_dir
        if folder is None:
            return 0
        path = journal_path(folder, self.cfg.outbox_path)
        try:
            self._journal = RejectJournal(path)
        except PublishError as e:
            self.journal_state = f"off ({e})"
            log.error("mqtt: %s: each reject is committed to the outbox on the caller's thread instead "
                      "(slower: benchmarks/README.md, reject path)", e)
            return 0
        self.journal_state = str(path)
        known = self._outbox.ids()
        left = self._journal.recovered()
        done = [slot for slot, row in left.items() if row.id in known]  # committed before the kill
        self._journal.release(done)
        for slot, row in left.items():
            if row.id not in known:
                self._q.put(_Reject(row, None, False, slot=slot))
        self.journal_recovered = len(left) - len(done)
        if self.journal_recovered:
            log.warning("reject journal %s: %d reject(s) a previous run decided but had not yet committed: "
                        "re-sent with the same ids, or alarmed if their deadline passed", path,
                        self.journal_recovered)
        return self.journal_recovered

    def submit(self, verdict: Verdict) -> None:
        """A reject is safe from a `kill -9` before this returns: in the reject journal (a memory copy),
        or, without one, committed to the outbox on the caller's thread; a verdict for .../verdict is
        only enqueued. Never raises for a full disk."""
        if verdict.actuate:
            self._submit_reject(verdict)
        if self.cfg.publish_verdicts:
            self._q.put(_Verdict(verdict))

    def _submit_reject(self, v: Verdict) -> None:
        row = self._reject_row(v)
        j = self._journal
        if j is not None:
            try:
                slot = j.put(row)  # safe from a kill -9 from here on; the publisher thread commits it
            except ValueError:  # closed by stop(): the outbox path below says what it can
                slot = None
            if slot is not None:
                self._q.put(_Reject(row, v.frame.captured_wall, False, slot=slot))
                return
            self.journal_fallbacks += 1
        durable, evicted = False, ()
        ob = self._outbox
        if ob is not None and not self._degraded:
            try:
                evicted = tuple(ob.put([row]))
                durable = True
            except Exception as e:  # disk full, I/O error: the publisher thread publishes it from memory
                self.write_errors += 1
                self._set_error(str(e) if isinstance(e, PublishError)
                                else f"outbox write failed: {type(e).__name__}: {e}")
        self._q.put(_Reject(row, v.frame.captured_wall, durable, evicted))

    def alarm(self, kind: str, detail: dict[str, Any]) -> None:
        """AlarmHandler: queue a durable alarm (delivered with no expiry). Never blocks."""
        raised_at = detail.get("raised_at")
        raised_at = float(raised_at) if isinstance(raised_at, (int, float)) else time.time()
        self._q.put(_Alarm(kind, {k: v for k, v in detail.items() if k != "raised_at"}, raised_at))

    def stop(self, timeout: float = 2.0) -> None:
        if not self._thread.is_alive():
            return
        self._q.put(_Stop(time.monotonic() + timeout))
        self._thread.join(timeout + 1.0)  # the thread bounds itself by `until`; +1 s: paho's loop_stop

    def escapes(self) -> list[Escape]:
        """The most recent physical escapes (bounded); the counters in `state()` cover all."""
        return list(self._escapes)

    def state(self) -> dict[str, Any]:
        escapes = list(self._escapes)
        return {
            "connected": self._connected,
            "last_error": self._last_error,
            "outbox_depth": self._outbox.depth() if self._outbox else 0,
            "outbox_degraded": self._degraded,
            "memory_rows": len(self._memory),
            "degraded_dropped": self.degraded_dropped,
            "queued": self._q.qsize(),
            "published": self.published,
            "acked": self.acked,
            "expired": self.expired,
            # Physical escapes seen from the signalling side: rejects acknowledged after their
            # deadline, and rejects never delivered in time (expired, evicted, dropped).
            "late_acks": self.late_acks,
            "undelivered": self.undelivered,
            "physical_escapes": self.late_acks + self.undelivered,
            "escaped_frame_ids": [e.frame_id for e in escapes if e.this_boot and e.frame_id is not None],
            "alarms": self.alarms,
            "no_subscribers": self.no_subscribers,
            "no_subscribers_detectable": self.v5,  # MQTT 3.1.1 has no PUBACK reason codes
            "refused": self.refused,
            "evicted": self._outbox.evicted if self._outbox else 0,
            "reconnects": self.reconnects,
            "connect_attempts": self._client.attempts if self._client else 0,
            "heartbeats": self.heartbeats,
            "verdicts_published": self.verdicts_published,
            "verdicts_dropped": self.verdicts_dropped,
            "leftovers": self.leftovers,
            "journal": self.journal_state,
            "journal_pending": self._journal.pending() if self._journal else 0,
            "journal_recovered": self.journal_recovered,
            "journal_fallbacks": self.journal_fallbacks,
            "fresh_published": self.fresh_published,
            "write_errors": self.write_errors,
            "step_errors": self.step_errors,
            "password_in_clear": self.password_in_clear,
            "client_id": self.client_id,
            "boot": self.boot,
            **_ack_percentiles(list(self.ack_ms)[-1000:]),
        }

    # -- client set-up -----------------------------------------------------------------------------
    def _make_client(self) -> _Client:
        # clean session: the outbox, not the broker, holds what is unacknowledged
        c = make_client(self.cfg, client_id=self.client_id, persistent=False,
                        logger="inspector.signalling.publisher.paho", client_cls=_Client)
        c.connect_error_hook = self._on_connect_error
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.will_set(self.topics["status"], self._status("offline", at=None), qos=1, retain=True)
        c.max_inflight_messages_set(WINDOW)
        c.max_queued_messages_set(0)  # the outbox is the bound, paho's queue is emptied per connect
        return c

    def announce_model(self, model: ModelInfo, *, previous: ModelInfo | None = None, why: str = "") -> None:
        """A model switch (issue 13: promote, rollback): the retained `online` status is published again
        naming the new model and the one it replaced; later births (reconnects) name it too. Any thread
        (paho's publish is thread-safe; its PUBACK is ignored like the birth's)."""
        self.model = model
        self._switch = (previous, why, time.time())
        client = self._client
        if client is not None and self._connected:
            client.publish(self.topics["status"], self._status("online", time.time()), qos=1, retain=True)

    def _status(self, state: str, at: float | None) -> str:
        online = state == "online"
        prev, why, switched = getattr(self, "_switch", None) or (None, None, None)
        return StatusPayload(state=state, at=utc(at) if at is not None else None, client_id=self.client_id,
                             boot=self.boot, model=ModelRef.of(self.model) if online else None,
                             config_hash=self.config_hash if online else None,
                             previous_model=ModelRef.of(prev) if online and prev is not None else None,
                             model_switched_at=utc(switched) if online and switched is not None else None,
                             model_switch=why if online else None).to_json()

    def _count_alarm(self, kind: str) -> None:
        if self.alarm_counter is not None:
            try:
                self.alarm_counter(kind)
            except Exception:  # the count is a report; the alarm itself is already a row
                log.exception("alarm counter failed for %s", kind)
    # -- paho callbacks (network thread): record, enqueue, return ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._set_error(self._describe_refusal(reason_code))
            return
        _purge_paho_queue(client)
        self._net_gen += 1
        if self._net_gen > 1:
            self.reconnects += 1
        # A degraded outbox is still the state's error after a reconnect: the broker is back, the disk is not
        # (cleared here, `last_error` said None while rows were held in memory only: seen in a CI run).
        self._last_error = self._degraded_error if self._degraded else None
        self._logged_error = None
        log.info("mqtt: connected to %s:%d as %s (%s)", self.cfg.host, self.cfg.port, self.client_id, self.cfg.protocol)
        if not self.v5 and self._net_gen == 1:
            log.warning("mqtt: MQTT 3.1.1 acknowledges a publish without a reason code: a reject nobody "
                        "subscribes to cannot be detected (no no_subscribers alarm); use protocol v5 for it")
        # Birth first, on every (re)connect: it replaces the retained `offline` of our last will.
        client.publish(self.topics["status"], self._status("online", time.time()), qos=1, retain=True)
        self._q.put(_Up(self._net_gen))
        # After _Up is queued: a verdict submitted once `connected` reads true is queued behind it, so the
        # publisher thread is up when it takes it (before, it could drop it as submitted while offline).
        self._connected = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        if was:
            if reason_code.value != 0:
                self._set_error(f"connection to {self.cfg.host}:{self.cfg.port} lost: {reason_code.getName()}")
            self._q.put(_Down(self._net_gen))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._q.put(_Ack(self._net_gen, mid, reason_code.value, reason_code.getName(), time.time()))

    def _on_connect_error(self, exc: BaseException) -> None:
        self._set_error(self._describe_connect_error(exc))

    def _set_error(self, text: str) -> None:
        self._last_error = text
        if text != self._logged_error:  # once per distinct error, not once per retry
            self._logged_error = text
            log.error("mqtt: %s (retrying, backoff up to %.1f s)", text, self.cfg.reconnect_max_s)

    def _describe_refusal(self, rc) -> str:
        where = f"{self.cfg.host}:{self.cfg.port}"
        if rc.value in _AUTH_CODES:
            who = repr(self.cfg.username) if self.cfg.username else "anonymous"
            return (f"not authorised: broker {where} refused user {who} ({rc.getName()}); "
                    f"check mqtt.username and INSPECTOR_MQTT__PASSWORD")
        return f"broker {where} refused the connection: {rc.getName()} (0x{rc.value:02x})"

    def _describe_connect_error(self, exc: BaseException) -> str:
        where = f"{self.cfg.host}:{self.cfg.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            ca = self.cfg.tls.ca_file if self.cfg.tls else None
            return (f"TLS: the broker {where} presented a certificate not trusted by ca_file {str(ca)!r} "
                    f"({exc.verify_message or exc})")
        if isinstance(exc, ssl.SSLError):
            return (f"TLS handshake with {where} failed: {exc.reason or exc} "
                    "(is the broker's listener TLS? right client cert?)")
        if isinstance(exc, ConnectionRefusedError):
            return f"broker {where} refused the TCP connection (not running, or wrong host/port)"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve broker host {self.cfg.host!r}: {exc}"
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return f"no answer from broker {where} (timeout)"
        if isinstance(exc, ConnectionResetError):
            return f"broker {where} reset the connection during connect (a TLS listener on a plain connection?)"
        return f"cannot connect to broker {where}: {type(exc).__name__}: {exc}"

    # -- the publisher thread -----------------------------------------------------------------------
    def _run(self) -> None:
        realtime.enter("frame")  # publishes the committed rejects: frame path (kernel/realtime.py)
        self._next_hb = time.monotonic()
        while True:
            try:
                self._step()
            except Exception as e:  # the reject path must not die silently: say it, keep going
                # Nothing is lost: the tick's rows, acknowledgements and stop live on `self`
                # until the I/O that consumes them has succeeded.
                self.step_errors += 1
                self._last_error = f"publisher: {type(e).__name__}: {e}"
                log.exception("mqtt publisher step failed; retrying")
                time.sleep(0.2)
            if self._stop is not None and self._may_finish(self._stop):
                break
        self._shutdown(self._stop)

    def _step(self) -> None:
        # 1. events -> state, no I/O (an event that cannot be understood is logged, never fatal)
        self._absorb(self._drain(timeout=_TICK_S))
        # 2. I/O, each step keeping its input on failure
        now = time.time()
        self._publish_fresh(now)
        self._write(now)
        self._forget_acked()
        self._sweep(now)
        self._count_overflow()
        if self._up:
            self._pump(now)
            self._publish_verdicts()
            self._heartbeat()
        else:
            self.verdicts_dropped += len(self._verdicts)
            self._verdicts.clear()

    def _drain(self, timeout: float) -> list:
        try:
            events = [self._q.get(timeout=timeout)] if timeout > 0 else [self._q.get_nowait()]
        except queue.Empty:
            return []
        while len(events) < 2000:  # one transaction per batch, however fast verdicts come
            try:
                events.append(self._q.get_nowait())
            except queue.Empty:
                break
        return events

    def _absorb(self, events: list) -> None:
        for ev in events:
            try:
                self._absorb_one(ev)
            except Exception:  # one bad event (an alarm detail, ...) must not cost the others
                self.step_errors += 1
                log.exception("mqtt publisher: event %s could not be handled", type(ev).__name__)

    def _absorb_one(self, ev) -> None:
        if isinstance(ev, _Reject):
            if ev.captured_wall is not None and len(self._captured) < 100_000:  # bounded: entries leave on ack
                self._captured[ev.row.id] = ev.captured_wall
            if ev.slot is not None:
                self._slot_of[ev.row.id] = ev.slot
                self._fresh.append(ev.row)
            elif not ev.durable:
                self._to_write.append(ev.row)
            self._note_evicted(ev.evicted)
        elif isinstance(ev, _Verdict):
            self._verdicts.append(ev.verdict)
        elif isinstance(ev, _Alarm):
            self._to_write.append(self._alarm_row(ev.kind, ev.detail, ev.raised_at))
        elif isinstance(ev, _Ack):
            self._on_ack(ev)
        elif isinstance(ev, _Up):
            self._gen, self._up = ev.gen, True
            self._inflight.clear()
            self._cursor = {REJECT: 0, ALARM: 0}
        elif isinstance(ev, _Down):
            if ev.gen == self._gen:
                self._up = False
                self._inflight.clear()  # nothing of that connection will be acknowledged now
        elif isinstance(ev, _Stop):
            self._stop = ev

    def _publish_fresh(self, now: float) -> None:
        """Journalled rejects go to the broker first, then into the outbox (`_write`, same tick), so
        the SQLite commit runs while the PUBACK travels instead of before the publish. A reject that
        cannot go now (offline, window full, too little time left) is sent or alarmed from the outbox."""
        fresh, self._fresh = self._fresh, []
        self._to_write.extend(fresh)
        if not self._up or now < self._retry_at:
            return
        for row in fresh:
            if len(self._inflight) >= WINDOW:
                return
            sent = self._send(_memory_entry(row, now), now)
            if sent is None:
                return
            self.fresh_published += sent

    def _release(self, ids) -> None:
        """Journal slots of rows now in the outbox, delivered or dropped from memory: free again."""
        if self._journal is None or not self._slot_of:
            return
        slots = [self._slot_of.pop(i) for i in ids if i in self._slot_of]
        if slots:
            self._journal.release(slots)

    def _write(self, now: float) -> None:
        """Commits the tick's rows (and any held in memory) to the outbox; on failure they are
        published from memory (bounded) and the outbox is `degraded` until a write succeeds."""
        rows, self._to_write = self._to_write, []
        if self._degraded and now < self._write_retry_at:
            self._remember(rows, now)
            return
        if not rows and not self._memory and not self._degraded:
            return
        held = [NewRow(e.id, e.kind, e.payload, e.deadline, e.ref) for e in self._memory.values()]
        try:
            if held or rows:
                evicted = self._outbox.put(held + rows)
            else:  # degraded with nothing held (all delivered from memory): can the disk write again?
                self._outbox.probe()
                evicted = []
        except Exception as e:  # disk full (PublishError), or anything else: never lose the rows
            self.write_errors += 1
            self._remember(rows, now)
            self._write_retry_at = now + _WRITE_RETRY_S
            if not self._degraded:
                self._enter_degraded(e, now)
            return
        self._memory.clear()
        self._release([r.id for r in held] + [r.id for r in rows])
        if self._degraded:
            self._degraded = False
            log.warning("mqtt: outbox %s writable again: messages are durable again", self.cfg.outbox_path)
        self._note_evicted(evicted)

    def _enter_degraded(self, e: Exception, now: float) -> None:
        self._degraded = True
        self.degraded_episodes += 1
        text = str(e) if isinstance(e, PublishError) else f"outbox write failed: {type(e).__name__}: {e}"
        self._degraded_error = text
        self._set_error(text)
        log.error("mqtt: OUTBOX DEGRADED: %s; rejects and alarms are published from memory (up to %d) "
                  "and lost by a crash until the outbox can write again", text, self.memory_max)
        row = self._alarm_row("outbox_degraded", {"outbox": str(self.cfg.outbox_path), "error": text,
                                                  "memory_max": self.memory_max}, now,
                              message=f"outbox cannot write ({text}): messages are delivered from memory, "
                                      f"not durably; free space on {self.cfg.outbox_path.parent}")
        self._count_alarm("outbox_degraded")
        self._remember([row], now)

    def _remember(self, rows: list[NewRow], now: float) -> None:
        for r in rows:
            self._memory[r.id] = _memory_entry(r, now)
        while len(self._memory) > self.memory_max:
            _, old = self._memory.popitem(last=False)
            self._release([old.id])
            self.degraded_dropped += 1
            if old.kind == REJECT:
                self._record_escape(old, "dropped")
            if self.degraded_dropped == 1 or self.degraded_dropped % 1000 == 0:
                log.error("mqtt: memory buffer full (%d rows) while the outbox cannot write: %d message(s) "
                          "dropped so far, oldest first", self.memory_max, self.degraded_dropped)

    def _forget_acked(self) -> None:
        if not self._to_delete:
            return
        ids = list(self._to_delete)
        try:
            self._outbox.delete(ids)
        except Exception as e:  # disk full: the ids stay (never re-sent, never expired), tried next tick
            self.write_errors += 1
            self._set_error(str(e) if isinstance(e, PublishError) else f"outbox delete failed: {type(e).__name__}: {e}")
            return
        self._to_delete.difference_update(ids)

    def _count_overflow(self) -> None:
        ob = self._outbox
        while self._overflow_counted < ob.overflow_episodes:
            self._overflow_counted += 1
            self._count_alarm("outbox_full")

    def _note_evicted(self, evicted) -> None:
        if not evicted:
            return
        log.error("outbox full (%d rows): evicted %d oldest message(s) into an outbox_full alarm",
                  self._outbox.max_rows if self._outbox else 0, len(evicted))
        for e in evicted:
            if e.kind == REJECT:
                self._record_escape(e, "evicted")

    def _may_finish(self, stop: _Stop) -> bool:
        if time.monotonic() >= stop.until - 0.3:  # keep time for `stopped` and the disconnect
            return True
        # Nothing more can be acknowledged if we are offline, or nothing is in flight or sendable.
        try:
            return not self._up or (not self._inflight and not self._sendable())
        except Exception:
            return True

    def _sendable(self) -> bool:
        ob = self._outbox
        busy = self._busy()
        return (any(i not in busy for i in self._memory) or bool(self._to_write)
                or bool(ob.pending((REJECT,), self._cursor[REJECT], 1))
                or bool(ob.pending((ALARM, OVERFLOW), self._cursor[ALARM], 1)))

    def _busy(self) -> set[str]:
        """Ids not to send again nor expire: in flight (their acknowledgement decides) or acknowledged."""
        return {f.entry.id for f in self._inflight.values()} | self._to_delete

    def _checkpoint_loop(self) -> None:
        """WAL -> database every _CHECKPOINT_S, off the reject's path (the outbox's second connection, no lock)."""
        while not self._ckpt_stop.wait(_CHECKPOINT_S):
            try:
                self._outbox.checkpoint()
            except PublishError as e:  # disk full: the WAL keeps the rows; delivery goes on
                self._set_error(str(e))
            except Exception:  # never fatal: the next period tries again
                log.exception("mqtt: outbox checkpoint failed")

    def _shutdown(self, stop: _Stop | None) -> None:
        # Anything still queued or held in memory goes to the outbox: the next start re-sends it.
        now = time.time()
        self._absorb([ev for ev in self._drain(timeout=0.0) if not isinstance(ev, _Verdict)])
        self._to_write.extend(self._fresh)
        self._fresh = []
        rows = [NewRow(e.id, e.kind, e.payload, e.deadline, e.ref) for e in self._memory.values()] + self._to_write
        try:
            self._outbox.put(rows)
            self._memory.clear()
            self._release([r.id for r in rows])
        except Exception as e:
            log.error("mqtt: %d message(s) could not be saved at stop: %s", len(rows), e)
        try:
            self._forget_acked()
        except Exception as e:
            log.error("mqtt: %d acknowledged message(s) stay in the outbox (re-sent on next start): %s",
                      len(self._to_delete), e)
        c = self._client
        if self._connected:
            info = c.publish(self.topics["status"], self._status("stopped", now), qos=1, retain=True)
            left = (stop.until - time.monotonic()) if stop else 1.0
            try:
                info.wait_for_publish(timeout=max(left, 0.2))
            except (RuntimeError, ValueError):
                pass  # connection lost meanwhile: the broker sends our last will instead
        c.disconnect()
        c.loop_stop()
        self._connected = False
        self._ckpt_stop.set()
        if self._ckpt_thread.is_alive():
            self._ckpt_thread.join(2.0)  # mid-fsync at worst; the outbox closes after it
        depth = self._outbox.depth()
        if depth:
            log.warning("mqtt: stopped with %d message(s) in the outbox %s (re-sent on next start)",
                        depth, self.cfg.outbox_path)
        self._outbox.close()
        j, self._journal = self._journal, None  # a late submit() commits to the (closed) outbox: counted error
        if j is not None:
            if self._slot_of:
                log.error("reject journal %s keeps %d reject(s) the outbox could not take: the next start "
                          "commits them", j.path, len(self._slot_of))
            j.close()  # removed when empty

    # -- rows ----------------------------------------------------------------------------------
    def _reject_row(self, v: Verdict) -> NewRow:
        rid = reject_id(self.cfg.line, self.cfg.station, self.boot, v.frame_id)
        return NewRow(id=rid, kind=REJECT, payload=reject_payload(v, rid).to_json(), deadline=v.deadline_wall,
                      ref=v.part_id or f"frame {v.frame_id}")

    def _alarm_row(self, kind: str, detail: dict, raised_at: float, *, alarm_id: str | None = None,
                   message: str | None = None, reject: RejectPayload | None = None) -> NewRow:
        self.alarms += 1
        alarm_id = alarm_id or f"{self.cfg.line}-{self.cfg.station}-alarm-{uuid.uuid4().hex}"
        p = AlarmPayload(id=alarm_id, kind=kind, raised_at=utc(raised_at), message=message or kind.replace("_", " "),
                         detail=_jsonable(detail), reject=reject)
        return NewRow(id=alarm_id, kind=ALARM, payload=p.to_json(), ref=(reject.part_id if reject else None))

    def _overflow_payload(self, row_id: str, summary: dict) -> str:
        msg = (f"outbox full: {summary['evicted']} oldest message(s) evicted "
               f"({summary['evicted_rejects']} rejects, {summary['evicted_alarms']} alarms) since "
               f"{iso_utc(summary['first_created'])}: the broker has not acknowledged for a long time")
        return AlarmPayload(id=row_id, kind="outbox_full", raised_at=utc(time.time()), message=msg,
                            detail=summary).to_json()

    def _escaped(self, e: Entry, now: float, *, late_ack: bool = False) -> NewRow:
        """The `escaped_part` alarm of a reject not delivered in time (counted once per reject)."""
        rej = RejectPayload.model_validate_json(e.payload)
        left = (e.deadline or now) - now
        if late_ack:
            why = f"the broker acknowledged it {-left * 1000:.0f} ms after its deadline"
        elif left <= 0:
            why = "deadline passed before the broker acknowledged it"
        else:
            why = f"only {left * 1000:.0f} ms left: too little for a whole-second MQTT expiry (subsecond_rejects=alarm)"
        msg = (f"part {rej.part_id or '-'} (frame {rej.frame_id}) was NOT rejected: reject {rej.id} "
               f"not delivered before its deadline {iso_utc(e.deadline or now)}")
        if self._record_escape(e, "late_ack" if late_ack else "expired"):
            if not late_ack:
                self.expired += 1
            log.warning("ALARM escaped_part: %s (%s)", msg, why)
            self._count_alarm("escaped_part")
        return self._alarm_row("escaped_part", {"reject_id": rej.id, "part_id": rej.part_id, "why": why,
                                                "last_error": self._last_error},
                               now, alarm_id=f"escaped-{rej.id}", message=msg, reject=rej)

    def _record_escape(self, e: Entry, why: str) -> bool:
        """Counts a physical escape once per reject id; False when it was already counted."""
        if e.id in self._escaped_ids:
            return False
        self._escaped_ids[e.id] = None
        if len(self._escaped_ids) > 100_000:
            self._escaped_ids.popitem(last=False)
        if why == "late_ack":
            self.late_acks += 1
        else:
            self.undelivered += 1
        try:
            body = json.loads(e.payload)
            frame_id, part_id = body.get("frame_id"), body.get("part_id")
        except (ValueError, AttributeError):
            frame_id, part_id = None, e.ref
        self._escapes.append(Escape(e.id, frame_id, part_id, why, this_boot=f"-{self.boot}-" in e.id))
        return True

    # -- publishing ----------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        """Rejects that can no longer be delivered in time become escaped_part alarms: in one
        transaction in the outbox; from memory (and, while the disk is full, for outbox rows too:
        a read-only query) into rows for the next write."""
        cutoff = now + self.min_left_s
        busy = self._busy()
        for rid, e in list(self._memory.items()):
            if e.kind == REJECT and e.deadline is not None and e.deadline <= cutoff and rid not in busy:
                del self._memory[rid]
                self._release([rid])  # its alarm is held in memory like it was (disk full: not durable)
                self._to_write.append(self._escaped(e, now))
        if self._degraded:
            # The outbox cannot take the alarm in place of the reject: alarm from memory now (once);
            # the transaction below does the swap when the disk has room (same alarm id).
            for e in self._outbox.due(cutoff, skip=busy):
                if e.id not in self._escaped_ids:
                    self._remember([self._escaped(e, now)], now)
            if now < self._write_retry_at:
                return
        try:
            self._outbox.expire(cutoff, lambda e: self._escaped(e, now), skip=busy)
        except PublishError as err:
            self.write_errors += 1
            self._set_error(str(err))

    def _pump(self, now: float) -> None:
        if now < self._retry_at:
            return
        room = WINDOW - len(self._inflight)
        busy = self._busy()  # after a refusal the cursors restart
        # Rejects first: they are the time-critical messages; alarms fill the remaining window.
        # Rows held in memory (disk full) before the outbox's: they have no other copy.
        for kinds, key in (((REJECT,), REJECT), ((ALARM, OVERFLOW), ALARM)):
            for e in [m for m in self._memory.values() if m.kind in kinds and m.id not in busy]:
                if room <= 0:
                    return
                sent = self._send(e, now)
                if sent is None:
                    return
                room -= sent
            if room <= 0:
                return
            for e in self._outbox.pending(kinds, self._cursor[key], room):
                self._cursor[key] = e.seq
                if e.id in busy:
                    continue
                sent = self._send(e, now)
                if sent is None:
                    return
                room -= sent

    def _send(self, e: Entry, now: float) -> int | None:
        """Publishes one row: 1 if sent, 0 if not sendable now, None if the connection is gone."""
        props = None
        if e.kind == REJECT:
            # The clock is read here, not at the start of the tick: submit() commits on another
            # thread, so a row may be younger than the tick's `now`, and its expiry would round up.
            left = e.deadline - max(now, time.time())
            if left < self.min_left_s or left <= 0:
                return 0  # the next sweep turns it into an escaped_part alarm
            if self.v5:
                props = Properties(PacketTypes.PUBLISH)
                # whole seconds, rounded DOWN: the broker drops it before the deadline
                props.MessageExpiryInterval = max(1, math.floor(left))
        topic = self.topics["reject" if e.kind == REJECT else "alarm"]
        info = self._client.publish(topic, publishable(e), qos=self.cfg.qos, retain=False, properties=props)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            self._up = False  # lost meanwhile; the next connect re-sends from the outbox
            return None
        self._inflight[info.mid] = _InFlight(e, self._gen)
        self.published += 1
        return 1

    def _on_ack(self, ev: _Ack) -> None:
        f = self._inflight.get(ev.mid)
        if f is None or f.gen != ev.gen:
            return  # birth, heartbeat, verdict, or a connection that is gone
        del self._inflight[ev.mid]
        e = f.entry
        if ev.code >= 0x80:
            # Refused (not authorised to publish, quota, ...): the row stays and is retried; a reject
            # that stays refused until its deadline becomes an escaped_part alarm.
            self.refused += 1
            self._set_error(f"broker refused {e.kind} {e.id}: {ev.name} (0x{ev.code:02x})")
            self._retry_at = time.time() + _REFUSED_RETRY_S
            self._cursor = {REJECT: 0, ALARM: 0}
            return
        if self._memory.pop(e.id, None) is None:
            self._to_delete.add(e.id)  # durable: delete it from the outbox
        else:
            self._release([e.id])  # delivered from memory: the journal need not keep it
        if e.kind != REJECT:
            return
        self.acked += 1
        now = ev.at  # when the broker's acknowledgement arrived, not when this thread got to it
        captured = self._captured.pop(e.id, None)
        if captured is not None:
            self.ack_ms.append((now - captured) * 1000.0)
        if e.deadline is not None and now > e.deadline:
            # Acknowledged after the part passed: a subscriber drops it as expired (the reference
            # actuator does), so the part was not stopped in time.
            self._to_write.append(self._escaped(e, now, late_ack=True))
        if ev.code == _NO_SUBSCRIBERS:
            self.no_subscribers += 1
            if not self._nosub_episode:  # one alarm per episode, not one per reject
                self._nosub_episode = True
                self._count_alarm("no_subscribers")
                self._to_write.append(self._alarm_row(
                    "no_subscribers", {"topic": self.topics["reject"], "reject_id": e.id},
                    now, message=f"nobody subscribes to {self.topics['reject']}: rejects are not actuated"))
        else:
            self._nosub_episode = False

    def _publish_verdicts(self) -> None:
        while self._verdicts:
            v = self._verdicts.popleft()
            vid = reject_id(self.cfg.line, self.cfg.station, self.boot, v.frame_id)
            info = self._client.publish(self.topics["verdict"], verdict_payload(v, vid).to_json(),
                                        qos=self.cfg.verdict_qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.verdicts_published += 1
            else:
                self.verdicts_dropped += 1

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_hb:
            return
        period = self.cfg.heartbeat_ms / 1000
        self._next_hb = max(self._next_hb + period, now)  # no burst after a stall
        try:
            figures = dict(self.heartbeat_fn() or {})
        except Exception as e:  # the pipeline's figures are optional; the beat itself is not
            figures = {"heartbeat_fn_error": f"{type(e).__name__}: {e}"}
        known = {k: figures.pop(k) for k in _HEARTBEAT_KEYS if k in figures}
        p = HeartbeatPayload(seq=self.heartbeats, at=utc(time.time()), boot=self.boot,
                             uptime_s=now - self._started_at, outbox_depth=self._outbox.depth() + len(self._memory),
                             pipeline=_jsonable(figures), **known)
        self._client.publish(self.topics["heartbeat"], p.to_json(), qos=0)
        self.heartbeats += 1


def _jsonable(d: dict) -> dict:
    """Alarm details and heartbeat figures come from other modules: keep what JSON can carry."""
    out = {}
    for k, v in d.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            out[str(k)] = v
        elif isinstance(v, dict):
            out[str(k)] = _jsonable(v)
        elif isinstance(v, (list, tuple)):
            out[str(k)] = [x if x is None or isinstance(x, (bool, int, float, str)) else str(x) for x in v]
        else:
            out[str(k)] = str(v)
    return out
