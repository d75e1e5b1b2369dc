"""A folder of images as a camera: one image per part, in name order; bad files are skipped and counted.

A corrupt image (cannot be decoded: garbage, cut short, empty) is counted as `corrupt`, a file the OS
refuses to read as `unreadable`; both are logged and skipped, never fatal. Pacing follows the
video source: with `parts_per_s` > 0 image n is "captured" at its slot `t0 + n / parts_per_s`;
with 0 images are handed over as fast as the pipeline takes them (nothing dropped).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from inspector.config import FolderSourceConfig
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.sources.base import Connection, FileSource
from inspector.sources.convert import normalize_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (suffix case-insensitive)."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


def load_image(path: Path) -> tuple[np.ndarray | None, str, str]:
    """(BGR or gray image, "", "") or (None, cause, why): cause is `unreadable` or `corrupt`."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, "unreadable", f"cannot read: {e.strerror or e}"
    if data.size == 0:
        return None, "corrupt", "empty file (0 bytes)"
    try:
        # IMREAD_ANYCOLOR: grey stays grey (HxW: the detector converts it once, in its letterbox),
        # colour and alpha images become BGR, 16-bit becomes 8-bit, EXIF rotation applied.
        image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR)
    except cv2.error as e:
        return None, "corrupt", f"decoder error: {e}"
    if image is None:
        return None, "corrupt", f"not a decodable image ({data.size} bytes)"
    bgr, why = normalize_image(image)
    if bgr is None:
        return None, "corrupt", why
    return bgr, "", ""


class FolderSource(FileSource):
    name = "folder"

    def __init__(self, cfg: FolderSourceConfig, alarm=None) -> None:
        super().__init__(cfg, alarm)
        self.path = Path(cfg.path)
        self._files: list[Path] = []

    def _start(self) -> None:
        p = self.path
        if not p.exists():
            raise SourceError(f"folder source: {p} does not exist (expected a folder of images)")
        if not p.is_dir():
            raise SourceError(f"folder source: {p} is not a folder (expected a folder of images)")
        try:
            files = list_images(p)
        except OSError as e:
            raise SourceError(f"folder source: {p} cannot be listed: {e.strerror or e}") from e
        if not files:
            others = sum(1 for _ in p.iterdir())
            raise SourceError(
                f"folder source: {p} holds no images (expected files ending in {', '.join(IMAGE_SUFFIXES)}; "
                f"found {others} other entries)"
            )
        self._files = files
        with self._lock:
            self._connection = Connection.CONNECTED

    def _run(self) -> None:
        period = 1.0 / self.cfg.parts_per_s if self.cfg.parts_per_s > 0 else 0.0
        frame_id = 0
        pass_no = 0
        t0 = time.monotonic()
        files = self._files
        try:
            while not self._stop.is_set():
                good = 0
                for path in files:
                    if self._stop.is_set():
                        return
                    image, cause, why = load_image(path)
                    if image is None:
                        with self._lock:
                            self._dropped[cause] += 1
                            self._detail = f"skipped {path.name}: {why}"
                        log.warning("folder source: skipped %s (%s): %s", path, cause, why)
                        continue
                    if period:
                        slot = t0 + frame_id * period
                        delay = slot - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                        captured_at = slot
                        if self.cfg.trigger == "triggered" and not self._wait_for_room():
                            return
                    else:
                        if not self._wait_for_room():
                            return
                        captured_at = time.monotonic()
                    part_id = path.stem if pass_no == 0 else f"{path.stem}-r{pass_no}"
                    self._buf.put(
                        Frame(
                            frame_id=frame_id,
                            image=image,
                            captured_at=captured_at,
                            captured_wall=time.time() - (time.monotonic() - captured_at),
                            part_id=part_id if self.cfg.trigger == "triggered" else None,
                            source=self.name,
                        )
                    )
                    with self._lock:
                        self._produced += 1
                        self._last_at = captured_at
                    frame_id += 1
                    good += 1
                if not self.cfg.loop:
                    return
                if good == 0:
                    # Looping over a folder of only bad files would spin forever doing nothing.
                    with self._lock:
                        self._detail = f"no readable image in a full pass over {self.path}; stopped looping"
                    log.error("folder source: %s", self._detail)
                    return
                pass_no += 1
                # Re-scan: images added or removed between passes are picked up.
                try:
                    files = list_images(self.path) or files
                except OSError as e:
                    log.warning("folder source: cannot re-list %s (%s); reusing the previous list", self.path, e)
        finally:
            with self._lock:
                self._connection = Connection.ENDED
            self._done = True
