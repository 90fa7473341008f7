"""The one entry point every node's main() uses: init, spin until Ctrl-C or shutdown, clean up.

Exit status: 0 after SIGINT / SIGTERM / an external shutdown, whatever the node was doing at that moment;
2 with one ``error:`` line when rcl refuses the arguments or the node refuses its parameters at
construction (ValueError, OSError: nothing was started); a traceback and 1 only for a real failure while ROS was still running.

Why the races need handling: rclpy's signal handler shuts the context down while a callback may be
running, so that callback (a timer publishing, a subscription creating a message) can raise an RCLError
("context is invalid", "publisher's context is not valid") instead of the executor raising
ExternalShutdownException; and destroying a node after the context is gone can raise as well. Once the
context is shut down, such an exception is the shutdown, not a failure.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def _shutting_down() -> bool:
    try:
        return not rclpy.ok()
    except Exception:  # noqa: BLE001  (rclpy raises its own types when the context is half torn down)
        return True


def _shutdown_follows(wait_s: float = 1.0) -> bool:
    """True if the context is shut down now or within ``wait_s``: a stop signal that lands while rclpy is
    inside pybind11 (taking a message) surfaces there as a RuntimeError ("Unable to convert call
    argument") a moment BEFORE the signal handler has shut the context down."""
    deadline = time.monotonic() + wait_s
    while not _shutting_down():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def spin_node(make_node: Callable[[], Node], args=None, on_exit: Callable[[Node], None] | None = None) -> None:
    try:
        rclpy.init(args=args)
    except Exception as e:  # noqa: BLE001  rcl refuses malformed --ros-args with its own RCLError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    node = None
    try:
        try:
            node = make_node()
        except (ValueError, OSError) as e:
            if _shutting_down():
                return
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not _shutdown_follows():
            raise
    finally:
        # a second Ctrl-C (a launcher, an impatient person) must not break the clean-up half way
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if node is not None and on_exit is not None:
                on_exit(node)  # e.g. the recorder closes its file before the node goes
        finally:
            if node is not None:
                try:
                    node.destroy_node()
                except Exception:
                    if not _shutting_down():
                        raise
            rclpy.try_shutdown()
