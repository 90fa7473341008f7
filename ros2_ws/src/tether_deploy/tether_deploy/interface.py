"""The ROS interface of every node, declared once: topic, type, QoS, frame, rate and meaning.

The nodes create their publishers and subscriptions from these tables (``Topic.msg_class``,
``Topic.profile``), the recorder takes its topic types from them, docs/ROS_INTERFACE.md is generated
from them (``python -m tether_deploy.interface_doc``), and tests/ros2 compare them with the graph of
the running nodes, so the documentation cannot drift from the code.

Commands (``cmd/policy``, ``cmd/human``, ``cmd/executed``) are ``sensor_msgs/msg/JointState``: the only
standard message with a header and named values (the ros-jazzy wheels cannot build an interface package:
no rosidl generator). ``header.stamp`` is the runner's clock at the tick, ``header.frame_id`` the body
frame the command acts in, ``name[i]`` the contract's output name with the unit suffix ``_norm``
(``collective_thrust_norm``, ``body_rate_x_norm``, ... or ``rotor_0_speed_norm``, ...), ``position[i]``
the normalized value in [-1, 1]; velocity and effort are empty. The physical meaning of each name is the
contract's (tether.contract.ActionSpec): the table in the generated document lists it.
"""

from __future__ import annotations

import dataclasses
import importlib

from tether_deploy import qos
from tether_deploy.conversions import COMMAND_UNIT_SUFFIX  # noqa: F401  (part of the interface)

WORLD_FRAME = "world"
"""default frame of poses and goals (REP 105 ``map``/``odom`` role)"""
BODY_FRAME = "base_link"
"""default body frame: Odometry.child_frame_id (its twist), IMU, commands"""


@dataclasses.dataclass(frozen=True)
class Topic:
    """One topic a node publishes or subscribes (or a service it offers)."""

    name: str
    """relative topic name (a namespace per vehicle works unchanged); '/...' is absolute"""
    type: str
    """ROS type, e.g. 'nav_msgs/msg/Odometry' (a service: 'std_srvs/srv/Trigger')"""
    qos: str
    """name of the QoS profile in tether_deploy.qos ('' for a service)"""
    frame: str
    """frame of the data ('-' for none)"""
    rate: str
    """when it is sent"""
    meaning: str
    """what it says"""
    deadline: str = ""
    """a DDS deadline offered on top of ``qos``: the parameter that sets it, in control periods"""

    @property
    def msg_class(self):
        pkg, kind, name = self.type.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)

    @property
    def profile(self):
        return getattr(qos, self.qos)


@dataclasses.dataclass(frozen=True)
class NodeInterface:
    node: str
    """node name"""
    module: str
    """tether_deploy module whose main() runs it"""
    summary: str
    subscribes: tuple[Topic, ...] = ()
    publishes: tuple[Topic, ...] = ()
    services: tuple[Topic, ...] = ()
    clients: tuple[Topic, ...] = ()
    """services it calls"""
    params_key: str = ""
    """key of the node in tether_deploy.params.NODE_PARAMS ('' = none)"""
    image_subscribes: tuple[Topic, ...] = ()
    """subscribed only with a policy that has image inputs: one of each per ``contract.images`` entry,
    named by it (the names here are the default camera's)"""
    image_publishes: tuple[Topic, ...] = ()
    """published only with a policy that has image inputs (the twin's camera), as image_subscribes"""

    def topic(self, name: str) -> Topic:
        for t in self.subscribes + self.publishes + self.services + self.clients + self.image_subscribes + \
                self.image_publishes:
            if t.name == name:
                return t
        raise KeyError(f"{self.node} has no topic {name!r}")


_TICK = "one per tick (the contract's control_rate_hz)"
_CMD = "sensor_msgs/msg/JointState"
_CMD_MEANING = ("names = the contract's outputs + '_norm', position = normalized [-1, 1], "
                "header.stamp = the tick")

STATE_ODOM = Topic(qos.STATE_ODOM, "nav_msgs/msg/Odometry", "SENSOR_DATA", "world / base_link",
                   "the robot's state rate (twin: rate_hz)",
                   "the vehicle state: pose in header.frame_id (world), twist in child_frame_id (body), REP 105")
STATE_IMU = Topic(qos.STATE_IMU, "sensor_msgs/msg/Imu", "SENSOR_DATA", "base_link", "with state/odom",
                  "orientation, gyro and specific force (accelerometer) in the body frame")
JOY = Topic(qos.JOY, "sensor_msgs/msg/Joy", "SENSOR_DATA", "-", "the gamepad's rate (about 20-50 Hz)",
            "gamepad axes and buttons (joy package layout, mapped by the joy.* parameters)")
EXECUTED = Topic(qos.EXECUTED_ACTION, _CMD, "COMMAND", "base_link", _TICK,
                 "what the robot is sent after arbitration and limits; " + _CMD_MEANING,
                 deadline="command_deadline_periods")
POLICY = Topic(qos.POLICY_ACTION, _CMD, "COMMAND", "base_link", _TICK + ", when the policy ran",
               "what the policy asked for; " + _CMD_MEANING)
HUMAN = Topic(qos.HUMAN_ACTION, _CMD, "COMMAND", "base_link", _TICK + ", when there is teleop input",
              "the person's sticks mapped into the action space; " + _CMD_MEANING)
INTERVENTION = Topic(qos.INTERVENTION, "std_msgs/msg/Bool", "COMMAND", "-", _TICK,
                     "true while a person is (or was, until the safe behaviour took over) in command")
RUNNER_MODE = Topic(qos.RUNNER_MODE, "std_msgs/msg/String", "LATCHED", "-", "on change",
                    "policy | human | safe:<behaviour> (<reason>) | estop | waiting | inactive | unconfigured")
ACTIVE_POLICY = Topic(qos.ACTIVE_POLICY, "std_msgs/msg/String", "LATCHED", "-", "on change",
                      "'active <sha256> <dir>' or 'rejected <dir>: <reason>'")
RUNNER_GOAL = Topic(qos.RUNNER_GOAL, "geometry_msgs/msg/PointStamped", "LATCHED", "world", "on change",
                    "the goal the runner flies to [m]")
POS_ERR_INT = Topic(qos.POS_ERR_INT, "geometry_msgs/msg/Vector3Stamped", "COMMAND", "world",
                    _TICK + ", when the policy ran and its contract observes pos_err_int_b",
                    "the world-frame position-error integral behind that tick's pos_err_int_b [m s] (the runner's "
                    "memory, so that a log replays the observation exactly even when it missed the flight's start)")
DIAGNOSTICS = Topic(qos.DIAGNOSTICS, "diagnostic_msgs/msg/DiagnosticArray", "DIAGNOSTICS_QOS", "-",
                    "diagnostics_rate_hz and on every mode change",
                    "status 'tether/policy_runner': level, mode, state rejections by cause, ticks, latency")
ESTOP = Topic(qos.ESTOP, "std_msgs/msg/Bool", "COMMAND", "-", "any",
              "true latches the e-stop (motors off) until runner/reset_estop")
GOAL = Topic(qos.GOAL, "geometry_msgs/msg/PointStamped", "COMMAND", "world", "any", "a new goal position [m]")
LOAD_POLICY = Topic(qos.LOAD_POLICY, "std_msgs/msg/String", "COMMAND", "-", "any",
                    "a policy directory to verify and hot-swap in between two ticks")
RESET_ESTOP = Topic(qos.RESET_ESTOP, "std_srvs/srv/Trigger", "", "-", "on request",
                    "clears the latched e-stop while no e-stop input is pressed")

DEPTH_IMAGE = Topic("camera/depth/image_rect_raw", "sensor_msgs/msg/Image", "SENSOR_DATA", "camera_depth_optical_frame",
                    "the camera's rate (twin: camera_rate_hz)",
                    "depth image of an image input: the contract's images[].topic, encoding (32FC1 metres or 16UC1 "
                    "millimetres, REP 117 specials), width x height; header.stamp = the exposure")
DEPTH_CAMERA_INFO = Topic("camera/depth/camera_info", "sensor_msgs/msg/CameraInfo", "SENSOR_DATA",
                          "camera_depth_optical_frame", "with each image",
                          "the camera's intrinsics (P), checked against the contract's images[].fx_fy_cx_cy_px; "
                          "the contract's images[].camera_info_topic")

DIAGNOSTIC_VALUES = {
    "mode": "policy | human | safe:<behaviour> | estop | waiting | active | inactive | unconfigured",
    "reason": "why the runner is in that mode (empty for policy and human)",
    "policy": "'active <sha256> <dir>' or 'rejected <dir>: <reason>'",
    "estop_latched": "True while the e-stop is latched",
    "rejected_states": "state messages rejected so far, all causes",
    "rejected_<cause>": "state messages rejected so far for that cause (the state checks' table)",
    "last_rejection": "the latest rejection, naming the message field",
    "state_faults": "state faults so far (each needed good_states_to_recover good messages)",
    "state_recovering": "True while a state fault is in force",
    "policy_swaps": "policies hot-swapped in so far",
    "last_swap_tick_gap_ms": "time from the tick before the last swap to the swap's tick [ms]",
    "ticks": "control ticks so far",
    "missed_ticks": "periods with no tick (gaps over 1.5 control periods)",
    "commands_sent": "cmd/executed messages published",
    "state_to_command_p50_us": "state message in -> command out inside the runner, median of the last 5000 [us]",
    "state_to_command_p99_us": "the same, 99th percentile [us]",
    "image_unusable_ticks": "ticks with a usable state whose policy did not run for want of a usable image",
    "image_<cause>": "those ticks by cause (the image checks' table)",
    "last_image_problem": "the latest image problem, naming the input, its topic and what is wrong",
}
"""the values of the runner's /diagnostics status 'tether/policy_runner' (level: OK flying, WARN while a
state fault is in force or messages were rejected since the last report, ERROR in safe/estop/unconfigured)"""

RUNNER = NodeInterface(
    "policy_runner", "runner_node",
    "Lifecycle node flying an exported policy (policy.onnx + policy.json); arbitration with teleop and e-stop.",
    subscribes=(STATE_ODOM, JOY, ESTOP, GOAL, LOAD_POLICY),
    publishes=(EXECUTED, POLICY, HUMAN, INTERVENTION, RUNNER_MODE, ACTIVE_POLICY, RUNNER_GOAL, POS_ERR_INT,
               DIAGNOSTICS),
    services=(RESET_ESTOP,), params_key="policy_runner",
    image_subscribes=(dataclasses.replace(DEPTH_IMAGE, rate="the camera's rate"),
                      dataclasses.replace(DEPTH_CAMERA_INFO, rate="the camera's rate")))

TWIN = NodeInterface(
    "twin", "twin_node",
    "The pybullet digital twin behind a robot's interface (never on a robot).",
    subscribes=(dataclasses.replace(EXECUTED, deadline="", rate="the runner's ticks",
                                    meaning="the command to execute (names checked against the contract)"),
                dataclasses.replace(RUNNER_MODE, meaning="with release_on_runner_flying: the twin stays on its stand "
                                                         "until the mode is policy or human")),
    publishes=(STATE_ODOM, STATE_IMU,
               Topic(qos.TWIN_CRASHED, "std_msgs/msg/String", "LATCHED", "-", "once, on a crash",
                     "why the twin crashed (impact speed, tilt or an obstacle); motors are stopped")),
    params_key="twin",
    image_publishes=(dataclasses.replace(DEPTH_IMAGE, rate="camera_rate_hz (0: no camera)",
                                         meaning="pybullet's own render (TinyRenderer) of the obstacle world from the "
                                                 "contract's mount and intrinsics, 32FC1 or 16UC1 as the contract "
                                                 "says, REP 117 specials (+inf beyond max_range_m, -inf nearer than "
                                                 "min_range_m); header.stamp = the sim state it shows"),
                     dataclasses.replace(DEPTH_CAMERA_INFO, meaning="the contract's intrinsics, as a camera driver "
                                                                    "publishes its calibration")))

_ROBOT_SERVICES = {
    "arm": "check the arming conditions (level, still, inside the geofence, battery, every image input of the "
           "contract usable; a failure names why), then "
           "run the adapter's arming sequence in the background (PX4: ~1 s of setpoints first): robot/armed turns "
           "true, a refusal is logged",
    "disarm": "disarm (vehicles without an arming step: motors off)",
    "land": "land now (the adapter's land(); commands refused until robot/reset_safety)",
    "estop": "motors off now (safe_stop; commands refused until robot/reset_safety)",
    "reset_safety": "clear the latched land/stop verdict once the vehicle is safe; disarmed afterwards",
}
STATE_BATTERY = Topic("state/battery", "sensor_msgs/msg/BatteryState", "SENSOR_DATA", "-",
                      "battery_rate_hz, when the adapter measures its battery", "battery voltage [V] (percentage NaN)")
ROBOT_SENT = Topic("robot/sent", _CMD, "COMMAND", "base_link", "one per command sent",
                   "the command the adapter actually sent, after the safety layer's and its own clipping; "
                   + _CMD_MEANING + " (the stamp of the cmd/executed it answers)")
ROBOT_SAFETY = Topic("robot/safety", "std_msgs/msg/String", "LATCHED", "-", "on change",
                     "the safety layer's latched verdict: ok | land: <reason> | stop: <reason>")
ROBOT_ARMED = Topic("robot/armed", "std_msgs/msg/Bool", "LATCHED", "-", "on change", "true while armed")

BRIDGE = NodeInterface(
    "robot_bridge", "bridge_node",
    "Any registered Robot adapter (parameter adapter: twin, crazyflie, px4, ardupilot, arm) behind the twin's "
    "interface, under the shared safety layer (hardware/safety.py): geofence, tilt, rate, battery, stale state.",
    subscribes=(dataclasses.replace(EXECUTED, deadline="", rate="the runner's ticks",
                                    meaning="the command to execute (names checked against the contract)"),),
    publishes=(STATE_ODOM, STATE_IMU, STATE_BATTERY, ROBOT_SENT, ROBOT_SAFETY, ROBOT_ARMED),
    services=tuple(Topic(f"robot/{name}", "std_srvs/srv/Trigger", "", "-", "on request", meaning)
                   for name, meaning in _ROBOT_SERVICES.items()),
    params_key="robot_bridge",
    image_subscribes=tuple(dataclasses.replace(t, rate="the camera driver's rate",
                                               meaning="watched with the runner's checks (image_core.CameraGate): "
                                                       "robot/arm is refused while an image input is unusable")
                           for t in (DEPTH_IMAGE, DEPTH_CAMERA_INFO)))

OPERATOR = NodeInterface(
    "operator", "operator_node",
    "Scripted stand-in for a person with a gamepad (tests, demo).",
    subscribes=(STATE_ODOM,), publishes=(dataclasses.replace(JOY, rate="rate_hz"),), params_key="operator")

KEYBOARD_TELEOP = NodeInterface(
    "keyboard_teleop", "keyboard_teleop",
    "The keyboard as a gamepad (sensor_msgs/Joy), for a person at a terminal.",
    publishes=(dataclasses.replace(JOY, rate="rate_hz"),), clients=(RESET_ESTOP,), params_key="keyboard_teleop")

def recorder_subscription_qos(offered: Topic) -> str:
    """The recorder's QoS for a topic: latched stays latched (a late joiner gets the last value),
    others get a deep queue of the offered reliability (it must not drop what it can keep)."""
    if offered.qos == "LATCHED":
        return "LATCHED"
    return "RECORDER_BEST_EFFORT" if offered.qos == "SENSOR_DATA" else "RECORDER_RELIABLE"


def recordable() -> dict[str, tuple[Topic, str]]:
    """topic -> (the publisher's entry, the recorder's QoS profile name): every topic a node of this
    package publishes (the recorder's default ``topics``)."""
    out = {}
    for node in (RUNNER, TWIN, BRIDGE, OPERATOR, KEYBOARD_TELEOP):
        for t in node.publishes + node.image_publishes:
            out.setdefault(t.name, (t, recorder_subscription_qos(t)))
    return out


RECORDER = NodeInterface(
    "recorder", "recorder_node",
    "The intervention log: every recorded topic as raw CDR into a rosbag2-layout MCAP that survives SIGKILL.",
    subscribes=tuple(dataclasses.replace(t, qos=sub_qos, deadline="", rate="as published")
                     for t, sub_qos in recordable().values()),
    params_key="recorder")

NODES = (RUNNER, TWIN, BRIDGE, RECORDER, OPERATOR, KEYBOARD_TELEOP)
