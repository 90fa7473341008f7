"""A stand-in ROS 2 arm for CI: a real node process that speaks what a ros2_control arm with MoveIt Servo
speaks, over DDS, with the joint dynamics of sim/standins/arm_model.py.

In (all at once, whichever arrives last drives the arm):
  trajectory_msgs/JointTrajectory on /joint_trajectory_controller/joint_trajectory (joints by name),
  std_msgs/Float64MultiArray on /forward_position_controller/commands and
  /forward_velocity_controller/commands (joint_names order), geometry_msgs/TwistStamped on
  /servo_node/delta_twist_cmds (base frame).
Out: sensor_msgs/JointState on /joint_states at ``rate_hz`` (100 Hz), in a random joint order per message
when ``shuffle`` is set, with an extra joint not in joint_names when ``extra_joint`` is set.

    python -m sim.standins.arm_node --ros-args -p shuffle:=true -p rate_hz:=100.0
"""

from __future__ import annotations

import time

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from hardware.arm import ArmCfg
from hardware.arm_kinematics import DhChain
from sim.standins.arm_model import TrackingArm

EXTRA_JOINT = "gripper_finger_joint"
"""the joint published beside the arm's when ``extra_joint`` is set (an adapter must ignore it)"""


class StandinArm(Node):
    def __init__(self):
        super().__init__("standin_arm")
        defaults = ArmCfg()  # the adapter's defaults: one arm, described once
        p = self.declare_parameter
        names = list(p("joint_names", list(defaults.joint_names)).value)
        q0 = list(p("initial_positions", [0.0, 0.6, 0.6]).value)
        chain = DhChain(tuple(p("dh_a_m", list(defaults.dh_a_m)).value),
                        tuple(p("dh_alpha_rad", list(defaults.dh_alpha_rad)).value),
                        tuple(p("dh_d_m", list(defaults.dh_d_m)).value),
                        tuple(p("dh_theta_rad", list(defaults.dh_theta_rad)).value),
                        tuple(p("joint_kinds", list(defaults.joint_kinds)).value))
        self.arm = TrackingArm(names, q0, tau_s=p("tau_s", 0.05).value, chain=chain,
                               twist_timeout_s=p("twist_timeout_s", 0.1).value)
        self.rate_hz = float(p("rate_hz", 100.0).value)
        self.shuffle = bool(p("shuffle", False).value)
        self.extra_joint = bool(p("extra_joint", False).value)
        self.rng = np.random.default_rng(int(p("seed", 0).value))
        command = QoSProfile(depth=10)
        sub = self.create_subscription
        sub(JointTrajectory, p("trajectory_topic", defaults.trajectory_topic).value, self._on_trajectory, command)
        sub(Float64MultiArray, p("forward_position_topic", defaults.forward_position_topic).value,
            lambda m: self._apply(self.arm.forward_position, m.data), command)
        sub(Float64MultiArray, p("forward_velocity_topic", defaults.forward_velocity_topic).value,
            lambda m: self._apply(self.arm.forward_velocity, m.data), command)
        sub(TwistStamped, p("servo_twist_topic", defaults.servo_twist_topic).value, self._on_twist, command)
        self.pub = self.create_publisher(JointState, p("joint_state_topic", defaults.joint_state_topic).value,
                                         QoSProfile(depth=10))
        self.last_s = time.monotonic()
        self.create_timer(1.0 / self.rate_hz, self._tick)

    def _apply(self, fn, *args) -> None:
        try:
            fn(*args)
        except ValueError as e:  # a real controller rejects a malformed command and keeps the last one
            self.get_logger().warning(f"command rejected: {e}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.get_logger().warning("trajectory with no points rejected")
            return
        self._apply(self.arm.trajectory, list(msg.joint_names), list(msg.points[-1].positions))

    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        self._apply(self.arm.servo_twist, (t.linear.x, t.linear.y, t.linear.z),
                    (t.angular.x, t.angular.y, t.angular.z), time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        self.arm.step(min(now - self.last_s, 5.0 / self.rate_hz), now)
        self.last_s = now
        names, q, qd = list(self.arm.names), self.arm.q.tolist(), self.arm.qd.tolist()
        if self.extra_joint:
            names, q, qd = names + [EXTRA_JOINT], q + [0.01], qd + [0.0]
        order = self.rng.permutation(len(names)) if self.shuffle else np.arange(len(names))
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = [names[i] for i in order]
        msg.position = [q[i] for i in order]
        msg.velocity = [qd[i] for i in order]
        self.pub.publish(msg)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = StandinArm()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
