"""`inspector model`: assemble a shipped model bundle from an FP32 and an INT8 IR.

Thresholds are calibrated, not guessed: per class, the highest confidence that keeps the
target defect recall on a validation split (INT8 predictions: the operating model). Then both
IRs are evaluated on a held-out split with those thresholds, and the card records everything
needed to trust and rebuild the bundle: classes, input size, thresholds, sha256 of each file,
the calibration set's hash, FP32 vs INT8 metrics, versions, and the rebuild command.

What every bundle gets (the IRs and float weights copied and hashed, the card's common fields: name,
version, task, files, calibration set, dataset, training, quantization, versions, rebuild) is here once
(ship_files, assemble_card); the detector's thresholds and metrics are build_bundle's below, the
classifier's card_classify.py's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from inspector.bundle.card import write_card
from inspector.bundle.hashing import sha256_file
from inspector.bundle.load import load_bundle
from inspector.errors import ModelError
from inspector.inference.detector import Detector
from inspector.training.evaluate import (
    EVAL_CONF,
    collect,
    data_splits,
    format_report,
    report,
    synthetic_samples,
    yolo_samples,
)
from inspector.training.metrics import calibrate_thresholds


def dir_hash(folder: Path) -> tuple[str, int]:
    """sha256 over (name, sha256) of every image: identifies a calibration set."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest(), len(files)


def _copy_ir(xml: Path, out: Path, stem: str) -> dict:
    xml = Path(xml)
    shutil.copyfile(xml, out / f"{stem}.xml")
    shutil.copyfile(xml.with_suffix(".bin"), out / f"{stem}.bin")
    return {
        "xml": f"{stem}.xml",
        "bin": f"{stem}.bin",
        "xml_sha256": sha256_file(out / f"{stem}.xml"),
        "bin_sha256": sha256_file(out / f"{stem}.bin"),
        "bytes": (out / f"{stem}.xml").stat().st_size + (out / f"{stem}.bin").stat().st_size,
    }


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("openvino", "nncf", "ultralytics-opencv-headless", "torch", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def dataset_record(data: Path) -> dict:
    """The card's record of a user dataset: its data.yaml, content hash and dataset.json."""
    meta_path = Path(data).parent / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta and len(meta.get("skipped", [])) > 50:
        meta = {**meta, "skipped": meta["skipped"][:50], "skipped_total": len(meta["skipped"])}
    return {"data_yaml": str(Path(data).resolve()),
            "content_sha256": (meta or {}).get("sha256", {}).get("content"),
            "dataset_json": meta}


@dataclass(frozen=True)
class Shipped:
    """The files of a bundle as the card records them."""
    files: dict  # "int8" / "fp32": the IRs the line runs (xml + bin, their sha256 and bytes)
    float_weights: dict | None  # model.pt, where `inspector retrain` starts; None where training left none


def ship_files(fp32_xml: Path, int8_xml: Path, out: Path) -> Shipped:
    """Copies both IRs into `out`, `inspector train`'s float weights (OUT/best.pt beside OUT/fp32/) as model.pt
    and ultralytics' metadata.yaml; returns what the card says of them."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"int8": _copy_ir(int8_xml, out, "model_int8"), "fp32": _copy_ir(fp32_xml, out, "model_fp32")}
    # Not under "files" (the IRs the line runs, each xml+bin, which the model store checks and installs): the
    # line PC never needs the float weights.
    pt = Path(fp32_xml).parent.parent / "best.pt"
    float_weights = None
    if pt.exists():
        shutil.copyfile(pt, out / "model.pt")
        float_weights = {"file": "model.pt", "sha256": sha256_file(out / "model.pt"), "bytes": pt.stat().st_size,
                         "format": "ultralytics .pt"}
    meta = Path(fp32_xml).parent / "metadata.yaml"
    if meta.exists():  # lets `ultralytics.YOLO(<dir>)` load the IR for parity checks and benchmarks
        shutil.copyfile(meta, out / "metadata.yaml")
    return Shipped(files, float_weights)


def assemble_card(*, name: str, version: str, task: str, train_info: dict | None, described: dict, shipped: Shipped,
                  calibration: Path, dataset: dict, evaluation: dict, int8_xml: Path, command: str,
                  after_dataset: dict | None = None) -> dict:
    """The card: the fields every bundle has around the task's own (`described`: classes, input, thresholds
    and their calibration; `evaluation`: FP32 vs INT8 on the held-out split)."""
    calib_hash, calib_n = dir_hash(calibration)
    return {
        "name": name,
        "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": task,
        "architecture": (train_info or {}).get("arch", "unknown"),
        **described,
        "files": shipped.files,
        "float_weights": shipped.float_weights,
        "calibration_set": {"path": str(calibration), "images": calib_n, "sha256": calib_hash},
        "dataset": dataset,
        **(after_dataset or {}),
        "training": train_info or {},
        "quantization": _quantization_info(int8_xml),
        "evaluation": evaluation,
        "versions": _versions(),
        "rebuild": command,
    }


def train_info_of(fp32_xml: Path) -> dict | None:
    """`inspector train`'s train_info.json for its FP32 IR (OUT/fp32/model.xml), None for an IR made elsewhere."""
    info_path = Path(fp32_xml).parent.parent / "train_info.json"
    return json.loads(info_path.read_text()) if info_path.exists() else None


def build_bundle(fp32_xml: Path, int8_xml: Path, out: Path, *, name: str, version: str, calibration: Path,
                 val_seed: int = 2002, n_val: int = 400, test_seed: int = 4004, n_test: int = 500,
                 target_recall: float = 0.99, command: str = "", train_info: dict | None = None,
                 data: Path | None = None, calibrate_under: tuple[str, ...] = (),
                 perturbed_eval: tuple[str, ...] = (), envelope_families: str | None = None) -> dict:
    """Writes the bundle `out` (IRs, float weights, card) and returns its card. Issue 14:
    `calibrate_under`: optics families whose altered copies of the calibration split join it for the
    thresholds (issue 14: recall holds where the model is declared to hold); `perturbed_eval`: families
    evaluated on altered copies of the held-out split (`evaluation.perturbed`); `envelope_families`: the
    drift guard's `input_envelope` from the calibration split's images plus copies altered by these
    families ('held': those the per-family metrics pass), None: no envelope."""
    out = Path(out)
    if data is not None:  # before anything is written: a class mismatch leaves no half bundle
        from inspector.training.train import dataset_classes

        have = list(load_bundle(Path(int8_xml), "int8").classes)
        want = dataset_classes(data)
        if have != want:
            raise ModelError(f"the dataset {data} has classes {want}, the model {int8_xml} was trained on {have}: "
                             "train on this dataset (or pass the dataset the model was trained on)")
    channels = {p: load_bundle(Path(x), p).channels for p, x in (("int8", int8_xml), ("fp32", fp32_xml))}
    if channels["int8"] != channels["fp32"]:
        raise ModelError(f"the INT8 IR {int8_xml} takes {channels['int8']} channel(s), the FP32 IR {fp32_xml} "
                         f"{channels['fp32']}: quantize the FP32 model this bundle ships")
    shipped = ship_files(fp32_xml, int8_xml, out)

    int8 = load_bundle(out / "model_int8.xml", "int8")
    fp32 = load_bundle(out / "model_fp32.xml", "fp32")
    classes = list(int8.classes)
    nc = len(classes)

    if data is None:
        val_split = {"generator": "inspector.sources.conveyor", "seed": val_seed, "n": n_val}
        test_split = {"generator": "inspector.sources.conveyor", "seed": test_seed, "n": n_test, "held_out": True}
        val_samples = list(synthetic_samples(n_val, val_seed))
        test = list(synthetic_samples(n_test, test_seed))
    else:
        splits = data_splits(data)
        if "val" not in splits:
            raise ModelError(f"{data}: no val split to calibrate the thresholds on")
        held = "test" if "test" in splits else "val"
        val_samples = list(yolo_samples(data, "val"))
        test = list(yolo_samples(data, held))
        val_split = {"data": str(Path(data).resolve()), "split": "val", "n": len(val_samples)}
        test_split = {"data": str(Path(data).resolve()), "split": held, "n": len(test), "held_out": held == "test",
                      "note": None if held == "test" else "no test split: metrics on val, which also set the "
                                                          "thresholds (mAP does not depend on them; P/R do)"}
    from inspector.training.perturb_eval import perturb_samples, row

    calib = list(val_samples)
    for fam in calibrate_under:  # issue 14: the thresholds keep the recall under the validated alterations too
        calib += perturb_samples(val_samples, fam, val_seed)
    val = collect(Detector(int8, conf=EVAL_CONF), iter(calib))
    thresholds, reached = calibrate_thresholds(val, nc, target_recall)
    if calibrate_under:
        val_split = {**val_split, "plus_altered_copies": list(calibrate_under), "n_total": len(calib)}

    r8 = report(collect(Detector(int8, conf=EVAL_CONF), iter(test)), int8, thresholds)
    r32 = report(collect(Detector(fp32, conf=EVAL_CONF), iter(test)), fp32, thresholds)
    perturbed = {}
    for fam in perturbed_eval:  # INT8, the operating model, at the card's thresholds
        rf = r8 if fam == "none" else report(collect(Detector(int8, conf=EVAL_CONF),
                                                     iter(perturb_samples(test, fam, test_seed))), int8, thresholds)
        perturbed[fam] = row(fam, rf)
    card = assemble_card(
        name=name, version=version, task="detect", train_info=train_info, shipped=shipped, calibration=calibration,
        described={
            "classes": classes,
            "input_size": list(int8.input_size),
            "input": "BGR or gray uint8 frame, letterboxed (pad 114) to input_size and converted there to "
                     "input_channels; normalisation is inside the IR",
            "thresholds": {c: round(float(t), 4) for c, t in zip(classes, thresholds, strict=True)},
            "threshold_calibration": {
                "method": "per class, highest confidence keeping the target recall at IoU 0.5 (INT8 predictions); "
                          "where the target is out of reach, the highest keeping every defect found above 0.05",
                "target_recall": target_recall,
                "split": val_split,
                "recall_reached": {c: round(r, 4) for c, r in zip(classes, reached, strict=True)},
            }},
        dataset=dataset_record(data) if data is not None else {"generator": "inspector.sources.conveyor"},
        # From the IR's input: 3 (a gray frame is fed as 3 equal channels) or 1 (a model exported with
        # 1 input channel, e.g. trained with `channels: 1` in data.yaml; a colour frame is fed as luma).
        after_dataset={"input_channels": int8.channels},
        evaluation={
            "split": test_split,
            "fp32": r32,
            "int8": r8,
            "delta_int8_minus_fp32": {"mAP50": round(r8["mAP50"] - r32["mAP50"], 4),
                                      "mAP50-95": round(r8["mAP50-95"] - r32["mAP50-95"], 4)},
            **({"perturbed": perturbed, "perturbed_note": "INT8 on altered copies of the held-out split "
                "(inspector.training.perturb_eval, default magnitudes, seed = the split's)"} if perturbed else {}),
        },
        int8_xml=int8_xml, command=command)
    # The card schema before the card is written (thresholds one per class, finite, in (0, 1]; ...): a
    # bundle the line would refuse is never built. Then it must load with its own card (sha256 checks).
    written = write_card(out, card)
    load_bundle(out, "int8")
    if envelope_families is not None:
        from inspector.training.envelope import families_held, write_card_envelope
        from inspector.training.perturb_eval import CLEAN, parse_families

        fams = (families_held(written) or []) if envelope_families == "held" else \
            [f for f in parse_families(envelope_families) if f != CLEAN]
        env = write_card_envelope(out, [sm.image for sm in val_samples], fams, seed=val_seed,
                                  source={"split": val_split})
        card["input_envelope"] = env.to_card()
        print(f"input_envelope: calibration images + {fams or 'no'} altered copies")
    print(format_report(r32))
    print(format_report(r8))
    print(f"thresholds: {card['thresholds']}")
    return card


def _quantization_info(int8_xml: Path) -> dict:
    """What `inspector quantize` recorded beside the INT8 IR (empty for an IR made elsewhere)."""
    path = Path(int8_xml).with_name("quantization.json")
    return json.loads(path.read_text()) if path.exists() else {}


def build_bundle_cli(a) -> int:
    from inspector.training.quantize import calibration_folder

    fp32 = Path(a.fp32)
    data = Path(a.data) if a.data else None
    if data is not None and not data.exists():
        raise ModelError(f"--data {data} does not exist")
    build_bundle(fp32, Path(a.int8), Path(a.out), name=a.name, version=a.version,
                 calibration=calibration_folder(a.calibration, a.data),
                 val_seed=a.val_seed, n_val=a.n_val, test_seed=a.test_seed, n_test=a.n_test,
                 target_recall=a.target_recall, command=a.command, train_info=train_info_of(fp32), data=data,
                 **_issue14_options(a))
    return 0




def _issue14_options(a) -> dict:
    """`--calibrate-under`, `--perturbed-eval`, `--envelope-families` (issue 14) as build_bundle's arguments."""
    from inspector.training.perturb_eval import CLEAN, parse_families

    under = getattr(a, "calibrate_under", None)
    evals = getattr(a, "perturbed_eval", None)
    env = getattr(a, "envelope_families", None)
    try:
        if env not in (None, "none", "held"):
            parse_families(env)
        return {"calibrate_under": tuple(f for f in parse_families(under) if f != CLEAN) if under else (),
                "perturbed_eval": tuple(parse_families(evals)) if evals else (),
                "envelope_families": None if env in (None, "none") else env}
    except ValueError as e:
        raise ModelError(str(e)) from e
