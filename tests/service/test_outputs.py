"""The outputs as plug-ins (service/outputs/): the registry, the order the service runs them in, and an
output added by one class and one registry line, end to end through a running service."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import inspector.service.outputs as outputs_pkg
from inspector.config import InspectorConfig
from inspector.kernel.alarms import AlarmHub
from inspector.service.outputs import OUTPUTS, Output, Outputs, Wiring
from inspector.service.report import HealthCheck
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", OUTPUTS, ids=lambda c: c.name)
def test_every_registered_output_names_its_config_section(cls):
    assert cls.section in InspectorConfig.model_fields, f"{cls.name}: no config section {cls.section!r}"
    assert isinstance(cls().enabled(InspectorConfig()), bool)
    assert [c.name for c in OUTPUTS].count(cls.name) == 1


# -- the order, on small outputs of the test's own (pure wiring logic) --------------------------------
class Recorder:
    """A verdict sink that only records what happens to it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def submit(self, verdict) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        self.log.append(f"stop {self.name}")

    def state(self) -> dict[str, Any]:
        return {}


class Wrapped(Recorder):
    def __init__(self, inner: Recorder) -> None:
        super().__init__(f"{inner.name}-wrapped", inner.log)


def plugin(name: str, *, on: bool = True, sink: bool = True, answers: bool = False, after_sinks: bool = False,
           needs: str | None = None, wraps: str | None = None):
    """An Output subclass for the table below; its events go to the wiring's `log`."""

    class Plugin(Output):
        section = "sink"
        answers_parts = answers
        stops_after_sinks = after_sinks

        def enabled(self, cfg) -> bool:
            return on

        def build(self, w: Wiring) -> None:
            if needs is not None:
                w.output(needs)
            w.camera.append(f"build {self.name}")
            self.obj = Recorder(self.name, w.camera)

        @property
        def sink(self):
            return self.obj if sink else None

        def route(self, post, w: Wiring):
            return [Wrapped(s) if s.name == wraps else s for s in post]

        def started(self, svc) -> None:
            self.obj.log.append(f"started {self.name}")

        def stop_parts(self):
            return [(self.name, "metrics", self.obj.stop)]

    Plugin.name = name
    return Plugin


def wire(*registry) -> tuple[Outputs, list[str]]:
    log: list[str] = []  # carried as the wiring's camera: the plug-ins above write their events to it
    w = Wiring(cfg=InspectorConfig(), service=None, alarms=AlarmHub(), model=None, config_hash="x",
               camera=log, source=log)
    return Outputs(w, registry=registry), log


@pytest.mark.parametrize("registry, sinks, post, started, before, after", [
    # registry order, except that the output answering the parts goes first (started first, stopped last)
    ((plugin("log"), plugin("mqtt"), plugin("plc", answers=True, wraps="mqtt")),
     ["plc", "log", "mqtt"], ["plc", "log", "mqtt-wrapped"], ["plc", "log", "mqtt"], [], []),
    ((plugin("log"), plugin("off", on=False), plugin("mqtt")), ["log", "mqtt"], ["log", "mqtt"], ["log", "mqtt"],
     [], []),
    # outputs that are not sinks stop before the sinks (a worker) or after them (a reader of the report)
    ((plugin("page", sink=False, after_sinks=True), plugin("log"), plugin("upload", sink=False)),
     ["log"], ["log"], ["page", "log", "upload"], ["upload"], ["page"]),
])
def test_outputs_run_in_the_registry_order(registry, sinks, post, started, before, after):
    outs, log = wire(*registry)
    assert [s.name for s in outs.sinks] == sinks
    assert [s.name for s in outs.post_sinks] == post
    assert [p[0] for p in outs.stop_parts(after_sinks=False)] == before
    assert [p[0] for p in outs.stop_parts(after_sinks=True)] == after
    outs.started(None)
    assert [e.split()[1] for e in log if e.startswith("started")] == started


def test_an_output_that_needs_another_gets_it_built_first_and_off_ones_stay_unbuilt():
    outs, log = wire(plugin("plc", needs="opcua"), plugin("opcua"), plugin("off", on=False))
    assert log == ["build opcua", "build plc"]  # each built once
    assert outs.get("off") is None and outs.get("opcua").name == "opcua"
    with pytest.raises(KeyError, match="no output named 'nope'"):
        outs.get("nope")


@pytest.mark.parametrize("registry, error", [
    ((plugin("a", needs="b"), plugin("b", needs="a")), "a needs itself"),
    ((plugin("a", answers=True), plugin("b", answers=True)), "only one output may answer the parts"),
    ((plugin("a"), plugin("a")), "registered twice"),
])
def test_a_wiring_that_cannot_work_is_refused_before_anything_starts(registry, error):
    with pytest.raises((RuntimeError, ValueError), match=error):
        wire(*registry)


# -- adding an output: one class and one registry line -------------------------------------------------
class Tally:
    """A real sink: counts the verdicts and rejects it is handed on the post thread."""

    name = "tally"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.verdicts = self.rejects = 0
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def submit(self, v) -> None:
        with self._lock:
            self.verdicts += 1
            self.rejects += bool(v.actuate)

    def stop(self, timeout: float = 0.0) -> None:
        self.stopped = True

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"verdicts": self.verdicts, "rejects": self.rejects}


class TallyOutput(Output):
    name = "tally"
    section = "sink"

    def enabled(self, cfg) -> bool:
        return True

    def build(self, w: Wiring) -> None:
        self.obj = Tally()

    @property
    def sink(self):
        return self.obj

    def report(self, sink_states):
        return dict(sink_states[self.name])

    @classmethod
    def checks(cls, part):
        return () if part is None else (HealthCheck("tally", part["verdicts"] >= 0, f"{part['verdicts']} counted"),)

    @classmethod
    def healthz(cls, part):
        return {"tally": part}


def test_an_output_added_to_the_registry_is_built_fed_reported_and_stopped(monkeypatch, tmp_path):
    from inspector.service.app import Service

    monkeypatch.setattr(outputs_pkg, "OUTPUTS", (*OUTPUTS, TallyOutput))
    cfg = InspectorConfig(source={"kind": "synthetic", "parts_per_s": 40}, model={"path": str(REPO / "models/demo")},
                          mqtt={"enabled": False}, sampling={"enabled": False}, upload={"window": None},
                          metrics={"enabled": False}, sink={"jsonl": str(tmp_path / "verdicts.jsonl")})
    svc = Service(cfg, max_frames=20)
    tally = svc.output("tally")
    assert [s.name for s in svc.sinks] == ["jsonl", "tally"] and tally in svc.pipeline.sinks
    svc.start()
    try:
        assert tally.started
        wait_for(lambda: svc.pipeline.done.is_set(), what="20 verdicts")
        rep = svc.report()
        assert rep.part("tally") == {"verdicts": 20, "rejects": rep.pipeline.actuations}
        assert "tally" in [c.name for c in rep.health] and rep.health_body()["tally"]["verdicts"] == 20
    finally:
        stop = svc.stop()
    assert tally.stopped and [n for n, _, _ in stop.parts][-2:] == ["sink tally", "sink jsonl"]
    summary = svc.summary(1.0)
    assert summary["tally"] == {"verdicts": 20, "rejects": summary["actuations"]}
    assert summary["sinks"]["tally"] == summary["tally"]
