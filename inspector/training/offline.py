"""Keeps the tool chain off the network: ultralytics and OpenVINO both phone home by default.

Must run before `ultralytics` is first imported: it reads its settings at import time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

_DONE = False


def prepare(workdir: Path | None = None) -> Path:
    """Sets the offline environment; returns the ultralytics config dir it made."""
    global _DONE
    cfg = Path(os.environ.get("YOLO_CONFIG_DIR") or (workdir or Path.cwd()) / ".ultralytics").resolve()
    if _DONE:
        return cfg
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ["YOLO_OFFLINE"] = "1"  # no hub, no GitHub asset downloads, no update checks
    os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install at run time
    os.environ.setdefault("YOLO_VERBOSE", "true")
    os.environ["OPENVINO_TELEMETRY_ENABLE"] = "0"
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    (cfg / "Ultralytics").mkdir(parents=True, exist_ok=True)
    # ultralytics looks Arial.ttf up online on every dataset load: give it a local font.
    font = cfg / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        font_src = _local_ttf()
        if font_src is not None:
            shutil.copyfile(font_src, font)
            shutil.copyfile(font_src, font.with_name("Arial.Unicode.ttf"))
    _opt_out_openvino_telemetry()
    _DONE = True
    return cfg


@contextlib.contextmanager
def cpu_inference_precision(precision: str = "f32"):
    """Within the block, every OpenVINO CPU compile (ultralytics' own included) runs its float
    layers in `precision`, as the runtime's Detector does by default: on a CPU with AMX,
    OpenVINO would otherwise pick bf16 for ultralytics and the comparison would measure that."""
    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kw):
        if device_name is None or str(device_name).startswith("CPU"):
            config = {"INFERENCE_PRECISION_HINT": precision, **(config or {})}
        return original(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def _local_ttf() -> Path | None:
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return p if p.exists() else None
    except ImportError:
        return None


def _opt_out_openvino_telemetry() -> None:
    # The converter's telemetry reads a consent file; writing "0" there is what `opt_in_out
    # --opt_out` does, without spawning a process.
    try:
        home = Path.home() / "intel"
        home.mkdir(exist_ok=True)
        (home / "openvino_telemetry").write_text("0")
    except OSError:
        pass
