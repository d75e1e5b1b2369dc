"""A classifier's retraining loop end to end on the synthetic line, every step the CLI in a child process under the
offline guard (docs/retraining.md, section 8): models/demo-cls runs the line (`inspector run`, synthetic source),
samples the uncertain frames, rejects and passes into the spool, `inspector upload --now` stores them (file://),
`review export --to labelstudio` writes Choices tasks with the model's class pre-selected, a stand-in reviewer
answers each task with the part's truth (NG = the part carries any defect) in the JSON a Label Studio export has,
`dataset import` records what the review changed, `dataset merge` adds the frames to a base dataset (its test
split frozen as the regression set), `retrain` fine-tunes demo-cls for one epoch (its card: task, classes, parent,
retrain record, the parent's accuracy control) and `compare` judges the candidate on the regression set and the
reviewed frames."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inspector.sources.conveyor import ConveyorGenerator

REPO = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).parent / "offline_guard"
DEMO_CLS = REPO / "models" / "demo-cls"
PART_RE = re.compile(r"^S(\d+)-(\d+)$")

pytestmark = [pytest.mark.slow, pytest.mark.train]


def inspector(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]),
               INSPECTOR_NET_LOG=str(tmp_path / "net.log"), YOLO_CONFIG_DIR=str(tmp_path / "ucfg"))
    r = subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, f"{args[:3]}: exit {r.returncode}\n" + (r.stdout + r.stderr)[-4000:]
    return r


def review_with_the_truth(tasks: list[dict]) -> tuple[list[dict], dict]:
    """Label Studio's export of the project after a reviewer chose each part's true class (from its part id)."""
    out, changed = [], {"confirmed": 0, "misses": 0, "false_rejects": 0}
    gens: dict[int, ConveyorGenerator] = {}
    for k, t in enumerate(tasks):
        seed, index = (int(g) for g in PART_RE.match(t["data"]["part_id"]).groups())
        truth = "ng" if gens.setdefault(seed, ConveyorGenerator(seed)).part(index).defects else "ok"
        (pred,) = t["predictions"][0]["result"]
        was = pred["value"]["choices"][0]
        changed["confirmed" if was == truth else "misses" if truth == "ng" else "false_rejects"] += 1
        result = [{**{k2: v for k2, v in pred.items() if k2 != "score"}, "value": {"choices": [truth]}}]
        out.append({"id": 1 + k, "data": t["data"], "predictions": [k],
                    "annotations": [{"id": 100 + k, "was_cancelled": False, "result": result}]})
    return out, changed


def test_a_classifier_review_loop_through_the_cli(tmp_path):
    pytest.importorskip("ultralytics")
    # the base dataset: synthetic-line frames (another seed), 40 % of them the regression set
    inspector(tmp_path, "synth", "--task", "classify", "--out", tmp_path / "src", "--n", 60, "--seed", 5,
              "--workers", 1)
    inspector(tmp_path, "dataset", "import", "--from", "folders", tmp_path / "src", "--out", tmp_path / "base",
              "--val-fraction", 0.25, "--test-fraction", 0.4)

    # the line: demo-cls judges 60 parts; uncertain frames, rejects and 70 % of passes are sampled and uploaded
    cfg = tmp_path / "line.yaml"
    cfg.write_text(textwrap.dedent(f"""
        source: {{kind: synthetic, seed: 777, parts_per_s: 25, trigger: triggered}}
        model: {{path: {DEMO_CLS}, task: classify}}
        decision: {{budget_ms: 2000}}
        mqtt: {{enabled: false}}
        sampling:
          seed: 1
          dedup_window_s: 0
          uncertain: {{rate: 1.0, limits: {{per_minute: 100000, per_hour: 100000}}}}
          rejects: {{rate: 1.0, limits: {{per_minute: 100000, per_hour: 100000}}}}
          passes: {{rate: 0.7, limits: {{per_minute: 100000, per_hour: 100000}}}}
        spool: {{dir: {tmp_path / 'spool'}}}
        upload: {{destination: "file://{tmp_path / 'uploads'}", window: null}}
        metrics: {{port: 0}}
    """))
    inspector(tmp_path, "run", "--config", cfg, "--max-frames", 60, "--no-live", "--summary-json",
              tmp_path / "summary.json")
    assert "failed 0" in inspector(tmp_path, "upload", "--now", "--config", cfg).stdout
    today = dt.datetime.now(dt.UTC).date()

    # review: Choices tasks with the model's class; the stand-in reviewer answers with the truth
    review = tmp_path / "review"
    inspector(tmp_path, "review", "export", review, "--config", cfg, "--since", today - dt.timedelta(days=1),
              "--until", today, "--to", "labelstudio")
    tasks = json.loads((review / "tasks.json").read_text())
    assert len(tasks) >= 30 and all(t["predictions"][0]["result"][0]["type"] == "choices" for t in tasks)
    reviewed, changed = review_with_the_truth(tasks)
    (review / "reviewed.json").write_text(json.dumps(reviewed))
    new = tmp_path / "reviewed-ds"
    inspector(tmp_path, "dataset", "import", "--from", "labelstudio", review / "reviewed.json", "--out", new)
    r = json.loads((new / "dataset.json").read_text())["source"]["review"]
    assert r["imported"] == len(tasks) and r["labels"]["confirmed"] == changed["confirmed"]
    assert (r["labels"]["misses"], r["labels"]["false_rejects"]) == (changed["misses"], changed["false_rejects"])

    # a new version, a candidate from demo-cls's own weights, and the verdict on it
    v2 = tmp_path / "v2"
    inspector(tmp_path, "dataset", "merge", tmp_path / "base", new, "--out", v2, "--val-fraction", 0.4)
    meta = json.loads((v2 / "dataset.json").read_text())
    assert meta["regression"]["images"] == 24 and any(s.startswith("review:") for s in meta["counts_per_source"])
    inspector(tmp_path, "retrain", "--from", DEMO_CLS, "--data", v2, "--out", tmp_path / "cand", "--epochs", 1,
              "--batch", 8, "--workers", 0, "--work", tmp_path / "w", "--version", "0.1.1-rc.1")
    # the candidate's card (was tests/training/test_cls_retrain.py's own retrain of demo-cls, the same command on
    # a smaller version: one retrain serves both proofs)
    card = json.loads((tmp_path / "cand" / "model_card.json").read_text())
    parent = json.loads((DEMO_CLS / "model_card.json").read_text())
    assert card["task"] == "classify" and card["classes"] == ["ng", "ok"] and card["pass_class"] == "ok"
    assert card["version"] == "0.1.1-rc.1" and card["input_size"] == parent["input_size"]
    assert card["parent"]["version"] == "0.1.0" and card["parent"]["thresholds"] == parent["thresholds"]
    assert card["parent"]["card_sha256"] == hashlib.sha256((DEMO_CLS / "model_card.json").read_bytes()).hexdigest()
    assert card["retrain"]["dataset_version"]["regression_sha256"] == meta["regression"]["sha256"]
    assert card["retrain"]["from_weights_sha256"] == parent["float_weights"]["sha256"]
    # the parent's INT8 accuracy control (max top-1 drop) kept
    assert card["retrain"]["max_drop"] == parent["quantization"]["accuracy_control"]["max_drop_top1_accuracy"]
    assert card["evaluation"]["split"]["split"] == "test" and card["evaluation"]["split"]["held_out"]
    out = inspector(tmp_path, "compare", DEMO_CLS, tmp_path / "cand", "--data", v2, "--json", tmp_path / "c.json")
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["task"] == "classify" and c["regression_frozen"] and c["new_source"].startswith("review:")
    assert c["sets"]["regression"]["images"] == 24 and c["sets"]["new"]["images"] > 0
    assert c["new"]["version"] == "0.1.1-rc.1" and c["new"]["thresholds"] == card["thresholds"]
    assert c["recommendation"].split(" ")[0] in ("BETTER", "WORSE", "NOT") and "recommendation:" in out.stdout
    print(out.stdout)
