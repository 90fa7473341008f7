"""The one Robot interface (LeRobot style): connect, read state, send a command, disconnect.

Every vehicle adapter (digital twin, Crazyflie, MAVLink) implements :class:`Robot`. The schemas are
readable without connecting, ``send`` returns the command actually sent after safety clipping, and
drivers never print or prompt: interactive steps live in command-line tools. Numpy only.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from tether.actions import ActionMap
from tether.contract import ContractError, PolicyContract

Schema = dict[str, tuple[tuple[int, ...], str]]
"""name -> (shape, unit)"""


class RobotError(RuntimeError):
    """A robot adapter cannot do what was asked; the message says why."""


class RobotNotConnectedError(RobotError):
    """read/send/safe_stop called on a robot that is not connected."""


class RobotAlreadyConnectedError(RobotError):
    """connect called on a robot that is already connected."""


class RobotLinkLost(RobotError):
    """The link to the vehicle is gone or silent past the adapter's staleness deadline; the adapter has
    already done what it can (the vehicle's own failsafe covers the rest)."""


def _frozen_vector(value, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.array(value, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class RobotState:
    """One state estimate of the vehicle (what the robot reports, noise included)."""

    stamp_s: float
    """time of the measurement on the robot's clock [s]"""
    pos_w: np.ndarray
    """[3] body origin position in the world frame [m]"""
    quat_wxyz: np.ndarray
    """[4] attitude quaternion, w first, body to world [1]"""
    lin_vel_w: np.ndarray
    """[3] body origin velocity in the world frame [m/s]"""
    ang_vel_b: np.ndarray
    """[3] angular velocity in the body frame [rad/s]"""

    def __post_init__(self):
        for name, shape in (("pos_w", (3,)), ("quat_wxyz", (4,)), ("lin_vel_w", (3,)), ("ang_vel_b", (3,))):
            object.__setattr__(self, name, _frozen_vector(getattr(self, name), shape, name))

    def as_quantities(self) -> dict[str, np.ndarray]:
        """The named vocabulary quantities (tether.contract.VOCABULARY) for build_observation."""
        return {"pos_w": self.pos_w, "quat_wxyz": self.quat_wxyz, "lin_vel_w": self.lin_vel_w,
                "ang_vel_b": self.ang_vel_b}


STATE_SCHEMA: Schema = {
    "stamp_s": ((), "s"),
    "pos_w": ((3,), "m"),
    "quat_wxyz": ((4,), "1"),
    "lin_vel_w": ((3,), "m/s"),
    "ang_vel_b": ((3,), "rad/s"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class RotorCommand:
    """Per-rotor command in the vehicle's motor order."""

    rotor_cmd: np.ndarray
    """[R] fraction of the maximum rotor speed, in [0, 1] [1]"""

    def __post_init__(self):
        a = np.array(self.rotor_cmd, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"rotor_cmd must be one value per rotor, got shape {a.shape}")
        a.flags.writeable = False
        object.__setattr__(self, "rotor_cmd", a)


@dataclasses.dataclass(frozen=True, eq=False)
class CtbrCommand:
    """Collective thrust and body rates, tracked by the vehicle's rate controller."""

    thrust_n: float
    """collective thrust along +z_b [N]"""
    body_rates_b: np.ndarray
    """[3] desired angular velocity in the body frame [rad/s]"""

    def __post_init__(self):
        object.__setattr__(self, "thrust_n", float(self.thrust_n))
        object.__setattr__(self, "body_rates_b", _frozen_vector(self.body_rates_b, (3,), "body_rates_b"))


Command = RotorCommand | CtbrCommand

CTBR_SCHEMA: Schema = {"thrust_n": ((), "N"), "body_rates_b": ((3,), "rad/s")}
"""what an adapter that takes a :class:`CtbrCommand` accepts (its command_schema, or part of it)"""


def check_finite_command(cmd: Command) -> None:
    """Raise ValueError if a command holds NaN or Inf (a robot must never act on one)."""
    if isinstance(cmd, RotorCommand):
        values = cmd.rotor_cmd
    elif isinstance(cmd, CtbrCommand):
        values = np.append(cmd.body_rates_b, cmd.thrust_n)
    else:
        raise TypeError(f"a command is a RotorCommand or CtbrCommand, got {type(cmd).__name__}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{type(cmd).__name__} contains NaN or Inf: {values.tolist()}")


GRAVITY_M_S2 = 9.81
"""[m/s^2], the value sim/ trains with"""

VEHICLE_TOLERANCE = 0.3
"""relative difference of mass, maximum thrust and rotor arm positions accepted between the vehicle a
policy was trained for and the robot it flies [1]. Training randomizes mass by +-10 % and thrust by
-24..+5 %; a calibrated unit of the same model stays well inside 30 %, another vehicle does not."""


@dataclasses.dataclass(frozen=True)
class VehicleFacts:
    """What a policy's contract and a robot must agree on before anything flies."""

    name: str
    """model or preset name, e.g. crazyflie2x"""
    mass_kg: float | None
    """nominal total mass [kg]; None: not recorded"""
    max_thrust_n: float | None
    """sum of all rotors' thrust at full command [N]; None: not recorded"""
    rotor_pos_b: tuple[tuple[float, float, float], ...] = ()
    """rotor hub positions in the body frame, motor order [m]; (): not recorded"""
    rotor_spin: tuple[int, ...] = ()
    """+1 counter-clockwise seen from above, -1 clockwise, motor order; (): not recorded"""
    action_spaces: tuple[str, ...] = ("ctbr", "rotor")
    """command interfaces the flight controller accepts (contract action types)"""
    mass_range_kg: tuple[float, float] | None = None
    """a policy's side: the masses it was trained on [kg] (2.0 contracts); None: only the nominal known"""
    max_thrust_range_n: tuple[float, float] | None = None
    """a policy's side: the maximum thrusts it was trained on [N]; None: only the nominal known"""
    thrust_to_weight_range: tuple[float, float] | None = None
    """a policy's side: the thrust-to-weight ratios it was trained on [1]; None: only the nominal known"""

    @property
    def thrust_to_weight(self) -> float | None:
        if self.mass_kg is None or self.max_thrust_n is None:
            return None
        return self.max_thrust_n / (self.mass_kg * GRAVITY_M_S2)

    def describe(self) -> str:
        parts = []
        if self.mass_kg is not None:
            parts.append(f"{self.mass_kg:.3g} kg")
        if self.max_thrust_n is not None:
            parts.append(f"max thrust {self.max_thrust_n:.3g} N")
        if self.thrust_to_weight is not None:
            parts.append(f"thrust/weight {self.thrust_to_weight:.2f}")
        if self.rotor_spin:
            parts.append(f"{len(self.rotor_spin)} rotors")
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


def contract_vehicle(contract: PolicyContract) -> VehicleFacts:
    """The vehicle a policy was trained for, from its contract: a 2.0 contract's ``vehicle`` section
    (nominal values and the ranges its randomization spans), else (1.0) the calibrated parameters when
    the task config recorded them, else the preset name, the action spec's thrust model and layout, and
    the mass that makes the recorded hover action hover (hover thrust / g)."""
    a, prov = contract.action, contract.provenance
    if contract.vehicle is not None:
        return _v2_vehicle(contract.vehicle, (a.type,))
    cal = (prov.get("task_cfg") or {}).get("vehicle_params") or {}
    name = str(cal.get("name") or prov.get("preset") or "an unnamed vehicle")
    max_thrust = a.max_thrust_n if a.max_thrust_n > 0 else None
    if max_thrust is None and a.kf_n_per_rpm2 > 0 and a.max_rpm > 0 and a.rotors:
        max_thrust = len(a.rotors) * a.kf_n_per_rpm2 * a.max_rpm ** 2
    mass = cal.get("mass_kg")
    if mass is None:
        try:
            hover = ActionMap(a).hover_thrust_n if a.type == "ctbr" or a.max_rpm > 0 else None
        except ContractError:  # the spec lacks the thrust model: the mass stays unknown, never compared
            hover = None
        mass = None if hover is None else hover / GRAVITY_M_S2
    return VehicleFacts(name=name, mass_kg=None if mass is None else float(mass), max_thrust_n=max_thrust,
                        rotor_pos_b=tuple(tuple(float(x) for x in r.pos_b) for r in a.rotors),
                        rotor_spin=tuple(int(r.spin) for r in a.rotors), action_spaces=(a.type,))


def _v2_vehicle(v, action_spaces: tuple[str, ...]) -> VehicleFacts:
    """VehicleFacts of a 2.0 ``vehicle`` section, with the spans its randomization trained on (scales
    multiply the nominal; thrust_to_weight, when set, fixes max rpm per vehicle from mass and kf)."""
    r = v.randomization

    def span(key: str) -> tuple[float, float]:
        lo, hi = r.get(key) or (1.0, 1.0)
        return float(lo), float(hi)

    m_lo, m_hi = span("mass_scale")
    mass = (v.mass_kg * m_lo, v.mass_kg * m_hi)
    if r.get("thrust_to_weight") is not None:
        twr = span("thrust_to_weight")
        thrust = (twr[0] * mass[0] * v.gravity_m_s2, twr[1] * mass[1] * v.gravity_m_s2)
    else:  # max rpm fixed: max thrust scales with kf alone
        k_lo, k_hi = span("kf_scale")
        thrust = (v.max_thrust_n * k_lo, v.max_thrust_n * k_hi)
        twr = (thrust[0] / (mass[1] * v.gravity_m_s2), thrust[1] / (mass[0] * v.gravity_m_s2))
    return VehicleFacts(name=v.name, mass_kg=v.mass_kg, max_thrust_n=v.max_thrust_n,
                        rotor_pos_b=tuple(tuple(float(x) for x in rot.pos_b) for rot in v.rotors),
                        rotor_spin=tuple(int(rot.spin) for rot in v.rotors), action_spaces=action_spaces,
                        mass_range_kg=mass, max_thrust_range_n=thrust, thrust_to_weight_range=twr)


def _rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def vehicle_mismatches(trained: VehicleFacts, robot: VehicleFacts,
                       tolerance: float = VEHICLE_TOLERANCE) -> list[str]:
    """What differs between the vehicle a policy was trained for and the robot (empty: they agree).
    Facts one side did not record are not compared."""
    out = []
    for what, unit, fmt, value_a, value_b, span in (
            ("mass", " kg", ".3g", trained.mass_kg, robot.mass_kg, trained.mass_range_kg),
            ("max thrust", " N", ".3g", trained.max_thrust_n, robot.max_thrust_n, trained.max_thrust_range_n),
            ("thrust/weight", "", ".2f", trained.thrust_to_weight, robot.thrust_to_weight,
             trained.thrust_to_weight_range)):
        if value_a is None or value_b is None:
            continue
        if span is not None:
            # 2.0: the policy knows the span it was trained on; the same margin the nominal check allows
            lo, hi = span
            if not lo / (1.0 + tolerance) <= value_b <= hi * (1.0 + tolerance):
                out.append(f"{what} {value_b:{fmt}}{unit} outside the trained {lo:{fmt}}-{hi:{fmt}}{unit} "
                           f"(+-{tolerance:.0%} margin)")
        elif _rel_diff(value_b, value_a) > tolerance:
            out.append(f"{what} {value_a:{fmt}} vs {value_b:{fmt}}{unit}")
    if trained.rotor_spin and robot.rotor_spin:
        if len(trained.rotor_spin) != len(robot.rotor_spin):
            out.append(f"{len(trained.rotor_spin)} vs {len(robot.rotor_spin)} rotors")
        else:
            if tuple(trained.rotor_spin) != tuple(robot.rotor_spin):
                out.append(f"rotor spins {list(trained.rotor_spin)} vs {list(robot.rotor_spin)} (motor order)")
            if trained.rotor_pos_b and robot.rotor_pos_b:
                pa, pb = np.asarray(trained.rotor_pos_b), np.asarray(robot.rotor_pos_b)
                arm = max(float(np.max(np.hypot(pa[:, 0], pa[:, 1]))), 1e-9)
                worst = float(np.max(np.linalg.norm(pa - pb, axis=1)))
                if worst > tolerance * arm:
                    out.append(f"rotor positions differ by up to {worst * 1e3:.0f} mm (arm {arm * 1e3:.0f} mm)")
    return out


def check_vehicle(contract: PolicyContract, robot: VehicleFacts, robot_kind: str = "the robot") -> None:
    """Refuse (ContractError, one line naming both vehicles) a policy trained for another vehicle or
    action space than ``robot``."""
    trained = contract_vehicle(contract)
    action = contract.action.type
    if action not in robot.action_spaces:
        raise ContractError(f"the policy outputs {action} commands but {robot_kind} {robot.name} accepts only "
                            f"{list(robot.action_spaces)}; deploy a policy trained with action_space="
                            f"{robot.action_spaces[0]}, or a robot that accepts {action}")
    diff = vehicle_mismatches(trained, robot)
    if diff:
        raise ContractError(f"policy was trained for {trained.describe()} but {robot_kind} is {robot.describe()}; "
                            f"{', '.join(diff)}: deploy a policy trained for {robot.name}, or a robot "
                            f"matching {trained.name}")


class Robot(abc.ABC):
    """A vehicle the deploy side can fly. Subclasses must not print or prompt."""

    name: str = "robot"
    vehicle: VehicleFacts | None = None
    """what the contract is checked against (check_vehicle); None: the adapter does not say"""

    @property
    def state_schema(self) -> Schema:
        """What :meth:`read` returns: name -> (shape, unit). Readable without connecting."""
        return dict(STATE_SCHEMA)

    @property
    @abc.abstractmethod
    def command_schema(self) -> Schema:
        """What :meth:`send` accepts: name -> (shape, unit). Readable without connecting."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link to the vehicle; raises RobotAlreadyConnectedError or RobotError."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop the motors and close the link. Safe to call when not connected."""

    @abc.abstractmethod
    def read(self) -> RobotState:
        """Latest state estimate; raises RobotNotConnectedError when not connected."""

    @abc.abstractmethod
    def send(self, cmd: Command) -> Command:
        """Send a command; returns the command actually sent after safety clipping.

        Raises ValueError for a malformed or non-finite command (the previous command stays in force).
        """

    @abc.abstractmethod
    def safe_stop(self) -> None:
        """Bring the vehicle to a safe state now (motors off, or land where the vehicle can)."""

    def arm(self) -> None:
        """Arm the motors (after the adapter's own pre-arm checks); raises RobotError when the vehicle
        refuses, naming why. Vehicles without an arming step: nothing to do."""
        self._require_connected("arm")

    def disarm(self) -> None:
        """Disarm the motors. Vehicles without an arming step: stop them."""
        self.safe_stop()

    def land(self) -> None:
        """Land where the vehicle can (PX4/ArduPilot LAND mode, a descent setpoint); the default is
        :meth:`safe_stop`."""
        self.safe_stop()

    def battery_v(self) -> float | None:
        """Latest battery voltage [V]; None: the adapter does not measure it."""
        return None

    def _require_connected(self, what: str) -> None:
        if not self.is_connected:
            raise RobotNotConnectedError(f"{self.name}: {what} needs a connected robot; call connect() first")

    def __enter__(self) -> "Robot":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
