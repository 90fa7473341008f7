"""Keyboard teleop: a terminal stands in for a gamepad and publishes sensor_msgs/Joy (joy package layout).

On a robot, the ``joy`` package's joy_node publishes the real gamepad on ``joy`` instead; the runner
maps sticks to the policy's action space (teleop_map.py) and arbitrates (arbitration.py). The key
handling is a pure step in keyboard_core.py; this node reads the terminal, publishes the samples at
``rate_hz`` and calls the runner's ``runner/reset_estop`` service when r is pressed. When the Joy stream
stops (the terminal closes) while the deadman is held, the runner treats it as teleop loss.

Run: ``tether deploy --teleop keyboard ...`` (this terminal becomes the gamepad), or alone next to a
running stack: ``python -m tether_deploy.keyboard_teleop`` (``--help`` prints the keys).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

from tether_deploy.keyboard_core import KEYS_HELP, KeyboardTeleopCore

__doc__ += "\n" + KEYS_HELP + "\n"

USAGE = ("usage: python -m tether_deploy.keyboard_teleop [--ros-args -p rate_hz:=20.0 ...]\n\n"
         "Keyboard teleop: this terminal becomes the gamepad (sensor_msgs/Joy on `joy`).\n\n" + KEYS_HELP + "\n")


def _make_node_class():
    """The node class, built on first use so that --help and the TTY check need no rclpy."""
    from rclpy.node import Node
    from sensor_msgs.msg import Joy
    from std_srvs.srv import Trigger

    from tether_deploy import qos

    class KeyboardTeleop(Node):
        def __init__(self, **kwargs):
            super().__init__("keyboard_teleop", **kwargs)
            from tether_deploy.params import declare_node_params

            self.params = declare_node_params(self, "keyboard_teleop")  # every parameter, from params.py
            self.core = KeyboardTeleopCore(self.params.cfg)
            self._pub = self.create_publisher(Joy, qos.JOY, qos.SENSOR_DATA)
            self._reset = self.create_client(Trigger, qos.RESET_ESTOP)
            self.create_timer(1.0 / self.params.rate_hz, self._on_timer)

        @property
        def quit(self) -> bool:
            return self.core.quit

        def key(self, ch: str) -> None:
            estop_before = self.core.estop_latched
            for note in self.core.key(ch, time.monotonic()):
                self._say(note)
            if self.core.estop_latched and not estop_before:
                self.publish_now()  # an e-stop does not wait for the next timer tick

        def publish_now(self) -> None:
            s = self.core.sample(time.monotonic())
            for note in s.notes:
                self._say(note)
            msg = Joy(axes=list(s.axes), buttons=list(s.buttons))
            msg.header.stamp = self.get_clock().now().to_msg()
            self._pub.publish(msg)
            if s.request_reset:
                self._request_reset()

        def _on_timer(self) -> None:
            self.publish_now()

        def _request_reset(self) -> None:
            if not self._reset.service_is_ready():
                self.get_logger().error(f"no {self._reset.srv_name} service: is the policy runner running and "
                                        "configured (tether lifecycle get)?")
                return
            self._reset.call_async(Trigger.Request()).add_done_callback(self._on_reset_answer)

        def _on_reset_answer(self, future) -> None:
            try:
                answer = future.result()
            except Exception as e:  # the service went away mid-call: say so, keep the teleop running
                self.get_logger().error(f"e-stop reset failed: {e}")
                return
            if answer.success:
                self.get_logger().info(f"runner: {answer.message}")
            else:
                self.get_logger().error(f"runner refused the e-stop reset: {answer.message}")

        def _say(self, note: str) -> None:
            if note.startswith(("E-STOP", "HAND BACK: no key")):
                self.get_logger().warn(note)
            else:
                self.get_logger().info(note)

    return KeyboardTeleop


def main(args=None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in own or "--help" in own:
        sys.stdout.write(USAGE)
        return
    if not sys.stdin.isatty():
        sys.stderr.write("error: keyboard_teleop needs an interactive terminal (stdin is not a TTY); run it in a "
                         "terminal, or fly with a gamepad (joy package)\n")
        sys.exit(2)
    import rclpy

    rclpy.init(args=args)
    node = _make_node_class()()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    node.get_logger().info("keyboard teleop: SPACE takes over / hands back, w/s a/d i/k j/l steer, e e-stop, "
                           "r reset e-stop, h keys, q quit")
    try:
        tty.setcbreak(fd)
        while rclpy.ok() and not node.quit:
            rclpy.spin_once(node, timeout_sec=0.0)
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                data = os.read(fd, 32)
                if not data:  # the terminal closed
                    break
                for ch in data.decode(errors="ignore"):
                    node.key(ch)
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if rclpy.ok():
            node.core.key("q", time.monotonic())
            for _ in range(3):  # released (no deadman, no e-stop button); best effort, so more than once
                node.publish_now()
                time.sleep(0.02)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
