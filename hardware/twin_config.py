"""The digital twin's configuration, torch-free and pybullet-free: what ``tether deploy`` checks before
any node starts, and the twin node's ROS parameters (:class:`TwinParams`, flattened by
tether_deploy.params: ``wind_gust.start_s``, ``weak_motor.index`` ...).

A disturbance group (wind gust, payload, weak motor) is None when off; as ROS parameters it is off while
its ``off`` property holds (duration 0, mass 0, index -1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hardware.robot import VehicleFacts
from sim.quadrotor.presets import PRESETS, check_rotor_gain

ACTION_SPACES = ("ctbr", "rotor")


@dataclasses.dataclass(frozen=True)
class WindGust:
    start_s: float = 0.0
    """sim time the gust starts, counted from connect() [s]"""
    duration_s: float = 0.0
    """how long the gust blows [s]; 0: no gust"""
    force_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """constant force on the centre of mass in the world frame while it blows [N]"""

    @property
    def off(self) -> bool:
        return self.duration_s == 0


@dataclasses.dataclass(frozen=True)
class Payload:
    mass_kg: float = 0.0
    """added point mass [kg]; 0: no payload"""
    pos_b: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """where it is attached, in the body frame [m]; shifts the centre of mass"""

    @property
    def off(self) -> bool:
        return self.mass_kg == 0


@dataclasses.dataclass(frozen=True)
class WeakMotor:
    index: int = -1
    """rotor index in the vehicle's motor order [0, R); -1: no weak motor"""
    gain: float = 1.0
    """thrust and reaction-torque multiplier of that rotor, e.g. 0.7 [1]"""

    @property
    def off(self) -> bool:
        return self.index < 0


OBSTACLE_ROW = {"cylinders": 5, "boxes": 7, "spheres": 4}
"""numbers per obstacle row, in sim.camera.scene's field order (CYLINDER_FIELDS, BOX_FIELDS, SPHERE_FIELDS)"""


def _flat(rows) -> tuple[float, ...]:
    out: list[float] = []
    for r in rows:
        out.extend(_flat(r) if isinstance(r, (list, tuple)) else [float(r)])
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Obstacles:
    """Static obstacles in the twin's world (pybullet bodies: the vehicle collides with them, the camera sees
    them), as sim.camera.pybullet_depth.build_scene takes them. Rows are flattened (ROS parameters are flat
    arrays); a list of rows is accepted and flattened."""

    cylinders: tuple[float, ...] = ()
    """vertical columns, 5 numbers each: x, y, z_min, z_max, radius [m]"""
    boxes: tuple[float, ...] = ()
    """boxes and walls, 7 numbers each: centre x, y, z, half extents x, y, z, yaw about world z [m, rad]"""
    spheres: tuple[float, ...] = ()
    """spheres, 4 numbers each: centre x, y, z, radius [m]"""

    def __post_init__(self):
        for kind, n in OBSTACLE_ROW.items():
            flat = _flat(getattr(self, kind))
            object.__setattr__(self, kind, flat)
            if len(flat) % n:
                raise ValueError(f"twin.obstacles.{kind} holds {len(flat)} numbers, not rows of {n} "
                                 f"(see the field doc for their order)")
            if not all(np.isfinite(flat)):
                raise ValueError(f"twin.obstacles.{kind} must be finite numbers, got {list(flat)}")
        for x, y, z0, z1, r in self.rows("cylinders"):
            if not (r > 0 and z1 > z0):
                raise ValueError(f"twin.obstacles.cylinders row ({x}, {y}, {z0}, {z1}, {r}) needs radius > 0 and "
                                 f"z_max > z_min [m]")
        for row in self.rows("boxes"):
            if min(row[3:6]) <= 0:
                raise ValueError(f"twin.obstacles.boxes row {row} needs half extents > 0 [m]")
        for row in self.rows("spheres"):
            if row[3] <= 0:
                raise ValueError(f"twin.obstacles.spheres row {row} needs radius > 0 [m]")

    def rows(self, kind: str) -> list[tuple[float, ...]]:
        """The rows of ``kind`` ('cylinders', 'boxes', 'spheres')."""
        flat, n = getattr(self, kind), OBSTACLE_ROW[kind]
        return [tuple(flat[i:i + n]) for i in range(0, len(flat), n)]

    @property
    def off(self) -> bool:
        return not (self.cylinders or self.boxes or self.spheres)


@dataclasses.dataclass(frozen=True)
class TwinConfig:
    # vehicle
    preset: str = "crazyflie2x"
    """name of a sim.quadrotor.presets preset"""
    rate_kp: tuple[float, float, float] = (20.0, 20.0, 8.0)
    """gains of the on-board rate controller that tracks CtbrCommand, body x, y, z (a CTBR policy's
    contract replaces them with the gains it was trained against) [1/s]"""
    body_rate_limits_rad_s: tuple[float, float, float] = (10.0, 10.0, 5.0)
    """CtbrCommand body rates are clipped to +- these [rad/s] (a CTBR policy's contract replaces them
    with the limits it was trained with: with_policy_rate_gains)"""
    action_spaces: tuple[str, ...] = ACTION_SPACES
    """command interfaces the twin's flight controller accepts: ctbr and/or rotor"""
    init_pos_w: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """where connect() places the vehicle, level and hovering [m]"""
    # ground and crashes
    ground_z_m: float | None = 0.0
    """height of the ground plane the vehicle can hit [m]; [] / None: no ground (free fall forever)"""
    crash_speed_m_s: float = 2.0
    """touching the ground faster than this is a crash: motors stop [m/s]"""
    crash_tilt_rad: float = 1.0
    """lying on the ground tilted more than this is a crash (tipped over): motors stop [rad]"""
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
    """a constant force for a while; None: none"""
    payload: Payload | None = None
    """an added point mass; None: none"""
    weak_motor: WeakMotor | None = None
    """one rotor weaker than nominal; None: none"""
    rotor_gain: tuple[float, ...] | None = None
    """thrust and reaction-torque multiplier per rotor, motor order (e.g. estimated from flight logs by
    policies.hil.identify); combines with weak_motor. None ([] as a parameter): all 1"""
    # world
    obstacles: Obstacles | None = None
    """static obstacles the vehicle can hit (a contact is a crash) and a camera sees; None: none"""

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
        if not self.action_spaces or not set(self.action_spaces) <= set(ACTION_SPACES):
            raise ValueError(f"twin.action_spaces must be a non-empty subset of {list(ACTION_SPACES)}, got "
                             f"{list(self.action_spaces)}")
        if len(self.init_pos_w) != 3:
            raise ValueError(f"twin.init_pos_w must be [x, y, z] m, got {self.init_pos_w!r}")
        if self.ground_z_m is not None and self.init_pos_w[2] < self.ground_z_m:
            raise ValueError(f"twin.init_pos_w z {self.init_pos_w[2]} m is below the ground at "
                             f"ground_z_m {self.ground_z_m} m")
        if not self.crash_speed_m_s > 0 or not 0 < self.crash_tilt_rad <= np.pi:
            raise ValueError(f"twin.crash_speed_m_s must be > 0 [m/s] and crash_tilt_rad in (0, pi] [rad], got "
                             f"{self.crash_speed_m_s}, {self.crash_tilt_rad}")
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
        for key, typ in (("wind_gust", WindGust), ("payload", Payload), ("weak_motor", WeakMotor),
                         ("obstacles", Obstacles)):
            if isinstance(kw.get(key), dict):
                sub = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw[key].items()}
                try:
                    kw[key] = typ(**sub)
                except TypeError as e:
                    raise ValueError(f"{where}.{key}: {e}") from e
        return cls(**kw)

    def twin_config(self) -> "TwinConfig":
        """This configuration as a plain TwinConfig (drops the node-only fields of a TwinParams)."""
        names = [f.name for f in dataclasses.fields(TwinConfig)]
        return TwinConfig(**{n: getattr(self, n) for n in names})


@dataclasses.dataclass(frozen=True)
class TwinParams(TwinConfig):
    """twin (twin_node.py): the TwinConfig fields plus what only the node needs."""

    policy_dir: str = ""
    """directory of policy.onnx + policy.json: its action spec maps cmd/executed to motor commands"""
    cmd_timeout_s: float = 0.5
    """offboard-loss failsafe: motors off after this long without a command [s]"""
    exit_on_crash: bool = False
    """end the node (status 1) crash_exit_delay_s after a crash (tether deploy sets true)"""
    flight_s: float = 0.0
    """end the node (status 0) once physics has run this long [s of sim time]; 0: never. The correction loop
    sets its episode's length plus slack, so each episode flies that long however long the start-up took"""
    release_on_runner_flying: bool = False
    """stay on the stand until Tether's runner says it flies (runner/mode 'policy' or 'human'), as a vehicle
    held by hand is let go once the runner flies it; false: the first command that spins a motor. The
    correction loop sets true: a runner recovering from the last episode's end sends its safe command for a
    few ticks, and an episode that starts under it is not the policy's flight (seen: 140 ms of open-loop
    descent before the policy, the episode failed)"""
    crash_exit_delay_s: float = 1.0
    """how long the crashed vehicle keeps publishing (for the recorder) before the node exits [s]"""
    world_frame: str = "world"
    """frame_id of state/odom's pose"""
    body_frame: str = "base_link"
    """child_frame_id of state/odom and frame_id of state/imu"""
    camera_rate_hz: float = 30.0
    """with a policy that has image inputs: each is rendered by pybullet's own camera (the contract's mount,
    intrinsics, size, encoding) and published with its camera_info this often; 0: no camera [Hz]"""
    camera_frame: str = "camera_depth_optical_frame"
    """frame_id of the images and camera_info (the optical frame: z forward, x right, y down)"""

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.camera_rate_hz <= self.rate_hz:
            raise ValueError(f"camera_rate_hz must be in [0, rate_hz {self.rate_hz}] Hz (0: no camera), got "
                             f"{self.camera_rate_hz}")
        if not self.camera_frame:
            raise ValueError("camera_frame must be a non-empty frame id")
        if not self.cmd_timeout_s > 0:
            raise ValueError(f"cmd_timeout_s must be > 0 [s], got {self.cmd_timeout_s}")
        if not self.flight_s >= 0:
            raise ValueError(f"flight_s must be >= 0 [s] (0: fly until stopped), got {self.flight_s}")
        if not self.crash_exit_delay_s >= 0:
            raise ValueError(f"crash_exit_delay_s must be >= 0 [s], got {self.crash_exit_delay_s}")
        if not self.world_frame or not self.body_frame:
            raise ValueError("world_frame and body_frame must be non-empty frame ids")


def with_policy_rate_gains(cfg: TwinConfig, action) -> TwinConfig:
    """``cfg`` with its firmware rate loop configured for a CTBR policy (``action``: the contract's action
    spec), as a flight controller is set up for the policy it flies: the rate gains it was trained
    against and its body-rate limits, so that a full command means what it meant in training (the
    twin's own default limits, 10/10/5 rad/s, clipped the 12/12/6 rad/s the policies command). Other
    action types: unchanged."""
    if action.type != "ctbr":
        return cfg
    if min(action.rate_kp) > 0:
        cfg = dataclasses.replace(cfg, rate_kp=tuple(float(k) for k in action.rate_kp))
    if min(action.body_rate_limits_rad_s) > 0:
        cfg = dataclasses.replace(cfg, body_rate_limits_rad_s=tuple(float(x) for x in action.body_rate_limits_rad_s))
    return cfg


def twin_vehicle(cfg: TwinConfig) -> VehicleFacts:
    """The twin's nominal vehicle (its preset; disturbances such as a payload are not part of it)."""
    p = PRESETS[cfg.preset]
    return VehicleFacts(name=p.name, mass_kg=p.mass_kg, max_thrust_n=p.max_thrust_n,
                        rotor_pos_b=tuple(tuple(float(x) for x in r) for r in p.rotor_pos_b),
                        rotor_spin=tuple(p.rotor_spin), action_spaces=tuple(cfg.action_spaces))
