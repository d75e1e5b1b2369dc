"""The reference actuator against a real Mosquitto: dedup, expiry, persistent session, watchdog."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from inspector.config import InspectorConfig
from inspector.devtools.actuator import Actuator, run_actuator
from inspector.devtools.testing import heartbeat_figures, make_reject
from inspector.frames import ModelInfo
from inspector.signalling.payloads import (
    HeartbeatPayload,
    StatusPayload,
    reject_payload,
)
from inspector.signalling.publisher import MqttPublisher
from tests.fixtures.mqtt_broker import mqtt_config
from tests.waiting import wait_for as wait

MODEL = ModelInfo("test-model", "0.0.1", "0" * 64)




def raw_client(cfg) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(cfg.host, cfg.port)
    c.loop_start()
    return c


def started(act: Actuator) -> Actuator:
    act.start()
    assert act.subscribed.wait(10), "no SUBACK"
    return act


def test_dedup_expired_invalid_status_and_stale_heartbeat(mqtt_broker, tmp_path):
    cfg = mqtt_config(mqtt_broker, tmp_path, heartbeat_ms=100)
    out = io.StringIO()
    act = started(Actuator(cfg, out=out))
    c = raw_client(cfg)
    root = cfg.topic_root
    try:
        fresh = reject_payload(make_reject(1, budget_s=10), "r-1").to_json()
        late = reject_payload(make_reject(2, budget_s=1, age_s=5), "r-2").to_json()  # deadline passed
        for body in (fresh, fresh, late, "{not json"):
            c.publish(f"{root}/reject", body, qos=1).wait_for_publish(5)
        now = datetime.now(UTC)
        c.publish(f"{root}/status", StatusPayload(state="online", at=now, client_id="x", boot="b").to_json(), qos=1)
        c.publish(f"{root}/heartbeat", HeartbeatPayload(seq=0, at=now, boot="b", uptime_s=0, outbox_depth=0).to_json())
        wait(lambda: act.last_heartbeat is not None and act.invalid == 1, 5, "the heartbeat and the invalid one")
        assert act.check_heartbeat()
        wait(lambda: not act.check_heartbeat(), 30, "the heartbeat to go stale")  # no other heartbeat comes
        assert act.stale_episodes == 1 and not act.check_heartbeat() and act.stale_episodes == 1  # one episode
        c.publish(f"{root}/status", StatusPayload(state="offline", at=None, client_id="x", boot="b").to_json(), qos=1)
        wait(lambda: act.status == "offline", 5, "offline")
    finally:
        c.loop_stop()
        act.stop()
    assert act.actuated == ["r-1"] and act.duplicates == 1 and act.expired == ["r-2"]
    text = out.getvalue()
    assert "IGNORED expired reject r-2" in text and "heartbeat STALE" in text and "OFFLINE" in text
    assert "capture->receipt" in text


def test_expect_n_rejects_from_a_real_publisher(mqtt_broker, tmp_path):
    cfg = mqtt_config(mqtt_broker, tmp_path)
    out = io.StringIO()
    act = Actuator(cfg, out=out)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(act.run(expect=5, duration=20)))
    t.start()
    assert act.subscribed.wait(10), "no SUBACK"
    pub = MqttPublisher(cfg, model=MODEL, config_hash="h", heartbeat_fn=heartbeat_figures)
    pub.start()
    for i in range(5):
        pub.submit(make_reject(i, budget_s=10))
    t.join(20)
    pub.stop(2.0)
    assert result == [0] and len(act.actuated) == 5
    assert "summary: rejects actuated 5/5 expected" in out.getvalue()
    assert "inspector ONLINE" in out.getvalue()


def test_persistent_session_gets_rejects_published_while_it_was_away(mqtt_broker, tmp_path):
    cfg = mqtt_config(mqtt_broker, tmp_path)
    act = started(Actuator(cfg, out=io.StringIO(), client_id=f"act-{cfg.station}"))
    act.stop()  # the session (subscriptions) stays at the broker
    pub = MqttPublisher(cfg, model=MODEL, config_hash="h", heartbeat_fn=heartbeat_figures)
    pub.start()
    for i in range(3):
        pub.submit(make_reject(i, budget_s=30))
    wait(lambda: pub.state()["acked"] == 3, 10, "3 rejects at the broker")
    pub.stop(2.0)
    assert pub.state()["no_subscribers"] == 0  # the absent session counts as a subscriber
    act2 = Actuator(cfg, out=io.StringIO(), client_id=f"act-{cfg.station}")
    act2.start()
    try:
        wait(lambda: len(act2.actuated) == 3, 10, "the queued rejects")
    finally:
        act2.stop()


def test_run_actuator_fails_when_the_duration_ends_first(mqtt_broker, tmp_path, capsys):
    cfg = mqtt_config(mqtt_broker, tmp_path)
    assert run_actuator(InspectorConfig(mqtt=cfg), expect=1, duration=0.5) == 1
    assert "summary: rejects actuated 0/1 expected" in capsys.readouterr().out
    assert run_actuator(InspectorConfig(mqtt=cfg), expect=-1, duration=0.1) == 2


def test_run_actuator_restores_the_signal_handlers_it_installs(mqtt_broker, tmp_path):
    import signal

    cfg = mqtt_config(mqtt_broker, tmp_path)

    def mine(*_):
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert run_actuator(InspectorConfig(mqtt=cfg), expect=0, duration=5) == 0
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, h in before.items():
            signal.signal(sig, h)
