"""The operator's line-side page (section `page`, inspector/page/)."""

from __future__ import annotations

from typing import Any

from inspector.service.outputs.base import Output, StopPart, Wiring


class PageOutput(Output):
    name = "page"
    section = "page"
    stops_after_sinks = True  # the page shows the stop while the sinks flush
    summary_slot = None

    def enabled(self, cfg) -> bool:
        return cfg.page.enabled

    def build(self, w: Wiring) -> None:
        # Its feed only keeps a reference on the post thread; the encoding and the browsers are on its own
        # background threads. A non-loopback bind without a token is refused here (exit 2), before
        # anything starts.
        from inspector.page import LinePage

        self.obj = LinePage(w.cfg.page, w.service)

    def observers(self) -> list[Any]:
        return [self.obj.feed]

    def started(self, svc) -> None:
        svc.alarms.attach(self.obj.feed.alarm)  # after the publisher: the start-up alarms went to it
        self.obj.start()

    def stop_parts(self) -> list[StopPart]:
        return [("page", "metrics", lambda t: self.obj.stop(timeout=t))]
