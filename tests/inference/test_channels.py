"""Grayscale cameras (issue 11): frames as BGR (HxWx3) or gray (HxW, HxWx1), models taking 3 or 1
channels, frames from 200x200 to 5 MP, converted once inside the letterbox. Real OpenVINO on the
shipped models/demo and on a 1-channel variant of it built here (a Concat of the gray plane to the
3 channels the network was trained on: the same network, so its detections must match)."""

from __future__ import annotations

import json
import shutil
import threading
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from inspector.bundle.hashing import sha256_file
from inspector.bundle.load import load_bundle
from inspector.config import SpoolConfig
from inspector.devtools.testing import make_verdict, synth_frame
from inspector.errors import ModelError
from inspector.inference.detector import Detector
from inspector.inference.drift_guard import frame_stats
from inspector.inference.heads.detect import Preprocessor
from inspector.review.gallery import THUMB_WIDTH, make_thumbnail
from inspector.review.sampler import SampleDecision, dhash64
from inspector.review.spool import Spool
from inspector.sources.convert import normalize_image, to_bgr
from inspector.sources.conveyor import ConveyorGenerator
from inspector.sources.folder import load_image

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "demo"
HW = (320, 320)

# (height, width): the smallest camera, a video stream, 5 MP, and odd aspect ratios either way.
SIZES = [(200, 200), (720, 1280), (1944, 2592), (1944, 300), (200, 2592), (480, 640)]


def gray_frames(n: int = 3) -> list[np.ndarray]:
    gen = ConveyorGenerator(4242)
    return [cv2.cvtColor(gen.part(i).image, cv2.COLOR_BGR2GRAY) for i in range(n)]


def at_size(gray: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(gray, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def layouts(gray: np.ndarray) -> dict[str, np.ndarray]:
    """The same camera image as each source may hand it over."""
    return {"bgr_3_equal": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), "gray_hw": gray,
            "gray_hw1": gray[:, :, None]}


def gray_input_ir(src: Path, dst: Path) -> Path:
    """A 1-channel copy of a 3-channel IR: a new (N, 1, H, W) input concatenated to 3 channels in front
    of the network. OpenVINO's PrePostProcessor cannot do this (convert_color has no GRAY -> RGB: it
    refuses at build), so it is a graph edit."""
    model = ov.Core().read_model(src)
    old = model.get_parameters()[0]
    n, _, h, w = (d.get_length() for d in old.get_partial_shape())
    new = ops.parameter([n, 1, h, w], old.get_element_type(), name=old.get_friendly_name())
    new.output(0).set_names(old.output(0).get_names())
    three = ops.concat([new, new, new], 1)
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(three.output(0))
    model.replace_parameter(0, new)
    model.validate_nodes_and_infer_types()
    ov.save_model(model, dst, compress_to_fp16=False)
    return dst


def bundle_copy(tmp: Path, *, gray_ir: bool = False, card_channels: object = "keep") -> Path:
    out = tmp / "bundle"
    shutil.copytree(MODEL, out)
    card = json.loads((out / "model_card.json").read_text())
    if gray_ir:
        for precision, entry in card["files"].items():
            xml = gray_input_ir(out / entry["xml"], out / f"model_{precision}_gray.xml")
            entry.update(xml=xml.name, bin=xml.with_suffix(".bin").name, xml_sha256=sha256_file(xml),
                         bin_sha256=sha256_file(xml.with_suffix(".bin")))
        card["input_channels"] = 1
    if card_channels is None:
        card.pop("input_channels", None)
    elif card_channels != "keep":
        card["input_channels"] = card_channels
    (out / "model_card.json").write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def det3():
    return Detector(load_bundle(MODEL, "int8"), conf=0.05)


@pytest.fixture(scope="module")
def det1(tmp_path_factory):
    bundle = load_bundle(bundle_copy(tmp_path_factory.mktemp("gray"), gray_ir=True), "int8")
    assert bundle.channels == 1
    return Detector(bundle, conf=0.05)


def same(a, b) -> bool:
    return (np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence)
            and np.array_equal(a.class_id, b.class_id))


# -- the letterbox: one conversion, exact ------------------------------------------------------------
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("channels", [3, 1])
def test_every_layout_letterboxes_to_the_same_bytes(hw, channels):
    gray = at_size(gray_frames(1)[0], hw)
    want = Preprocessor(HW, channels)(gray)[0].copy()
    assert want.shape == (1, *HW, channels)
    for name, img in layouts(gray).items():
        pre, buf = Preprocessor(HW, channels), np.zeros((1, *HW, channels), np.uint8)
        for _ in range(2):  # the second call reuses the padded buffer and the scratch image
            out, lb = pre(img, out=buf)
            assert out is buf and np.array_equal(buf, want), f"{name} into a {channels}-channel input"
    if channels == 3:  # a gray frame becomes 3 equal channels
        assert np.array_equal(want[..., 0], want[..., 1]) and np.array_equal(want[..., 0], want[..., 2])


@pytest.mark.parametrize("hw", [(480, 640), (1944, 300)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_a_colour_frame_into_a_gray_model_is_the_luma_of_its_letterbox(hw):
    colour = cv2.resize(ConveyorGenerator(7).part(3).image, (hw[1], hw[0]))
    three = Preprocessor(HW, 3)(colour)[0]
    one = Preprocessor(HW, 1)(colour)[0]
    assert np.array_equal(one[0, :, :, 0], cv2.cvtColor(np.ascontiguousarray(three[0]), cv2.COLOR_BGR2GRAY))
    # On a 3-equal-channel frame luma and the green channel are the same bytes: the choice of luma
    # (what a mono sensor sees) costs nothing on a gray camera's frames.
    gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    equal = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(cv2.cvtColor(equal, cv2.COLOR_BGR2GRAY), equal[:, :, 1])


@pytest.mark.parametrize("layout", ["gray_hw", "bgr_3_equal"])
@pytest.mark.parametrize("channels", [3, 1])
def test_no_full_frame_copy_at_5_mp(layout, channels):
    """The conversion happens at the input size: a warmed-up letterbox of a 5 MP frame allocates
    nothing near the frame's size (a gray->BGR inflation of it would be 15 MB)."""
    img = layouts(at_size(gray_frames(1)[0], (1944, 2592)))[layout]
    pre, buf = Preprocessor(HW, channels), np.empty((1, *HW, channels), np.uint8)
    pre(img, out=buf)
    tracemalloc.start()
    try:
        pre(img, out=buf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes allocated letterboxing a {img.shape} frame into {buf.shape}"


# -- real OpenVINO: detections -----------------------------------------------------------------------
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_a_3_channel_model_sees_the_same_on_every_layout(det3, hw):
    found = 0
    for gray in gray_frames():
        frames = layouts(at_size(gray, hw))
        want = det3.detect(frames["bgr_3_equal"])
        found += len(want)
        for name, img in frames.items():
            assert same(det3.detect(img), want), f"{name} {hw}"
    if hw == (480, 640):
        assert found > 0, "the comparison must not be vacuous at the model's native frame size"


@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_a_1_channel_model_matches_the_3_channel_model_on_gray(det1, det3, hw):
    found = 0
    for gray in gray_frames():
        frames = layouts(at_size(gray, hw))
        want = det3.detect(frames["bgr_3_equal"])
        found += len(want)
        for name, img in frames.items():
            got = det1.detect(img)
            assert same(got, want), f"{name} {hw}: {got} vs {want}"
    if hw == (480, 640):
        assert found > 0


def test_the_async_stage_takes_gray_frames(det1, det3):
    """The pipeline's path: submit() letterboxes into the staging buffer of the model's channels."""
    frames = [at_size(g, (720, 1280)) for g in gray_frames()]
    for det in (det3, det1):
        got: dict[int, object] = {}
        done = threading.Event()

        def deliver(result, i, got=got, done=done):
            got[i] = result
            if len(got) == len(frames):
                done.set()

        det.start_async(deliver)
        for i, f in enumerate(frames):
            assert det.submit(f, i, wait_s=30)
        assert done.wait(60)
        for i, f in enumerate(frames):
            assert got[i].error is None and same(got[i].findings, det3.detect(f))


# -- load checks: the card's input_channels against the IR -------------------------------------------
@pytest.mark.parametrize("gray_ir, card, expect", [
    (False, "keep", 3),
    (False, None, 3),  # cards before issue 11: 3
    (True, "keep", 1),
    (False, 1, "IR input has 3 channel(s) but the model card says input_channels 1"),
    (True, 3, "IR input has 1 channel(s) but the model card says input_channels 3"),
    (False, 2, "input_channels: Input should be 1 or 3, got 2"),
])
def test_the_card_channels_are_checked_against_the_ir(tmp_path, gray_ir, card, expect):
    path = bundle_copy(tmp_path, gray_ir=gray_ir, card_channels=card)
    if isinstance(expect, int):
        det = Detector(load_bundle(path, "fp32"), warmup=0)
        assert det.channels == det.bundle.channels == expect
        return
    with pytest.raises(ModelError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        Detector(load_bundle(path, "fp32"), warmup=0)


def test_a_bare_1_channel_ir_is_read_as_1_channel(tmp_path):
    xml = gray_input_ir(MODEL / "model_fp32.xml", tmp_path / "gray.xml")
    assert load_bundle(xml).channels == 1


# -- the consumers of Frame.image take gray frames ---------------------------------------------------
@pytest.mark.parametrize("hw", [(200, 200), (720, 1280), (1944, 300)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_dhash_and_drift_statistics_are_the_same_on_gray(hw):
    gray = at_size(gray_frames(1)[0], hw)
    frames = layouts(gray)
    assert dhash64(frames["gray_hw"]) == dhash64(frames["gray_hw1"]) == dhash64(frames["bgr_3_equal"])
    want = frame_stats(frames["bgr_3_equal"])
    for name in ("gray_hw", "gray_hw1"):
        assert frame_stats(frames[name]) == pytest.approx(want, rel=1e-12, abs=1e-12), name


def test_the_spool_and_the_gallery_take_a_gray_frame(tmp_path):
    gray = at_size(gray_frames(1)[0], (720, 1280))
    spool = Spool(SpoolConfig(dir=tmp_path, jpeg_quality=90), alarm=lambda kind, detail: None)
    spool.open()
    s = spool.write(make_verdict(synth_frame(1, image=gray)), SampleDecision(("uncertain",), dhash64(gray), 0.0))
    jpg = s.image.read_bytes()
    back = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.shape == (720, 1280)  # a 1-component JPEG: a third of the bytes to encode and upload
    assert np.abs(back.astype(int) - gray).mean() < 2
    side = json.loads(s.sidecar.read_text())
    assert (side["image"]["width"], side["image"]["height"]) == (1280, 720)
    thumb = cv2.imdecode(np.frombuffer(make_thumbnail(jpg), np.uint8), cv2.IMREAD_COLOR)
    assert thumb is not None and thumb.shape[1] == THUMB_WIDTH


# -- sources hand gray over as gray ------------------------------------------------------------------
GREY = np.full((4, 6), 7, np.uint8)


@pytest.mark.parametrize("image, shape", [
    (GREY, (4, 6)),
    (GREY[:, :, None], (4, 6)),
    (np.full((4, 6), 0x1234, np.uint16), (4, 6)),
    (np.zeros((4, 6, 3), np.uint8), (4, 6, 3)),
    (np.zeros((4, 6, 4), np.uint8), (4, 6, 3)),
])
def test_sources_keep_gray_and_to_bgr_still_expands_it(image, shape):
    out, why = normalize_image(image)
    assert why == "" and out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous
    bgr, _ = to_bgr(image)
    assert bgr.shape == (4, 6, 3)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_the_folder_source_reads_a_gray_file_as_gray(tmp_path, suffix):
    gray = at_size(gray_frames(1)[0], (200, 200))
    cv2.imwrite(str(tmp_path / f"g{suffix}"), gray)
    cv2.imwrite(str(tmp_path / f"c{suffix}"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) + np.array([0, 0, 9], np.uint8))
    img, cause, why = load_image(tmp_path / f"g{suffix}")
    assert (cause, why) == ("", "") and img.shape == (200, 200)
    img, _, _ = load_image(tmp_path / f"c{suffix}")
    assert img.shape == (200, 200, 3)


# -- the tool chain: `inspector model build` records what the IR takes -------------------------------
def test_model_build_records_1_channel_from_the_ir_and_the_bundle_runs_on_gray(tmp_path):
    from inspector.training.card import build_bundle

    calib = tmp_path / "calib"
    calib.mkdir()
    gen = ConveyorGenerator(3003)
    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.png"), cv2.cvtColor(gen.part(i).image, cv2.COLOR_BGR2GRAY))
    irs = tmp_path / "irs"
    irs.mkdir()
    fp32 = gray_input_ir(MODEL / "model_fp32.xml", irs / "fp32.xml")
    int8 = gray_input_ir(MODEL / "model_int8.xml", irs / "int8.xml")
    from inspector.training.quantize import calibration_tensors  # what `inspector quantize` feeds NNCF

    (x,) = calibration_tensors(calib, (320, 320), 1, channels=1)
    assert x.shape == (1, 1, 320, 320) and x.dtype == np.float32
    card = build_bundle(fp32, int8, tmp_path / "bundle", name="gray", version="0.0.1", calibration=calib,
                        n_val=16, n_test=16, command="test")
    assert card["input_channels"] == 1
    assert json.loads((tmp_path / "bundle" / "model_card.json").read_text())["input_channels"] == 1
    det = Detector(load_bundle(tmp_path / "bundle", "int8"), conf=0.05)
    gray = gray_frames(1)[0]
    assert det.channels == 1 and same(det.detect(gray), det.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))


def test_model_build_refuses_irs_of_different_channels(tmp_path):
    from inspector.training.card import build_bundle

    int8 = gray_input_ir(MODEL / "model_int8.xml", tmp_path / "int8.xml")
    with pytest.raises(ModelError, match=r"takes 1 channel\(s\), the FP32 IR .* 3"):
        build_bundle(MODEL / "model_fp32.xml", int8, tmp_path / "bundle", name="x", version="0", calibration=tmp_path)
    assert not (tmp_path / "bundle").exists()  # nothing half-written


@pytest.mark.parametrize("yaml_path, want", [(None, "ds/images/train"), ("sub", "ds/sub/images/train"),
                                             ("/abs/set", "/abs/set/images/train")])
def test_quantize_finds_the_train_split_of_a_relative_data_yaml(tmp_path, monkeypatch, yaml_path, want):
    """Found quantizing a 1-channel model with `--data ds/data.yaml` (relative, as a user types it):
    the calibration folder was ds/ds/images/train."""
    from inspector.training.quantize import calibration_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.yaml").write_text(("" if yaml_path is None else f"path: {yaml_path}\n")
                                               + "train: images/train\nval: images/val\nnames: {0: a}\n")
    assert calibration_folder(None, "ds/data.yaml") == Path(want)


# -- the whole service on a gray camera ---------------------------------------------------------------
def _run_folder(tmp: Path, images: list[np.ndarray]) -> tuple[list[dict], list[Path]]:
    import textwrap

    from inspector.config import load_config
    from inspector.service.app import run_service

    (tmp / "in").mkdir(parents=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp / "in" / f"{i:03d}.png"), img)
    cfg = tmp / "line.yaml"
    cfg.write_text(textwrap.dedent(f"""
        source: {{kind: folder, path: {tmp / 'in'}}}
        model: {{path: {MODEL}}}
        decision: {{budget_ms: 5000}}
        mqtt: {{enabled: false}}
        sampling: {{passes: {{rate: 1.0}}, rejects: {{rate: 1.0}}, dedup_window_s: 0, seed: 1}}
        spool: {{dir: {tmp / 'spool'}}}
        upload: {{window: null}}
        metrics: {{port: 0}}
        sink: {{jsonl: {tmp / 'v.jsonl'}}}
    """))
    assert run_service(load_config(cfg), live=False) == 0
    rows = [json.loads(line) for line in (tmp / "v.jsonl").read_text().splitlines()]
    return rows, sorted((tmp / "spool").rglob("*.jpg"))


def test_the_service_on_a_gray_folder_gives_the_verdicts_of_its_3_channel_copy(tmp_path):
    """Folder source (gray PNGs stay HxW) -> detector (3-channel demo model) -> drift guard -> sampler
    -> spool: every consumer of a gray Frame.image on the real path, against the same images stored
    with 3 equal channels."""
    grays = [at_size(g, (720, 1280)) for g in gray_frames(4)]
    gray_rows, gray_jpgs = _run_folder(tmp_path / "gray", grays)
    bgr_rows, _ = _run_folder(tmp_path / "bgr", [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in grays])

    def what(rows):
        return [{k: r[k] for k in ("verdict", "reason", "defects", "uncertain")} for r in rows]

    assert len(gray_rows) == 4 and what(gray_rows) == what(bgr_rows)
    assert any(r["defects"] for r in gray_rows), "the comparison must not be vacuous"
    assert all(r.get("reason") != "error" for r in gray_rows)
    assert gray_jpgs and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 2 for p in gray_jpgs)
