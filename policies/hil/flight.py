"""Corrected flights on the digital twin in one process, faster than real time, logged like the ROS stack.

The same parts as a deployment, called directly instead of over DDS: hardware.twin.DigitalTwin (the
perturbed vehicle), the runner's decision logic (tether_deploy.runner_core.RunnerCore: observation by
the contract, arbitration, limits), the gamepad mapping (teleop_map.StickMapper) and the scripted
operator (operator_core.ScriptedOperator). Each tick's messages are serialized to CDR and written with
the recorder's BagWriter, on the same topics and types, so policies.hil.dataset reads these logs and
the recorder's alike. The ROS backend of loop.py flies the real node processes instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hardware.twin import DigitalTwin, TwinConfig


@dataclasses.dataclass(frozen=True)
class EpisodeCfg:
    settle_s: float = 1.0
    """time allowed to settle before the hold window [s]"""
    hold_s: float = 10.0
    """hold window: success needs |goal - pos| < tol_m throughout it, with no intervention [s]"""
    tol_m: float = 0.05
    """hold tolerance [m]"""
    goal_w: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """hover goal [m] (the runner's goal_w parameter)"""
    init_offset_m: float = 0.02
    """start position: uniform in a cube of this half-size around the goal [m]"""
    init_vel_m_s: float = 0.02
    """start velocity: uniform in a cube of this half-size [m/s]"""

    @property
    def duration_s(self) -> float:
        return self.settle_s + self.hold_s


def episode_success(t_s: np.ndarray, pos_err_m: np.ndarray, intervention: np.ndarray, cfg: EpisodeCfg) -> bool:
    """Held within tol_m through the hold window, with no intervention during the episode."""
    hold = t_s >= t_s[0] + cfg.settle_s
    covered = t_s[-1] - t_s[0] >= cfg.duration_s - 0.1
    return bool(covered and not np.any(intervention) and np.all(pos_err_m[hold] < cfg.tol_m))


def episode_starts(n: int, cfg: EpisodeCfg, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    goal = np.asarray(cfg.goal_w, dtype=np.float64)
    return [{"pos_w": goal + rng.uniform(-cfg.init_offset_m, cfg.init_offset_m, 3),
             "lin_vel_w": rng.uniform(-cfg.init_vel_m_s, cfg.init_vel_m_s, 3)} for _ in range(n)]


class _Log:
    """The recorder's topics, CDR-serialized into a BagWriter (rclpy.serialization needs no running node)."""

    def __init__(self, bag_dir: Path, images=()):
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401  (types resolved by the recorder table)
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import Joy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, String
        from rclpy.serialization import serialize_message

        from tether_deploy import qos
        from tether_deploy.bag import BagWriter

        self.ser = serialize_message
        from geometry_msgs.msg import PointStamped, Vector3Stamped

        self.msg = {"odom": Odometry, "joy": Joy, "bool": Bool, "command": JointState, "string": String,
                    "point": PointStamped, "vector": Vector3Stamped}
        self.bag = BagWriter(bag_dir, chunk_interval_s=1e9)
        self.topics = {"odom": "/" + qos.STATE_ODOM, "joy": "/" + qos.JOY, "policy": "/" + qos.POLICY_ACTION,
                       "human": "/" + qos.HUMAN_ACTION, "executed": "/" + qos.EXECUTED_ACTION,
                       "flag": "/" + qos.INTERVENTION, "mode": "/" + qos.RUNNER_MODE,
                       "active": "/" + qos.ACTIVE_POLICY, "goal": "/" + qos.RUNNER_GOAL,
                       "pos_err_int": "/" + qos.POS_ERR_INT}
        types = {"odom": Odometry, "joy": Joy, "policy": JointState, "human": JointState,
                 "executed": JointState, "flag": Bool, "mode": String, "active": String, "goal": PointStamped,
                 "pos_err_int": Vector3Stamped}
        offered = {"odom": qos.SENSOR_DATA, "joy": qos.SENSOR_DATA, "mode": qos.LATCHED, "active": qos.LATCHED,
                   "goal": qos.LATCHED}
        for key, topic in self.topics.items():
            self.bag.add_topic(topic, types[key], qos.qos_to_rosbag2_yaml(offered.get(key, qos.COMMAND)))
        from sensor_msgs.msg import Image

        self.images = {im.name: im for im in images}  # tether.contract.ImageInput, logged as the camera publishes
        for im in images:
            self.topics["image:" + im.name] = "/" + im.topic.lstrip("/")
            self.bag.add_topic(self.topics["image:" + im.name], Image, qos.qos_to_rosbag2_yaml(qos.SENSOR_DATA))
        self.msg["image"] = Image

    def write(self, key: str, t_ns: int, msg) -> None:
        self.bag.write(self.topics[key], t_ns, self.ser(msg))

    def command(self, key: str, t_ns: int, values, names: list[str]) -> None:
        """A command as the runner publishes it (stamped at the tick, named by the contract)."""
        from tether_deploy.conversions import fill_command
        from tether_deploy.interface import BODY_FRAME

        msg = self.msg["command"]()
        fill_command(msg, names, values, BODY_FRAME)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 10**9)
        self.write(key, t_ns, msg)

    def vector(self, key: str, t_ns: int, xyz) -> None:
        """A geometry_msgs/Vector3Stamped in the world frame, stamped t_ns (the runner's pos_err_int)."""
        from tether_deploy.interface import WORLD_FRAME

        msg = self.msg["vector"]()
        msg.header.frame_id = WORLD_FRAME
        msg.vector.x, msg.vector.y, msg.vector.z = (float(v) for v in xyz)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 10**9)
        self.write(key, t_ns, msg)

    def image(self, name: str, t_ns: int, depth_m: np.ndarray) -> None:
        """A depth image of input ``name`` ([H, W] m, REP 117 specials) in its encoding, stamped t_ns."""
        from tether_deploy.conversions import fill_depth_image

        msg = self.msg["image"]()
        fill_depth_image(msg, depth_m, self.images[name].encoding)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 10**9)
        self.write("image:" + name, t_ns, msg)

    def close(self) -> None:
        self.bag.close()


def fly_corrected_episode(policy, policy_dir: str, twin_cfg: TwinConfig, operator, start: dict[str, np.ndarray],
                          cfg: EpisodeCfg, bag_dir: Path | None = None, t0_ns: int = 1_700_000_000 * 10**9,
                          joy_mapping=None) -> dict[str, np.ndarray]:
    """Fly one episode of ``cfg.duration_s`` under the policy with the operator watching.

    policy: a loaded tether.runtime.OnnxPolicy (its contract drives everything). Writes the log into
    ``bag_dir`` (a new directory) when given. Returns t_s, pos_err_m, intervention [T] per control tick.
    """
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Bool, String

    from tether_deploy.actuation import ActionToCommand
    from tether_deploy.arbitration import HumanInput
    from tether_deploy.conversions import command_names, fill_odometry, fill_point_stamped, odometry_to_quantities
    from tether_deploy.runner_core import RunnerConfig, RunnerCore
    from tether_deploy.teleop_map import JoyMapping, StickMapper

    contract = policy.contract
    names = command_names(contract.action)
    goal = np.asarray(cfg.goal_w, dtype=np.float64)
    core = RunnerCore(policy, RunnerConfig(goal_w=tuple(cfg.goal_w), max_state_age_periods=10.0))
    mapper = StickMapper(contract.action, joy_mapping or JoyMapping())
    twin = DigitalTwin(twin_cfg)
    to_command = ActionToCommand(contract.action, twin.preset.rotor_pos_b, twin.preset.rotor_spin)
    period = 1.0 / contract.control_rate_hz
    advances = max(1, int(round(twin_cfg.rate_hz * period)))
    steps = int(round(cfg.duration_s / period))
    log = _Log(bag_dir) if bag_dir is not None else None
    operator.reset_episode()
    out_t, out_err, out_flag = np.zeros(steps), np.zeros(steps), np.zeros(steps, dtype=bool)
    odom = Odometry()
    odom.header.frame_id, odom.child_frame_id = "world", "base_link"
    mode = None
    twin.connect()
    try:
        twin.reset(pos_w=start["pos_w"], lin_vel_w=start["lin_vel_w"])
        if log is not None:
            sha = contract.provenance["onnx_sha256"]
            log.write("active", t0_ns, String(data=f"active {sha} {policy_dir}"))
            goal_msg = log.msg["point"]()
            fill_point_stamped(goal_msg, goal)
            log.write("goal", t0_ns, goal_msg)
        for k in range(steps):
            t = k * period
            t_ns = t0_ns + int(round(t * 1e9))
            s = twin.read()
            fill_odometry(odom, s.pos_w, s.quat_wxyz, s.lin_vel_w, s.ang_vel_b)
            odom.header.stamp.sec, odom.header.stamp.nanosec = divmod(t_ns, 10**9)
            core.set_state(odometry_to_quantities(odom), t)
            axes, buttons = operator.step(t, s.pos_w, s.quat_wxyz, s.lin_vel_w, goal)
            action, deadman, _ = mapper(axes, buttons)
            r = core.tick(t, HumanInput(action, deadman, t), False)
            twin.send(to_command(r.executed))
            if log is not None:
                log.write("odom", t_ns, odom)
                log.write("joy", t_ns + 500, Joy(axes=axes, buttons=buttons))
                if r.policy_action is not None:
                    log.command("policy", t_ns + 1000, r.policy_action, names)
                if r.human_action is not None:
                    log.command("human", t_ns + 1000, r.human_action, names)
                log.command("executed", t_ns + 1000, r.executed, names)
                if r.pos_err_int_w is not None:  # as the runner node publishes it, stamped at the tick
                    log.vector("pos_err_int", t_ns + 1000, r.pos_err_int_w)
                log.write("flag", t_ns + 1000, Bool(data=bool(r.intervention)))
                key = r.mode.split(" (", 1)[0]
                if key != mode:
                    log.write("mode", t_ns + 1000, String(data=r.mode))
            mode = r.mode.split(" (", 1)[0]
            true = twin.true_state()
            out_t[k], out_err[k], out_flag[k] = t, np.linalg.norm(goal - true.pos_w), r.intervention
            for _ in range(advances):
                twin.advance()
    finally:
        twin.disconnect()
        if log is not None:
            log.close()
    return {"t_s": out_t, "pos_err_m": out_err, "intervention": out_flag}
