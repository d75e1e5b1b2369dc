"""The configuration: strict pydantic models for every section, loaded from YAML.

Rules: unknown keys are errors; every field has a description and bounds; any field can be
overridden by `INSPECTOR_<SECTION>__<FIELD>` (nested with `__`); secrets (MQTT password, S3
keys) come only from the environment and are refused in the YAML.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from inspector.errors import ConfigError

ENV_PREFIX = "INSPECTOR_"


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- source ------------------------------------------------------------------------------------
TriggerMode = Literal["free_run", "triggered"]


class _SourceConfigBase(StrictConfig):
    trigger: TriggerMode = Field(
        "triggered",
        description="triggered: every frame is a part and is never dropped; free_run: a live stream, "
        "stale frames are dropped (counted) and only the freshest is inspected.",
    )
    queue_size: int = Field(
        8, ge=1, le=1024,
        description="Frames (images) buffered between grabber and detector. free_run: the oldest is overwritten "
        "when full. triggered: a part arriving when it is full keeps its metadata but its image is dropped: it gets "
        "the fail-safe verdict and a queue_full alarm (memory stays bounded when the detector falls behind).")
    max_backlog: int = Field(
        4096, ge=1, le=1_000_000,
        description="triggered: parts waiting in all (images plus image-less parts past queue_size; ~0.3 KiB "
        "each without an image). Beyond it the oldest image-less parts are given up: they get no verdict and "
        "are named (part ids) in a queue_full alarm. Only a stalled detector fills it.")

    @model_validator(mode="after")
    def _backlog_holds_the_queue(self):
        if self.max_backlog < self.queue_size:
            raise ValueError(f"max_backlog ({self.max_backlog}) must be >= queue_size ({self.queue_size})")
        return self


#: inspector.sources.optics.FAMILIES, plus "none" (back to the unaltered camera); a test keeps them equal
#: (config cannot import inspector.sources: that package imports config).
OpticsFamily = Literal["none", "darker", "brighter", "low_contrast", "white_balance", "gamma", "jpeg", "blur",
                       "defocus", "noise", "vignetting", "geometry"]


class AppearanceChangeConfig(StrictConfig):
    after_parts: int = Field(ge=0, le=10**9, description="From this part index on (0-based) the camera looks this way.")
    family: OpticsFamily = Field(description="Optics family (inspector.sources.optics) or none (unaltered).")
    magnitude: Literal["default", "strong"] = Field(
        "strong", description="default: issue 14's validated magnitudes; strong: beyond them (the drift guard's test).")
    params: dict[str, float] = Field(
        default_factory=dict, max_length=4,
        description="Exact parameter values instead of a draw, e.g. {sigma: 4} for blur (names: optics.FAMILIES).")


class SyntheticSourceConfig(_SourceConfigBase):
    kind: Literal["synthetic"] = "synthetic"
    seed: int = Field(777, ge=0, le=2**31 - 1, description="Seed of the synthetic conveyor (not a training seed).")
    parts_per_s: float = Field(10.0, gt=0, le=1000, description="Conveyor pace: parts per second.")
    width: int = Field(640, ge=320, le=4096, description="Frame width in pixels.")
    height: int = Field(480, ge=240, le=4096, description="Frame height in pixels.")
    defect_free_ratio: float = Field(1 / 3, ge=0, le=1, description="Share of parts without defects.")
    appearance: list[AppearanceChangeConfig] = Field(
        default_factory=list, max_length=32,
        description="Tests and demos: the camera's appearance switched mid-run (a lamp ageing, a white balance "
        "drifting). Each entry holds from its after_parts on, until the next; one draw of its parameters per entry.")

    @field_validator("appearance")
    @classmethod
    def _appearance_in_order(cls, v: list[AppearanceChangeConfig]) -> list[AppearanceChangeConfig]:
        starts = [a.after_parts for a in v]
        if starts != sorted(set(starts)):
            raise ValueError(f"appearance: after_parts must be strictly increasing, got {starts}")
        return v


class VideoSourceConfig(_SourceConfigBase):
    kind: Literal["video"] = "video"
    path: Path = Field(description="Video file to read.")
    pace: Literal["native", "fast"] = Field("native", description="native: at the file's fps; fast: as fast as read.")
    loop: bool = Field(False, description="Start again at the end of the file.")


class FolderSourceConfig(_SourceConfigBase):
    kind: Literal["folder"] = "folder"
    path: Path = Field(description="Folder of images (jpg, png, bmp, tif), read in name order.")
    parts_per_s: float = Field(0.0, ge=0, le=1000, description="Pace; 0 reads as fast as possible.")
    loop: bool = Field(False, description="Start again after the last image.")


class OpenCVSourceConfig(_SourceConfigBase):
    kind: Literal["opencv"] = "opencv"
    trigger: TriggerMode = Field("free_run", description="Live cameras are usually free-running.")
    url: str | None = Field(
        None, description="RTSP/HTTP URL (mutually exclusive with device), without credentials: user and password "
        "go in `username` and INSPECTOR_SOURCE__PASSWORD and are added (percent-encoded) when the camera is opened.")
    username: str | None = Field(None, min_length=1, max_length=256, description="Camera user (with url); its "
                                 "password comes from INSPECTOR_SOURCE__PASSWORD.")
    password: SecretStr | None = Field(None, exclude=True, description="Environment only: INSPECTOR_SOURCE__PASSWORD, "
                                       "the camera password (any characters; percent-encoded into the URL at open).")
    device: int | None = Field(None, ge=0, le=63, description="USB/V4L2 device index.")
    open_timeout_ms: int = Field(5000, ge=100, le=120_000, description="CAP_PROP_OPEN_TIMEOUT_MSEC.")
    read_timeout_ms: int = Field(2000, ge=50, le=60_000,
                                 description="CAP_PROP_READ_TIMEOUT_MSEC: a frozen stream is declared lost after this.")
    reconnect_initial_ms: int = Field(250, ge=10, le=60_000, description="First reconnect delay.")
    reconnect_max_ms: int = Field(5000, ge=100, le=600_000, description="Cap of the exponential reconnect backoff.")
    max_frame_age_ms: int = Field(200, ge=1, le=60_000,
                                  description="free_run: a frame older than this is stale and dropped.")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="RTSP transport. tcp (default): passes firewalls/NAT and loses no packets (a lost UDP "
        "packet corrupts a frame); udp: lower latency on a clean LAN. Set through FFmpeg's capture options.",
    )

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, v: str | None) -> str | None:
        if v is not None and url_has_credentials(v):
            raise ValueError(
                "credentials in the URL are refused (the URL is logged, hashed and kept in the config file): "
                "remove 'user:password@', set source.username, and pass the password in the environment as "
                f"{ENV_PREFIX}SOURCE__PASSWORD (or the user too, as {ENV_PREFIX}SOURCE__USERNAME)")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> OpenCVSourceConfig:
        if (self.url is None) == (self.device is None):
            raise ValueError("set exactly one of url or device")
        if self.url is None and (self.username is not None or self.password is not None):
            raise ValueError("username/password go with url (a V4L2 device has no credentials)")
        if self.reconnect_max_ms < self.reconnect_initial_ms:
            raise ValueError(f"reconnect_max_ms ({self.reconnect_max_ms}) must be >= "
                             f"reconnect_initial_ms ({self.reconnect_initial_ms})")
        return self


def url_has_credentials(url: str) -> bool:
    """True when `url` carries a user or password (`scheme://user:pass@host/...`), also when the password
    holds characters that were not percent-encoded (`/`, `?`, `#`, `@`) and so hide it from urlsplit."""
    _, sep, rest = url.partition("://")
    if not sep:
        return False
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return True
    except ValueError:  # e.g. an invalid port: look at the raw text below
        pass
    # `rtsp://admin:pa/ss@host/` splits at the `/`: no userinfo for urlsplit, but a `:` before an
    # `@` is how every camera URL with a password looks. Refusing a rare `user:x@` in a path is the
    # safe side of the trade.
    head, at, _ = rest.rpartition("@")
    return bool(at) and ":" in head


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, for logs, state and error messages.

    A password may hold `/`, `?`, `#`, `@` or `:` unencoded (people paste them so), which moves the
    authority's end for urlsplit; so the userinfo is everything between `://` and the LAST `@`, and
    the rest is split by urllib.parse. The user is kept when it is a plain name (percent-escapes
    allowed); anything else in the userinfo is hidden. Text without `scheme://...@` is returned as is."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, tail = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = user if _PLAIN_USER.fullmatch(user) else "***"
    try:
        parts = urlsplit(f"{scheme}://{tail}")
    except ValueError:  # an unparsable rest (bad IPv6 brackets): still never show the userinfo
        return f"{scheme}://{shown}{':***' if colon else ''}@{tail}"
    return urlunsplit(parts._replace(netloc=f"{shown}{':***' if colon else ''}@{parts.netloc}"))


_PLAIN_USER = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]+")


# GenICam (GigE Vision / USB3 Vision) through Aravis: the pixel formats the source converts to BGR.
GENICAM_PIXEL_FORMATS = ("Mono8", "Mono10", "Mono12", "Mono16", "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8",
                         "RGB8", "BGR8")


class GenICamSourceConfig(_SourceConfigBase):
    """An industrial camera through Aravis (optional extra `genicam`). Select it by exactly one of id,
    serial or address. Features left at null keep the camera's own setting."""

    kind: Literal["genicam"] = "genicam"
    id: str | None = Field(None, min_length=1, max_length=256, description="Aravis device id "
                           "(vendor-serial as `arv-tool-0.8` lists it); found by discovery on every interface.")
    serial: str | None = Field(None, min_length=1, max_length=64, description="Camera serial number (discovery).")
    address: str | None = Field(None, min_length=1, max_length=253, description="GigE Vision camera IP address: "
                                "opened directly (unicast), no discovery broadcast.")
    camera_trigger: Literal["free_run", "software", "hardware"] = Field(
        "software", description="free_run: the camera streams at frame_rate; software: the inspector fires each "
        "frame (TriggerSoftware, e.g. on a PLC trigger message); hardware: an input line (photo-eye) fires it.")
    hardware_line: str = Field("Line0", pattern=r"^[A-Za-z0-9_]+$", max_length=32,
                               description="camera_trigger=hardware: TriggerSource input line.")
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field(
        "RisingEdge", description="camera_trigger=hardware: TriggerActivation edge.")
    pixel_format: str | None = Field(None, description="PixelFormat to set, one of " + ", ".join(GENICAM_PIXEL_FORMATS)
                                     + "; null keeps the camera's (which must then be one of them).")
    exposure_us: float | None = Field(None, gt=0, le=10_000_000, description="ExposureTime in microseconds.")
    gain_db: float | None = Field(None, ge=0, le=100, description="Gain (dB, or the camera's raw gain unit where it "
                                  "has only GainRaw).")
    frame_rate: float | None = Field(None, gt=0, le=10_000,
                                     description="camera_trigger=free_run: AcquisitionFrameRate.")
    roi: tuple[int, int, int, int] | None = Field(None, description="Sensor region x, y, width, height (pixels).")
    packet_size: int | None = Field(None, ge=576, le=16_384, description="GigE Vision stream packet size (bytes); "
                                    "null negotiates the largest the path carries (jumbo frames where enabled).")
    packet_resend: bool = Field(True, description="GigE Vision: ask the camera to resend lost packets (counted).")
    buffers: int = Field(8, ge=2, le=256, description="Aravis buffer pool: frames the driver can hold in flight.")
    lost_after_ms: int = Field(
        1000, ge=100, le=60_000, description="The camera is declared lost (camera_lost) when a software trigger got "
        "no frame for this long, or a free-running camera sent none; a register probe also runs every "
        "probe_ms while idle.")
    probe_ms: int = Field(1000, ge=100, le=60_000, description="Idle liveness probe period (one register read).")
    reconnect_initial_ms: int = Field(250, ge=10, le=60_000, description="First reconnect delay.")
    reconnect_max_ms: int = Field(2000, ge=100, le=600_000, description="Cap of the exponential reconnect backoff.")

    @model_validator(mode="before")
    @classmethod
    def _buffer_policy_follows_the_trigger(cls, data):
        # A free-running camera is a live stream (keep the freshest); a triggered one delivers parts.
        if isinstance(data, dict) and "trigger" not in data:
            data = {**data, "trigger": "free_run" if data.get("camera_trigger") == "free_run" else "triggered"}
        return data

    @field_validator("pixel_format")
    @classmethod
    def _supported_format(cls, v: str | None) -> str | None:
        if v is not None and v not in GENICAM_PIXEL_FORMATS:
            raise ValueError(f"pixel format {v!r} is not supported; supported: {', '.join(GENICAM_PIXEL_FORMATS)}")
        return v

    @field_validator("roi")
    @classmethod
    def _roi_sized(cls, v):
        if v is not None and (min(v[:2]) < 0 or min(v[2:]) < 1):
            raise ValueError(f"roi must be x, y >= 0 and width, height >= 1; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_camera(self) -> GenICamSourceConfig:
        chosen = [k for k in ("id", "serial", "address") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of id, serial or address (got {chosen or 'none'})")
        if self.camera_trigger != "free_run" and self.trigger == "free_run":
            raise ValueError("a triggered camera (camera_trigger software/hardware) needs trigger: triggered "
                             "(every frame is a part; free_run would drop parts)")
        if self.frame_rate is not None and self.camera_trigger != "free_run":
            raise ValueError("frame_rate applies to camera_trigger: free_run only (a trigger sets the pace)")
        if self.reconnect_max_ms < self.reconnect_initial_ms:
            raise ValueError(f"reconnect_max_ms ({self.reconnect_max_ms}) must be >= reconnect_initial_ms "
                             f"({self.reconnect_initial_ms})")
        return self


# The source kinds, listed once: the union, the error-path cleaner and the docs read this tuple.
SOURCE_CONFIGS = (SyntheticSourceConfig, VideoSourceConfig, FolderSourceConfig, OpenCVSourceConfig,
                  GenICamSourceConfig)
SOURCE_KINDS = tuple(c.model_fields["kind"].default for c in SOURCE_CONFIGS)
SourceConfig = Annotated[Union[SOURCE_CONFIGS], Field(discriminator="kind")]  # noqa: UP007 - a tuple unpacks only in Union[]


# -- model -------------------------------------------------------------------------------------
class ModelConfig(StrictConfig):
    path: Path = Field(Path("models/demo"), description="Model bundle directory (IR files + model_card.json).")
    precision: Literal["int8", "fp32"] = Field("int8", description="Which IR of the bundle to run.")
    task: Literal["detect", "classify"] = Field(
        "detect", description="The model kind this station runs (the card's `task`): detect (boxes per class) or "
        "classify (OK/NG from one probability per class of the whole image). A bundle of another task is refused "
        "at start (exit 2) and by stage, promote and shadow, naming both tasks.")
    device: str = Field("CPU", pattern=r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:[A-Z0-9.,]+)?|HETERO:[A-Z0-9.,]+)$",
                        description="OpenVINO device: CPU, GPU, NPU, AUTO or AUTO:GPU,CPU ...")
    threads: int = Field(0, ge=0, le=256, description="CPU inference threads; 0 lets OpenVINO choose.")
    hint: Literal["latency", "throughput"] = Field(
        "latency", description="OpenVINO performance hint: latency (one frame at a time on all cores, lowest "
        "capture-to-verdict) or throughput (parallel streams: more parts/s, each a little later).")
    inference_precision: Literal["f32", "bf16", "f16", "device_default"] = Field(
        "f32", description="CPU only: precision of the layers the model runs in float (the FP32 IR, the INT8 IR's box "
        "decoding). f32: the verdicts the model card measured, identical on every CPU generation. bf16: faster on CPUs "
        "with AMX/AVX512-BF16 (FP32 IR measured 4.0 vs 9.1 ms on such a Xeon), confidences shift by ~0.02. "
        "device_default: OpenVINO's choice (bf16 where the CPU has it). GPU and NPU keep their own defaults.")
    requests: int = Field(0, ge=0, le=64, description="Inference requests in flight; 0: OpenVINO's optimum "
                          "(at least 2, so the next frame is preprocessed while one is inferred).")
    cache_dir: Path | None = Field(None, description="OpenVINO model cache (speeds up GPU/NPU start).")
    classes: list[str] | None = Field(None, description="Expected class names, in order; start is refused if "
                                      "the model differs.")
    input_size: tuple[int, int] | None = Field(None, description="Expected model input [height, width]; "
                                               "refused if different.")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold (ultralytics' default).")
    max_detections: int = Field(300, ge=1, le=10_000, description="Detections kept per frame after NMS.")


# -- decision ----------------------------------------------------------------------------------
class DecisionConfig(StrictConfig):
    budget_ms: float = Field(50.0, gt=0, le=60_000, description="Deadline = captured_at + budget_ms.")
    on_late: Literal["reject", "pass"] = Field("reject", description="Action when no verdict was made before the "
                                               "deadline (fail safe: reject).")
    thresholds: dict[str, float] = Field(default_factory=dict,
                                         description="Per-class confidence thresholds; overrides the model card's.")
    default_threshold: float = Field(0.5, gt=0, lt=1,
                                     description="Threshold for a class the card and config do not name.")
    uncertain_margin: float = Field(0.15, ge=0, lt=1,
                                    description="A detection within ±margin of its class threshold is 'uncertain'.")
    roi: tuple[int, int, int, int] | None = Field(None, description="Region of interest x0,y0,x1,y1 (source px); "
                                                  "defects whose centre is outside are ignored.")
    min_box_px: float = Field(0.0, ge=0, le=10_000,
                              description="Ignore defects whose box is smaller than this on both sides.")
    on_drift: Literal["alarm", "reject", "hold"] = Field(
        "alarm", description="When the input drift guard says the images left the model's envelope (drift section): "
        "alarm: input_drift alarm only; reject: also every part that would pass is rejected (reason drift) while "
        "in drift; hold: every part gets the fail-safe verdict (a LATE too, whatever on_late says) until the "
        "stream is back inside, and /healthz is red meanwhile.")

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: t for k, t in v.items() if not 0 < t < 1}
        if bad:
            raise ValueError(f"thresholds must be within (0, 1), got {bad}")
        return v

    @field_validator("roi")
    @classmethod
    def _roi_ordered(cls, v):
        if v is not None and (v[2] <= v[0] or v[3] <= v[1] or min(v) < 0):
            raise ValueError(f"roi must be x0,y0,x1,y1 with x1>x0, y1>y0, all >= 0; got {list(v)}")
        return v


# -- input drift guard and golden part (issue 14) ------------------------------------------------
class DriftConfig(StrictConfig):
    """The input drift guard (inference/drift_guard.py) against the model card's input_envelope."""

    enabled: bool = Field(True, description="Watch the input; a model card without input_envelope disables it "
                          "(logged once at start).")
    window: int = Field(16, ge=2, le=256, description="Frames in the windowed median of each image statistic.")
    enter_after: int = Field(4, ge=1, le=1000, description="Consecutive frames outside the envelope before drift.")
    clear_after: int = Field(48, ge=1, le=100_000, description="Consecutive frames inside before drift is cleared.")
    psi_window: int = Field(200, ge=10, le=100_000, description="Frames in the confidence PSI window.")
    psi_threshold: float = Field(0.25, ge=0.01, le=10, description="Population stability index of the top "
                                 "confidences above which they have drifted.")
    psi_acts: bool = Field(False, description="false: a drift seen only in the confidences raises input_drift but "
                           "does not trigger decision.on_drift (a batch of bad parts moves them too).")
    output: bool = Field(True, description="Also watch what the model does (the output guard): the share of weak "
                         "judgements (top score in (0, weak_below): 0.5 for a detector, (1 + 1/k) / 2 for a "
                         "classifier of k classes) and of rejects over output_window judged parts, against the card's "
                         "input_envelope.output (else the run's first output_baseline parts); "
                         "output_drift when one leaves its binomial band, and decision.on_drift acts on it.")
    output_window: int = Field(40, ge=10, le=10_000, description="Judged parts in the output guard's window (40: "
                               "raises within 50 parts of an untrained optical change, 0 false alarms in 6600 "
                               "unaltered parts; docs/contracts.md).")
    output_baseline: int = Field(200, ge=10, le=100_000, description="Judged parts at the start of a run (or after a "
                                 "model switch) that give the reference reject share, and the weak-detection share "
                                 "when the card records none. At least output_window.")
    output_alpha: float = Field(1e-4, gt=0, lt=0.5, description="Probability, per window and side, that a stream "
                                "like the reference leaves the band (the band is the binomial one at this level).")

    @model_validator(mode="after")
    def _baseline_covers_a_window(self) -> DriftConfig:
        if self.output_baseline < self.output_window:
            raise ValueError(f"output_baseline must be >= output_window, got {self.output_baseline} < "
                             f"{self.output_window}")
        return self


class GoldenPartConfig(StrictConfig):
    name: str | None = Field(None, min_length=1, max_length=64, description="Name in alarms and the report "
                             "(default: the image file name or the part id).")
    image: Path | None = Field(None, description="Reference image inspected every every_s through the same path "
                               "(never actuated, never counted as a part).")
    part_id: str | None = Field(None, min_length=1, max_length=128, description="Triggered lines: a physical "
                                "golden part recognised by its part id (published as any part, then checked).")
    expect: Literal["PASS", "REJECT"] = Field(description="The verdict the model must give it.")
    every_s: float = Field(600.0, ge=1, le=86_400, description="Image mode: seconds between two inspections.")

    @model_validator(mode="after")
    def _one_kind(self) -> GoldenPartConfig:
        if (self.image is None) == (self.part_id is None):
            raise ValueError("a golden part is either image: FILE or part_id: ID (exactly one of them)")
        return self


class GoldenConfig(StrictConfig):
    parts: list[GoldenPartConfig] = Field(default_factory=list, max_length=16,
                                          description="Golden parts; a wrong verdict raises golden_part_failed.")
    idle_wait_s: float = Field(30.0, ge=0, le=3600, description="A golden image waits for an idle moment (no part "
                               "for 50 ms) at most this long, then goes in right after a part.")
    max_interval_s: float | None = Field(
        None, gt=0, le=30 * 86_400, description="A golden part not judged (ok or failed; a LATE check does "
        "not count) for this long is overdue: golden_part_overdue and the /healthz check `golden` red "
        "until it is judged again. Unset: image parts 3 x every_s + idle_wait_s, part-id parts not watched.")


# -- MQTT --------------------------------------------------------------------------------------
class TLSConfig(StrictConfig):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client key (mutual TLS).")
    insecure: bool = Field(False, description="Skip hostname verification (testing only).")

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


_TOPIC_PART = r"^[A-Za-z0-9_.\-]+$"


class MQTTConfig(StrictConfig):
    enabled: bool = Field(True, description="Publish verdicts over MQTT. false: verdicts go to the JSONL sink only.")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    protocol: Literal["v5", "v311"] = Field("v5", description="MQTT 5 (message expiry) or 3.1.1.")
    client_id: str | None = Field(None, max_length=128, description="Client id; default inspector-<line>-<station>.")
    keepalive_s: int = Field(5, ge=1, le=3600,
                             description="Keepalive; the broker publishes our last will after 1.5x this.")
    username: str | None = Field(None, description="Username (the password comes from INSPECTOR_MQTT__PASSWORD).")
    password: SecretStr | None = Field(None, description="Environment only: INSPECTOR_MQTT__PASSWORD.")
    tls: TLSConfig | None = Field(None, description="TLS settings; absent means plain TCP.")
    prefix: str = Field("inspector", pattern=_TOPIC_PART, description="Topic root.")
    line: str = Field("line1", pattern=_TOPIC_PART, description="Line name in topics.")
    station: str = Field("st1", pattern=_TOPIC_PART, description="Station name in topics.")
    qos: Literal[1, 2] = Field(1, description="QoS of rejects and alarms.")
    publish_verdicts: bool = Field(False, description="Also publish every verdict on .../verdict.")
    verdict_qos: Literal[0, 1] = Field(0, description="QoS of .../verdict.")
    heartbeat_ms: int = Field(1000, ge=50, le=600_000, description="Heartbeat period.")
    outbox_path: Path = Field(Path("var/outbox.sqlite"), description="Durable outbox (SQLite).")
    outbox_max: int = Field(100_000, ge=10, le=10_000_000,
                            description="Bound of the outbox; reaching it raises an alarm.")
    reject_journal_dir: Path | None = Field(
        Path("/dev/shm"),
        description="A tmpfs folder for the reject journal: a decided reject is copied there (memory-mapped, "
        "survives a kill -9, not a power cut) and published at once; the outbox commit follows on the publisher "
        "thread. null: each reject is committed to the outbox on the pipeline's thread before it is published "
        "(slower beside disk I/O: docs/contracts.md, durability).",
    )
    reconnect_min_s: float = Field(0.2, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(5.0, gt=0, le=600, description="Reconnect backoff cap.")
    subsecond_rejects: Literal["alarm", "expire_1s"] = Field(
        "expire_1s",
        description="MQTT v5 expiry is whole seconds, line budgets are tens of ms. A reject with less than 1 s "
        "left: expire_1s (default) = published with a 1 s broker expiry as a backstop; the payload's `deadline` "
        "is authoritative and subscribers drop a reject once it has passed (the reference actuator does). "
        "alarm = not published at all, raised as an escaped_part alarm (for lines whose budget is >= 1 s). "
        "Either way, a reject already past its deadline is never published: it becomes an alarm.",
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> MQTTConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must be >= "
                             f"reconnect_min_s ({self.reconnect_min_s})")
        return self

    @property
    def topic_root(self) -> str:
        return f"{self.prefix}/{self.line}/{self.station}"


# -- sampling, spool, upload -------------------------------------------------------------------
class RateLimitsConfig(StrictConfig):
    per_minute: int = Field(30, ge=0, le=100_000, description="Samples per minute at most.")
    per_hour: int = Field(600, ge=0, le=1_000_000, description="Samples per hour at most.")
    per_day: int = Field(5000, ge=0, le=10_000_000, description="Samples per day at most.")


class StrategyConfig(StrictConfig):
    enabled: bool = Field(True, description="Use this strategy.")
    rate: float = Field(1.0, ge=0, le=1, description="Probability that an eligible frame is kept.")
    limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig, description="Rate caps of this strategy.")


class SamplingConfig(StrictConfig):
    enabled: bool = Field(True, description="Keep sampled frames for review.")
    uncertain: StrategyConfig = Field(default_factory=StrategyConfig,
                                      description="Frames with a detection in the uncertain band.")
    rejects: StrategyConfig = Field(default_factory=lambda: StrategyConfig(rate=0.2),
                                    description="Rejected frames, at a rate.")
    passes: StrategyConfig = Field(default_factory=lambda: StrategyConfig(rate=0.01),
                                   description="Random passes (to catch escapes).")
    per_class: dict[str, StrategyConfig] = Field(default_factory=dict,
                                                 description="Extra strategy per defect class name.")
    shadow_disagree: StrategyConfig = Field(
        default_factory=StrategyConfig,
        description="Frames where the shadow model (shadow section) and the active model disagree (outcome or "
        "defect classes); kept with reason shadow_disagree for the nightly review.")
    dedup_window_s: float = Field(10.0, ge=0, le=86_400, description="Near-duplicate frames within this window are "
                                  "suppressed (free-run frames, or frames of the same part_id; distinct triggered "
                                  "parts never are).")
    dedup_hamming: int = Field(6, ge=0, le=64, description="Max perceptual-hash distance counted as a duplicate.")
    seed: int | None = Field(None, description="Seed of the sampling dice (tests); None: random.")


class SpoolConfig(StrictConfig):
    dir: Path = Field(Path("var/spool"), description="Spool directory.")
    max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024, le=2**50, description="Hard bound of the spool's disk use.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of spooled frames.")
    queue_size: int = Field(64, ge=1, le=10_000,
                            description="Samples waiting to be written; more are dropped (counted).")


class UploadConfig(StrictConfig):
    destination: str = Field("file://var/uploads",
                             description="s3://bucket/prefix or file:///path (file://relative also accepted).")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, ...); None: AWS.")
    region: str = Field("us-east-1", description="S3 region.")
    window: str | None = Field("01:00-05:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
                               description="Nightly local-time window HH:MM-HH:MM; null (or 'off' from the "
                               "environment) disables in-service upload.")
    bandwidth_bytes_per_s: int = Field(0, ge=0, description="Upload bandwidth cap; 0: unlimited.")
    retries: int = Field(5, ge=0, le=100, description="Retries per object after the first attempt; then the night "
                         "gives up (all kept for the next window).")
    backoff_s: float = Field(1.0, gt=0, le=3600, description="First retry delay (doubles each time, capped at 60 s).")
    concurrency: int = Field(4, ge=1, le=32, description="Objects uploaded in parallel (the bandwidth cap is shared).")
    # Secrets: environment only (INSPECTOR_UPLOAD__ACCESS_KEY / __SECRET_KEY); load_config refuses them in
    # YAML. exclude=True keeps them out of model_dump and so out of config_hash. When unset, boto3's
    # standard chain applies (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, profiles, roles).
    access_key: SecretStr | None = Field(None, exclude=True, description="Environment only: S3 access key id.")
    secret_key: SecretStr | None = Field(None, exclude=True, description="Environment only: S3 secret access key.")

    @field_validator("window", mode="before")
    @classmethod
    def _window_off(cls, v):
        # The environment cannot say null: INSPECTOR_UPLOAD__WINDOW=off disables the window.
        return None if isinstance(v, str) and v.strip().lower() in ("", "off", "none", "null") else v

    @field_validator("destination")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file://.+)$", v):
            raise ValueError(f"expected s3://bucket[/prefix] or file://path, got {v!r}")
        return v


class MetricsConfig(StrictConfig):
    enabled: bool = Field(True, description="Serve Prometheus metrics and /healthz.")
    host: str = Field("127.0.0.1", description="Bind address of the metrics endpoint.")
    port: int = Field(9108, ge=0, le=65535, description="Metrics port; 0 picks a free one.")


class PageConfig(StrictConfig):
    """The operator's line-side page (inspector/page/): station state, live frame, rejects, counters, alarms
    and the model, pushed to a browser by server-sent events from the service's own HTTP server."""

    enabled: bool = Field(False, description="Serve the line-side page (off by default; `make demo` turns it on).")
    host: str = Field("127.0.0.1", min_length=1, description="Bind address. Any address outside 127.0.0.0/8 and "
                      "::1 needs a token (INSPECTOR_PAGE__TOKEN): the service refuses to start without one.")
    port: int = Field(8088, ge=0, le=65535, description="Port of the page; 0 picks a free one (logged).")
    token: SecretStr | None = Field(None, exclude=True, description="Environment only: INSPECTOR_PAGE__TOKEN. "
                                    "When set, every request must carry it (?token= or Authorization: Bearer).")
    max_clients: int = Field(5, ge=1, le=50, description="Browsers connected at once; one more gets 503.")
    frame_fps: float = Field(2.0, gt=0, le=2.0, description="Rate of the live frame sent to the page (<= 2 per s).")
    frame_width: int = Field(480, ge=64, le=1280, description="Width of the live frame on the page, in pixels.")
    thumb_width: int = Field(160, ge=32, le=640, description="Width of a reject's thumbnail, in pixels.")


class BackgroundConfig(StrictConfig):
    """Background threads (spool writer, uploader, verdict log) run at a lower OS priority than the frame
    path, so that JPEG encoding, disk and network work yield the CPU to inference on a small line PC."""

    priority: Literal["nice", "idle", "off"] = Field(
        "nice", description="nice: raise the background threads' niceness to `nice` (Linux: per thread); "
        "idle: SCHED_IDLE (they run only when a core is otherwise idle; the spool may then drop samples under "
        "sustained load, counted); off: leave them at the service's priority.")
    nice: int = Field(10, ge=1, le=19, description="Niceness of background threads with priority=nice "
                      "(10: CFS weight 110 vs 1024 at nice 0, about a tenth of a contended core).")


class RealtimeConfig(StrictConfig):
    """Per-thread OS scheduling (kernel/realtime.py): the frame path (camera grab, infer, OpenVINO's threads,
    watchdog, post, PLC pairing, the reject publisher) under a real-time policy, everything else below it."""

    policy: Literal["auto", "fifo", "rr", "off"] = Field(
        "auto", description="auto: SCHED_FIFO for the frame path where the OS permits it (CAP_SYS_NICE or "
        "RLIMIT_RTPRIO >= priority, and a real-time budget in the cgroup); refused, the service runs as with off "
        "and raises one realtime_refused alarm naming the reason and the fix. fifo / rr: that policy, same "
        "fallback. off: no real-time class (threads at the service's priority, background threads per "
        "`background`).")
    priority: int = Field(10, ge=1, le=96, description="Real-time priority of the frame path's intake (camera, "
                          "infer); OpenVINO, post and the reject publisher run at +1, the watchdog at +2 (1-96; "
                          "the IRQ threads of a PREEMPT_RT kernel sit at 50, keep below them).")
    cpus: list[int] | None = Field(None, min_length=1, description="CPUs the frame path is pinned to "
                                   "(sched_setaffinity per thread); null: any CPU.")
    rttime_ms: int = Field(200, ge=10, le=10_000, description="RLIMIT_RTTIME: CPU time a real-time thread may use "
                           "without blocking. At the limit the kernel sends SIGXCPU and the service drops the "
                           "frame path to SCHED_OTHER (alarm realtime_demoted): a spinning thread never takes the "
                           "machine. One inference takes ~20 ms; 200 ms is ten of them back to back.")

    @field_validator("cpus")
    @classmethod
    def _cpus_exist(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        have = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        bad = [c for c in v if c not in have]
        if bad:
            raise ValueError(f"cpus {bad} are not CPUs this process may run on (allowed: {have})")
        return sorted(set(v))


class SinkConfig(StrictConfig):
    jsonl: Path | None = Field(None, description="Append every verdict as a JSON line here (audit log).")
    jsonl_max_bytes: int = Field(
        64 * 1024**2, ge=4096, le=2**40,
        description="The verdict log is rotated before it grows past this many bytes: <jsonl> becomes <jsonl>.1, "
        ".1 becomes .2, ... (logging.handlers.RotatingFileHandler's scheme). 64 MiB holds ~3 h at 10 parts/s.")
    jsonl_backups: int = Field(
        8, ge=1, le=1000,
        description="Rotated verdict logs kept (<jsonl>.1 .. .N, the oldest deleted): the log never takes more "
        "than jsonl_max_bytes x (jsonl_backups + 1) of the volume.")


class ShutdownConfig(StrictConfig):
    deadline_s: float = Field(
        8.0, ge=0.5, le=300,
        description="One deadline for the whole stop after SIGTERM/SIGINT, shared by every part (source, pipeline "
        "drain, uploader, sinks incl. the publisher's final flush, metrics): each gets what is left. Keep it 2 s under "
        "the runtime's kill timeout (docker stop: 10 s by default; systemd: TimeoutStopSec).")


# -- PLC handshake and OPC UA (line integration) -----------------------------------------------------
class PLCConfig(StrictConfig):
    """The part-ID handshake with the line's PLC over MQTT (docs/controls-engineer.md: signal map). Topics
    live under {mqtt.prefix}/{mqtt.line}/{mqtt.station}/ on the mqtt section's broker."""

    enabled: bool = Field(False, description="Take triggers from the PLC and answer each with a result.")
    camera: Literal["software", "hardware"] = Field(
        "software", description="software: each PLC trigger fires the camera (source.camera_trigger: software); "
        "hardware: the photo-eye fires the camera, the inspector pairs the next frame with the PLC's trigger.")
    pairing_window_ms: float = Field(
        150.0, gt=0, le=10_000, description="A trigger and a frame further apart than this are not the same part: "
        "the trigger gets the fail-safe result (no_frame alarm), the frame is counted as unsolicited. Hardware "
        "trigger: the tolerance on |fired_at - exposure|; two triggers (or frames) within it of one frame (or "
        "trigger) are refused as ambiguous (fail-safe), so keep it under half the shortest time between parts.")
    max_in_flight: int = Field(16, ge=1, le=1024, description="Parts between trigger and result at most; the station "
                               "reports busy at this many, and a trigger beyond it gets the fail-safe result at once.")
    use_fired_at: bool = Field(True, description="Start a part's deadline at the PLC's photo-eye time (fired_at) "
                               "when the trigger carries one within max_clock_skew_ms of its arrival.")
    max_clock_skew_ms: float = Field(500.0, ge=0, le=60_000, description="fired_at further from the trigger's "
                                     "arrival than this is ignored (counted): the PLC's clock is not trusted.")
    ack_timeout_ms: int = Field(0, ge=0, le=600_000, description="Expect the PLC to acknowledge each result within "
                                "this; a missing acknowledge raises result_unacknowledged. 0: not expected.")
    qos: Literal[1, 2] = Field(1, description="QoS of triggers, results and the ready state.")


class OPCUAConfig(StrictConfig):
    """A small OPC UA server the inspector runs (optional extra `opcua`): station state, the last result and
    counters as read-only nodes for SCADA, historians and PLCs with an OPC UA client."""

    enabled: bool = Field(False, description="Run the OPC UA server.")
    host: str = Field("127.0.0.1", min_length=1, description="Bind address (the OT network's interface on a line PC).")
    port: int = Field(4840, ge=0, le=65535, description="TCP port (4840 is OPC UA's registered port; 0: a free one).")
    namespace: str = Field("urn:inspector", min_length=1, max_length=256, description="Namespace URI of the nodes.")


# -- model lifecycle: store, shadow, promote/rollback, control (issue 13; docs/deploy.md) -------------
_MODEL_REF = r"^[A-Za-z0-9_.\-]+@[A-Za-z0-9_.+\-]+$"


class RollbackGuardConfig(StrictConfig):
    """Rolls a promotion back on its own when the new model's figures leave a band within `parts` parts."""

    enabled: bool = Field(False, description="Watch each promotion and roll back when a band is left.")
    parts: int = Field(300, ge=10, le=1_000_000, description="Parts judged by the new model that the guard watches; "
                       "after them the promotion stands and the previous model is released.")
    min_parts: int = Field(20, ge=5, le=1_000_000, description="Parts judged before the band is first checked "
                           "(a rate over fewer parts is noise); checked again after every part until `parts`.")
    reject_rate_max: float | None = Field(None, ge=0, le=1, description="Highest share of rejected parts accepted.")
    reject_rate_min: float | None = Field(None, ge=0, le=1, description="Lowest share of rejected parts accepted.")
    p99_ms_max: float | None = Field(None, gt=0, le=60_000, description="Highest p99 capture-to-verdict latency "
                                     "(ms) of the new model's parts accepted.")

    @model_validator(mode="after")
    def _band(self) -> RollbackGuardConfig:
        if self.min_parts > self.parts:
            raise ValueError(f"min_parts ({self.min_parts}) must be <= parts ({self.parts})")
        if self.enabled and self.reject_rate_max is None and self.reject_rate_min is None and self.p99_ms_max is None:
            raise ValueError("an enabled guard needs a band: set reject_rate_max, reject_rate_min or p99_ms_max")
        if (self.reject_rate_min is not None and self.reject_rate_max is not None
                and self.reject_rate_min > self.reject_rate_max):
            raise ValueError(f"reject_rate_min ({self.reject_rate_min}) must be <= reject_rate_max "
                             f"({self.reject_rate_max})")
        return self


class LifecycleConfig(StrictConfig):
    """The versioned model store and the control channel of the running service (docs/deploy.md)."""

    enabled: bool = Field(False, description="Use the model store: the service starts on the station's active "
                          "version (its pointer file; model.path only until a version is promoted) and opens the "
                          "control socket that `inspector model promote/rollback/shadow/report` talk to.")
    store: Path = Field(Path("var/models"), description="Store root: NAME/VERSION/ bundles and active/<station>.json.")
    station: str | None = Field(None, pattern=_TOPIC_PART, description="Station whose pointer file this service "
                                "follows; default: mqtt.station.")
    remote: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
                               description="Remote store s3://bucket[/prefix] (NAME/VERSION/ under it) for "
                               "`inspector model pull`; credentials from the boto3 chain (AWS_* variables).")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint of the remote store; None: AWS.")
    region: str = Field("us-east-1", min_length=1, max_length=64, description="S3 region of the remote store.")
    signature: Literal["none", "hmac-sha256", "ed25519"] = Field(
        "none", description="Signature the model card must carry (model_card.sig) for pull, promote and shadow. "
        "hmac-sha256: a key shared with the plant's build (INSPECTOR_LIFECYCLE__HMAC_KEY; stdlib only); ed25519: "
        "the build's public key (public_key; needs the `signing` extra, cryptography). none: sha256s only.")
    public_key: Path | None = Field(None, description="signature ed25519: PEM public key of the model build.")
    hmac_key: SecretStr | None = Field(None, exclude=True, description="Environment only: "
                                       "INSPECTOR_LIFECYCLE__HMAC_KEY, the shared key for signature hmac-sha256.")
    socket: Path = Field(Path("var/run/inspector.sock"), description="Control socket (Unix domain) of the service.")
    socket_mode: Literal["0600", "0660"] = Field(
        "0600", description="Permissions of the control socket: 0600 only the service's user may switch models; "
        "0660 also members of socket_group.")
    socket_group: str | None = Field(None, min_length=1, max_length=64,
                                     description="socket_mode 0660: the group allowed to use the control socket.")
    guard: RollbackGuardConfig = Field(default_factory=RollbackGuardConfig,
                                       description="Automatic rollback after a promotion.")

    @model_validator(mode="after")
    def _keys(self) -> LifecycleConfig:
        if self.signature == "ed25519" and self.public_key is None:
            raise ValueError("signature ed25519 needs public_key (the model build's PEM public key)")
        if (self.socket_mode == "0660") != (self.socket_group is not None):
            raise ValueError("socket_mode 0660 and socket_group go together (0600 has no group)")
        return self


class ShadowConfig(StrictConfig):
    """A candidate model judging the same frames as the active one, without actuating (docs/deploy.md)."""

    enabled: bool = Field(False, description="Run the shadow model from the start (`inspector model shadow` "
                          "starts and stops one on a running service).")
    model: str | None = Field(None, pattern=_MODEL_REF, description="The candidate, NAME@VERSION in lifecycle.store.")
    threads: int = Field(1, ge=1, le=64, description="CPU inference threads of the shadow model: it must leave the "
                         "active model its cores.")
    queue: int = Field(1, ge=1, le=64, description="Frames waiting for the shadow; when it is behind, newer frames "
                       "are dropped (counted), never the active model's.")
    nice: int = Field(15, ge=1, le=19, description="Niceness of the shadow's thread and of the inference threads "
                      "its model compiles with.")
    keep_ids: int = Field(200, ge=0, le=100_000, description="Part (or frame) ids kept per disagreement list.")

    @model_validator(mode="after")
    def _named(self) -> ShadowConfig:
        if self.enabled and self.model is None:
            raise ValueError("an enabled shadow needs model: NAME@VERSION")
        return self


# -- root --------------------------------------------------------------------------------------
class InspectorConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    source: SourceConfig = Field(default_factory=SyntheticSourceConfig, description="Where frames come from.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The detector.")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="Thresholds and deadline policy.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Input drift guard (issue 14).")
    golden: GoldenConfig = Field(default_factory=GoldenConfig, description="Golden reference parts (issue 14).")
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig, description="Reject signalling.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Which frames are kept for review.")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Bounded on-disk store of samples.")
    upload: UploadConfig = Field(default_factory=UploadConfig, description="Nightly upload of the spool.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics and health.")
    page: PageConfig = Field(default_factory=PageConfig, description="The operator's line-side page.")
    sink: SinkConfig = Field(default_factory=SinkConfig, description="Local verdict log.")
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig, description="How long a stop may take.")
    background: BackgroundConfig = Field(default_factory=BackgroundConfig,
                                         description="OS priority of background threads.")
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig,
                                     description="Real-time scheduling of the frame path.")
    plc: PLCConfig = Field(default_factory=PLCConfig, description="Part-ID handshake with the PLC over MQTT.")
    opcua: OPCUAConfig = Field(default_factory=OPCUAConfig,
                               description="OPC UA server: station state, last result, counters.")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig,
                                       description="Model store, control socket, rollback guard.")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="Shadow run of a candidate model.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the YAML (passed as init kwargs): a site overrides one value.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _plc_camera_matches_the_source(self) -> InspectorConfig:
        # The handshake fires the camera (software) or pairs its photo-eye frames (hardware): the source
        # must be a camera that does exactly that, or every trigger would end as a fail-safe no_frame.
        if self.plc.enabled:
            src = self.source
            got = f"source.kind {src.kind}"
            if src.kind == "genicam":
                got += f", camera_trigger {src.camera_trigger}"
            if self.plc.camera == "software" and not (src.kind == "genicam" and src.camera_trigger == "software"):
                raise ValueError(
                    f"plc.camera software needs source.kind genicam with camera_trigger software (got {got})")
            if self.plc.camera == "hardware" and src.kind == "genicam" and src.camera_trigger != "hardware":
                raise ValueError(f"plc.camera hardware needs source.camera_trigger hardware (got {got})")
        return self

    def config_hash(self) -> str:
        """Short hash of the effective config (secrets excluded), published in the birth message."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"mqtt": {"password"}}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Keys that may only come from the environment. Matched case-insensitively, like the settings
# themselves: `MQTT: {PassWord: x}` is the same key as `mqtt: {password: x}`.
_SECRET_KEYS = {("mqtt", "password"), ("upload", "access_key"), ("upload", "secret_key"), ("source", "password"),
                ("lifecycle", "hmac_key"), ("page", "token")}


def _refuse_secrets(data: dict[Any, Any], path: Path) -> None:
    for section, body in data.items():
        if not isinstance(section, str) or not isinstance(body, dict):
            continue
        for key in body:
            if isinstance(key, str) and (section.lower(), key.lower()) in _SECRET_KEYS:
                raise ConfigError(
                    f"{path}: {section}.{key}: secrets are not accepted in the config file; "
                    f"set {ENV_PREFIX}{section.upper()}__{key.upper()} in the environment"
                )


def load_config(path: str | Path | None) -> InspectorConfig:
    """Reads YAML (None: defaults), applies the environment, validates. Raises ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config file: {e.strerror or e}") from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top, got {type(loaded).__name__}")
        data = loaded
        _refuse_secrets(data, p)
    try:
        return InspectorConfig(**data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path)) from e


def format_validation_error(e: ValidationError, path: str | Path | None = None) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part)) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        got = err.get("input")
        if isinstance(got, str):
            got = redact_url(got)  # a refused camera URL must not print its password
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {msg}{shown}")
    head = f"{path}: " if path else ""
    return head + f"{len(lines)} problem(s)\n  " + "\n  ".join(lines)


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the discriminator value in the location (source.synthetic.seed): drop it.
    return part in SOURCE_KINDS


def json_schema() -> dict[str, Any]:
    return InspectorConfig.model_json_schema()
