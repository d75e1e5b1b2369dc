"""The nightly uploader (section `upload`, on with `upload.window`): the spool to S3 or a folder."""

from __future__ import annotations

from typing import Any

from inspector.service.outputs.base import Output, StopPart, Wiring
from inspector.service.report import plain


class UploaderOutput(Output):
    name = "uploader"
    section = "upload"
    summary_slot = "sinks"  # beside the sinks' states, null when off (README's summary table)

    def enabled(self, cfg) -> bool:
        return cfg.upload.window is not None

    def build(self, w: Wiring) -> None:
        from inspector.review.upload import NightlyUploader

        self.obj = NightlyUploader(w.cfg, alarm=w.alarms.raise_alarm)

    def started(self, svc) -> None:
        self.obj.start()

    def stop_parts(self) -> list[StopPart]:
        return [("uploader", "uploader", lambda t: self.obj.stop(timeout=t))]

    def report(self, sink_states: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return plain(self.obj.state())
