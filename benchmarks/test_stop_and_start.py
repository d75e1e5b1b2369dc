"""How fast the parts start and stop: the speed figures the tests no longer assert (tests assert order and
state; a loaded CI machine made their wall-clock bounds flaky). Each keeps the bound the test had, as a
benchmark that says how far inside it this machine is:

- the publisher's start() with the broker down returns at once (tests/signalling/test_publisher.py: < 1 s);
- a looping video source stops within 1 s (tests/sources/test_video.py);
- stop_within() with two parts stuck for a minute returns within the 2 s deadline (tests/service/test_report.py:
  the bound there was 15 s).

    .venv/bin/python -m pytest -q benchmarks/test_stop_and_start.py --benchmark-only
"""

from __future__ import annotations

import socket
import threading

import cv2
import numpy as np
import pytest

from inspector.config import MQTTConfig, VideoSourceConfig
from inspector.frames import ModelInfo
from inspector.service.app import stop_within
from inspector.signalling.publisher import MqttPublisher
from inspector.sources import open_source


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.benchmark(group="start-stop")
def test_publisher_start_with_the_broker_down(benchmark, tmp_path):
    cfg = MQTTConfig(host="127.0.0.1", port=_closed_port(), outbox_path=tmp_path / "outbox.sqlite", station="bench",
                     reconnect_min_s=0.1, reconnect_max_s=0.5)
    started = []

    def start():
        p = MqttPublisher(cfg, model=ModelInfo("bench", "1", "0" * 64), config_hash="bench", heartbeat_fn=lambda: {})
        p.start()
        started.append(p)

    try:
        benchmark.pedantic(start, rounds=5, iterations=1)
    finally:
        for p in started:
            p.stop(2.0)
    assert benchmark.stats.stats.max < 1.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    for i in range(50):
        w.write(np.full((120, 160, 3), i * 4, np.uint8))
    w.release()
    return path


@pytest.mark.benchmark(group="start-stop")
def test_a_looping_video_source_stops(benchmark, clip):
    def setup():
        src = open_source(VideoSourceConfig(path=clip, pace="native", loop=True))
        src.start()
        assert src.read(timeout=5.0) is not None
        return (src,), {}

    benchmark.pedantic(lambda src: src.stop(), setup=setup, rounds=5, iterations=1)
    assert benchmark.stats.stats.max < 1.0


@pytest.mark.benchmark(group="start-stop")
def test_stop_within_two_stuck_parts(benchmark):
    gate = threading.Event()

    def stuck(_t):
        gate.wait(60)

    parts = [("source", "source", stuck), ("pipeline", "pipeline", stuck), ("metrics", "metrics", lambda t: None)]
    try:
        rep = benchmark.pedantic(lambda: stop_within(parts, 2.0), rounds=3, iterations=1)
    finally:
        gate.set()
    assert rep.overran == ("source", "pipeline")
    assert benchmark.stats.stats.max < 2.0 + 0.5
