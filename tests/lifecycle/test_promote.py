"""Promote without stopping the line: the switch happens between two frames, every frame gets exactly
one verdict, frames before the switch name the old version and frames after it the new one, the
pointer file follows, and a refused bundle changes nothing. Real OpenVINO on models/demo; the second
bundle is the same IR under another version (tests/lifecycle/bundles.py)."""

from __future__ import annotations

import json

import pytest

from inspector.frames import Outcome
from inspector.lifecycle.control import ControlError, request
from tests.lifecycle.conftest import V1, V2, lifecycle_config, wait_done

N = 120


def one_boundary(versions: list[str], old: str, new: str) -> int:
    """The index of the first `new` verdict; asserts old* new* (one switch, no interleaving)."""
    first = versions.index(new)
    assert set(versions[:first]) == {old} and set(versions[first:]) == {new}, versions
    return first


def test_promote_switches_between_two_frames(tmp_path, store_v2, running):
    cfg = lifecycle_config(tmp_path)
    svc, rec = running(cfg, max_frames=N)
    rec.wait(lambda vs: len(vs) >= 30, 60, "30 verdicts on V1")
    r = request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    assert (r["active"], r["previous"]) == (str(V2), str(V1))
    wait_done(svc, 60)
    svc.stop(deadline_s=5)
    vs = rec.verdicts
    frame_ids = [v.frame_id for v in vs]
    assert sorted(frame_ids) == list(range(frame_ids[0], frame_ids[0] + N)), "a frame without (or with two) verdicts"
    snap = svc.pipeline.snapshot()
    assert snap.frames_read == N and snap.unanswered == 0 and not svc.pipeline.stats.dropped
    by_frame = sorted(vs, key=lambda v: v.frame_id)
    first = one_boundary([v.model.version for v in by_frame], V1.version, V2.version)
    assert by_frame[first - 1].frame_id == r["last_old_frame_id"]
    assert all(v.outcome is not Outcome.LATE for v in vs)
    pointer = json.loads(svc.lifecycle.store.pointer_path.read_text())
    assert (pointer["name"], pointer["version"], pointer["previous"]["version"]) == ("demo", V2.version, V1.version)
    assert svc.lifecycle.wait_released(10)  # the old model let go once its frames were answered
    summary = svc.summary(1.0)
    assert set(summary["verdicts_by_model"]) == {str(V1), str(V2)}
    assert svc.report().heartbeat()["model"] == str(V2)


@pytest.mark.parametrize("damage", ["bin_byte", "card_sha", "missing_xml"])
def test_promote_refuses_a_damaged_bundle_and_keeps_judging(tmp_path, store_v2, running, damage):
    cfg = lifecycle_config(tmp_path)
    svc, rec = running(cfg)
    path = store_v2.path(V2)
    if damage == "bin_byte":
        b = path / "model_int8.bin"
        data = bytearray(b.read_bytes())
        data[len(data) // 2] ^= 0xFF
        b.write_bytes(bytes(data))
    elif damage == "card_sha":
        card = json.loads((path / "model_card.json").read_text())
        card["files"]["int8"]["xml_sha256"] = "0" * 64
        (path / "model_card.json").write_text(json.dumps(card))
    else:
        (path / "model_int8.xml").unlink()
    rec.wait(lambda vs: len(vs) >= 5, 60, "first verdicts")
    with pytest.raises(ControlError) as e:
        request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    assert e.value.exit_code == 2
    assert "model_int8" in str(e.value) and ("sha256 mismatch" in str(e.value) or "missing" in str(e.value))
    n = len(rec.verdicts)
    rec.wait(lambda vs: len(vs) >= n + 10, 60, "verdicts after the refusal")
    assert set(rec.versions()) == {V1.version}
    assert svc.lifecycle.store.active_ref() == V1


def test_promote_an_unknown_version_is_bad_input(tmp_path, running):
    cfg = lifecycle_config(tmp_path)
    running(cfg)
    with pytest.raises(ControlError) as e:
        request(cfg.lifecycle.socket, {"cmd": "promote", "model": "demo@9.9.9"})
    assert e.value.exit_code == 2 and "not in the store" in str(e.value)


def test_restart_comes_back_on_the_promoted_version(tmp_path, store_v2, running):
    cfg = lifecycle_config(tmp_path)
    svc, rec = running(cfg)
    rec.wait(lambda vs: len(vs) >= 3, 60, "first verdicts")
    request(cfg.lifecycle.socket, {"cmd": "promote", "model": str(V2)})
    svc.stop(deadline_s=5)
    svc2, rec2 = running(cfg, max_frames=5)
    wait_done(svc2, 60)
    assert set(rec2.versions()) == {V2.version}

