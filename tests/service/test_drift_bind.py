"""The drift monitor binds a model atomically: a card whose envelope is refused leaves the monitor on the
model, envelope and guard it had (it used to take the new model and keep the old envelope)."""

from __future__ import annotations

import pytest

from inspector.config import DriftConfig
from inspector.errors import ModelError
from inspector.frames import ModelInfo
from inspector.service.drift import DriftMonitor

CARD_A = {"input_envelope": {"stats": {"luma": [0.0, 255.0], "contrast": [0.0, 10.0]}}}


@pytest.mark.parametrize("envelope, message", [
    ({"stats": {"luma": [0.0, 255.0], "glare": [0.0, 1.0]}}, r"input_envelope\.stats: expected names among .*glare"),
    ({"stats": {"luma": [200.0, 100.0]}}, r"input_envelope\.stats: expected low <= high"),
    ({"stats": {"luma": [0.0, 255.0]}, "confidence": {"proportions": [1.0]}},
     r"input_envelope\.confidence\.proportions: expected 10 bins"),
])
def test_a_refused_envelope_leaves_the_monitor_on_its_model(envelope, message):
    a, b = ModelInfo("demo", "1.0.0", "0" * 64), ModelInfo("demo", "2.0.0", "1" * 64)
    mon = DriftMonitor(DriftConfig(), "alarm", CARD_A, a)
    guard, env = mon.guard, mon.envelope
    with pytest.raises(ModelError, match=message):
        mon._bind({"input_envelope": envelope}, b)
    assert (mon.model, mon.envelope, mon.guard) == (a, env, guard)
    assert mon.snapshot()["envelope"] == {"luma": [0.0, 255.0], "contrast": [0.0, 10.0]}
