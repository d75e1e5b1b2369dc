"""Commands: the retraining loop (docs/retraining.md): review export (uploaded nights -> labelling-tool
tasks), dataset merge (a new dataset version), retrain (a candidate bundle), compare (old vs candidate).
`dataset import` of the reviewed export lives with the other importers (cli/training.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.cli.common import load_config_arg

TARGETS = ("labelstudio", "cvat", "yolo", "folders")  # = inspector.review.export.TARGETS


def cmd_review_export(a: argparse.Namespace) -> int:
    import datetime as dt
    import time

    from inspector.review.export import export_review, parse_date

    t0 = time.monotonic()
    since = parse_date(a.since, "--since")
    until = parse_date(a.until, "--until") if a.until else dt.datetime.now(dt.UTC).date()
    r = export_review(load_config_arg(a.config), since, until, a.to, Path(a.out), image_url_mode=a.image_url,
                      expires_s=a.expires, document_root=Path(a.document_root) if a.document_root else None,
                      publish=a.publish)
    print(f"wrote {r.out}: {r.samples} samples of {len(r.nights)} night(s) {', '.join(r.nights)} as {a.to} "
          f"[{time.monotonic() - t0:.1f} s]")
    if r.missing_nights:
        print(f"no manifest (nothing uploaded) for {len(r.missing_nights)} night(s): "
              f"{', '.join(r.missing_nights[:10])}{' ...' if len(r.missing_nights) > 10 else ''}")
    for u in r.published:
        print(f"published {u}")
    return 0


def cmd_dataset_merge(a: argparse.Namespace) -> int:
    from inspector.training.merge import MergeError, format_merge, layout_of, merge_datasets

    layout = layout_of(Path(a.base))  # YOLO images + labels, or a classifier's split/class/image
    try:
        summary = merge_datasets(Path(a.base), Path(a.new), Path(a.out), val_fraction=a.val_fraction,
                                 regression_fraction=a.regression_fraction, seed=a.seed, layout=layout)
    except MergeError as e:
        print(f"dataset merge: {e}", file=sys.stderr)
        return 2
    print(format_merge(summary, layout))
    print(f"wrote {a.out} (data.yaml, dataset.json, members.jsonl)")
    return 0


def register_merge(dsub: argparse._SubParsersAction) -> None:
    """`inspector dataset merge`, hung under the `dataset` command of cli/training.py."""
    s = dsub.add_parser("merge", help="a new dataset version: BASE plus NEW (reviewed frames), deduplicated, "
                                      "split by group, with a frozen regression set")
    s.add_argument("base", help="the current dataset (folder with data.yaml and dataset.json)")
    s.add_argument("new", help="the dataset to add (e.g. `dataset import` of a reviewed export)")
    s.add_argument("--out", required=True, help="the new version's folder (written to a temp dir and renamed)")
    s.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of NEW's groups (part ids) put in val; BASE's splits are kept")
    s.add_argument("--regression-fraction", type=float, default=0.1,
                   help="first version only (BASE has no test split): share of BASE's train groups frozen as the "
                        "regression set (the test split); later versions copy BASE's unchanged")
    s.add_argument("--seed", type=int, default=0, help="seed of the group hash that assigns splits")
    s.set_defaults(fn=cmd_dataset_merge)


def cmd_retrain(a: argparse.Namespace) -> int:
    from inspector.training.retrain import RetrainPlan, retrain

    plan = RetrainPlan(parent=Path(a.from_), data=Path(a.data), out=Path(a.out), epochs=a.epochs, lr0=a.lr0,
                       batch=a.batch, work=Path(a.work) if a.work else None,
                       weights=Path(a.weights) if a.weights else None,
                       max_drop=a.max_drop, version=a.version, resume=a.resume, subset_size=a.subset_size,
                       workers=a.workers)
    retrain(plan)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from inspector.training.compare import compare_cli

    return compare_cli(Path(a.old), Path(a.new), Path(a.data), html_out=a.html, json_out=a.json,
                       new_source=a.new_source, alpha=a.alpha)


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("review", help="the night's samples in a labelling tool (docs/retraining.md)")
    rsub = r.add_subparsers(dest="review_command", required=True)
    s = rsub.add_parser("export", help="uploaded samples of a date range -> Label Studio tasks / CVAT XML / YOLO "
                                       "labels, the model's boxes as pre-annotations (a classifier's: Label Studio "
                                       "choices / CVAT tags / one folder per class, its class pre-selected)")
    s.add_argument("out", help="review folder to write (images/, review.json and the tool's files)")
    s.add_argument("--config", required=True, help="the line's config: upload.destination and the model's classes")
    s.add_argument("--since", required=True, help="first capture date (YYYY-MM-DD, UTC), inclusive")
    s.add_argument("--until", default=None, help="last capture date, inclusive (default: today, UTC)")
    s.add_argument("--to", choices=TARGETS, required=True,
                   help="the labelling tool's format (detect: labelstudio, cvat, yolo; classify: labelstudio, cvat, "
                        "folders)")
    s.add_argument("--image-url", choices=("auto", "presigned", "local-files", "s3"), default="auto",
                   help="labelstudio: how tasks point at the uploaded frames: presigned S3 GET URLs, Label Studio "
                        "local-files URLs (file:// destination), or s3:// URIs for a Label Studio S3 storage "
                        "(default: presigned for s3://, local-files for file://)")
    s.add_argument("--expires", type=int, default=7 * 24 * 3600,
                   help="presigned URLs' lifetime in seconds (max 7 days)")
    s.add_argument("--document-root", default=None,
                   help="local-files: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the file:// "
                        "destination's folder)")
    s.add_argument("--publish", action="store_true",
                   help="also store the export's files under <destination>/reviews/<since>_<until>-<to>/")
    s.set_defaults(fn=cmd_review_export)

    s = sub.add_parser("retrain", help="fine-tune a bundle's float weights on a dataset version -> candidate bundle "
                                       "(train extra)")
    s.add_argument("--from", dest="from_", required=True, help="the bundle in service (models/NAME), the parent")
    s.add_argument("--data", required=True, help="dataset version folder (from `dataset merge`) or its data.yaml")
    s.add_argument("--out", required=True, help="candidate bundle folder (models/NAME-candidate)")
    s.add_argument("--weights", default=None,
                   help="the parent's float .pt when its bundle does not hold one (bundles made before model.pt "
                        "was kept); its sha256 is recorded in the card")
    s.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    s.add_argument("--lr0", type=float, default=0.002, help="initial learning rate (lower than from scratch)")
    s.add_argument("--batch", type=int, default=16, help="images per batch")
    s.add_argument("--max-drop", type=float, default=None,
                   help="INT8 accuracy control (max mAP50-95 drop; a classifier: max top-1 accuracy drop); "
                        "default: the parent's own setting")
    s.add_argument("--subset-size", type=int, default=300, help="quantization calibration images (at most)")
    s.add_argument("--version", default=None, help="candidate version (default: the parent's with '-rc.<date>')")
    s.add_argument("--work", default=None, help="training run folder (default: build/retrain/<out name>)")
    s.add_argument("--resume", action="store_true", help="continue a stopped fine-tuning run in --work")
    s.add_argument("--workers", type=int, default=2, help="data loader processes")
    s.set_defaults(fn=cmd_retrain)

    s = sub.add_parser("compare", help="old vs candidate bundle on the regression set and the newly reviewed frames")
    s.add_argument("old", help="the bundle in service")
    s.add_argument("new", help="the candidate bundle")
    s.add_argument("--data", required=True, help="dataset version (from `dataset merge`): its test split is the "
                                                 "regression set, its members.jsonl names the reviewed frames")
    s.add_argument("--new-source", default=None,
                   help="members.jsonl source whose held-out (val/test) frames are 'newly reviewed' "
                        "(default: the newest review source)")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level of the McNemar test")
    s.add_argument("--html", default=None, help="also write an HTML report with thumbnails of changed verdicts")
    s.add_argument("--json", default=None, help="also write the comparison as JSON")
    s.set_defaults(fn=cmd_compare)
