"""What an output is to the service: one plug-in per output, and the wiring it builds into.

An output (the MQTT publisher, the PLC handshake, OPC UA, the verdict log, ...) is one small `Output`
object: it names its config section, says whether it is on, builds its sink or thread from the config,
hooks into the start, contributes its stop parts, and makes its own typed report part and health checks.
`Service` and `build_report` iterate over the registered outputs (outputs/__init__.py, `OUTPUTS`); none
of them names one.

The order is the registry's, with one rule on top: the output that answers each part to the line
(`answers_parts`: the PLC handshake) starts first, stops last and is the first sink on the post thread,
so the PLC's answer goes out before any disk write and triggers are taken before anything else starts.
Without it the publisher's reject is the answer, and the registry order puts the verdict log (an
append to a list) before the publisher's outbox commit on the post thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from inspector.config import InspectorConfig
    from inspector.frames import ModelInfo
    from inspector.kernel.alarms import AlarmHub
    from inspector.service.report import HealthCheck
    from inspector.service.sinks import VerdictSink

StopPart = tuple[str, str, Callable[[float], Any]]  # (name in the stop report, reserve kind, stop(seconds))


@dataclass
class Wiring:
    """What the outputs are built from and into, on the main thread, before anything starts.

    `source` is what the pipeline will read (the camera, or the PLC handshake's paired source): an
    output that takes the parts' triggers replaces it."""

    cfg: InspectorConfig
    service: Any  # the `app.Service` (heartbeat, the page's reads); not started yet
    alarms: AlarmHub
    model: ModelInfo  # the first model (the publisher's retained status, the spool's state)
    config_hash: str
    camera: Any
    source: Any
    _outputs: dict[str, Output] = field(default_factory=dict, init=False, repr=False)
    _building: set[str] = field(default_factory=set, init=False, repr=False)

    def register(self, outputs: tuple[Output, ...]) -> None:
        """The outputs `output(name)` can build (every registered one, on or off)."""
        self._outputs.update({o.name: o for o in outputs})

    def output(self, name: str) -> Any | None:
        """The built object of the output named `name` (built now if it is on and not built yet), or None
        when it is off: an output that needs another at its construction (the PLC handshake mirrors its
        results to OPC UA) asks for it here instead of depending on the registry's order."""
        out = self._outputs[name]
        if not out.built and out.enabled(self.cfg):
            if name in self._building:
                raise RuntimeError(f"outputs: {name} needs itself to be built ({sorted(self._building)})")
            self._building.add(name)
            try:
                out.build(self)
                out.built = True
            finally:
                self._building.discard(name)
        return out.obj


class Output:
    """One output. Subclasses set `name` (its name in the report and the stop report) and `section` (its
    config section) and implement `enabled` and `build`; everything else has a default that does nothing."""

    name: ClassVar[str]
    section: ClassVar[str]
    # The output that answers each part to the line (at most one is on): first on the post thread and
    # in the start order, last to stop.
    answers_parts: ClassVar[bool] = False
    # For outputs that are not sinks: True when it stops after the sinks (the readers of the report:
    # /metrics and the page answer while the publisher flushes), False before them (right after the
    # pipeline's drain, like the uploader: its time is better left to the publisher's final flush).
    stops_after_sinks: ClassVar[bool] = False
    # Where its report part goes in the end-of-run summary: "end" (after `shutdown`, only when on),
    # "sinks" (beside `sinks`, null when off: the uploader's state, as README documents), or None.
    summary_slot: ClassVar[str | None] = "end"

    def __init__(self) -> None:
        self.obj: Any = None  # what `build` (or `started`) made: the sink, server or thread; None while off
        self.built = False

    # -- building and running -------------------------------------------------------------------
    def enabled(self, cfg: InspectorConfig) -> bool:
        raise NotImplementedError

    def build(self, w: Wiring) -> None:
        """Makes `self.obj` from the config (no thread started, no port bound, no broker contacted)."""
        raise NotImplementedError

    @property
    def sink(self) -> VerdictSink | None:
        """The verdict sink started before the pipeline and stopped after its drain (None: not a sink)."""
        return None

    def route(self, post: list[VerdictSink], w: Wiring) -> list[VerdictSink]:
        """May change what the post thread hands verdicts to (every output's sink, in order)."""
        return post

    def observers(self) -> list[Any]:
        """Post-thread observers it adds beside the sinks (they feed a reader, not the line)."""
        return []

    def started(self, svc: Any) -> None:
        """Runs after every sink has started and before the pipeline does (in start order)."""

    def stop_parts(self) -> list[StopPart]:
        """Its stop, for an output that is not a sink (a sink is stopped with the sinks)."""
        return []

    def watch(self, svc: Any, source_state: Any) -> None:
        """Called from the service's run loop every 0.1 s with the source's state."""

    # -- its part of the report (class-level: the report holds the part, not the output) ---------
    def report(self, sink_states: dict[str, dict[str, Any]]) -> Any:
        """Its typed report part (read on the reader's thread: copies counters, never blocks)."""
        return None

    @classmethod
    def checks(cls, part: Any) -> tuple[HealthCheck, ...]:
        """Its `/healthz` checks; `part` is None when the output is off."""
        return ()

    @classmethod
    def healthz(cls, part: Any) -> dict[str, Any]:
        """Its entries in the `/healthz` body."""
        return {}

    @classmethod
    def heartbeat(cls, part: Any) -> dict[str, Any]:
        """Its entries in the heartbeat's free-form `pipeline` object."""
        return {}

    @classmethod
    def status(cls, part: Any) -> str:
        """Its fragment of the live status line."""
        return ""

    @classmethod
    def summary(cls, part: Any) -> Any:
        """Its entry in the end-of-run summary (under its name, at `summary_slot`)."""
        return part

    @classmethod
    def escapes(cls, part: Any) -> tuple[int, int, tuple[str, ...]]:
        """Rejects it did not deliver before their deadline, delivered late, and their frame ids."""
        return 0, 0, ()
