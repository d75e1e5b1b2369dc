"""The line-side runtime never imports torch or ultralytics (AGPL, several GB)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "ultralytics", "nncf")


def test_running_the_pipeline_imports_no_training_stack(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""
        source: {{kind: synthetic, parts_per_s: 50}}
        model: {{path: {REPO / 'models/demo'}}}
        decision: {{budget_ms: 1000}}
        mqtt: {{enabled: true, port: 1, outbox_path: {tmp_path / 'outbox.sqlite'}}}
        spool: {{dir: {tmp_path / 'spool'}}}
        upload: {{destination: file://{tmp_path / 'up'}}}
        metrics: {{port: 0}}
        sink: {{jsonl: {tmp_path / 'v.jsonl'}}}
    """))
    code = textwrap.dedent(f"""
        import json, sys
        import inspector.service.app, inspector.cli, inspector.inference.detector
        import inspector.service.pipeline, inspector.sources.conveyor
        from inspector.config import load_config
        from inspector.service.app import run_service
        rc = run_service(load_config({str(cfg)!r}), max_frames=10, live=False)
        print(json.dumps({{"rc": rc, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert result["loaded"] == [], f"runtime imported {result['loaded']}"
