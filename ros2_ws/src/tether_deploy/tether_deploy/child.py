"""Run one node so that it never outlives the launcher that started it: ``python -m tether_deploy.child
PARENT_PID MODULE [ARGS...]`` runs ``python -m MODULE ARGS...`` in this process, after

  * ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (Linux): the kernel sends SIGTERM when the launcher dies, even by
    SIGKILL; rclpy turns SIGTERM into a clean shutdown (the recorder closes its bag);
  * a check that the launcher is still the parent (it may have died before prctl), and a watcher thread
    that polls the parent pid where there is no PDEATHSIG: on losing the parent it sends itself SIGTERM,
    and ends the process if that has not worked within ``GRACE_S``.

Torch-free and rclpy-free; the node module imports rclpy itself.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
GRACE_S = 5.0
"""after losing the launcher, how long a node may take to shut down cleanly before it is ended [s]"""
POLL_S = 0.5
"""how often the watcher checks the parent pid [s]"""


def die_with_parent(parent_pid: int) -> bool:
    """Arrange for this process to end when ``parent_pid`` does; returns False if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still covers it
    if os.getppid() != parent_pid:
        return False

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="tether-parent-watch", daemon=True).start()
    return True


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: python -m tether_deploy.child PARENT_PID MODULE [ARGS...]\n")
        sys.exit(2)
    parent_pid, module, rest = int(argv[0]), argv[1], argv[2:]
    if not die_with_parent(parent_pid):
        sys.stderr.write(f"launcher (pid {parent_pid}) is gone; not starting {module}\n")
        sys.exit(1)
    sys.argv = [module] + rest
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
