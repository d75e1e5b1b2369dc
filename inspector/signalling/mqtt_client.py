"""The one MQTT client factory: protocol (v5 / 3.1.1), session, TLS, credentials and logging,
shared by the publisher and the reference actuator so both speak to the broker the same way.

A password sent without TLS crosses the network in clear text (MQTT CONNECT): the factory says
so once per broker and user (a warning in the log), and `password_in_clear` lets a caller put it
in its state.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MQTTConfig
from inspector.errors import PublishError

log = logging.getLogger(__name__)

C = TypeVar("C", bound=mqtt.Client)

_warned: set[tuple[str, int, str]] = set()
_warned_lock = threading.Lock()


def password_in_clear(cfg: MQTTConfig) -> bool:
    """True when a password would be sent over a connection without TLS."""
    return cfg.password is not None and cfg.tls is None


def make_client(cfg: MQTTConfig, *, client_id: str, persistent: bool, logger: str,
                client_cls: type[C] = mqtt.Client) -> C:  # type: ignore[assignment]
    """A configured, unconnected client. `persistent`: the broker keeps the session (subscriber:
    clean_session=False on 3.1.1, clean_start=False on v5, see `connect_kwargs`); the publisher
    uses a clean session because its outbox, not the broker, holds what is unacknowledged."""
    if cfg.protocol == "v5":
        c = client_cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = client_cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                       clean_session=not persistent)
    c.enable_logger(logging.getLogger(logger))
    c.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)
    if cfg.username is not None:
        c.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    if password_in_clear(cfg):
        key = (cfg.host, cfg.port, cfg.username or "")
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            log.warning("mqtt: the password of user %r is sent to %s:%d WITHOUT TLS (readable on the network); "
                        "set mqtt.tls", cfg.username, cfg.host, cfg.port)
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
            raise PublishError(f"mqtt.tls: expected a PEM CA bundle / client cert+key, "
                               f"got an unusable file: {e}") from e
        c.tls_insecure_set(t.insecure)
    return c


def connect_kwargs(cfg: MQTTConfig, *, session_expiry_s: int) -> dict[str, Any]:
    """Arguments of `connect_async` for the session: v5 only (3.1.1 set it in the client).
    `session_expiry_s` 0: a clean session; > 0: resume the session kept that long by the broker."""
    if cfg.protocol != "v5":
        return {}
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return {"clean_start": session_expiry_s == 0, "properties": props}
