"""The one Robot interface (LeRobot style): connect, read state, send a command, disconnect.

Every vehicle adapter (digital twin, Crazyflie, MAVLink) implements :class:`Robot`. The schemas are
readable without connecting, ``send`` returns the command actually sent after safety clipping, and
drivers never print or prompt: interactive steps live in command-line tools. Numpy only.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from tether.contract import ContractError, PolicyContract

Schema = dict[str, tuple[tuple[int, ...], str]]
"""name -> (shape, unit)"""


class RobotError(RuntimeError):
    """A robot adapter cannot do what was asked; the message says why."""


class RobotNotConnectedError(RobotError):
    """read/send/safe_stop called on a robot that is not connected."""


class RobotAlreadyConnectedError(RobotError):
    """connect called on a robot that is already connected."""


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
    """The vehicle a policy was trained for, from its contract: the calibrated parameters when the task
    config recorded them, else the preset name, the action spec's thrust model and layout, and the mass
    that makes the recorded hover action hover (hover thrust / g)."""
    a, prov = contract.action, contract.provenance
    cal = (prov.get("task_cfg") or {}).get("vehicle_params") or {}
    name = str(cal.get("name") or prov.get("preset") or "an unnamed vehicle")
    max_thrust = a.max_thrust_n if a.max_thrust_n > 0 else None
    if max_thrust is None and a.kf_n_per_rpm2 > 0 and a.max_rpm > 0 and a.rotors:
        max_thrust = len(a.rotors) * a.kf_n_per_rpm2 * a.max_rpm ** 2
    mass = cal.get("mass_kg")
    if mass is None and len(a.hover_action) == a.dim and a.dim:
        h = np.asarray(a.hover_action, dtype=np.float64)
        if a.type == "ctbr" and a.max_thrust_n > 0:
            mass = (h[0] + 1.0) / 2.0 * a.max_thrust_n / GRAVITY_M_S2
        elif a.type == "rotor" and a.kf_n_per_rpm2 > 0 and a.max_rpm > 0:
            mass = float(np.sum(a.kf_n_per_rpm2 * ((h + 1.0) / 2.0 * a.max_rpm) ** 2)) / GRAVITY_M_S2
    return VehicleFacts(name=name, mass_kg=None if mass is None else float(mass), max_thrust_n=max_thrust,
                        rotor_pos_b=tuple(tuple(float(x) for x in r.pos_b) for r in a.rotors),
                        rotor_spin=tuple(int(r.spin) for r in a.rotors), action_spaces=(a.type,))


def _rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def vehicle_mismatches(trained: VehicleFacts, robot: VehicleFacts,
                       tolerance: float = VEHICLE_TOLERANCE) -> list[str]:
    """What differs between the vehicle a policy was trained for and the robot (empty: they agree).
    Facts one side did not record are not compared."""
    out = []
    if trained.mass_kg is not None and robot.mass_kg is not None and \
            _rel_diff(robot.mass_kg, trained.mass_kg) > tolerance:
        out.append(f"mass {trained.mass_kg:.3g} vs {robot.mass_kg:.3g} kg")
    if trained.max_thrust_n is not None and robot.max_thrust_n is not None and \
            _rel_diff(robot.max_thrust_n, trained.max_thrust_n) > tolerance:
        out.append(f"max thrust {trained.max_thrust_n:.3g} vs {robot.max_thrust_n:.3g} N")
    tw_a, tw_b = trained.thrust_to_weight, robot.thrust_to_weight
    if tw_a is not None and tw_b is not None and _rel_diff(tw_b, tw_a) > tolerance:
        out.append(f"thrust/weight {tw_a:.2f} vs {tw_b:.2f}")
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

    def _require_connected(self, what: str) -> None:
        if not self.is_connected:
            raise RobotNotConnectedError(f"{self.name}: {what} needs a connected robot; call connect() first")

    def __enter__(self) -> "Robot":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
