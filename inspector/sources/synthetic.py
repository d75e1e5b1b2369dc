"""The synthetic conveyor as a camera: parts arrive at a fixed pace, each with its ground truth."""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time

import numpy as np

from inspector.config import SyntheticSourceConfig
from inspector.errors import ConfigError
from inspector.frames import Frame, TruthBox
from inspector.kernel import realtime
from inspector.sources import optics
from inspector.sources.base import Connection, FrameBuffer, SourceState
from inspector.sources.conveyor import ConveyorGenerator, SynthPart


class SyntheticSource:
    name = "synthetic"

    def __init__(self, cfg: SyntheticSourceConfig, max_frames: int | None = None, alarm=None) -> None:
        self.cfg = cfg
        self.max_frames = max_frames
        self._gen = ConveyorGenerator(cfg.seed, cfg.width, cfg.height, cfg.defect_free_ratio)
        # triggered: a part arriving at a full buffer loses its image, not its verdict (see FrameBuffer).
        self._buf = FrameBuffer(cfg.trigger, cfg.queue_size, max_backlog=cfg.max_backlog, alarm=alarm,
                                source=self.name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=realtime.runs_in("frame", self._run), name="source-synthetic",
                                        daemon=True)
        self._produced = 0
        self._last_wall: float | None = None
        self._done = False
        # Appearance switches (tests, demos): each entry's parameters are drawn once, from the source's seed,
        # so the camera holds one state from its after_parts on, as a drifted camera does.
        self._look_from = [a.after_parts for a in cfg.appearance]
        self._looks: list[optics.Alteration | None] = []
        for k, a in enumerate(cfg.appearance):
            try:
                self._looks.append(None if a.family == "none" else optics.sample(
                    a.family, np.random.default_rng([cfg.seed, 0xA11E, k]), a.params or a.magnitude))
            except ValueError as e:
                raise ConfigError(f"source.appearance[{k}].params: {e}") from None

    def _part(self, index: int) -> SynthPart:
        part = self._gen.part(index)
        k = bisect.bisect_right(self._look_from, index) - 1
        if k < 0 or self._looks[k] is None:
            return part
        image = optics.apply(part.image, self._looks[k], np.random.default_rng([self.cfg.seed, 0xA11F, index]))
        return dataclasses.replace(part, image=image)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.cfg.parts_per_s
        i = 0
        r0 = time.monotonic()
        nxt = self._part(0)
        render_s = time.monotonic() - r0
        t0 = time.monotonic()
        while not self._stop.is_set() and (self.max_frames is None or i < self.max_frames):
            # The part is rendered ahead; it is "captured" when its slot on the belt comes.
            delay = t0 + i * period - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            part = nxt
            frame = Frame(
                frame_id=i,
                image=part.image,
                captured_at=time.monotonic(),
                captured_wall=time.time(),
                part_id=part.part_id if self.cfg.trigger == "triggered" else None,
                source=self.name,
                truth=tuple(TruthBox(d.class_id, d.name, d.box) for d in part.defects),
            )
            self._buf.put(frame)
            self._produced += 1
            self._last_wall = time.monotonic()
            i += 1
            if self.max_frames is None or i < self.max_frames:
                # A real camera exposes in hardware; this one renders (~15-20 ms of CPU, much of it
                # holding the GIL). Rendered right after the hand-over, it delayed the pipeline's
                # wake-up by a GIL switch interval (queue p50 4.2 ms measured) and took a core from
                # inference. So render in the second half of the slot when it fits there.
                if render_s < period / 2 and self._stop.wait(max(0.0, t0 + (i - 0.5) * period - time.monotonic())):
                    break
                r0 = time.monotonic()
                nxt = self._part(i)
                render_s = max(time.monotonic() - r0, 0.9 * render_s)  # slow to forget a slow render
        self._done = True

    def read(self, timeout: float) -> Frame | None:
        return self._buf.get(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if not self._thread.is_alive():
            self._buf.flush_alarms()

    @property
    def finished(self) -> bool:
        return self._done and len(self._buf) == 0

    def state(self) -> SourceState:
        age = None if self._last_wall is None else time.monotonic() - self._last_wall
        return SourceState(
            connection=Connection.ENDED if self.finished else Connection.CONNECTED,
            frames=self._produced,
            dropped=self._buf.counts(),
            last_frame_age_s=age,
        )
