"""Background threads yield the CPU to the frame path.

On a 2-core line PC the spool writer (JPEG encoding, fsync), the uploader (hashing, network) and the
verdict log compete with inference: `make demo` alone gave 0 LATE in 300 parts (p99 22 ms), the same
demo beside other jobs 3 LATE in 300 (p99 39.6 ms). Each background thread calls
`lower_thread_priority()` first thing, which lowers that thread only: on Linux a thread is a task,
and `setpriority(PRIO_PROCESS, tid)` / `sched_setscheduler(tid)` act on the one task. Threads it
starts later (the uploader's pool) inherit its priority.

Lowering is always allowed to an unprivileged process (raising back is not, without RLIMIT_NICE),
so it is done once and never undone. Where the OS refuses (not Linux, a seccomp profile), it logs
one line and the thread runs at the service's priority: the line keeps running either way.
"""

from __future__ import annotations

import logging
import os
import threading

from inspector.config import BackgroundConfig

log = logging.getLogger(__name__)

_config = BackgroundConfig()
# Set by kernel/realtime.py when the frame path runs real-time. Then the configured background threads
# stay at the service's nice: the real-time class already puts the frame path above them, and a thread at
# nice 10 that holds the GIL when the busy neighbours preempt it keeps every frame-path thread waiting for
# the GIL until the scheduler comes back to it. Measured (benchmarks/load.py, 2 busy + disk writer, 300
# parts x 2 rounds, SCHED_FIFO frame path): background nice 10: LATE 4 and 10, p99 50 and 119 ms;
# background at the service's nice: LATE 0 and 0, p99 9.8 and 5.9 ms.
_realtime = False


def configure(cfg: BackgroundConfig) -> None:
    """Sets the policy for background threads started from now on (the service calls it at build)."""
    global _config, _realtime
    _config = cfg
    _realtime = False


def realtime_in_force(yes: bool) -> None:
    """kernel/realtime.py: the frame path is (not) real-time from now on."""
    global _realtime
    _realtime = yes


def lower_thread_priority(what: str, cfg: BackgroundConfig | None = None, *, tid: int | None = None) -> str:
    """Lowers the calling thread's (or thread `tid`'s) OS priority per `cfg` (default: the configured one).

    Returns what was done, in words ("nice 10", "SCHED_IDLE", "off", or "unchanged: <why>"). The thread
    joins the `background` group of kernel/realtime.py (the report shows its policy).
    """
    from inspector.kernel import realtime

    configured = cfg is None
    cfg = cfg or _config
    tid = tid or threading.get_native_id()
    realtime.register(tid, "background", what)
    realtime.name_thread(tid, what)
    if cfg.priority == "off":
        return "off"
    if configured and _realtime:  # below the real-time frame path already; not lowered (see _realtime)
        try:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            done = f"nice {os.getpriority(os.PRIO_PROCESS, tid)} (frame path real-time)"
        except OSError as e:
            return f"unchanged: {e}"
        realtime.record(tid)
        return done
    try:
        if cfg.priority == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            done = "SCHED_IDLE"
        else:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:  # started by a real-time thread: SCHED_OTHER first
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            current = os.getpriority(os.PRIO_PROCESS, tid)
            # Never raise a thread: a service started at nice 15 keeps its background there.
            target = max(current, cfg.nice)
            if target != current:
                os.setpriority(os.PRIO_PROCESS, tid, target)
            done = f"nice {target}"
    except (OSError, AttributeError) as e:  # AttributeError: no SCHED_IDLE/getpriority on this OS
        log.warning("%s thread: cannot lower its priority (%s); it runs at the service's priority", what, e)
        return f"unchanged: {e}"
    log.debug("%s thread (tid %d): %s", what, tid, done)
    realtime.record(tid)
    return done
