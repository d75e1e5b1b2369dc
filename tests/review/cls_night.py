"""A classifier's night (models/demo-cls: classes ng, ok; pass class ok; p(ng) >= 0.8564 rejects) spooled and
uploaded by the real uploader: the parts' verdicts as the classify decision makes them, every class's probability
in the sidecar. Shared by the classify review tests (export tables, the Label Studio round trip)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from inspector.config import SpoolConfig, load_config
from inspector.devtools.testing import make_verdict, synth_frame
from inspector.frames import Defect, ModelInfo
from inspector.review.sampler import SampleDecision
from inspector.review.spool import Spool
from inspector.review.upload import Uploader
from inspector.sources.conveyor import ConveyorGenerator

REPO = Path(__file__).resolve().parents[2]
DEMO_CLS = REPO / "models" / "demo-cls"
T0 = 1_900_000_000.0  # 2030-03-17 UTC
NIGHT = "2030-03-17"
THRESHOLD = 0.8564  # demo-cls's card: ng
MARGIN = 0.2
#: p(ng) per part: rejected at >= THRESHOLD, uncertain within MARGIN below it
P_NG = (0.95, 0.30, 0.90, 0.70, 0.10, 0.80)
#: the class the review pre-selects: the decision (ng when rejected, else the pass class ok)
PREDICTED = tuple("ng" if p >= THRESHOLD else "ok" for p in P_NG)


def cls_spool_and_upload(tmp_path: Path, destination: str, endpoint: str | None = None) -> Path:
    """len(P_NG) conveyor parts judged by a classifier (models/demo-cls's classes) and uploaded; returns the line
    config (model: models/demo-cls)."""
    spool = Spool(SpoolConfig(dir=tmp_path / "spool", max_bytes=1 << 30), alarm=lambda k, d: None)
    spool.open()
    gen = ConveyorGenerator(11)
    for i, p in enumerate(P_NG):
        ng = Defect(class_name="ng", class_id=0, confidence=p, box=None)
        rejected = p >= THRESHOLD
        v = make_verdict(synth_frame(i, seed=11, image=gen.part(i).image, captured_wall=T0 + i),
                         outcome="REJECT" if rejected else "PASS", defects=(ng,) if rejected else (),
                         uncertain=(ng,) if THRESHOLD - MARGIN <= p < THRESHOLD else (),
                         model=ModelInfo("demo-cls", "0.1.0", "cd" * 32))
        v = replace(v, task="classify", class_scores=(("ng", p), ("ok", round(1 - p, 4))))
        reasons = ("uncertain",) if v.uncertain else ("random_pass",) if not rejected else ("reject",)
        spool.write(v, SampleDecision(reasons, i, 0.0))
    cfg_path = tmp_path / "line.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"path": str(DEMO_CLS), "task": "classify"}, "mqtt": {"enabled": False},
        "spool": {"dir": str(tmp_path / "spool")},
        "upload": {"destination": destination, "endpoint_url": endpoint, "window": None, "retries": 1,
                   "backoff_s": 0.05}}))
    rep = Uploader(tmp_path / "spool", load_config(cfg_path).upload, gallery=False).run()
    assert rep.ok and rep.uploaded == len(P_NG), rep.summary()
    return cfg_path
