"""The one entry point every node's main() uses: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], args=None, on_exit: Callable[[Node], None] | None = None) -> None:
    rclpy.init(args=args)
    node = make_node()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if on_exit is not None:
            on_exit(node)  # e.g. the recorder closes its file before the node goes
        node.destroy_node()
        rclpy.try_shutdown()
