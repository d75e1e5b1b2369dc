"""One validation for a model bundle, wherever it enters or judges: a card with `crack: 1.5`, `pit: NaN`
(JSON reads it), a missing or an extra class threshold, or an input_envelope naming a statistic this
version does not know, is refused at stage, pull, promote, shadow, start and `model build`, naming the
class (or statistic) and the value, with exit 2 through the CLI. A start whose pointer is refused falls
back to the pointer's previous version with the `model_fallback` alarm. Promote compiles the bytes it
verified, and a first start hashes each file once.

Real parts: the running Service on models/demo (real OpenVINO), the S3 server of tests/fixtures, the CLI."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import yaml

from inspector.bundle.signing import BundleRefused, Trust
from inspector.cli import main
from inspector.devtools.model_push import push
from inspector.errors import ModelError
from inspector.frames import Outcome
from inspector.lifecycle.control import ControlError, request
from inspector.lifecycle.store import ModelRef, ModelStore, pull
from inspector.service.app import Service
from tests.bundle.hashes import HashCounter
from tests.lifecycle.bundles import DEMO, make_bundle, reject_everything
from tests.lifecycle.conftest import V1, V2, lifecycle_config, wait_done

# case -> (how the card is changed, what the refusal must say: the class or statistic and the value)
BAD_CARDS = {
    "crack_1.5": (lambda c: c["thresholds"].update(crack=1.5), r"thresholds\.crack: .*got 1\.5"),
    "pit_NaN": (lambda c: c["thresholds"].update(pit=math.nan), r"thresholds\.pit: .*got nan"),
    "missing_crack": (lambda c: c["thresholds"].pop("crack"), r"no threshold for class 'crack'"),
    "extra_rust": (lambda c: c["thresholds"].update(rust=0.3), r"thresholds\.rust: 'rust' is not a class"),
    "envelope_glare": (lambda c: c["input_envelope"]["stats"].update(glare=[0.0, 1.0]),
                       r"input_envelope\.stats: expected names among .*got \['glare'\]"),
}
CASES = list(BAD_CARDS)


def bad_bundle(dst, version: str, case: str):
    """models/demo's INT8 IR under `version` (sha256s right) with the card changed as `case` says; written
    with Python's JSON, which writes NaN as `NaN`."""
    make_bundle(dst, version)
    card = json.loads((dst / "model_card.json").read_text())
    BAD_CARDS[case][0](card)
    (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    if case == "pit_NaN":
        assert '"pit": NaN' in (dst / "model_card.json").read_text()
    return dst


def plant(store: ModelStore, ref: ModelRef, case: str) -> None:
    """A refused bundle in the store itself, as one staged by an older version that did not check the card
    (or edited on disk): what promote, shadow and start find there."""
    bad_bundle(store.path(ref), ref.version, case)


# -- stage / pull --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_stage_refuses(tmp_path, case):
    src = bad_bundle(tmp_path / "b", "3.0.0", case)
    store = ModelStore(tmp_path / "store", "st1")
    with pytest.raises(BundleRefused, match=BAD_CARDS[case][1]):
        store.stage(src, Trust())
    assert store.versions() == []
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"lifecycle": {"store": str(tmp_path / "store")}}))
    assert main(["model", "stage", str(src), "--config", str(cfg)]) == 2
    assert store.versions() == []


@pytest.mark.parametrize("case", CASES)
def test_pull_refuses_before_fetching_the_weights(tmp_path, s3_bucket, s3_env, case):
    src = bad_bundle(tmp_path / "b", "3.0.0", case)
    remote = f"s3://{s3_bucket}/models"
    client = s3_env.client()
    with pytest.raises(BundleRefused, match=BAD_CARDS[case][1]):
        push(src, remote, client=client)  # the plant's side reads the card with the same schema
    # put there by another tool: the card alone (no weights on the server) refuses it
    client.upload_file(str(src / "model_card.json"), s3_bucket, "models/demo/3.0.0/model_card.json")
    store = ModelStore(tmp_path / "store", "st1")
    with pytest.raises(BundleRefused, match=BAD_CARDS[case][1]):
        pull(store, remote, ModelRef("demo", "3.0.0"), Trust(), client=client)
    assert store.versions() == []


# -- promote / shadow on the running service --------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_promote_and_shadow_refuse_what_start_refuses(tmp_path, running, capsys, case):
    cfg = lifecycle_config(tmp_path)
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 3, 60, "first verdicts")
    plant(svc.lifecycle.store, V2, case)
    for cmd in ("promote", "shadow"):
        with pytest.raises(ControlError, match=BAD_CARDS[case][1]) as e:
            request(cfg.lifecycle.socket, {"cmd": cmd, "model": str(V2)})
        assert e.value.exit_code == 2
        assert main(["model", cmd, str(V2), "--socket", str(cfg.lifecycle.socket)]) == 2
        assert "model_card.json" in capsys.readouterr().err
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 5, 60, "verdicts after the refusals")
    assert set(rec.versions()) == {V1.version} and svc.lifecycle.shadow is None
    assert svc.lifecycle.store.active_ref() == V1 and svc.lifecycle.store.previous_ref() is None
    assert svc.drift is not None and svc.drift.model.version == V1.version  # the drift guard stays on V1's envelope


# -- start ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_a_refused_pointer_falls_back_to_previous_with_an_alarm(tmp_path, running, case):
    cfg = lifecycle_config(tmp_path)
    store = ModelStore(cfg.lifecycle.store, "st1")
    store.stage(DEMO, Trust())
    plant(store, V2, case)
    store.set_active(V2, why="promoted by a version that did not check the card", previous=V1)
    svc, rec = running(cfg, max_frames=10)
    wait_done(svc, 60)
    assert set(rec.versions()) == {V1.version}
    assert svc.alarms.counts["model_fallback"] == 1
    assert store.active_ref() == V1 and store.previous_ref() is None  # list, status and the judging model agree
    assert store.active()["why"].startswith(f"fallback at start: {V2} refused")
    assert re.search(BAD_CARDS[case][1], store.active()["why"])


@pytest.mark.parametrize("previous", ["none", "refused_too"])
def test_a_refused_pointer_without_a_usable_previous_is_a_clear_error(tmp_path, previous):
    cfg = lifecycle_config(tmp_path)
    store = ModelStore(cfg.lifecycle.store, "st1")
    plant(store, V2, "crack_1.5")
    if previous == "refused_too":
        plant(store, V1, "pit_NaN")
    store.set_active(V2, why="test", previous=None if previous == "none" else V1)
    with pytest.raises(ModelError) as e:
        Service(cfg)
    assert f"active model {V2} is refused" in str(e.value) and re.search(r"thresholds\.crack: .*got 1\.5", str(e.value))
    if previous == "none":
        assert "names no previous version to fall back to" in str(e.value)
    else:
        assert re.search(rf"and so is its previous {V1} \(.*thresholds\.pit: .*got nan", str(e.value))
    conf = tmp_path / "station.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    assert main(["run", "--config", str(conf), "--max-frames", "1"]) == 2
    assert store.active_ref() == V2  # nothing moved: an operator fixes it


@pytest.mark.parametrize("case", CASES)
def test_start_refuses_a_bad_model_path_with_the_lifecycle_off(tmp_path, case):
    cfg = lifecycle_config(tmp_path, lifecycle={"enabled": False},
                           model={"path": str(bad_bundle(tmp_path / "b", "3.0.0", case))})
    with pytest.raises(ModelError, match=BAD_CARDS[case][1]):
        Service(cfg)


# -- model build ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thresholds, message", [
    ([0.2, math.nan, 0.3, 0.4], r"thresholds\.pit: .*got nan"),
    ([0.2, 0.3, 1.5, 0.4], r"thresholds\.crack: .*got 1\.5"),
    ([0.2, 0.3, 0.4, 0.0], r"thresholds\.contamination: .*got 0\.0 \(it would reject every part"),
])
def test_model_build_refuses_to_write_a_card_the_line_would_refuse(tmp_path, monkeypatch, capsys, thresholds,
                                                                   message):
    """The real builder on models/demo's IRs (2 + 2 synthetic frames); only the calibration's answer is
    forced, as a calibration gone wrong would give it."""
    import inspector.training.card as card_mod

    monkeypatch.setattr(card_mod, "calibrate_thresholds",
                        lambda val, nc, target: (np.array(thresholds, np.float64), np.full(nc, 0.99)))
    (tmp_path / "calib").mkdir()
    out = tmp_path / "out"
    rc = main(["model", "build", "--fp32", str(DEMO / "model_fp32.xml"), "--int8", str(DEMO / "model_int8.xml"),
               "--out", str(out), "--n-val", "2", "--n-test", "2", "--calibration", str(tmp_path / "calib")])
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "model_card.json").exists()


# -- item 17: what was verified is what is compiled; each file hashed once -----------------------------------------
def test_promote_compiles_the_bytes_it_verified(tmp_path, store_v2, running, monkeypatch):
    """The files are replaced (by a model that rejects every part) right after the check: the promoted
    model is still the one verified, so the line keeps passing good parts."""
    swap = reject_everything(tmp_path / "swap", "0.0.0")
    cfg = lifecycle_config(tmp_path)
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 3, 60, "first verdicts")
    store = svc.lifecycle.store
    verify = store.verify

    def verify_then_replace(ref, trust, precision=None):
        checked = verify(ref, trust, precision)
        for name in ("model_int8.xml", "model_int8.bin"):
            shutil.copyfile(swap / name, store.path(ref) / name)
        return checked

    monkeypatch.setattr(store, "verify", verify_then_replace)
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    rec.wait(lambda vs: sum(v.model.version == V2.version for v in vs) >= 40, 120, "40 verdicts of V2")
    after = [v for v in rec.verdicts if v.model.version == V2.version]
    assert any(v.outcome is Outcome.PASS for v in after), "the replaced files were compiled, not the verified bytes"


PRECISIONS = ("int8", "fp32")


def other(precision: str) -> str:
    return "fp32" if precision == "int8" else "int8"


def ir_files(precision: str, n: int) -> dict[str, int]:
    return {f"model_{precision}.xml": n, f"model_{precision}.bin": n}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_start_without_the_lifecycle_hashes_its_precision_once(tmp_path, running, monkeypatch, precision):
    """model.path with the lifecycle off: the precision run is read, hashed and compiled from those bytes once;
    the other precision's files are not touched (load_bundle checks the IR it loads)."""
    cfg = lifecycle_config(tmp_path, lifecycle={"enabled": False}, model={"precision": precision})
    hashed = HashCounter(monkeypatch)
    svc, rec = running(cfg, max_frames=3)
    wait_done(svc, 120)
    demo_card = json.loads((DEMO / "model_card.json").read_text())
    assert hashed.per_file(demo_card) == {**ir_files(precision, 1), **ir_files(other(precision), 0)}
    assert svc.pipeline.model.version == V1.version and len(rec.verdicts) == 3


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_first_start_and_a_promote_hash_each_file_once(tmp_path, running, monkeypatch, precision):
    """With the lifecycle on: the first start stages models/demo into the store (every file the card names is
    hashed once, in the copy) and compiles the bytes it hashed; a promote checks the stored candidate (each
    of its files once) and compiles those bytes; a restart on the pointer checks it once more."""
    cfg = lifecycle_config(tmp_path, model={"precision": precision})
    store = ModelStore(tmp_path / "store", "st1")
    store.stage(make_bundle(tmp_path / "bundles" / "v2", V2.version, fp32=True), Trust())
    hashed = HashCounter(monkeypatch)
    svc, rec = running(cfg)
    demo_card = json.loads((DEMO / "model_card.json").read_text())
    assert hashed.per_file(demo_card) == {**ir_files("int8", 1), **ir_files("fp32", 1)}
    rec.wait(lambda vs: len(vs) >= 3, 60, "first verdicts")
    hashed.clear()
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    v2_card = json.loads((store.path(V2) / "model_card.json").read_text())
    assert hashed.per_file(v2_card) == {**ir_files("int8", 1), **ir_files("fp32", 1)}
    rec.wait(lambda vs: any(v.model.version == V2.version for v in vs), 60, "a verdict of V2")
    svc.stop(deadline_s=5)
    hashed.clear()
    svc2, _ = running(cfg, max_frames=3)  # a restart on the pointer: once more, once each
    assert hashed.per_file(v2_card) == {**ir_files("int8", 1), **ir_files("fp32", 1)}
    assert svc2.pipeline.model.version == V2.version
