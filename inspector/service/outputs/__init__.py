"""The service's outputs, one plug-in each (base.py says what a plug-in is), and the order they run in.

Adding an output is one module here with its `Output` subclass, one line in `OUTPUTS`, and its config
section in inspector/config.py (docs/architecture.md, "Adding an output").
"""

from __future__ import annotations

from typing import Any

from inspector.service.outputs.base import Output, StopPart, Wiring
from inspector.service.outputs.jsonl import JsonlOutput
from inspector.service.outputs.metrics import MetricsOutput
from inspector.service.outputs.mqtt import MqttOutput
from inspector.service.outputs.opcua import OpcUaOutput
from inspector.service.outputs.page import PageOutput
from inspector.service.outputs.plc import PlcOutput
from inspector.service.outputs.sampling import SamplingOutput
from inspector.service.outputs.uploader import UploaderOutput

# The registry. Its order is the order of the sinks on the post thread and at the start (after the output
# that answers the parts, see base.py), of the health checks, and of the report's parts: the verdict log
# (an append) before the publisher (the reject's outbox commit), the spool's sampling after both.
OUTPUTS: tuple[type[Output], ...] = (
    JsonlOutput,
    MqttOutput,
    SamplingOutput,
    PlcOutput,
    OpcUaOutput,
    UploaderOutput,
    MetricsOutput,
    PageOutput,
)


class Outputs:
    """The service's outputs, built from the config: who is on, in which order, and what each hands the
    service (sinks, post-thread routing, observers, start hooks, stop parts). Main thread only."""

    def __init__(self, w: Wiring, registry: tuple[type[Output], ...] | None = None) -> None:
        self.all: tuple[Output, ...] = tuple(cls() for cls in (OUTPUTS if registry is None else registry))
        names = [o.name for o in self.all]
        if len(set(names)) != len(names):
            raise ValueError(f"outputs: a name is registered twice: {names}")
        w.register(self.all)
        for o in self.all:
            w.output(o.name)  # builds it when on (and what it needs first)
        on = [o for o in self.all if o.enabled(w.cfg)]
        answering = [o for o in on if o.answers_parts]
        if len(answering) > 1:
            raise ValueError(f"outputs: only one output may answer the parts, got {[o.name for o in answering]}")
        # The start order: the output that answers the parts first, then the registry's order.
        self.on: tuple[Output, ...] = (*answering, *(o for o in on if not o.answers_parts))
        self.sinks: list[Any] = [o.sink for o in self.on if o.sink is not None]
        post = list(self.sinks)
        for o in self.on:
            post = o.route(post, w)
        self.post_sinks: list[Any] = post
        self.observers: list[Any] = [x for o in self.on for x in o.observers()]

    def get(self, name: str) -> Any | None:
        """The built object of output `name` (the publisher, the handshake, ...), None when it is off."""
        for o in self.all:
            if o.name == name:
                return o.obj
        raise KeyError(f"no output named {name!r} (registered: {[o.name for o in self.all]})")

    def started(self, svc: Any) -> None:
        """After every sink has started, before the pipeline: each output's start hook, in start order."""
        for o in self.on:
            o.started(svc)

    def stop_parts(self, *, after_sinks: bool) -> list[StopPart]:
        return [p for o in self.on if o.sink is None and o.stops_after_sinks == after_sinks for p in o.stop_parts()]

    def watch(self, svc: Any, source_state: Any) -> None:
        for o in self.on:
            o.watch(svc, source_state)


__all__ = ["OUTPUTS", "Output", "Outputs", "StopPart", "Wiring"]
