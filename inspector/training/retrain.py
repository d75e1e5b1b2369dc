"""`inspector retrain --from models/NAME --data DIR --out models/NAME-candidate`: a candidate bundle.

The same chain as the parent was built with, started from the parent's own float weights:
    fine-tune (`inspector train --init <parent model.pt>`: the parent's input size and augmentation,
    a lower learning rate, no warm-up) -> quantize (calibrated on the dataset's train split, with the
    parent's accuracy control unless --max-drop says otherwise) -> `inspector model --data` (thresholds
    calibrated on val at the parent's target recall, metrics on the test split = the regression set)
    -> the card gains `parent` (name, version, card sha256, thresholds) and `retrain` (what was run).
The bundle is assembled in a temporary folder and renamed: OUT is the complete candidate or absent.

The parent's float weights: `card.float_weights` (model.pt, sha256-checked), written by `inspector model`
since the retraining loop (models/demo 1.2.x ships one); bundles made before (demo 1.1.0) have none, and
--weights names the .pt they were trained from.

One chain for every model kind; what differs by the parent card's task (how the dataset is checked against
the parent's classes, the default architecture, the accuracy control's metric, the quantizer and the bundle
builder) is a RetrainTask: BOXES for detectors (YOLO data.yaml; max mAP50-95 drop; thresholds at recall 0.99
by default), CLASSES for classifiers (split/class/image from `dataset merge`; max top-1 drop; NG recall 0.95).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inspector.bundle.card import ModelCard
from inspector.errors import InspectorError
from inspector.kernel.atomic_dir import replace_dir


class RetrainError(InspectorError):
    exit_code = 2


@dataclass(frozen=True)
class RetrainPlan:
    parent: Path
    data: Path
    out: Path
    epochs: int = 10
    lr0: float = 0.002
    batch: int = 16
    work: Path | None = None
    weights: Path | None = None
    max_drop: float | None = None
    version: str | None = None
    resume: bool = False
    subset_size: int = 300
    workers: int = 2
    cache: str | None = "ram"


def parent_weights(parent: Path, card: ModelCard, override: Path | None) -> tuple[Path, str]:
    from inspector.bundle.hashing import sha256_file

    if override is not None:
        if not override.is_file():
            raise RetrainError(f"--weights {override} does not exist")
        return override, sha256_file(override)
    fw = card.float_weights
    if fw is None:
        raise RetrainError(
            f"{parent} holds no float weights (its card has no float_weights: bundles built before `inspector model` "
            "kept model.pt, such as models/demo 1.1.0, have none). Pass --weights with the .pt it was "
            "trained from (`make model` leaves build/train/best.pt), or rebuild the bundle with `make model`")
    pt = parent / fw.file
    if not pt.is_file():
        raise RetrainError(f"{pt}: missing (named in {parent}/model_card.json float_weights)")
    got = sha256_file(pt)
    if got != fw.sha256:
        raise RetrainError(f"{pt}: sha256 {got[:16]}…, the card says {fw.sha256[:16]}… "
                           "(replaced or corrupt)")
    return pt, got


@dataclass(frozen=True)
class RetrainTask:
    """A model kind's part of the retraining chain."""
    dataset: Callable[[RetrainPlan, Path, ModelCard], Path]  # its data.yaml, checked against the parent's classes
    arch: str  # when the parent's card names none
    max_drop_key: str  # the parent's accuracy control's metric (card quantization.accuracy_control)
    target_recall: float  # when the parent's card names none
    quantize: Callable[[Path, Path, Path, RetrainPlan, ModelCard, int, float | None], tuple[Path, Path | None]]
    build: Callable[..., dict]  # build_bundle's keywords: name, version, calibration, target_recall, data, ...
    what: str = ""  # the log's name for the parent's kind


def _boxes_dataset(plan: RetrainPlan, parent: Path, card: ModelCard) -> Path:
    from inspector.training.train import dataset_classes

    data = Path(plan.data)
    data = data / "data.yaml" if data.is_dir() else data
    if not data.is_file():
        raise RetrainError(f"--data {plan.data}: no data.yaml")
    want = dataset_classes(data)
    if want != card.classes:
        raise RetrainError(f"the dataset {data} has classes {want}, the parent {parent} has {card.classes}: a "
                           "candidate keeps its parent's classes (train a new model for new classes)")
    return data


def _boxes_quantize(fp32: Path, data: Path, out: Path, plan: RetrainPlan, card: ModelCard, imgsz: int,
                    max_drop: float | None) -> tuple[Path, Path | None]:
    from inspector.training.quantize import calibration_folder, quantize

    quant = card.quantization or {}
    calibration = calibration_folder(None, str(data))
    return quantize(fp32, calibration, out, imgsz=imgsz, max_drop=max_drop,
                    val_data=data if max_drop is not None else None, subset_size=plan.subset_size,
                    head_convs_float=quant.get("head_convs_float", "last"),
                    fast_bias_correction=quant.get("fast_bias_correction", True),
                    preset=quant.get("preset", "mixed"), overflow_fix=quant.get("overflow_fix", "first_layer"),
                    keep_float=tuple(quant.get("keep_float") or ()),
                    max_float_groups=((quant.get("accuracy_control") or {}).get("max_float_groups")
                                      if max_drop is not None else None)), calibration


def _classes_dataset(plan: RetrainPlan, parent: Path, card: ModelCard) -> Path:
    from inspector.training.cls_dataset import ClsImportError, load_cls_dataset

    try:
        ds = load_cls_dataset(plan.data)
    except ClsImportError as e:
        raise RetrainError(f"--data {plan.data}: {e} (the parent {parent} is a classifier)") from e
    data = ds.root / "data.yaml"
    if ds.classes != list(card.classes) or ds.pass_class != card.pass_class:
        raise RetrainError(f"the dataset {data} has classes {ds.classes} (pass {ds.pass_class!r}), the parent {parent} "
                           f"has {list(card.classes)} (pass {card.pass_class!r}): a candidate keeps its parent's "
                           "classes (train a new model for new classes)")
    return data


def _classes_quantize(fp32: Path, data: Path, out: Path, plan: RetrainPlan, card: ModelCard, imgsz: int,
                      max_drop: float | None) -> tuple[Path, Path | None]:
    from inspector.training.quantize_classify import quantize_classify

    return quantize_classify(fp32, data, out, imgsz=imgsz, max_drop=max_drop, subset_size=plan.subset_size,
                             preset=(card.quantization or {}).get("preset", "mixed")), None


def _build_boxes(*args, **kw) -> dict:
    from inspector.training.card import build_bundle

    return build_bundle(*args, **kw)


def _build_classes(*args, **kw) -> dict:
    from inspector.training.card_classify import build_classify_bundle

    return build_classify_bundle(*args, **kw)


BOXES = RetrainTask(_boxes_dataset, "yolov8n.yaml", "max_drop_mAP50-95", 0.99, _boxes_quantize, _build_boxes)
CLASSES = RetrainTask(_classes_dataset, "yolov8n-cls.yaml", "max_drop_top1_accuracy", 0.95, _classes_quantize,
                      _build_classes, what="the classifier ")
TASKS = {"detect": BOXES, "classify": CLASSES}  # by the parent card's task


def retrain(plan: RetrainPlan, log=print) -> Path:
    from inspector.bundle.card import read_card, write_card
    from inspector.bundle.load import load_bundle
    from inspector.errors import ModelError
    from inspector.training.train import TrainPlan, train

    parent = Path(plan.parent)
    try:
        card, _, card_bytes = read_card(parent)  # the card schema: a parent the line would refuse is refused here
    except ModelError as e:
        raise RetrainError(f"--from {parent}: not a valid model bundle ({e})") from e
    task = TASKS[card.task]
    data = task.dataset(plan, parent, card)
    weights, weights_sha = parent_weights(parent, card, plan.weights)
    out = Path(plan.out).resolve()
    if out == parent.resolve():
        raise RetrainError(f"--out {out} is the parent: a candidate never overwrites the bundle in service")
    work = Path(plan.work) if plan.work else Path("build/retrain") / out.name
    training = card.training or {}
    imgsz = int(card.input_size[0])
    max_drop = plan.max_drop if plan.max_drop is not None else \
        (((card.quantization or {}).get("accuracy_control") or {}).get(task.max_drop_key))
    target_recall = float((card.threshold_calibration or {}).get("target_recall", task.target_recall))
    version = plan.version or f"{card.version}-rc.{dt.datetime.now(dt.UTC):%Y%m%d%H%M}"
    times = {}

    t0 = time.monotonic()
    log(f"[retrain] fine-tuning {task.what}{parent} ({card.name} {card.version}) from {weights} on {data}: "
        f"{plan.epochs} epochs at {imgsz} px, lr0 {plan.lr0}")
    fp32 = train(TrainPlan(out=work, data=data, arch=training.get("arch", task.arch), imgsz=imgsz,
                           epochs=plan.epochs, batch=plan.batch, workers=plan.workers, init=weights, lr0=plan.lr0,
                           augment=training.get("augment", "fixed-camera"), cache=plan.cache, task=card.task),
                 resume=plan.resume)
    times["train_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    int8, calibration = task.quantize(fp32, data, work / "int8" / "model.xml", plan, card, imgsz, max_drop)
    times["quantize_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    info_path = Path(fp32).parent.parent / "train_info.json"  # train()'s OUT: OUT/fp32/model.xml
    train_info = json.loads(info_path.read_text()) if info_path.exists() else {}
    try:
        task.build(fp32, int8, tmp, name=card.name, version=version, calibration=calibration,
                   target_recall=target_recall, data=data, train_info=train_info,
                   command=f"inspector retrain --from {parent} --data {plan.data} --out {plan.out} "
                           f"--epochs {plan.epochs} --lr0 {plan.lr0}")
        times["bundle_s"] = round(time.monotonic() - t0, 1)
        _, new, _ = read_card(tmp)  # the card the builder wrote (checked), as JSON to add the lineage to
        new["parent"] = {"name": card.name, "version": card.version, "path": str(parent.resolve()),
                         "card_sha256": hashlib.sha256(card_bytes).hexdigest(),
                         "int8_bin_sha256": card.files["int8"].bin_sha256, "thresholds": dict(card.thresholds)}
        new["retrain"] = {"from_weights": str(weights), "from_weights_sha256": weights_sha, "epochs": plan.epochs,
                          "lr0": plan.lr0, "max_drop": max_drop, "dataset": str(data.resolve()),
                          "dataset_version": _dataset_version(data), "seconds": times}
        write_card(tmp, new)
        load_bundle(tmp, "int8")
        out.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[retrain] wrote {out}: {card.name} {version} (parent {card.version}); train {times['train_s']} s, "
        f"quantize {times['quantize_s']} s, bundle {times['bundle_s']} s; next: inspector compare {parent} {out} "
        f"--data {data.parent}")
    return out


def _dataset_version(data: Path) -> dict | None:
    p = data.parent / "dataset.json"
    if not p.exists():
        return None
    meta = json.loads(p.read_text())
    return {"number": (meta.get("version") or {}).get("number"),
            "content_sha256": meta.get("sha256", {}).get("content"),
            "regression_sha256": (meta.get("regression") or {}).get("sha256")}
