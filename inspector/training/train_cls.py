"""`inspector train --task classify`: an Ultralytics image classifier on a classification dataset, exported
to an FP32 IR (softmax probabilities, one per class, in the dataset's sorted class order).

As the detector (train.py): from scratch (`--arch yolov8n-cls.yaml`, nothing downloaded) or from weights the
user supplies (`--init`, any ultralytics classification .pt); OUT/run/weights/last.pt after every epoch,
`--resume` continues it with the run's own settings (OUT/train_plan.json); one progress line per epoch and
OUT/progress.json; OUT/best.pt, OUT/fp32/model.xml, OUT/train_info.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from inspector.training import offline
from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.train import (
    TrainError,
    TrainPlan,
    _finished,
    _read_json,
    export_ir,
    optimizer_args,
    run_dir,
)

DEFAULT_ARCH = "yolov8n-cls.yaml"
# Augmentation presets for whole-image labels. A defect is often a few pixels of the image: anything that can
# cut it out of the crop or paint over it turns an NG image into an NG label on an OK-looking input.
AUGMENT = {
    # parts or cells at a fixed distance (the synthetic line, ELPV's aligned cells): flips and 90-degree-free
    # geometry, a crop of at least 90 % of the area (Ultralytics' default 50 % can crop a crack off), brightness
    # jitter only; no random erasing (default 0.4: it erases defects) and no RandAugment (shear, posterize).
    "fixed-camera": dict(fliplr=0.5, flipud=0.5, scale=0.1, erasing=0.0, auto_augment=None,
                         hsv_h=0.0, hsv_s=0.0, hsv_v=0.3),
    # Ultralytics' classification defaults (natural images): RandAugment, erasing 0.4, crops down to 50 %.
    "ultralytics": dict(),
}


def train_classify(plan: TrainPlan, resume: bool = False) -> Path:
    """Trains (or resumes) and exports; returns the FP32 IR path."""
    out = plan.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    offline.prepare(out)
    last = run_dir(out) / "weights" / "last.pt"
    if resume and not last.exists():
        raise TrainError(f"--resume: no checkpoint {last} (start the run without --resume first)")
    if not resume and last.exists():
        raise TrainError(f"{out} already holds a run ({last}): continue it with --resume, or choose another --out")
    if plan.data is None:
        raise TrainError("--task classify needs --data (a classification dataset's data.yaml from "
                         "`inspector dataset import --from folders|csv`)")
    if plan.augment not in AUGMENT:
        raise TrainError(f"--augment {plan.augment!r}: a classifier takes one of {sorted(AUGMENT)}")
    try:
        ds = load_cls_dataset(plan.data)
    except ClsImportError as e:
        raise TrainError(str(e)) from e
    if "val" not in ds.splits:
        raise TrainError(f"{plan.data}: no val split (the epoch's accuracy and best.pt are measured on it)")
    arch = plan.arch if plan.arch.endswith("-cls.yaml") else DEFAULT_ARCH  # with a classifier --init: its own
    if not resume:
        (out / "train_plan.json").write_text(json.dumps({
            **asdict(plan), "arch": arch, "out": str(out), "data": str(Path(plan.data).resolve()),
            "init": str(plan.init) if plan.init else None}, indent=2))

    from ultralytics import YOLO  # train extra only
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = max(1, os.cpu_count() or 1)  # as train.py: all cores, not cores - 1
    t0 = time.monotonic()
    if resume and _finished(last):
        print(f"{last}: the run already finished all its epochs; exporting its best.pt")
    elif resume:
        model = YOLO(str(last))
        model.add_callback("on_fit_epoch_end", _progress_callback(out))
        model.train(resume=True, workers=plan.workers)
    else:
        if plan.init is not None and not Path(plan.init).exists():
            raise TrainError(f"--init {plan.init} does not exist")
        model = YOLO(str(plan.init) if plan.init else arch, task="classify")
        if model.task == "detect":
            # A detector's backbone (our own, e.g. models/demo/model.pt) initialises the classifier's: the YOLOv8
            # classifier's layers 0-8 are the detector's backbone, matched by name and shape; the head starts
            # fresh. Measured on the synthetic line: from scratch, 2 epochs of 450 frames at 160 px stayed at the
            # majority class (val 0.639); see the Makefile's model-cls for the backbone-initialised recipe.
            detector = model
            model = YOLO(arch, task="classify").load(str(plan.init))
            print(f"--init {plan.init}: a detector; its backbone initialises the classifier "
                  f"({_shared_tensors(detector.model, model.model)} tensors taken over)")
        elif model.task != "classify":
            raise TrainError(f"--init {plan.init} is a {model.task} model, neither a classifier nor a detector")
        model.add_callback("on_fit_epoch_end", _progress_callback(out))
        extra = {"time": plan.time_budget_h} if plan.time_budget_h else {}
        model.train(
            data=str(ds.root), imgsz=plan.imgsz, epochs=plan.epochs, batch=plan.batch, workers=plan.workers,
            device="cpu", **optimizer_args(plan), pretrained=plan.init is not None,
            warmup_epochs=0.0 if plan.init else 3.0, amp=False, cache=plan.cache or False, project=str(out),
            name="run", exist_ok=True, seed=plan.seed, deterministic=True, plots=False, patience=plan.patience,
            verbose=True, **AUGMENT[plan.augment], **extra,
        )
    train_s = time.monotonic() - t0
    best = run_dir(out) / "weights" / "best.pt"
    shutil.copyfile(best, out / "best.pt")
    xml = export_ir(out / "best.pt", out / "fp32", plan.imgsz)
    progress = _read_json(out / "progress.json")
    prev = _read_json(out / "train_info.json")
    identity = _read_json(ds.root / "dataset.json")
    (out / "train_info.json").write_text(json.dumps({
        "task": "classify", "arch": arch, "imgsz": plan.imgsz, "epochs": plan.epochs, "batch": plan.batch,
        "data": str(ds.root / "data.yaml"), "augment": plan.augment,
        "dataset": {"data_yaml": str(ds.root / "data.yaml"),
                    "content_sha256": identity.get("sha256", {}).get("content"), "classes": ds.classes,
                    "pass_class": ds.pass_class, "counts": identity.get("counts"), "source": identity.get("source"),
                    "split_rule": identity.get("split_rule"), "image_channels": identity.get("image_channels")},
        "classes": ds.classes, "pass_class": ds.pass_class,
        "train_seconds": round(train_s + (prev.get("train_seconds", 0) if resume else 0), 1),
        "resumed": resume or prev.get("resumed", False), "init": str(plan.init) if plan.init else None,
        **optimizer_args(plan), "time_budget_h": plan.time_budget_h, "torch_threads": os.cpu_count(),
        "last_epoch": progress.get("epoch"), "best_val": progress.get("best"),
    }, indent=2))
    return xml


def _progress_callback(out: Path):
    """One line per epoch (train loss, val loss, val top-1 accuracy, ETA) and OUT/progress.json."""
    t_start = time.monotonic()
    first: dict = {}

    def on_fit_epoch_end(trainer) -> None:
        epoch, total = trainer.epoch + 1, trainer.epochs
        if epoch > total:
            return
        first.setdefault("epoch", trainer.epoch)
        per_epoch = (time.monotonic() - t_start) / max(1, epoch - first["epoch"])
        m = trainer.metrics or {}
        tloss = trainer.tloss  # ultralytics 8.4: {name: mean loss over the epoch}; older: a tensor
        tloss = sum(float(v) for v in tloss.values()) if isinstance(tloss, dict) else tloss
        row = {"epoch": epoch, "epochs": total, "accuracy": round(float(m.get("metrics/accuracy_top1", 0)), 4),
               "val_loss": round(float(m.get("val/loss", 0)), 4),
               "train_loss": round(float(tloss.sum() if hasattr(tloss, "sum") else tloss or 0), 4),
               "seconds_per_epoch": round(per_epoch, 1), "eta_s": round(per_epoch * (total - epoch)),
               "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        prev = _read_json(out / "progress.json")
        best = prev.get("best") or {}
        if row["accuracy"] >= best.get("accuracy", -1):
            best = {k: row[k] for k in ("epoch", "accuracy", "val_loss")}
        history = [h for h in prev.get("history", []) if h["epoch"] < epoch] + [row]
        (out / "progress.json").write_text(json.dumps({**row, "best": best, "history": history}, indent=1))
        print(f"[inspector train] epoch {epoch}/{total}  val accuracy {row['accuracy']:.3f}  val loss "
              f"{row['val_loss']:.4f}  train loss {row['train_loss']:.4f}  {per_epoch / 60:.1f} min/epoch  "
              f"ETA {row['eta_s'] / 3600:.1f} h  (best accuracy {best['accuracy']:.3f} @ {best['epoch']})", flush=True)

    return on_fit_epoch_end


def _shared_tensors(src, dst) -> int:
    """How many of dst's tensors took src's values (same name and shape)."""
    a, b = src.state_dict(), dst.state_dict()
    return sum(1 for k, v in b.items() if k in a and a[k].shape == v.shape)
