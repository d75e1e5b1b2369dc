"""Command line: `inspector <command>`. Exit codes: 0 ok, 2 bad input, 1 runtime failure.

Each command imports what it needs lazily, so `inspector check-config` stays instant and the
runtime commands never import the training tool chain.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspector.errors import ConfigError, InspectorError


def _config(path: str | None):
    from inspector.config import load_config

    return load_config(path)


def cmd_check_config(a: argparse.Namespace) -> int:
    _config(a.file)
    print("OK")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from inspector.app import run_service

    return run_service(_config(a.config), max_frames=a.max_frames, duration=a.duration,
                       summary_json=a.summary_json, live=not a.no_live)


def cmd_synth(a: argparse.Namespace) -> int:
    import time

    from inspector.training.datasets import make_split, split_is_complete
    from inspector.synth import write_data_yaml

    t0 = time.monotonic()
    out = Path(a.out)
    if split_is_complete(out, a.n, a.seed):
        print(f"{out} already holds these {a.n} frames of seed {a.seed} (same generator version): kept")
        return 0
    make_split(out, a.n, a.seed, workers=a.workers)
    write_data_yaml(out, train="images", val="images")
    dt = time.monotonic() - t0
    print(f"wrote {a.n} frames to {out} (images/, labels/, data.yaml) in {dt:.1f} s ({a.n / dt:.0f} frames/s)")
    return 0


def cmd_actuator(a: argparse.Namespace) -> int:
    from inspector.actuator import run_actuator

    return run_actuator(_config(a.config), expect=a.expect, duration=a.duration)


def cmd_upload(a: argparse.Namespace) -> int:
    from inspector.uploader import upload_now

    if not a.now:
        print("inspector upload: only --now is supported from the command line; "
              "the nightly window runs inside `inspector run`", file=sys.stderr)
        return 2
    return upload_now(_config(a.config))


def cmd_demo(a: argparse.Namespace) -> int:
    from inspector.demo import run_demo

    return run_demo(a.config, frames=a.frames)


def cmd_bench(a: argparse.Namespace) -> int:
    from inspector.bench import run_bench

    try:
        w, h = (int(v) for v in a.frame_size.lower().split("x"))
    except ValueError:
        print(f"--frame-size: expected WIDTHxHEIGHT such as 1280x720, got {a.frame_size!r}", file=sys.stderr)
        return 2
    return run_bench(Path(a.model), frames=a.frames, json_out=a.json, config=_config(a.config) if a.config else None,
                     frame_size=(w, h), interval_ms=a.interval_ms)


def cmd_schema(a: argparse.Namespace) -> int:
    from inspector.schemas import write_schemas

    for p in write_schemas(Path(a.out)):
        print(p)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from inspector.training.train import TrainPlan, train

    plan = TrainPlan(out=Path(a.out), arch=a.arch, imgsz=a.imgsz, epochs=a.epochs, batch=a.batch,
                     n_train=a.n_train, n_val=a.n_val, train_seed=a.train_seed, val_seed=a.val_seed,
                     init=Path(a.init) if a.init else None, lr0=a.lr0)
    print(train(plan))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from inspector.training.quantize import quantize

    print(quantize(Path(a.model), Path(a.calibration), Path(a.out), imgsz=a.imgsz,
                   max_drop=a.max_drop, val_data=Path(a.val_data) if a.val_data else None,
                   subset_size=a.subset_size, head_convs_float=a.head_float,
                   fast_bias_correction=not a.full_bias_correction))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from inspector.training.evaluate import run_eval_cli

    return run_eval_cli(Path(a.model), data=Path(a.data) if a.data else None, json_out=a.json,
                        compare=a.compare, n=a.n, seed=a.seed)


def cmd_model(a: argparse.Namespace) -> int:
    from inspector.training.card import build_bundle_cli

    return build_bundle_cli(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspector", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="run the line-side service")
    s.add_argument("--config", required=True)
    s.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    s.add_argument("--summary-json", default=None, help="also write the end-of-run summary as JSON")
    s.add_argument("--no-live", action="store_true", help="no live status line even on a terminal")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("check-config", help="validate a config file (exit 2 on error)")
    s.add_argument("file")
    s.set_defaults(fn=cmd_check_config)

    s = sub.add_parser("synth", help="write a synthetic YOLO dataset")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--workers", type=int, default=2)
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("actuator", help="reference line-side subscriber of rejects")
    s.add_argument("--config", required=True)
    s.add_argument("--expect", type=int, default=None, help="exit non-zero unless N distinct rejects arrived")
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    s.set_defaults(fn=cmd_actuator)

    s = sub.add_parser("demo", help="the whole line on this machine: broker, actuator, run, upload")
    s.add_argument("--config", default="configs/demo.yaml")
    s.add_argument("--frames", type=int, default=300)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("upload", help="upload the spool")
    s.add_argument("--now", action="store_true", help="upload now, ignoring the nightly window")
    s.add_argument("--config", required=True)
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("bench", help="side-by-side latency/throughput report")
    s.add_argument("--model", default="models/demo")
    s.add_argument("--frames", type=int, default=300)
    s.add_argument("--json", default=None)
    s.add_argument("--config", default=None, help="config for the end-to-end part (default: built-in)")
    s.add_argument("--frame-size", default="1280x720", help="camera frame WIDTHxHEIGHT (default: a 720p camera)")
    s.add_argument("--interval-ms", type=float, default=100.0, help="paced pattern: one part every N ms (default 100)")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("schema", help="write the JSON Schemas of the config and MQTT payloads")
    s.add_argument("--out", default="schemas")
    s.set_defaults(fn=cmd_schema)

    s = sub.add_parser("train", help="train a YOLO detector on synthetic data (train extra)")
    s.add_argument("--out", default="build/train")
    s.add_argument("--arch", default="yolov8n.yaml")
    s.add_argument("--imgsz", type=int, default=320)
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--n-train", type=int, default=1500)
    s.add_argument("--n-val", type=int, default=200)
    s.add_argument("--train-seed", type=int, default=1001)
    s.add_argument("--val-seed", type=int, default=2002)
    s.add_argument("--init", default=None, help="fine-tune from these (our own) .pt weights instead of the .yaml")
    s.add_argument("--lr0", type=float, default=0.01)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("quantize", help="INT8 OpenVINO IR with NNCF (train extra)")
    s.add_argument("--model", required=True, help=".pt, .onnx or OpenVINO .xml")
    s.add_argument("--calibration", required=True, help="folder of calibration images")
    s.add_argument("--out", required=True, help="output .xml path")
    s.add_argument("--imgsz", type=int, default=320)
    s.add_argument("--subset-size", type=int, default=300)
    s.add_argument("--max-drop", type=float, default=None,
                   help="accuracy control: max mAP50-95 drop, absolute (0.01 = 1 point; needs --val-data)")
    s.add_argument("--val-data", default=None, help="data.yaml of the validation set for --max-drop")
    s.add_argument("--head-float", choices=("none", "last", "all"), default="last",
                   help="YOLO head convs kept in float beside the box decoding: none, the 1x1 output convs "
                        "(default) or all of cv2/cv3")
    s.add_argument("--full-bias-correction", action="store_true",
                   help="NNCF's full bias correction instead of the fast one (slower to quantize)")
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser("eval", help="mAP and per-class precision/recall of a model bundle")
    s.add_argument("--model", default="models/demo")
    s.add_argument("--data", default=None, help="data.yaml; default: a held-out synthetic set (--n, --seed)")
    s.add_argument("--n", type=int, default=500)
    s.add_argument("--seed", type=int, default=4004)
    s.add_argument("--json", default=None)
    s.add_argument("--compare", action="store_true", help="FP32 vs INT8 side by side")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("model", help="assemble a model bundle: thresholds, metrics, model card (train extra)")
    s.add_argument("--fp32", required=True)
    s.add_argument("--int8", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--name", default="demo")
    s.add_argument("--version", default="1.0.0")
    s.add_argument("--calibration", required=True)
    s.add_argument("--val-seed", type=int, default=2002)
    s.add_argument("--n-val", type=int, default=400)
    s.add_argument("--test-seed", type=int, default=4004)
    s.add_argument("--n-test", type=int, default=500)
    s.add_argument("--target-recall", type=float, default=0.99)
    s.add_argument("--command", default="make model", help="the command that rebuilds it, for the card")
    s.set_defaults(fn=cmd_model)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        return int(a.fn(a) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except InspectorError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
