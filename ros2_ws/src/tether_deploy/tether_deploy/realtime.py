"""Real-time scheduling for a control process, the way ros2_control's controller manager does it.

``make_realtime(priority)`` puts every thread of the calling process (the executor and the DDS
middleware's receive threads alike: a state message goes through both) under SCHED_FIFO at
``priority`` and freezes the garbage collector's view of everything allocated so far, so that a
full collection never walks the loaded policy, rclpy and numpy (pauses of milliseconds). Threads
created later inherit the policy; ``make_background()`` hands one back to the normal scheduler (the
hot-swap loader must not compete with the tick).

Needs CAP_SYS_NICE or an ``rtprio`` limit (``/etc/security/limits.conf``: ``@realtime - rtprio 98``;
in Docker: ``--cap-add SYS_NICE`` / compose ``cap_add: [SYS_NICE]``). Without it the process keeps
normal scheduling and the returned message says why: the node still runs, with more jitter.
"""

from __future__ import annotations

import gc
import os


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: only the calling thread
        return [0]


def make_realtime(priority: int) -> str:
    """SCHED_FIFO at ``priority`` (1..99) for all threads; returns what was done, for the log."""
    gc.collect()
    gc.freeze()  # objects alive now are never scanned again
    if priority <= 0:
        return "normal scheduling (realtime_priority 0); garbage collector frozen"
    if not hasattr(os, "sched_setscheduler"):
        return f"SCHED_FIFO {priority} not available on this platform; normal scheduling"
    lo, hi = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not lo <= priority <= hi:
        raise ValueError(f"realtime_priority must be in {lo}..{hi} for SCHED_FIFO (or 0 for off), got {priority}")
    failed = []
    tids = _thread_ids()
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        except PermissionError:
            return (f"SCHED_FIFO {priority} refused (no CAP_SYS_NICE / rtprio limit): normal scheduling, "
                    f"expect more jitter; see tether_deploy/realtime.py")
        except ProcessLookupError:
            failed.append(tid)  # the thread ended meanwhile
    return f"SCHED_FIFO priority {priority} on {len(tids) - len(failed)} threads; garbage collector frozen"


def make_background() -> None:
    """Return the calling thread to normal scheduling (no-op where it already is or cannot change)."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
