"""MQTT publisher: the verdict sink that signals rejects to the line, durably and never late.

Responsibility: move rejects and alarms from the outbox to the broker, and keep the line told
whether the inspector is alive (retained status with a last will, heartbeat). It owns the MQTT
connection; storage is `outbox.Outbox`, payload shapes are `payloads`.

Threads:
- the caller (frame loop) only enqueues (`submit`, `alarm`): never blocks, never touches SQLite;
- paho's network thread (`loop_start`) connects, reconnects with capped backoff and runs the
  callbacks, which only enqueue events (and publish the birth message on connect);
- the publisher thread owns the outbox: writes rows, publishes them, deletes them on PUBACK,
  turns expired rejects into alarms, sends the heartbeat.

Never late: on MQTT v5 a reject carries a message expiry of the whole seconds left to its deadline
(rounded down), so the broker drops it before the part has passed. A reject with less than 1 s
left cannot be given an exact expiry: with `subsecond_rejects: alarm` (default) it is not
published and becomes an `escaped_part` alarm. Paho re-sends its own in-flight messages after a
reconnect with their ORIGINAL expiry, which would let a reject out late; so on every connect its
queue is emptied and the outbox, the single source of truth, re-publishes with fresh expiries.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MQTTConfig
from inspector.errors import PublishError
from inspector.frames import ModelInfo, Verdict, iso_utc
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

log = logging.getLogger(__name__)

WINDOW = 100  # messages in flight per connection: enough to fill a LAN, small enough to re-send
_TICK_S = 0.05  # housekeeping period of the publisher thread (expiry sweep, heartbeat check)
_REFUSED_RETRY_S = 1.0  # a message the broker refused (reason >= 0x80) is tried again after this
_NO_SUBSCRIBERS = 0x10
_AUTH_CODES = {0x86, 0x87, 0x8C}  # bad user name or password, not authorized, bad auth method
_HEARTBEAT_KEYS = ("last_frame_age_s", "p99_ms", "frames")


# -- events into the publisher thread (frozen: they cross threads) -----------------------------
@dataclass(frozen=True, slots=True)
class _Submit:
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
    row_id: str
    kind: str
    gen: int


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
    if not ms:
        return {"ack_ms_p50": None, "ack_ms_p99": None}
    ms = sorted(ms)
    return {"ack_ms_p50": round(ms[len(ms) // 2], 3), "ack_ms_p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3)}


def _purge_paho_queue(client: mqtt.Client) -> None:
    # Private paho state (pinned paho-mqtt <3): the messages it would re-send after a reconnect
    # carry their original MessageExpiryInterval, i.e. too long by the outage. The outbox re-sends
    # them instead, with the time actually left. Called from on_connect, before paho re-sends.
    with client._out_message_mutex:
        client._out_messages.clear()
        client._inflight_messages = 0


class MqttPublisher:
    """VerdictSink that publishes rejects (durably), verdicts (optionally), status, heartbeat, alarms."""

    name = "mqtt"

    def __init__(self, cfg: MQTTConfig, *, model: ModelInfo, config_hash: str,
                 heartbeat_fn: Callable[[], dict]) -> None:
        self.cfg = cfg
        self.model = model
        self.config_hash = config_hash
        self.heartbeat_fn = heartbeat_fn
        self.boot = uuid.uuid4().hex[:12]
        self.client_id = cfg.client_id or f"inspector-{cfg.line}-{cfg.station}"
        root = cfg.topic_root
        self.topics = {t: f"{root}/{t}" for t in ("reject", "verdict", "status", "heartbeat", "alarm")}
        self.v5 = cfg.protocol == "v5"
        # The smallest time left for which a reject is still published (see module docstring).
        self.min_left_s = 1.0 if (self.v5 and cfg.subsecond_rejects == "alarm") else 0.0

        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._outbox: Outbox | None = None
        self._client: _Client | None = None
        self._started_at = time.monotonic()
        # network-thread view
        self._net_gen = 0
        self._connected = False
        self._last_error: str | None = None
        self._logged_error: str | None = None
        # publisher-thread view
        self._gen = 0
        self._up = False
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = {REJECT: 0, ALARM: 0}
        self._retry_at = 0.0
        self._next_hb = 0.0
        self._nosub_episode = False
        self._unwritten: list[NewRow] = []
        # counters (ints written by one thread, read by anyone)
        self.published = 0
        self.acked = 0
        # Capture -> PUBACK of this process's rejects: what the line actually waits for.
        self._captured: dict[str, float] = {}
        self.ack_ms: deque[float] = deque(maxlen=10_000)
        self.expired = 0
        self.alarms = 0
        self.no_subscribers = 0
        self.refused = 0
        self.reconnects = 0
        self.heartbeats = 0
        self.verdicts_published = 0
        self.verdicts_dropped = 0
        self.leftovers = 0
        self.write_errors = 0

    # -- VerdictSink -----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        self._outbox = Outbox(cfg.outbox_path, cfg.outbox_max, overflow_payload=self._overflow_payload)
        self.leftovers = self._outbox.depth()
        if self.leftovers:
            log.warning("outbox %s: %d message(s) left by a previous run: re-sent with the same ids, "
                        "or alarmed if their deadline passed", cfg.outbox_path, self.leftovers)
        self._client = self._make_client()
        # connect_async + loop_start: the TCP connect happens on paho's thread, so start-up never
        # waits for the broker; a broker that is down is retried with the capped backoff.
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, **self._connect_kwargs())
        self._client.loop_start()
        self._thread.start()

    def submit(self, verdict: Verdict) -> None:
        if verdict.actuate or self.cfg.publish_verdicts:
            self._q.put(_Submit(verdict))

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

    def state(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "last_error": self._last_error,
            "outbox_depth": self._outbox.depth() if self._outbox else 0,
            "queued": self._q.qsize(),
            "published": self.published,
            "acked": self.acked,
            "expired": self.expired,
            "alarms": self.alarms,
            "no_subscribers": self.no_subscribers,
            "refused": self.refused,
            "evicted": self._outbox.evicted if self._outbox else 0,
            "reconnects": self.reconnects,
            "connect_attempts": self._client.attempts if self._client else 0,
            "heartbeats": self.heartbeats,
            "verdicts_published": self.verdicts_published,
            "verdicts_dropped": self.verdicts_dropped,
            "leftovers": self.leftovers,
            "write_errors": self.write_errors,
            "client_id": self.client_id,
            "boot": self.boot,
            **_ack_percentiles(list(self.ack_ms)[-1000:]),
        }

    # -- client set-up -----------------------------------------------------------------------------
    def _make_client(self) -> _Client:
        cfg = self.cfg
        if self.v5:
            c = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        else:
            # clean session: the outbox, not the broker, holds what is unacknowledged
            c = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                        clean_session=True)
        c.connect_error_hook = self._on_connect_error
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.enable_logger(logging.getLogger("inspector.signalling.publisher.paho"))
        c.will_set(self.topics["status"], self._status("offline", at=None), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)
        c.max_inflight_messages_set(WINDOW)
        c.max_queued_messages_set(0)  # the outbox is the bound, paho's queue is emptied per connect
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            t = cfg.tls
            for label, path in (("ca_file", t.ca_file), ("cert_file", t.cert_file), ("key_file", t.key_file)):
                if path is not None and not path.is_file():
                    raise PublishError(f"mqtt.tls.{label}: expected a readable file, got {str(path)!r} (not found)")
            try:
                c.tls_set(ca_certs=str(t.ca_file) if t.ca_file else None,
                          certfile=str(t.cert_file) if t.cert_file else None,
                          keyfile=str(t.key_file) if t.key_file else None,
                          cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as e:
                raise PublishError(f"mqtt.tls: expected a PEM CA bundle / client cert+key, got an unusable file: {e}") from e
            c.tls_insecure_set(t.insecure)
        return c

    def _connect_kwargs(self) -> dict[str, Any]:
        if not self.v5:
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # nothing to keep at the broker: see _make_client
        return {"clean_start": True, "properties": props}

    def _status(self, state: str, at: float | None) -> str:
        online = state == "online"
        return StatusPayload(state=state, at=utc(at) if at is not None else None, client_id=self.client_id,
                             boot=self.boot, model=ModelRef.of(self.model) if online else None,
                             config_hash=self.config_hash if online else None).to_json()

    # -- paho callbacks (network thread): record, enqueue, return ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._set_error(self._describe_refusal(reason_code))
            return
        _purge_paho_queue(client)
        self._net_gen += 1
        if self._net_gen > 1:
            self.reconnects += 1
        self._connected = True
        self._last_error = None
        self._logged_error = None
        log.info("mqtt: connected to %s:%d as %s (%s)", self.cfg.host, self.cfg.port, self.client_id, self.cfg.protocol)
        # Birth first, on every (re)connect: it replaces the retained `offline` of our last will.
        client.publish(self.topics["status"], self._status("online", time.time()), qos=1, retain=True)
        self._q.put(_Up(self._net_gen))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        if was:
            if reason_code.value != 0:
                self._set_error(f"connection to {self.cfg.host}:{self.cfg.port} lost: {reason_code.getName()}")
            self._q.put(_Down(self._net_gen))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._q.put(_Ack(self._net_gen, mid, reason_code.value, reason_code.getName()))

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
            return f"TLS handshake with {where} failed: {exc.reason or exc} (is the broker's listener TLS? right client cert?)"
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
        stop: _Stop | None = None
        self._next_hb = time.monotonic()
        while True:
            try:
                stop = self._step(stop)
            except PublishError as e:  # the outbox cannot write (disk full): known, said once
                self.write_errors += 1
                self._set_error(str(e))
                time.sleep(0.2)
            except Exception as e:  # the reject path must not die silently: say it, keep going
                self.write_errors += 1
                self._last_error = f"publisher: {type(e).__name__}: {e}"
                log.exception("mqtt publisher step failed; retrying")
                time.sleep(0.2)
            if stop is not None and self._may_finish(stop):
                break
        self._shutdown(stop)

    def _step(self, stop: _Stop | None) -> _Stop | None:
        events = self._drain(timeout=_TICK_S)
        rows: list[NewRow] = []
        verdicts: list[Verdict] = []
        acked: list[str] = []
        for ev in events:
            if isinstance(ev, _Submit):
                v = ev.verdict
                if v.actuate:
                    rows.append(self._reject_row(v))
                if self.cfg.publish_verdicts:
                    verdicts.append(v)
            elif isinstance(ev, _Alarm):
                rows.append(self._alarm_row(ev.kind, ev.detail, ev.raised_at))
            elif isinstance(ev, _Ack):
                self._on_ack(ev, acked)
            elif isinstance(ev, _Up):
                self._gen, self._up = ev.gen, True
                self._inflight.clear()
                self._cursor = {REJECT: 0, ALARM: 0}
            elif isinstance(ev, _Down):
                if ev.gen == self._gen:
                    self._up = False
                    self._inflight.clear()  # nothing of that connection will be acknowledged now
            elif isinstance(ev, _Stop):
                stop = ev
        ob = self._outbox
        # Written before it is published: a reject exists durably before it can be acknowledged.
        rows, self._unwritten = self._unwritten + rows, []
        try:
            evicted = ob.put(rows)
        except PublishError as e:  # disk full, ...: keep them in memory and try again next tick
            self._unwritten = rows
            self.write_errors += 1
            self._set_error(str(e))
            evicted = []
        if evicted:
            log.error("outbox full (%d rows): evicted %d oldest message(s) into an outbox_full alarm",
                      ob.max_rows, len(evicted))
        ob.delete(acked)
        now = time.time()
        self._sweep(now)
        if self._up:
            self._pump(now)
            self._publish_verdicts(verdicts)
            self._heartbeat()
        else:
            self.verdicts_dropped += len(verdicts)
        return stop

    def _drain(self, timeout: float) -> list:
        try:
            events = [self._q.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(events) < 2000:  # one transaction per batch, however fast verdicts come
            try:
                events.append(self._q.get_nowait())
            except queue.Empty:
                break
        return events

    def _may_finish(self, stop: _Stop) -> bool:
        if time.monotonic() >= stop.until - 0.3:  # keep time for `stopped` and the disconnect
            return True
        # Nothing more can be acknowledged if we are offline, or nothing is in flight or sendable.
        return not self._up or (not self._inflight and not self._sendable())

    def _sendable(self) -> bool:
        ob = self._outbox
        return bool(ob.pending((REJECT,), self._cursor[REJECT], 1) or ob.pending((ALARM, OVERFLOW), self._cursor[ALARM], 1))

    def _shutdown(self, stop: _Stop | None) -> None:
        # Anything still queued in memory goes to the outbox: the next start re-sends it.
        rows = list(self._unwritten)
        for ev in self._drain(timeout=0.0):
            if isinstance(ev, _Submit) and ev.verdict.actuate:
                rows.append(self._reject_row(ev.verdict))
            elif isinstance(ev, _Alarm):
                rows.append(self._alarm_row(ev.kind, ev.detail, ev.raised_at))
        try:
            self._outbox.put(rows)
        except PublishError as e:
            log.error("mqtt: %d message(s) could not be saved at stop: %s", len(rows), e)
        c = self._client
        if self._connected:
            info = c.publish(self.topics["status"], self._status("stopped", time.time()), qos=1, retain=True)
            left = (stop.until - time.monotonic()) if stop else 1.0
            try:
                info.wait_for_publish(timeout=max(left, 0.2))
            except (RuntimeError, ValueError):
                pass  # connection lost meanwhile: the broker sends our last will instead
        c.disconnect()
        c.loop_stop()
        self._connected = False
        depth = self._outbox.depth()
        if depth:
            log.warning("mqtt: stopped with %d message(s) in the outbox %s (re-sent on next start)", depth, self.cfg.outbox_path)
        self._outbox.close()

    # -- rows ----------------------------------------------------------------------------------
    def _reject_row(self, v: Verdict) -> NewRow:
        rid = reject_id(self.cfg.line, self.cfg.station, self.boot, v.frame_id)
        if len(self._captured) < 100_000:  # bounded: entries leave on ack; expired ones are few
            self._captured[rid] = v.frame.captured_wall
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

    def _escaped(self, e: Entry, now: float) -> NewRow:
        rej = RejectPayload.model_validate_json(e.payload)
        left = (e.deadline or now) - now
        why = ("deadline passed before the broker acknowledged it" if left <= 0 else
               f"only {left * 1000:.0f} ms left: too little for a whole-second MQTT expiry (subsecond_rejects=alarm)")
        self.expired += 1
        msg = (f"part {rej.part_id or '-'} (frame {rej.frame_id}) was NOT rejected: reject {rej.id} "
               f"not delivered before its deadline {iso_utc(e.deadline or now)}")
        log.warning("ALARM escaped_part: %s (%s)", msg, why)
        return self._alarm_row("escaped_part", {"reject_id": rej.id, "part_id": rej.part_id, "why": why,
                                                "last_error": self._last_error},
                               now, alarm_id=f"escaped-{rej.id}", message=msg, reject=rej)

    # -- publishing ----------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        skip = {f.row_id for f in self._inflight.values()}
        self._outbox.expire(now + self.min_left_s, lambda e: self._escaped(e, now), skip=skip)

    def _pump(self, now: float) -> None:
        if now < self._retry_at:
            return
        room = WINDOW - len(self._inflight)
        busy = {f.row_id for f in self._inflight.values()}  # after a refusal the cursors restart
        # Rejects first: they are the time-critical messages; alarms fill the remaining window.
        for kinds, key in (((REJECT,), REJECT), ((ALARM, OVERFLOW), ALARM)):
            if room <= 0:
                return
            for e in self._outbox.pending(kinds, self._cursor[key], room):
                self._cursor[key] = e.seq
                if e.id in busy:
                    continue
                props = None
                if e.kind == REJECT:
                    left = e.deadline - now
                    if left < self.min_left_s or left <= 0:
                        continue  # the next sweep turns it into an escaped_part alarm
                    if self.v5:
                        props = Properties(PacketTypes.PUBLISH)
                        # whole seconds, rounded DOWN: the broker drops it before the deadline
                        props.MessageExpiryInterval = max(1, math.floor(left))
                topic = self.topics["reject" if e.kind == REJECT else "alarm"]
                info = self._client.publish(topic, publishable(e), qos=self.cfg.qos, retain=False, properties=props)
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    self._up = False  # lost meanwhile; the next connect re-sends from the outbox
                    return
                self._inflight[info.mid] = _InFlight(e.id, e.kind, self._gen)
                self.published += 1
                room -= 1

    def _on_ack(self, ev: _Ack, acked: list[str]) -> None:
        f = self._inflight.get(ev.mid)
        if f is None or f.gen != ev.gen:
            return  # birth, heartbeat, verdict, or a connection that is gone
        del self._inflight[ev.mid]
        if ev.code >= 0x80:
            # Refused (not authorised to publish, quota, ...): the row stays and is retried; a reject
            # that stays refused until its deadline becomes an escaped_part alarm.
            self.refused += 1
            self._set_error(f"broker refused {f.kind} {f.row_id}: {ev.name} (0x{ev.code:02x})")
            self._retry_at = time.time() + _REFUSED_RETRY_S
            self._cursor = {REJECT: 0, ALARM: 0}
            return
        acked.append(f.row_id)
        if f.kind != REJECT:
            return
        self.acked += 1
        captured = self._captured.pop(f.row_id, None)
        if captured is not None:
            self.ack_ms.append((time.time() - captured) * 1000.0)
        if ev.code == _NO_SUBSCRIBERS:
            self.no_subscribers += 1
            if not self._nosub_episode:  # one alarm per episode, not one per reject
                self._nosub_episode = True
                self._outbox.put([self._alarm_row(
                    "no_subscribers", {"topic": self.topics["reject"], "reject_id": f.row_id},
                    time.time(), message=f"nobody subscribes to {self.topics['reject']}: rejects are not actuated")])
        else:
            self._nosub_episode = False

    def _publish_verdicts(self, verdicts: list[Verdict]) -> None:
        for v in verdicts:
            vid = reject_id(self.cfg.line, self.cfg.station, self.boot, v.frame_id)
            info = self._client.publish(self.topics["verdict"], verdict_payload(v, vid).to_json(), qos=self.cfg.verdict_qos)
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
                             uptime_s=now - self._started_at, outbox_depth=self._outbox.depth(),
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
