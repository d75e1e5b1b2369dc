"""Golden parts on the running service (issue 14): a reference image inspected every N seconds through the
same path (real OpenVINO, models/demo), never actuated nor counted as a part; a wrong verdict raises
`golden_part_failed`; a physical golden part is recognised by its part id on a triggered line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import pytest

from inspector.config import InspectorConfig
from inspector.devtools.testing import ListSink
from inspector.errors import ConfigError
from inspector.service.app import Service
from inspector.service.metrics import families
from inspector.sources.conveyor import ConveyorGenerator

REPO = Path(__file__).resolve().parents[2]
SEED = 777




def defective_index(start: int = 0) -> int:
    gen = ConveyorGenerator(SEED)
    return next(i for i in range(start, start + 50) if gen.part(i).defects)


@pytest.fixture(scope="module")
def golden_image(tmp_path_factory) -> Path:
    """A defective part of the synthetic line as the reference image (models/demo rejects it)."""
    path = tmp_path_factory.mktemp("golden") / "golden-reject.png"
    cv2.imwrite(str(path), ConveyorGenerator(SEED).part(defective_index()).image)
    return path


def make_config(golden: dict, *, parts_per_s: float = 10.0, trigger: str = "triggered") -> InspectorConfig:
    return InspectorConfig(
        source={"kind": "synthetic", "seed": SEED, "parts_per_s": parts_per_s, "queue_size": 64, "trigger": trigger},
        model={"path": REPO / "models/demo"}, decision={"budget_ms": 400},
        mqtt={"enabled": False}, sampling={"enabled": False}, upload={"window": None}, metrics={"enabled": False},
        golden=golden)


def wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if got := cond():
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start(cfg: InspectorConfig) -> tuple[Service, ListSink, list]:
    svc = Service(cfg)
    rec = ListSink()
    svc.pipeline.sinks.append(rec)
    alarms: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def on_alarm(kind, detail):
        with lock:
            alarms.append((kind, detail))

    svc.alarms.attach(on_alarm)
    svc.start()
    return svc, rec, alarms


@pytest.mark.parametrize("parts_per_s, idle_wait_s", [
    pytest.param(10.0, 30.0, id="idle-gaps"),  # 100 ms between parts: injected in a gap
    pytest.param(40.0, 0.3, id="busy-line"),  # a part every 25 ms, never idle 50 ms: after a part, once waited
])
def test_golden_image_is_checked_never_actuated_never_counted(golden_image, parts_per_s, idle_wait_s):
    cfg = make_config({"parts": [{"image": str(golden_image), "expect": "REJECT", "every_s": 1}],
                       "idle_wait_s": idle_wait_s}, parts_per_s=parts_per_s)
    svc, rec, alarms = start(cfg)
    try:
        wait_for(lambda: svc.golden.state()["ok"] >= 2, 60, "two golden checks")
    finally:
        svc.stop(deadline_s=5.0)
    g = svc.golden.state()
    assert g["failed"] == 0 and not [k for k, _ in alarms if k == "golden_part_failed"]
    last = g["last"]["golden-reject.png"]
    assert last["expected"] == last["got"] == "REJECT" and last["defects"] and last["frame_id"] < 0
    # Never a part: no sink saw it, the counts are the line's parts only, frame ids are the source's.
    assert rec.verdicts and all(v.frame.golden is None and v.frame_id >= 0 for v in rec.verdicts)
    st = svc.pipeline.stats
    assert st.frames == len(rec.verdicts) == st.truth_parts
    r = svc.report(full=True)
    assert r.summary(1.0)["golden"]["ok"] >= 2
    checks = {s.labels["result"]: s.value for s in next(f for f in families(r) if f.name == "inspector_golden_checks")
              .samples if s.name.endswith("_total")}
    assert checks["ok"] >= 2 and checks["failed"] == 0


def test_a_wrong_golden_verdict_raises_golden_part_failed(golden_image):
    cfg = make_config({"parts": [{"name": "ref-1", "image": str(golden_image), "expect": "PASS", "every_s": 1}]})
    svc, rec, alarms = start(cfg)
    try:
        wait_for(lambda: [d for k, d in alarms if k == "golden_part_failed"], 60, "golden_part_failed")
    finally:
        svc.stop(deadline_s=5.0)
    d = next(d for k, d in alarms if k == "golden_part_failed")
    assert d["name"] == "ref-1" and d["expected"] == "PASS" and d["got"] == "REJECT" and d["defects"]
    assert rec.verdicts and all(v.frame.golden is None for v in rec.verdicts)


def test_a_physical_golden_part_is_recognised_by_its_part_id():
    """Triggered line: the golden part is a part on the belt (published as any part), checked by its id."""
    i = defective_index(5)
    j = defective_index(i + 1)
    pid = lambda k: f"S{SEED}-{k:07d}"  # noqa: E731 - the synthetic source's part ids
    cfg = make_config({"parts": [{"part_id": pid(i), "expect": "REJECT"},
                                 {"part_id": pid(j), "expect": "PASS", "name": "wrong-expectation"}]})
    svc = Service(cfg, max_frames=j + 3)
    rec = ListSink()
    svc.pipeline.sinks.append(rec)
    alarms: list = []
    svc.alarms.attach(lambda k, d: alarms.append((k, d)))
    svc.start()
    try:
        assert svc.pipeline.done.wait(60)
    finally:
        svc.stop(deadline_s=5.0)
    g = svc.golden.state()
    assert g["last"][pid(i)]["result"] == "ok" and g["last"]["wrong-expectation"]["result"] == "failed"
    assert [d["name"] for k, d in alarms if k == "golden_part_failed"] == ["wrong-expectation"]
    assert {v.part_id for v in rec.verdicts} >= {pid(i), pid(j)}  # published as parts


@pytest.mark.parametrize("golden, match", [
    ({"parts": [{"image": "/nonexistent/golden.png", "expect": "PASS"}]}, r"golden.parts\[0\].image: .*missing"),
    ({"parts": [{"image": __file__, "expect": "PASS"}]}, r"golden.parts\[0\].image: .*not a readable image"),
    ({"parts": [{"part_id": "A", "expect": "PASS"}, {"part_id": "A", "expect": "REJECT"}]}, "names must be unique"),
])
def test_bad_golden_config_is_refused_naming_the_field(golden, match):
    with pytest.raises(ConfigError, match=match):
        Service(make_config(golden))


def _overdue_run(cfg: InspectorConfig) -> tuple[Service, dict, list]:
    from tests.waiting import wait_for as wait_until

    svc, rec, alarms = start(cfg)
    try:
        wait_until(lambda: [d for k, d in list(alarms) if k == "golden_part_overdue"], 60, "golden_part_overdue")
        wait_until(lambda: not {c.name: c.ok for c in svc.report().health}.get("golden", True), 10,
                   "the golden health check red")
        r = svc.report()
    finally:
        svc.stop(deadline_s=5.0)
    d = next(d for k, d in alarms if k == "golden_part_overdue")
    golden = {c.name: c for c in r.health}["golden"]
    assert not r.healthy and d["name"] in golden.detail and "overdue" in golden.detail
    assert r.golden["overdue"] == [d["name"]] and r.golden["overdue_alarms"] == 1
    fams = {f.name: f for f in families(r)}
    assert fams["inspector_golden_overdue"].samples[0].value == 1.0
    assert {s.labels["check"]: s.value for s in fams["inspector_health_check"].samples}["golden"] == 0.0
    return svc, d, alarms


@pytest.mark.parametrize("comes_at, never_judged, last_result", [
    pytest.param(None, True, None, id="never-comes"),  # 100 000 verdicts without it used to raise nothing
    pytest.param(5, False, "ok", id="came-once-then-never-again"),
])
def test_a_golden_part_id_that_does_not_come_within_max_interval_is_overdue(comes_at, never_judged, last_result):
    i = defective_index(comes_at) if comes_at is not None else 0
    part_id = f"S{SEED}-{i:07d}" if comes_at is not None else "GOLDEN-NEVER-ON-THE-BELT"
    cfg = make_config({"parts": [{"part_id": part_id, "expect": "REJECT", "name": "ref"}], "max_interval_s": 2.0})
    svc, d, alarms = _overdue_run(cfg)
    assert d["mode"] == "part_id" and d["part_id"] == part_id and d["max_interval_s"] == 2.0
    assert d["never_judged"] is never_judged and d["last_result"] == last_result and d["since_s"] >= 2.0
    assert svc.pipeline.stats.frames > 0, "production parts were judged meanwhile"


def test_a_golden_image_whose_every_check_is_late_is_overdue(golden_image):
    """A budget no inference can meet: every golden check is LATE (not judged), none counts."""
    cfg = make_config({"parts": [{"image": str(golden_image), "expect": "REJECT", "every_s": 1, "name": "img"}],
                       "max_interval_s": 2.5, "idle_wait_s": 0.2})
    cfg = cfg.model_copy(update={"decision": cfg.decision.model_copy(update={"budget_ms": 0.05})})
    svc, d, alarms = _overdue_run(cfg)
    g = svc.golden.state()
    assert d["mode"] == "image" and d["never_judged"] is True and d["late"] >= 1
    assert g["ok"] == g["failed"] == 0 and g["late"] >= 1
    assert not [k for k, _ in alarms if k == "golden_part_failed"]


def test_an_unset_max_interval_watches_image_parts_at_three_periods():
    from inspector.config import GoldenConfig
    from inspector.service.golden import GoldenParts

    g = GoldenParts(GoldenConfig(parts=[{"part_id": "P", "expect": "PASS"}], idle_wait_s=30), inject=None)
    assert g.max_interval == {"P": None}
    g2 = GoldenParts(GoldenConfig(parts=[{"part_id": "P", "expect": "PASS"}], max_interval_s=600), inject=None)
    assert g2.max_interval == {"P": 600}
