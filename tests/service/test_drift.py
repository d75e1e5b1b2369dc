"""Issue 14 acceptance on the running service: the synthetic camera's appearance is switched mid-run
(source.synthetic.appearance) beyond the magnitudes models/demo was validated under; the input drift
guard must raise `input_drift` within 50 parts of the change, and with `decision.on_drift: hold` no
defective part may pass after the alarm (ground truth: the synthetic source's own). An unaltered
600-part run raises nothing.

Real OpenVINO on models/demo with the envelope its card ships (`inspector model envelope models/demo
--families darker,blur,noise`: the families 1.1.0 holds under). Every wait is on an event (the
pipeline's `done`), never a sleep.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from inspector.bundle.load import load_bundle
from inspector.config import InspectorConfig
from inspector.devtools.testing import ListSink
from inspector.frames import Outcome
from inspector.service.app import Service
from inspector.service.metrics import families

REPO = Path(__file__).resolve().parents[2]
# The part from which the camera looks different. 60: past the input guard's window (16) and the output
# guard's (40), so both judge a full window of the unaltered camera before the change (it was 100: 40 more
# paced parts in each of the 6 input-guard runs, 9.6 s of line time that proved nothing more).
SWITCH = 60
# The output guard's tests keep their change at part 100: their shares (weak detections > 0.15 at the end) were
# measured on seed 777's parts 100-179; the same change from part 60 leaves exactly 0.15 (other parts).
OUTPUT_SWITCH = 100
WITHIN = 50  # issue 14: the guard raises input_drift within this many parts of the change




def make_config(appearance: list[dict], *, on_drift: str = "hold", parts_per_s: float = 25.0,
                extra: dict | None = None) -> InspectorConfig:
    return InspectorConfig(
        source={"kind": "synthetic", "seed": 777, "parts_per_s": parts_per_s, "queue_size": 64,
                "appearance": appearance},
        model={"path": REPO / "models/demo"},
        # A generous budget: a LATE verdict (the shared 2-core machine) is not what this test is about.
        decision={"budget_ms": 400, "on_drift": on_drift},
        mqtt={"enabled": False}, sampling={"enabled": False}, upload={"window": None},
        metrics={"enabled": False}, **(extra or {}))


def run(cfg: InspectorConfig, frames: int) -> tuple[Service, ListSink, list[tuple[str, dict]]]:
    svc = Service(cfg, max_frames=frames)
    rec = ListSink()
    svc.pipeline.sinks.append(rec)
    alarms: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def on_alarm(kind: str, detail: dict) -> None:
        with lock:
            alarms.append((kind, detail))

    svc.alarms.attach(on_alarm)
    svc.start()
    try:
        assert svc.pipeline.done.wait(frames / cfg.source.parts_per_s + 120), "the run did not finish"
    finally:
        svc.stop(deadline_s=5.0)
    svc.pipeline.raise_if_failed()
    assert len(rec.verdicts) == frames
    return svc, rec, alarms


def test_demo_card_ships_an_envelope():
    card = load_bundle(REPO / "models/demo").card
    assert card is not None and card.envelope is not None  # parsed with the card, once
    env = card.input_envelope
    assert set(env["stats"]) >= {"luma", "cast_b", "cast_r", "sharpness"} and env["frame_size"] == [640, 480]
    assert env["confidence"]["frames"] >= 100


@pytest.mark.parametrize("change", [
    pytest.param({"family": "white_balance", "magnitude": "strong"}, id="white_balance-strong-cast"),
    pytest.param({"family": "blur", "params": {"sigma": 4}}, id="blur-sigma-4"),
    pytest.param({"family": "darker", "params": {"gain": 0.25}}, id="darker-gain-0.25"),
])
def test_drift_is_raised_within_50_parts_and_hold_lets_no_defective_part_pass(change):
    frames = SWITCH + WITHIN + 30
    svc, rec, alarms = run(make_config([{"after_parts": SWITCH, **change}]), frames)

    drift = [d for k, d in alarms if k == "input_drift"]
    assert len(drift) == 1, f"expected one input_drift, got {alarms}"
    d = drift[0]
    assert SWITCH <= d["frame_id"] < SWITCH + WITHIN, f"raised at frame {d['frame_id']} (change at {SWITCH})"
    lo, hi = d["bounds"]
    assert d["statistic"] and not lo <= d["value"] <= hi and d["action"] == "hold", d

    order = [v.frame_id for v in rec.verdicts]
    # The output guard may see it first (strong white balance: output_drift a few parts before input_drift);
    # the hold starts at whichever alarm came first, and never before the change.
    first = min(order.index(x["frame_id"]) for k, x in alarms if k in ("input_drift", "output_drift"))
    assert rec.verdicts[first].frame_id >= SWITCH
    at = min(first, order.index(d["frame_id"]))
    before, after = rec.verdicts[:at], rec.verdicts[at:]
    # Before the change nothing was held; from the alarm's frame on (in emission order) every part is rejected.
    assert all(v.reason is None or v.reason.value != "drift" for v in before)
    assert after and all(v.actuate for v in after), [(v.frame_id, v.outcome) for v in after if not v.actuate]
    escaped = [v.frame_id for v in after if v.frame.truth and not v.actuate]
    assert escaped == []
    # What the hold caught: defective parts the model itself passed (white balance: the silent escapes).
    saved = [v.frame_id for v in after if v.frame.truth and v.reason is not None and v.reason.value == "drift"]
    print(f"{change}: input_drift at part {d['frame_id']} ({d['statistic']} {d['value']} outside {d['bounds']}); "
          f"{len(saved)} defective parts the model passed were held")

    r = svc.report(full=True)
    assert r.drift["in_drift"] and r.drift["acting"] and r.drift["entered"] == 1
    health = {c.name: c for c in r.health}
    assert not health["input"].ok and "held" in health["input"].detail
    assert health["verdicts"].ok and health["model"].ok  # the watchdog's checks stay green: no restart for optics
    fams = {f.name: f for f in families(r)}
    assert fams["inspector_input_drift"].samples[0].value == 1.0
    stats_exported = {s.labels["stat"] for s in fams["inspector_input_statistic"].samples}
    assert stats_exported >= {d["statistic"]} - {"confidence_psi"}
    assert r.summary(1.0)["drift"]["in_drift"] is True


def test_back_inside_clears_the_alarm_and_ends_the_hold():
    back = SWITCH + 40
    frames = back + 48 + 16 + 40  # clear_after 48 frames inside once the window's median is back
    svc, rec, alarms = run(make_config([{"after_parts": SWITCH, "family": "blur", "params": {"sigma": 4}},
                                        {"after_parts": back, "family": "none"}]), frames)
    kinds = [k for k, _ in alarms if k.startswith("input_")]
    assert kinds == ["input_drift", "input_restored"], alarms
    restored = dict(alarms)["input_restored"]
    assert restored["frame_id"] >= back and restored["drift_s"] > 0
    order = [v.frame_id for v in rec.verdicts]
    after = rec.verdicts[order.index(restored["frame_id"]) + 1:]
    assert after and not any(v.reason is not None and v.reason.value == "drift" for v in after)
    assert any(v.outcome is Outcome.PASS for v in after)
    r = svc.report()
    assert not r.drift["in_drift"] and r.drift["cleared"] == 1 and {c.name: c.ok for c in r.health}["input"]


@pytest.mark.parametrize("on_drift, passes_after", [("alarm", True), ("reject", False)])
def test_on_drift_alarm_changes_no_verdict_and_reject_rejects_passes(on_drift, passes_after):
    frames = SWITCH + WITHIN + 20
    # A strong colour cast: models/demo 1.1.0 passes defective parts under it (blur makes it reject everything).
    svc, rec, alarms = run(make_config([{"after_parts": SWITCH, "family": "white_balance", "magnitude": "strong"}],
                                       on_drift=on_drift), frames)
    d = dict(alarms)["input_drift"]
    assert d["action"] == on_drift
    order = [v.frame_id for v in rec.verdicts]
    after = rec.verdicts[order.index(d["frame_id"]):]
    assert any(v.outcome is Outcome.PASS for v in after) is passes_after
    health = {c.name: c for c in svc.report().health}
    assert health["input"].ok, "only hold makes /healthz red"


# One seed. A second (4004) ran the same code path on another random stream: one more 600-part sample of a
# false-alarm rate that benchmarks/output_guard.py measures on 11 seeds x 600 parts (0 false alarms), for 15 s
# of CPU-bound line time per suite.
@pytest.mark.slow
@pytest.mark.parametrize("seed", [777])
def test_an_unaltered_600_part_run_raises_nothing(seed):
    """Neither guard raises on 600 unaltered parts. Load-independent: a busy machine makes frames LATE
    before inference (issue 20 saw 481 measured frames of 600 under load), which the guards do not
    measure; so the assertion is frames + pending + unobserved = 600, and the output guard's judged parts = the
    verdicts the model gave, not a share of 600 that only an idle machine reaches."""
    cfg = make_config([], parts_per_s=40.0)
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={"seed": seed})})
    svc, rec, alarms = run(cfg, 600)
    assert [k for k, _ in alarms if k.startswith(("input_", "output_"))] == []
    r = svc.report()
    assert r.drift["enabled"] and r.drift["entered"] == 0
    assert r.drift["frames"] + r.drift["pending"] + r.drift["unobserved"] == 600
    judged = sum(1 for v in rec.verdicts if v.outcome is not Outcome.LATE and (v.reason is None or
                                                                              v.reason.value == "defect"))
    assert r.drift["output"]["frames"] == judged and r.drift["output"]["entered"] == 0
    assert r.drift["psi"] is not None or r.drift["frames"] < cfg.drift.psi_window
    assert not any(v.reason is not None and v.reason.value == "drift" for v in rec.verdicts)


def test_a_card_without_envelope_turns_the_image_checks_off(tmp_path, caplog):
    import json
    import shutil

    bundle = tmp_path / "demo"
    shutil.copytree(REPO / "models/demo", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    del card["input_envelope"]
    (bundle / "model_card.json").write_text(json.dumps(card))
    cfg = make_config([{"after_parts": 5, "family": "blur", "params": {"sigma": 4}}]).model_copy(
        update={"model": InspectorConfig(model={"path": bundle}).model})
    with caplog.at_level("WARNING", logger="inspector.service.drift"):
        svc, rec, alarms = run(cfg, 30)
    off = [r for r in caplog.records if "input drift guard off" in r.getMessage()]
    assert len(off) == 1 and "no input_envelope" in off[0].getMessage()
    assert not [k for k, _ in alarms if k.startswith("input_")]
    assert svc.report().drift["enabled"] is False
    assert {c.name: c for c in svc.report().health}["input"].detail.startswith("not watched")


def test_a_malformed_envelope_is_refused_naming_the_field(tmp_path):
    import json
    import shutil

    from inspector.errors import ModelError

    bundle = tmp_path / "demo"
    shutil.copytree(REPO / "models/demo", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    card["input_envelope"]["stats"]["luma"] = [200, 100]
    (bundle / "model_card.json").write_text(json.dumps(card))
    cfg = make_config([]).model_copy(update={"model": InspectorConfig(model={"path": bundle}).model})
    with pytest.raises(ModelError, match="input_envelope.*low <= high"):
        Service(cfg)


def test_a_snapshot_during_a_model_switch_labels_the_medians_with_their_own_statistics():
    """`_switch` (post thread) replaces the guard before it clears the last state; a report built in
    between (any thread) must not name the old guard's medians after the new guard's statistics (the
    old snapshot zipped the new names with the old medians: `sharpness` got the luma median)."""
    import numpy as np

    from inspector.bundle.envelope import STAT_NAMES, Envelope
    from inspector.config import DriftConfig
    from inspector.devtools.testing import make_verdict
    from inspector.frames import ModelInfo
    from inspector.inference.drift_guard import DriftGuard
    from inspector.service.drift import DriftMonitor
    from tests.bundle.cards import card_with

    card_a = card_with(input_envelope={"stats": {"luma": [0.0, 255.0], "contrast": [0.0, 10.0]}})
    cfg = DriftConfig()
    mon = DriftMonitor(cfg, "alarm", card_a, ModelInfo("a", "1.0.0", "0" * 64))
    stats = np.zeros(len(STAT_NAMES))
    stats[STAT_NAMES.index("luma")], stats[STAT_NAMES.index("contrast")] = 120.0, 0.5
    for _ in range(cfg.window):
        mon.observe(make_verdict(), stats, 0.9)
    assert mon.snapshot()["medians"] == {"luma": 120.0, "contrast": 0.5}
    # The first half of a switch to a model whose envelope bounds other statistics.
    mon.guard = DriftGuard(Envelope.from_card({"stats": {"sharpness": [0.0, 5.0]}}), window=cfg.window)
    assert mon.snapshot()["medians"] == {"luma": 120.0, "contrast": 0.5}


def _bundle_with_roi(tmp_path: Path, roi: list[int] | None) -> Path:
    import json
    import shutil

    bundle = tmp_path / "demo"
    shutil.copytree(REPO / "models/demo", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    card["input_envelope"]["roi"] = roi
    (bundle / "model_card.json").write_text(json.dumps(card))
    return bundle


@pytest.mark.parametrize("roi, size", [
    # the envelope's region is not inside a 320x240 frame: the old guard measured nothing, counted 0 frames
    pytest.param([400, 300, 600, 460], (320, 240), id="roi-outside-a-binned-frame"),
    # no roi: the region is the whole 640x480 reference frame, which a binned frame no longer holds
    pytest.param(None, (320, 240), id="no-roi-binned-frame"),
    pytest.param(None, (640, 360), id="no-roi-cropped-height"),
])
def test_a_frame_that_no_longer_holds_the_envelopes_region_is_outside_it(tmp_path, roi, size):
    """A camera re-configured mid-run (binned, cropped, replaced): frames of the new size are outside the
    envelope (statistic frame_size, expected vs actual), input_drift is raised and on_drift holds."""
    import cv2

    from inspector.sources.conveyor import ConveyorGenerator

    gen, folder, switch = ConveyorGenerator(777), tmp_path / "images", 30
    folder.mkdir()
    for i in range(switch + 40):
        img = gen.part(i).image
        if i >= switch:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    cfg = make_config([]).model_copy(update={
        "source": InspectorConfig(source={"kind": "folder", "path": folder, "parts_per_s": 25.0,
                                          "queue_size": 64}).source,
        "model": InspectorConfig(model={"path": _bundle_with_roi(tmp_path, roi)}).model})
    svc, rec, alarms = run(cfg, switch + 40)

    drift = [d for k, d in alarms if k == "input_drift"]
    assert len(drift) == 1, alarms
    d = drift[0]
    assert d["statistic"] == "frame_size" and d["actual"] == f"{size[0]}x{size[1]}" and d["expected"], d
    # the 4th (drift.enter_after) measured frame of the new size raises it, at the latest with the next
    # verdict (statistics reach the guard through a queue); frames that went LATE before inference (a
    # loaded machine) are not measured, so they are not counted here either
    measured = [v for v in rec.verdicts if switch <= v.frame_id <= d["frame_id"] and v.outcome is not Outcome.LATE]
    assert d["frame_id"] >= switch and len(measured) <= cfg.drift.enter_after + 1 and d["action"] == "hold"
    order = [v.frame_id for v in rec.verdicts]
    assert all(v.actuate for v in rec.verdicts[order.index(d["frame_id"]):]), "held from the alarm on"
    snap = svc.report().drift
    assert snap["in_drift"] and snap["statistic"] == "frame_size" and snap["unmeasured"] >= 30
    assert snap["frames"] + snap["pending"] + snap["unobserved"] == switch + 40


# -- the output guard: what the model does (issue 21) ---------------------------------------------------
GAMMA_22 = {"family": "gamma", "params": {"deviation": 0.79}}  # seed 777's draw: gamma 2.2 (training: <= 1.49)


def _bundle_without(tmp_path: Path, stats: tuple[str, ...] = (), output: bool = True) -> Path:
    """models/demo with an envelope that does not bound `stats` (so the image checks cannot see a change
    that moves only those) and, with output=False, without the output reference (an older card)."""
    import json
    import shutil

    bundle = tmp_path / "demo"
    shutil.copytree(REPO / "models/demo", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    for s in stats:
        del card["input_envelope"]["stats"][s]
    if not output:
        del card["input_envelope"]["output"]
    (bundle / "model_card.json").write_text(json.dumps(card))
    return bundle


def _line_pattern(image, period: float = 6.0, amplitude: float = 25.0):
    """A diagonal sinusoidal pattern (moire of a screen in front of the lens): in no training family."""
    import numpy as np

    h, w = image.shape[:2]
    x, y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
    pat = amplitude * np.sin(2 * np.pi * (0.8 * x + 0.6 * y) / period)
    return np.clip(image.astype(np.float32) + pat[..., None], 0, 255).astype(np.uint8)


def _line_pattern_folder(tmp_path: Path, frames: int) -> dict:
    import cv2

    from inspector.sources.conveyor import ConveyorGenerator

    gen, folder = ConveyorGenerator(777), tmp_path / "line-pattern"
    folder.mkdir()
    for i in range(frames):
        img = gen.part(i).image
        cv2.imwrite(str(folder / f"{i:04d}.png"), _line_pattern(img) if i >= OUTPUT_SWITCH else img)
    return {"kind": "folder", "path": folder, "parts_per_s": 25.0, "queue_size": 64}


@pytest.mark.parametrize("change, unbounded, on_drift", [
    # gamma 2.2 (the training mix stops at 1.49) moves contrast and clip_low; false rejects ~1 % -> ~20 %
    pytest.param("gamma", ("contrast", "clip_low"), "hold", id="gamma-2.2-hold"),
    pytest.param("gamma", ("contrast", "clip_low"), "alarm", id="gamma-2.2-alarm"),
    # a 6-px line pattern moves sharpness; false rejects ~44 %, escapes ~7 %
    pytest.param("lines", ("sharpness",), "hold", id="line-pattern-hold"),
])
def test_an_untrained_optical_change_the_envelope_misses_raises_output_drift_within_50_parts(
        tmp_path, change, unbounded, on_drift):
    """An optical change in no training family, with an envelope that does not bound the statistics it
    moves (the issue's case: the image checks see nothing). The output guard must raise output_drift
    within 50 parts of it on models/demo 1.2.1, and on_drift act on it."""
    frames = OUTPUT_SWITCH + WITHIN + 30
    cfg = make_config([{"after_parts": OUTPUT_SWITCH, **GAMMA_22}] if change == "gamma" else [], on_drift=on_drift)
    update = {"model": InspectorConfig(model={"path": _bundle_without(tmp_path, unbounded)}).model}
    if change == "lines":
        update["source"] = InspectorConfig(source=_line_pattern_folder(tmp_path, frames)).source
    cfg = cfg.model_copy(update=update)
    svc, rec, alarms = run(cfg, frames)

    assert not [k for k, _ in alarms if k == "input_drift"], "the image checks were not meant to see it"
    out = [d for k, d in alarms if k == "output_drift"]
    assert len(out) == 1, alarms
    d = out[0]
    assert OUTPUT_SWITCH <= d["frame_id"] < OUTPUT_SWITCH + WITHIN, (
        f"raised at frame {d['frame_id']} (change at {OUTPUT_SWITCH})")
    assert d["statistic"] == "weak_detection_rate" and d["value"] > d["bounds"][1] and d["action"] == on_drift
    assert d["reference"]["weak_detection_rate"]["from"] == "card"
    order = [v.frame_id for v in rec.verdicts]
    after = rec.verdicts[order.index(d["frame_id"]):]
    good_after = [v for v in after if not v.frame.truth]
    if on_drift == "hold":  # every part from the alarm on gets the fail-safe verdict
        assert after and all(v.actuate for v in after)
        assert not {c.name: c.ok for c in svc.report().health}["input"], "a held line is red"
    else:  # alarm only: the model's own verdicts, false rejects included
        assert any(not v.actuate for v in good_after)
    r = svc.report(full=True)
    assert r.drift["output"]["in_drift"] and r.drift["output"]["entered"] == 1 and r.drift["acting"]
    fams = {f.name: f for f in families(r)}
    assert fams["inspector_output_drift"].samples[0].value == 1.0
    shares = {s.labels["stat"]: s.value for s in fams["inspector_output_share"].samples}
    assert shares["weak_detection_rate"] > 0.15


def test_a_card_without_an_output_reference_uses_the_first_parts_of_the_run(tmp_path):
    """An older card (no input_envelope.output): the weak-detection and reject shares of the first
    drift.output_baseline (200) judged parts are the reference, widened by their own 99 % estimation error."""
    switch = 220
    frames = switch + WITHIN + 20
    cfg = make_config([{"after_parts": switch, **GAMMA_22}], on_drift="alarm", parts_per_s=40.0).model_copy(update={
        "model": InspectorConfig(model={"path": _bundle_without(tmp_path, ("contrast", "clip_low"),
                                                                output=False)}).model})
    svc, rec, alarms = run(cfg, frames)
    d = dict(alarms)["output_drift"]
    assert switch <= d["frame_id"] < switch + WITHIN and d["statistic"] == "weak_detection_rate"
    assert {k: v["from"] for k, v in d["reference"].items()} == {"weak_detection_rate": "run", "reject_rate": "run"}
