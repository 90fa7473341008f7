"""The one Robot interface (LeRobot style): connect, read state, send a command, disconnect.

Every vehicle adapter (digital twin, Crazyflie, MAVLink) implements :class:`Robot`. The schemas are
readable without connecting, ``send`` returns the command actually sent after safety clipping, and
drivers never print or prompt: interactive steps live in command-line tools. Numpy only.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

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


class Robot(abc.ABC):
    """A vehicle the deploy side can fly. Subclasses must not print or prompt."""

    name: str = "robot"

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
