"""Sampling into the spool (sections `sampling` and `spool`): the frames kept for review and retraining."""

from __future__ import annotations

from inspector.service.outputs.base import Output, Wiring


class SamplingOutput(Output):
    name = "sampling"
    section = "sampling"
    summary_slot = None  # its counters are the summary's `sinks.sampling`

    def enabled(self, cfg) -> bool:
        return cfg.sampling.enabled

    def build(self, w: Wiring) -> None:
        from inspector.review.spool import SamplingSink

        self.obj = SamplingSink(w.cfg.sampling, w.cfg.spool, model=w.model, config_hash=w.config_hash,
                                alarm=w.alarms.raise_alarm)

    @property
    def sink(self):
        return self.obj
