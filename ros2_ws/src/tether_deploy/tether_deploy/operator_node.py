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
from tether_deploy.operator_core import OperatorCfg, ScriptedOperator
from tether_deploy.teleop_map import declare_joy_parameters, joy_mapping_from_parameters
from tether_deploy.spin import spin_node


class OperatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("operator", **kwargs)
        d = OperatorCfg()
        self.declare_parameter("rate_hz", 50.0)
        self.declare_parameter("goal_w", [0.0, 0.0, 1.0])
        self.declare_parameter("new_flight_gap_s", 0.5)
        floats = ("takeover_m", "reaction_s", "handback_m", "handback_speed_m_s", "handback_hold_s", "kp_pos", "kd_pos",
                  "ki_pos", "k_tilt", "ki_tilt", "k_yaw", "max_tilt_rad")
        for f in floats:
            self.declare_parameter(f, getattr(d, f))
        self.declare_parameter("full_stick_rate_rad_s", list(d.full_stick_rate_rad_s))
        declare_joy_parameters(self)
        p = lambda n: self.get_parameter(n).value  # noqa: E731
        cfg = OperatorCfg(**{f: float(p(f)) for f in floats}, joy=joy_mapping_from_parameters(self),
                          full_stick_rate_rad_s=tuple(float(x) for x in p("full_stick_rate_rad_s")))
        self.op = ScriptedOperator(cfg)
        self.goal_w = [float(x) for x in p("goal_w")]
        self.gap_s = float(p("new_flight_gap_s"))
        self._state = None
        self._state_s = None
        self._engaged = False
        self._pub = self.create_publisher(Joy, qos.JOY, qos.SENSOR_DATA)
        self.create_subscription(Odometry, qos.STATE_ODOM, self._on_state, qos.SENSOR_DATA)
        self.create_timer(1.0 / float(p("rate_hz")), self._on_timer)
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
