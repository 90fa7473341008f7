"""Digital twin: a pybullet quadrotor behind the :class:`~hardware.robot.Robot` interface.

The caller drives time: a ROS node timer or a test loop calls :meth:`DigitalTwin.advance` once per
physics period (1 / rate_hz). Commands take effect ``latency_s`` after they are sent and are held until
the next one arrives (watchdogs belong to the ROS runner, not to the vehicle). Disturbances (a wind
gust, an off-centre payload, a weakened motor) and sensor noise are set in :class:`TwinConfig`.
Torch-free: numpy + pybullet (sim.pybullet_ref); never installed on a robot.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np

from hardware.robot import (Command, CtbrCommand, Robot, RobotAlreadyConnectedError, RobotState, RotorCommand,
                            Schema, check_finite_command)
from sim.pybullet_ref.quadrotor import PhysicsOverrides, PybulletQuadrotors
from sim.pybullet_ref.rate_control import ctbr_to_rotor_cmd, make_rate_controller
from sim.quadrotor.presets import PRESETS, QuadrotorPreset, check_rotor_gain


@dataclasses.dataclass(frozen=True)
class WindGust:
    start_s: float
    """sim time the gust starts, counted from connect() [s]"""
    duration_s: float
    """how long the gust blows [s]"""
    force_w: tuple[float, float, float]
    """constant force on the centre of mass in the world frame while it blows [N]"""


@dataclasses.dataclass(frozen=True)
class Payload:
    mass_kg: float
    """added point mass [kg]"""
    pos_b: tuple[float, float, float]
    """where it is attached, in the body frame [m]; shifts the centre of mass"""


@dataclasses.dataclass(frozen=True)
class WeakMotor:
    index: int
    """rotor index in the vehicle's motor order [0, R)"""
    gain: float
    """thrust and reaction-torque multiplier of that rotor, e.g. 0.7 [1]"""


@dataclasses.dataclass(frozen=True)
class TwinConfig:
    # vehicle
    preset: str = "crazyflie2x"
    """name of a sim.quadrotor.presets preset"""
    rate_kp: tuple[float, float, float] = (20.0, 20.0, 8.0)
    """gains of the on-board rate controller that tracks CtbrCommand, body x, y, z [1/s]"""
    body_rate_limits_rad_s: tuple[float, float, float] = (10.0, 10.0, 5.0)
    """CtbrCommand body rates are clipped to +- these [rad/s]"""
    init_pos_w: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """where connect() places the vehicle, level and hovering [m]"""
    # timing
    rate_hz: float = 100.0
    """physics periods per second of sim time, i.e. advance() calls per second [Hz]"""
    substeps: int = 4
    """pybullet steps per physics period [1]"""
    latency_s: float = 0.0
    """delay from send() to the command acting [s], rounded down to whole periods"""
    # sensors
    noise_pos_m: float = 0.0
    """std of position noise in read() [m]"""
    noise_vel_m_s: float = 0.0
    """std of linear velocity noise [m/s]"""
    noise_att_rad: float = 0.0
    """std of the attitude noise rotation about each body axis [rad]"""
    noise_ang_vel_rad_s: float = 0.0
    """std of angular velocity noise [rad/s]"""
    seed: int = 0
    """seed of the sensor noise generator"""
    # disturbances
    wind_gust: WindGust | None = None
    payload: Payload | None = None
    weak_motor: WeakMotor | None = None
    rotor_gain: tuple[float, ...] | None = None
    """thrust and reaction-torque multiplier per rotor, motor order (e.g. estimated from flight logs by
    policies.hil.identify); combines with weak_motor. None: all 1"""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"twin.preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if not self.rate_hz > 0 or self.substeps < 1:
            raise ValueError(f"twin.rate_hz must be > 0 [Hz] and substeps >= 1, got {self.rate_hz}, "
                             f"{self.substeps}")
        if not 0 <= self.latency_s <= 0.5:
            raise ValueError(f"twin.latency_s {self.latency_s} must be in [0, 0.5] s (seconds, not milliseconds)")
        for name in ("noise_pos_m", "noise_vel_m_s", "noise_att_rad", "noise_ang_vel_rad_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"twin.{name} must be a non-negative std, got {getattr(self, name)!r}")
        if len(self.rate_kp) != 3 or min(self.rate_kp) <= 0:
            raise ValueError(f"twin.rate_kp must be three positive gains [1/s], got {self.rate_kp!r}")
        if len(self.body_rate_limits_rad_s) != 3 or min(self.body_rate_limits_rad_s) <= 0:
            raise ValueError(f"twin.body_rate_limits_rad_s must be three positive rates, got "
                             f"{self.body_rate_limits_rad_s!r}")
        if len(self.init_pos_w) != 3:
            raise ValueError(f"twin.init_pos_w must be [x, y, z] m, got {self.init_pos_w!r}")
        n_rotors = len(PRESETS[self.preset].rotor_spin)
        g = self.wind_gust
        if g is not None and (g.start_s < 0 or g.duration_s < 0 or len(g.force_w) != 3):
            raise ValueError(f"twin.wind_gust needs start_s >= 0, duration_s >= 0 [s], force_w [3] N; got {g}")
        if self.payload is not None and (self.payload.mass_kg < 0 or len(self.payload.pos_b) != 3):
            raise ValueError(f"twin.payload needs mass_kg >= 0 and pos_b [3] m; got {self.payload}")
        check_rotor_gain(self.rotor_gain, n_rotors, "twin.rotor_gain")
        w = self.weak_motor
        if w is not None and (not 0 <= w.index < n_rotors or not 0 <= w.gain <= 1):
            raise ValueError(f"twin.weak_motor needs index in [0, {n_rotors}) and gain in [0, 1]; got {w}")

    @property
    def dt_s(self) -> float:
        """physics period [s]"""
        return 1.0 / self.rate_hz

    @property
    def latency_steps(self) -> int:
        return int(np.floor(self.latency_s * self.rate_hz + 1e-6))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "twin") -> "TwinConfig":
        """Build from plain data (YAML, ROS parameters); nested disturbances are dicts."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        for key, typ in (("wind_gust", WindGust), ("payload", Payload), ("weak_motor", WeakMotor)):
            if isinstance(kw.get(key), dict):
                sub = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw[key].items()}
                try:
                    kw[key] = typ(**sub)
                except TypeError as e:
                    raise ValueError(f"{where}.{key}: {e}") from e
        return cls(**kw)


def with_policy_rate_gains(cfg: TwinConfig, action) -> TwinConfig:
    """``cfg`` with its firmware rate loop set to the gains a CTBR policy was trained against (``action``:
    the contract's action spec), as a flight controller is configured for that policy; else unchanged."""
    if action.type == "ctbr" and min(action.rate_kp) > 0:
        return dataclasses.replace(cfg, rate_kp=tuple(float(k) for k in action.rate_kp))
    return cfg


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

    # ----------------------------------------------------------------------------------- schema

    @property
    def command_schema(self) -> Schema:
        return {"rotor_cmd": ((self.n_rotors,), "1 (fraction of max rotor speed, motor order)"),
                "thrust_n": ((), "N"), "body_rates_b": ((3,), "rad/s")}

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
                                         physics_overrides(self.cfg))
        self._rng = np.random.default_rng(self.cfg.seed)
        self._step = 0
        self.reset(self.cfg.init_pos_w)

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
        return self.sim_time_s

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
        self._pending.append((self._step + self.cfg.latency_steps, sent))
        return sent

    def safe_stop(self) -> None:
        """Motors off now, skipping the command latency (the twin has no landing gear to land on)."""
        self._require_connected("safe_stop")
        self._pending.clear()
        self._active = RotorCommand(np.zeros(self.n_rotors))
