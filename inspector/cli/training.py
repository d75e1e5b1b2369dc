"""Commands: the offline model tool chain (train extra): synth, dataset import/check, train, quantize,
eval, model. Every command works on a canonical YOLO dataset (data.yaml); the synthetic line is one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# = inspector.training.importers.FORMATS (not imported: `inspector run` must not load the tool chain)
FORMATS = ("yolo", "voc", "coco", "labelstudio", "cvat")


def cmd_synth(a: argparse.Namespace) -> int:
    import time

    from inspector.training.datasets import (
        make_split,
        split_is_complete,
        write_synth_data_yaml,
        write_synth_split,
    )

    t0 = time.monotonic()
    out = Path(a.out)
    if a.task == "classify":  # image-level labels: out/ok, out/ng (NG = any defect), for `dataset import`
        from inspector.training.cls_synth import write_ok_ng_folders

        counts = write_ok_ng_folders(out, a.n, a.seed, workers=a.workers, optics_mode=a.optics)
        print(f"wrote {a.n} frames of seed {a.seed} to {out}/ok ({counts['ok']}) and {out}/ng ({counts['ng']}) "
              f"in {time.monotonic() - t0:.1f} s")
        return 0
    if a.split:
        data_yaml = write_synth_split(out, a.split, a.n, a.seed, workers=a.workers, optics_mode=a.optics)
        print(f"{out}: split {a.split} holds {a.n} frames of seed {a.seed} ({data_yaml}) "
              f"[{time.monotonic() - t0:.1f} s]")
        return 0
    if split_is_complete(out, a.n, a.seed, a.optics):
        print(f"{out} already holds these {a.n} frames of seed {a.seed} (same generator version): kept")
        return 0
    make_split(out, a.n, a.seed, workers=a.workers, optics_mode=a.optics)
    write_synth_data_yaml(out, train="images", val="images")
    dt = time.monotonic() - t0
    print(f"wrote {a.n} frames to {out} (images/, labels/, data.yaml) in {dt:.1f} s ({a.n / dt:.0f} frames/s)")
    return 0


def cmd_dataset_import(a: argparse.Namespace) -> int:
    from inspector.cli import classify

    if classify.wants_classify_import(a):  # image-level labels: a classification dataset
        return classify.cmd_import(a)
    from inspector.training.dataset_import import (
        SplitRule,
        format_summary,
        import_dataset,
    )

    classes = [c.strip() for c in a.classes.split(",") if c.strip()] if a.classes else None
    if not (0 <= a.val_fraction < 1 and 0 <= a.test_fraction < 1 and a.val_fraction + a.test_fraction < 1):
        print(f"dataset import: --val-fraction {a.val_fraction} and --test-fraction {a.test_fraction} must each be "
              "in [0, 1) and leave images for train", file=sys.stderr)
        return 2
    rule = SplitRule(split_file=Path(a.split_file) if a.split_file else None, val_fraction=a.val_fraction,
                     test_fraction=a.test_fraction, seed=a.seed, group_by=a.group_by)
    try:
        r = import_dataset(a.source_format, Path(a.src), Path(a.out), classes=classes, rule=rule)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"dataset import: {e}", file=sys.stderr)
        return 2
    for p in r.problems:
        print(f"skipped {p}", file=sys.stderr)
    print(format_summary(r.summary))
    print(f"wrote {r.out} (data.yaml, dataset.json)")
    if r.problems:
        kinds = ", ".join(f"{k} {n}" for k, n in r.summary["skipped_counts"].items())
        # --skip-bad accepts skipped items, not an annotation file that does not parse: whatever it held is
        # missing from the dataset without a trace of which images it labelled
        whole = [p.file for p in r.problems if p.kind == "unparsable"]
        print(f"{len(r.problems)} file(s) skipped ({kinds}; listed above and in dataset.json)"
              + ("" if a.skip_bad else "; exit 2 (pass --skip-bad to accept the import without them)"),
              file=sys.stderr)
        if whole:
            print(f"exit 2: {len(whole)} annotation file(s) do not parse ({', '.join(whole[:5])}); --skip-bad does "
                  "not accept a whole file", file=sys.stderr)
            return 2
        return 0 if a.skip_bad else 2
    return 0


def cmd_dataset_check(a: argparse.Namespace) -> int:
    from inspector.training.cls_dataset import is_classify
    from inspector.training.dataset_check import check_dataset

    if is_classify(a.dir):
        from inspector.cli import classify

        return classify.cmd_check(a)

    return check_dataset(Path(a.dir), imgsz=a.imgsz, near_dup_bits=a.near_dup_bits, json_out=a.json)


def cmd_train(a: argparse.Namespace) -> int:
    from inspector.training.train import TrainPlan, train

    plan = TrainPlan(out=Path(a.out), data=Path(a.data) if a.data else None, arch=a.arch, imgsz=a.imgsz,
                     epochs=a.epochs, batch=a.batch, n_train=a.n_train, n_val=a.n_val, train_seed=a.train_seed,
                     val_seed=a.val_seed, init=Path(a.init) if a.init else None, lr0=a.lr0, augment=a.augment,
                     time_budget_h=a.time_budget, patience=a.patience, workers=a.workers, seed=a.seed,
                     cache=None if a.cache == "none" else a.cache, task=a.task)
    print(train(plan, resume=a.resume))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from inspector.cli import classify

    if classify.is_classify_data(a.data):
        return classify.cmd_quantize(a)
    from inspector.training.quantize import calibration_folder, quantize

    calibration = calibration_folder(a.calibration, a.data)
    print(quantize(Path(a.model), calibration, Path(a.out), imgsz=a.imgsz,
                   max_drop=a.max_drop, val_data=Path(a.val_data or a.data) if (a.val_data or a.data) else None,
                   subset_size=a.subset_size, head_convs_float=a.head_float,
                   fast_bias_correction=not a.full_bias_correction, preset=a.preset, overflow_fix=a.overflow_fix,
                   max_float_groups=a.max_float_groups, ranking_subset=a.ranking_subset,
                   keep_float=tuple(a.keep_float or ())))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from inspector.cli import classify

    if classify.is_classify_model(a.model):
        return classify.cmd_eval(a)
    from inspector.training.evaluate import run_eval_cli

    if a.perturb:
        return _eval_perturbed(a)
    return run_eval_cli(Path(a.model), data=Path(a.data) if a.data else None, json_out=a.json,
                        compare=a.compare, n=a.n, seed=a.seed, split=a.split)


def _eval_perturbed(a: argparse.Namespace) -> int:
    """`inspector eval --perturb FAMILY[,FAMILY]`: the model on altered copies of the set (issue 14)."""
    from inspector.bundle.load import load_bundle
    from inspector.training.evaluate import data_splits, synthetic_samples, yolo_samples
    from inspector.training.perturb_eval import parse_families, run_perturb_cli

    try:
        families = parse_families(a.perturb)
        if a.data:
            split = a.split or ("test" if "test" in data_splits(Path(a.data)) else "val")
            samples = list(yolo_samples(Path(a.data), split))
        else:
            samples = list(synthetic_samples(a.n, a.seed))
    except (OSError, KeyError, ValueError) as e:
        print(f"eval --perturb: {e}", file=sys.stderr)
        return 2
    if not samples:
        print(f"eval --perturb: no evaluation images ({a.data or f'synthetic seed {a.seed}'})", file=sys.stderr)
        return 2
    bundle = load_bundle(Path(a.model), "fp32" if a.compare else "int8")
    print(f"{bundle.name} {bundle.version} [{bundle.precision}] on {a.data or f'synthetic seed {a.seed}'}, "
          f"{len(samples)} images, magnitude {a.magnitude}")
    return run_perturb_cli(bundle, samples, families, a.seed, a.magnitude, a.json)


def cmd_model_envelope(a: argparse.Namespace) -> int:
    """`inspector model envelope DIR`: the input envelope of the drift guard, written into the card."""
    from inspector.bundle import CARD_NAME, SIG_NAME
    from inspector.bundle.load import load_bundle
    from inspector.training.envelope import (
        families_held,
        folder_images,
        write_card_envelope,
    )
    from inspector.training.evaluate import synthetic_samples
    from inspector.training.perturb_eval import CLEAN, parse_families

    bundle = load_bundle(Path(a.dir), "int8")
    try:
        if a.families == "held":
            families = families_held(bundle.card)
            if families is None:
                print("model envelope: the card has no per-family metrics (evaluation.perturbed): clean images only; "
                      "pass --families to name the optics families the model holds under", file=sys.stderr)
                families = []
        else:
            families = [f for f in parse_families(a.families) if f != CLEAN]
        roi = [int(v) for v in a.roi.split(",")] if a.roi else None
        if roi is not None and len(roi) != 4:
            raise ValueError(f"--roi: expected x0,y0,x1,y1, got {a.roi!r}")
        if a.data:
            images = list(folder_images(Path(a.data)))
            where = {"data": str(Path(a.data).resolve())}
        else:
            images = [s.image for s in synthetic_samples(a.n, a.seed)]
            where = {"generator": "inspector.sources.conveyor", "seed": a.seed, "n": a.n}
    except ValueError as e:
        print(f"model envelope: {e}", file=sys.stderr)
        return 2
    env = write_card_envelope(Path(a.dir), images, families, roi=roi, confidences=not a.no_confidence,
                              seed=a.seed, source=where)
    print(f"wrote input_envelope into {Path(a.dir) / CARD_NAME}: {len(images)} images x "
          f"{1 + len(families)} ({', '.join(['clean', *families])}), frame {env.frame_size}")
    for k, (lo, hi) in env.bounds.items():
        print(f"  {k:<11} [{lo:.4f}, {hi:.4f}]")
    if (Path(a.dir) / SIG_NAME).exists():
        print(f"{SIG_NAME} no longer matches the card: sign it again (`inspector model sign`)", file=sys.stderr)
    return 0


def cmd_model(a: argparse.Namespace) -> int:
    from inspector.cli import classify

    if classify.is_classify_data(a.data):
        return classify.cmd_build(a)
    from inspector.training.card import build_bundle_cli

    return build_bundle_cli(a)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="write a synthetic YOLO dataset (the synthetic line as a dataset)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, required=True, help="number of frames (parts) to render")
    s.add_argument("--seed", type=int, required=True, help="generator seed (each seed is a different set of parts)")
    s.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="write the frames as this split of a canonical dataset (OUT/images/<split>, "
                        "OUT/labels/<split>, OUT/data.yaml, OUT/dataset.json); default: a flat folder "
                        "(OUT/images, OUT/labels) as calibration images")
    s.add_argument("--workers", type=int, default=2, help="rendering processes")
    s.add_argument("--task", choices=("detect", "classify"), default="detect",
                   help="classify: image-level labels, the frames sorted into OUT/ok and OUT/ng (NG = the part "
                        "carries any defect), for `dataset import --from folders`")
    s.add_argument("--optics", choices=("none", "random"), default="none",
                   help="random: each frame through a random camera state (white balance, exposure, contrast, "
                        "gamma, blur, noise, JPEG...; 25 %% stay clean; labels unchanged): issue 14's training mix")
    s.set_defaults(fn=cmd_synth)

    d = sub.add_parser("dataset", help="import a labelled dataset, or check one (train extra not needed)")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    s = dsub.add_parser("import", help="convert a labelling-tool export into one canonical YOLO dataset")
    s.add_argument("src", help="the export: a folder (VOC XML + images; COCO JSON + images; Label Studio JSON + "
                               "images; CVAT annotations.xml + images; YOLO images/ + labels/) or the annotation file")
    s.add_argument("--from", dest="source_format", choices=(*FORMATS, "folders", "csv"), required=True,
                   help="the export's format; folders (SRC/<class>/<image>) and csv (path,label[,split] rows) "
                        "carry image-level labels and make a classification dataset")
    s.add_argument("--task", choices=("detect", "classify"), default=None,
                   help="detect (boxes: a YOLO dataset) or classify (image-level labels: split/class/image); "
                        "default: classify for folders and csv, detect otherwise. labelstudio reads `choices` "
                        "and cvat reads <tag> with --task classify")
    s.add_argument("--good", default=None,
                   help="classify: the pass class (OK parts; every other class rejects); default: a class named "
                        "ok or good")
    s.add_argument("--out", required=True, help="dataset folder to write (replaced whole, never half-written)")
    s.add_argument("--classes", default=None,
                   help="comma-separated class names, in model order; boxes of any other class are bad input "
                        "(default: the export's own list, else the names found, sorted)")
    s.add_argument("--split-file", default=None,
                   help="fixed split: a folder (or a file in it) with train.txt and val.txt [test.txt] listing "
                        "image stems or names one per line, or one file of '<image> <train|val|test>' lines")
    s.add_argument("--val-fraction", type=float, default=0.2,
                   help="without --split-file: share of images (of groups, with --group-by) put in val")
    s.add_argument("--test-fraction", type=float, default=0.0, help="without --split-file: share put in test")
    s.add_argument("--seed", type=int, default=0, help="seed of the random split")
    s.add_argument("--group-by", default=None,
                   help="regex over each image's path in the export; its first capture group (or the match) "
                        "is the group key (part id, date): one group never spans two splits, "
                        r"e.g. '^(\d{8})/' for date folders or 'part(\d+)_' for part ids")
    s.add_argument("--skip-bad", action="store_true",
                   help="exit 0 even when files were skipped as bad input (they are still listed)")
    s.set_defaults(fn=cmd_dataset_import)

    s = dsub.add_parser("check", help="report what would break training silently; exit 2 on any finding")
    s.add_argument("dir", help="dataset folder (with data.yaml) or the data.yaml")
    s.add_argument("--imgsz", type=int, default=320, help="model input size the box sizes are reported against")
    s.add_argument("--near-dup-bits", type=int, default=10,
                   help="64-bit dHash distance at or under which a train and a val image count as near-duplicates")
    s.add_argument("--json", default=None, help="also write the report as JSON here")
    s.set_defaults(fn=cmd_dataset_check)

    from inspector.cli.review import register_merge  # the retraining loop's `dataset merge` (docs/retraining.md)

    register_merge(dsub)

    s = sub.add_parser("train", help="train a YOLO detector on a dataset, checkpointing every epoch (train extra)")
    s.add_argument("--data", default=None,
                   help="data.yaml of the dataset (from `inspector dataset import` or `inspector synth --split`); "
                        "default: render the synthetic line (--n-train/--n-val/--train-seed/--val-seed)")
    s.add_argument("--out", default="build/train", help="run folder: run/ (checkpoints), best.pt, fp32/model.xml")
    s.add_argument("--resume", action="store_true",
                   help="continue the stopped run in --out from its last epoch (run/weights/last.pt) with its "
                        "own settings; other options are ignored")
    s.add_argument("--init", default=None,
                   help="start from these ultralytics .pt weights (yours, or COCO-pretrained ones you downloaded); "
                        "default: from scratch (--arch)")
    s.add_argument("--task", choices=("detect", "classify"), default="detect",
                   help="detect (a YOLO detector on a box dataset) or classify (an image classifier on a "
                        "classification dataset from `dataset import --from folders|csv`)")
    s.add_argument("--arch", default="yolov8n.yaml",
                   help="ultralytics model yaml used from scratch (classify: yolov8n-cls.yaml unless a *-cls.yaml "
                        "is given)")
    s.add_argument("--imgsz", type=int, default=320, help="model input size (px, square)")
    s.add_argument("--epochs", type=int, default=30, help="epochs to train")
    s.add_argument("--batch", type=int, default=16, help="images per batch")
    s.add_argument("--time-budget", type=float, default=None,
                   help="hours: stop within this time (ultralytics fits the epochs and schedule to it)")
    s.add_argument("--augment", choices=("fixed-camera", "line-optics", "texture", "ultralytics"),
                   default="fixed-camera",
                   help="augmentation preset: fixed-camera (flips, small scale/shift, no mosaic: parts at a "
                        "fixed distance), texture (flips, mosaic, scale 0.5, brightness: surface crops such as "
                        "NEU-DET), line-optics (fixed-camera + colour jitter, for data rendered with "
                        "`synth --optics random`), ultralytics (its defaults)")
    s.add_argument("--lr0", type=float, default=None,
                   help="initial learning rate; given, or with --init (default then 0.002), training uses SGD at it. "
                        "Without either, ultralytics chooses (AdamW at its own rate for short runs)")
    s.add_argument("--patience", type=int, default=100, help="stop after this many epochs without improvement")
    s.add_argument("--workers", type=int, default=2, help="data loader processes")
    s.add_argument("--cache", choices=("ram", "disk", "none"), default="ram", help="decoded-image cache")
    s.add_argument("--seed", type=int, default=0, help="training seed (deterministic)")
    s.add_argument("--n-train", type=int, default=1500, help="synthetic line only: training frames")
    s.add_argument("--n-val", type=int, default=200, help="synthetic line only: validation frames")
    s.add_argument("--train-seed", type=int, default=1001, help="synthetic line only: training seed")
    s.add_argument("--val-seed", type=int, default=2002, help="synthetic line only: validation seed")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("quantize", help="INT8 OpenVINO IR with NNCF (train extra)")
    s.add_argument("--model", required=True, help=".pt, .onnx or OpenVINO .xml")
    s.add_argument("--data", default=None, help="data.yaml: calibrate on its train split (the default source)")
    s.add_argument("--calibration", default=None, help="folder of calibration images (instead of --data's train split)")
    s.add_argument("--out", required=True, help="output .xml path")
    s.add_argument("--imgsz", type=int, default=320, help="input size when exporting a .pt")
    s.add_argument("--subset-size", type=int, default=300, help="calibration images used (at most)")
    s.add_argument("--max-drop", type=float, default=None,
                   help="accuracy control: max mAP50-95 drop, absolute (0.01 = 1 point; measured on --val-data "
                        "or --data)")
    s.add_argument("--val-data", default=None,
                   help="data.yaml whose val split measures the drop for --max-drop (default: --data)")
    s.add_argument("--head-float", choices=("none", "last", "all"), default="last",
                   help="YOLO head convs kept in float beside the box decoding: none, the 1x1 output convs "
                        "(default) or all of cv2/cv3")
    s.add_argument("--full-bias-correction", action="store_true",
                   help="NNCF's full bias correction instead of the fast one (slower to quantize)")
    s.add_argument("--preset", choices=("mixed", "performance"), default="mixed",
                   help="activations asymmetric (mixed, default) or symmetric (performance)")
    s.add_argument("--overflow-fix", choices=("first_layer", "enable", "disable"), default="first_layer",
                   help="7-bit weights against int16 saturation on CPUs without VNNI (AVX2): first layer only "
                        "(NNCF's default), every layer, or none")
    s.add_argument("--max-float-groups", type=int, default=None,
                   help="with --max-drop: revert at most this many layer groups to float (most sensitive first), "
                        "even if the drop stays over --max-drop")
    s.add_argument("--ranking-subset", type=int, default=None,
                   help="with --max-drop: validation images NNCF ranks layer sensitivity on (default: its own)")
    s.add_argument("--keep-float", action="append", metavar="NAME_PREFIX",
                   help="also keep the ops whose name starts so in float (repeat; e.g. the layers an accuracy-"
                        "control run reverted first)")
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser("eval", help="mAP and per-class precision/recall of a model bundle")
    s.add_argument("--model", default="models/demo", help="bundle folder (or one .xml)")
    s.add_argument("--data", default=None, help="data.yaml; default: a held-out synthetic set (--n, --seed)")
    s.add_argument("--split", default=None, help="split of --data to evaluate (default: test if present, else val)")
    s.add_argument("--n", type=int, default=500, help="synthetic set size (without --data)")
    s.add_argument("--seed", type=int, default=4004, help="synthetic set seed (without --data)")
    s.add_argument("--json", default=None, help="also write the results as JSON here")
    s.add_argument("--compare", action="store_true", help="FP32 vs INT8 side by side (with --perturb: the FP32 IR)")
    s.add_argument("--perturb", default=None,
                   help="evaluate on altered copies of the set: 'issue' (issue 14's table), 'all', or "
                        "FAMILY[,FAMILY] among none, darker, brighter, low_contrast, white_balance, gamma, jpeg, "
                        "blur, defocus, noise, vignetting, geometry (labels kept, or moved with the pixels)")
    s.add_argument("--magnitude", choices=("default", "strong"), default="default",
                   help="with --perturb: default (issue 14's magnitudes) or strong (beyond them)")
    s.set_defaults(fn=cmd_eval)


def register_model_build(msub: argparse._SubParsersAction) -> None:
    """`inspector model build`: the bundle builder, a sub-command of the model group (cli/model.py)."""
    s = msub.add_parser("build", help="assemble a model bundle: thresholds, metrics, model card (train extra)")
    s.add_argument("--fp32", required=True, help="FP32 IR (.xml) from `inspector train` (its train_info.json is read)")
    s.add_argument("--int8", required=True, help="INT8 IR (.xml) from `inspector quantize`")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--data", default=None,
                   help="data.yaml: thresholds calibrated on its val split, metrics on its test split if present "
                        "(else val); default: synthetic splits (--val-seed/--test-seed)")
    s.add_argument("--name", default="demo", help="model name in the card")
    s.add_argument("--version", default="1.0.0", help="model version in the card")
    s.add_argument("--calibration", default=None,
                   help="the quantization calibration images, hashed into the card (default: --data's train split)")
    s.add_argument("--val-seed", type=int, default=2002, help="synthetic only: threshold-calibration seed")
    s.add_argument("--n-val", type=int, default=400, help="synthetic only: threshold-calibration frames")
    s.add_argument("--test-seed", type=int, default=4004, help="synthetic only: held-out test seed")
    s.add_argument("--n-test", type=int, default=500, help="synthetic only: held-out test frames")
    s.add_argument("--target-recall", type=float, default=0.99, help="per-class defect recall the thresholds keep")
    s.add_argument("--command", default="make model", help="the command that rebuilds it, for the card")
    s.add_argument("--calibrate-under", default=None,
                   help="issue 14: thresholds calibrated on the calibration split plus its copies altered by these "
                        "optics families ('issue' or FAMILY[,FAMILY]): recall holds where the model is declared to")
    s.add_argument("--perturbed-eval", default=None,
                   help="issue 14: per-family metrics of the INT8 model on altered copies of the held-out split, "
                        "in the card's evaluation.perturbed ('issue', 'all' or none,FAMILY[,FAMILY])")
    s.add_argument("--envelope-families", default=None,
                   help="issue 14: write the drift guard's input_envelope (calibration images + copies altered by "
                        "these families): 'held' (those --perturbed-eval passes: mAP50 >= 0.90, escapes <= 1 %%, "
                        "false rejects <= 5 %%), 'issue', FAMILY[,FAMILY] or none (default: no envelope)")
    s.set_defaults(fn=cmd_model)

    s = msub.add_parser("envelope", help="write the drift guard's input envelope into a bundle's card (issue 14)")
    s.add_argument("dir", help="bundle folder")
    s.add_argument("--data", default=None, help="reference images: a folder or a data.yaml (its images/); default: "
                                                "the synthetic line (--n, --seed: the threshold-calibration split)")
    s.add_argument("--n", type=int, default=400, help="synthetic reference frames")
    s.add_argument("--seed", type=int, default=2002, help="synthetic seed (and the seed of the altered copies)")
    s.add_argument("--families", default="held",
                   help="optics families whose altered copies belong in the envelope: 'held' (those the card's "
                        "per-family metrics pass), 'issue', or FAMILY[,FAMILY]")
    s.add_argument("--roi", default=None, help="x0,y0,x1,y1: the inspected region (default: the whole frame)")
    s.add_argument("--no-confidence", action="store_true", help="no confidence reference (no PSI check)")
    s.set_defaults(fn=cmd_model_envelope)
