"""source.kind genicam against Aravis' own fake GigE Vision camera (a real GVCP/GVSP peer on loopback):
frames arrive and convert, a software trigger yields exactly one frame, refused features are named,
a killed camera is declared lost and comes back; discovery (id/serial) runs in a private network
namespace. Pixel conversion of formats the fake camera lacks (Mono10/12, BGR8) is tested as pure logic."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.config import GENICAM_PIXEL_FORMATS, GenICamSourceConfig, load_config
from inspector.errors import ConfigError, SourceError
from inspector.sources import Connection, open_source
from inspector.sources.genicam import GenICamSource, arrived_before_trigger, decode_genicam_payload
from tests.fixtures.genicam_camera import FakeCamera, run_isolated
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]




def started(cam: FakeCamera, **kw) -> GenICamSource:
    src = open_source(GenICamSourceConfig(address=cam.address, **kw))
    src.start()
    return src


def drain(src, quiet_s: float = 0.5) -> list:
    out = []
    while (f := src.read(quiet_s)) is not None:
        out.append(f)
    return out


# -- pixel formats (pure logic) ------------------------------------------------------------------
def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Samples an RGB image through a colour filter array named as GenICam names it (first row first)."""
    ch = {"R": 0, "G": 1, "B": 2}
    out = np.zeros(rgb.shape[:2], np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, ch[pattern[dy * 2 + dx]]]
    return out


@pytest.mark.parametrize("fmt,cfa", [("BayerRG8", "RGGB"), ("BayerGR8", "GRBG"), ("BayerGB8", "GBRG"),
                                     ("BayerBG8", "BGGR")])
@pytest.mark.parametrize("colour", [(200, 30, 10), (10, 200, 30), (10, 30, 200)])
def test_bayer_demosaics_to_the_right_colour(fmt, cfa, colour):
    rgb = np.empty((16, 16, 3), np.uint8)
    rgb[:] = colour
    bgr = decode_genicam_payload(_mosaic(rgb, cfa).ravel(), fmt, 16, 16)
    centre = bgr[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    assert np.allclose(centre[::-1], colour, atol=2), f"{fmt}: got RGB {centre[::-1]}, expected {colour}"


@pytest.mark.parametrize("fmt,value,expected", [
    ("Mono8", 200, 200), ("Mono10", 1023, 255), ("Mono10", 512, 128), ("Mono12", 4095, 255),
    ("Mono12", 2048, 128), ("Mono16", 65535, 255), ("Mono16", 256, 1),
])
def test_mono_formats_scale_to_8_bits(fmt, value, expected):
    dtype = np.uint8 if fmt == "Mono8" else np.dtype("<u2")
    raw = np.full((4, 6), value, dtype).view(np.uint8).ravel()
    gray = decode_genicam_payload(raw, fmt, 6, 4)
    assert gray.shape == (4, 6) and gray.dtype == np.uint8  # mono stays 1 channel: the detector converts
    assert (gray == expected).all()


@pytest.mark.parametrize("fmt", ["RGB8", "BGR8"])
def test_colour_formats_come_out_bgr(fmt):
    px = (10, 20, 30)  # in the camera's channel order
    raw = np.tile(np.array(px, np.uint8), 12)
    bgr = decode_genicam_payload(raw, fmt, 4, 3)
    assert tuple(bgr[0, 0]) == (px[::-1] if fmt == "RGB8" else px)


def test_an_unsupported_format_is_named_with_the_supported_ones():
    with pytest.raises(SourceError) as e:
        decode_genicam_payload(np.zeros(100, np.uint8), "YUV422_8", 10, 10)
    assert "YUV422_8" in str(e.value) and all(f in str(e.value) for f in GENICAM_PIXEL_FORMATS)


def test_a_short_payload_is_refused():
    with pytest.raises(SourceError, match="expected 200 bytes, got 100"):
        decode_genicam_payload(np.zeros(100, np.uint8), "Mono16", 10, 10)


@pytest.mark.parametrize("yaml_source,needle", [
    ("{kind: genicam, address: 127.0.0.1, pixel_format: YUV422_8}", "YUV422_8' is not supported; supported: Mono8"),
    ("{kind: genicam}", "set exactly one of id, serial or address"),
    ("{kind: genicam, address: 127.0.0.1, serial: X}", "set exactly one of id, serial or address"),
    ("{kind: genicam, address: 127.0.0.1, trigger: free_run}", "needs trigger: triggered"),
    ("{kind: genicam, address: 127.0.0.1, frame_rate: 10}", "frame_rate applies to camera_trigger: free_run"),
    ("{kind: genicam, address: 127.0.0.1, roi: [0, 0, 0, 10]}", "roi must be"),
])
def test_bad_genicam_config_is_refused_with_the_reason(tmp_path, yaml_source, needle):
    p = tmp_path / "c.yaml"
    p.write_text(f"source: {yaml_source}\n")
    with pytest.raises(ConfigError, match=None) as e:
        load_config(p)
    assert needle in str(e.value)


def test_the_buffer_policy_follows_the_camera_trigger():
    assert GenICamSourceConfig(address="a", camera_trigger="free_run").trigger == "free_run"
    assert GenICamSourceConfig(address="a", camera_trigger="software").trigger == "triggered"
    assert GenICamSourceConfig(address="a", camera_trigger="hardware").trigger == "triggered"


def test_camera_time_maps_to_host_time_by_the_fastest_frame():
    src = GenICamSource(GenICamSourceConfig(address="a", camera_trigger="hardware"))
    cam0 = 5_000_000_000  # the camera's clock: 5 s since it booted
    host0 = 1_700_000_000.0
    # Frames exposed 100 ms apart; their first packets reach the host 3, 1 and 2 ms after exposure.
    for i, lag in enumerate((0.003, 0.001, 0.002)):
        cam_ns = cam0 + i * 100_000_000
        sys_ns = int((host0 + i * 0.1 + lag) * 1e9)
        mono, wall = src._capture_time(cam_ns, sys_ns, arrived=1000.0 + i * 0.1 + 0.01,
                                       arrived_wall=host0 + i * 0.1 + 0.01)
    # The smallest lag (1 ms) bounds the offset: the last frame is placed 1 ms before its true time + 1 ms.
    assert wall == pytest.approx(host0 + 0.2 + 0.001, abs=1e-4)
    assert mono == pytest.approx(1000.2 + 0.001, abs=1e-4)


# A camera clock that steps (PTP re-sync, TimestampReset) by `step_s` after frame 10 of 80, 100 ms apart,
# each frame's first packet 1-3 ms after its exposure. Every frame must be placed within the transit of
# its true time: before, a step back kept the old (smaller) minimum offset for 63 frames, placing them
# `step_s` in the past (5 s: a fail-safe burst of 63 parts). `jumps`: restarts of the offset window.
@pytest.mark.parametrize("step_s,jumps", [
    (0.0, 0),  # a steady clock: the fastest frame bounds the offset
    (-5.0, 1),  # stepped back 5 s
    (+5.0, 1),  # stepped forward 5 s
    (-0.2, 1),  # stepped back 200 ms (more than any budget)
    (+0.2, 1),
    (-0.06, 1),  # just over the 50 ms threshold
])
def test_camera_time_follows_a_clock_jump_at_once(step_s, jumps):
    src = GenICamSource(GenICamSourceConfig(address="a", camera_trigger="hardware"))
    host0, cam0 = 1_700_000_000.0, 5.0
    worst = 0.0
    for i in range(80):
        true_host = host0 + i * 0.1
        cam = cam0 + i * 0.1 + (step_s if i >= 10 else 0.0)
        lag = 0.001 + 0.002 * ((i * 7) % 3) / 2  # 1, 2 or 3 ms
        mono, wall = src._capture_time(int(cam * 1e9), int((true_host + lag) * 1e9), arrived=1000.0 + i * 0.1 + 0.01,
                                       arrived_wall=true_host + 0.01)
        worst = max(worst, abs(wall - true_host))
        assert mono - wall == pytest.approx(1000.0 - host0, abs=1e-6)
    assert worst <= 0.0031, f"a frame placed {worst * 1e3:.0f} ms off its exposure"
    assert src.counters()["clock_jumps"] == jumps


def test_a_clock_step_under_the_threshold_is_taken_as_transit_jitter():
    """20 ms back (< CLOCK_JUMP_S): no restart; frames stay within 20 ms until the window forgets."""
    from inspector.sources.genicam import CLOCK_JUMP_S, CaptureClock

    clock = CaptureClock()
    offs = []
    for i in range(100):
        cam = i * 0.1 + (-0.02 if i >= 10 else 0.0)
        offs.append(clock.host_time(cam, i * 0.1 + 0.001) - i * 0.1)
    assert clock.jumps == 0 and 0.02 < CLOCK_JUMP_S
    assert max(abs(o) for o in offs) <= 0.0211 and abs(offs[-1]) <= 0.0011  # forgotten after 64 frames


# -- the fake GigE Vision camera ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["Mono8", "Mono16", "BayerRG8", "RGB8"])
def test_free_run_frames_arrive_converted(fake_camera, fmt):
    src = started(fake_camera, camera_trigger="free_run", frame_rate=50, pixel_format=fmt, roi=(0, 0, 320, 240))
    try:
        frames = [wait_for(lambda: src.read(0.5), what="a frame") for _ in range(3)]
        for f in frames:
            want = (240, 320) if fmt.startswith("Mono") else (240, 320, 3)  # mono stays gray: the detector converts
            assert f.image.shape == want and f.image.dtype == np.uint8
            assert f.part_id is None  # free run: frames, not parts
            assert f.captured_at <= time.monotonic()
        # The fake camera draws a full-range gradient: a wrongly scaled Mono16 would be dark or saturated.
        assert 60 < frames[-1].image.mean() < 200 and frames[-1].image.std() > 30
        assert [f.frame_id for f in frames] == [0, 1, 2]
        st = src.state()
        assert st.connection is Connection.CONNECTED and st.frames >= 3
    finally:
        src.stop()
    assert src.counters()["n_completed_buffers"] >= 3


def test_a_software_trigger_yields_exactly_one_frame(fake_camera):
    src = started(fake_camera, camera_trigger="software")
    try:
        assert src.read(0.5) is None, "a software-triggered camera sent a frame nobody asked for"
        t0 = time.monotonic()
        assert src.software_trigger()
        t1 = time.monotonic()
        f = wait_for(lambda: src.read(0.5), what="the triggered frame")
        assert t0 <= f.captured_at <= t1  # the part started when it was fired, not when its frame came
        assert f.part_id == f"{fake_camera.serial}-0"
        assert drain(src) == [], "one trigger gave more than one frame"
        for _ in range(3):
            assert src.software_trigger()
        frames = [wait_for(lambda: src.read(0.5), what="triggered frames") for _ in range(3)]
        assert drain(src) == []
        assert [x.frame_id for x in frames] == [1, 2, 3]
    finally:
        src.stop()


def test_a_frame_no_software_trigger_asked_for_is_no_part(fake_camera):
    """A buffer that comes while no trigger of ours awaits a frame (the camera's extra buffer at acquisition
    start, a warm-up retry's late frame, a trigger from elsewhere) is dropped and counted: handed on, it would
    become the next trigger's frame and that part would be judged on an image taken before it was there."""
    src = started(fake_camera, camera_trigger="software")
    try:
        before = src.state().dropped.get("unsolicited", 0)
        src._session.camera.software_trigger()  # a trigger the source did not fire: the camera still sends a frame
        wait_for(lambda: src.state().dropped.get("unsolicited", 0) == before + 1, what="the stray frame counted")
        assert src.read(0.3) is None
        t0 = time.monotonic()
        assert src.software_trigger()
        f = wait_for(lambda: src.read(0.5), what="the triggered frame")
        assert f.captured_at >= t0 and f.frame_id == 0  # the stray frame took no frame id and no part
    finally:
        src.stop()


@pytest.mark.parametrize("first_packet_s,fired_at_s,stray", [
    (99.990, 100.000, True),    # came 10 ms before the trigger was sent: not its image
    (99.9990, 100.000, True),   # 1 ms before
    (99.9997, 100.000, False),  # within the clock reads' margin: taken as the trigger's
    (100.015, 100.000, False),  # 15 ms after: the trigger's frame
])
def test_a_buffer_that_came_before_its_trigger_is_a_stray(first_packet_s, fired_at_s, stray):
    # wall clock 1000 s ahead of the monotonic one: the comparison is made on the monotonic clock
    arrived, arrived_wall = 100.030, 1100.030
    sys_ns = round((first_packet_s + 1000.0) * 1e9)
    assert arrived_before_trigger(sys_ns, arrived, arrived_wall, fired_at_s) is stray
    assert arrived_before_trigger(0, arrived, arrived_wall, fired_at_s) is False  # no stamp: nothing to say


def test_a_stray_frame_popped_after_the_next_trigger_went_is_no_part(fake_camera):
    """The race the no-trigger-pending check alone missed: a stray buffer (a trigger from elsewhere) that
    the grab thread pops only after our next trigger was registered, because it was held off the CPU in
    between. Its first packet came before that trigger was sent, so it is dropped and counted, and the
    part waits for its own frame. The test holds the grab thread on the source's lock while the stray
    arrives and registers the awaited trigger itself (what the control thread does before it sends one):
    the scheduling the race needs, made certain."""
    src = started(fake_camera, camera_trigger="software")
    try:
        before = src.state().dropped.get("unsolicited", 0)
        done0 = src._session.stream_stats()["n_completed_buffers"]
        with src._lock:  # the grab thread waits for this lock before and after each pop
            src._session.camera.software_trigger()  # the stray: a trigger the source did not fire
            # completed: the grab thread, waiting for the lock, pops it (or has popped it) only after we let go
            wait_for(lambda: src._session.stream_stats()["n_completed_buffers"] == done0 + 1,
                     what="the stray buffer received")
            fired = time.monotonic()
            src._pending.append((fired, fired))  # our trigger, registered before it is sent
        wait_for(lambda: src.state().dropped.get("unsolicited", 0) == before + 1, what="the stray frame counted")
        assert src.read(0.3) is None, "the stray buffer became the awaited part's frame"
        src._session.camera.software_trigger()  # the awaited trigger goes out
        f = wait_for(lambda: src.read(0.5), what="the part's own frame")
        assert f.frame_id == 0 and f.captured_at == fired and f.dropped is None
    finally:
        src.stop()


def test_a_hardware_triggered_camera_waits_for_its_line(fake_camera):
    src = started(fake_camera, camera_trigger="hardware", hardware_line="Line0")
    try:
        cam = src._session.camera
        assert (cam.get_string("TriggerMode"), cam.get_string("TriggerSource")) == ("On", "Line0")
        assert src.read(0.5) is None  # nothing fires Line0 on the fake camera
        with pytest.raises(SourceError, match="needs camera_trigger: software"):
            src.software_trigger()
    finally:
        src.stop()


@pytest.mark.parametrize("kw,needle", [
    ({"exposure_us": 2.5}, "source.exposure_us: the camera refused 2.5: ExposureTime must be within [10, 1e+07]"),
    ({"gain_db": 50}, "source.gain_db: the camera refused 50"),
    ({"camera_trigger": "free_run", "frame_rate": 5000}, "source.frame_rate: the camera refused 5000"),
    ({"roi": (0, 0, 4096, 100)}, "source.roi: the camera refused [0, 0, 4096, 100]: [Width]"),
    ({"pixel_format": "Mono12"}, "source.pixel_format: the camera does not offer 'Mono12'; it offers"),
    ({"camera_trigger": "hardware", "hardware_line": "Line7"}, "no trigger source 'Line7'; it has"),
])
def test_a_refused_feature_is_named(fake_camera, kw, needle):
    src = open_source(GenICamSourceConfig(address=fake_camera.address, **kw))
    with pytest.raises(SourceError) as e:
        src.start()
    assert needle in str(e.value)
    assert e.value.exit_code == 2  # the config asks what the camera cannot do: bad input
    assert src.state().connection is Connection.FAILED


def test_the_frame_buffer_is_bounded_and_raises_queue_full():
    """Triggered parts beyond queue_size keep their metadata, get the fail-safe verdict and a queue_full
    alarm; past max_backlog they are given up and named (the camera source had neither before)."""
    from inspector.devtools.testing import synth_frame

    alarms = []
    src = open_source(GenICamSourceConfig(address="a", queue_size=2, max_backlog=3),
                      alarm=lambda kind, detail: alarms.append((kind, detail)))
    for i in range(5):
        src._buf.put(synth_frame(i, frame_id=i))
    frames = drain(src, 0.01)
    assert [f.frame_id for f in frames] == [0, 1, 4] and [f.dropped for f in frames] == [None, None, "queue_full"]
    assert src.state().dropped == {"queue_full": 3, "backlog_full": 2}
    assert alarms[0][0] == "queue_full" and alarms[0][1]["source"] == "genicam:a"
    assert any(d.get("parts_without_verdict") for _, d in alarms)


@pytest.mark.slow
@pytest.mark.parametrize("camera_trigger", ["free_run", "software"])
def test_a_killed_camera_is_lost_then_reconnects(fake_camera, camera_trigger):
    kw = {"frame_rate": 50} if camera_trigger == "free_run" else {}
    src = started(fake_camera, camera_trigger=camera_trigger, lost_after_ms=500, reconnect_initial_ms=100,
                  reconnect_max_ms=500, **kw)

    def one_frame():
        if camera_trigger == "software":
            src.software_trigger()
        return src.read(1.0)

    try:
        wait_for(one_frame, what="a frame before the kill")
        fake_camera.kill()
        if camera_trigger == "software":
            src.software_trigger()  # the part that finds the camera gone
        wait_for(lambda: src.state().connection is Connection.RECONNECTING, what="the camera declared lost")
        if camera_trigger == "software":
            assert not src.software_trigger()  # fail fast while lost
        else:  # free-run: what was buffered before the kill, then nothing from a dead camera
            drain(src, 0.2)
            assert src.read(0.3) is None and src.state().connection is Connection.RECONNECTING
        fake_camera.start()
        wait_for(lambda: src.state().connection is Connection.CONNECTED, timeout=30, what="reconnected")
        if camera_trigger == "software":  # a frame left from the warm-up must not pass for the next part's
            drain(src, 0.1)
        # Free run: no drain. At 50 frames/s a 0.1 s quiet gap never comes while the camera is healthy (the drain
        # ran until a starved camera happened to pause: 51 s here); what was buffered before the kill was drained
        # above, so every frame read now came from the restarted camera.
        f = wait_for(one_frame, what="a frame after the restart")
        assert f.image.shape == (512, 512)  # the fake camera's Mono8, kept gray
        st = src.state()
        # >= 1: a starved fake camera (a loaded CI machine) may add a lost/back episode of its own.
        assert st.reconnects >= 1 and st.connection is Connection.CONNECTED
        if camera_trigger == "software":
            assert st.dropped.get("triggers_lost", 0) >= 1
    finally:
        src.stop()


# -- discovery (in a private network namespace: Aravis broadcasts) -------------------------------------
_DISCOVER = r"""
import json, sys
from inspector.config import GenICamSourceConfig
from inspector.errors import SourceError
from inspector.sources import open_source
out = {}
for key, value in (("id", "Aravis-Fake-NOPE"), ("serial", sys.argv[1])):
    src = open_source(GenICamSourceConfig(**{key: value}, camera_trigger="free_run", frame_rate=20))
    try:
        src.start()
        f = src.read(5.0)
        out[key] = {"ok": f is not None and list(f.image.shape), "name": src._session.device_id}
        src.stop()
    except SourceError as e:
        out[key] = {"error": str(e)}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_cameras_are_found_by_serial_and_an_unknown_id_lists_those_found(genicam_available, tmp_path):
    script = tmp_path / "discover.py"
    script.write_text(_DISCOVER)
    serial = "NSCAM01"
    out = run_isolated(f"arv-fake-gv-camera-0.8 -i 127.0.0.1 -s {serial} >/dev/null 2>&1 & cam=$!; "
                       f"trap 'kill $cam' EXIT; for i in $(seq 200); do arv-tool-0.8 -a 127.0.0.1 control DeviceID "
                       f"2>/dev/null | grep -q {serial} && break; sleep 0.05; done; "  # until the camera answers
                       f"cd {REPO}; {sys.executable} {script} {serial}")
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, f"rc {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    res = json.loads(line[len("RESULT "):])
    err = res["id"]["error"]
    assert "no camera with id 'Aravis-Fake-NOPE'" in err and f"Aravis-Fake-{serial} (serial {serial}" in err
    assert res["serial"] == {"ok": [512, 512], "name": serial}  # Mono8 stays gray

