"""Every QoS profile of the deploy side, named once (ros2/demos style), and the topic names.

  * sensor data (state, IMU, joystick): best effort, keep last few. A best-effort subscriber matches a
    reliable publisher too (the joy package publishes reliable), the reverse would not match.
  * commands: reliable, keep last 1: only the newest command matters, a queued old one is dangerous.
    The command publisher offers a deadline of a few control periods so a subscriber (the robot
    adapter) is told by DDS when the runner stops producing.
  * latched status (active policy, mode): reliable + transient local, depth 1, so a late joiner sees it.
  * diagnostics: reliable, keep last 10 (the ROS diagnostics convention).
"""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Topic names (relative: a namespace per vehicle works unchanged).
STATE_ODOM = "state/odom"
STATE_IMU = "state/imu"
JOY = "joy"
ESTOP = "estop"
GOAL = "goal"
POLICY_ACTION = "cmd/policy"
HUMAN_ACTION = "cmd/human"
EXECUTED_ACTION = "cmd/executed"
INTERVENTION = "intervention"
DIAGNOSTICS = "/diagnostics"
RUNNER_MODE = "runner/mode"
ACTIVE_POLICY = "runner/active_policy"
RUNNER_GOAL = "runner/goal"  # the goal the runner flies to (latched): logs carry it
POS_ERR_INT = "runner/pos_err_int"  # the position-error integral the policy was fed (policies with integral action)
TWIN_CRASHED = "twin/crashed"  # std_msgs/String, latched: why the twin crashed (published once, on impact)
LOAD_POLICY = "runner/load_policy"
RESET_ESTOP = "runner/reset_estop"

SENSOR_DATA = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)

COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

DIAGNOSTICS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

RECORDER_RELIABLE = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
"""The recorder subscribes reliable streams with a deep queue: it must not drop what it can keep."""

RECORDER_BEST_EFFORT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def command_with_deadline(period_s: float, periods: float) -> QoSProfile:
    """COMMAND plus a DDS deadline of ``periods`` control periods (the watchdog's budget)."""
    ns = max(1, int(round(period_s * periods * 1e9)))
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1,
        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
        deadline=Duration(nanoseconds=ns))


def state_with_deadline(period_s: float, periods: float) -> QoSProfile:
    """SENSOR_DATA plus a DDS deadline (the runner's subscription is told when state stops)."""
    ns = max(1, int(round(period_s * periods * 1e9)))
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=5,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
        deadline=Duration(nanoseconds=ns))


def qos_to_rosbag2_yaml(qos: QoSProfile) -> str:
    """The ``offered_qos_profiles`` string rosbag2 stores in channel metadata (Jazzy layout)."""
    def dur(d: Duration | None) -> str:
        ns = 0 if d is None else d.nanoseconds
        if ns == 0:
            return "    sec: 2147483647\n    nsec: 4294967295\n"  # rmw's 'infinite'
        return f"    sec: {ns // 1_000_000_000}\n    nsec: {ns % 1_000_000_000}\n"

    return (
        f"- history: {qos.history.name.lower()}\n  depth: {qos.depth}\n"
        f"  reliability: {qos.reliability.name.lower()}\n  durability: {qos.durability.name.lower()}\n"
        f"  deadline:\n{dur(qos.deadline)}  lifespan:\n{dur(qos.lifespan)}"
        f"  liveliness: {qos.liveliness.name.lower()}\n  liveliness_lease_duration:\n{dur(qos.liveliness_lease_duration)}"
        f"  avoid_ros_namespace_conventions: false\n")
