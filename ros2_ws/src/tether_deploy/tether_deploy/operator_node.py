"""Scripted operator node: a stand-in for a person with a gamepad, for tests and demos.

Subscribes state/odom like a pilot watching the vehicle and publishes sensor_msgs/Joy on ``joy`` at
``rate_hz``, exactly as the joy package's gamepad driver would (Xbox layout, deadman held while it
corrects, released otherwise). The decisions (takeover threshold, hand-back hysteresis, its own PID
gains) are in operator_core.py. A pause of the state stream longer than ``new_flight_gap_s`` counts as
a new flight (the operator hands back). People use a real gamepad (joy package) or keyboard_teleop.
"""

from __future__ import annotations

import time

from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Joy

from tether_deploy import qos
from tether_deploy.conversions import odometry_to_quantities
from tether_deploy.operator_core import ScriptedOperator
from tether_deploy.params import declare_node_params
from tether_deploy.spin import spin_node


class OperatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("operator", **kwargs)
        self.params = declare_node_params(self, "operator")  # every parameter, from params.py
        cfg = self.params.cfg
        self.op = ScriptedOperator(cfg)
        self.goal_w = list(self.params.goal_w)
        self.gap_s = self.params.new_flight_gap_s
        self._state = None
        self._state_s = None
        self._engaged = False
        self._pub = self.create_publisher(Joy, qos.JOY, qos.SENSOR_DATA)
        self.create_subscription(Odometry, qos.STATE_ODOM, self._on_state, qos.SENSOR_DATA)
        self.create_timer(1.0 / self.params.rate_hz, self._on_timer)
        self.get_logger().info(f"scripted operator: takes over beyond {cfg.takeover_m * 100:.1f} cm, hands back "
                               f"below {cfg.handback_m * 100:.1f} cm for {cfg.handback_hold_s} s")

    def _on_state(self, msg: Odometry) -> None:
        now = time.monotonic()
        if self._state_s is not None and now - self._state_s > self.gap_s:
            self.op.reset_episode()
        self._state, self._state_s = odometry_to_quantities(msg), now

    def _on_timer(self) -> None:
        now = time.monotonic()
        axes, buttons = [0.0] * self.op.cfg.num_axes, [0] * self.op.cfg.num_buttons
        if self._state is not None and now - self._state_s <= self.gap_s:
            q = self._state
            axes, buttons = self.op.step(now, q["pos_w"], q["quat_wxyz"], q["lin_vel_w"], self.goal_w)
        if self.op.engaged != self._engaged:
            self._engaged = self.op.engaged
            self.get_logger().info("takeover" if self._engaged else "hand back")
        msg = Joy(axes=axes, buttons=buttons)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pub.publish(msg)


def main(args=None) -> None:
    spin_node(OperatorNode, args)


if __name__ == "__main__":
    main()
