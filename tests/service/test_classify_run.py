"""`inspector run` with a classifier bundle (model task classify) on a folder source, end to end: rejects on
a real Mosquitto with the class and its probability and no box, the verdict log's class scores, uncertain
frames spooled on the probability margin with every class's score in the sidecar; a bundle of the other task
refused at start and by `model stage` (exit 2, naming both tasks)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fixtures.mqtt_broker import Recorder, mqtt_config
from tests.inference.cls_bundle import make_cls_bundle, p_ng

REPO = Path(__file__).resolve().parents[2]
# p(ng) 0.999, 0.003, 0.896, 0.554 (NG, within the 0.1 margin of 0.5), 0.446 (OK, within it), 0.001
GRAYS = (40, 200, 100, 126, 130, 220)


def inspector(*args):
    return subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True, text=True,
                          timeout=180, check=False)


def _config(tmp_path: Path, model: Path, task: str | None, mqtt=None, sampling: str = "{enabled: false}") -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for i, g in enumerate(GRAYS):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((48, 64, 3), g, np.uint8))
    task_line = f", task: {task}" if task else ""
    broker = "{enabled: false}"
    if mqtt:
        broker = (f"{{host: {mqtt.host}, port: {mqtt.port}, station: {mqtt.station}, "
                  f"outbox_path: {tmp_path / 'ob.sqlite'}, reject_journal_dir: {tmp_path}}}")
    p = tmp_path / "run.yaml"
    p.write_text(textwrap.dedent(f"""
        source: {{kind: folder, path: {folder}, parts_per_s: 30}}
        model: {{path: {model}{task_line}}}
        decision: {{budget_ms: 5000, uncertain_margin: 0.1}}
        mqtt: {broker}
        sampling: {sampling}
        spool: {{dir: {tmp_path / 'spool'}}}
        upload: {{window: null}}
        metrics: {{port: 0}}
        sink: {{jsonl: {tmp_path / 'verdicts.jsonl'}}}
        lifecycle: {{store: {tmp_path / 'store'}}}
    """))
    return p


def test_run_a_classifier_on_a_folder_rejects_over_mqtt(tmp_path, mqtt_broker):
    mqtt = mqtt_config(mqtt_broker, tmp_path)
    rec = Recorder(mqtt, topics=("reject",)).start()
    try:
        model = make_cls_bundle(tmp_path / "cls")
        sampling = ("{enabled: true, seed: 1, uncertain: {rate: 1.0}, rejects: {enabled: false}, passes: {enabled: "
                    "false}, dedup_window_s: 0}")
        out = tmp_path / "summary.json"
        r = inspector("run", "--config", _config(tmp_path, model, "classify", mqtt, sampling), "--no-live",
                      "--summary-json", out)
        assert r.returncode == 0, r.stderr[-3000:]
        ng = [i for i, g in enumerate(GRAYS) if p_ng(g) >= 0.5]
        assert ng == [0, 2, 3]
        rec.wait_for(lambda x: len(x.on("reject")) >= len(ng), 30, "the NG parts' rejects")
    finally:
        rec.stop()
    s = json.loads(out.read_text())
    assert s["frames"] == len(GRAYS) and s["verdicts"] == {"PASS": 3, "REJECT": 3, "LATE": 0}, s["verdicts"]
    rejects = sorted((m.payload for m in rec.on("reject")), key=lambda p: p["frame_id"])
    assert [p["frame_id"] for p in rejects] == ng
    for p in rejects:
        assert p["reason"] == "defect" and p["schema_version"] == 1 and p["model"]["name"] == "demo-cls"
        [d] = p["defects"]
        assert set(d) == {"class", "confidence"} and d["class"] == "ng"
        assert d["confidence"] == pytest.approx(p_ng(GRAYS[p["frame_id"]]), abs=1e-3)

    log = [json.loads(x) for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert [v["verdict"] for v in sorted(log, key=lambda v: v["frame_id"])] == ["REJECT", "PASS", "REJECT",
                                                                                  "REJECT", "PASS", "PASS"]
    for v in log:
        assert v["class_scores"]["ng"] == pytest.approx(p_ng(GRAYS[v["frame_id"]]), abs=1e-3)
        assert abs(v["class_scores"]["ng"] + v["class_scores"]["ok"] - 1) < 1e-3

    # the probability margin: 126 (NG at 0.554) and 130 (OK at 0.446) are within 0.1 of the threshold
    sidecars = sorted((json.loads(f.read_text()) for f in (tmp_path / "spool").rglob("*.json")),
                      key=lambda x: x["frame_id"])
    assert [x["frame_id"] for x in sidecars] == [3, 4] and {x["reason"] for x in sidecars} == {"uncertain"}
    for x in sidecars:
        assert x["labels"]["format"] == "classes" and set(x["class_scores"]) == {"ng", "ok"}
        assert [u["class"] for u in x["uncertain"]] == ["ng"] and "box" not in x["uncertain"][0]
        assert x["class_scores"]["ng"] == pytest.approx(p_ng(GRAYS[x["frame_id"]]), abs=1e-3)


@pytest.mark.parametrize("bundle, task, refused, station", [
    pytest.param("classify", None, "classify", "detect", id="classifier-on-a-detect-station"),
    pytest.param("detect", "classify", "detect", "classify", id="detector-on-a-classify-station"),
])
def test_a_bundle_of_another_task_is_refused_at_start_and_by_stage(tmp_path, bundle, task, refused, station):
    model = make_cls_bundle(tmp_path / "cls") if bundle == "classify" else REPO / "models" / "demo"
    cfg = _config(tmp_path, model, task)
    r = inspector("run", "--config", cfg, "--no-live", "--max-frames", 3)
    want = f"is a '{refused}' model but this station runs '{station}' models (config model.task)"
    assert r.returncode == 2 and want in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "verdicts.jsonl").exists() or not (tmp_path / "verdicts.jsonl").read_text()
    r = inspector("model", "stage", model, "--config", cfg)
    assert r.returncode == 2 and want in r.stderr and str(model) in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / "store").rglob("model_card.json")), "nothing staged"
