"""Prometheus metrics (/metrics) and health (/healthz, /readyz) over plain HTTP.

Both endpoints read one `ServiceReport` per request (report.build_report), the same snapshot the
summary, the status line and the heartbeat read; nothing here reaches into the service's parts.
The stage latencies are Prometheus histograms (`inspector_stage_latency_seconds{stage=...}`),
accumulated by `StageHistograms` on the pipeline's post thread: a bisect and two additions per
stage (0.5 us for all six stages, measured), no allocation.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from inspector.frames import Verdict
from inspector.kernel import realtime
from inspector.kernel.alarms import ALARM_KINDS
from inspector.kernel.http import HANDLER_TIMEOUT_S, MAX_CONNECTIONS, BoundedHTTPServer
from inspector.service.report import Histogram, ServiceReport

log = logging.getLogger(__name__)

STAGES = ("queue", "preprocess", "infer", "postprocess", "decide", "total")
# Upper bounds in seconds, for a 10-100 ms budget: 5 ms steps from 10 to 30 ms (where the measured
# end-to-end p99 lives: 22 ms alone, ~40 ms under load on the 2-core line PC), 10-25 ms steps up to
# 100 ms, sub-millisecond buckets for NMS and the decision (~0.2 ms), and a tail to 1 s for stalls.
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
             0.075, 0.1, 0.15, 0.25, 0.5, 1.0)


class StageHistograms:
    """Per-stage latency histograms, observed on the pipeline's post thread (a VerdictSink in form:
    the service hands it to the pipeline beside the real sinks). Scrapes copy under the lock, so a
    histogram is always self-consistent (+Inf bucket == count)."""

    name = "latency"

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._counts = {s: [0] * (len(self.bounds) + 1) for s in STAGES}  # per bucket, last is +Inf
        self._sums = dict.fromkeys(STAGES, 0.0)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def submit(self, v: Verdict) -> None:
        t = v.timings
        values = [max(0.0, getattr(t, f"{s}_ms") / 1000.0) for s in STAGES]
        with self._lock:
            for s, x in zip(STAGES, values, strict=True):
                self._counts[s][bisect.bisect_left(self.bounds, x)] += 1
                self._sums[s] += x

    def snapshot(self) -> tuple[Histogram, ...]:
        with self._lock:
            counts = {s: list(c) for s, c in self._counts.items()}
            sums = dict(self._sums)
        out = []
        for s in STAGES:
            cum, run = [], 0
            for n in counts[s]:
                run += n
                cum.append(run)
            out.append(Histogram(stage=s, bounds=self.bounds, cumulative=tuple(cum), sum_s=sums[s], count=run))
        return tuple(out)

    def state(self) -> dict[str, Any]:
        return {}


def families(r: ServiceReport):
    """The Prometheus metric families of one report."""
    p = r.pipeline
    c = CounterMetricFamily("inspector_verdicts", "Verdicts by outcome", labels=["outcome"])
    for k in ("PASS", "REJECT", "LATE"):
        c.add_metric([k], p.verdicts.get(k, 0))
    yield c
    yield CounterMetricFamily("inspector_actuations", "Reject signals requested", value=p.actuations)
    mi = GaugeMetricFamily("inspector_model_info", "The model judging now (1)", labels=["name", "version", "sha256"])
    mi.add_metric([str(r.model["name"]), str(r.model["version"]), str(r.model["sha256"])], 1.0)
    yield mi
    bm = CounterMetricFamily("inspector_model_verdicts", "Verdicts by the model that made them (issue 13: "
                             "promote/rollback)", labels=["model", "outcome"])
    for model, outcomes in r.verdicts_by_model.items():
        for outcome, n in outcomes.items():
            bm.add_metric([model, outcome], n)
    yield bm
    yield CounterMetricFamily("inspector_deadline_misses", "Verdicts past their deadline",
                              value=p.verdicts.get("LATE", 0))
    d = CounterMetricFamily("inspector_frames_dropped", "Frames dropped, by cause", labels=["cause"])
    for cause, n in p.dropped.items():
        d.add_metric([cause], n)
    yield d
    h = HistogramMetricFamily("inspector_stage_latency_seconds", "Latency of each pipeline stage (total: capture "
                              "to verdict)", labels=["stage"])
    for hist in r.histograms:
        # cumulative holds one count per bound, then the +Inf one (== count)
        buckets = [(_le(b), n) for b, n in zip(hist.bounds, hist.cumulative[:-1], strict=True)] + [("+Inf", hist.count)]
        h.add_metric([hist.stage], buckets, hist.sum_s)
    yield h
    yield GaugeMetricFamily("inspector_latency_p99_ms", "p99 capture-to-verdict latency (last 1000 frames)",
                            value=p.p99_recent_ms if p.p99_recent_ms is not None else float("nan"))
    if p.in_flight is not None:
        yield GaugeMetricFamily("inspector_in_flight", "Frames in inference without a verdict yet", value=p.in_flight)
    if p.last_verdict_age_s is not None:
        yield GaugeMetricFamily("inspector_last_verdict_age_seconds", "Age of the newest verdict",
                                value=p.last_verdict_age_s)
    e = CounterMetricFamily("inspector_escapes", "Parts not stopped in time (physical), by cause", labels=["cause"])
    e.add_metric(["missed_verdict"], r.escapes.missed_verdicts)
    e.add_metric(["reject_not_delivered"], r.escapes.rejects_not_delivered)
    e.add_metric(["reject_late"], r.escapes.rejects_late)
    yield e
    if r.escapes.verdict is not None:
        yield CounterMetricFamily("inspector_verdict_escapes", "Defective parts given PASS (ground truth)",
                                  value=r.escapes.verdict)
    src = r.source
    yield GaugeMetricFamily("inspector_source_connected", "1 when the camera delivers frames",
                            value=1.0 if src.connected else 0.0)
    if src.last_frame_age_s is not None:
        yield GaugeMetricFamily("inspector_last_frame_age_seconds", "Age of the newest frame",
                                value=src.last_frame_age_s)
    if src.counters:  # a GenICam camera: lost/incomplete frames and packet resends (issue 15)
        c = CounterMetricFamily("inspector_camera_transport", "Camera transport counters (Aravis stream statistics "
                                "and frames dropped, by cause), summed over reconnects", labels=["counter"])
        for name, n in sorted(src.counters.items()):
            c.add_metric([name], n)
        yield c
    # Every known kind at 0 from the start (a series that appears only with its first alarm breaks
    # rate() and `absent` alerts); kinds counted but not registered are shown too.
    a = CounterMetricFamily("inspector_alarms", "Alarms raised, by kind", labels=["kind"])
    for kind in sorted(set(ALARM_KINDS) | set(r.alarms)):
        a.add_metric([kind], r.alarms.get(kind, 0))
    yield a
    if r.drift is not None and r.drift["enabled"]:  # issue 14: the input drift guard
        dr = r.drift
        yield GaugeMetricFamily("inspector_input_drift", "1 while the input is outside the model's envelope",
                                value=float(dr["in_drift"]))
        yield GaugeMetricFamily("inspector_input_held", "1 while decision.on_drift rejects parts because of drift",
                                value=float(dr["acting"]))
        st = GaugeMetricFamily("inspector_input_statistic", "Windowed median of each input statistic",
                               labels=["stat"])
        lo = GaugeMetricFamily("inspector_input_statistic_low", "The envelope's lower bound", labels=["stat"])
        hi = GaugeMetricFamily("inspector_input_statistic_high", "The envelope's upper bound", labels=["stat"])
        for name, (low, high) in dr["envelope"].items():
            if name in dr["medians"]:
                st.add_metric([name], dr["medians"][name])
            lo.add_metric([name], low)
            hi.add_metric([name], high)
        yield from (st, lo, hi)
        if dr["psi"] is not None:
            yield GaugeMetricFamily("inspector_confidence_psi", "PSI of the recent top confidences against the "
                                    "card's validation distribution", value=dr["psi"])
    output = (r.drift or {}).get("output") or {}
    if output.get("enabled"):  # issue 21: the output guard (what the model does)
        yield GaugeMetricFamily("inspector_output_drift", "1 while the model's output is outside its reference band",
                                value=float(output["in_drift"]))
        sh = GaugeMetricFamily("inspector_output_share", "Share of the last output window of judged parts, per "
                               "output statistic", labels=["stat"])
        lo = GaugeMetricFamily("inspector_output_share_low", "Lower end of the statistic's band", labels=["stat"])
        hi = GaugeMetricFamily("inspector_output_share_high", "Upper end of the statistic's band", labels=["stat"])
        for name, share in output["shares"].items():
            sh.add_metric([name], share)
        for name, (low, high) in output.get("bands", {}).items():
            lo.add_metric([name], low)
            hi.add_metric([name], high)
        yield from (sh, lo, hi)
    if r.golden is not None:
        g = CounterMetricFamily("inspector_golden_checks", "Golden part checks, by result", labels=["result"])
        for res in ("ok", "failed", "late"):
            g.add_metric([res], r.golden[res])
        yield g
        yield GaugeMetricFamily("inspector_golden_overdue", "Golden parts not judged within golden.max_interval_s",
                                value=len(r.golden.get("overdue", ())))
    if r.realtime is not None:  # issue 20: the scheduling in force, and each thread group's policies
        yield from _realtime_families(r.realtime)
    yield GaugeMetricFamily("inspector_healthy", "1 when every /healthz check passes", value=float(r.healthy))
    hc = GaugeMetricFamily("inspector_health_check", "1 when this /healthz check passes", labels=["check"])
    for chk in r.health:
        hc.add_metric([chk.name], float(chk.ok))
    yield hc
    for name, state in r.sinks.items():
        yield from _numbers(f"inspector_{name}", f"{name} sink", state)
    if r.uploader is not None:
        yield from _numbers("inspector_uploader", "uploader", r.uploader)


def _realtime_families(rt: dict[str, Any]):
    info = GaugeMetricFamily("inspector_realtime_info", "Scheduling of the frame path (1): requested policy and "
                             "what is in force (fifo 10, refused (<reason>), off, demoted (<reason>))",
                             labels=["requested", "in_force"])
    info.add_metric([str(rt["requested"]), str(rt["in_force"])], 1.0)
    yield info
    yield GaugeMetricFamily("inspector_realtime_refused", "1 when a real-time policy was asked for and refused "
                            "or demoted", value=float(not str(rt["in_force"]).startswith(("fifo", "rr", "off"))))
    th = GaugeMetricFamily("inspector_realtime_threads", "Live threads by group and the policy the kernel reports",
                           labels=["group", "policy"])
    for group, policies in rt.get("groups", {}).items():
        for policy, n in policies.items():
            th.add_metric([group, policy], n)
    yield th


def _numbers(prefix: str, what: str, state: dict[str, Any]):
    for key, val in state.items():
        if isinstance(val, bool):
            yield GaugeMetricFamily(f"{prefix}_{key}", f"{what}: {key}", value=float(val))
        elif isinstance(val, (int, float)):
            yield GaugeMetricFamily(f"{prefix}_{key}", f"{what}: {key}", value=val)


def _le(b: float) -> str:
    return repr(float(b))


class _Collector:
    def __init__(self, report: Callable[[], ServiceReport]) -> None:
        self.report = report

    def collect(self):
        yield from families(self.report())


class MetricsServer:
    """Serves `/metrics` and `/healthz` from `report()` (a fresh ServiceReport per request), with at most
    `max_connections` handler threads and `timeout_s` per connection (a half-open client cannot keep a
    thread: see HANDLER_TIMEOUT_S, MAX_CONNECTIONS)."""

    def __init__(self, report: Callable[[], ServiceReport], host: str, port: int, *,
                 timeout_s: float = HANDLER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(report))
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # socket timeout for every read and write of this connection

            def do_GET(self):
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(registry), "text/plain; version=0.0.4", 200
                elif self.path.startswith(("/healthz", "/readyz")):
                    r = report()
                    body, ctype = json.dumps(r.health_body()).encode(), "application/json"
                    code = 200 if r.healthy else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not news
                pass

        try:
            self.httpd = BoundedHTTPServer((host, port), Handler, max_connections)
        except OSError as e:
            log.error("metrics endpoint %s:%s unavailable (%s); continuing without it", host, port, e)
            self.httpd = None
        self.port = self.httpd.server_address[1] if self.httpd else None
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    def _serve(self) -> None:
        realtime.enter("service")  # below the frame path (kernel/realtime.py)
        if self.httpd is not None:
            self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        self._thread.start()
        if self.port:
            log.info("metrics on http://%s:%s/metrics (health: /healthz)", self.httpd.server_address[0], self.port)

    def stop(self, timeout: float = 1.0) -> None:
        if self.httpd is not None and self._thread.is_alive():
            # shutdown() waits for serve_forever's next poll (<= 0.5 s); bounded by the caller's deadline
            self.httpd.shutdown()
        if self.httpd is not None:
            self.httpd.server_close()
