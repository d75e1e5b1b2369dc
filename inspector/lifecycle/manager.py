"""The model lifecycle of a running service: promote, rollback, shadow, status.

One model change at a time (`_lock`), on the caller's thread (the control socket's), never on the
frame path:
- promote: check the stored bundle again (sha256s, signature), compile and warm the new model on
  this (normal-priority) thread, hand it to the pipeline, which installs it between two frames
  (`ModelSlot.swap`, the pipeline's); move the station's pointer; announce the switch (MQTT status); release the old
  model once its frames in flight have completed. With the guard on, the old model stays compiled
  (a few MB) until the guard accepts the promotion, so a rollback is one more swap with no compile.
- rollback: the same, back to the pointer's `previous`.
- the pointer moves first, durably, then the pipeline switches: a pointer that cannot be written (a
  full disk) switches nothing, and a swap that fails puts the pointer back. So the answer to the
  operator, `model list` (the pointer), the MQTT status and the model judging the parts agree.
- the rollback guard's progress lives in the pointer (written at promote, every tenth of
  `guard.parts`, at stop, and when it accepts or trips): a restart during the watch resumes it.
  A guard rollback that fails raises `rollback_failed` and turns the `lifecycle` health check red.
- the compile runs at the service's own priority on purpose: OpenVINO's inference threads inherit
  the niceness of the thread that compiles the model, and this model will judge the line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from inspector.bundle.load import ModelBundle, bundle_from, load_bundle
from inspector.bundle.signing import Trust
from inspector.errors import InspectorError, ModelError
from inspector.frames import ModelInfo
from inspector.inference.decision import DecisionPolicy
from inspector.inference.judge import Judge, make_judge
from inspector.inference.runner import Runner, open_runner
from inspector.kernel import realtime
from inspector.lifecycle.guard import RollbackGuard
from inspector.lifecycle.histogram import LatencyHistogram
from inspector.lifecycle.shadow import ShadowRunner
from inspector.lifecycle.store import ModelRef, ModelStore
from inspector.lifecycle.swap import ModelSlot

log = logging.getLogger(__name__)

Announce = Callable[[ModelInfo, ModelInfo, str], None]  # (new, old, why)
AlarmFn = Callable[[str, dict[str, Any]], None]

RELEASE_WAIT_S = 10.0  # a swapped-out model's frames in flight are answered by their deadline long before


class SwitchFailed(ModelError):
    """A promote or rollback that could not be made durable: nothing switched (a runtime failure)."""

    exit_code = 1


def station_of(cfg) -> str:
    return cfg.lifecycle.station or cfg.mqtt.station


def open_store(cfg) -> tuple[ModelStore, Trust]:
    return (ModelStore(cfg.lifecycle.store, station_of(cfg), group=cfg.lifecycle.socket_group),
            Trust.from_config(cfg.lifecycle))


def check_task(cfg, task: str, what: object) -> None:
    """Refuses (ModelError: exit 2) a model of another kind than the station runs (`model.task`), naming both:
    a classifier on a detect station (or the reverse) would judge every part by the wrong rule."""
    if task != cfg.model.task:
        raise ModelError(f"{what} is a {task!r} model but this station runs {cfg.model.task!r} models "
                         f"(config model.task): set model.task: {task} to run it here, or use a {cfg.model.task} "
                         f"bundle")


def open_model(cfg, bundle: ModelBundle, threads: int | None = None) -> tuple[Runner, DecisionPolicy]:
    """Compiles a checked bundle the way the service runs it (the head and decision rule of its card's
    task, its decision policy from the card's thresholds); `threads` set: a shadow's single-request
    runner. The IR checks (labels, input, channels, output), the station's `model.task` and the config's
    `model.classes` / `model.input_size` run here, for every use."""
    check_task(cfg, bundle.task, f"model {bundle.name} {bundle.version}")
    policy = DecisionPolicy.build(cfg.decision, bundle.classes, bundle.thresholds, task=bundle.task,
                                  pass_class=bundle.card.pass_class if bundle.card is not None else None)
    model_cfg = cfg.model if threads is None else cfg.model.model_copy(
        update={"threads": threads, "requests": 1, "hint": "latency"})
    return open_runner(model_cfg, bundle, conf=policy.conf_floor), policy


def open_stored(cfg, store: ModelStore, trust: Trust, ref: ModelRef,
                threads: int | None = None) -> tuple[Runner, DecisionPolicy]:
    """The one validation a stored version passes before it judges a part, at start, promote and shadow
    alike: `store.verify` (card schema incl. thresholds and input_envelope, signature, every sha256),
    then the compile of the very bytes that were hashed (`open_model`)."""
    vb = store.verify(ref, trust, precision=cfg.model.precision)
    return open_model(cfg, bundle_from(vb, cfg.model.precision), threads)


def open_initial(cfg) -> tuple[Runner, DecisionPolicy, dict[str, Any] | None]:
    """The model the service starts on: (runner, policy, fallback), `fallback` the detail of the
    `model_fallback` alarm to raise, None when the pointer's model started.

    Lifecycle off: `model.path`. On: the station's pointer; the first time, `model.path` is staged into
    the store (each file hashed once, in the copy, and compiled from the bytes hashed) and becomes it.
    A pointer whose model fails the validation falls back to its `previous` (the pointer is moved there,
    like a rollback, so `model list`, the status and the judging model agree): a line is not left without
    a station by a bundle that was damaged or refused after it was promoted. When the previous fails too,
    or there is none, the error names both (ModelError: exit 2)."""
    precision = cfg.model.precision
    if not cfg.lifecycle.enabled:
        return (*open_model(cfg, load_bundle(cfg.model.path, precision)), None)
    store, trust = open_store(cfg)
    ref = store.active_ref()
    if ref is None:
        vb = store.stage_verified(cfg.model.path, trust, precision=precision)
        ref = ModelRef(vb.card.name, vb.card.version)
        store.set_active(ref, why=f"initial: model.path {cfg.model.path}")
        log.info("store %s: station %s starts on %s (from model.path)", store.root, store.station, ref)
        return (*open_model(cfg, bundle_from(vb, precision)), None)
    try:
        return (*open_stored(cfg, store, trust, ref), None)
    except ModelError as e:
        refused = e
    prev = store.previous_ref()
    if prev is None:
        raise ModelError(f"{store.pointer_path}: the active model {ref} is refused and the pointer names no "
                         f"previous version to fall back to: {refused}") from refused
    log.error("the active model %s is refused (%s); falling back to the pointer's previous, %s", ref, refused, prev)
    try:
        runner, policy = open_stored(cfg, store, trust, prev)
    except ModelError as e:
        raise ModelError(f"{store.pointer_path}: the active model {ref} is refused ({refused}), and so is its "
                         f"previous {prev} ({e}): stage and promote a valid bundle, or point "
                         f"{store.pointer_path} at one") from e
    detail = {"refused": str(ref), "to": str(prev), "error": str(refused), "pointer": str(store.pointer_path)}
    try:
        store.set_active(prev, why=f"fallback at start: {ref} refused ({refused})", previous=None)
    except (OSError, ModelError) as e:  # the station runs on `prev` all the same; the next start falls back again
        log.error("fallback to %s: the pointer %s could not be moved (%s)", prev, store.pointer_path, e)
        detail["pointer_error"] = str(e)
    return runner, policy, detail


def ref_of(m: ModelInfo) -> ModelRef:
    return ModelRef(m.name, m.version)


class ModelManager:
    def __init__(self, cfg, pipeline: ModelSlot, *, alarm: AlarmFn, announce: Announce | None = None,
                 spool_sink=None) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.store, self.trust = open_store(cfg)
        self._alarm = alarm
        self._announce = announce
        self._spool_sink = spool_sink
        self._lock = threading.Lock()  # one model change at a time
        self._warm: Judge | None = None  # the previous judge, kept compiled while the guard watches
        self.shadow: ShadowRunner | None = None
        self.guard = RollbackGuard(cfg.lifecycle.guard, self._guard_tripped, self._guard_accepted)
        self.events: list[dict[str, Any]] = []  # promotions and rollbacks of this run
        self._releasers: list[threading.Thread] = []
        self.rollback_failed: dict[str, Any] | None = None  # a guard rollback that failed: health red
        self._checkpoint_every = max(10, cfg.lifecycle.guard.parts // 10)
        try:
            self.store.clean_staging()  # stages killed before this start
        except (InspectorError, OSError) as e:
            log.warning("store %s: stale staging folders not cleaned (%s)", self.store.root, e)
        self._resume_guard()

    def _resume_guard(self) -> None:
        """A restart during the guard's watch: the pointer names the promoted model, keeps `previous`
        and the guard's progress; the watch goes on with the parts that remain."""
        progress = self.store.guard_progress()
        active = ref_of(self.pipeline.model)
        if progress is None or not self.cfg.lifecycle.guard.enabled:
            return
        if progress.get("model") != str(active) or self.store.previous_ref() is None:
            log.warning("rollback guard: the pointer's progress (%s) is not for %s with a previous version; "
                        "not resumed", progress.get("model"), active)
            return
        try:
            self.guard.arm(self.pipeline.model, resume=progress)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.warning("rollback guard: the pointer's progress is unreadable (%s); watching %s from part 0", e,
                        active)
            self.guard.arm(self.pipeline.model)
        st = self.guard.state()
        log.warning("rollback guard resumed on %s after a restart: %s of %d parts watched, %s to go (rollback "
                    "to %s)", active, st["parts"], st["parts_to_watch"], st["parts_to_watch"] - st["parts"],
                    self.store.previous_ref())

    # -- the post thread's tap (VerdictSink form) ----------------------------------------------------
    name = "lifecycle"

    def start(self) -> None:
        pass

    def submit(self, v) -> None:
        if self.guard.armed:
            self.guard.submit(v)
            n = self.guard.parts_watched
            if n and n % self._checkpoint_every == 0 and self.guard.armed:
                threading.Thread(target=self.checkpoint_guard, name="lifecycle-guard-checkpoint",
                                 daemon=True).start()  # an fsync: never on the post thread
        shadow = self.shadow
        if shadow is not None:
            shadow.submit(v)

    def stop(self, timeout: float = 2.0) -> None:
        if self.shadow is not None:
            self.shadow.stop(timeout)

    def checkpoint_guard(self, timeout: float = 5.0) -> None:
        """Writes the armed guard's progress into the pointer (a restart resumes from it): every tenth of
        `guard.parts` (own thread) and at stop, after the pipeline drained (Service.stop)."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("rollback guard: progress not written (a model change holds the lock)")
            return
        try:
            progress = self.guard.progress()
            if progress is not None:
                self.store.set_guard(ModelRef.parse(progress["model"]), progress)
        except (InspectorError, OSError) as e:  # a restart then resumes from the last progress written
            log.warning("rollback guard: progress not written to %s (%s)", self.store.pointer_path, e)
        finally:
            self._lock.release()

    # -- building a judge ------------------------------------------------------------------------------
    def _load(self, ref: ModelRef, threads: int | None = None) -> tuple[Runner, DecisionPolicy]:
        """The validation start runs (`open_stored`), before anything is switched."""
        return open_stored(self.cfg, self.store, self.trust, ref, threads)

    def build_judge(self, ref: ModelRef) -> Judge:
        runner, policy = self._load(ref)
        return make_judge(runner, policy)

    # -- promote / rollback ----------------------------------------------------------------------------
    def promote(self, ref: ModelRef | str, *, why: str = "promote") -> dict[str, Any]:
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self._lock:
            current = ref_of(self.pipeline.model)
            if ref == current:
                raise ModelError(f"{ref} is already the active model")
            t0 = time.monotonic()
            judge = self.build_judge(ref)  # refused here (BundleRefused) before anything changes
            compiled_s = time.monotonic() - t0
            guarded = self.cfg.lifecycle.guard.enabled
            # Armed in the same pointer write as the switch: a restart right after it still watches.
            watch = {"model": str(ref), "parts": 0, "rejects": 0,
                     "latency_ms": LatencyHistogram().to_doc()} if guarded else None
            prior = self.guard.progress()
            if guarded:  # before the swap: it only counts the new model's parts, from the first one
                self.guard.arm(judge.model)
            try:
                event = self._switch(judge, why=why, by="command", keep_old=guarded, guard=watch)
            except Exception:
                self.guard.disarm()
                self._rearm(prior)
                self._release(judge)  # compiled for nothing: the old model still judges
                raise
            event["compile_s"] = round(compiled_s, 3)
            return event

    def rollback(self, *, why: str = "by command", by: str = "command",
                 detail: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            current = ref_of(self.pipeline.model)
            prev = self.store.previous_ref()
            if prev is None:
                raise ModelError(f"nothing to roll back to: the pointer {self.store.pointer_path} names no "
                                 f"previous version of {current}")
            watching = self.guard.progress()
            self.guard.disarm()
            warm, self._warm = self._warm, None
            if warm is not None and ref_of(warm.model) == prev:
                judge = warm
            else:
                if warm is not None:
                    self._release(warm)
                    warm = None
                try:
                    judge = self.build_judge(prev)
                except Exception:
                    self._rearm(watching)
                    raise
            try:
                event = self._switch(judge, why=f"rollback: {why}", by=by, keep_old=False, rollback=True)
            except Exception:
                if judge is warm:
                    self._warm = warm  # still compiled: the next rollback needs no compile
                else:
                    self._release(judge)
                self._rearm(watching)
                raise
            self._alarm("model_rolled_back", {"by": by, "why": why, "from": str(current), "to": str(prev),
                                              **(detail or {})})
            return event

    def _rearm(self, progress: dict[str, Any] | None) -> None:
        """A rollback by command that failed: the guard goes on watching where it was."""
        if progress is not None and progress["model"] == str(ref_of(self.pipeline.model)):
            self.guard.arm(self.pipeline.model, resume=progress)

    def _switch(self, judge: Judge, *, why: str, by: str, keep_old: bool, rollback: bool = False,
                guard: dict[str, Any] | None = None) -> dict[str, Any]:
        new = ref_of(judge.model)
        old_ref = ref_of(self.pipeline.model)
        what = "rollback" if rollback else "promote"
        # The pointer first, durably: a restart comes back on what will judge, and a pointer that cannot
        # be written (ENOSPC) switches nothing. After a rollback there is nothing to return to (rolling
        # "back" to the rejected model would be a promotion).
        try:
            replaced = self.store.set_active(new, why=why, previous=None if rollback else old_ref, guard=guard)
        except OSError as e:
            raise SwitchFailed(f"{what} to {new} not done: the pointer {self.store.pointer_path} could not be "
                               f"written ({e.strerror or e}); {old_ref} still judges and stays active") from e
        try:
            result = self.pipeline.swap(judge, timeout=5.0)
        except Exception as e:
            try:
                self.store.restore(replaced)
            except OSError as e2:
                log.critical("the pointer %s names %s but %s still judges: putting it back failed (%s)",
                             self.store.pointer_path, new, old_ref, e2)
            raise SwitchFailed(f"{what} to {new} not done: the pipeline did not take the model ({e}); "
                               f"{old_ref} still judges and stays active") from e
        self.rollback_failed = None  # the station now runs what an operator or the guard chose
        old = result.old
        if self._warm is not None:
            self._release(self._warm)
            self._warm = None
        if keep_old:
            self._warm = old
        else:
            self._release(old)
        event = {"event": what, "by": by, "why": why, "active": str(new),
                 "previous": str(old_ref), "last_old_frame_id": result.last_old_frame_id, "at": time.time()}
        self.events.append(event)
        log.warning("model switch (%s): %s -> %s after frame %s", why, old_ref, new, result.last_old_frame_id)
        if self._announce is not None:
            try:
                self._announce(judge.model, old.model, why)
            except Exception:  # the switch happened; a failed announcement must not undo it
                log.exception("announcing the model switch failed")
        return event

    def _release(self, judge: Judge) -> None:
        """Releases a swapped-out model once its frames in flight are answered (own thread)."""
        def run() -> None:
            realtime.enter("lifecycle")  # started by the control or post thread: below the frame path
            if not judge.runner.close(RELEASE_WAIT_S):
                log.error("model %s %s: a request still runs %.0f s after the swap; not released",
                          judge.model.name, judge.model.version, RELEASE_WAIT_S)
        t = threading.Thread(target=run, name="lifecycle-release", daemon=True)
        t.start()
        self._releasers = [x for x in self._releasers if x.is_alive()] + [t]

    def wait_released(self, timeout: float = RELEASE_WAIT_S) -> bool:
        end = time.monotonic() + timeout
        while True:  # a release may start another (the guard's accept releases the warm model)
            alive = [t for t in list(self._releasers) if t.is_alive()]
            if not alive or time.monotonic() >= end:
                break
            alive[0].join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._releasers)

    # -- the guard's callbacks (post thread: hand off, never swap here) -------------------------------
    def _guard_tripped(self, result: dict[str, Any]) -> None:
        def run() -> None:
            realtime.enter("lifecycle")  # started by the post thread: below the frame path (kernel/realtime.py)
            try:
                self.rollback(why=result["why"], by="guard", detail={"guard": result})
            except Exception as e:  # the bad model still judges: the line must know
                log.exception("the rollback guard could not roll back")
                self.rollback_failed = {"model": result["model"], "why": result["why"],
                                        "error": f"{type(e).__name__}: {e}", "at": time.time()}
                self._alarm("rollback_failed", {"model": result["model"], "why": result["why"],
                                                "error": self.rollback_failed["error"], "guard": result})
        threading.Thread(target=run, name="lifecycle-guard-rollback", daemon=True).start()

    def _guard_accepted(self, model: ModelInfo) -> None:
        def run() -> None:
            realtime.enter("lifecycle")
            with self._lock:
                warm, self._warm = self._warm, None
                if warm is not None:
                    self._release(warm)
                try:
                    self.store.set_guard(ref_of(model), None)  # the promotion stands: no watch to resume
                except (InspectorError, OSError) as e:
                    log.warning("rollback guard: acceptance not written to %s (%s): a restart watches %s again",
                                self.store.pointer_path, e, ref_of(model))
            log.info("rollback guard: %s@%s stands after %d parts; previous model released", model.name,
                     model.version, self.cfg.lifecycle.guard.parts)
        t = threading.Thread(target=run, name="lifecycle-guard-accept", daemon=True)
        self._releasers.append(t)  # wait_released() waits for it too
        t.start()

    # -- shadow -----------------------------------------------------------------------------------------
    def shadow_start(self, ref: ModelRef | str, wait_s: float = 60.0) -> dict[str, Any]:
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self._lock:
            if self.shadow is not None:
                raise ModelError(f"a shadow already runs ({self.shadow.ref}); stop it first")
            # Refused before a thread starts; the runner compiles the very bytes checked here.
            vb = self.store.verify(ref, self.trust, precision=self.cfg.model.precision)
            bundle = bundle_from(vb, self.cfg.model.precision)
            check_task(self.cfg, bundle.task, f"shadow {ref}")
            runner = ShadowRunner(str(ref), lambda: open_model(self.cfg, bundle, threads=self.cfg.shadow.threads),
                                  self.cfg.shadow, spool_sink=self._spool_sink)
            runner.start()
            if not runner.ready.wait(wait_s):
                runner.stop(0.5)
                raise ModelError(f"shadow {ref}: not compiled within {wait_s:.0f} s")
            if runner.failed:
                runner.stop(0.5)
                raise ModelError(f"shadow {ref} could not be built: {runner.failed}")
            self.shadow = runner
            return {"shadow": str(ref), "priority": runner.priority}

    def shadow_stop(self) -> dict[str, Any]:
        with self._lock:
            runner, self.shadow = self.shadow, None
        if runner is None:
            raise ModelError("no shadow runs")
        runner.stop(2.0)
        return {"stopped": runner.ref, "report": runner.state()}

    def shadow_report(self) -> dict[str, Any]:
        if self.shadow is None:
            raise ModelError("no shadow runs: start one with `inspector model shadow NAME@VERSION`")
        return {"active": str(ref_of(self.pipeline.model)), **self.shadow.state()}

    # -- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        active = ref_of(self.pipeline.model)
        prev = self.store.previous_ref()
        return {
            "station": self.store.station,
            "store": str(self.store.root),
            "active": str(active),
            "previous": None if prev is None else str(prev),
            "shadow": None if self.shadow is None else self.shadow.ref,
            "guard": self.guard.state(),
            "rollback_failed": self.rollback_failed,
            "versions": [{"ref": str(v.ref), "created": v.created, "signed": v.signed, "active": v.ref == active,
                          "shadow": self.shadow is not None and str(v.ref) == self.shadow.ref}
                         for v in self.store.versions()],
            "events": self.events[-20:],
        }

    def state(self) -> dict[str, Any]:
        """For the service report (summary, /metrics): small and cheap."""
        out: dict[str, Any] = {"switches": len(self.events), "guard_armed": self.guard.armed,
                               "rollback_failed": self.rollback_failed}
        if self.shadow is not None:
            st = self.shadow.state()
            out["shadow"] = {k: st[k] for k in ("model", "judged", "dropped", "agree", "disagree", "agreement",
                                                 "spooled_disagreements")}
        return out
