"""A frame as the page shows it: scaled to a width, the model's boxes drawn, JPEG, as a data URL.

Runs on the page's worker thread (background group), never on the frame path. One 640x480 frame scaled
to 480 px and encoded at quality 70 is ~2 ms and ~25 KB on the 2-core dev machine; a 160 px thumbnail
~0.5 ms and ~5 KB.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from inspector.frames import Defect

DEFECT_BGR = (40, 40, 230)  # red: a detection at or above its class threshold
UNCERTAIN_BGR = (0, 190, 255)  # amber: within the uncertain band
JPEG_QUALITY = 70


def annotate(image: np.ndarray, defects: tuple[Defect, ...], uncertain: tuple[Defect, ...], width: int) -> np.ndarray:
    """A scaled BGR copy of `image` with boxes (box coordinates are in the frame's pixels)."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    scale = width / float(w)
    out = cv2.resize(img, (width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    thick = 2  # 1 px lines vanish in a 160 px JPEG thumbnail (chroma subsampling; measured: 0 red pixels left)
    for group, color in ((uncertain, UNCERTAIN_BGR), (defects, DEFECT_BGR)):
        for d in group:
            # a classifier's finding has no box: it is about the whole frame, framed as such
            box = d.box if d.box is not None else (thick, thick, w - thick, h - thick)
            x1, y1, x2, y2 = (int(round(c * scale)) for c in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
            if width >= 240:  # a label only where it is readable; the page lists the classes as text
                cv2.putText(out, f"{d.class_name} {d.confidence:.2f}", (x1, max(10, y1 - 4)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out


def data_url(image: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # 4:4:4: a thin red box keeps its colour
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
