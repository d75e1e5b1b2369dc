"""The review page: self-contained HTML with thumbnails, boxes, reasons and confidences, and a
screenshot from Debian's headless Chromium showing the thumbnails."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import SpoolConfig
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.review.gallery import make_thumbnail, render_gallery
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool
from inspector.sources.conveyor import ConveyorGenerator

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[list[dict], dict[str, bytes]]:
    """Six real spooled samples as manifest lines, with their thumbnails."""
    root = tmp_path_factory.mktemp("spool")
    spool = Spool(SpoolConfig(dir=root), alarm=lambda k, d: None, config_hash="abc")
    spool.open()
    gen = ConveyorGenerator(41)
    entries, thumbs = [], {}
    for i in range(6):
        part = gen.part(i)
        defects = tuple(make_defect(d.name, 0.9 - 0.05 * k, d.box) for k, d in enumerate(part.defects))
        v = make_verdict(synth_frame(i, image=part.image), outcome="REJECT" if defects else "PASS", defects=defects,
                         uncertain=(make_defect("pit", 0.44, (40.0, 50.0, 90.0, 95.0)),) if i % 2 else ())
        s = spool.write(v, SampleDecision(("uncertain",) if i % 2 else ("random_pass",), 0, 0.0))
        jpg = s.image.read_bytes()
        sha = hashlib.sha256(jpg).hexdigest()
        entries.append({**s.read_sidecar(), "image_sha256": sha})
        thumbs[sha] = make_thumbnail(jpg)
    return entries, thumbs


def test_an_empty_night_renders():
    page = render_gallery("inspector review 2030-01-01", [], {})
    assert "0 samples" in page and "no samples" in page and page.startswith("<!DOCTYPE html>")


def test_the_page_is_self_contained_and_shows_boxes_reasons_confidences(night):
    entries, thumbs = night
    page = render_gallery("inspector review", entries, thumbs)
    assert page.count('href="data:image/jpeg;base64,') == 6
    n_boxes = sum(len(e["defects"]) + len(e["uncertain"]) for e in entries)
    assert page.count("<rect ") == n_boxes > 0
    assert "uncertain" in page and "random_pass" in page and "0.44" in page
    # No external assets: nothing fetched over the network or from disk.
    assert not re.search(r'(src|href)="(?!data:)', page), "expected only data: URIs"
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_a_thumbnail_is_small_and_keeps_the_aspect(night):
    entries, thumbs = night
    t = next(iter(thumbs.values()))
    img = cv2.imdecode(np.frombuffer(t, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3) and len(t) < 30_000
    assert make_thumbnail(b"not a jpeg") is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_page_loads_in_headless_chromium_and_shows_the_thumbnails(night, tmp_path):
    entries, thumbs = night
    page = tmp_path / "gallery.html"
    page.write_text(render_gallery("inspector review", entries, thumbs))
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"expected a screenshot; chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (900, 1200)
    # The first card's thumbnail sits below the heading at the left: conveyor texture there, not
    # the flat page background.
    card = img[80:300, 16:336]
    assert float(card.std()) > 15.0, f"expected thumbnail texture, got a flat region (std {card.std():.1f})"
    background = img[5:12, 1100:1190]
    assert float(background.std()) < 3.0
    # The red defect boxes are drawn somewhere on the page.
    red = (img[:, :, 2] > 200) & (img[:, :, 1] < 90) & (img[:, :, 0] < 90)
    assert red.sum() > 50, "expected red box strokes in the screenshot"
    shutil.copy(shot, tmp_path / "kept.png")


def test_a_classifiers_finding_without_a_box_frames_the_thumbnail():
    """A classify sample's defects have no `box`: the page frames the whole image and names class and
    probability (it raised KeyError 'box' before)."""
    entry = {"id": "s1", "date": "2026-12-07", "reason": "uncertain", "reasons": ["uncertain"],
             "verdict": {"outcome": "REJECT", "reason": "defect"}, "image": {"width": 640, "height": 480},
             "defects": [{"class": "ng", "class_id": 0, "confidence": 0.5312}],
             "uncertain": [{"class": "ng", "class_id": 0, "confidence": 0.5312}],
             "class_scores": {"ng": 0.5312, "ok": 0.4688}, "model": {"name": "demo-cls", "version": "0.1.0"}}
    page = render_gallery("night", [entry], {})
    rects = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page)
    assert rects and all(float(w) > 600 and float(h) > 440 for _, _, w, h in rects), rects
    assert "ng 0.53" in page
