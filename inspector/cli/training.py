"""Commands: the offline model tool chain (train extra): synth, train, quantize, eval, model."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_synth(a: argparse.Namespace) -> int:
    import time

    from inspector.sources.conveyor import write_data_yaml
    from inspector.training.datasets import make_split, split_is_complete

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


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="write a synthetic YOLO dataset")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--workers", type=int, default=2)
    s.set_defaults(fn=cmd_synth)

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
