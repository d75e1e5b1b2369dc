"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis, used from Python by GObject introspection.

Optional: `gi` and the Aravis typelib come from the `genicam` extra (PyGObject) or Debian's
`python3-gi gir1.2-aravis-0.8` (`make test` bridges those into the virtualenv). Nothing here is
imported unless `source.kind: genicam`.

Threads (one owner each):
- `genicam-control` owns every GVCP exchange: opening and configuring the camera, software
  triggers, the idle liveness probe, and reconnecting. A GVCP request to a dead camera blocks for
  2.5 s in Aravis 0.8 (500 ms x 5 retries, measured), so no other thread ever waits on one.
- `genicam-grab` pops filled buffers from the Aravis stream, converts them (mono stays gray, colour
  becomes BGR), gives the buffer back to the pool and hands the frame to the FrameBuffer.

Lost frames: a buffer that arrives incomplete (missing packets, timeout) is counted (`incomplete`) and,
for a triggered camera, still handed on as a frame without image (`Frame.dropped = "incomplete"`)
stamped with its capture time (the software trigger's time; in hardware mode the camera's timestamp
when the leader packet came, else the arrival time): that part gets the fail-safe verdict, and the
PLC handshake pairs the loss with its own trigger instead of giving that part the next part's image.

Clock: a frame's capture time is the camera's timestamp mapped to the host clock (see
`CaptureClock`); when the camera's clock steps (PTP re-sync, TimestampReset, a restarted camera) the
mapping starts over at once instead of placing frames seconds off for the next 63.

Liveness: Aravis' own heartbeat declared a killed camera lost after 5.5 s (measured), too late for
a line that must know within 2 s. The camera is declared lost when a software trigger got no
frame within `lost_after_ms`, when a free-running camera sent nothing for that long, or when the
idle probe (one register read) fails; `state()` reports it at once even while the control
thread is still blocked in the failing request.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspector.config import GENICAM_PIXEL_FORMATS, GenICamSourceConfig
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.kernel import realtime
from inspector.sources.base import Connection, LiveSource, SourceState

log = logging.getLogger(__name__)

# GenICam Bayer names give the colour of the first two pixels of the first row; OpenCV names its
# codes after the second row's second and third pixels, so GenICam RG (R G / G B) is OpenCV's BG.
_BAYER = {"BayerRG8": cv2.COLOR_BayerBG2BGR, "BayerGR8": cv2.COLOR_BayerGB2BGR,
          "BayerGB8": cv2.COLOR_BayerGR2BGR, "BayerBG8": cv2.COLOR_BayerRG2BGR}
_MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono16": 16}
# PFNC codes (GenICam Pixel Format Naming Convention) as buffers carry them.
PFNC = {0x01080001: "Mono8", 0x01100003: "Mono10", 0x01100005: "Mono12", 0x01100007: "Mono16",
        0x01080008: "BayerGR8", 0x01080009: "BayerRG8", 0x0108000A: "BayerGB8", 0x0108000B: "BayerBG8",
        0x02180014: "RGB8", 0x02180015: "BGR8"}
assert set(PFNC.values()) == set(GENICAM_PIXEL_FORMATS)


class CameraConfigError(SourceError):
    """The camera refuses what the config asks (unknown camera id or serial, a refused feature value, an
    unsupported pixel format): bad input, exit 2. A camera that does not answer stays a SourceError (1)."""

    exit_code = 2


def unsupported_format(name: str) -> SourceError:
    return CameraConfigError(f"pixel format {name!r} is not supported; supported: {', '.join(GENICAM_PIXEL_FORMATS)} "
                       "(set source.pixel_format to one the camera offers)")


def decode_genicam_payload(data: np.ndarray, pixel_format: str, width: int, height: int) -> np.ndarray:
    """One raw GenICam image (bytes as uint8) -> HxW uint8 gray (Mono*) or HxWx3 uint8 BGR (Bayer, RGB8,
    BGR8). Mono10/12/16 (unpacked, 16 bits per pixel, little endian) are scaled to 8 bits by dropping
    the low bits; mono stays 1 channel (the detector converts once, in its letterbox). Raises
    SourceError on an unsupported format or a payload of the wrong size."""
    if pixel_format not in GENICAM_PIXEL_FORMATS:
        raise unsupported_format(pixel_format)
    bits = _MONO_BITS.get(pixel_format)
    bpp = 3 if pixel_format in ("RGB8", "BGR8") else (2 if bits and bits > 8 else 1)
    need = width * height * bpp
    if data.size < need:
        raise SourceError(f"{pixel_format} {width}x{height}: expected {need} bytes, got {data.size}")
    raw = data[:need]
    if bits is not None and bits > 8:
        return (raw.view("<u2").reshape(height, width) >> (bits - 8)).astype(np.uint8)
    if bits == 8:
        return raw.reshape(height, width).copy()  # the buffer goes back to Aravis' pool
    if pixel_format in _BAYER:
        return cv2.cvtColor(raw.reshape(height, width), _BAYER[pixel_format])
    img = raw.reshape(height, width, 3)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if pixel_format == "RGB8" else img.copy()


def load_aravis():
    """The Aravis module, or a SourceError saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as e:
        raise SourceError(
            f"source.kind genicam needs Aravis 0.8 through GObject introspection ({e}): install Debian's "
            "gir1.2-aravis-0.8 python3-gi (and make the venv see gi: `make venv-gi`), or pip install "
            "'inspector[genicam]' with the Aravis typelib present") from e
    return Aravis


# A step in (host - camera) time larger than this is a camera clock jump (PTP re-sync, TimestampReset),
# not transit jitter: the offset window starts over. Transit jitter of the fastest frames is < 1 ms on
# a quiet link (fake camera, loopback) and a host stall on the loaded 2-core box delays single frames
# by tens of ms; a false restart costs nothing lasting (the next fast frame is the new minimum), while a
# step kept for 63 frames puts every part that far off. 50 ms is under any budget worth having.
CLOCK_JUMP_S = 0.05


class CaptureClock:
    """Maps camera timestamps to host time: host = camera + min(host arrival - camera) over the last
    `window` frames (the frame that travelled fastest bounds the offset best). A step of the offset
    by more than `jump_s` either way restarts the window: after the camera's clock stepped back by
    5 s, the old minimum placed the next 63 frames 5 s in the past (a fail-safe burst). Owned by
    the grab thread."""

    def __init__(self, window: int = 64, jump_s: float = CLOCK_JUMP_S) -> None:
        self._offsets: collections.deque[float] = collections.deque(maxlen=window)
        self.jump_s = jump_s
        self.jumps = 0

    def reset(self) -> None:
        self._offsets.clear()

    def host_time(self, cam_s: float, host_arrival_s: float) -> float:
        """Host time of a frame stamped `cam_s` by the camera whose first packet came at `host_arrival_s`."""
        offset = host_arrival_s - cam_s
        if self._offsets and abs(offset - min(self._offsets)) > self.jump_s:
            self._offsets.clear()
            self.jumps += 1
        self._offsets.append(offset)
        return cam_s + min(self._offsets)


def _gerror(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)


@dataclass(frozen=True)
class CameraInfo:
    id: str
    serial: str
    address: str
    vendor: str
    model: str
    protocol: str

    def __str__(self) -> str:
        return f"{self.id} (serial {self.serial}, {self.protocol} {self.address}, {self.vendor} {self.model})"


def list_cameras(Aravis=None) -> list[CameraInfo]:
    """Every camera Aravis discovers (GigE Vision broadcast on each interface, USB3 Vision)."""
    Aravis = Aravis or load_aravis()
    Aravis.update_device_list()
    return [CameraInfo(Aravis.get_device_id(i) or "", Aravis.get_device_serial_nbr(i) or "",
                       Aravis.get_device_address(i) or "", Aravis.get_device_vendor(i) or "",
                       Aravis.get_device_model(i) or "", Aravis.get_device_protocol(i) or "")
            for i in range(Aravis.get_n_devices())]


class _Session:
    """One open connection: camera, stream and the buffer pool. Built and torn down by the control thread."""

    def __init__(self, Aravis, cfg: GenICamSourceConfig, device_id: str) -> None:
        self.Aravis = Aravis
        self.camera = self.stream = None
        try:
            self._open(Aravis, cfg, device_id)
        except SourceError:
            self.close()
            raise
        except Exception as e:  # GLib.Error: the camera went away while being set up
            self.close()
            raise ConnectionError(_gerror(e)) from e

    def _open(self, Aravis, cfg: GenICamSourceConfig, device_id: str) -> None:
        self.camera = Aravis.Camera.new(device_id)
        cam = self.camera
        # Refuse out-of-range values instead of letting the camera clamp them silently.
        cam.set_range_check_policy(Aravis.RangeCheckPolicy.ENABLE)
        self.device_id = cam.get_device_id() or device_id
        self.model = f"{cam.get_vendor_name()} {cam.get_model_name()}"
        self.is_gv = cam.is_gv_device()
        configure(Aravis, cam, cfg)
        self.pixel_format = cam.get_pixel_format_as_string()
        if self.pixel_format not in GENICAM_PIXEL_FORMATS:
            raise unsupported_format(self.pixel_format)
        self.stream = cam.create_stream(None, None)
        if self.stream is None:
            raise ConnectionError("the camera gave no stream")
        if self.is_gv:
            self.stream.set_property("packet-resend", Aravis.GvStreamPacketResend.ALWAYS if cfg.packet_resend
                                     else Aravis.GvStreamPacketResend.NEVER)
        self.payload = cam.get_payload()
        for _ in range(cfg.buffers):
            self.stream.push_buffer(Aravis.Buffer.new_allocate(self.payload))
        cam.start_acquisition()
        if cfg.camera_trigger == "software":
            self._warm_up(cfg)

    def _warm_up(self, cfg: GenICamSourceConfig) -> None:
        """One software trigger whose frame is thrown away, before the session counts as connected: the
        first frame of a session came 63-83 ms after its trigger, the next ones 15-40 ms (the fake camera,
        3 sessions, loaded 2-core box), so a part's first trigger would miss an 80 ms budget. It also
        proves the camera delivers, not only answers registers, before the PLC is told `ready`. Fired
        again every 100 ms until a frame comes: one trigger sent right after AcquisitionStart was once
        ignored (no frame within 1 s; the next session's first trigger worked)."""
        end = time.monotonic() + cfg.lost_after_ms / 1000
        tries = 0
        while time.monotonic() < end:
            self.camera.software_trigger()
            tries += 1
            buf = self.stream.timeout_pop_buffer(100_000)  # microseconds
            if buf is not None:
                log.debug("warm-up frame after %d trigger(s)", tries)
                self.stream.push_buffer(buf)
                return
        raise ConnectionError(f"no frame within {cfg.lost_after_ms} ms of {tries} warm-up software trigger(s)")

    def stream_stats(self) -> dict[str, int]:
        s = self.stream
        out = {}
        for i in range(s.get_n_infos()):
            out[s.get_info_name(i)] = int(s.get_info_uint64(i))
        return out

    def close(self) -> None:
        """Stops acquisition and gives up control of the camera, so the next session (or another host)
        can take it: the old device object would otherwise keep the control privilege by heartbeat."""
        if self.camera is None:
            return
        try:
            self.camera.stop_acquisition()
        except Exception as e:  # the camera may be gone: nothing to stop
            log.debug("stop_acquisition: %s", _gerror(e))
        if self.camera.is_gv_device():
            try:
                self.camera.get_device().leave_control()
            except Exception as e:  # noqa: BLE001 - a gone camera has no control to leave
                log.debug("leave_control: %s", _gerror(e))
        self.stream = None  # finalized now, on this thread (the stream holds the device)
        self.camera = None


def _refused(feature: str, value: Any, why: str) -> SourceError:
    return CameraConfigError(f"source.{feature}: the camera refused {value!r}: {why}")


def configure(Aravis, cam, cfg: GenICamSourceConfig) -> None:
    """Applies the config's features; a refused value raises SourceError naming the feature."""
    if cfg.pixel_format is not None:
        offered = list(cam.dup_available_pixel_formats_as_strings() or [])
        if cfg.pixel_format not in offered:
            raise CameraConfigError(f"source.pixel_format: the camera does not offer {cfg.pixel_format!r}; it offers "
                              f"{', '.join(offered)} (supported here: {', '.join(GENICAM_PIXEL_FORMATS)})")
        try:
            cam.set_pixel_format_from_string(cfg.pixel_format)
        except Exception as e:
            raise _refused("pixel_format", cfg.pixel_format, _gerror(e)) from e
    if cfg.roi is not None:
        x, y, w, h = cfg.roi
        try:
            cam.set_region(x, y, w, h)
        except Exception as e:
            raise _refused("roi", list(cfg.roi), _gerror(e)) from e
        got = cam.get_region()
        if (got.x, got.y, got.width, got.height) != (x, y, w, h):
            raise _refused("roi", list(cfg.roi), f"it set x={got.x} y={got.y} width={got.width} height={got.height} "
                           "(offset/size increments)")
    _set_float(cam, "exposure_us", cfg.exposure_us, cam.is_exposure_time_available, cam.get_exposure_time_bounds,
               cam.set_exposure_time, "ExposureTime")
    _set_float(cam, "gain_db", cfg.gain_db, cam.is_gain_available, cam.get_gain_bounds, cam.set_gain, "Gain")
    if cfg.camera_trigger == "free_run":
        cam.set_acquisition_mode(Aravis.AcquisitionMode.CONTINUOUS)
        _try(lambda: cam.clear_triggers(), "trigger", "free_run")
        _set_float(cam, "frame_rate", cfg.frame_rate, cam.is_frame_rate_available, cam.get_frame_rate_bounds,
                   cam.set_frame_rate, "AcquisitionFrameRate")
    else:
        cam.set_acquisition_mode(Aravis.AcquisitionMode.CONTINUOUS)
        if cfg.camera_trigger == "software":
            if not cam.is_software_trigger_supported():
                raise CameraConfigError("source.camera_trigger: software: the camera has no TriggerSoftware command")
            _try(lambda: cam.set_trigger("Software"), "camera_trigger", "software")
        else:
            sources = list(cam.dup_available_trigger_sources() or [])
            if cfg.hardware_line not in sources:
                raise CameraConfigError(f"source.hardware_line: the camera has no trigger source "
                                        f"{cfg.hardware_line!r}; it has {', '.join(sources)}")
            _try(lambda: cam.set_trigger(cfg.hardware_line), "hardware_line", cfg.hardware_line)
            if cam.is_feature_available("TriggerActivation"):
                _try(lambda: cam.set_string("TriggerActivation", cfg.trigger_activation), "trigger_activation",
                     cfg.trigger_activation)
    if cam.is_gv_device():
        if cfg.packet_size is not None:
            _try(lambda: cam.gv_set_packet_size(cfg.packet_size), "packet_size", cfg.packet_size)
        else:
            try:
                cam.gv_auto_packet_size()
            except Exception as e:  # keeps the camera's default (1400 B on GigE, measured on the fake camera)
                log.info("packet size negotiation failed (%s): keeping %d B", _gerror(e), cam.gv_get_packet_size())


def _try(fn: Callable[[], Any], feature: str, value: Any) -> None:
    try:
        fn()
    except Exception as e:
        raise _refused(feature, value, _gerror(e)) from e


def _set_float(cam, feature: str, value: float | None, available, bounds, setter, genicam: str) -> None:
    if value is None:
        return
    if not available():
        raise _refused(feature, value, f"the camera has no {genicam} feature")
    try:
        b = bounds()
        lo, hi = (b.min, b.max) if hasattr(b, "min") else b
    except Exception:
        lo = hi = None
    # Converter-backed features (AcquisitionFrameRate on the fake camera) escape Aravis' range check.
    if lo is not None and not lo <= value <= hi:
        raise _refused(feature, value, f"{genicam} must be within [{lo:g}, {hi:g}]")
    _try(lambda: setter(value), feature, value)


_STRAY_MARGIN_S = 0.0005  # the clock reads of the comparison; a genuine frame comes after its trigger (causality)


def arrived_before_trigger(sys_ns: int, arrived: float, arrived_wall: float, fired_at: float) -> bool:
    """True when a buffer's leader packet reached the host before the software trigger that awaits a frame
    was sent (`fired_at`, monotonic, taken before the trigger command goes out): a camera cannot answer a
    trigger it has not got, so the buffer is not that trigger's image. Aravis stamps the leader's arrival
    on the wall clock (`sys_ns`; 0 when unknown, then nothing can be said; fresh only in a complete buffer,
    see `_grab_one`). It is put on the monotonic clock with the (monotonic - wall) offset read at the
    buffer's pop, so a wall-clock step between the trigger and the frame does not make a genuine frame a
    stray one."""
    if sys_ns <= 0:
        return False
    first_packet = sys_ns * 1e-9 + (arrived - arrived_wall)
    return first_packet < fired_at - _STRAY_MARGIN_S


class GenICamSource(LiveSource):
    """A FrameSource for one GenICam camera (free run, software trigger or hardware line trigger)."""

    def __init__(self, cfg: GenICamSourceConfig, alarm: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.name = f"genicam:{cfg.address or cfg.serial or cfg.id}"  # before the base names the buffer's alarms
        # Buffer, stop, lock, connection state, backoff (LiveSource). The buffer is bounded like every
        # source's: a triggered part beyond queue_size keeps its metadata and gets the fail-safe verdict
        # (queue_full alarm); past max_backlog it is given up and named in the alarm.
        super().__init__(cfg, alarm)
        self._alarm = alarm
        self._triggers: queue.SimpleQueue[float] = queue.SimpleQueue()
        # _lock guards everything below too
        self._session: _Session | None = None
        self._frames = 0
        # Software triggers fired and awaiting their frame: (requested_at, fired_at). One at a time: a
        # camera ignores a trigger that comes while it exposes or reads out (the fake camera merged
        # three back-to-back triggers into one frame), so the next is fired when this one's frame came.
        self._pending: collections.deque[tuple[float, float]] = collections.deque()
        self._frame_came = threading.Event()
        self._stats_done: collections.Counter[str] = collections.Counter()  # stream stats of closed sessions
        self._clock = CaptureClock()
        self._Aravis = None
        self._connected_at = time.monotonic()
        self._generation = 0  # +1 each time a session is retired
        self._grab_generation = 0  # the generation the grab thread last saw
        self._control = threading.Thread(target=self._control_loop, name="genicam-control", daemon=True)
        self._grab = threading.Thread(target=self._grab_loop, name="genicam-grab", daemon=True)

    # -- FrameSource ------------------------------------------------------------------------------
    def start(self) -> None:
        """Opens the camera (errors that can never heal raise SourceError: unknown camera, refused
        feature, unsupported pixel format); then the threads run and reconnect on their own."""
        self._Aravis = load_aravis()
        try:
            session = self._open()
        except SourceError as e:
            self._refused(e)
            raise
        except ConnectionError as e:
            raise SourceError(f"{self.name}: cannot open the camera: {e}") from e
        with self._lock:
            self._session, self._connection = session, Connection.CONNECTED
        log.info("%s: %s %s, %s, trigger %s", self.name, session.device_id, session.model, session.pixel_format,
                 self.cfg.camera_trigger)
        self._control.start()
        self._grab.start()

    def read(self, timeout: float) -> Frame | None:
        return self._buf.get(timeout)

    def stop(self) -> None:
        self._stop.set()
        for t in (self._control, self._grab):
            if t.is_alive():
                t.join(3.0)
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            self._retire(session)
        if not self._grab.is_alive():  # the grab thread is the buffer's only producer
            self._buf.flush_alarms()
        if self._connection is not Connection.FAILED:
            self._connection = Connection.ENDED

    @property
    def finished(self) -> bool:
        return self._stop.is_set() and len(self._buf) == 0

    def software_trigger(self) -> bool:
        """Fires one frame (camera_trigger: software). False, at once, when the camera is not
        connected: the caller gives that part the fail-safe verdict instead of waiting."""
        if self.cfg.camera_trigger != "software":
            raise SourceError(f"{self.name}: software_trigger needs camera_trigger: software "
                              f"(it is {self.cfg.camera_trigger})")
        if self._lost_now(time.monotonic()) is not None:
            return False
        self._triggers.put(time.monotonic())
        return True

    def state(self) -> SourceState:
        now = time.monotonic()
        lost = self._lost_now(now)
        with self._lock:
            connection, detail = self._connection, self._detail
            if lost is not None and connection is Connection.CONNECTED:
                connection, detail = Connection.RECONNECTING, lost
            dropped = collections.Counter(self._dropped)
            frames, reconnects, last = self._frames, self._reconnects, self._last_frame_at
        dropped.update(self._buf.dropped)
        return SourceState(connection=connection, frames=frames, dropped=dict(dropped),
                           last_frame_age_s=None if last is None else now - last, reconnects=reconnects,
                           detail=detail)

    def counters(self) -> dict[str, int]:
        """Transport counters summed over every session: Aravis stream statistics (n_missing_frames,
        n_resent_packets, n_resend_requests, n_missing_packets, ...) plus frames dropped here."""
        with self._lock:
            total = collections.Counter(self._stats_done)
            session = self._session
            total.update(self._dropped)
        total["clock_jumps"] = self._clock.jumps
        if session is not None:
            try:
                total.update(session.stream_stats())
            except Exception:  # a session being torn down
                pass
        return dict(total)

    # -- liveness -----------------------------------------------------------------------------------
    def _lost_now(self, now: float) -> str | None:
        """Why the camera counts as lost right now (None: it does not)."""
        limit = self.cfg.lost_after_ms / 1000
        with self._lock:
            if self._connection is not Connection.CONNECTED:
                return self._detail or self._connection.value
            if self._pending and now - self._pending[0][1] > limit:
                return f"no frame {self.cfg.lost_after_ms} ms after a software trigger"
            if self.cfg.camera_trigger == "free_run":
                since = self._last_frame_at if self._last_frame_at is not None else self._connected_at
                if now - since > limit:
                    return f"no frame for {self.cfg.lost_after_ms} ms (free run)"
        return None

    # -- control thread -------------------------------------------------------------------------------
    def _open(self) -> _Session:
        device_id = self._resolve()
        session = _Session(self._Aravis, self.cfg, device_id)
        self._connected_at = time.monotonic()
        return session

    def _resolve(self) -> str:
        """The Aravis device id to open. An address opens directly (unicast, no discovery)."""
        if self.cfg.address is not None:
            return self.cfg.address
        found = list_cameras(self._Aravis)
        for c in found:
            if ((self.cfg.id is not None and c.id == self.cfg.id)
                    or (self.cfg.serial is not None and c.serial == self.cfg.serial)):
                return c.id
        what = f"id {self.cfg.id!r}" if self.cfg.id is not None else f"serial {self.cfg.serial!r}"
        listing = "; ".join(str(c) for c in found) or "none"
        raise CameraConfigError(f"source: no camera with {what}; cameras found: {listing}")

    def _control_loop(self) -> None:
        realtime.enter("frame")  # the camera's trigger and reconnects: frame path (kernel/realtime.py)
        backoff = self._backoff
        last_probe = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                session = self._session
            if session is None:
                try:
                    session = self._open()
                except (SourceError, ConnectionError) as e:
                    with self._lock:
                        self._detail = f"reconnecting: {e}"
                    backoff.wait(self._stop)
                    continue
                with self._lock:
                    self._session, self._connection, self._detail = session, Connection.CONNECTED, ""
                    self._reconnects += 1
                    self._pending.clear()
                    self._last_frame_at = None
                backoff.reset()
                log.warning("%s: camera back (%s)", self.name, session.device_id)
                last_probe = time.monotonic()
                continue
            with self._lock:
                waiting = bool(self._pending)
            t = None
            if waiting:  # the previous trigger's frame first
                self._frame_came.wait(0.02)
                self._frame_came.clear()
            else:
                try:
                    t = self._triggers.get(timeout=0.05)
                except queue.Empty:
                    pass
            try:
                if t is not None:
                    with self._lock:
                        self._pending.append((t, time.monotonic()))
                    session.camera.software_trigger()
                    last_probe = time.monotonic()
                now = time.monotonic()
                why = self._lost_now(now)
                if why is None and now - last_probe >= self.cfg.probe_ms / 1000:
                    last_probe = now
                    session.camera.get_integer("Width")  # one register read: does the camera still answer?
            except Exception as e:  # GLib.Error from a GVCP request: the camera does not answer
                why = f"camera does not answer: {_gerror(e)}"
            if why is not None:
                self._lose(session, why)

    def _lose(self, session: _Session, why: str) -> None:
        log.warning("%s: camera lost: %s", self.name, why)
        with self._lock:
            self._connection, self._detail = Connection.RECONNECTING, why
            self._session = None
            self._generation += 1
            self._dropped["triggers_lost"] += len(self._pending)
            self._pending.clear()
        self._retire(session)
        while True:  # triggers that came in meanwhile are for a camera that is gone
            try:
                self._triggers.get_nowait()
                with self._lock:
                    self._dropped["triggers_lost"] += 1
            except queue.Empty:
                break

    def _retire(self, session: _Session) -> None:
        """Keeps a closing session's transport counters, waits until the grab thread let go of it, then
        closes it here. The order matters: Aravis' stream and device finalizers write the camera's
        stream registers, and if they ran late (whenever the grab thread dropped its last reference)
        they hit the camera's next session: after a restart, its frames stopped arriving (measured)."""
        try:
            stats = session.stream_stats()
        except Exception:  # noqa: BLE001 - counters of a broken session are best effort
            stats = {}
        with self._lock:
            self._stats_done.update(stats)
            generation = self._generation
        deadline = time.monotonic() + 2.0
        while (self._grab.is_alive() and self._grab_generation < generation and time.monotonic() < deadline):
            time.sleep(0.005)
        session.close()

    # -- grab thread ------------------------------------------------------------------------------------
    def _grab_loop(self) -> None:
        realtime.enter("frame")  # frame path (kernel/realtime.py)
        frame_id = 0
        last_session = None
        while not self._stop.is_set():
            with self._lock:
                session = self._session
                self._grab_generation = self._generation  # no reference to an older session is left here
            if session is None:
                last_session = None
                self._stop.wait(0.02)
                continue
            if session is not last_session:  # a restarted camera may have restarted its clock
                self._clock.reset()
            last_session = session
            frame = self._grab_one(session, frame_id)
            if frame is not None:
                self._buf.put(frame)
                frame_id += 1
            del session, frame

    def _grab_one(self, session: _Session, frame_id: int) -> Frame | None:
        """Pops one buffer (50 ms at most), converts it and gives the buffer back to the pool. An
        incomplete buffer of a triggered camera comes back as a frame without image (module doc)."""
        Aravis = self._Aravis
        stream = session.stream
        if stream is None:  # closed meanwhile
            return None
        buf = stream.timeout_pop_buffer(50_000)  # microseconds
        if buf is None:
            return None
        arrived, arrived_wall = time.monotonic(), time.time()
        lost = None
        try:
            status = self._buffer_status(buf)
            cam_ts, sys_ts = buf.get_timestamp(), buf.get_system_timestamp()
            if status != Aravis.BufferStatus.SUCCESS:
                lost = "incomplete" if status in (Aravis.BufferStatus.MISSING_PACKETS,
                                                  Aravis.BufferStatus.TIMEOUT) else status.value_nick
                image = None
            else:
                pf = PFNC.get(buf.get_image_pixel_format(), session.pixel_format)
                image = decode_genicam_payload(np.frombuffer(buf.get_data(), np.uint8), pf, buf.get_image_width(),
                                       buf.get_image_height())
        except SourceError as e:
            with self._lock:
                self._dropped["bad_frame"] += 1
            log.warning("%s: frame refused: %s", self.name, e)
            return None
        finally:
            stream.push_buffer(buf)
        captured_at, captured_wall = self._capture_time(cam_ts, sys_ts, arrived, arrived_wall)
        with self._lock:
            if self._session is not session:
                return None  # a frame of a session already declared lost
            # Only a complete buffer's arrival stamp is trusted: Aravis sets it from the leader packet, and a
            # buffer whose leader was lost keeps the stamp of its previous use (taken for a stray, a lossy-link
            # test's incomplete frames were dropped and their triggers waited until the camera counted as lost).
            if self.cfg.camera_trigger == "software" and (not self._pending or (
                    lost is None and arrived_before_trigger(sys_ts, arrived, arrived_wall, self._pending[0][1]))):
                # No trigger awaits a frame, or the buffer's first packet reached us before the awaited
                # trigger was sent: this buffer is no part's image (the fake camera hands over one extra
                # buffer at acquisition start in about 1 of 10 sessions; a warm-up retry's frame can come
                # after the warm-up; a grab thread held off the CPU pops a stray buffer only after the next
                # trigger went). Handed on, it would become the awaited trigger's frame and that part would
                # be judged on an image taken before it was there. The trigger stays pending for its own.
                self._dropped["unsolicited"] += 1
                return None
            if lost is not None:
                self._dropped[lost] += 1
            else:
                self._frames += 1
                self._last_frame_at = arrived
            trigger_at = self._pending.popleft()[0] if self._pending else None
        if trigger_at is not None:  # software trigger: the part started when it was asked for
            self._frame_came.set()  # the next trigger may go (a broken frame came: that part has no image)
            captured_wall -= captured_at - trigger_at
            captured_at = trigger_at
        if lost is not None and self.cfg.trigger == "free_run":
            return None  # a live stream: the next frame will do
        part = None if self.cfg.trigger == "free_run" else f"{session.device_id}-{frame_id}"
        return Frame(frame_id=frame_id, image=image, captured_at=captured_at, captured_wall=captured_wall,
                     part_id=part, source=self.name, dropped=lost)

    def _buffer_status(self, buf):
        """The buffer's status: where a real camera's lost packets become a lost frame (a test stands in
        for a lossy link by overriding this; the runtime never does)."""
        return buf.get_status()

    def _capture_time(self, cam_ns: int, sys_ns: int, arrived: float, arrived_wall: float) -> tuple[float, float]:
        """(monotonic, wall) time of the exposure: the camera's timestamp mapped to host wall time by
        `CaptureClock`, then to the monotonic clock by the (monotonic - wall) of the arrival. Without a
        camera timestamp, the host time of the first packet; without that, the arrival."""
        wall_to_mono = arrived - arrived_wall
        if cam_ns > 0 and sys_ns > 0:
            wall = self._clock.host_time(cam_ns * 1e-9, sys_ns * 1e-9)
        elif sys_ns > 0:
            wall = sys_ns * 1e-9
        else:
            wall = arrived_wall
        wall = min(wall, arrived_wall)
        return wall + wall_to_mono, wall
