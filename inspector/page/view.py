"""The page's worker: one thread (`page-view`, background group: below the frame path, kernel/realtime.py) that
turns the service's state into the page's events.

Every tick (1 / page.frame_fps s, at most 2 per s) it builds the live report (`Service.report()`: counters
only, ~0.1 ms), encodes the newest frame with its boxes, and pushes `state` and `frame`. A reject or an
alarm wakes it at once (the feed's event), so a reject reaches the page within the time of one thumbnail
encode plus the network, not at the next tick. It owns everything it keeps: the last 20 rejects, the open
alarms, the per-minute and p99 history; the HTTP handlers read the `snapshot()` it publishes under a lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from typing import Any

from inspector.frames import Verdict
from inspector.kernel import realtime
from inspector.kernel.alarms import ALARM_KINDS, CLEARS
from inspector.page import render
from inspector.page.broadcast import Broadcaster
from inspector.page.feed import REJECTS_KEPT, PageFeed

log = logging.getLogger(__name__)

# Alarms the MQTT publisher creates inside its outbox reach the hub as counts only (AlarmHub.record): the
# page opens one for each rise of their count.
COUNTED_ONLY = ("escaped_part", "no_subscribers", "outbox_full", "outbox_degraded")
SETTLE_S = 0.5  # after a reject's deadline: the publisher's sweep (every 50 ms) has counted it if it escaped
TREND_POINTS = 120  # p99 samples kept for the trend (one per second: 2 minutes)
MINUTE_S = 60.0


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def detail_text(kind: str, detail: dict[str, Any]) -> str:
    """One line of an alarm's detail: the statistic that left its envelope first, then the rest."""
    d = {k: v for k, v in detail.items() if k not in ("raised_at",)}
    parts = []
    if d.get("statistic"):
        parts.append(f"{d.pop('statistic')} {d.pop('value', None)} outside {d.pop('bounds', None)}")
    for k, v in list(d.items())[:6]:
        if isinstance(v, (dict, list)) and len(str(v)) > 80:
            continue
        parts.append(f"{k}: {v}")
    return "; ".join(parts) or ALARM_KINDS.get(kind, kind)


class PageView:
    def __init__(self, svc: Any, feed: PageFeed, hub: Broadcaster, *, frame_fps: float, frame_width: int,
                 thumb_width: int) -> None:
        self.svc = svc
        self.feed = feed
        self.hub = hub
        self.period_s = 1.0 / frame_fps
        self.frame_width = frame_width
        self.thumb_width = thumb_width
        self._lock = threading.Lock()  # guards the published views below (the handlers read them)
        self._state: dict[str, Any] | None = None
        self._frame: dict[str, Any] | None = None
        self._rejects: deque[dict[str, Any]] = deque(maxlen=REJECTS_KEPT)
        self._alarms: dict[str, dict[str, Any]] = {}
        # worker-only
        self._unsettled: dict[int, dict[str, Any]] = {}  # frame id -> reject still waiting for its delivery verdict
        self._minute: deque[tuple[float, dict[str, int]]] = deque()
        self._trend: deque[tuple[float, float | None]] = deque(maxlen=TREND_POINTS)
        self._next_trend = 0.0
        self._counted: dict[str, int] = {}
        self._last_frame_id: int | None = None
        self._started_wall: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=realtime.runs_in("background", self._run, "page-view"),
                                        name="page-view", daemon=True)
        self.ticks = 0
        self.errors = 0
        self.encode_ms: deque[float] = deque(maxlen=200)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._counted = dict(self.svc.alarms.snapshot())
        self._started_wall = time.time()
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self.feed.wake.set()
        self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        """Everything a browser needs when it connects (the `hello` event)."""
        with self._lock:
            return {"state": self._state, "frame": self._frame, "rejects": list(self._rejects),
                    "alarms": sorted(self._alarms.values(), key=lambda a: a["since"])}

    # -- alarms acknowledged on the page ----------------------------------------------------------
    def acknowledge(self, kind: str, by: str) -> bool:
        """Marks an open alarm acknowledged; one whose condition is over leaves the list. False: not open."""
        with self._lock:
            a = self._alarms.get(kind)
            if a is None:
                return False
            a["acked_by"], a["acked_at"] = by, iso(time.time())
            if not a["condition"]:
                del self._alarms[kind]
            alarms = sorted(self._alarms.values(), key=lambda x: x["since"])
        self.hub.publish("alarms", alarms)
        return True

    # -- the worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            self.feed.wake.wait(max(0.0, next_tick - time.monotonic()))
            self.feed.wake.clear()
            if self._stop.is_set():
                return
            try:
                self._rejects_and_alarms()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.period_s
                    self._tick()
            except Exception:  # the page must never take the service down; counted, logged once per kind
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.exception("page: update failed (%d so far)", self.errors)
                next_tick = time.monotonic() + self.period_s

    def _rejects_and_alarms(self) -> None:
        for v in self.feed.take_rejects():
            row = self._reject_row(v)
            with self._lock:
                self._rejects.appendleft(row)
            if row["delivery"] == "pending":
                self._unsettled[v.frame_id] = row
            self.hub.publish("reject", row)
        changed = False
        for kind, detail, at in self.feed.take_alarms():
            changed |= self._on_alarm(kind, detail, at)
        if changed:
            self._publish_alarms()

    def _reject_row(self, v: Verdict) -> dict[str, Any]:
        t0 = time.perf_counter()
        thumb = None
        if v.frame.image is not None:
            thumb = render.data_url(render.annotate(v.frame.image, v.defects, v.uncertain, self.thumb_width))
        self.encode_ms.append((time.perf_counter() - t0) * 1000)
        done_at = v.frame.captured_at + v.timings.total_ms / 1000.0
        return {"frame_id": v.frame_id, "part_id": v.frame.part_id, "time": iso(v.frame.captured_wall),
                "outcome": str(v.outcome), "reason": str(v.reason) if v.reason is not None else str(v.outcome).lower(),
                "slack_ms": round((v.deadline - done_at) * 1000.0, 1),
                "defects": [{"class": d.class_name, "confidence": round(d.confidence, 3)} for d in v.defects],
                "error": v.error, "model": f"{v.model.name}@{v.model.version}", "thumb": thumb,
                "deadline_wall": v.deadline_wall, "delivery": self._first_delivery()}

    def _first_delivery(self) -> str:
        if getattr(self.svc, "plc", None) is not None:
            return "plc"  # the PLC handshake's .../result carries the answer (its own counters)
        if getattr(self.svc, "publisher", None) is None:
            return "no_link"  # mqtt.enabled false: nothing carries the reject to an actuator
        return "pending"

    def _settle(self) -> None:
        """A reject's delivery, once its deadline has passed: not in time when the publisher counted it as a
        physical escape (acknowledged late, expired, evicted), in time otherwise."""
        if not self._unsettled:
            return
        now = time.time()
        due = [fid for fid, row in self._unsettled.items() if now > row["deadline_wall"] + SETTLE_S]
        if not due:
            return
        escaped = {e.frame_id: e.why for e in self.svc.publisher.escapes() if e.this_boot}
        with self._lock:
            updates = []
            for fid in due:
                row = self._unsettled.pop(fid)
                row["delivery"] = f"late:{escaped[fid]}" if fid in escaped else "in_time"
                updates.append({"frame_id": fid, "delivery": row["delivery"]})
        for u in updates:
            self.hub.publish("delivery", u)

    def _on_alarm(self, kind: str, detail: dict[str, Any], at: float) -> bool:
        with self._lock:
            if kind in CLEARS:  # camera_restored clears camera_lost, input_restored input_drift, ...
                return self._alarms.pop(CLEARS[kind], None) is not None
            self._open(kind, detail_text(kind, detail), at, condition=kind in CLEARS.values())
        return True

    def _open(self, kind: str, text: str, at: float, *, condition: bool, add: int = 1) -> None:
        a = self._alarms.get(kind)
        if a is None:
            self._alarms[kind] = {"kind": kind, "since": iso(at), "text": text, "count": add, "condition": condition,
                                  "meaning": ALARM_KINDS.get(kind, ""), "acked_by": None, "acked_at": None}
        else:
            a.update(text=text, count=a["count"] + add, acked_by=None, acked_at=None)

    def _publish_alarms(self) -> None:
        with self._lock:
            alarms = sorted(self._alarms.values(), key=lambda a: a["since"])
        self.hub.publish("alarms", alarms)

    def _tick(self) -> None:
        self.ticks += 1
        rep = self.svc.report()
        self._settle()
        changed = self._health_alarms(rep)
        counts = self.svc.alarms.snapshot()
        for kind in COUNTED_ONLY:
            n = counts.get(kind, 0) - self._counted.get(kind, 0)
            if n > 0:
                with self._lock:
                    self._open(kind, f"{counts.get(kind, 0)} since start: {ALARM_KINDS[kind]}", time.time(),
                               condition=False, add=n)
                changed = True
        self._counted = dict(counts)
        if changed:
            self._publish_alarms()
        state = self._state_of(rep)
        with self._lock:
            self._state = state
        self.hub.publish("state", state)
        v = self.feed.latest
        if v is not None and v.frame_id != self._last_frame_id and v.frame.image is not None:
            self._last_frame_id = v.frame_id
            t0 = time.perf_counter()
            url = render.data_url(render.annotate(v.frame.image, v.defects, v.uncertain, self.frame_width))
            self.encode_ms.append((time.perf_counter() - t0) * 1000)
            frame = {"frame_id": v.frame_id, "part_id": v.frame.part_id, "time": iso(v.frame.captured_wall),
                     "outcome": str(v.outcome), "image": url,
                     "defects": [{"class": d.class_name, "confidence": round(d.confidence, 3)} for d in v.defects]}
            with self._lock:
                self._frame = frame
            self.hub.publish_frame(frame)

    def _health_alarms(self, rep: Any) -> bool:
        """A failed health check is an open alarm (`health.<check>`) for as long as it fails: the broker
        killed shows as `health.mqtt` and clears when the publisher is connected again."""
        changed = False
        failing = {c.name: c.detail for c in rep.health if not c.ok}
        with self._lock:
            for name, text in failing.items():
                kind = f"health.{name}"
                a = self._alarms.get(kind)
                if a is None:
                    self._open(kind, text, time.time(), condition=True)
                    self._alarms[kind]["meaning"] = f"the health check `{name}` fails (/healthz is red)"
                    changed = True
                elif a["text"] != text:
                    a["text"] = text
                    changed = True
            for kind in [k for k in self._alarms if k.startswith("health.") and k[len("health."):] not in failing]:
                del self._alarms[kind]
                changed = True
        return changed

    def _state_of(self, rep: Any) -> dict[str, Any]:
        p = rep.pipeline
        now = time.monotonic()
        counts = {"parts": p.frames, "PASS": p.verdicts.get("PASS", 0), "REJECT": p.verdicts.get("REJECT", 0),
                  "LATE": p.verdicts.get("LATE", 0), "escapes": rep.escapes.physical,
                  "false_rejects": rep.ground_truth.false_rejects if rep.ground_truth is not None else None}
        self._minute.append((now, counts))
        while len(self._minute) > 1 and now - self._minute[1][0] >= MINUTE_S:
            self._minute.popleft()
        t_old, old = self._minute[0]
        # A counter that was not there a minute ago (no ground truth yet) counts from 0.
        per_minute = {k: (None if v is None else v - (old[k] or 0)) for k, v in counts.items()}
        if now >= self._next_trend:
            self._next_trend = now + 1.0
            self._trend.append((time.time(), p.p99_recent_ms))
        src = rep.source
        mqtt = rep.mqtt
        drift = rep.drift
        return {
            "at": iso(time.time()), "uptime_s": round(rep.uptime_s, 1),
            "healthy": rep.healthy,
            "failed": [{"name": c.name, "detail": c.detail} for c in rep.health if not c.ok],
            "realtime": rep.realtime["in_force"] if rep.realtime else "off",
            "camera": {"name": src.name, "connection": src.connection, "detail": src.detail,
                       "frames": src.frames, "reconnects": src.reconnects},
            "broker": None if mqtt is None else {"connected": mqtt.connected, "outbox": mqtt.outbox_depth,
                                                 "degraded": mqtt.outbox_degraded, "error": mqtt.last_error},
            "plc": None if rep.plc is None else {"station": rep.plc.station, "reason": rep.plc.station_reason,
                                                 "connected": rep.plc.connected},
            "drift": None if drift is None else {k: drift.get(k) for k in (
                "enabled", "why_off", "in_drift", "acting", "on_drift", "statistic", "value", "bounds", "psi")},
            "counters": counts, "per_minute": per_minute, "minute_window_s": round(now - t_old, 1),
            "budget_ms": rep.budget_ms,
            "p99_ms": None if p.p99_recent_ms is None else round(p.p99_recent_ms, 2),
            "trend": [[round(t, 1), None if v is None else round(v, 2)] for t, v in self._trend],
            "model": self._model(rep),
            "page": self.hub.state(),
        }

    def _model(self, rep: Any) -> dict[str, Any]:
        svc = self.svc
        m = rep.model
        bundle = getattr(svc.detector, "bundle", None)
        out: dict[str, Any] = {"name": m["name"], "version": m["version"], "precision": m.get("precision"),
                               "device": m.get("device"), "task": getattr(bundle, "task", "detect"),
                               "since": None, "last_switch": None, "shadow": None}
        started = self._started_wall
        events = list(getattr(svc.lifecycle, "events", None) or []) if getattr(svc, "lifecycle", None) else []
        if events:
            e = events[-1]
            out["last_switch"] = {"event": e.get("event"), "by": e.get("by"), "why": e.get("why"),
                                  "at": iso(e["at"]) if e.get("at") else None, "previous": e.get("previous")}
            out["since"] = out["last_switch"]["at"]
        elif started is not None:
            out["since"] = iso(started)
        lc = rep.lifecycle or {}
        if lc.get("shadow"):
            s = lc["shadow"]
            out["shadow"] = {"model": s.get("model"), "judged": s.get("judged"), "agreement": s.get("agreement")}
        return out
