"""`inspector bench`: how close the inspector comes to the hardware, side by side, in one run.

Variants, measured on the same model and the same pre-rendered frames, interleaved in rounds so
that the shared machine's noise hits all of them alike (single timings vary 30-80% here):

  raw_int8     OpenVINO sync inference, LATENCY hint, pre-letterboxed float tensor: the floor
  raw_fp32     the same for the FP32 IR (INT8 speed-up)
  inspector    capture -> verdict through the real pipeline (source thread, letterbox, async
               infer, NMS, decision)
  ultralytics  `YOLO(ir_dir).predict(frame)` per frame (only with the `train` extra and the
               bundle's metadata.yaml)

Any model kind: the head of the card's task and its decision rule, as the service builds them (a
classifier: its centre crop instead of the letterbox, class scores instead of NMS).

each in two arrival patterns, because on this machine the pattern moves the floor itself by
up to 80% (measured: raw INT8 p50 5.3 ms back to back, 7.3 ms after 10 ms idle, 9.6 ms after
100 ms idle: idle cores and their caches go cold):

  hot          back to back: the next call (for the pipeline: the next frame) follows the
               previous result at once, as benchmark_app does
  paced        one part every `interval_ms` (the line's pace), for every variant alike

Ratios compare variants within one pattern, never across. Then throughput: the highest parts/s
the pipeline sustains with no deadline miss, against OpenVINO's THROUGHPUT-hint asynchronous fps;
and, when a Mosquitto is available, capture to publish acknowledgement through the durable outbox.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from inspector.bundle.load import load_bundle
from inspector.config import DecisionConfig, InspectorConfig
from inspector.frames import Frame
from inspector.inference.decision import DecisionPolicy
from inspector.inference.heads import HeadSettings, make_head
from inspector.inference.runner import Runner
from inspector.service.pipeline import Pipeline
from inspector.sources.base import Connection, FrameBuffer, SourceState
from inspector.sources.conveyor import ConveyorGenerator
from inspector.stats import summary

log = logging.getLogger(__name__)


def pct(values: list[float]) -> dict[str, float]:
    return summary(values, ("n", "p50", "p95", "p99", "mean"))


class ReplaySource:
    """Pre-rendered frames (rendering would steal CPU from inference), released at a fixed pace,
    or, with a `gate`, each as soon as the gate is set (closed loop: the sink sets it on the
    previous verdict)."""

    name = "replay"

    def __init__(self, images: list[np.ndarray], rate: float, n: int, gate: threading.Event | None = None) -> None:
        self.images, self.rate, self.n, self.gate = images, rate, n, gate
        self._buf = FrameBuffer("triggered", 1 << 16)
        self._done = False
        self._t = threading.Thread(target=self._run, name="replay-source", daemon=True)

    def start(self) -> None:
        self._t.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(self.n):
            if self.gate is not None:
                if not self.gate.wait(10.0):
                    break  # the pipeline stopped answering: end instead of hanging the bench
                self.gate.clear()
            else:
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self._buf.put(Frame(i, self.images[i % len(self.images)], time.monotonic(), time.time(), part_id=f"B{i}",
                                source=self.name))
        self._done = True

    def read(self, timeout: float) -> Frame | None:
        return self._buf.get(timeout)

    def stop(self) -> None:
        self._t.join(5)

    @property
    def finished(self) -> bool:
        return self._done and len(self._buf) == 0

    def state(self) -> SourceState:
        return SourceState(Connection.ENDED if self.finished else Connection.CONNECTED)


class _Collect:
    name = "collect"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.verdicts = []
        self.gate = gate

    def start(self) -> None: ...

    def submit(self, v) -> None:
        self.verdicts.append(v)
        if self.gate is not None:
            self.gate.set()

    def stop(self, timeout: float = 2.0) -> None: ...

    def state(self) -> dict:
        return {}


@dataclass
class Bench:
    model_dir: Path
    frames: int = 300
    rounds: int = 10
    budget_ms: float = 50.0
    #: camera frame (width, height): what the letterbox and Ultralytics' predict start from
    frame_size: tuple[int, int] = (1280, 720)
    with_ultralytics: bool = True
    #: paced pattern: one part every interval (100 ms = the demo line's 10 parts/s)
    interval_ms: float = 100.0

    def __post_init__(self) -> None:
        gen = ConveyorGenerator(2468, width=self.frame_size[0], height=self.frame_size[1])
        self.images = [gen.part(i).image for i in range(min(self.frames, 60))]
        self.int8 = load_bundle(self.model_dir, "int8")
        self.fp32 = load_bundle(self.model_dir, "fp32")
        # any model kind: the head of the card's task (detect: the letterbox and NMS; classify: the centre crop and
        # class scores) and its decision rule, as the service builds them
        self.policy = DecisionPolicy.build(DecisionConfig(budget_ms=self.budget_ms), self.int8.classes,
                                           self.int8.thresholds, task=self.int8.task,
                                           pass_class=self.int8.card.pass_class if self.int8.card else None)
        head = make_head(self.int8, HeadSettings(conf=self.policy.conf_floor))
        self.detector = Runner(self.int8, head, warmup=5)
        # Throughput is bought with parallel streams (model.hint: throughput); latency with one.
        self.detector_tput = Runner(self.int8, head, hint="throughput", warmup=5)
        # FP32 means FP32: on CPUs with AMX/AVX512-BF16 OpenVINO runs an FP32 IR in bf16 unless
        # told otherwise (measured on a Xeon with AMX: FP32 IR 9.1 ms as f32, 4.0 ms as bf16, INT8
        # 5.1 ms). The bf16 default is measured beside it where the CPU has it, as its own row.
        # The inspector runs float layers in f32 by default (model.inference_precision), so the
        # floor does too.
        self.raw = {"int8": self._raw_request(self.int8, "f32"), "fp32": self._raw_request(self.fp32, "f32")}
        try:
            bf16 = self._raw_request(self.fp32)
        except RuntimeError as e:
            # The CPU reports bf16 but oneDNN may not run it: ONEDNN_MAX_CPU_ISA=AVX2, as when this bench
            # stands in for an AVX2-only line PC, has no bf16 pooling ("primitive descriptors list is empty").
            log.info("FP32 IR at the CPU's default precision did not compile, its row is skipped: %s",
                     str(e).splitlines()[0] if str(e) else e)
            bf16 = None
        if bf16 is not None and str(bf16.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")) != str(
                self.raw["fp32"].get_compiled_model().get_property("INFERENCE_PRECISION_HINT")):
            self.raw["fp32_ir_as_bf16"] = bf16
        pre = head.preprocessor()  # raw IR tensors (1 or 3 channels): the head's, with its folded steps in numpy
        self.tensors = [np.ascontiguousarray(pre(im)[0][..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0
                        for im in self.images]
        self.ultra = self._ultralytics() if self.with_ultralytics else None

    # -- variants -----------------------------------------------------------------------------
    @staticmethod
    def _raw_request(bundle, precision_hint: str | None = None):
        import openvino as ov

        props = {"PERFORMANCE_HINT": "LATENCY"}
        if precision_hint:
            props["INFERENCE_PRECISION_HINT"] = precision_hint
        compiled = ov.Core().compile_model(str(bundle.xml), "CPU", props)
        return compiled.create_infer_request()

    def _ultralytics(self):
        try:
            from inspector.training import offline

            self._ultra_dir = Path(tempfile.mkdtemp()) / "demo_int8_openvino_model"
            offline.prepare(self._ultra_dir.parent)
            from ultralytics import YOLO
        except ImportError:
            log.info("ultralytics not installed (train extra): its column is skipped")
            return None
        self._ultra_dir.mkdir()
        if not (self.model_dir / "metadata.yaml").exists():
            log.info("%s has no metadata.yaml (Ultralytics' export record): its column is skipped", self.model_dir)
            return None
        for s in (".xml", ".bin"):
            shutil.copyfile(self.model_dir / f"model_int8{s}", self._ultra_dir / f"model{s}")
        shutil.copyfile(self.model_dir / "metadata.yaml", self._ultra_dir / "metadata.yaml")
        model = YOLO(str(self._ultra_dir), task=self.int8.task)
        with offline.cpu_inference_precision("f32"):  # same float precision as ours (compiled on first predict)
            for im in self.images[:5]:
                model.predict(im, imgsz=self.int8.input_size[0], verbose=False)
        return model

    def raw_block(self, precision: str, k: int, start: int, interval_s: float = 0.0) -> list[float]:
        req = self.raw[precision]
        return _timed(lambda i: req.infer({0: self.tensors[i % len(self.tensors)]}),
                      range(start, start + k), interval_s)

    def ultra_block(self, k: int, start: int, interval_s: float = 0.0) -> list[float]:
        def predict(i: int) -> None:
            self.ultra.predict(self.images[i % len(self.images)], imgsz=self.int8.input_size[0],
                               conf=self.policy.conf_floor, verbose=False)

        return _timed(predict, range(start, start + k), interval_s)

    def pipeline_run(self, rate: float, n: int, detector: Runner | None = None) -> tuple[list[float], int]:
        """Paced: one part every 1/rate s. Returns capture->verdict latencies and LATE count."""
        return self._pipeline(ReplaySource(self.images, rate, n), _Collect(), n / rate + 30, detector)

    def pipeline_closed_loop(self, n: int) -> list[float]:
        """Hot: each frame is captured the moment the previous verdict is out."""
        gate = threading.Event()
        gate.set()
        return self._pipeline(ReplaySource(self.images, 0.0, n, gate), _Collect(gate), n + 30, None)[0]

    def _pipeline(self, src: ReplaySource, sink: _Collect, wait_s: float,
                  detector: Runner | None) -> tuple[list[float], int]:
        p = Pipeline(src, detector or self.detector, self.policy, [sink])
        p.start()
        src.start()
        p.done.wait(wait_s)
        p.stop()
        src.stop()
        late = sum(v.outcome.value == "LATE" for v in sink.verdicts)
        return [v.timings.total_ms for v in sink.verdicts], late

    def publish_ack_latencies(self, n: int) -> list[float]:
        """Capture -> PUBACK of each reject through the durable outbox to a local Mosquitto."""
        from inspector.config import MQTTConfig
        from inspector.devtools.broker import LocalBroker, mosquitto_available
        from inspector.signalling.publisher import MqttPublisher

        if not mosquitto_available():
            log.info("mosquitto not installed: capture->PUBACK is not measured")
            return []
        work = Path(tempfile.mkdtemp(prefix="inspector-bench-"))
        broker = LocalBroker(work / "broker").start()
        try:
            cfg = MQTTConfig(host=broker.host, port=broker.port, outbox_path=work / "outbox.sqlite", station="bench")
            pub = MqttPublisher(cfg, model=self.int8.info, config_hash="bench", heartbeat_fn=lambda: {})
            pub.start()
            t0 = time.monotonic()
            while not pub.state()["connected"] and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            src = ReplaySource(self.images, 1000.0 / self.interval_ms, n)
            p = Pipeline(src, self.detector, self.policy, [pub])
            p.start()
            src.start()
            p.done.wait(n * self.interval_ms / 1e3 + 30)
            p.stop()
            src.stop()
            t0 = time.monotonic()
            while pub.state()["outbox_depth"] and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            pub.stop()
            return list(pub.ack_ms)
        finally:
            broker.stop()
            shutil.rmtree(work, ignore_errors=True)

    def drift_guard_costs(self, n: int) -> list[float]:
        """Issue 14's input drift guard per frame (ms): the statistics (infer thread) plus the windowed
        comparison and the confidence PSI (post thread), at the bench's frame size; budget 0.3 ms at 720p."""
        from inspector.bundle.envelope import STAT_NAMES, ConfidenceReference, Envelope
        from inspector.inference.drift_guard import DriftGuard, frame_stats

        env = Envelope({s: (-1e9, 1e9) for s in STAT_NAMES},  # wide: every statistic computed and compared
                       confidence=ConfidenceReference.from_scores(np.linspace(0, 1, 100)))
        guard = DriftGuard(env)
        return _timed(lambda i: guard.update(frame_stats(self.images[i % len(self.images)]), (i % 10) / 10),
                      range(n), 0.0)

    def throughput_hint_fps(self, seconds: float = 3.0) -> float:
        import openvino as ov

        compiled = ov.Core().compile_model(str(self.int8.xml), "CPU",
                                           {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"})
        n_req = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        q = ov.AsyncInferQueue(compiled, n_req)
        done = [0]
        q.set_callback(lambda *_: done.__setitem__(0, done[0] + 1))
        for i in range(n_req * 2):  # warm-up
            q.start_async({0: self.tensors[i % len(self.tensors)]})
        q.wait_all()
        done[0] = 0
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            q.start_async({0: self.tensors[i % len(self.tensors)]})
            i += 1
        q.wait_all()
        return done[0] / (time.perf_counter() - t0)

    def sustainable_rate(self, ceiling: float, detector: Runner, n: int = 150) -> float:
        """Highest parts/s (bisection) at which `n` parts all get a verdict before their deadline."""
        lo, hi = ceiling * 0.3, ceiling * 1.1
        for _ in range(6):
            mid = (lo + hi) / 2
            _, late = self.pipeline_run(mid, n, detector)
            lo, hi = (mid, hi) if late == 0 else (lo, mid)
        return lo

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        k = max(5, self.frames // self.rounds)
        gap = self.interval_ms / 1e3
        variants = ["raw_int8", "raw_fp32", "inspector"] + (["ultralytics"] if self.ultra is not None else [])
        lat: dict[str, list[float]] = {v + sfx: [] for sfx in ("", "_paced") for v in variants}
        late_total = 0
        for r in range(self.rounds):
            start = r * k
            lat["raw_int8"] += self.raw_block("int8", k, start)
            lat["inspector"] += self.pipeline_closed_loop(k)
            lat["raw_fp32"] += self.raw_block("fp32", k, start)
            if "fp32_ir_as_bf16" in self.raw:
                lat.setdefault("raw_fp32_ir_as_bf16", [])
                lat["raw_fp32_ir_as_bf16"] += self.raw_block("fp32_ir_as_bf16", k, start)
            lat["raw_int8_paced"] += self.raw_block("int8", k, start, gap)
            vals, late = self.pipeline_run(rate=1.0 / gap, n=k)
            lat["inspector_paced"] += vals
            late_total += late
            lat["raw_fp32_paced"] += self.raw_block("fp32", k, start, gap)
            if self.ultra is not None:
                lat["ultralytics"] += self.ultra_block(k, start)
                lat["ultralytics_paced"] += self.ultra_block(k, start, gap)
        ack = self.publish_ack_latencies(n=max(60, self.frames // 3))
        if ack:
            lat["publish_ack"] = ack
        lat["drift_guard"] = self.drift_guard_costs(n=len(lat["raw_int8"]))
        res = {k_: pct(v) for k_, v in lat.items() if v}
        tput = self.throughput_hint_fps()
        sustain = self.sustainable_rate(tput, self.detector_tput)
        sustain_latency_mode = self.sustainable_rate(tput, self.detector)
        out = {
            "machine": {"cpu": cpu_name(), "cores": _cores(), "python": platform.python_version(),
                        "versions": _versions()},
            "model": {"name": self.int8.name, "version": self.int8.version, "task": self.int8.task,
                      "input": list(self.int8.input_size)},
            "frames_per_variant": len(lat["raw_int8"]),
            "frame_size": list(self.frame_size),
            "paced_interval_ms": self.interval_ms,
            "latency_ms": res,
            "inspector_paced_deadline_misses": late_total,
            "throughput": {"openvino_throughput_hint_fps": round(tput, 2),
                           "inspector_sustainable_parts_per_s": round(sustain, 2),
                           "inspector_sustainable_parts_per_s_latency_hint": round(sustain_latency_mode, 2),
                           "budget_ms": self.budget_ms},
        }
        out["ratios"] = ratios(out)
        return out


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Within one arrival pattern only (hot, then paced): the pattern moves the floor itself."""
    lat = r["latency_ms"]
    out = {}
    for sfx in ("", "_paced"):
        if "inspector" + sfx not in lat:
            continue
        out["inspector_p50_over_raw_p50" + sfx] = lat["inspector" + sfx]["p50"] / lat["raw_int8" + sfx]["p50"]
        out["inspector_p99_over_raw_p99" + sfx] = lat["inspector" + sfx]["p99"] / lat["raw_int8" + sfx]["p99"]
        out["int8_speedup_over_fp32_p50" + sfx] = lat["raw_fp32" + sfx]["p50"] / lat["raw_int8" + sfx]["p50"]
        if "ultralytics" + sfx in lat:
            ultra = lat["ultralytics" + sfx]["p50"]
            out["ultralytics_p50_over_inspector_p50" + sfx] = ultra / lat["inspector" + sfx]["p50"]
            # What bounds the ratio above: an inspector with zero overhead would reach this.
            out["ultralytics_p50_over_raw_p50" + sfx] = lat["ultralytics" + sfx]["p50"] / lat["raw_int8" + sfx]["p50"]
    t = r["throughput"]
    out["sustainable_over_throughput_hint"] = t["inspector_sustainable_parts_per_s"] / t["openvino_throughput_hint_fps"]
    if "ultralytics" in lat:
        # Per frame in a stream: an ultralytics predict loop handles one frame at a time, so its
        # rate is 1 / mean latency; the inspector overlaps frames (highest rate with no miss).
        loop_fps = 1e3 / lat["ultralytics"]["mean"]
        out["inspector_parts_per_s_over_ultralytics_loop_fps"] = t["inspector_sustainable_parts_per_s"] / loop_fps
        out["inspector_latency_hint_parts_per_s_over_ultralytics_loop_fps"] = (
            t["inspector_sustainable_parts_per_s_latency_hint"] / loop_fps)
    return {k: round(v, 3) for k, v in out.items()}


def _timed(call: Callable[[int], Any], indices: range, interval_s: float) -> list[float]:
    """Per-call latency in ms; with `interval_s`, calls start on a fixed pace like parts on a line."""
    out = []
    t_next = time.perf_counter()
    for i in indices:
        if interval_s:
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t_next = max(t_next + interval_s, time.perf_counter())
        t0 = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


TARGETS = {
    "inspector_p50_over_raw_p50": ("<=", 1.15),
    "inspector_p99_over_raw_p99": ("<=", 1.3),
    "ultralytics_p50_over_inspector_p50": (">=", 1.3),
    "int8_speedup_over_fp32_p50": (">=", 1.3),
    "sustainable_over_throughput_hint": (">=", 0.9),
    "inspector_parts_per_s_over_ultralytics_loop_fps": (">=", 1.3),
}
#: Printed beside the targets, judged by none: they say what bounds one.
CONTEXT = {"ultralytics_p50_over_raw_p50", "inspector_latency_hint_parts_per_s_over_ultralytics_loop_fps"}


def target(key: str) -> tuple[str, float] | None:
    """The (operator, goal) a ratio is judged by; None for the context rows."""
    key = key.removesuffix("_paced")
    return None if key in CONTEXT else TARGETS[key]


def format_table(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']['cpu']} ({r['machine']['cores']} cores); model {r['model']['name']} "
             f"{r['model']['version']} ({r['model'].get('task', 'detect')}) input {r['model']['input']}; "
             f"{r['frames_per_variant']} frames per variant, "
             "interleaved",
             f"  {'latency ms':<34}{'p50':>9}{'p95':>9}{'p99':>9}"]
    names = {"raw_int8": "(a) raw OpenVINO INT8 sync", "inspector": "(b) inspector capture->verdict",
             "ultralytics": "(c) ultralytics predict INT8", "raw_fp32": "    raw OpenVINO FP32 sync",
             "raw_fp32_ir_as_bf16": "    raw FP32 IR run as bf16 (CPU default)"}
    paced = f"paced (one part every {r['paced_interval_ms']:.0f} ms)"
    for sfx, title in (("", "hot (back to back)"), ("_paced", paced)):
        lines.append(f"  {title}")
        for key, name in names.items():
            if key + sfx in r["latency_ms"]:
                p = r["latency_ms"][key + sfx]
                lines.append(f"  {name:<34}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}")
    if "publish_ack" in r["latency_ms"]:
        p = r["latency_ms"]["publish_ack"]
        lines.append(f"  {'    capture->PUBACK (paced)':<34}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}")
    if "drift_guard" in r["latency_ms"]:
        p = r["latency_ms"]["drift_guard"]
        w, h = r["frame_size"]
        lines.append(f"  {f'    input drift guard ({w}x{h})':<34}{p['p50']:>9.3f}{p['p95']:>9.3f}{p['p99']:>9.3f}"
                     "  (budget 0.3 ms at 1280x720; off the part's latency: see service/drift.py)")
    t = r["throughput"]
    lines.append(f"(d) throughput: inspector sustains {t['inspector_sustainable_parts_per_s']:.1f} parts/s with no "
                 f"deadline miss at {t['budget_ms']:.0f} ms (model.hint throughput; "
                 f"{t['inspector_sustainable_parts_per_s_latency_hint']:.1f} with the latency hint); "
                 f"OpenVINO THROUGHPUT hint {t['openvino_throughput_hint_fps']:.1f} fps")
    lines.append("ratios (target):")
    for k, v in r["ratios"].items():
        goal = target(k)
        if goal is None:
            lines.append(f"  {k:<60}{v:>7.3f}  (context)")
            continue
        ok = v <= goal[1] if goal[0] == "<=" else v >= goal[1]
        lines.append(f"  {k:<60}{v:>7.3f}  ({goal[0]} {goal[1]})  {'ok' if ok else 'MISSED'}")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("openvino", "numpy", "opencv-python-headless", "ultralytics-opencv-headless", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_bench(model: Path, frames: int = 300, json_out: str | None = None, config: InspectorConfig | None = None,
              frame_size: tuple[int, int] = (1280, 720), interval_ms: float = 100.0) -> int:
    if min(frame_size) < 240 or interval_ms <= 0:
        raise ValueError(f"frame size must be at least 320x240 and interval > 0, got {frame_size} and {interval_ms} ms")
    b = Bench(Path(model), frames=frames, budget_ms=config.decision.budget_ms if config else 50.0,
              frame_size=frame_size, interval_ms=interval_ms)
    r = b.run()
    print(format_table(r))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(r, indent=2))
    return 0
