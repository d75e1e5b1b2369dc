"""The verdict log (section `sink`, on with `sink.jsonl`): every verdict as a JSON line, rotated."""

from __future__ import annotations

from inspector.service.outputs.base import Output, Wiring


class JsonlOutput(Output):
    name = "jsonl"
    section = "sink"
    summary_slot = None  # its counters are the summary's `sinks.jsonl`

    def enabled(self, cfg) -> bool:
        return cfg.sink.jsonl is not None

    def build(self, w: Wiring) -> None:
        from inspector.service.sinks import JsonlSink

        s = w.cfg.sink
        self.obj = JsonlSink(s.jsonl, max_bytes=s.jsonl_max_bytes, backups=s.jsonl_backups)

    @property
    def sink(self):
        return self.obj
