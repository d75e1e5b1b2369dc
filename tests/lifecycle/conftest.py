"""Fixtures of the lifecycle tests: a store with models/demo under its card's version (V1) and a second
bundle, the same IR as version 99.0.0 (V2), and a running service (real OpenVINO, synthetic line) with the
control socket open."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.bundle.signing import Trust
from inspector.config import InspectorConfig
from inspector.devtools.testing import ObserverSink
from inspector.lifecycle.store import ModelRef, ModelStore
from inspector.service.app import Service
from tests.lifecycle.bundles import DEMO, make_bundle

V1 = ModelRef("demo", json.loads((DEMO / "model_card.json").read_text())["version"])  # models/demo's card
V2 = ModelRef("demo", "99.0.0")  # a candidate: never a version models/demo will ship as


class Recorder(ObserverSink):
    """A post-thread observer: every verdict in order (model version, outcome, frame id)."""

    name = "recorder"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.verdicts: list = []
        self.cv = threading.Condition(self.lock)

    def submit(self, v) -> None:
        with self.cv:
            self.verdicts.append(v)
            self.cv.notify_all()

    def wait(self, pred: Callable[[list], bool], timeout: float, what: str) -> None:
        with self.cv:
            if not self.cv.wait_for(lambda: pred(self.verdicts), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                     f"({len(self.verdicts)} verdicts)")

    def versions(self) -> list[str]:
        with self.lock:
            return [v.model.version for v in self.verdicts]


def lifecycle_config(tmp_path: Path, **over) -> InspectorConfig:
    base = dict(
        source={"kind": "synthetic", "seed": 777, "parts_per_s": 20},
        model={"path": str(DEMO)},
        decision={"budget_ms": 1000},
        mqtt={"enabled": False},
        sampling={"enabled": False},
        spool={"dir": str(tmp_path / "spool")},
        upload={"window": None},
        metrics={"enabled": False},
        lifecycle={"enabled": True, "store": str(tmp_path / "store"), "socket": str(tmp_path / "run" / "ctl.sock")},
    )
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return InspectorConfig(**base)


@pytest.fixture
def store_v2(tmp_path) -> ModelStore:
    """The store with V2 staged (V1 is staged by the service's first start)."""
    store = ModelStore(tmp_path / "store", "st1")
    store.stage(make_bundle(tmp_path / "bundles" / "v2", V2.version), Trust())
    return store


@pytest.fixture
def running(tmp_path):
    """start(cfg, max_frames) -> (service, recorder); every service started is stopped at the end."""
    made: list[Service] = []

    def start(cfg: InspectorConfig, max_frames: int | None = None) -> tuple[Service, Recorder]:
        svc = Service(cfg, max_frames=max_frames)
        rec = Recorder()
        svc.pipeline.sinks.append(rec)
        made.append(svc)
        svc.start()
        return svc, rec

    yield start
    for svc in made:
        svc.stop(deadline_s=5)


def wait_done(svc: Service, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not svc.pipeline.done.wait(0.1):
        svc.pipeline.raise_if_failed()
        assert time.monotonic() < end, f"run not done after {timeout} s"
