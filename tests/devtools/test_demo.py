"""`inspector demo` end to end, as `make demo` runs it: private broker, actuator, the service on
the synthetic line, the spool, and the upload with its manifest and gallery.

Every reject the service decided (verdicts.jsonl + its boot) must have reached the actuator or be
named in an `escaped_part` alarm, with no duplicate at the actuator; and the escape and false-reject
rates must agree with what the model card claims for the shipped model."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.devtools.broker import mosquitto_available
from inspector.signalling.payloads import reject_id

REPO = Path(__file__).resolve().parents[2]
FRAMES = 120


# -- binomial bounds (exact, stdlib only) --------------------------------------------------------
def binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def claim_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate measured as k events in n trials."""
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: P(X <= k | p) falls as p grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binom_cdf(k, n, mid) > 1 - conf else (lo, mid)
    return hi


def most_allowed(n: int, p: float, q: float = 0.99) -> int:
    """The largest count a run of n trials shows with probability q when the true rate is p."""
    m = 0
    while binom_cdf(m, n, p) < q:
        m += 1
    return m


@pytest.mark.parametrize(("k", "n", "expected"), [
    (0, 316, 1 - 0.05 ** (1 / 316)),  # zero events: the closed form 1 - alpha^(1/n)
    (1, 184, 0.0255),  # one event: tables give 0.0255 (one-sided 95 %)
])
def test_claim_upper_bound_matches_the_closed_form_and_tables(k, n, expected):
    assert claim_upper(k, n) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize(("n", "p", "expected"), [
    (86, 0.0, 0),  # a rate of zero allows nothing
    (10, 0.5, 9),  # fair coin: P(X <= 8) = 1013/1024 < 0.99 <= P(X <= 9) = 1023/1024
    (1, 0.5, 1),
])
def test_most_allowed_count(n, p, expected):
    assert most_allowed(n, p) == expected


# -- the demo --------------------------------------------------------------------------------------
def _card_claims() -> dict:
    card = json.loads((REPO / "models/demo/model_card.json").read_text())
    parts = card["evaluation"]["int8"]["parts"]  # the demo runs the INT8 IR (configs/demo.yaml)
    return {"escape": (parts["escapes"], parts["defective_parts"]),
            "false_reject": (parts["false_rejects"], parts["good_parts"])}


@pytest.mark.slow
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
def test_demo_runs_the_whole_line(tmp_path):
    env = dict(os.environ, INSPECTOR_MODEL__PATH=str(REPO / "models" / "demo"))
    r = subprocess.run([sys.executable, "-m", "inspector", "demo", "--config", str(REPO / "configs" / "demo.yaml"),
                        "--frames", str(FRAMES)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
                       check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    work = tmp_path / "var/demo"
    summary = json.loads((work / "summary.json").read_text())
    assert summary["frames"] == FRAMES

    # Every reject the service decided, by id: delivered to the actuator or named in an escaped_part alarm.
    mqtt = summary["sinks"]["mqtt"]
    verdicts = [json.loads(ln) for ln in (work / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == FRAMES
    decided = {reject_id("line1", "st1", mqtt["boot"], v["frame_id"]) for v in verdicts if v["actuate"]}
    assert len(decided) == summary["actuations"]
    line = json.loads((work / "actuator.json").read_text())
    delivered = set(line["actuated"]) | set(line["expired"])  # refused as late: delivered, the line knows
    alarmed = set(line["escaped_ids"])
    lost, foreign = decided - delivered - alarmed, (delivered | alarmed) - decided
    assert not lost, f"{len(lost)} rejects neither delivered nor alarmed, e.g. {sorted(lost)[:5]}"
    assert not foreign, f"ids the service never decided: {sorted(foreign)[:5]}"
    assert line["duplicates"] == 0 and line["invalid"] == 0
    assert len(line["actuated"]) == len(set(line["actuated"]))

    # The model's rates on this run agree with the card's held-out claims: at most what a run of this
    # size shows with 99 % probability at the card's 95 % upper bound. A LATE verdict is a fail-safe
    # reject (configs/demo.yaml on_late: reject): it cannot escape, and a LATE good part is a deadline
    # miss, not a model false reject, so it is taken off the false rejects.
    gt = summary["ground_truth"]
    claims = _card_claims()
    late = summary["verdicts"]["LATE"]
    allowed_escapes = most_allowed(gt["defective"], claim_upper(*claims["escape"]))
    allowed_false = most_allowed(gt["good"], claim_upper(*claims["false_reject"]))
    assert gt["escapes"] <= allowed_escapes, (gt, claims)
    assert gt["false_rejects"] - late <= allowed_false, (gt, late, claims)

    # Sampled frames left the spool for the destination: manifest lines carry their reasons, and the gallery exists.
    day = next((work / "uploads").iterdir())
    lines = [json.loads(x) for x in (day / "manifest.jsonl").read_text().splitlines()]
    assert lines and all(x["reasons"] and x["verdict"] and x["model"] for x in lines)
    gallery = (day / "gallery.html").read_text()
    assert gallery.count("data:image/jpeg;base64,") >= 1  # self-contained thumbnails
    assert "line side:" in out and "refused as late" in out
