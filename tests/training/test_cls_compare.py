"""`inspector compare` on classifier bundles (models/demo-cls and a candidate: the same weights at a higher card
threshold, so the verdicts that change are known) on a classification dataset version made through the CLI: the
synthetic line's frames imported as folders, a classifier's night reviewed as folders and imported, merged (the
regression set frozen); accuracy, NG recall, escapes, false rejects and McNemar per set; an edited regression set
and a detector refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.training.compare import mcnemar
from tests.review.cls_night import NIGHT, cls_spool_and_upload

REPO = Path(__file__).resolve().parents[2]
DEMO_CLS = REPO / "models" / "demo-cls"
OLD_T = 0.8564  # demo-cls's card: ng


def make_version(tmp: Path) -> Path:
    """tmp/v2: 40 synthetic-line frames (seed 5) imported as folders (25 % val, 40 % test: the regression set, 16
    frames) merged with a classifier's night reviewed as folders (the review: source of the new frames)."""
    assert main(["synth", "--task", "classify", "--out", str(tmp / "src"), "--n", "40", "--seed", "5",
                 "--workers", "1"]) == 0
    assert main(["dataset", "import", "--from", "folders", str(tmp / "src"), "--out", str(tmp / "base"),
                 "--val-fraction", "0.25", "--test-fraction", "0.4"]) == 0
    cfg = cls_spool_and_upload(tmp / "night", f"file://{tmp / 'uploads'}")
    review = tmp / "review"
    assert main(["review", "export", str(review), "--config", str(cfg), "--since", NIGHT, "--until", NIGHT,
                 "--to", "folders"]) == 0
    assert main(["dataset", "import", "--from", "folders", str(review), "--out", str(tmp / "reviewed"),
                 "--val-fraction", "0.4"]) == 0
    assert main(["dataset", "merge", str(tmp / "base"), str(tmp / "reviewed"), "--out", str(tmp / "v2"),
                 "--val-fraction", "0.5"]) == 0
    return tmp / "v2"


@pytest.fixture(scope="module")
def version(tmp_path_factory) -> Path:
    return make_version(tmp_path_factory.mktemp("cls-compare"))


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, version) -> tuple[Path, float]:
    """demo-cls's weights at a higher NG threshold: the median p(ng) of the version's NG frames that demo-cls
    rejects (it is sure of most of this line's parts: a fixed threshold might change nothing). It rejects only
    parts the old one rejects, so it can only add escapes and fix false rejects."""
    from inspector.training.cls_infer import ClsIR

    rejected = sorted(p for p in ClsIR(DEMO_CLS / "model_int8.xml").probs_of(sorted(version.glob("*/ng/*")))[:, 0]
                      if p >= OLD_T)
    t = round(rejected[len(rejected) // 2], 4)
    out = tmp_path_factory.mktemp("cand") / "demo-cls-rc"
    shutil.copytree(DEMO_CLS, out)
    card = json.loads((out / "model_card.json").read_text())
    card["thresholds"]["ng"], card["version"] = t, "0.1.1-rc.1"
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    return out, t


def compare(old: Path, new: Path, data: Path, tmp_path: Path) -> tuple[int, dict | None]:
    out = tmp_path / "c.json"
    rc = main(["compare", str(old), str(new), "--data", str(data), "--json", str(out), "--html",
               str(tmp_path / "c.html")])
    return rc, json.loads(out.read_text()) if rc == 0 else None


def test_demo_cls_against_itself_changes_nothing(version, tmp_path, capsys):
    rc, r = compare(DEMO_CLS, DEMO_CLS, version, tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert r["task"] == "classify" and r["regression_frozen"] and r["new_source"] == f"review:{NIGHT}..{NIGHT}"
    assert r["sets"]["regression"]["images"] == 16 and r["sets"]["new"]["images"] >= 1
    for s in r["sets"].values():
        assert s["changed"] == [] and s["verdict"] == "not significant"
        assert s["mcnemar"] == {"b_old_right_new_wrong": 0, "c_old_wrong_new_right": 0, "p": 1.0}
        assert s["old"] == s["new"]
    assert r["recommendation"].startswith("NOT SIGNIFICANT")
    assert "regression: 16 frames, frozen regression set, sha256 verified" in capsys.readouterr().out


def test_a_version_without_reviewed_frames_says_so(version, tmp_path, capsys):
    """BASE (imported, never merged) has no review: source: the new set is empty and the report says why (ELPV: the
    line ran the regression parts, so the merge left every reviewed frame out)."""
    capsys.readouterr()
    rc, r = compare(DEMO_CLS, DEMO_CLS, version.parent / "base", tmp_path)
    assert rc == 0 and r["new_source"] is None and r["sets"]["new"]["images"] == 0
    out = capsys.readouterr().out
    assert "new: 0 frames, no newly reviewed frames in this version (no review: source among its images)" in out
    assert "None" not in out


def test_a_higher_threshold_adds_escapes_and_fixes_false_rejects_counted_by_mcnemar(version, candidate, tmp_path):
    bundle, t = candidate
    rc, r = compare(DEMO_CLS, bundle, version, tmp_path)
    assert rc == 0
    total_changed = 0
    for s in r["sets"].values():
        o, n = s["old"], s["new"]
        fixed = [e for e in s["changed"] if e["change"] == "fixed false reject"]
        broken = [e for e in s["changed"] if e["change"] == "new escape"]
        assert len(fixed) + len(broken) == len(s["changed"])  # a higher threshold can do nothing else
        for e in s["changed"]:  # exactly the frames whose p(ng) lies in [0.8564, t)
            assert OLD_T <= e["old_scores"]["ng"] < t and e["old_scores"] == e["new_scores"]
        assert n["escapes"] - o["escapes"] == len(broken) and o["false_rejects"] - n["false_rejects"] == len(fixed)
        m = s["mcnemar"]
        assert (m["c_old_wrong_new_right"], m["b_old_right_new_wrong"]) == (len(fixed), len(broken))
        assert m["p"] == pytest.approx(mcnemar(len(broken), len(fixed)), abs=1e-6)
        assert n["accuracy"] == pytest.approx(o["accuracy"] + (len(fixed) - len(broken)) / s["images"], abs=1e-4)
        total_changed += len(s["changed"])
    assert total_changed > 0  # the set holds frames between the thresholds (else this test proves nothing)
    assert "new escape" in (tmp_path / "c.html").read_text()


def _move_class(reg: Path) -> str:
    f = next((reg / "ng").iterdir())
    shutil.move(f, reg / "ok" / f.name)
    return f"test/{f.name}: moved from class 'ng' to 'ok'"


def _delete(reg: Path) -> str:
    f = next((reg / "ok").iterdir())
    f.unlink()
    return f"test/ok/{f.name}: deleted"


@pytest.mark.parametrize("spoil", [_move_class, _delete])
def test_an_edited_regression_set_is_refused_naming_the_change(version, tmp_path, capsys, spoil):
    data = tmp_path / "v2"
    shutil.copytree(version, data)
    why = spoil(data / "test")
    rc, _ = compare(DEMO_CLS, DEMO_CLS, data, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "regression set" in err and why in err, err


def test_a_detector_against_a_classifier_is_refused(version, tmp_path, capsys):
    rc, _ = compare(DEMO_CLS, REPO / "models" / "demo", version, tmp_path)
    assert rc == 2 and "is a detect bundle: compare a classifier with a classifier" in capsys.readouterr().err
