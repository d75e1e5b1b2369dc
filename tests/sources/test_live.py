"""The live cameras' shared base: the reconnect backoff doubles up to its cap and starts over after a
connection that worked; both live sources use it, and the backoff is written once."""

import ast
import threading
from pathlib import Path

import pytest

from inspector.config import GenICamSourceConfig, OpenCVSourceConfig
from inspector.sources.base import Backoff, Connection, LiveSource
from inspector.sources.genicam import GenICamSource
from inspector.sources.opencv import OpenCVSource

SOURCES = Path(__file__).resolve().parents[2] / "inspector" / "sources"


@pytest.mark.parametrize(("initial_s", "max_s", "expected"), [
    (0.25, 5.0, [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]),  # the opencv source's defaults
    (0.25, 2.0, [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]),  # the genicam source's defaults
    (0.1, 0.1, [0.1] * 7),  # no growth when the cap is the start
])
def test_the_delay_doubles_up_to_its_cap_and_reset_starts_over(initial_s, max_s, expected):
    stop = threading.Event()
    stop.set()  # every wait returns at once: the sequence is what matters, not the clock
    b = Backoff(initial_s, max_s)
    seen = []
    for _ in expected:
        seen.append(b.delay_s)
        assert b.wait(stop) is True  # stop set: the caller stops at once
    assert seen == pytest.approx(expected)
    b.reset()
    assert b.delay_s == initial_s


@pytest.mark.parametrize(("cls", "cfg"), [
    (OpenCVSource, OpenCVSourceConfig(kind="opencv", url="rtsp://127.0.0.1:1/x", reconnect_initial_ms=300,
                                      reconnect_max_ms=900)),
    (GenICamSource, GenICamSourceConfig(kind="genicam", address="127.0.0.1", reconnect_initial_ms=300,
                                        reconnect_max_ms=900)),
])
def test_both_live_sources_start_on_the_shared_base(cls, cfg):
    src = cls(cfg)
    assert isinstance(src, LiveSource)
    assert (src._backoff.initial_s, src._backoff.max_s) == (0.3, 0.9)
    assert src.state().connection is Connection.CONNECTING and src._buf.mode == cfg.trigger


def test_the_reconnect_backoff_is_written_once():
    """Only the base reads the reconnect settings; the cameras' loops call its Backoff."""
    readers = set()
    for path in SOURCES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("reconnect_initial_ms", "reconnect_max_ms"):
                readers.add(path.name)
    assert readers == {"base.py"}, readers
