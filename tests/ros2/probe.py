"""A test-side node that watches the runner's outputs and can play robot or gamepad."""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String

from tether_deploy import qos
from tether_deploy.conversions import fill_odometry


class Probe(Node):
    def __init__(self, context):
        super().__init__("probe", context=context)
        self.t0 = time.monotonic()
        self.executed: list[tuple[float, np.ndarray]] = []
        self.policy: list[tuple[float, np.ndarray]] = []
        self.human: list[tuple[float, np.ndarray]] = []
        self.flags: list[tuple[float, bool]] = []
        self.modes: list[tuple[float, str]] = []
        self.status: list[tuple[float, str]] = []
        self.states: list[tuple[float, np.ndarray]] = []
        self.diagnostics: list[tuple[float, dict]] = []
        self.command_msgs: list[JointState] = []  # the last few executed commands as received
        sub = self.create_subscription
        sub(JointState, qos.EXECUTED_ACTION, self._on_executed, qos.COMMAND)
        sub(JointState, qos.POLICY_ACTION, lambda m: self.policy.append(self._v(m)), qos.COMMAND)
        sub(JointState, qos.HUMAN_ACTION, lambda m: self.human.append(self._v(m)), qos.COMMAND)
        sub(Bool, qos.INTERVENTION, lambda m: self.flags.append((time.monotonic(), m.data)), qos.COMMAND)
        sub(String, qos.RUNNER_MODE, lambda m: self.modes.append((time.monotonic(), m.data)), qos.LATCHED)
        sub(String, qos.ACTIVE_POLICY, lambda m: self.status.append((time.monotonic(), m.data)), qos.LATCHED)
        sub(Odometry, qos.STATE_ODOM, self._on_state, qos.SENSOR_DATA)
        sub(DiagnosticArray, qos.DIAGNOSTICS, self._on_diag, qos.DIAGNOSTICS_QOS)
        self.joy_pub = self.create_publisher(Joy, qos.JOY, qos.SENSOR_DATA)
        self.state_pub = self.create_publisher(Odometry, qos.STATE_ODOM, qos.SENSOR_DATA)
        self.load_pub = self.create_publisher(String, qos.LOAD_POLICY, qos.COMMAND)
        self._ex = SingleThreadedExecutor(context=context)
        self._ex.add_node(self)

    @staticmethod
    def _v(m) -> tuple[float, np.ndarray]:
        return time.monotonic(), np.asarray(m.position, dtype=np.float32)

    def _on_executed(self, m: JointState) -> None:
        self.executed.append(self._v(m))
        self.command_msgs = self.command_msgs[-9:] + [m]

    def _on_state(self, m: Odometry) -> None:
        p = m.pose.pose.position
        self.states.append((time.monotonic(), np.array([p.x, p.y, p.z])))

    def _on_diag(self, m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name == "tether/policy_runner":
                self.diagnostics.append((time.monotonic(), {kv.key: kv.value for kv in st.values} |
                                         {"level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes)
                                          else int(st.level), "message": st.message}))

    def spin_for(self, seconds: float, every=None, period_s: float = 0.0) -> None:
        """Spin; call ``every()`` each period_s (a publisher loop in the test's thread)."""
        end = time.monotonic() + seconds
        next_call = time.monotonic()
        while time.monotonic() < end:
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call += period_s
            self._ex.spin_once(timeout_sec=0.002 if every is not None else 0.02)

    def spin_until(self, pred, timeout_s: float, every=None, period_s: float = 0.0) -> bool:
        end = time.monotonic() + timeout_s
        next_call = time.monotonic()
        while time.monotonic() < end:
            if pred():
                return True
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call += period_s
            self._ex.spin_once(timeout_sec=0.002 if every is not None else 0.02)
        return pred()

    def mode_now(self) -> str:
        return self.modes[-1][1] if self.modes else ""

    def joy(self, axes, buttons) -> None:
        msg = Joy(axes=[float(a) for a in axes], buttons=[int(b) for b in buttons])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.joy_pub.publish(msg)

    def publish_state(self, pos_w, quat_wxyz=(1.0, 0.0, 0.0, 0.0), lin_vel_w=(0.0, 0.0, 0.0),
                      ang_vel_b=(0.0, 0.0, 0.0), frame_id: str = "world", child_frame_id: str = "base_link",
                      stamp_offset_s: float = 0.0, stamp_ns: int | None = None) -> None:
        """One state message; stamped now (+ ``stamp_offset_s``) unless ``stamp_ns`` is given."""
        m = Odometry()
        m.header.frame_id, m.child_frame_id = frame_id, child_frame_id
        if stamp_ns is None:
            stamp_ns = self.get_clock().now().nanoseconds + int(stamp_offset_s * 1e9)
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
        if np.all(np.isfinite(quat_wxyz)) and np.linalg.norm(quat_wxyz) > 0:
            fill_odometry(m, pos_w, quat_wxyz, lin_vel_w, ang_vel_b)
        else:  # a broken attitude as a broken estimator sends it: position fine, quaternion not
            p = m.pose.pose.position
            p.x, p.y, p.z = (float(x) for x in pos_w)
            o = m.pose.pose.orientation
            o.w, o.x, o.y, o.z = (float(x) for x in quat_wxyz)
        self.state_pub.publish(m)

    def close(self) -> None:
        self._ex.remove_node(self)
        self._ex.shutdown()
        self.destroy_node()
