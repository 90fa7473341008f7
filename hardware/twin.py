"""Digital twin: a pybullet quadrotor behind the :class:`~hardware.robot.Robot` interface.

The caller drives time: a ROS node timer or a test loop calls :meth:`DigitalTwin.advance` once per
physics period (1 / rate_hz). Commands take effect ``latency_s`` after they are sent and are held until
the next one arrives (watchdogs belong to the ROS runner, not to the vehicle). Disturbances (a wind
gust, an off-centre payload, a weakened motor) and sensor noise are set in :class:`TwinConfig`.
An optional obstacle world (``TwinConfig.obstacles``: cylinders, boxes, spheres) is built in the twin's
pybullet client by sim.camera.pybullet_depth.build_scene; touching an obstacle is a crash, as a hard
landing is. :meth:`DigitalTwin.render_depth` renders a policy's image input (tether.contract.ImageInput)
with pybullet's own camera (TinyRenderer), not the training ray caster.
Torch-free: numpy + pybullet (sim.pybullet_ref); never installed on a robot.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from hardware.robot import (CTBR_SCHEMA, Command, CtbrCommand, Robot, RobotAlreadyConnectedError, RobotState, RotorCommand,
                            Schema, check_finite_command)
from hardware.twin_config import (Obstacles, Payload, TwinConfig, TwinParams, WeakMotor,  # noqa: F401 (re-exported)
                                  WindGust, twin_vehicle, with_policy_rate_gains)
from sim.camera.config import R_LINK_OPTICAL, PinholeCfg
from sim.camera.pybullet_depth import build_scene, render_depth
from sim.pybullet_ref.quadrotor import PhysicsOverrides, PybulletQuadrotors
from sim.pybullet_ref.rate_control import ctbr_to_rotor_cmd, make_rate_controller
from sim.quadrotor.presets import PRESETS, QuadrotorPreset
from tether.contract import ImageInput
from tether.observation import quat_wxyz_to_rotmat

NEAR_PLANE_M = 0.02
"""the render's near clip plane [m] (below any image input's min_range_m in practice)"""
FAR_PLANE_M = 100.0
"""the render's far clip plane [m]; nothing drawn reads this, i.e. beyond max_range_m (+inf)"""


def rpy_to_rotmat(rpy) -> np.ndarray:
    """URDF roll, pitch, yaw [rad] -> R = Rz(yaw) Ry(pitch) Rx(roll) [3, 3] (sim.camera.depth's convention)."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclasses.dataclass(frozen=True)
class Crash:
    """Why and where the twin crashed (it latches until reset())."""

    time_s: float
    """sim time of the crash, counted from connect() [s]"""
    reason: str
    """what happened, with the numbers, e.g. 'hit the ground at 4.4 m/s (limit 2 m/s)'"""
    pos_w: tuple[float, float, float]
    """where the vehicle was [m]"""

    def describe(self) -> str:
        x, y, z = self.pos_w
        return f"{self.reason} at t={self.time_s:.2f} s, position ({x:.2f}, {y:.2f}, {z:.2f}) m"


def physics_overrides(cfg: TwinConfig) -> PhysicsOverrides:
    """The twin's disturbances as per-drone parameter overrides of its preset (one drone)."""
    preset = PRESETS[cfg.preset]
    gain = np.ones((1, len(preset.rotor_spin)))
    if cfg.weak_motor is not None:
        gain[0, cfg.weak_motor.index] = cfg.weak_motor.gain
    if cfg.rotor_gain is not None:
        gain = gain * np.asarray(cfg.rotor_gain, dtype=np.float64)[None]
    if cfg.payload is None or cfg.payload.mass_kg == 0:
        return PhysicsOverrides(rotor_gain=gain)
    m, mp = preset.mass_kg, cfg.payload.mass_kg
    pos_p = np.asarray(cfg.payload.pos_b, dtype=np.float64)
    com_b = mp * pos_p / (m + mp)
    # Parallel-axis terms of the body (about its own origin) and the point payload, about the new COM;
    # products of inertia are neglected (principal-axis model).
    inertia = np.asarray(preset.inertia_kg_m2, dtype=np.float64).copy()
    for mass, r in ((m, -com_b), (mp, pos_p - com_b)):
        inertia += mass * (r @ r - r * r)
    return PhysicsOverrides(mass_scale=(m + mp) / m, inertia_scale=inertia / np.asarray(preset.inertia_kg_m2),
                            rotor_gain=gain, com_offset_b=com_b[None])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


class DigitalTwin(Robot):
    """One simulated quadrotor; ``advance()`` moves it one physics period of 1 / rate_hz seconds."""

    def __init__(self, cfg: TwinConfig | None = None):
        self.cfg = cfg or TwinConfig()
        self.preset: QuadrotorPreset = PRESETS[self.cfg.preset]
        self.name = f"twin:{self.preset.name}"
        self.n_rotors = len(self.preset.rotor_spin)
        self.hover_command = RotorCommand(np.full(self.n_rotors, self.preset.hover_rpm / self.preset.max_rpm))
        self._rate_ctrl = make_rate_controller(self.preset, self.cfg.rate_kp)
        self._quads: PybulletQuadrotors | None = None
        self._rng = np.random.default_rng(self.cfg.seed)
        self._step = 0
        self._active: Command = self.hover_command
        self._pending: collections.deque[tuple[int, Command]] = collections.deque()
        self.vehicle = twin_vehicle(self.cfg)
        self.crash: Crash | None = None
        """the crash since connect() or reset(), None while the vehicle is intact"""
        self._on_ground = False
        self._speed_before_m_s = 0.0
        self._obstacles: dict[int, str] = {}  # pybullet body id -> what it is, for a crash report

    # ----------------------------------------------------------------------------------- schema

    @property
    def command_schema(self) -> Schema:
        return {"rotor_cmd": ((self.n_rotors,), "1 (fraction of max rotor speed, motor order)"), **CTBR_SCHEMA}

    @property
    def is_connected(self) -> bool:
        return self._quads is not None

    @property
    def sim_time_s(self) -> float:
        """time since connect() [s]"""
        return self._step * self.cfg.dt_s

    # -------------------------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        if self.is_connected:
            raise RobotAlreadyConnectedError(f"{self.name} is already connected")
        self._quads = PybulletQuadrotors(self.preset, 1, self.cfg.dt_s, self.cfg.substeps,
                                         physics_overrides(self.cfg), ground_z_m=self.cfg.ground_z_m)
        self._build_world()
        self._rng = np.random.default_rng(self.cfg.seed)
        self._step = 0
        self.reset(self.cfg.init_pos_w)

    def _build_world(self) -> None:
        """The obstacles (collision: group 2, the vehicle's mask) and a visual-only ground slab for the
        camera (the physics ground stays the quadrotor world's plane)."""
        import pybullet as pb

        client, obs = self._quads.client, self.cfg.obstacles or Obstacles()
        ground = self.cfg.ground_z_m
        ids = build_scene(client, obs.rows("spheres"), obs.rows("cylinders"), obs.rows("boxes"), ground_z_w=ground)
        names = [f"sphere at ({r[0]:.2f}, {r[1]:.2f}, {r[2]:.2f}) m" for r in obs.rows("spheres")] + \
                [f"column at ({r[0]:.2f}, {r[1]:.2f}) m" for r in obs.rows("cylinders")] + \
                [f"box at ({r[0]:.2f}, {r[1]:.2f}, {r[2]:.2f}) m" for r in obs.rows("boxes")]
        if ground is not None:  # build_scene's first body: the ground slab, seen but not touched
            pb.setCollisionFilterGroupMask(ids[0], -1, 0, 0, physicsClientId=client)
            ids = ids[1:]
        self._obstacles = dict(zip(ids, names))
        for body in ids:
            pb.setCollisionFilterGroupMask(body, -1, 2, 1, physicsClientId=client)
        if ids:  # without a ground the vehicle collides with nothing until told so
            for body in self._quads.bodies:
                pb.setCollisionFilterGroupMask(body, -1, 1, 2, physicsClientId=client)

    def disconnect(self) -> None:
        if self._quads is not None:
            self._quads.close()
            self._quads = None
        self._pending.clear()

    def reset(self, pos_w=(0.0, 0.0, 1.0), quat_wxyz=(1.0, 0.0, 0.0, 0.0), lin_vel_w=(0.0, 0.0, 0.0),
              ang_vel_b=(0.0, 0.0, 0.0), rotor_rpm=None) -> None:
        """Place the vehicle (pos_w [3] m, quat_wxyz [4], lin_vel_w [3] m/s, ang_vel_b [3] rad/s, rotor_rpm
        [R] rpm, None: nominal hover) and hold the nominal hover command. The sim clock keeps running."""
        self._require_connected("reset")
        def row(x) -> np.ndarray:
            return np.asarray(x, dtype=np.float64)[None]

        self._quads.reset(row(pos_w), row(quat_wxyz), row(lin_vel_w), row(ang_vel_b),
                          None if rotor_rpm is None else row(rotor_rpm))
        self._pending.clear()
        self._active = self.hover_command
        self.crash = None
        self._on_ground = False  # contacts are known after the next step
        self._speed_before_m_s = float(np.linalg.norm(lin_vel_w))

    # ------------------------------------------------------------------------------ state, time

    def true_state(self) -> RobotState:
        """Noise-free state (ground truth, for tests and evaluation; a real robot has no such thing)."""
        self._require_connected("true_state")
        s = self._quads.state()
        return RobotState(self.sim_time_s, s["pos_w"][0], s["quat_wxyz"][0], s["lin_vel_w"][0], s["ang_vel_b"][0])

    def read(self) -> RobotState:
        self._require_connected("read")
        s, c, rng = self._quads.state(), self.cfg, self._rng
        dq = np.concatenate([[1.0], 0.5 * rng.normal(0.0, c.noise_att_rad, 3)])
        quat = _quat_mul(s["quat_wxyz"][0], dq)
        return RobotState(
            stamp_s=self.sim_time_s,
            pos_w=s["pos_w"][0] + rng.normal(0.0, c.noise_pos_m, 3),
            quat_wxyz=quat / np.linalg.norm(quat),
            lin_vel_w=s["lin_vel_w"][0] + rng.normal(0.0, c.noise_vel_m_s, 3),
            ang_vel_b=s["ang_vel_b"][0] + rng.normal(0.0, c.noise_ang_vel_rad_s, 3))

    def advance(self) -> float:
        """Step one physics period with the command in force; returns the new sim time [s]."""
        self._require_connected("advance")
        while self._pending and self._pending[0][0] <= self._step:
            self._active = self._pending.popleft()[1]
        if isinstance(self._active, CtbrCommand):
            active = self._active

            def rotor_cmd(ang_vel_b: np.ndarray) -> np.ndarray:  # the rate loop runs every substep
                return ctbr_to_rotor_cmd(np.array([[active.thrust_n]]), active.body_rates_b[None], ang_vel_b,
                                         self._rate_ctrl)
        else:
            rotor_cmd = self._active.rotor_cmd[None]
        t, gust = self.sim_time_s, self.cfg.wind_gust
        ext = None
        if gust is not None and gust.start_s <= t + 1e-9 < gust.start_s + gust.duration_s:
            ext = np.asarray(gust.force_w, dtype=np.float64)[None]
        self._quads.step(rotor_cmd, ext)
        self._step += 1
        if self._obstacles:
            self._check_obstacles()
        if self.cfg.ground_z_m is not None:
            self._check_ground()
        return self.sim_time_s

    def _check_obstacles(self) -> None:
        """Touching an obstacle at any speed is a crash (the rotors hit it): motors stop, it latches."""
        import pybullet as pb

        if self.crash is not None:
            return
        client, body = self._quads.client, self._quads.bodies[0]
        for obstacle, what in self._obstacles.items():
            if pb.getContactPoints(bodyA=body, bodyB=obstacle, physicsClientId=client):
                s = self._quads.state()
                self.crash = Crash(self.sim_time_s, f"hit the {what} at {self._speed_before_m_s:.2f} m/s",
                                   tuple(float(x) for x in s["pos_w"][0]))
                self._pending.clear()
                self._active = RotorCommand(np.zeros(self.n_rotors))
                return

    def _check_ground(self) -> None:
        """Crash detection: touching down faster than crash_speed_m_s, or lying tilted past
        crash_tilt_rad. The speed is the one of the period before the contact (the contact itself
        has already absorbed part of it). A crash stops the motors and latches until reset()."""
        s = self._quads.state()
        on_ground = bool(self._quads.ground_contact()[0])
        speed = float(np.linalg.norm(s["lin_vel_w"][0]))
        if on_ground and self.crash is None:
            c = self.cfg
            up_z = float(quat_wxyz_to_rotmat(s["quat_wxyz"])[0, 2, 2])  # z_b . z_w
            tilt = float(np.arccos(np.clip(up_z, -1.0, 1.0)))
            reason = None
            if not self._on_ground and self._speed_before_m_s > c.crash_speed_m_s:
                reason = (f"hit the ground at {self._speed_before_m_s:.2f} m/s (crash_speed_m_s "
                          f"{c.crash_speed_m_s:g})")
            elif tilt > c.crash_tilt_rad:
                reason = f"tipped over on the ground: tilt {np.degrees(tilt):.0f} deg (crash_tilt_rad {c.crash_tilt_rad:g})"
            if reason is not None:
                self.crash = Crash(self.sim_time_s, reason, tuple(float(x) for x in s["pos_w"][0]))
                self._pending.clear()
                self._active = RotorCommand(np.zeros(self.n_rotors))
        self._on_ground = on_ground
        self._speed_before_m_s = speed

    # ----------------------------------------------------------------------------------- camera

    def render_depth(self, image: ImageInput) -> np.ndarray:
        """What the camera of ``image`` sees now (true pose, the contract's mount and intrinsics): z-depth
        float32 [height, width] metres from pybullet's TinyRenderer, REP 117 specials: +inf beyond
        max_range_m (or nothing drawn), -inf nearer than min_range_m."""
        self._require_connected("render_depth")
        s = self._quads.state()
        rot_wb = quat_wxyz_to_rotmat(s["quat_wxyz"][0])
        rot_wc = rot_wb @ rpy_to_rotmat(image.mount_rpy_rad) @ np.asarray(R_LINK_OPTICAL)
        o_w = s["pos_w"][0] + rot_wb @ np.asarray(image.mount_position_b_m)
        fx, fy, cx, cy = image.fx_fy_cx_cy_px
        k = PinholeCfg(image.width, image.height, fx, fy, cx, cy)
        d = render_depth(self._quads.client, k, o_w, rot_wc, NEAR_PLANE_M, FAR_PLANE_M)
        d[d > image.max_range_m] = np.inf
        d[d < image.min_range_m] = -np.inf
        return d

    # --------------------------------------------------------------------------------- commands

    def _clip(self, cmd: Command) -> Command:
        if isinstance(cmd, RotorCommand):
            if cmd.rotor_cmd.shape != (self.n_rotors,):
                raise ValueError(f"{self.name}: rotor_cmd needs {self.n_rotors} values, got {cmd.rotor_cmd.shape}")
            return RotorCommand(np.clip(cmd.rotor_cmd, 0.0, 1.0))
        if isinstance(cmd, CtbrCommand):
            limits = np.asarray(self.cfg.body_rate_limits_rad_s)
            return CtbrCommand(float(np.clip(cmd.thrust_n, 0.0, self.preset.max_thrust_n)),
                               np.clip(cmd.body_rates_b, -limits, limits))
        raise TypeError(f"{self.name}: send() takes a RotorCommand or CtbrCommand, got {type(cmd).__name__}")

    def send(self, cmd: Command) -> Command:
        """Queue ``cmd`` to act after latency_s; returns it clipped (rotor to [0, 1], CTBR thrust to
        [0, max thrust] N and rates to +- body_rate_limits_rad_s). NaN raises ValueError and the
        previous command stays in force."""
        self._require_connected("send")
        check_finite_command(cmd)
        sent = self._clip(cmd)
        if self.crash is not None:  # a crashed vehicle's motors stay off until reset()
            return RotorCommand(np.zeros(self.n_rotors))
        self._pending.append((self._step + self.cfg.latency_steps, sent))
        return sent

    def safe_stop(self) -> None:
        """Motors off now, skipping the command latency (the twin has no landing gear to land on)."""
        self._require_connected("safe_stop")
        self._pending.clear()
        self._active = RotorCommand(np.zeros(self.n_rotors))
