"""Keyboard teleop: a terminal stands in for a gamepad and publishes sensor_msgs/Joy (joy package layout).

On a robot, the ``joy`` package's joy_node publishes the real gamepad on ``joy`` instead; the runner
maps sticks to the policy's action space (teleop_map.py) and arbitrates (arbitration.py).

Terminals report key presses, not releases: a key counts as held while its auto-repeat keeps coming,
i.e. for ``hold_timeout_s`` after the last repeat (longer than the usual 250-600 ms repeat delay).
Keys: space = deadman (hold to intervene), w/s throttle, a/d yaw, i/k pitch, j/l roll, e = e-stop,
q = quit. The Joy stream keeps publishing at ``rate_hz`` while the terminal runs; when it stops (the
terminal closes) the runner treats it as teleop loss.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Joy

from tether_deploy import qos

# key -> (axis index, value) in the joy package's Xbox layout: 0 left x, 1 left y, 3 right x, 4 right y
AXIS_KEYS = {"w": (1, 1.0), "s": (1, -1.0), "a": (0, 1.0), "d": (0, -1.0),
             "i": (4, 1.0), "k": (4, -1.0), "j": (3, 1.0), "l": (3, -1.0)}
BUTTON_KEYS = {" ": 4, "e": 1}
N_AXES, N_BUTTONS = 8, 11
HELP = ("keyboard teleop: hold SPACE to intervene | w/s throttle  a/d yaw  i/k pitch  j/l roll | "
        "e e-stop | q quit")


class KeyboardTeleop(Node):
    def __init__(self, **kwargs):
        super().__init__("keyboard_teleop", **kwargs)
        self.declare_parameter("rate_hz", 20.0)
        self.declare_parameter("hold_timeout_s", 0.7)
        self.declare_parameter("stick_value", 0.6)
        self.hold_timeout_s = float(self.get_parameter("hold_timeout_s").value)
        self.stick = float(self.get_parameter("stick_value").value)
        self._pub = self.create_publisher(Joy, qos.JOY, qos.SENSOR_DATA)
        self._last_seen: dict[str, float] = {}
        self.quit = False
        self.create_timer(1.0 / float(self.get_parameter("rate_hz").value), self._on_timer)

    def key(self, ch: str) -> None:
        if ch == "q":
            self.quit = True
        self._last_seen[ch.lower()] = time.monotonic()

    def joy_message(self, now: float) -> Joy:
        held = {k for k, t in self._last_seen.items() if now - t <= self.hold_timeout_s}
        axes = [0.0] * N_AXES
        for k in held & AXIS_KEYS.keys():
            i, v = AXIS_KEYS[k]
            axes[i] = v * self.stick
        buttons = [0] * N_BUTTONS
        for k in held & BUTTON_KEYS.keys():
            buttons[BUTTON_KEYS[k]] = 1
        msg = Joy(axes=axes, buttons=buttons)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def _on_timer(self) -> None:
        self._pub.publish(self.joy_message(time.monotonic()))


def main(args=None) -> None:
    if not sys.stdin.isatty():
        sys.stderr.write("keyboard_teleop needs an interactive terminal (stdin is not a TTY)\n")
        sys.exit(2)
    rclpy.init(args=args)
    node = KeyboardTeleop()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    node.get_logger().info(HELP)
    try:
        tty.setcbreak(fd)
        while rclpy.ok() and not node.quit:
            rclpy.spin_once(node, timeout_sec=0.0)
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                for ch in os.read(fd, 32).decode(errors="ignore"):
                    node.key(ch)
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
