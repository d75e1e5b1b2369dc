"""The opencv source against a real RTSP server on loopback: streaming, reconnect after a crash,
a frozen server detected within the read timeout, back-pressure, and bad input."""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pytest

from inspector.config import OpenCVSourceConfig
from inspector.errors import SourceError
from inspector.sources import Connection
from inspector.sources.convert import to_bgr
from inspector.sources.opencv import OpenCVSource, ffmpeg_capture_options, redact
from tests.fixtures.rtsp_server import free_port
from tests.sources.reading import started_sources

pytestmark = pytest.mark.timeout(45)

# Short timeouts keep the group fast on a slow, busy machine, but leave room for FFmpeg's
# stream probe (about 1.5 s per open here).
READ_TIMEOUT_MS = 1000


def _cfg(url: str, **kw) -> OpenCVSourceConfig:
    base = dict(url=url, open_timeout_ms=4000, read_timeout_ms=READ_TIMEOUT_MS,
                reconnect_initial_ms=100, reconnect_max_ms=400, max_frame_age_ms=500)
    base.update(kw)
    return OpenCVSourceConfig(**base)


@pytest.fixture
def source_factory():
    yield from started_sources(lambda cfg: cfg)


def _wait_for(predicate, timeout: float, step: float = 0.02):
    """The first truthy predicate() within `timeout` seconds, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def _oldest_age(src: OpenCVSource) -> float:
    """Age of the oldest frame waiting in the source's buffer (0 when empty); test-only peek."""
    with src._buf._cv:
        return time.monotonic() - src._buf._q[0].captured_at if src._buf._q else 0.0


def _fresh_frame(src: OpenCVSource, after: float, timeout: float):
    """A frame captured after monotonic time `after`, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = src.read(timeout=0.2)
        if f is not None and f.captured_at > after:
            return f
    return None


# -- streaming ---------------------------------------------------------------------------------
def test_streams_bgr_frames_and_reports_connected(rtsp_server, source_factory):
    src = source_factory(_cfg(rtsp_server.url))
    frames = [f for f in (src.read(timeout=8.0) for _ in range(5)) if f is not None]

    assert len(frames) == 5, src.state()
    for f in frames:
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert f.part_id is None and f.source == "opencv"  # free_run: frames are not parts
    assert [f.frame_id for f in frames] == sorted(f.frame_id for f in frames)
    assert all(a.captured_at < b.captured_at for a, b in pairwise(frames))
    st = src.state()
    assert st.connection == Connection.CONNECTED
    assert st.frames == 5 and st.reconnects == 0
    # the age is of the source's newest frame: no older than the last one read (no speed bound: benchmarks/)
    assert st.last_frame_age_s is not None and 0 <= st.last_frame_age_s <= time.monotonic() - frames[-1].captured_at
    assert "connected to rtsp://127.0.0.1" in st.detail


def test_udp_transport_also_streams(rtsp_server, source_factory):
    src = source_factory(_cfg(rtsp_server.url, rtsp_transport="udp"))
    assert src.read(timeout=8.0) is not None, src.state()


# -- failures of the server ----------------------------------------------------------------------
def test_killed_server_is_seen_and_restart_reconnects(rtsp_server, source_factory):
    src = source_factory(_cfg(rtsp_server.url))
    assert src.read(timeout=8.0) is not None, src.state()

    rtsp_server.kill()
    lost = _wait_for(lambda: src.state().connection == Connection.RECONNECTING, timeout=READ_TIMEOUT_MS / 1000 + 2)
    assert lost, src.state()
    st = src.state()
    assert st.detail and st.reconnects == 0

    rtsp_server.restart()
    restarted_at = time.monotonic()
    frame = _fresh_frame(src, after=restarted_at, timeout=12.0)
    assert frame is not None, src.state()
    st = src.state()
    assert st.connection == Connection.CONNECTED
    assert st.reconnects == 1
    assert st.last_frame_age_s is not None and 0 <= st.last_frame_age_s <= time.monotonic() - frame.captured_at


def test_frozen_server_is_detected_by_the_read_timeout(rtsp_server, source_factory):
    src = source_factory(_cfg(rtsp_server.url, open_timeout_ms=1500))
    assert src.read(timeout=8.0) is not None, src.state()

    rtsp_server.freeze()
    detected = _wait_for(lambda: src.state().connection == Connection.RECONNECTING, timeout=30.0)
    assert detected, src.state()
    # Seen by the read timeout (no FIN from a frozen server), on the first reconnect attempt.
    st = src.state()
    assert "read timeout" in st.detail and st.reconnects == 0, st
    assert st.last_frame_age_s is not None and st.last_frame_age_s >= 0.8 * READ_TIMEOUT_MS / 1000

    rtsp_server.thaw()
    thawed_at = time.monotonic()
    assert _fresh_frame(src, after=thawed_at, timeout=12.0) is not None, src.state()
    st = src.state()
    assert st.connection == Connection.CONNECTED and st.reconnects == 1


def test_no_server_keeps_retrying_with_capped_backoff(source_factory):
    src = source_factory(_cfg(f"rtsp://127.0.0.1:{free_port()}/cam", open_timeout_ms=500))
    assert src.read(timeout=1.5) is None
    st = src.state()
    # Never connected: still "connecting", with the reason and the capped retry delay in words.
    assert st.connection == Connection.CONNECTING
    assert "cannot open rtsp://127.0.0.1" in st.detail
    assert _wait_for(lambda: "next in 0.40 s" in src.state().detail, timeout=30.0), src.state().detail
    src.stop()
    assert not src._thread.is_alive()  # ended within stop()'s bounded join, not abandoned mid-backoff


def test_missing_device_is_reported_not_raised(source_factory):
    src = source_factory(OpenCVSourceConfig(device=63, reconnect_initial_ms=100, reconnect_max_ms=200))
    assert _wait_for(lambda: "cannot open device 63" in src.state().detail, timeout=5.0), src.state()
    assert src.state().connection == Connection.CONNECTING
    assert not src.finished


# -- back-pressure -----------------------------------------------------------------------------
def test_free_run_keeps_the_freshest_and_drops_stale(rtsp_server, source_factory):
    src = source_factory(_cfg(rtsp_server.url, queue_size=4, max_frame_age_ms=100))
    assert src.read(timeout=8.0) is not None, src.state()
    # The pipeline "stalls": wait until frames were overwritten and the oldest one left is past
    # max_frame_age_ms (FFmpeg hands over its first frames in a burst, so a count alone is not enough),
    # rather than for a guessed time.
    assert _wait_for(lambda: src.state().dropped.get("overwritten", 0) >= 5, timeout=8.0), src.state()
    assert _wait_for(lambda: _oldest_age(src) > 0.15, timeout=8.0), src.state()

    asked_at = time.monotonic()
    f = src.read(timeout=2.0)
    assert f is not None
    # Judged at or after asked_at, a frame older than max_frame_age_ms then was stale: not handed over.
    # (A bound on the order of events, not on speed: a slow machine only judges later.)
    assert f.captured_at >= asked_at - 0.1, (asked_at, f)
    dropped = src.state().dropped
    assert dropped.get("overwritten", 0) >= 5, dropped
    assert dropped.get("stale", 0) >= 1, dropped


def test_triggered_keeps_every_part_and_bounds_the_images(rtsp_server, source_factory):
    """Before: a triggered camera's buffer grew without bound while the pipeline stalled. Now at
    most queue_size frames keep their image; later parts keep their place, id and capture time,
    marked `queue_full` (the pipeline fails them safe), and a queue_full alarm is raised."""
    alarms: list[tuple[str, dict]] = []
    src = OpenCVSource(_cfg(rtsp_server.url, trigger="triggered", queue_size=4, max_frame_age_ms=1),
                       alarm=lambda k, d: alarms.append((k, d)))
    src.start()
    try:
        first = src.read(timeout=8.0)
        assert first is not None, src.state()
        # Frames pile up beyond queue_size (and far beyond max_frame_age_ms): wait until they did.
        assert _wait_for(lambda: src.state().dropped.get("queue_full", 0) >= 6, timeout=8.0), src.state()

        frames = [first]
        while (f := src.read(timeout=0.3)) is not None and len(frames) < 40:
            frames.append(f)
    finally:
        src.stop()
    assert len(frames) >= 8
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a triggered part was lost"
    assert all(f.part_id == f"opencv-{f.frame_id}" for f in frames)
    # The first queue_size parts queued keep their images. Whether the first part was read before the next
    # ones came (5 images before the first queue_full) or after (4) depends on the scheduler: a busy machine
    # gives the second (seen beside a busy CPU thread), so both are right; a fifth image more is not.
    first_dropped = next((i for i, f in enumerate(frames) if f.image is None), None)
    assert first_dropped in (4, 5), f"images before the first queue_full: {first_dropped}, expected 4 or 5"
    imageless = [f for f in frames if f.image is None]
    assert len(imageless) >= 6 and all(f.dropped == "queue_full" for f in imageless)
    assert all(a.captured_at < b.captured_at for a, b in pairwise(frames))
    st = src.state()
    assert st.dropped.get("queue_full", 0) >= len(imageless) and "stale" not in st.dropped
    assert alarms and alarms[0][0] == "queue_full" and alarms[0][1]["source"] == "opencv"


# -- credentials ---------------------------------------------------------------------------------
@pytest.mark.parametrize("password", ["plain", "p/a@s:s%w?r#d", "100%", "a b+c"])
def test_camera_password_from_the_environment_opens_an_authenticating_camera(rtsp_available, monkeypatch, tmp_path,
                                                                              source_factory, password):
    """A real RTSP server that requires basic auth: the password (with the characters that break a
    URL) comes from INSPECTOR_SOURCE__PASSWORD and is percent-encoded into the URL at open time only;
    state and logs show the URL without it."""
    from inspector.config import load_config
    from tests.fixtures.rtsp_server import RtspServer

    server = RtspServer(free_port(), user="cam-op", password=password).start()
    try:
        monkeypatch.setenv("INSPECTOR_SOURCE__PASSWORD", password)
        monkeypatch.setenv("INSPECTOR_SOURCE__USERNAME", "cam-op")
        monkeypatch.setenv("INSPECTOR_SOURCE__OPEN_TIMEOUT_MS", "4000")
        monkeypatch.setenv("INSPECTOR_SOURCE__RECONNECT_INITIAL_MS", "100")
        monkeypatch.setenv("INSPECTOR_SOURCE__RECONNECT_MAX_MS", "400")
        cfg_file = tmp_path / "c.yaml"
        cfg_file.write_text(f"source:\n  kind: opencv\n  url: {server.url}\n")
        src = source_factory(load_config(cfg_file).source)
        assert src.read(timeout=8.0) is not None, src.state()
        st = src.state()
        assert st.connection == Connection.CONNECTED and password not in st.detail
        assert "cam-op" not in src.target and password not in src.target

        # The wrong password is refused by the camera: the source keeps retrying, says why, never shows it.
        bad = source_factory(OpenCVSourceConfig(**{**load_config(cfg_file).source.model_dump(), "password": "nope"}))
        assert _wait_for(lambda: "cannot open" in bad.state().detail, timeout=8.0), bad.state()
        assert bad.read(timeout=0.5) is None and "nope" not in bad.state().detail
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url, user, password, expected",
    [
        ("rtsp://cam:554/s1", None, None, "rtsp://cam:554/s1"),
        ("rtsp://cam:554/s1", "op", None, "rtsp://op@cam:554/s1"),
        ("rtsp://cam:554/s1", "op", "plain", "rtsp://op:plain@cam:554/s1"),
        ("rtsp://cam:554/s1?x=1", "op", "p/a@s:s%w?r#d", "rtsp://op:p%2Fa%40s%3As%25w%3Fr%23d@cam:554/s1?x=1"),
        ("http://cam/mjpg", "o p", "a b", "http://o%20p:a%20b@cam/mjpg"),
    ],
)
def test_credentials_are_percent_encoded_into_the_url(url, user, password, expected):
    from inspector.sources.opencv import with_credentials

    assert with_credentials(url, user, password) == expected
    assert redact(with_credentials(url, user, password)).count("***") == (password is not None)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, expected",
    [
        ("", "is not a URL"),
        ("camera-1", "is not a URL"),
        ("/videos/line.mp4", "is not a URL"),
        ("ftp://10.0.0.5/cam", "scheme 'ftp' is not supported"),
    ],
)
def test_bad_url_is_refused_at_start(url, expected):
    src = OpenCVSource(_cfg(url))
    with pytest.raises(SourceError, match=expected):
        src.start()
    st = src.state()
    assert st.connection == Connection.FAILED and expected in st.detail.replace('"', "'")
    src.stop()  # harmless on a source that never started


GREY = np.full((4, 6), 7, np.uint8)


@pytest.mark.parametrize(
    "image, shape, why",
    [
        (np.zeros((0, 0, 3), np.uint8), None, "expected an HxW or HxWxC image"),
        (None, None, "expected a numpy image, got NoneType"),
        (GREY, (4, 6, 3), ""),  # mono camera
        (GREY[:, :, None], (4, 6, 3), ""),
        (np.zeros((4, 6, 3), np.uint8), (4, 6, 3), ""),
        (np.zeros((4, 6, 4), np.uint8), (4, 6, 3), ""),  # BGRA
        (np.full((4, 6), 0x1234, np.uint16), (4, 6, 3), ""),  # 16-bit sensor
        (np.zeros((4, 6, 3), np.float32), None, "expected dtype uint8 or uint16, got float32"),
        (np.zeros((4, 6, 2), np.uint8), None, "expected 1, 3 or 4 channels, got 2"),
        (np.zeros((2, 4, 6, 3), np.uint8), None, "expected an HxW or HxWxC image"),
    ],
)
def test_frames_of_the_wrong_layout_are_converted_or_refused(image, shape, why):
    out, reason = to_bgr(image)
    if shape is None:
        assert out is None and why in reason
    else:
        assert reason == "" and out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous
    if image is GREY:
        assert (out == 7).all()


def test_sixteen_bit_keeps_the_high_byte():
    out, _ = to_bgr(np.full((2, 2), 0x1234, np.uint16))
    assert (out == 0x12).all()


@pytest.mark.parametrize(
    "existing, expected",
    [
        (None, "rtsp_transport;tcp"),
        ("", "rtsp_transport;tcp"),
        ("rtsp_transport;udp", "rtsp_transport;tcp"),
        ("probesize;32768|rtsp_transport;udp|stimeout;5", "rtsp_transport;tcp|probesize;32768|stimeout;5"),
    ],
)
def test_transport_overrides_only_its_own_ffmpeg_option(existing, expected):
    assert ffmpeg_capture_options(existing, "tcp") == expected


def test_passwords_are_kept_out_of_state():
    # More cases (a password with `/`, `@`, `:`, `%`) in tests/test_config.py::test_redact_never_shows_a_password.
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("rtsp://admin:s3/cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("rtsp://10.0.0.5/cam") == "rtsp://10.0.0.5/cam"
