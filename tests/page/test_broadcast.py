"""Per-browser bounds: a browser that does not read loses its oldest events (counted), keeps only the newest
frame, and never holds up the others; past max_clients a stream is refused."""

from __future__ import annotations

import pytest

from inspector.page.broadcast import QUEUE_EVENTS, Broadcaster, encode


@pytest.mark.parametrize("published", [1, QUEUE_EVENTS, QUEUE_EVENTS + 1, 10 * QUEUE_EVENTS])
def test_a_stalled_browser_keeps_the_newest_events_and_counts_the_rest(published):
    hub = Broadcaster(max_clients=2)
    slow, fast = hub.join("10.0.0.1:1"), hub.join("10.0.0.2:2")
    got_fast = []
    for i in range(published):
        hub.publish("state", {"i": i})
        hub.publish_frame({"i": i})
        got_fast += fast.take(0)
    kept = slow.take(0)
    events, frames = kept[:-1], kept[-1:]
    assert len(events) == min(published, QUEUE_EVENTS)
    assert events[-1] == encode("state", {"i": published - 1}) and frames == [encode("frame", {"i": published - 1})]
    assert slow.dropped == max(0, published - QUEUE_EVENTS)
    assert fast.dropped == 0 and len(got_fast) == 2 * published  # the slow one held nobody up
    hub.leave(slow)
    assert hub.state() == {"clients": 1, "refused": 0, "dropped": slow.dropped}


def test_past_max_clients_a_stream_is_refused_and_a_place_frees_on_leave():
    hub = Broadcaster(max_clients=1)
    a = hub.join("a")
    assert a is not None and hub.join("b") is None and hub.refused == 1
    hub.leave(a)
    assert hub.join("c") is not None


def test_a_closed_client_wakes_its_stream_at_once():
    hub = Broadcaster(max_clients=1)
    c = hub.join("a")
    hub.close()
    assert c.closed and c.take(60) == []  # returns at once: the handler ends its stream
