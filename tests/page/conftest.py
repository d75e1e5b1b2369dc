"""Fixtures of the page tests: a real service on the synthetic line with the page on a free loopback port,
and a real headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright with a fresh profile."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.config import InspectorConfig
from inspector.devtools.testing import ObserverSink
from inspector.service.app import Service

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def page_config(tmp_path: Path, **over) -> InspectorConfig:
    base = dict(
        source={"kind": "synthetic", "seed": 777, "parts_per_s": 10},
        model={"path": str(REPO / "models/demo")},
        # A generous budget: LATE verdicts of a busy 2-core machine are not what these tests are about.
        decision={"budget_ms": 400},
        mqtt={"enabled": False}, sampling={"enabled": False}, upload={"window": None},
        metrics={"enabled": False}, spool={"dir": str(tmp_path / "spool")},
        page={"enabled": True, "port": 0},
    )
    for k, v in over.items():
        merge = isinstance(v, dict) and isinstance(base.get(k), dict) and not (k == "source" and "kind" in v)
        base[k] = {**base[k], **v} if merge else v
    return InspectorConfig(**base)


@pytest.fixture
def running() -> Callable[..., Service]:
    """start(cfg, max_frames, observers) -> a started service (observers on its post thread); every one is
    stopped at the end."""
    made: list[Service] = []

    def start(cfg: InspectorConfig, max_frames: int | None = None, observers: tuple = ()) -> Service:
        svc = Service(cfg, max_frames=max_frames)
        svc.pipeline.sinks.extend(observers)
        made.append(svc)
        svc.start()
        return svc

    yield start
    for svc in made:
        svc.stop(deadline_s=5)


@pytest.fixture
def browser(tmp_path):
    """A Playwright browser context on Debian's Chromium (it cannot download one), a fresh user data dir."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"chromium not installed ({CHROMIUM})")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                   headless=True, args=CHROMIUM_ARGS,
                                                   viewport={"width": 1280, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


class Decided(ObserverSink):
    """A post-thread observer: when each reject's verdict was made (wall clock), to measure how long the page
    takes to show it (reported, not asserted: speed belongs in benchmarks)."""

    name = "decided"

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def submit(self, v) -> None:
        if v.actuate:
            self.at[v.frame_id] = time.time()
