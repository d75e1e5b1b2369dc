"""Issue 15's acceptance through `inspector run` as a process, on real parts: Aravis' fake GigE Vision
camera (software trigger, 127.0.0.1), a private Mosquitto, the demo model, the PLC handshake and the OPC UA
server, with `inspector plc-sim` (or its PlcSimulator) as the PLC and an independent recorder on the
station's topics.

- 300 triggers at 10 parts/s at an 80 ms budget: every trigger answered once, with its part id and
  sequence; bad trigger payloads are refused with an alarm and the loop goes on; the trigger -> result
  figures are printed and written to line-acceptance.json under the session's tmp folder (timing is
  recorded here, not asserted: house rule, the figures live in docs/controls-engineer.md).
- The camera killed mid-run: camera_lost between the kill and the restart, every trigger of the outage
  answered fail-safe NG, camera_restored (clears camera_lost) when it is back, inspections resume in the
  same process; and .../reject stays silent: in handshake mode the PLC's result is the part's only answer.
- Bad input: exit 2 naming the problem (unsupported pixel format, one the camera does not offer, an
  unknown camera id listing the cameras found; discovery only inside a private network namespace).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from inspector.config import MQTTConfig
from inspector.devtools.plc_sim import PlcSimulator
from tests.fixtures.genicam_camera import run_isolated
from tests.fixtures.mqtt_broker import Recorder, mqtt_config

REPO = Path(__file__).resolve().parents[2]
BUDGET_MS = 80.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, mqtt: MQTTConfig | None, *, source: str, plc: bool = True, opcua_port: int = 0,
                 metrics_port: int = 0) -> Path:
    mq = ("mqtt: {enabled: false}" if mqtt is None else
          f"mqtt: {{host: {mqtt.host}, port: {mqtt.port}, station: {mqtt.station}, "
          f"outbox_path: {tmp_path / 'outbox.sqlite'}, reconnect_min_s: 0.1, reconnect_max_s: 0.5}}")
    p = tmp_path / "line.yaml"
    p.write_text(textwrap.dedent(f"""\
        source: {source}
        model: {{path: {REPO / 'models/demo'}}}
        decision: {{budget_ms: {BUDGET_MS:g}, on_late: reject}}
        {mq}
        plc: {{enabled: {str(plc).lower()}, camera: software, pairing_window_ms: 150, max_in_flight: 8}}
        opcua: {{enabled: {str(bool(opcua_port)).lower()}, port: {opcua_port}, namespace: "urn:inspector:line-test"}}
        sampling: {{enabled: false}}
        upload: {{window: null}}
        metrics: {{enabled: {str(bool(metrics_port)).lower()}, port: {metrics_port}}}
        sink: {{jsonl: {tmp_path / 'verdicts.jsonl'}}}
        """))
    return p


CAMERA = ("{kind: genicam, address: 127.0.0.1, camera_trigger: software, pixel_format: Mono8, exposure_us: 2000, "
          "roi: [0, 0, 512, 512], lost_after_ms: 500, reconnect_initial_ms: 100, reconnect_max_ms: 500}")


class Inspector:
    """`inspector run` as the line runs it; its log and summary under tmp_path."""

    def __init__(self, cfg: Path, tmp_path: Path) -> None:
        self.log_path = tmp_path / "run.log"
        self.summary_path = tmp_path / "summary.json"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(cfg), "--no-live",
                                      "--summary-json", str(self.summary_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"inspector run exited ({self.proc.returncode}):\n{self.log()}")

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}


def wait_for(cond, timeout: float, what: str, inspector: Inspector | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if inspector is not None:
            inspector.alive()
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f"\n{inspector.log()}" if inspector is not None else ""))


def ready_state(sim: PlcSimulator) -> str | None:
    with sim._lock:
        return sim.ready[-1]["state"] if sim.ready else None


def read_opcua(port: int, names: list[str]) -> dict:
    import asyncua

    async def go() -> dict:
        async with asyncua.Client(url=f"opc.tcp://127.0.0.1:{port}/inspector/", timeout=10) as client:
            idx = await client.get_namespace_index("urn:inspector:line-test")
            obj = await client.nodes.objects.get_child([f"{idx}:Inspector"])
            return {n: await (await obj.get_child([f"{idx}:{n}"])).read_value() for n in names}

    return asyncio.run(go())


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503: red, the body says why
        return json.loads(e.read())


@pytest.fixture
def line(mqtt_broker, fake_camera, tmp_path):
    """A running `inspector run` on the fake camera, a PLC simulator and a recorder, all on one station."""
    mqtt = mqtt_config(mqtt_broker, tmp_path)
    opcua_port, metrics_port = free_port(), free_port()
    cfg = write_config(tmp_path, mqtt, source=CAMERA, opcua_port=opcua_port, metrics_port=metrics_port)
    rec = Recorder(mqtt, topics=("reject", "alarm", "result", "ready")).start()
    sim = PlcSimulator(mqtt, budget_ms=BUDGET_MS).start()
    insp = Inspector(cfg, tmp_path)
    try:
        wait_for(lambda: ready_state(sim) == "ready", 60, "the station's retained ready state", insp)
        yield {"cfg": cfg, "mqtt": mqtt, "sim": sim, "rec": rec, "insp": insp, "camera": fake_camera,
               "opcua_port": opcua_port, "metrics_port": metrics_port}
    finally:
        sim.stop()
        insp.stop()
        rec.stop()


@pytest.fixture(scope="module")
def figures_file(tmp_path_factory) -> Path:
    """line-acceptance.json under the session's tmp folder: tests never write into the checkout."""
    return tmp_path_factory.mktemp("figures") / "line-acceptance.json"


def record_figures(path: Path, name: str, figures: dict) -> None:
    """Printed (`pytest -s` shows them) and kept in `path`."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    load1 = os.getloadavg()[0]
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    old[name] = {**figures, "cpu": model, "cores": os.cpu_count(), "load1": round(load1, 2),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps(old, indent=2))
    print(f"\n{name}: {json.dumps(old[name])}")


# -- acceptance: 300 parts ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_300_triggers_at_10_per_s_each_answered_with_its_part_id_and_seq(line, tmp_path, figures_file):
    sim, rec, insp = line["sim"], line["rec"], line["insp"]
    # Bad trigger payloads first: refused with a result and an alarm each, and the loop goes on.
    for raw in (b'{"seq": 7}', b"not json", b'{"part_id": "", "seq": 8}'):
        sim.send_raw(raw)
    wait_for(lambda: len(sim.unexpected) == 3, 20, "three bad_trigger results", insp)
    assert [r["reason"] for r in sim.unexpected] == ["bad_trigger"] * 3
    assert [r["seq"] for r in sim.unexpected] == [7, None, 8]
    assert all(r["result"] == "NG" and r["fail_safe"] for r in sim.unexpected)
    # PLC alarms are throttled like queue_full: the first at once, the other two summed into one later.
    wait_for(lambda: [m for m in rec.on("alarm") if m.payload["kind"] == "plc_bad_trigger"], 20,
             "the first plc_bad_trigger alarm", insp)
    assert "part_id" in sim.unexpected[0]["error"]

    # The PLC, as a controls engineer runs it.
    out = tmp_path / "plc-sim.json"
    done = subprocess.run([sys.executable, "-m", "inspector", "plc-sim", "--config", str(line["cfg"]), "--parts", "300",
                           "--rate", "10", "--json", str(out)], capture_output=True, text=True, timeout=120)
    rep = json.loads(out.read_text())
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{insp.log()}"
    assert (rep["sent"], rep["answered"], rep["missing"], rep["unexpected"]) == (300, 300, [], 0), rep
    # Inspected, or answered fail-safe NG with its cause counted. How many go fail-safe is timing, which a
    # loaded machine sets (a frame slower than 0.8 x budget: no_frame; an inference past the budget: late):
    # a figure, recorded below and in benchmarks/load.py, never this test's verdict.
    reasons = rep["reasons"]
    assert set(reasons) <= {"pass", "defect", "no_frame", "frame_lost", "late"}, rep
    assert reasons.get("pass", 0) + reasons.get("defect", 0) > 0, rep  # the model judged parts
    assert rep["fail_safe"] == sum(reasons.get(r, 0) for r in ("no_frame", "frame_lost", "late")), rep
    assert "trigger->result p50" in done.stdout and rep["latency_ms"]["p99"] > 0
    insp.alive()

    health = healthz(line["metrics_port"])
    assert health["ok"] and health["checks"]["plc"]["ok"] and health["plc"]["station"] == "ready", health
    assert health["checks"]["opcua"]["ok"], health
    # The camera's transport counters (lost/incomplete frames, resends) are exported, not only kept.
    with urllib.request.urlopen(f"http://127.0.0.1:{line['metrics_port']}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'inspector_camera_transport_total{counter="n_completed_buffers"}' in metrics, metrics[-2000:]
    opc = read_opcua(line["opcua_port"], ["State", "Parts", "Ok", "Ng", "FailSafe", "LastPartId"])
    # every result the PLC got (the three bad_trigger refusals are not parts), and the station state
    assert (opc["Parts"], opc["FailSafe"], opc["State"]) == (300, rep["fail_safe"], "ready"), opc
    summary = insp.stop()
    plc = summary["plc"]
    assert (plc["triggers"], plc["results"], plc["bad_triggers"]) == (300, 300, 3), plc
    # Throttled: 3 bad triggers -> the first alarm, then one summing the other two (at stop at the latest).
    bad = [m.payload for m in rec.on("alarm") if m.payload["kind"] == "plc_bad_trigger"]
    assert summary["alarms"].get("plc_bad_trigger") == len(bad) <= 2 and sum(a["detail"]["count"] for a in bad) == 3
    assert reasons.get("no_frame", 0) == plc["fail_safe"].get("no_frame", 0)
    assert (summary["alarms"].get("plc_no_frame", 0) > 0) == (reasons.get("no_frame", 0) > 0)
    assert summary["deadline_misses"] >= reasons.get("late", 0)  # each late result is a LATE verdict
    assert rec.on("reject") == [], "handshake mode: the PLC's result is the part's only answer"
    record_figures(figures_file, "300_parts_10_per_s", {
        "budget_ms": BUDGET_MS, "sent": rep["sent"], "answered": rep["answered"], "late_plc_clock": rep["late"],
        "trigger_to_result_ms_plc_clock": rep["latency_ms"], "trigger_to_result_ms_inspector": plc["latency_ms"],
        "late_results_inspector": plc["late_results"], "deadline_misses": summary["deadline_misses"],
        "fail_safe_no_frame": rep["fail_safe"],
        "camera_counters": {k: v for k, v in summary["source"]["counters"].items() if v}})


# -- acceptance: the camera killed mid-run ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_camera_killed_mid_run_is_lost_answered_fail_safe_restored_and_cleared(line, figures_file):
    sim, rec, insp, cam = line["sim"], line["rec"], line["insp"], line["camera"]
    marks: dict[str, float] = {}
    restarted = threading.Event()

    def restart() -> None:
        marks["restart"], marks["restart_wall"] = time.monotonic(), time.time()
        cam.start()  # waits until it answers GVCP
        restarted.set()

    def tick(i: int) -> None:
        if i == 20:
            marks["kill"], marks["kill_wall"] = time.monotonic(), time.time()
            cam.kill()
        elif i == 50:
            threading.Thread(target=restart, daemon=True).start()
        elif i > 50 and restarted.is_set() and "restored" not in marks and any(
                m.payload["kind"] == "camera_restored" for m in rec.on("alarm")):
            marks["restored"] = time.monotonic()  # triggers sent from here on must be inspected again

    rep = sim.run(130, rate=10, first_seq=5000, prefix="K", on_tick=tick, answer_timeout_s=10)
    # At least 20 parts after the camera is back, however long its return took on this machine (how long is a
    # figure, recorded below; fresh-clone run 47 took 6.3 s from restart to camera_restored and left 17 of 130):
    # more parts at the same rate, 30 s of them at most.
    sent = 130
    while sent < 430 and ("restored" not in marks
                          or sum(p.sent_at >= marks["restored"] for p in sim.parts.values()) < 20):
        rep = sim.run(10, rate=10, first_seq=5000 + sent, prefix="K", answer_timeout_s=10,
                      on_tick=lambda i, base=sent: tick(base + i))
        sent += 10
    insp.alive()  # recovered in the same process
    assert rep["missing"] == [] and rep["unexpected"] == 0 and rep["answered"] == sent, rep
    assert "restored" in marks, f"camera_restored never arrived: {[m.payload for m in rec.on('alarm')]}"

    alarms = [m.payload for m in rec.on("alarm")]
    lost = [a for a in alarms if a["kind"] == "camera_lost"]
    restored = [a for a in alarms if a["kind"] == "camera_restored"]
    assert len(lost) == 1 and len(restored) == 1, alarms
    assert restored[0]["clears"] == "camera_lost" and lost[0]["clears"] is None
    lost_after_s = json_time(lost[0]["raised_at"]) - marks["kill_wall"]
    # Order, not speed: lost after the kill and before the restart (how fast is a figure, recorded below).
    assert marks["kill_wall"] <= json_time(lost[0]["raised_at"]) < marks["restart_wall"], (marks, lost[0])
    assert json_time(restored[0]["raised_at"]) > json_time(lost[0]["raised_at"])

    parts = sorted(sim.parts.values(), key=lambda p: p.seq)
    outage = [p for p in parts if marks["kill"] <= p.sent_at < marks["restart"]]
    after = [p for p in parts if p.sent_at >= marks["restored"]]
    assert len(outage) == 30 and len(after) >= 20, (len(outage), len(after))
    assert all(p.result["fail_safe"] and p.result["result"] == "NG" for p in outage), [p.result for p in outage]
    assert {p.result["reason"] for p in outage} <= {"camera_lost", "no_frame"}
    # Inspected before the kill and after the return. A frame slower than 0.8 x budget on a loaded machine
    # is answered fail-safe no_frame (timing, not the outage): a few are tolerated, nothing else.
    for phase in (after, [p for p in parts if p.sent_at < marks["kill"] - 0.2]):
        slow = [p.result for p in phase if p.result["fail_safe"]]
        assert len(slow) <= 2 and all(r["reason"] == "no_frame" for r in slow), [
            (r["seq"], r["reason"], r.get("error")) for r in slow]
        assert all(p.result["frame_id"] is not None for p in phase if not p.result["fail_safe"])
    states = [s["state"] for s in sim.ready]
    assert "fault" in states and states[-1] == "ready", states

    # NG went out on .../result for every part of the outage, and nothing on .../reject: no second path
    # that could eject a part twice, and none that misses the parts answered without a frame.
    wait_for(lambda: len(rec.on("result")) >= sent, 10, "the recorder's copy of every result", insp)
    assert rec.on("reject") == []
    ng_results = [m for m in rec.on("result") if m.payload["result"] == "NG"]
    assert len(ng_results) == sum(p.result["result"] == "NG" for p in parts)
    summary = insp.stop()
    assert summary["plc"]["results"] == summary["plc"]["triggers"] == sent
    assert summary["alarms"].get("camera_lost") == 1 and summary["alarms"].get("camera_restored") == 1
    assert summary["source"]["reconnects"] == 1
    record_figures(figures_file, "camera_killed_mid_run", {
        "budget_ms": BUDGET_MS, "camera_lost_after_kill_s": round(lost_after_s, 3), "outage_triggers": len(outage),
        "fail_safe_reasons": {r: sum(p.result["reason"] == r for p in outage) for r in ("camera_lost", "no_frame")},
        "late_plc_clock": rep["late"], "trigger_to_result_ms_plc_clock": rep["latency_ms"],
        "camera_restored_lost_for_s": restored[0]["detail"].get("lost_for_s"),
        "restart_to_restored_s": round(marks["restored"] - marks["restart"], 3), "parts_sent": sent})


def json_time(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- bad input: exit 2 naming the problem ----------------------------------------------------------------------
def run_inspector(cfg: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector", "run", "--config", str(cfg), "--no-live"],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_an_unsupported_pixel_format_is_exit_2_naming_it_and_the_supported_ones(tmp_path):
    cfg = write_config(tmp_path, None, plc=False,
                       source="{kind: genicam, address: 127.0.0.1, camera_trigger: software, pixel_format: YUV422_8}")
    out = run_inspector(cfg, tmp_path)
    assert out.returncode == 2, out.stderr
    assert "YUV422_8" in out.stderr and "supported: Mono8, Mono10, Mono12, Mono16, BayerRG8" in out.stderr


@pytest.mark.slow
def test_a_pixel_format_the_camera_does_not_offer_is_exit_2_naming_what_it_offers(fake_camera, tmp_path):
    cfg = write_config(tmp_path, None, plc=False,
                       source="{kind: genicam, address: 127.0.0.1, camera_trigger: software, pixel_format: Mono12}")
    out = run_inspector(cfg, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    err = out.stderr.splitlines()[-1]
    assert "source.pixel_format: the camera does not offer 'Mono12'; it offers " in err and "Mono8" in err, err


_UNKNOWN_ID = """
arv-fake-gv-camera-0.8 -i 127.0.0.1 -s {serial} >/dev/null 2>&1 & cam=$!
trap 'kill $cam' EXIT
for i in $(seq 200); do arv-tool-0.8 2>/dev/null | grep -q {serial} && break; sleep 0.05; done  # until it answers
cd {cwd}
{python} -m inspector run --config {cfg} --no-live
"""


@pytest.mark.slow
def test_an_unknown_camera_id_is_exit_2_listing_the_cameras_found(genicam_available, tmp_path):
    # Discovery broadcasts on every interface: only inside a namespace that holds nothing but loopback.
    cfg = write_config(tmp_path, None, plc=False,
                       source="{kind: genicam, id: Aravis-Fake-NOPE, camera_trigger: software}")
    out = run_isolated(_UNKNOWN_ID.format(serial="LINE01", cwd=tmp_path, python=sys.executable, cfg=cfg),
                       timeout=120)
    assert out.returncode == 2, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "no camera with id 'Aravis-Fake-NOPE'; cameras found: Aravis-Fake-LINE01 (serial LINE01" in out.stderr
