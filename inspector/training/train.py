"""`inspector train`: a YOLO detector trained on a dataset (data.yaml), exported to an FP32 IR.

No downloaded weights: the network is built from ultralytics' bundled model yaml and trained from
scratch, or from weights the user supplies (`--init`, any ultralytics .pt). Without `--data`, the
synthetic line is rendered first (`inspector synth` splits under OUT/data) and trained on like any
other dataset. OUT holds the ultralytics run (OUT/run: last.pt every epoch, best.pt, results.csv),
`progress.json` (updated every epoch), `best.pt`, `fp32/model.xml` and `train_info.json`.

A run survives its process being stopped: ultralytics writes OUT/run/weights/last.pt after every
epoch (weights, optimizer, EMA, epoch); `resume` continues from it with the run's own arguments.

One run for every model kind (`--task`): the checkpoint/resume handling, train_plan.json, ultralytics'
arguments, the per-epoch progress line and progress.json, the export and train_info.json are here once; a
TrainTask holds what differs: the dataset's checks, the model a fresh run starts from, the augmentation
presets, the epoch's metrics. DETECT is below; the classifier's is train_classify.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml

from inspector.errors import InspectorError
from inspector.kernel.durable import write_atomic
from inspector.training import offline

# Augmentation presets (ultralytics hyper-parameters), chosen by what the camera sees.
AUGMENT = {
    # Top-down camera at a fixed distance (the synthetic line, most inspection stations): flips are
    # free, but anything that shrinks the frame (mosaic tiles each image at ~half scale, large
    # `scale`) turns 3-px scratches and cracks into sub-pixel lines the model never sees at
    # inference scale.
    "fixed-camera": dict(flipud=0.5, fliplr=0.5, scale=0.1, translate=0.1, degrees=0.0, mosaic=0.0, close_mosaic=0),
    # Surface texture crops (NEU-DET: 200x200 steel patches, defects of any orientation and size,
    # grayscale): flips both ways, mosaic (4 crops per sample: more context variety on a small
    # set; off for the last 10 epochs so the model ends on whole images), scale jitter, brightness
    # jitter only (hue and saturation mean nothing on gray images).
    "texture": dict(flipud=0.5, fliplr=0.5, scale=0.5, translate=0.1, degrees=0.0, mosaic=1.0, close_mosaic=10,
                    hsv_h=0.0, hsv_s=0.0, hsv_v=0.4),
    # Issue 14: the fixed-camera geometry plus a milder colour jitter, on data rendered through random cameras
    # (`inspector synth --optics random`: white balance, exposure, contrast, gamma, blur, noise, JPEG...). No
    # BGR swap: colour is a cue for contamination (rust would turn blue). (docs/contracts.md, "Input drift guard").
    "line-optics": dict(flipud=0.5, fliplr=0.5, scale=0.1, translate=0.1, degrees=0.0, mosaic=0.0, close_mosaic=0,
                        hsv_h=0.015, hsv_s=0.5, hsv_v=0.4, bgr=0.0),
    # ultralytics' own defaults (natural scenes), flips left-right only.
    "ultralytics": dict(),
}


class TrainError(InspectorError):
    exit_code = 2


@dataclass(frozen=True)
class TrainPlan:
    out: Path
    data: Path | None = None  # data.yaml; None: render the synthetic line (n_train/seeds below)
    arch: str = "yolov8n.yaml"
    imgsz: int = 320
    epochs: int = 30
    batch: int = 16
    n_train: int = 1500
    n_val: int = 200
    train_seed: int = 1001
    val_seed: int = 2002
    workers: int = 2
    seed: int = 0
    init: Path | None = None  # start from user-supplied weights (fine-tuning); never downloaded
    lr0: float | None = None  # None: ultralytics' automatic choice from scratch, FINE_TUNE_LR0 with --init
    augment: str = "fixed-camera"
    time_budget_h: float | None = None  # ultralytics `time`: stop (and fit the LR schedule) within this many hours
    patience: int = 100
    cache: str = "ram"
    task: str = "detect"  # or "classify" (train_classify.py)


def run_dir(out: Path) -> Path:
    return Path(out).resolve() / "run"


FINE_TUNE_LR0 = 0.002


def optimizer_args(plan: TrainPlan) -> dict:
    """The optimizer a run uses. ultralytics' `optimizer: auto` picks AdamW at its own lr (0.00125 for 4 classes)
    below 10 000 iterations and ignores lr0: kept for from-scratch runs (`make model` is reproduced with it).
    Fine-tuning (--init) and an explicit --lr0 get SGD at that lr0: measured on the retraining loop's candidate
    (tests/test_retraining_loop.py), 3 epochs from a fine-tuned YOLOv8n with auto (AdamW 0.00125, no warm-up)
    took the regression set's mAP50 from 0.81 to 0.60; SGD at 0.002 took it to 0.91."""
    if plan.lr0 is None and plan.init is None:
        return {"optimizer": "auto"}
    return {"optimizer": "SGD", "lr0": plan.lr0 if plan.lr0 is not None else FINE_TUNE_LR0}


@dataclass(frozen=True)
class Prepared:
    """A task's dataset, ready to train on."""
    data: str  # ultralytics' data argument
    plan_data: str  # train_plan.json's data (what a resume reads back)
    arch: str
    info: dict  # train_info.json's fields after batch (data, dataset, augment, classes, ...)
    head: dict = field(default_factory=dict)  # train_info.json's fields before arch


@dataclass(frozen=True)
class TrainTask:
    """A model kind's part of a training run."""
    check: Callable[[TrainPlan], None]  # bad arguments, before anything is written (TrainError)
    prepare: Callable[[TrainPlan, Path], Prepared]  # the dataset (rendered, loaded, checked) of a run in OUT
    new_model: Callable[[TrainPlan, str], object]  # the ultralytics model a fresh run starts from (plan, arch)
    augment: dict[str, dict]  # presets: ultralytics hyper-parameters
    metrics: Callable[[object], dict]  # the epoch's validation figures, from ultralytics' trainer
    best_by: str  # the figure progress.json's best is chosen by
    best_keys: tuple[str, ...]
    text: Callable[[dict], str]  # the progress line's figures


def task_for(name: str) -> TrainTask:
    if name == "classify":
        from inspector.training.train_classify import CLASSIFY

        return CLASSIFY
    return DETECT


def train(plan: TrainPlan, resume: bool = False) -> Path:
    """Trains (or resumes) and exports; returns the FP32 IR path."""
    out = plan.out.resolve()
    saved = _read_json(out / "train_plan.json") if resume else {}
    if saved:  # the run's own arguments
        plan = TrainPlan(**{**asdict(plan), **saved, "out": out, "data": Path(saved["data"]) if saved.get("data")
                            else None, "init": Path(saved["init"]) if saved.get("init") else None})
    task = task_for(plan.task)
    if not resume:
        task.check(plan)
    out.mkdir(parents=True, exist_ok=True)
    offline.prepare(out)
    last = run_dir(out) / "weights" / "last.pt"
    if resume and not last.exists():
        raise TrainError(f"--resume: no checkpoint {last} (start the run without --resume first)")
    if not resume and last.exists():
        raise TrainError(f"{out} already holds a run ({last}): continue it with --resume, or choose another --out")
    run = task.prepare(plan, out)
    if not resume:
        (out / "train_plan.json").write_text(json.dumps({**asdict(plan), "arch": run.arch, "out": str(out),
                                                         "data": run.plan_data,
                                                         "init": str(plan.init) if plan.init else None}, indent=2))

    from ultralytics import YOLO  # train extra only
    from ultralytics.utils import torch_utils

    # ultralytics trains on min(8, cores - 1) threads: on a 2-core line PC that is one core idle
    # (measured here: 1.0 core busy, 2.7 s/batch). Use them all; data loading is in-line on CPU.
    torch_utils.NUM_THREADS = max(1, os.cpu_count() or 1)

    if resume:
        for note in restore_cut_checkpoints(last.parent):
            print(note, flush=True)
    t0 = time.monotonic()
    if resume and _finished(last):
        print(f"{last}: the run already finished all its epochs; exporting its best.pt")
    elif resume:
        model = YOLO(str(last))
        model.add_callback("on_model_save", keep_checkpoints)
        model.add_callback("on_fit_epoch_end", _progress_callback(out, task))
        model.train(resume=True, workers=plan.workers)
    else:
        if plan.init is not None and not Path(plan.init).exists():
            raise TrainError(f"--init {plan.init} does not exist")
        model = task.new_model(plan, run.arch)
        model.add_callback("on_model_save", keep_checkpoints)
        model.add_callback("on_fit_epoch_end", _progress_callback(out, task))
        extra = {"time": plan.time_budget_h} if plan.time_budget_h else {}
        model.train(
            data=run.data, imgsz=plan.imgsz, epochs=plan.epochs, batch=plan.batch, workers=plan.workers,
            device="cpu", **optimizer_args(plan),
            # pretrained=True: ultralytics (8.4) loads the --init weights only then (False trains the .pt's
            # architecture from random weights); a .yaml start has no checkpoint, so nothing is ever downloaded.
            pretrained=plan.init is not None, warmup_epochs=0.0 if plan.init else 3.0, amp=False,
            cache=plan.cache or False, project=str(out), name="run", exist_ok=True, seed=plan.seed,
            deterministic=True, plots=False, patience=plan.patience, verbose=True,
            **task.augment[plan.augment], **extra,
        )
    train_s = time.monotonic() - t0
    best = run_dir(out) / "weights" / "best.pt"
    shutil.copyfile(best, out / "best.pt")
    xml = export_ir(out / "best.pt", out / "fp32", plan.imgsz)
    progress = _read_json(out / "progress.json")
    prev = _read_json(out / "train_info.json")
    (out / "train_info.json").write_text(json.dumps({
        **run.head, "arch": run.arch, "imgsz": plan.imgsz, "epochs": plan.epochs, "batch": plan.batch, **run.info,
        "train_seconds": round(train_s + (prev.get("train_seconds", 0) if resume else 0), 1),
        "resumed": resume or prev.get("resumed", False),
        "init": str(plan.init) if plan.init else None, **optimizer_args(plan), "time_budget_h": plan.time_budget_h,
        "torch_threads": os.cpu_count(), "last_epoch": progress.get("epoch"),
        "best_val": progress.get("best"),
    }, indent=2))
    return xml


def _detect_check(plan: TrainPlan) -> None:
    if plan.data is not None:
        from inspector.training.cls_dataset import is_classify

        if is_classify(plan.data):  # ultralytics' detector trainer fails on it deep inside, with no word of why
            raise TrainError(f"--data {plan.data} is a classification dataset (task: classify): train it with "
                             "--task classify")


def _detect_prepare(plan: TrainPlan, out: Path) -> Prepared:
    data_yaml = Path(plan.data).resolve() if plan.data else _synthetic_data(out, plan)
    if not data_yaml.exists():
        raise TrainError(f"--data {data_yaml} does not exist")
    names = dataset_classes(data_yaml)
    return Prepared(str(data_yaml), str(data_yaml), plan.arch, {
        "data": str(data_yaml), "dataset": dataset_identity(data_yaml), "augment": plan.augment,
        **({"n_train": plan.n_train, "n_val": plan.n_val, "train_seed": plan.train_seed, "val_seed": plan.val_seed}
           if plan.data is None else {}),
        "classes": names})


def _detect_model(plan: TrainPlan, arch: str):
    from ultralytics import YOLO

    return YOLO(str(plan.init) if plan.init else arch)


def _detect_metrics(trainer) -> dict:
    m = trainer.metrics or {}
    return {"mAP50": round(float(m.get("metrics/mAP50(B)", 0)), 4),
            "mAP50-95": round(float(m.get("metrics/mAP50-95(B)", 0)), 4),
            "precision": round(float(m.get("metrics/precision(B)", 0)), 4),
            "recall": round(float(m.get("metrics/recall(B)", 0)), 4)}


DETECT = TrainTask(
    check=_detect_check, prepare=_detect_prepare, new_model=_detect_model, augment=AUGMENT, metrics=_detect_metrics,
    best_by="mAP50-95", best_keys=("epoch", "mAP50", "mAP50-95"),
    text=lambda r: (f"val mAP50 {r['mAP50']:.3f}  mAP50-95 {r['mAP50-95']:.3f}  P {r['precision']:.3f} "
                    f"R {r['recall']:.3f}"))


def _kept(p: Path) -> Path:
    return p.with_name(p.stem + ".kept.pt")


def _whole(p: Path | BinaryIO) -> bool:
    """A .pt is a zip archive: a file cut mid-write has no central directory (or fails its CRCs)."""
    try:
        with zipfile.ZipFile(p) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def keep_checkpoints(trainer) -> None:
    """on_model_save: a copy of last.pt and best.pt written atomically (temp, fsync, rename). ultralytics
    writes them in place (truncate, then write): a run killed while saving (a reboot, a power cut) left a
    last.pt that --resume could not read (a fresh-clone CI run: 'failed finding central directory')."""
    for p in (Path(trainer.last), Path(trainer.best)):
        kept = _kept(p)
        if not p.exists() or (kept.exists() and kept.stat().st_mtime_ns >= p.stat().st_mtime_ns):
            continue  # best.pt is saved only when it improves: its copy is still the current one
        data = p.read_bytes()  # read once: checked and copied from memory
        if _whole(io.BytesIO(data)):
            write_atomic(kept, data)


def restore_cut_checkpoints(weights: Path) -> list[str]:
    """Before --resume: a last.pt / best.pt cut mid-write is replaced by the copy kept after the epoch
    before (what the run resumes from says so); TrainError when there is none to take."""
    notes = []
    for name in ("last", "best"):
        p = weights / f"{name}.pt"
        if not p.exists() or _whole(p):
            continue
        kept = _kept(p)
        if not (kept.exists() and _whole(kept)):
            raise TrainError(f"--resume: {p} is not a whole checkpoint (cut mid-write: the run was killed while "
                             f"saving it) and no earlier copy ({kept.name}) was kept: start the run again into a "
                             f"new --out")
        write_atomic(p, kept.read_bytes())
        notes.append(f"{p} was cut mid-write (the run was killed while saving it): restored from {kept.name}, "
                     f"the copy kept after the epoch before")
    return notes


def _finished(last: Path) -> bool:
    """ultralytics strips the optimizer and sets epoch -1 in last.pt when a run completes."""
    import torch

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return ckpt.get("epoch", -1) == -1


def _synthetic_data(out: Path, plan: TrainPlan) -> Path:
    from inspector.training.datasets import write_synth_split

    data_root = out / "data"
    write_synth_split(data_root, "train", plan.n_train, plan.train_seed)
    return write_synth_split(data_root, "val", plan.n_val, plan.val_seed)


def dataset_classes(data_yaml: Path) -> list[str]:
    try:
        names = (yaml.safe_load(Path(data_yaml).read_text()) or {})["names"]
    except (OSError, KeyError, yaml.YAMLError) as e:
        raise TrainError(f"{data_yaml}: not a YOLO data.yaml with `names` ({e})") from e
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def dataset_identity(data_yaml: Path) -> dict:
    """What identifies the dataset: its dataset.json (content hash, classes, counts) when it has one."""
    p = Path(data_yaml).parent / "dataset.json"
    if not p.exists():
        return {"data_yaml": str(data_yaml)}
    d = json.loads(p.read_text())
    return {"data_yaml": str(data_yaml), "content_sha256": d.get("sha256", {}).get("content"),
            "classes": d.get("classes"), "counts": d.get("counts"), "source": d.get("source"),
            "split_rule": d.get("split_rule"), "image_channels": d.get("image_channels")}


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _progress_callback(out: Path, task: TrainTask):
    """One line per epoch (epoch, the task's validation figures, elapsed, ETA) on stdout and in progress.json:
    the tqdm bars of a detached run are unreadable in a log file."""
    t_start = time.monotonic()
    first = {}

    def on_fit_epoch_end(trainer) -> None:
        epoch, total = trainer.epoch + 1, trainer.epochs
        if epoch > total:  # ultralytics' final validation of best.pt, not an epoch
            return
        first.setdefault("epoch", trainer.epoch)
        per_epoch = (time.monotonic() - t_start) / max(1, epoch - first["epoch"])
        eta = per_epoch * (total - epoch)
        row = {"epoch": epoch, "epochs": total, **task.metrics(trainer), "seconds_per_epoch": round(per_epoch, 1),
               "eta_s": round(eta), "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        prev = _read_json(out / "progress.json")
        best = prev.get("best") or {}
        if row[task.best_by] >= best.get(task.best_by, -1):
            best = {k: row[k] for k in task.best_keys}
        history = [h for h in prev.get("history", []) if h["epoch"] < epoch] + [row]
        write_atomic(out / "progress.json", json.dumps({**row, "best": best, "history": history}, indent=1).encode())
        print(f"[inspector train] epoch {epoch}/{total}  {task.text(row)}  {per_epoch / 60:.1f} min/epoch"
              f"  ETA {eta / 3600:.1f} h  (best {task.best_by} {best[task.best_by]:.3f} @ {best['epoch']})", flush=True)

    return on_fit_epoch_end


def export_ir(weights: Path, out_dir: Path, imgsz: int) -> Path:
    """Exports an ultralytics .pt to an FP32 OpenVINO IR at a fixed input size."""
    offline.prepare(weights.parent)
    from ultralytics import YOLO

    exported = Path(YOLO(str(weights)).export(format="openvino", imgsz=imgsz, dynamic=False, quantize=32))
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in exported.iterdir():
        target = out_dir / ("model" + f.suffix if f.suffix in (".xml", ".bin") else f.name)
        shutil.copyfile(f, target)
    shutil.rmtree(exported, ignore_errors=True)
    return out_dir / "model.xml"
