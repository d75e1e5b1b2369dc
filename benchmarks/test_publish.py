"""The publish path: what `submit` costs the pipeline's post thread (a REJECT is copied into the
reject journal before it returns, the outbox commit follows on the publisher thread; a PASS is not
written), the durable outbox write (SQLite WAL commit, synchronous NORMAL as shipped vs FULL) and
capture -> PUBACK through a local Mosquitto. Beside disk I/O and busy neighbours: benchmarks/reject_path.py.

Needs /usr/sbin/mosquitto (make test installs it).
"""

import itertools
import time

import pytest

from inspector.config import MQTTConfig
from inspector.devtools.broker import LocalBroker, mosquitto_available
from inspector.devtools.testing import make_reject
from inspector.frames import ModelInfo
from inspector.signalling.outbox import NewRow, Outbox
from inspector.signalling.publisher import MqttPublisher

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
MODEL = ModelInfo("bench", "1", "0" * 64)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = LocalBroker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture()
def publisher(broker, tmp_path):
    cfg = MQTTConfig(host=broker.host, port=broker.port, outbox_path=tmp_path / "outbox.sqlite", station="bench")
    pub = MqttPublisher(cfg, model=MODEL, config_hash="bench", heartbeat_fn=lambda: {})
    pub.start()
    t0 = time.monotonic()
    while not pub.state()["connected"] and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    yield pub
    pub.stop()


@pytest.mark.benchmark(group="publish")
@pytest.mark.parametrize("reject", [True, False], ids=["reject", "pass"])
def test_submit_cost_on_the_post_thread(benchmark, publisher, reject):
    ids = itertools.count()
    benchmark(lambda: publisher.submit(make_reject(next(ids), budget_s=30.0, reject=reject)))


@pytest.mark.benchmark(group="publish")
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_outbox_durable_write(benchmark, tmp_path, synchronous):
    box = Outbox(tmp_path / "o.sqlite", max_rows=10_000_000, synchronous=synchronous)
    ids = itertools.count()
    payload = make_reject(0).frame.part_id or "x"
    benchmark(lambda: box.put([NewRow(id=f"r{next(ids)}", kind="reject", payload=payload * 20,
                                      deadline=time.time() + 5)]))
    box.close()


@pytest.mark.benchmark(group="publish")
def test_capture_to_puback(benchmark, publisher):
    ids = itertools.count()

    def one():
        before = publisher.state()["acked"]
        publisher.submit(make_reject(next(ids), budget_s=30.0))
        while publisher.state()["acked"] == before:
            time.sleep(0.0002)

    benchmark.pedantic(one, rounds=100, iterations=1, warmup_rounds=5)
    benchmark.extra_info["ack_ms_p50"] = publisher.state()["ack_ms_p50"]
