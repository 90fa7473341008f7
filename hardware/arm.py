"""A robot arm over ROS 2 behind the Robot interface: sensor_msgs/JointState in; a single-point
trajectory_msgs/JointTrajectory (joint_trajectory_controller), std_msgs/Float64MultiArray (ros2_control
forward_position / forward_velocity controllers) or geometry_msgs/TwistStamped (MoveIt Servo) out.

Joint-space extension of hardware/robot.py: :class:`ArmState` replaces the quadrotor RobotState, and
three commands replace RotorCommand / CtbrCommand (:class:`JointPositionCommand`,
:class:`JointVelocityCommand`, :class:`EndEffectorTwist`); which one ``send`` takes is the output mode's.

Safety, before anything is published (``send`` returns the command actually sent):
  * joint position limits, and a position step of at most velocity_max * command_horizon_s from the
    measured position (the controller moves there in that time);
  * joint velocity limits, and no velocity that would cross a position limit within
    workspace_lookahead_s;
  * the workspace box of the end effector, when the config gives a kinematic chain (a DH table,
    hardware/arm_kinematics.py): a joint position or velocity command is shortened along its joint-space
    line until the end effector stays inside at the target (and at 8 points on the way); a twist keeps
    no component that leaves the box within workspace_lookahead_s. Without a chain there is no
    end-effector position to check: a workspace box is then refused at construction, and twists are
    limited in speed only (MoveIt Servo's own limits then apply);
  * a JointState stream silent for state_deadline_s is a lost link: the adapter's watchdog (every
    1 / watchdog_rate_hz, in its executor thread) sends the safe command itself at its last check before
    the deadline (hold: a trajectory to / forward position of the last measured
    position; zero velocity; zero twist), and read / send raise RobotLinkLost until a reconnect.

rclpy is imported here only, and only in :meth:`Ros2Arm.connect`: the config, schemas, commands and
the limits are plain numpy, importable and testable without ROS. The adapter runs its own rclpy
context, node and executor thread, so it coexists with any other node in the process (the bridge).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time

import numpy as np

from hardware.arm_kinematics import JOINT_KINDS, DhChain, rotmat_to_quat_wxyz
from hardware.robot import Robot, RobotAlreadyConnectedError, RobotError, RobotLinkLost, Schema, _frozen_vector

OUTPUT_MODES = ("trajectory", "forward_position", "forward_velocity", "servo_twist")
WORKSPACE_SAMPLES = 8
"""points checked on the joint-space line from the measured position to a target"""


@dataclasses.dataclass(frozen=True)
class ArmCfg:
    """A ROS 2 arm (ros2_control / MoveIt); plain types only: the bridge node generates its ROS
    parameters from these fields. Defaults: the 3-joint planar stand-in arm of sim/standins/arm_node.py."""

    # joints
    joint_names: tuple[str, ...] = ("joint_1", "joint_2", "joint_3")
    """joints in command order (a forward controller's `joints` parameter order); JointState is mapped by name"""
    joint_kinds: tuple[str, ...] = ("revolute", "revolute", "revolute")
    """'revolute' (positions in rad) or 'prismatic' (m), per joint"""
    position_min: tuple[float, ...] = (-2.6, -2.0, -2.0)
    """lower joint position limit per joint [rad or m]"""
    position_max: tuple[float, ...] = (2.6, 2.0, 2.0)
    """upper joint position limit per joint [rad or m]"""
    velocity_max: tuple[float, ...] = (1.5, 1.5, 2.0)
    """joint speed limit per joint [rad/s or m/s]"""
    # kinematics: standard DH, one entry per joint (all empty: no chain, no workspace check)
    dh_a_m: tuple[float, ...] = (0.3, 0.25, 0.15)
    """DH link length along x_i [m]"""
    dh_alpha_rad: tuple[float, ...] = (0.0, 0.0, 0.0)
    """DH link twist about x_i [rad]"""
    dh_d_m: tuple[float, ...] = (0.0, 0.0, 0.0)
    """DH link offset along z_{i-1} [m]"""
    dh_theta_rad: tuple[float, ...] = (0.0, 0.0, 0.0)
    """DH joint angle offset about z_{i-1} [rad]"""
    # workspace (end effector in the base frame; both empty: no box)
    workspace_min_m: tuple[float, ...] = (-0.2, -0.65, -0.1)
    """lower corner of the end-effector box, x y z in the base frame [m]"""
    workspace_max_m: tuple[float, ...] = (0.65, 0.65, 0.1)
    """upper corner of the end-effector box, x y z in the base frame [m]"""
    workspace_lookahead_s: float = 0.1
    """a velocity or twist may not leave the box (or cross a joint limit) within this time [s]"""
    max_ee_lin_vel_m_s: float = 0.25
    """end-effector twist: linear speed limit [m/s]"""
    max_ee_ang_vel_rad_s: float = 1.0
    """end-effector twist: angular speed limit [rad/s]"""
    # output
    output_mode: str = "trajectory"
    """'trajectory' | 'forward_position' | 'forward_velocity' | 'servo_twist'"""
    command_horizon_s: float = 0.1
    """trajectory point time_from_start, and the position step limit velocity_max * horizon [s]"""
    # topics (ros2_control and MoveIt Servo defaults)
    joint_state_topic: str = "/joint_states"
    """sensor_msgs/JointState in (joint_state_broadcaster)"""
    trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory"
    """trajectory_msgs/JointTrajectory out"""
    forward_position_topic: str = "/forward_position_controller/commands"
    """std_msgs/Float64MultiArray out, positions in joint_names order"""
    forward_velocity_topic: str = "/forward_velocity_controller/commands"
    """std_msgs/Float64MultiArray out, velocities in joint_names order"""
    servo_twist_topic: str = "/servo_node/delta_twist_cmds"
    """geometry_msgs/TwistStamped out (MoveIt Servo)"""
    twist_frame_id: str = "base_link"
    """frame of the twist commands: the chain's base frame"""
    # safety
    state_deadline_s: float = 0.1
    """the safe command goes out before the JointState stream has been silent this long: the watchdog
    declares the link lost at its last check before it [s]"""
    connect_timeout_s: float = 10.0
    """wait this long for a JointState with every joint at connect [s]"""
    watchdog_rate_hz: float = 50.0
    """staleness checks per second in the adapter's executor [Hz]"""
    # ROS
    node_name: str = "tether_arm"
    """the adapter's node name"""
    domain_id: int = -1
    """ROS_DOMAIN_ID; -1: the environment's"""

    def __post_init__(self):
        n = len(self.joint_names)
        if n == 0 or len(set(self.joint_names)) != n:
            raise ValueError(f"joint_names must be unique and non-empty, got {list(self.joint_names)}")
        for name in ("joint_kinds", "position_min", "position_max", "velocity_max"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} joints")
        for k in self.joint_kinds:
            if k not in JOINT_KINDS:
                raise ValueError(f"joint kind {k!r} is not one of {JOINT_KINDS}")
        if not all(lo < hi for lo, hi in zip(self.position_min, self.position_max)):
            raise ValueError(f"position_min must be below position_max per joint: {self.position_min}, {self.position_max}")
        if not all(v > 0 and math.isfinite(v) for v in self.velocity_max):
            raise ValueError(f"velocity_max must be positive and finite per joint, got {list(self.velocity_max)}")
        dh = (self.dh_a_m, self.dh_alpha_rad, self.dh_d_m, self.dh_theta_rad)
        if any(dh) and not all(len(t) == n for t in dh):
            raise ValueError(f"a DH table needs {n} entries in each of dh_a_m, dh_alpha_rad, dh_d_m, dh_theta_rad "
                             "(or all empty: no chain)")
        box = (self.workspace_min_m, self.workspace_max_m)
        if any(box):
            if not all(len(b) == 3 for b in box) or not all(lo < hi for lo, hi in zip(*box)):
                raise ValueError(f"the workspace box needs workspace_min_m < workspace_max_m, 3 values each, got {box}")
            if not any(dh):
                raise ValueError("a workspace box needs the arm's kinematics (dh_* fields) to know where the end "
                                 "effector is; give the DH table, or empty workspace_min_m/max_m")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}")
        for name in ("workspace_lookahead_s", "max_ee_lin_vel_m_s", "max_ee_ang_vel_rad_s", "command_horizon_s",
                     "state_deadline_s", "connect_timeout_s", "watchdog_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        if not 1.0 / self.watchdog_rate_hz < self.state_deadline_s:
            raise ValueError(f"the watchdog period 1 / {self.watchdog_rate_hz:g} Hz must be shorter than "
                             f"state_deadline_s {self.state_deadline_s:g} s")

    @property
    def chain(self) -> DhChain | None:
        """The kinematic chain of the DH fields; None when they are empty."""
        if not self.dh_a_m:
            return None
        return DhChain(self.dh_a_m, self.dh_alpha_rad, self.dh_d_m, self.dh_theta_rad, self.joint_kinds)

    @property
    def has_workspace(self) -> bool:
        return bool(self.workspace_min_m)


# ----------------------------------------------------------------------------- state and commands


@dataclasses.dataclass(frozen=True, eq=False)
class ArmState:
    """One joint-space state of the arm, in the config's joint order."""

    stamp_s: float
    """time of the newest joint measurement on the robot's clock (JointState header) [s]"""
    joint_names: tuple[str, ...]
    """joint order of the arrays"""
    position: np.ndarray
    """[N] joint positions [rad or m]"""
    velocity: np.ndarray
    """[N] joint velocities [rad/s or m/s]; NaN where the robot does not report them"""
    ee_pos_w: np.ndarray | None = None
    """[3] end-effector position in the arm's base frame [m] (forward kinematics); None without a chain"""
    ee_quat_wxyz: np.ndarray | None = None
    """[4] end-effector orientation, base frame, w first [1]; None without a chain"""

    def __post_init__(self):
        n = len(self.joint_names)
        object.__setattr__(self, "position", _frozen_vector(self.position, (n,), "position"))
        object.__setattr__(self, "velocity", _frozen_vector(self.velocity, (n,), "velocity"))
        if self.ee_pos_w is not None:
            object.__setattr__(self, "ee_pos_w", _frozen_vector(self.ee_pos_w, (3,), "ee_pos_w"))
            object.__setattr__(self, "ee_quat_wxyz", _frozen_vector(self.ee_quat_wxyz, (4,), "ee_quat_wxyz"))


@dataclasses.dataclass(frozen=True, eq=False)
class JointPositionCommand:
    """Joint position targets (output modes 'trajectory' and 'forward_position')."""

    position: np.ndarray
    """[N] target position per joint, config order [rad or m]"""

    def __post_init__(self):
        object.__setattr__(self, "position", _finite(self.position, "position"))


@dataclasses.dataclass(frozen=True, eq=False)
class JointVelocityCommand:
    """Joint velocity targets (output mode 'forward_velocity')."""

    velocity: np.ndarray
    """[N] velocity per joint, config order [rad/s or m/s]"""

    def __post_init__(self):
        object.__setattr__(self, "velocity", _finite(self.velocity, "velocity"))


@dataclasses.dataclass(frozen=True, eq=False)
class EndEffectorTwist:
    """End-effector twist in the base frame (output mode 'servo_twist')."""

    lin_vel_w: np.ndarray
    """[3] linear velocity of the end effector, base frame [m/s]"""
    ang_vel_w: np.ndarray
    """[3] angular velocity of the end effector, base frame [rad/s]"""

    def __post_init__(self):
        object.__setattr__(self, "lin_vel_w", _finite(self.lin_vel_w, "lin_vel_w", 3))
        object.__setattr__(self, "ang_vel_w", _finite(self.ang_vel_w, "ang_vel_w", 3))


ArmCommand = JointPositionCommand | JointVelocityCommand | EndEffectorTwist
MODE_COMMAND = {"trajectory": JointPositionCommand, "forward_position": JointPositionCommand,
                "forward_velocity": JointVelocityCommand, "servo_twist": EndEffectorTwist}


def _finite(value, name: str, n: int | None = None) -> np.ndarray:
    a = np.array(value, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.shape != (n,)):
        raise ValueError(f"{name} must be a vector{f' of {n}' if n else ''}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf: {a.tolist()}")
    a.flags.writeable = False
    return a


def state_schema(cfg: ArmCfg) -> Schema:
    n = len(cfg.joint_names)
    out: Schema = {"stamp_s": ((), "s"), "position": ((n,), "rad|m"), "velocity": ((n,), "rad/s|m/s")}
    if cfg.chain is not None:
        out.update(ee_pos_w=((3,), "m"), ee_quat_wxyz=((4,), "1"))
    return out


def command_schema(cfg: ArmCfg) -> Schema:
    n = len(cfg.joint_names)
    cls = MODE_COMMAND[cfg.output_mode]
    if cls is JointPositionCommand:
        return {"position": ((n,), "rad|m")}
    if cls is JointVelocityCommand:
        return {"velocity": ((n,), "rad/s|m/s")}
    return {"lin_vel_w": ((3,), "m/s"), "ang_vel_w": ((3,), "rad/s")}


# ------------------------------------------------------------------------------------- the limits


class ArmLimits:
    """Joint and workspace limits of one config, applied to a command given the measured positions."""

    def __init__(self, cfg: ArmCfg):
        self.cfg = cfg
        self.lo = np.asarray(cfg.position_min, dtype=np.float64)
        self.hi = np.asarray(cfg.position_max, dtype=np.float64)
        self.vmax = np.asarray(cfg.velocity_max, dtype=np.float64)
        self.chain = cfg.chain
        self.box = (np.asarray(cfg.workspace_min_m), np.asarray(cfg.workspace_max_m)) if cfg.has_workspace else None

    def inside_batch(self, q: np.ndarray) -> np.ndarray:
        """[B] bool: the end effector inside the box at joint positions q [B, N]."""
        if self.box is None:
            return np.ones(len(q), dtype=bool)
        p = self.chain.ee_pos_batch(q)
        return np.all((p >= self.box[0]) & (p <= self.box[1]), axis=-1)

    def inside(self, q: np.ndarray) -> bool:
        return bool(self.inside_batch(np.asarray(q, dtype=np.float64)[None])[0])

    def _workspace_fraction(self, q: np.ndarray, target: np.ndarray) -> float:
        """Largest s in [0, 1] with the end effector inside the box at q + s' (target - q) for the checked
        s' <= s (WORKSPACE_SAMPLES points, then the first crossing refined twice on a 32-point grid:
        1e-4 of the step); 0 when the measured position is already outside, unless the target is nearer
        the box (only a move back inside is allowed)."""
        if self.box is None:
            return 1.0
        step = target - q
        fractions = np.linspace(0.0, 1.0, WORKSPACE_SAMPLES + 1)
        for refinement in range(3):
            ok = self.inside_batch(q + fractions[:, None] * step)
            if refinement == 0 and not ok[0]:  # fraction 0: the measured position
                return 1.0 if self._closer(q, target) else 0.0
            if ok.all():
                return float(fractions[-1])
            k = int(np.argmin(ok))  # the first sample outside (fractions[0] is inside by construction)
            fractions = np.linspace(fractions[k - 1], fractions[k], 33)
        return float(fractions[0])

    def _closer(self, q: np.ndarray, target: np.ndarray) -> bool:
        """The target's end effector is nearer the box than the measured one (a way back in)."""
        def outside(p):
            return float(np.linalg.norm(np.maximum(self.box[0] - p, 0) + np.maximum(p - self.box[1], 0)))
        return outside(self.chain.ee_pos(target)) < outside(self.chain.ee_pos(q))

    def position(self, cmd: JointPositionCommand, q: np.ndarray) -> JointPositionCommand:
        target = self._width(cmd.position, "position")
        max_step = self.vmax * self.cfg.command_horizon_s
        target = np.clip(q + np.clip(target - q, -max_step, max_step), self.lo, self.hi)
        s = self._workspace_fraction(q, target)
        return JointPositionCommand(np.clip(q + s * (target - q), self.lo, self.hi) if s < 1.0 else target)

    def velocity(self, cmd: JointVelocityCommand, q: np.ndarray) -> JointVelocityCommand:
        v = np.clip(self._width(cmd.velocity, "velocity"), -self.vmax, self.vmax)
        t = self.cfg.workspace_lookahead_s
        v = np.clip(v, np.minimum(0.0, (self.lo - q) / t), np.maximum(0.0, (self.hi - q) / t))
        s = self._workspace_fraction(q, q + v * t)
        return JointVelocityCommand(v * s)

    def twist(self, cmd: EndEffectorTwist, q: np.ndarray) -> EndEffectorTwist:
        lin, ang = cmd.lin_vel_w.copy(), cmd.ang_vel_w.copy()
        for v, limit in ((lin, self.cfg.max_ee_lin_vel_m_s), (ang, self.cfg.max_ee_ang_vel_rad_s)):
            speed = float(np.linalg.norm(v))
            if speed > limit:
                v *= limit / speed
        if self.box is not None:
            p, t = self.chain.ee_pos(q), self.cfg.workspace_lookahead_s
            lin = np.clip(lin, np.minimum(0.0, (self.box[0] - p) / t), np.maximum(0.0, (self.box[1] - p) / t))
        return EndEffectorTwist(lin, ang)

    def apply(self, cmd: ArmCommand, q: np.ndarray) -> ArmCommand:
        """The command as it may be sent from measured positions q [N]."""
        want = MODE_COMMAND[self.cfg.output_mode]
        if not isinstance(cmd, want):
            raise ValueError(f"output_mode {self.cfg.output_mode!r} sends {want.__name__}, got {type(cmd).__name__}")
        if isinstance(cmd, JointPositionCommand):
            return self.position(cmd, q)
        if isinstance(cmd, JointVelocityCommand):
            return self.velocity(cmd, q)
        return self.twist(cmd, q)

    def safe(self, q: np.ndarray) -> ArmCommand:
        """Hold: the measured position (position modes), zero velocity, zero twist."""
        cls = MODE_COMMAND[self.cfg.output_mode]
        if cls is JointPositionCommand:
            return JointPositionCommand(np.clip(q, self.lo, self.hi))
        if cls is JointVelocityCommand:
            return JointVelocityCommand(np.zeros_like(q))
        return EndEffectorTwist(np.zeros(3), np.zeros(3))

    def _width(self, v: np.ndarray, name: str) -> np.ndarray:
        if v.shape != self.lo.shape:
            raise ValueError(f"{name} has {v.size} values for {self.lo.size} joints {list(self.cfg.joint_names)}")
        return v


class JointStateMerger:
    """Maps JointState messages onto the config's joints by name (any order, any extra joints; a message
    may carry only some of them) and says how old the oldest joint is."""

    def __init__(self, joint_names: tuple[str, ...]):
        self.names = tuple(joint_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        n = len(self.names)
        self.position = np.full(n, np.nan)
        self.velocity = np.full(n, np.nan)
        self.received_s = np.full(n, -np.inf)
        self.stamp_s = float("nan")

    def update(self, names, position, velocity, stamp_s: float, now_s: float) -> int:
        """Take one message; returns how many of the config's joints it carried."""
        if len(position) != len(names) or (len(velocity) and len(velocity) != len(names)):
            return 0  # malformed: REP/sensor_msgs says the arrays match the names (velocity may be empty)
        hits = 0
        for k, name in enumerate(names):
            i = self.index.get(name)
            if i is None or not math.isfinite(position[k]):
                continue
            self.position[i] = position[k]
            self.velocity[i] = velocity[k] if len(velocity) else np.nan
            self.received_s[i] = now_s
            hits += 1
        if hits:
            self.stamp_s = stamp_s
        return hits

    def missing(self) -> list[str]:
        return [n for n, t in zip(self.names, self.received_s) if not math.isfinite(t)]

    def age_s(self, now_s: float) -> float:
        """Age of the oldest joint's latest value [s] (inf: a joint never came)."""
        return float(now_s - self.received_s.min())


# ------------------------------------------------------------------------------------------ adapter


class Ros2Arm(Robot):
    """An arm driven over ROS 2 (see the module doc). ``read`` returns an :class:`ArmState`; ``send``
    takes the output mode's command and returns it as clipped and published."""

    name = "arm"
    vehicle = None

    def __init__(self, cfg: ArmCfg | None = None):
        self.cfg = cfg if cfg is not None else ArmCfg()
        self.limits = ArmLimits(self.cfg)
        self._merger = JointStateMerger(self.cfg.joint_names)
        self._lock = threading.Lock()
        self._ctx = self._node = self._executor = self._thread = None
        self._pub = None
        self._link_lost = False
        self._safe_sent: ArmCommand | None = None
        self.last_sent: ArmCommand | None = None
        self.silent_for_s: float | None = None
        """when the link was lost: how long the oldest joint had been silent as the safe command went out [s]"""

    # ------------------------------------------------------------------ schema

    @property
    def state_schema(self) -> Schema:
        return state_schema(self.cfg)

    @property
    def command_schema(self) -> Schema:
        return command_schema(self.cfg)

    @property
    def is_connected(self) -> bool:
        return self._node is not None

    @property
    def link_lost(self) -> bool:
        """True once the JointState stream went stale; stays so until disconnect + connect."""
        return self._link_lost

    @property
    def safe_command_sent(self) -> ArmCommand | None:
        """The safe command the watchdog sent when the link was lost (None: none yet)."""
        return self._safe_sent

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        if self.is_connected:
            raise RobotAlreadyConnectedError(f"{self.name}: already connected")
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        cfg = self.cfg
        self._merger = JointStateMerger(cfg.joint_names)
        self._link_lost, self._safe_sent, self.last_sent, self.silent_for_s = False, None, None, None
        domain = cfg.domain_id if cfg.domain_id >= 0 else int(os.environ.get("ROS_DOMAIN_ID", "0"))
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx, domain_id=domain)
        try:
            node = rclpy.create_node(cfg.node_name, context=ctx)
            # joint_state_broadcaster publishes reliable; a best-effort reader takes either
            node.create_subscription(JointState, cfg.joint_state_topic, self._on_joint_state, qos_profile_sensor_data)
            self._msg_cls, topic = self._publisher_type(), self._command_topic()
            # commands: reliable, keep last 1 (the newest command is the only one that matters)
            self._pub = node.create_publisher(self._msg_cls, topic, QoSProfile(depth=1))
            node.create_timer(1.0 / cfg.watchdog_rate_hz, self._watchdog)
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
        except Exception:
            rclpy.shutdown(context=ctx)
            raise
        self._ctx, self._node, self._executor = ctx, node, executor
        self._stop_spin = threading.Event()
        self._thread = threading.Thread(target=self._spin, args=(ctx, executor, self._stop_spin),
                                        name=f"{cfg.node_name}-executor", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + cfg.connect_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._merger.missing():
                    return
            time.sleep(0.01)
        with self._lock:
            missing, seen = self._merger.missing(), len(self._merger.missing()) < len(cfg.joint_names)
        self.disconnect()
        what = f"without joints {missing}" if seen else "at all"
        raise RobotError(f"{self.name}: no sensor_msgs/JointState on {cfg.joint_state_topic} {what} within "
                         f"{cfg.connect_timeout_s:g} s (domain {domain}); start the controller's joint_state_broadcaster "
                         "or fix joint_names / joint_state_topic")

    @staticmethod
    def _spin(ctx, executor, stop: threading.Event) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while ctx.ok() and not stop.is_set():
                executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass
        except Exception:  # rclpy raises several private types when the context goes down mid-spin
            if ctx.ok():
                raise

    def disconnect(self) -> None:
        if not self.is_connected:
            return
        import rclpy

        if not self._link_lost:
            try:
                self.safe_stop()
            except RobotError:
                pass  # no state to hold: nothing safe to send beyond what the watchdog did
        if self._pub is not None:
            self._pub.wait_for_all_acked(rclpy.duration.Duration(seconds=0.5))
        ctx, node, executor, thread = self._ctx, self._node, self._executor, self._thread
        self._ctx = self._node = self._executor = self._thread = self._pub = None
        # stop the spin, then destroy the node, then shut its context down: destroying a node whose context
        # is already shut down segfaulted rclpy in a CI run (destroy_node after rclpy.shutdown)
        self._stop_spin.set()
        if thread is not None:
            thread.join(2.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    # ------------------------------------------------------------------ streams

    def _on_joint_state(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self._merger.update(msg.name, msg.position, msg.velocity, stamp, time.monotonic())

    def _watchdog(self) -> None:
        with self._lock:
            if self._link_lost or self._merger.missing():
                return
            # the last check before the deadline: by the next one the stream would be silent past it
            age = self._merger.age_s(time.monotonic())
            if age + 1.0 / self.cfg.watchdog_rate_hz <= self.cfg.state_deadline_s:
                return
            self._link_lost = True
            q, last_s = self._merger.position.copy(), float(self._merger.received_s.min())
        self._safe_sent = self._publish(self.limits.safe(q), q)
        self.silent_for_s = time.monotonic() - last_s

    def _fresh_positions(self, what: str) -> np.ndarray:
        self._require_connected(what)
        with self._lock:
            if self._link_lost:
                raise RobotLinkLost(f"{self.name}: no JointState for over {self.cfg.state_deadline_s:g} s; the safe "
                                    "command was sent; reconnect once the controller is back")
            age = self._merger.age_s(time.monotonic())
            q = self._merger.position.copy()
        if age > self.cfg.state_deadline_s:
            self._watchdog()  # the same path as the timer: one safe command, then the loss
            raise RobotLinkLost(f"{self.name}: the newest JointState is {age:.3f} s old (> {self.cfg.state_deadline_s:g} s); "
                                "the safe command was sent")
        return q

    # ------------------------------------------------------------------ Robot

    def read(self) -> ArmState:
        self._fresh_positions("read")
        with self._lock:
            m = self._merger
            q, v, stamp = m.position.copy(), m.velocity.copy(), m.stamp_s
        ee_pos = ee_quat = None
        if self.limits.chain is not None:
            pose = self.limits.chain.ee_pose(q)
            ee_pos, ee_quat = pose[:3, 3], rotmat_to_quat_wxyz(pose[:3, :3])
        return ArmState(stamp, self.cfg.joint_names, q, v, ee_pos, ee_quat)

    def send(self, cmd: ArmCommand) -> ArmCommand:
        q = self._fresh_positions("send")
        sent = self.limits.apply(cmd, q)
        return self._publish(sent, q)

    def safe_stop(self) -> ArmCommand:
        """Hold the measured position (position modes) or stop (zero velocity / twist); returns it."""
        self._require_connected("safe_stop")
        with self._lock:
            if self._merger.missing():
                raise RobotError(f"{self.name}: no position of joints {self._merger.missing()} to hold")
            q = self._merger.position.copy()
        return self._publish(self.limits.safe(q), q)

    # ------------------------------------------------------------------ messages

    def _command_topic(self) -> str:
        return {"trajectory": self.cfg.trajectory_topic, "forward_position": self.cfg.forward_position_topic,
                "forward_velocity": self.cfg.forward_velocity_topic,
                "servo_twist": self.cfg.servo_twist_topic}[self.cfg.output_mode]

    def _publisher_type(self):
        if self.cfg.output_mode == "trajectory":
            from trajectory_msgs.msg import JointTrajectory
            return JointTrajectory
        if self.cfg.output_mode == "servo_twist":
            from geometry_msgs.msg import TwistStamped
            return TwistStamped
        from std_msgs.msg import Float64MultiArray
        return Float64MultiArray

    def _publish(self, cmd: ArmCommand, q: np.ndarray) -> ArmCommand:
        node, pub = self._node, self._pub
        if node is None or pub is None:
            return cmd
        mode = self.cfg.output_mode
        msg = self._msg_cls()
        if mode == "trajectory":
            from builtin_interfaces.msg import Duration
            from trajectory_msgs.msg import JointTrajectoryPoint

            # header stamp zero: "start now" for joint_trajectory_controller
            msg.joint_names = list(self.cfg.joint_names)
            horizon = self.cfg.command_horizon_s
            point = JointTrajectoryPoint(positions=cmd.position.tolist(), velocities=[0.0] * len(q))
            point.time_from_start = Duration(sec=int(horizon), nanosec=int(round((horizon % 1.0) * 1e9)))
            msg.points = [point]
        elif mode == "servo_twist":
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = self.cfg.twist_frame_id
            (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = cmd.lin_vel_w.tolist()
            (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = cmd.ang_vel_w.tolist()
        else:
            msg.data = (cmd.position if mode == "forward_position" else cmd.velocity).tolist()
        pub.publish(msg)
        self.last_sent = cmd
        return cmd
