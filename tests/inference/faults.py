"""The real detector (OpenVINO, models/demo) made to stall or fail at its real boundaries, for the
watchdog and model-failure tests. Nothing is faked: inference runs, only its outcome is withheld
or refused by OpenVINO itself."""

from __future__ import annotations

import threading

from inspector.inference.detector import Detector


class HeldDetector(Detector):
    """Completions are held back until `release` is set: OpenVINO's callback thread blocks, as with
    a device that stops answering. `held` is set when the first completion is held."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.release = threading.Event()
        self.held = threading.Event()

    def _on_done(self, slot, ud) -> None:
        self.held.set()
        self.release.wait(60)
        super()._on_done(slot, ud)


class RefusingDetector(Detector):
    """Hands OpenVINO a tensor of the wrong shape for the submits whose index is in `fail` (all when
    None): the infer request raises ("The input tensor size is not equal to the model input")."""

    def __init__(self, *a, fail: set[int] | None = None, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail = fail
        self.starts = 0

    def _start(self, slot, tensor) -> None:
        i, self.starts = self.starts, self.starts + 1
        if self.fail is None or i in self.fail:
            tensor = tensor[:, :2, :2]
        slot.request.start_async({0: tensor}, None, share_inputs=False)
