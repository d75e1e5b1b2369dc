"""Our letterbox + OpenVINO + NMS against ultralytics' own predict, on the same IR and frames.

Needs the `train` extra (ultralytics); the runtime itself never imports it.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ultralytics")

from inspector.bundle.load import load_bundle  # noqa: E402
from inspector.inference.detector import Detector  # noqa: E402
from inspector.sources.conveyor import ConveyorGenerator  # noqa: E402
from inspector.training import offline  # noqa: E402
from inspector.training.metrics import box_iou  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "demo"
CONF, IOU = 0.25, 0.7


def ultralytics_dir(tmp: Path, precision: str) -> Path:
    """ultralytics recognises an IR by its folder name (*_openvino_model) with one .xml inside."""
    d = tmp / f"demo_{precision}_openvino_model"
    d.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(MODEL / f"model_{precision}{suffix}", d / f"model{suffix}")
    shutil.copyfile(MODEL / "metadata.yaml", d / "metadata.yaml")
    return d


@pytest.mark.train
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_same_detections_as_ultralytics(tmp_path, precision):
    offline.prepare(tmp_path)
    from ultralytics import YOLO

    bundle = load_bundle(MODEL, precision)
    ours = Detector(bundle, conf=CONF, iou=IOU)  # float layers in f32 (model.inference_precision)
    theirs = YOLO(str(ultralytics_dir(tmp_path, precision)), task="detect")
    with offline.cpu_inference_precision("f32"):  # ultralytics compiles on its first predict
        theirs.predict(np.zeros((64, 64, 3), np.uint8), imgsz=bundle.input_size[0], verbose=False)
    gen = ConveyorGenerator(31337)
    compared = 0
    for i in range(12):
        img = gen.part(i).image
        d = ours.detect(img)
        r = theirs.predict(img, imgsz=bundle.input_size[0], conf=CONF, iou=IOU, verbose=False)[0]
        t_xyxy = r.boxes.xyxy.cpu().numpy()
        t_conf = r.boxes.conf.cpu().numpy()
        t_cls = r.boxes.cls.cpu().numpy().astype(int)
        assert len(d) == len(t_conf), f"frame {i}: {len(d)} detections vs ultralytics {len(t_conf)}"
        if len(d) == 0:
            continue
        iou = box_iou(d.xyxy, t_xyxy)
        j = iou.argmax(1)
        assert (d.class_id == t_cls[j]).all(), f"frame {i}: classes differ"
        assert iou[np.arange(len(d)), j].min() >= 0.98, f"frame {i}: box IoU {iou[np.arange(len(d)), j].min():.3f}"
        assert np.abs(d.confidence - t_conf[j]).max() <= 0.01
        compared += len(d)
    assert compared >= 10, "too few detections to compare: use frames with defects"
