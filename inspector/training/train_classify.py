"""train.py's part for `inspector train --task classify`: an Ultralytics image classifier on a classification
dataset, exported to an FP32 IR (softmax probabilities, one per class, in the dataset's sorted class order).

As the detector (train.py runs both): from scratch (`--arch yolov8n-cls.yaml`, nothing downloaded) or from
weights the user supplies (`--init`, any ultralytics classification .pt, or a detector's: its backbone);
`--resume` continues with the run's own settings; the progress line and progress.json give the epoch's val
top-1 accuracy and losses.
"""

from __future__ import annotations

from pathlib import Path

from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
from inspector.training.train import Prepared, TrainError, TrainPlan, TrainTask, _read_json

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


def _check(plan: TrainPlan) -> None:
    if plan.data is None:
        raise TrainError("--task classify needs --data (a classification dataset's data.yaml from "
                         "`inspector dataset import --from folders|csv`)")
    if plan.augment not in AUGMENT:
        raise TrainError(f"--augment {plan.augment!r}: a classifier takes one of {sorted(AUGMENT)}")


def _prepare(plan: TrainPlan, out: Path) -> Prepared:
    try:
        ds = load_cls_dataset(plan.data)
    except ClsImportError as e:
        raise TrainError(str(e)) from e
    if "val" not in ds.splits:
        raise TrainError(f"{plan.data}: no val split (the epoch's accuracy and best.pt are measured on it)")
    arch = plan.arch if plan.arch.endswith("-cls.yaml") else DEFAULT_ARCH  # with a classifier --init: its own
    identity = _read_json(ds.root / "dataset.json")
    return Prepared(str(ds.root), str(Path(plan.data).resolve()), arch, {
        "data": str(ds.root / "data.yaml"), "augment": plan.augment,
        "dataset": {"data_yaml": str(ds.root / "data.yaml"),
                    "content_sha256": identity.get("sha256", {}).get("content"), "classes": ds.classes,
                    "pass_class": ds.pass_class, "counts": identity.get("counts"), "source": identity.get("source"),
                    "split_rule": identity.get("split_rule"), "image_channels": identity.get("image_channels")},
        "classes": ds.classes, "pass_class": ds.pass_class}, head={"task": "classify"})


def _new_model(plan: TrainPlan, arch: str):
    from ultralytics import YOLO

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
    return model


def _metrics(trainer) -> dict:
    m = trainer.metrics or {}
    tloss = trainer.tloss  # ultralytics 8.4: {name: mean loss over the epoch}; older: a tensor
    tloss = sum(float(v) for v in tloss.values()) if isinstance(tloss, dict) else tloss
    return {"accuracy": round(float(m.get("metrics/accuracy_top1", 0)), 4),
            "val_loss": round(float(m.get("val/loss", 0)), 4),
            "train_loss": round(float(tloss.sum() if hasattr(tloss, "sum") else tloss or 0), 4)}


def _shared_tensors(src, dst) -> int:
    """How many of dst's tensors took src's values (same name and shape)."""
    a, b = src.state_dict(), dst.state_dict()
    return sum(1 for k, v in b.items() if k in a and a[k].shape == v.shape)


CLASSIFY = TrainTask(
    check=_check, prepare=_prepare, new_model=_new_model, augment=AUGMENT, metrics=_metrics, best_by="accuracy",
    best_keys=("epoch", "accuracy", "val_loss"),
    text=lambda r: (f"val accuracy {r['accuracy']:.3f}  val loss {r['val_loss']:.4f}  train loss "
                    f"{r['train_loss']:.4f}"))
