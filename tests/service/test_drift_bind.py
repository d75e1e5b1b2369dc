"""The drift monitor binds a model atomically: model, envelope and guard are swapped together. A card whose
envelope is refused never reaches it: the card's schema refuses the bundle when it is read (the monitor
used to parse the envelope itself, and took the new model while keeping the old envelope)."""

from __future__ import annotations

import pytest

from inspector.bundle.card import CardRefused
from inspector.config import DriftConfig
from inspector.frames import ModelInfo
from inspector.service.drift import DriftMonitor
from tests.bundle.cards import card_with

ENV_A = {"stats": {"luma": [0.0, 255.0], "contrast": [0.0, 10.0]}}


@pytest.mark.parametrize("envelope, message", [
    ({"stats": {"luma": [0.0, 255.0], "glare": [0.0, 1.0]}}, r"input_envelope\.stats: expected names among .*glare"),
    ({"stats": {"luma": [200.0, 100.0]}}, r"input_envelope\.stats: expected low <= high"),
    ({"stats": {"luma": [0.0, 255.0]}, "confidence": {"proportions": [1.0]}},
     r"input_envelope\.confidence\.proportions: expected 10 bins"),
])
def test_a_refused_envelope_never_reaches_the_monitor(envelope, message):
    a = ModelInfo("demo", "1.0.0", "0" * 64)
    mon = DriftMonitor(DriftConfig(), "alarm", card_with(input_envelope=ENV_A), a)
    guard, env = mon.guard, mon.envelope
    with pytest.raises(CardRefused, match=message):
        card_with(input_envelope=envelope)
    assert (mon.model, mon.envelope, mon.guard) == (a, env, guard)
    assert mon.snapshot()["envelope"] == {"luma": [0.0, 255.0], "contrast": [0.0, 10.0]}


def test_a_bind_swaps_model_envelope_and_guard_together():
    a, b = ModelInfo("demo", "1.0.0", "0" * 64), ModelInfo("demo", "2.0.0", "1" * 64)
    mon = DriftMonitor(DriftConfig(), "alarm", card_with(input_envelope=ENV_A), a)
    new = card_with(input_envelope={"stats": {"sharpness": [0.0, 5.0]}})
    mon._bind(new, b)
    assert mon.model == b and mon.envelope is new.envelope and mon.guard.envelope is new.envelope
    mon._bind(card_with(input_envelope=None), a)  # a card without an envelope: image checks off
    assert (mon.model, mon.envelope, mon.guard) == (a, None, None) and mon.why_off is not None
