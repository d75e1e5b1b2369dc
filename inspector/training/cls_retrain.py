"""`inspector retrain` of a classifier bundle (card `task: classify`): retrain.py's chain on image-level labels.

Fine-tune from the parent's float weights (`train --task classify --init <parent model.pt>`: the parent's
input size, architecture and augmentation, a lower learning rate) on the dataset version (split/class/image,
from `dataset merge`) -> INT8 with the parent's accuracy control (max top-1 drop on val, unless --max-drop says
otherwise) -> `model build` (thresholds calibrated on val at the parent's target NG recall, FP32 and INT8
metrics on the test split = the regression set) -> the card gains `parent` and `retrain` as retrain.py's.
The bundle is assembled in a temporary folder and renamed: OUT is the complete candidate or absent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from inspector.bundle.card import ModelCard
from inspector.kernel.atomic_dir import replace_dir
from inspector.training.retrain import RetrainError, RetrainPlan, _dataset_version, parent_weights


def retrain_classify(plan: RetrainPlan, parent: Path, card: ModelCard, card_bytes: bytes, log=print) -> Path:
    from inspector.bundle.card import read_card, write_card
    from inspector.bundle.load import load_bundle
    from inspector.training.cls_bundle import build_classify_bundle
    from inspector.training.cls_dataset import ClsImportError, load_cls_dataset
    from inspector.training.cls_quantize import quantize_classify
    from inspector.training.train import TrainPlan, train

    try:
        ds = load_cls_dataset(plan.data)
    except ClsImportError as e:
        raise RetrainError(f"--data {plan.data}: {e} (the parent {parent} is a classifier)") from e
    data = ds.root / "data.yaml"
    if ds.classes != list(card.classes) or ds.pass_class != card.pass_class:
        raise RetrainError(f"the dataset {data} has classes {ds.classes} (pass {ds.pass_class!r}), the parent {parent} "
                           f"has {list(card.classes)} (pass {card.pass_class!r}): a candidate keeps its parent's "
                           "classes (train a new model for new classes)")
    weights, weights_sha = parent_weights(parent, card, plan.weights)
    out = Path(plan.out).resolve()
    if out == parent.resolve():
        raise RetrainError(f"--out {out} is the parent: a candidate never overwrites the bundle in service")
    work = Path(plan.work) if plan.work else Path("build/retrain") / out.name
    training = card.training or {}
    imgsz = int(card.input_size[0])
    control = (card.quantization or {}).get("accuracy_control") or {}
    max_drop = plan.max_drop if plan.max_drop is not None else control.get("max_drop_top1_accuracy")
    target_recall = float((card.threshold_calibration or {}).get("target_recall", 0.95))
    version = plan.version or f"{card.version}-rc.{dt.datetime.now(dt.UTC):%Y%m%d%H%M}"
    times = {}

    t0 = time.monotonic()
    log(f"[retrain] fine-tuning the classifier {parent} ({card.name} {card.version}) from {weights} on {data}: "
        f"{plan.epochs} epochs at {imgsz} px, lr0 {plan.lr0}")
    fp32 = train(TrainPlan(out=work, data=data, arch=training.get("arch", "yolov8n-cls.yaml"), imgsz=imgsz,
                           epochs=plan.epochs, batch=plan.batch, workers=plan.workers, init=weights, lr0=plan.lr0,
                           augment=training.get("augment", "fixed-camera"), cache=plan.cache, task="classify"),
                 resume=plan.resume)
    times["train_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    int8 = quantize_classify(fp32, data, work / "int8" / "model.xml", imgsz=imgsz, max_drop=max_drop,
                             subset_size=plan.subset_size, preset=(card.quantization or {}).get("preset", "mixed"))
    times["quantize_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    info_path = Path(fp32).parent.parent / "train_info.json"
    train_info = json.loads(info_path.read_text()) if info_path.exists() else {}
    try:
        build_classify_bundle(fp32, int8, tmp, data=data, name=card.name, version=version,
                              target_recall=target_recall, train_info=train_info,
                              command=f"inspector retrain --from {parent} --data {plan.data} --out {plan.out} "
                                      f"--epochs {plan.epochs} --lr0 {plan.lr0}")
        times["bundle_s"] = round(time.monotonic() - t0, 1)
        _, new, _ = read_card(tmp)
        new["parent"] = {"name": card.name, "version": card.version, "path": str(parent.resolve()),
                         "card_sha256": hashlib.sha256(card_bytes).hexdigest(),
                         "int8_bin_sha256": card.files["int8"].bin_sha256, "thresholds": dict(card.thresholds)}
        new["retrain"] = {"from_weights": str(weights), "from_weights_sha256": weights_sha, "epochs": plan.epochs,
                          "lr0": plan.lr0, "max_drop": max_drop, "dataset": str(data),
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
        f"--data {ds.root}")
    return out
