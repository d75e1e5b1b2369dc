"""The metrics endpoint (section `metrics`): `/metrics` and `/healthz`, read from the service report."""

from __future__ import annotations

from inspector.service.outputs.base import Output, StopPart, Wiring


class MetricsOutput(Output):
    name = "metrics"
    section = "metrics"
    stops_after_sinks = True  # /healthz answers while the sinks flush
    summary_slot = None

    def enabled(self, cfg) -> bool:
        return cfg.metrics.enabled

    def build(self, w: Wiring) -> None:
        self._cfg = w.cfg.metrics  # the port is bound at the start, not here

    def started(self, svc) -> None:
        from inspector.service.metrics import MetricsServer

        self.obj = MetricsServer(lambda: svc.report(groups=True), self._cfg.host, self._cfg.port)
        self.obj.start()

    def stop_parts(self) -> list[StopPart]:
        return [("metrics", "metrics", lambda t: self.obj.stop(timeout=t))] if self.obj is not None else []
