"""What an OpenVINO IR says about itself: its class labels (rt_info `model_info/labels`, written by
ultralytics' export), its input size and channels. Read when a bare .xml is loaded without a card
(`load.load_bundle`) and when a model is compiled, to check the IR against its card."""

from __future__ import annotations

from inspector.errors import ModelError


def rt_labels(model) -> list[str] | None:
    """The IR's class labels, None when it has none."""
    try:
        v = model.get_rt_info(["model_info", "labels"])
    except RuntimeError:
        return None
    s = v.astype(str) if hasattr(v, "astype") else str(v)
    return s.split() if isinstance(s, str) else list(s)


def input_hw(model, where) -> tuple[int, int]:
    """(height, width) of the IR's static NCHW input; ModelError naming `where` otherwise."""
    ps = model.input(0).get_partial_shape()
    if ps.is_dynamic or len(ps) != 4:
        raise ModelError(f"{where}: expected a static NCHW input, got {ps}")
    return int(ps[2].get_length()), int(ps[3].get_length())


def input_channels(model, where) -> int:
    """Channels of the IR's NCHW input: 3 (a colour or 3-equal-channel model) or 1 (a grayscale model)."""
    ps = model.input(0).get_partial_shape()
    if ps.is_dynamic or len(ps) != 4 or int(ps[1].get_length()) not in (1, 3):
        raise ModelError(f"{where}: expected a static NCHW input with 1 or 3 channels, got {ps}")
    return int(ps[1].get_length())
