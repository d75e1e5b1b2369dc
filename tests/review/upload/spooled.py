"""Spools filled through the real Spool and checks of what a destination holds, shared by the uploader tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from inspector.config import InspectorConfig, SpoolConfig
from inspector.devtools.testing import make_defect, make_verdict, synth_frame
from inspector.frames import ModelInfo
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool
from inspector.review.upload import LOCK_NAME
from inspector.sources.conveyor import ConveyorGenerator

REPO = Path(__file__).resolve().parents[3]
REASONS = [("uncertain",), ("reject",), ("random_pass",), ("uncertain", "class:crack")]


def fill_spool(root: Path, n: int, images: list[np.ndarray], *, t0: float = 1_900_000_000.0,
               start: int = 0) -> dict[str, str]:
    """Writes n samples (numbered from `start`) through the real Spool. Returns {sample id: jpg sha256}.
    The number is stamped on each image so every sample has its own content."""
    spool = Spool(SpoolConfig(dir=root, max_bytes=1 << 30, jpeg_quality=50), alarm=lambda k, d: None,
                  config_hash="feedbeef")
    spool.open()
    out = {}
    for i in range(start, start + n):
        img = images[i % len(images)].copy()
        cv2.putText(img, f"#{i}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        # Two capture dates, so that two manifests are made.
        frame = synth_frame(i, image=img, captured_wall=t0 + i + (86400.0 if i - start >= n // 2 else 0.0))
        v = make_verdict(frame, outcome="REJECT" if i % 2 else "PASS",
                         defects=(make_defect("crack", 0.9, (300.0, 200.0, 360.0, 250.0)),) if i % 2 else (),
                         uncertain=(make_defect("pit", 0.45, (100.0, 120.0, 140.0, 170.0)),),
                         model=ModelInfo("demo", "1.0.0", "cd" * 32))
        s = spool.write(v, SampleDecision(REASONS[i % len(REASONS)], i, 0.0))
        out[s.id] = hashlib.sha256(s.image.read_bytes()).hexdigest()
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def sample_files(root: Path) -> list[Path]:
    """Files left in the spool, the upload lock file aside (it stays: deleting a flock file races)."""
    return [p for p in root.rglob("*.*") if p.name != LOCK_NAME]


def s3_config(spool: Path, bucket: str, endpoint: str, **upload) -> InspectorConfig:
    return InspectorConfig(spool={"dir": spool}, upload={
        "destination": f"s3://{bucket}/night", "endpoint_url": endpoint, "retries": 2, "backoff_s": 0.05,
        "window": None, **upload})


def check_bucket(s3, bucket: str, expected: dict[str, str]) -> None:
    """Every sample exactly once (image + labels), manifests complete, a gallery per date."""
    keys = s3.keys(bucket, "night/")
    jpgs = sorted(k for k in keys if k.endswith(".jpg"))
    want_shas = set(expected.values())
    assert len(jpgs) == len(expected), f"expected {len(expected)} images in the bucket, got {len(jpgs)}"
    assert {k.rsplit("/", 1)[1][:-4] for k in jpgs} == want_shas
    assert {k[:-4] for k in keys if k.endswith(".txt")} == {k[:-4] for k in jpgs}
    manifests = sorted(k for k in keys if k.endswith("manifest.jsonl"))
    assert len(manifests) == 2, f"expected one manifest per capture date, got {manifests}"
    lines = []
    client = s3.client()
    for m in manifests:
        body = client.get_object(Bucket=bucket, Key=m)["Body"].read().decode()
        day = m.split("/")[1]
        recs = [json.loads(x) for x in body.splitlines()]
        assert all(r["date"] == day and r["image_key"].startswith(f"night/{day}/") for r in recs)
        lines += recs
        assert m.replace("manifest.jsonl", "gallery.html") in keys
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)) == len(expected), \
        f"expected {len(expected)} distinct manifest lines, got {len(ids)}"
    assert {r["id"]: r["image_sha256"] for r in lines} == expected
    assert all(r["image_key"] in keys and r["labels_key"] in keys and r["reasons"] for r in lines)


_IMAGES: list[np.ndarray] = []


def base_images_cache() -> list[np.ndarray]:
    if not _IMAGES:
        # Real conveyor frames at the generator's smallest size: 500 of them must upload quickly.
        g = ConveyorGenerator(31, width=320, height=240)
        _IMAGES.extend(g.part(i).image for i in range(8))
    return _IMAGES


def manifest_ids(dest: Path) -> list[str]:
    """The sample ids of every manifest under a file:// destination."""
    return [json.loads(x)["id"] for m in sorted(dest.rglob("manifest.jsonl")) for x in m.read_text().splitlines()]
