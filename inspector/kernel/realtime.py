"""Per-thread OS scheduling: the frame path under a real-time policy, everything else below it.

Why: on a 2-core line PC beside two busy threads at nice 0, the demo lost 96 % of its parts to LATE
at the default priority and 81 % at `nice -n -5`; the whole process under SCHED_FIFO lost 1 in 600
(benchmarks/README.md, load table). Nice values only share a core; a real-time policy takes it. But a
whole-process `chrt` would put the uploader, the spool writer and a candidate's compile above every
other program on the PC, so the policy is set per thread, by the thread itself at its start (on Linux a
thread is a task: `sched_setscheduler(0, ...)` acts on the calling thread only).

Groups (`enter(group, name)`; `census()` reads what the kernel says, /proc/self/task/*/stat field 41):
- `frame`: the camera's grab/trigger thread, pipeline-infer, pipeline-watchdog, pipeline-post, plc-pair
  and its MQTT network thread, the publisher thread and paho's network thread (they carry the reject out
  and its PUBACK back: a reject's delivery is part of the part's deadline), and OpenVINO's threads of
  the model that judges (`adopt`). SCHED_FIFO/RR at `priority`, pinned to `cpus` when set. RT threads
  carry SCHED_RESET_ON_FORK: a thread they start (a lifecycle guard's rollback, a sink's helper)
  begins as SCHED_OTHER, so the real-time class never leaks.
- `service`: metrics, control socket, golden part, OPC UA, main: SCHED_OTHER at the service's nice.
- `background`: spool writer, uploader, verdict log, the outbox checkpoint (kernel/priority.py):
  SCHED_OTHER; at `background.nice` (or SCHED_IDLE) while the frame path is not real-time, at the
  service's nice while it is. All threads of the process share one GIL: a nice-10 thread preempted by
  the PC's busy programs while it holds the GIL keeps the real-time threads waiting for it (priority
  inversion; measured with 2 busy threads + a disk writer: background at nice 10, LATE 4 and 10 in 300
  parts, p99 50-119 ms; at the service's nice, LATE 0 and 0, p99 6-10 ms). The shadow model keeps its
  own `shadow.nice` (it is asked for explicitly).
- `lifecycle`: a candidate's hashing, compile and warm-up, and the release of a model: SCHED_OTHER at
  the service's nice, below a real-time frame path (and not lower, for the GIL's sake; without real
  time, as before: an unprivileged process could not raise its OpenVINO threads back once promoted).

OpenVINO's CPU plugin (2026.4, pip build with oneTBB): `compile_model` starts the streams executor's
threads (std::thread: one per stream plus its task thread) and the first inference's parallel regions
start oneTBB's worker pool (RML, pthread_create; one worker per core but one, shared by every compiled
model in the process). Threads inherit the policy of the thread that creates them, so nothing is
inherited by luck here: the detector records the native threads its compile and warm-up created
(`threads_since`), the service compiles its first model at its own priority, and the pipeline `adopt`s
the judging model's threads into the frame group when it starts and at every model swap. A candidate
compiled by the lifecycle starts its own stream threads at the lifecycle thread's priority (below the
frame path) and they join the frame group only when it is installed. The TBB worker pool is created by
the first model's warm-up and adopted with it: a candidate's warm-up and a shadow model's parallel
regions may borrow it while it is idle (the pool is one per process; OpenVINO gives no per-model pool).

Never freeze the PC, two guards: the kernel's RT throttling (`/proc/sys/kernel/sched_rt_runtime_us`,
950000 of every 1000000 us by default: non-RT tasks keep 5 % of each CPU whatever an RT thread does),
and RLIMIT_RTTIME (`realtime.rttime_ms`): a real-time thread that runs that long without blocking makes
the kernel send SIGXCPU; the handler drops every frame-path thread to SCHED_OTHER at once (syscalls
only, no lock), the `realtime-guard` thread raises `realtime_demoted`, and the stalled verdicts turn
/healthz red and stop the systemd watchdog pings. Past the hard limit (soft + 5 s: the handler did not
run) the kernel kills the process and systemd restarts it.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.config import RealtimeConfig

log = logging.getLogger(__name__)

GROUPS = ("frame", "service", "background", "lifecycle")
# Within the frame path, `priority` + rank: SCHED_FIFO never time-slices threads of one priority, so under
# overload an intake thread that never blocks (a synthetic source rendering 120 frames/s) kept OpenVINO's
# threads off a core for 1 s (model_failed "stuck", measured). Finishing what is in flight comes first: the
# watchdog (it answers LATE at the deadline) above the completion side (OpenVINO, post, the reject's
# publisher and network thread) above the intake (camera, infer, PLC pairing).
RANKS = {"pipeline-watchdog": 2, "pipeline-post": 1, "ov-infer": 1, "mqtt-publisher": 1, "mqtt-network": 1,
         "plc-mqtt": 1}
CAP_SYS_NICE = 23
HARD_EXTRA_US = 5_000_000  # RLIMIT_RTTIME hard = soft + 5 s: the kernel's SIGKILL if the SIGXCPU handler never ran
_POLICY_NAMES = {0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH", 5: "SCHED_IDLE",
                 6: "SCHED_DEADLINE"}

AlarmFn = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TaskSched:
    """One thread as the kernel schedules it (/proc/self/task/<tid>/stat)."""

    tid: int
    comm: str
    policy: int  # field 41
    rt_priority: int  # field 40
    nice: int  # field 19

    @property
    def policy_name(self) -> str:
        return _POLICY_NAMES.get(self.policy, str(self.policy))

    @property
    def words(self) -> str:
        if self.policy in (1, 2):
            return f"{self.policy_name} {self.rt_priority}"
        if self.policy == 5:
            return "SCHED_IDLE"
        return f"{self.policy_name} nice {self.nice}"


def read_task(tid: int, pid: int | str = "self") -> TaskSched | None:
    """A thread's scheduling as the kernel reports it; None when it is gone."""
    base = Path(f"/proc/{pid}/task/{tid}")
    try:
        stat = (base / "stat").read_text()
        comm = (base / "comm").read_text().strip()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()  # fields from 3 on (comm may hold spaces)
    return TaskSched(tid, comm, policy=int(rest[41 - 3]), rt_priority=int(rest[40 - 3]), nice=int(rest[19 - 3]))


def census(pid: int | str = "self") -> list[TaskSched]:
    """Every thread of a process with its policy (the check a test or an operator makes)."""
    out = []
    for tid in task_ids(pid):
        t = read_task(tid, pid)
        if t is not None:
            out.append(t)
    return out


def task_ids(pid: int | str = "self") -> set[int]:
    try:
        return {int(p) for p in os.listdir(f"/proc/{pid}/task")}
    except OSError:  # not Linux: no per-thread view
        return set()


def threads_since(before: set[int]) -> frozenset[int]:
    """Native threads (not Python's) that appeared since `before` (`task_ids()`): what a library call
    such as OpenVINO's compile_model started."""
    python = {t.native_id for t in threading.enumerate() if t.native_id is not None}
    return frozenset(task_ids() - before - python - {os.getpid()})


# -- the decision ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    """What the service runs with: `mode` fifo | rr (in force), refused, off; `reason` and `fix` when refused."""

    requested: str
    mode: str
    priority: int
    reason: str | None = None
    fix: str | None = None

    @property
    def rt(self) -> bool:
        return self.mode in ("fifo", "rr")

    @property
    def words(self) -> str:
        if self.rt:
            return f"{self.mode} {self.priority}"
        if self.mode == "refused":
            return f"refused ({self.reason})"
        return self.mode


def capable() -> tuple[bool, int]:
    """(CAP_SYS_NICE in the effective set, RLIMIT_RTPRIO soft limit)."""
    cap = False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                cap = bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return cap, (1 << 31) if soft == resource.RLIM_INFINITY else int(soft)


def _rt_budget() -> str | None:
    """The cgroup (v1) real-time budget of this process when it is 0 (a container's default), else None."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrl, path = line.split(":", 2)
            if "cpu" in ctrl.split(","):
                f = Path("/sys/fs/cgroup/cpu") / path.lstrip("/") / "cpu.rt_runtime_us"
                if f.exists() and int(f.read_text()) == 0:
                    return str(f)
    except (OSError, ValueError):
        pass
    return None


def _policy_const(mode: str) -> int:
    return os.SCHED_RR if mode == "rr" else os.SCHED_FIFO


def decide(cfg: RealtimeConfig) -> Decision:
    """Tries the policy on a short-lived thread (no side effect on the caller) and says why not."""
    if cfg.policy == "off":
        return Decision("off", "off", cfg.priority)
    mode = "rr" if cfg.policy == "rr" else "fifo"
    if not sys.platform.startswith("linux") or not hasattr(os, "sched_setscheduler"):
        return Decision(cfg.policy, "refused", cfg.priority, f"no per-thread real-time scheduling on {sys.platform}",
                        "run the line PC on Linux")
    box: list[BaseException | None] = []
    top = cfg.priority + max(RANKS.values())  # the watchdog's: every rank must be permitted

    def probe() -> None:
        try:
            os.sched_setscheduler(0, _policy_const(mode), os.sched_param(top))
            if cfg.cpus:
                os.sched_setaffinity(0, cfg.cpus)
            box.append(None)
        except OSError as e:
            box.append(e)

    t = threading.Thread(target=probe, name="realtime-probe", daemon=True)
    t.start()
    t.join()
    err = box[0] if box else RuntimeError("probe did not run")
    if err is None:
        return Decision(cfg.policy, mode, cfg.priority)
    cap, rtprio = capable()
    if isinstance(err, OSError) and err.errno in (errno.EPERM, errno.EACCES):
        budget = _rt_budget()
        if not cap and rtprio < top:
            reason = f"no CAP_SYS_NICE and RLIMIT_RTPRIO {rtprio} < {top} (priority {cfg.priority} + 2)"
            fix = (f"systemd: LimitRTPRIO={top} (deploy/systemd/inspector.service); docker: --ulimit rtprio={top} "
                   "(or --cap-add SYS_NICE); or realtime.policy: off to silence this")
        elif budget is not None:
            reason = f"the cgroup has no real-time budget ({budget} = 0)"
            fix = ("give the cgroup an RT budget (docker: --cpu-rt-runtime=950000 with a daemon --cpu-rt-runtime), "
                   "or run on cgroup v2 without RT group scheduling")
        else:
            reason = f"sched_setscheduler refused: {err.strerror}"
            fix = "check seccomp/AppArmor profiles and the cgroup's cpu.rt_runtime_us"
    else:
        reason = f"sched_setscheduler failed: {err}"
        fix = "check realtime.cpus and the kernel's real-time support"
    return Decision(cfg.policy, "refused", cfg.priority, reason, fix)


# -- the process-wide scheduler -------------------------------------------------------------------
class _Scheduler:
    def __init__(self) -> None:
        self.cfg = RealtimeConfig(policy="off")
        self.decision = Decision("off", "off", self.cfg.priority)
        self.base_nice = 0
        self.background_nice = 10
        # tid -> (group, name, policy in words as the kernel reported it once set); written under lock
        self.members: dict[int, tuple[str, str, str]] = {}
        self.lock = threading.Lock()
        self.demoted: str | None = None
        self.alarm: AlarmFn | None = None
        self._demoted_ev = threading.Event()
        self._guard: threading.Thread | None = None
        self.failures: Counter[str] = Counter()


_s = _Scheduler()


def configure(cfg: RealtimeConfig, alarm: AlarmFn | None = None, *, background_nice: int = 10) -> Decision:
    """Decides the policy for threads entering from now on (the service calls it once, at build, on
    the main thread), sets RLIMIT_RTTIME, installs the SIGXCPU handler, logs the start-up line and,
    when refused, raises `realtime_refused` once."""
    global _s
    _s = _Scheduler()
    _s.cfg, _s.alarm = cfg, alarm
    _s.base_nice = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
    _s.background_nice = background_nice
    d = decide(cfg)
    _s.decision = d
    from inspector.kernel import priority

    priority.realtime_in_force(d.rt)
    if d.rt:
        soft = cfg.rttime_ms * 1000
        try:
            resource.setrlimit(resource.RLIMIT_RTTIME, (soft, soft + HARD_EXTRA_US))
        except (OSError, ValueError) as e:  # a hard limit set lower by the caller: keep theirs
            log.warning("realtime: cannot set RLIMIT_RTTIME to %d us (%s); the kernel's RT throttling still "
                        "bounds a spinning thread", soft, e)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGXCPU, _on_sigxcpu)
        _s._guard = threading.Thread(target=_guard_loop, args=(_s,), name="realtime-guard", daemon=True)
        _s._guard.start()
        log.info("realtime: frame path under %s priority %d%s; RLIMIT_RTTIME %d ms; kernel RT throttling %s",
                 "SCHED_RR" if d.mode == "rr" else "SCHED_FIFO", d.priority,
                 f" on CPUs {cfg.cpus}" if cfg.cpus else "", cfg.rttime_ms, rt_throttling())
    elif d.mode == "refused":
        log.warning("realtime: refused (%s): the frame path runs at the service's priority. Fix: %s", d.reason, d.fix)
        if alarm is not None:
            alarm("realtime_refused", {"requested": d.requested, "reason": d.reason, "fix": d.fix,
                                       "priority": d.priority})
    else:
        log.info("realtime: off (threads at the service's priority, background threads lowered)")
    return d


def decision() -> Decision:
    return _s.decision


def rt_throttling() -> str:
    try:
        run = int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text())
        period = int(Path("/proc/sys/kernel/sched_rt_period_us").read_text())
    except (OSError, ValueError):
        return "unknown"
    if run < 0:
        return "OFF (sched_rt_runtime_us = -1: a spinning RT thread may take a CPU whole)"
    return f"{run}/{period} us"


def name_thread(tid: int, name: str) -> None:
    # The name ps/top show (15 bytes): lets an operator check the policy of each thread by name.
    try:
        with open(f"/proc/self/task/{tid}/comm", "w") as fh:
            fh.write(name[:15])
    except OSError:
        pass


def _apply(tid: int, group: str, name: str) -> str:
    """Sets thread `tid` (0: the caller) to its group's policy; returns what was done, in words."""
    s = _s
    d = s.decision
    try:
        if group == "frame" and d.rt and s.demoted is None:
            prio = d.priority + RANKS.get(name, 0)
            os.sched_setscheduler(tid, _policy_const(d.mode) | os.SCHED_RESET_ON_FORK, os.sched_param(prio))
            if s.cfg.cpus:
                os.sched_setaffinity(tid, s.cfg.cpus)
            return f"{d.mode} {prio}"
        if group == "background":
            from inspector.kernel.priority import lower_thread_priority

            return lower_thread_priority(name, tid=tid)
        if not hasattr(os, "sched_setscheduler"):
            return "unchanged"
        nice = s.base_nice  # lifecycle too: with the frame path real-time a lower nice only risks GIL inversion
        # Explicitly SCHED_OTHER: a thread started by a real-time one would otherwise be real-time too.
        pol = os.sched_getscheduler(tid)
        if pol != os.SCHED_OTHER:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        real = tid or threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, real) != nice:
            os.setpriority(os.PRIO_PROCESS, real, nice)
        return f"SCHED_OTHER nice {nice}"
    except OSError as e:  # raising a thread back (unprivileged), a seccomp profile: it runs as it is
        s.failures[group] += 1
        log.warning("realtime: %s thread %s (tid %s): cannot set its %s policy (%s); it runs as it is",
                    group, name, tid or threading.get_native_id(), group, e)
        return f"unchanged: {e}"


def register(tid: int, group: str, name: str, words: str = "?") -> None:
    """Counts thread `tid` in `group` for the report (enter/adopt do it; kernel/priority.py calls it)."""
    with _s.lock:
        _s.members[tid] = (group, name, words)


def record(tid: int) -> None:
    """Keeps the policy the kernel reports for `tid` now: the summary counts threads that ended too."""
    t = read_task(tid)
    with _s.lock:
        if t is not None and tid in _s.members:
            g, n, _ = _s.members[tid]
            _s.members[tid] = (g, n, t.words)


def enter(group: str, name: str | None = None) -> str:
    """The calling thread joins `group` (first thing in its run function). Returns what was done."""
    if group not in GROUPS:
        raise ValueError(f"group: expected one of {GROUPS}, got {group!r}")
    name = name or threading.current_thread().name
    tid = threading.get_native_id()
    if threading.current_thread() is not threading.main_thread():  # the main thread's name is the process's
        name_thread(tid, name)
    register(tid, group, name)
    done = _apply(0, group, name)
    record(tid)
    log.debug("thread %s (tid %d) joins %s: %s", name, tid, group, done)
    return done


def adopt(tids: Iterable[int], group: str, name: str) -> None:
    """Threads not started by Python code (OpenVINO's, paho's) join `group` by their id."""
    for tid in tids:
        if not Path(f"/proc/self/task/{tid}").exists():
            continue
        register(tid, group, name)
        name_thread(tid, name)
        _apply(tid, group, name)
        record(tid)


def adopt_thread(thread: threading.Thread | None, group: str, name: str | None = None) -> None:
    """A started Python thread (paho's network loop) joins `group` from outside."""
    if thread is not None and thread.native_id is not None:
        adopt([thread.native_id], group, name or thread.name)


# -- never freeze the PC --------------------------------------------------------------------------
def _on_sigxcpu(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """RLIMIT_RTTIME soft limit: a real-time thread ran `rttime_ms` without blocking. Syscalls only."""
    s = _s
    if s.demoted is None:
        s.demoted = f"a real-time thread ran {s.cfg.rttime_ms} ms without blocking (SIGXCPU)"
    for tid, (group, _, _) in list(s.members.items()):
        if group == "frame":
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
    try:  # the kernel raised the soft limit by 1 s when it signalled: back to ours, for the next episode
        resource.setrlimit(resource.RLIMIT_RTTIME, (s.cfg.rttime_ms * 1000, s.cfg.rttime_ms * 1000 + HARD_EXTRA_US))
    except (OSError, ValueError):
        pass
    s._demoted_ev.set()


#: How often the guard notes each frame-path thread's CPU time, so that a demotion can name the thread that
#: ran without blocking (the SIGXCPU does not say which: seen in 2 of 20 CI logs, unexplained). Finer than
#: rttime_ms, so that a look falls inside the spin. One look reads /proc/self/task/<tid>/schedstat and status
#: per frame thread: 0.29 ms of CPU for 15 threads on the 2-core EPYC, ~3 ms of CPU per second.
GUARD_LOOK_S = 0.1

Look = dict[int, tuple[str, int, int]]  # tid -> (name, ns on CPU, voluntary context switches)
_VOLUNTARY = b"\nvoluntary_ctxt_switches:"


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def frame_cpu(s: _Scheduler | None = None) -> Look:
    """Each frame-path thread's CPU time and how often it slept of its own accord, as the kernel counts them.
    (Not the times it was scheduled in: a spinner is preempted by the frame path's higher ranks, 8 times in
    390 ms in the spin test, without the kernel resetting its RLIMIT_RTTIME run.)"""
    s = s or _s
    out = {}
    for tid, (group, name, _) in list(s.members.items()):
        if group != "frame":
            continue
        try:
            ns = int(_read(f"/proc/self/task/{tid}/schedstat").split()[0])
            status = _read(f"/proc/self/task/{tid}/status")
            i = status.index(_VOLUNTARY) + len(_VOLUNTARY)
            out[tid] = (name, ns, int(status[i:status.index(b"\n", i)]))
        except (OSError, ValueError, IndexError):
            continue  # gone, or a kernel without schedstats
    return out


def spinners(looks: list[Look], now: Look, rttime_ms: float) -> list[dict]:
    """Frame-path threads, the spinner first. `ran_ms`: CPU time since the earliest look after which the thread
    never slept (no voluntary switch), a lower bound of its run; `cpu_ms` and `sleeps` cover all `looks`, which
    span more than one `rttime_ms` run.

    First is a thread seen running `rttime_ms` without sleeping, else the one with the most CPU in the window.
    `ran_ms` alone cannot name it: in Python a spinner sleeps whenever it waits for the GIL, and after the
    SIGXCPU the handler and the other threads take the GIL again (CI stop 30: the numpy spinner had slept 3
    times in the 386 ms window, ran 0.0 ms at the last look, cpu 280 ms; a thread with ran 0.3 ms, cpu 11 ms
    came first). The window holds the whole run that raised the signal, so the spinner has at least
    ~`rttime_ms` of CPU in it; on one CPU no other thread can."""
    rows = []
    for tid, (name, ns, sleeps) in now.items():
        first = looks[0].get(tid, (name, ns, sleeps))
        ran = max((ns - look[tid][1] for look in looks if tid in look and look[tid][2] == sleeps), default=0)
        rows.append({"thread": name, "tid": tid, "ran_ms": round(ran / 1e6, 1),
                     "cpu_ms": round((ns - first[1]) / 1e6, 1), "sleeps": sleeps - first[2]})
    return sorted(rows, key=lambda r: (r["ran_ms"] < rttime_ms, -r["cpu_ms"], -r["ran_ms"]))


def _guard_loop(s: _Scheduler) -> None:
    enter("service", "realtime-guard")
    # Looks that cover a whole rttime_ms run and one look more: one of them fell inside the spin.
    span_s = s.cfg.rttime_ms / 1000 + GUARD_LOOK_S
    looks: collections.deque[tuple[float, Look]] = collections.deque([(time.monotonic(), frame_cpu(s))])
    while not s._demoted_ev.wait(GUARD_LOOK_S):
        if _s is not s:  # configured again (a second service in one process, the tests): this guard is done
            return
        looks.append((time.monotonic(), frame_cpu(s)))
        while len(looks) > 1 and time.monotonic() - looks[1][0] >= span_s:
            looks.popleft()
    rows = spinners([look for _, look in looks], frame_cpu(s), s.cfg.rttime_ms)[:4]
    since_ms = round((time.monotonic() - looks[0][0]) * 1e3)
    for tid, (group, _, _) in list(s.members.items()):
        if group == "frame":
            record(tid)
    log.error("realtime: demoted the frame path to SCHED_OTHER: %s. Frame-path threads, the spinner first (one seen "
              "running without sleeping that long, else the most CPU; ran: CPU time since it last slept; cpu, "
              "sleeps: CPU time and voluntary switches in "
              "the last %d ms): %s", s.demoted, since_ms,
              "; ".join(f"{r['thread']} (tid {r['tid']}) ran {r['ran_ms']} ms, cpu {r['cpu_ms']} ms, "
                        f"sleeps {r['sleeps']}" for r in rows))
    if s.alarm is not None:
        try:
            s.alarm("realtime_demoted", {"reason": s.demoted, "rttime_ms": s.cfg.rttime_ms,
                                         "threads": rows, "window_ms": since_ms,
                                         "fix": "a frame-path thread spins (`threads`, first: the one seen "
                                                "running without sleeping, else the most CPU): restart the service to "
                                                "return to the real-time class"})
        except Exception:  # an alarm path must not take the guard down
            log.exception("realtime_demoted alarm could not be raised")


# -- what the report shows ------------------------------------------------------------------------
def in_force() -> str:
    """One line: `fifo 10`, `rr 20`, `refused (<reason>)`, `off`, `demoted (<reason>)`."""
    if _s.demoted is not None:
        return f"demoted ({_s.demoted})"
    return _s.decision.words


def state(groups: bool = True) -> dict[str, Any]:
    """For the summary, heartbeat and /metrics: the decision and, per thread group, the policies the
    kernel reports for its threads (`{"SCHED_FIFO 10": 9}`: live threads as they are now, ended ones as they
    were once set; `groups=False` skips reading /proc, ~0.3 ms for 20 threads, for the heartbeat)."""
    out: dict[str, dict[str, int]] = {}
    with _s.lock:
        members = dict(_s.members) if groups else {}
    for tid, (group, _, was) in members.items():
        t = read_task(tid)
        words = t.words if t is not None else was
        g = out.setdefault(group, {})
        g[words] = g.get(words, 0) + 1
    d = _s.decision
    return {"requested": d.requested, "in_force": in_force(), "priority": d.priority,
            "cpus": list(_s.cfg.cpus) if _s.cfg.cpus else None, "rttime_ms": _s.cfg.rttime_ms if d.rt else None,
            "reason": d.reason, "fix": d.fix, "groups": out, "failures": dict(_s.failures)}


def runs_in(group: str, fn: Callable[[], Any], name: str | None = None) -> Callable[[], Any]:
    """`fn` as a thread target that first joins `group` (threading.Thread(target=runs_in("frame", self._run)))."""
    def run() -> Any:
        enter(group, name)
        return fn()
    return run
