"""A classify station's model lifecycle: a second classifier bundle in shadow, promoted, rolled back, the
verdicts of each model the ones its probabilities give; a bundle of the other task (models/demo, a detector)
refused by shadow and promote naming both tasks, the station judging on meanwhile. Real OpenVINO, a running
service on a folder of uniform gray frames (tests/inference/cls_bundle.py: p(ng) known in closed form)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.bundle.signing import Trust
from inspector.config import InspectorConfig
from inspector.frames import Outcome
from inspector.lifecycle.control import ControlError, request
from inspector.lifecycle.store import ModelRef
from tests.inference.cls_bundle import make_cls_bundle, p_ng
from tests.lifecycle.bundles import DEMO
from tests.lifecycle.conftest import lifecycle_config

# p(ng) by gray level: 40 0.999, 200 0.003, 135 0.357, 220 0.001, 100 0.896, 150 0.147: at the threshold 0.5 (v1)
# and 0.2 (v2) the 135 frames are NG for v2 only
GRAYS = (40, 200, 135, 220, 100, 150)
C1, C2 = ModelRef("demo-cls", "1.0.0"), ModelRef("demo-cls", "2.0.0")


def expected_ng(gray: int, threshold: float) -> bool:
    return p_ng(gray) >= threshold


def _config(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, g in enumerate(GRAYS):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((48, 64, 3), g, np.uint8))
    cfg = lifecycle_config(
        tmp_path,
        model={"path": str(make_cls_bundle(tmp_path / "bundles" / "c1", C1.version)), "task": "classify"},
        decision={"budget_ms": 5000, "uncertain_margin": 0.05},
        sampling={"enabled": True, "seed": 1, "uncertain": {"enabled": False}, "rejects": {"enabled": False},
                  "passes": {"enabled": False}, "dedup_window_s": 0,
                  "shadow_disagree": {"limits": {"per_minute": 10_000, "per_hour": 10_000, "per_day": 10_000}}})
    source = InspectorConfig(source={"kind": "folder", "path": str(folder), "parts_per_s": 40, "loop": True}).source
    return cfg.model_copy(update={"source": source})


def test_shadow_promote_and_rollback_of_a_second_classifier(tmp_path, running):
    assert [expected_ng(g, 0.5) for g in GRAYS] == [True, False, False, False, True, False]
    assert [expected_ng(g, 0.2) for g in GRAYS] == [True, False, True, False, True, False]
    cfg = _config(tmp_path)
    svc, rec = running(cfg)
    svc.lifecycle.store.stage(make_cls_bundle(tmp_path / "bundles" / "c2", C2.version, threshold=0.2), Trust())
    rec.wait(lambda vs: len(vs) >= 12, 60, "12 verdicts of the first classifier")

    request(cfg.lifecycle.socket, {"cmd": "shadow", "model": str(C2)})
    rec.wait(lambda vs: svc.lifecycle.shadow.state()["judged"] >= 12, 60, "12 frames judged in shadow")
    rep = request(cfg.lifecycle.socket, {"cmd": "report"})
    # the candidate rejects the 135 frames alone (p(ng) 0.36: under 0.5, over 0.2); nothing else differs
    assert rep["rejected_alone"]["active"] == 0 and rep["rejected_alone"]["shadow"] > 0
    assert rep["disagree"] == rep["rejected_alone"]["shadow"]
    request(cfg.lifecycle.socket, {"cmd": "shadow_stop"})

    r = request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(C2)})
    assert (r["active"], r["previous"]) == (str(C2), str(C1))
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 12, 60, "12 verdicts of the promoted classifier")
    r = request(cfg.lifecycle.socket, {"cmd": "rollback"})
    assert r["active"] == str(C1)
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 12 and vs[-1].model.version == C1.version, 60, "verdicts after rollback")
    svc.stop(deadline_s=5)

    thresholds = {C1.version: 0.5, C2.version: 0.2}
    versions = {v.model.version for v in rec.verdicts}
    assert versions == {C1.version, C2.version}
    for v in rec.verdicts:
        assert v.task == "classify" and v.outcome is not Outcome.LATE
        gray = GRAYS[v.frame_id % len(GRAYS)]
        assert v.actuate == expected_ng(gray, thresholds[v.model.version]), (v.frame_id, gray, v.model.version)
        assert dict(v.class_scores)["ng"] == pytest.approx(p_ng(gray), abs=1e-4)
        assert all(d.box is None and d.class_name == "ng" for d in v.defects)


@pytest.mark.parametrize("cmd", ["shadow", "promote"])
def test_a_detector_is_refused_on_a_classify_station_naming_both_tasks(tmp_path, running, cmd):
    cfg = _config(tmp_path)
    svc, rec = running(cfg)
    demo = svc.lifecycle.store.stage(DEMO, Trust())
    rec.wait(lambda vs: len(vs) >= 3, 60, "first verdicts")
    with pytest.raises(ControlError) as e:
        request(cfg.lifecycle.socket, {"cmd": cmd, "model": str(demo)})
    assert e.value.exit_code == 2
    assert f"{demo.name} {demo.version}" in str(e.value) or str(demo) in str(e.value)
    assert "is a 'detect' model but this station runs 'classify' models (config model.task)" in str(e.value)
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 6, 60, "verdicts after the refusal")
    assert {v.model.version for v in rec.verdicts} == {C1.version}
    assert svc.lifecycle.store.active_ref() == C1 and svc.lifecycle.shadow is None
