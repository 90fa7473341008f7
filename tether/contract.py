"""The policy contract: `policy.json` beside `policy.onnx`.

This module is the single source of truth for what an exported policy consumes and produces. It is
torch-free on purpose: policies/ writes contracts with it and the robot side (ros2_ws/, hardware/)
reads them with it, so the observation layout and action scaling are never re-typed by hand. The
executable meaning of the actions (normalized <-> physical, thrust allocation, the rate loop) is
:mod:`tether.actions`.

Conventions (stated once, here):
  * SI units everywhere.
  * Quaternions are ordered ``wxyz`` and rotate body-frame vectors into the world frame.
  * ``rotmat_bw`` is the same rotation as a 3x3 matrix (body -> world), flattened row-major.
  * Body axes FLU (x forward, y left, z up); world axes ENU (z up, gravity along -z).

Versions: 2.0 adds the sections ``vehicle`` (what it was trained on, with the randomization ranges),
``latency`` (the delay distribution and where it acts), ``controller`` (what the outputs drive) and
``frames`` (axes, initial action history, hold rule). 1.0 files still load; ``contract.missing``
names the sections they lack and :func:`compat_note` says what that limits. 2.1 adds ``images``: image
inputs beside the state vector (observation groups: the vector group is ``observation``, fed as the
ONNX input ``input_name``; each :class:`ImageInput` is one more ONNX input of its own name). A 2.0
runtime refuses a 2.1 policy at load (its ONNX has inputs the 2.0 contract reader does not feed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any

from tether.config import check_value, config_to_dict, field_docs

CONTRACT_VERSION = "2.0"
IMAGES_CONTRACT_VERSION = "2.1"
"""the version of a contract with image inputs (``images``); without them a contract is 2.0"""
SUPPORTED_MAJOR_VERSIONS = ("1", "2")
V2_SECTIONS = ("vehicle", "latency", "controller", "frames")
QUATERNION_ORDER = "wxyz"


class ContractError(ValueError):
    """A policy or its contract is malformed or does not match; the message says exactly what."""


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One entry of the shared observation vocabulary."""

    unit: str
    frame: str
    length: int | None  # None: the length depends on the policy (e.g. action history)
    doc: str


# The shared vocabulary. Any robot, log or other simulator can be mapped onto a policy by providing
# these named quantities; nothing else about the training code needs to be known.
VOCABULARY: dict[str, Quantity] = {
    "pos_w": Quantity("m", "world", 3, "body origin position in the world frame"),
    "goal_w": Quantity("m", "world", 3, "goal position in the world frame"),
    "pos_err_w": Quantity("m", "world", 3, "goal_w minus pos_w"),
    "pos_err_b": Quantity("m", "body", 3, "goal_w minus pos_w, rotated into the body frame"),
    "up_b": Quantity("1", "body", 3, "world +z (up) unit vector in the body frame: the projected gravity direction"),
    "goal_vel_w": Quantity("m/s", "world", 3, "goal (reference) velocity in the world frame"),
    "quat_wxyz": Quantity("1", "body->world", 4, "attitude quaternion, w first, body to world"),
    "rotmat_bw": Quantity("1", "body->world", 9, "attitude rotation matrix body to world, row-major"),
    "lin_vel_w": Quantity("m/s", "world", 3, "linear velocity of the body origin in the world frame"),
    "lin_vel_b": Quantity("m/s", "body", 3, "linear velocity of the body origin in the body frame"),
    "goal_vel_b": Quantity("m/s", "body", 3, "goal (reference) velocity rotated into the body frame"),
    "ang_vel_b": Quantity("rad/s", "body", 3, "angular velocity in the body frame"),
    "prev_actions": Quantity("1", "action", None, "the last k actions sent, oldest first, normalized"),
    "pos_err_int_b": Quantity("m s", "body", 3, "integral of pos_err_w over the flight's control ticks (each tick "
                              "adds control_dt * pos_err_w, components clipped to +-0.05 m, before the "
                              "observation; the sum clipped to +-0.5 m s: tether.observation."
                              "PositionErrorIntegral), rotated into the body frame"),
    "depth_c": Quantity("m", "camera", None, "depth image in the camera frame"),
}

ACTION_TYPES = ("rotor", "ctbr")


@dataclasses.dataclass(frozen=True)
class ObsSlice:
    name: str
    offset: int
    length: int
    unit: str
    frame: str
    scale: float = 1.0  # multiplied onto the quantity before the network (normalizer is in the graph)


@dataclasses.dataclass(frozen=True)
class Rotor:
    pos_b: tuple[float, float, float]  # rotor hub position in the body frame [m]
    spin: int  # +1: spins counter-clockwise seen from above (+z_b), -1: clockwise


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """What the network's outputs mean, in order, and how they map to physical units.

    Outputs are normalized to [low, high] = [-1, 1] (clipped there before use).
      rotor: output i commands rotor i of ``rotors``: (a + 1) / 2 is a fraction of the flown vehicle's
             own max rotor speed (max_rpm here is the trained nominal's: rotor speed [rpm] =
             (a + 1) / 2 * max_rpm on it), thrust [N] = kf * rpm^2, reaction torque [N m] =
             -spin * km * rpm^2 about z_b.
      ctbr:  output 0 is collective thrust [N] = (a + 1) / 2 * max_thrust_n; outputs 1..3 are body
             rates [rad/s] = a * body_rate_limits_rad_s about x_b, y_b, z_b (FLU), tracked by the rate
             loop the 2.0 ``controller`` section states (gains rate_kp; a robot's own firmware replaces it).
    Executable: :class:`tether.actions.ActionMap`.
    """

    type: str
    dim: int
    low: float = -1.0
    high: float = 1.0
    rotors: tuple[Rotor, ...] = ()
    max_rpm: float = 0.0
    kf_n_per_rpm2: float = 0.0
    km_nm_per_rpm2: float = 0.0
    max_thrust_n: float = 0.0
    body_rate_limits_rad_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rate_kp: tuple[float, float, float] = (0.0, 0.0, 0.0)  # ctbr: rate-controller P gain per axis [1/s]
    hover_action: tuple[float, ...] = ()  # the action that hovers the nominal vehicle

    @property
    def output_names(self) -> tuple[str, ...]:
        """One name per output, in order (commands on ROS carry them): the meaning above, as words."""
        if self.type == "ctbr":
            return ("collective_thrust", "body_rate_x", "body_rate_y", "body_rate_z")[:self.dim]
        return tuple(f"rotor_{i}_speed" for i in range(self.dim))

    @property
    def output_units(self) -> tuple[str, ...]:
        """The physical unit each normalized output maps to (see the class doc for the mapping)."""
        if self.type == "ctbr":
            return ("N", "rad/s", "rad/s", "rad/s")[:self.dim]
        return ("rpm",) * self.dim

    def __post_init__(self):
        if self.type not in ACTION_TYPES:
            raise ContractError(f"action.type must be one of {ACTION_TYPES}, got {self.type!r}")
        if self.type == "rotor" and len(self.rotors) != self.dim:
            raise ContractError(f"action.rotors has {len(self.rotors)} entries for {self.dim} outputs")


# ------------------------------------------------------------------------------ 2.0 sections

CONTROLLER_TYPES = ("rate_p_gyro_ff", "direct")
ROTOR_COMMANDS = ("fraction_of_vehicle_max_rpm", "absolute_rpm")
INITIAL_ACTION_HISTORIES = ("hover", "zeros")
HOLD_RULES = ("zero_order",)
LATENCY_DISTRIBUTIONS = ("uniform_steps",)


@dataclasses.dataclass(frozen=True)
class VehicleSpec:
    """The nominal vehicle a policy was trained on, and the randomization around it (SI)."""

    name: str
    """preset or calibrated unit name, e.g. crazyflie2x"""
    mass_kg: float
    """total mass [kg]"""
    inertia_kg_m2: tuple[float, float, float]
    """principal moments of inertia about x_b, y_b, z_b [kg m^2]"""
    rotors: tuple[Rotor, ...]
    """rotor layout in motor order: hub position in the body frame [m] and spin"""
    kf_n_per_rpm2: float
    """thrust coefficient: rotor thrust [N] = kf * rpm^2"""
    km_nm_per_rpm2: float
    """torque coefficient: reaction torque [N m] = -spin * km * rpm^2 about z_b"""
    max_rpm: float
    """rotor speed at full command [rpm]"""
    tau_up_s: float
    """first-order motor time constant when speeding up [s]"""
    tau_down_s: float
    """first-order motor time constant when slowing down [s]"""
    drag_n_s_per_m: tuple[float, float, float]
    """linear drag along x_b, y_b, z_b: F_b = -drag * v_b [N s/m]"""
    rotor_gain: tuple[float, ...] | None = None
    """thrust and reaction-torque multiplier per rotor, motor order [1]; None: all 1"""
    gravity_m_s2: float = 9.81
    """gravity along -z_w [m/s^2]"""
    randomization: dict[str, Any] = dataclasses.field(default_factory=dict)
    """the training ranges, field -> value as the task config holds them ([low, high] sampled uniformly
    and independently per env at every episode start, unless its doc says otherwise)"""
    randomization_doc: dict[str, str] = dataclasses.field(default_factory=dict)
    """field -> what it multiplies or sets, with its unit (the training config's own field docs)"""
    source: str = ""
    """where the nominal values come from"""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """further nominal parameters of the preset, by their preset names (units in the names)"""

    @property
    def max_thrust_n(self) -> float:
        """sum of all rotors' thrust at full command [N] (rotor gain not applied)"""
        return len(self.rotors) * self.kf_n_per_rpm2 * self.max_rpm ** 2

    @property
    def thrust_to_weight(self) -> float:
        return self.max_thrust_n / (self.mass_kg * self.gravity_m_s2)

    @property
    def hover_rpm(self) -> float:
        """rotor speed at which equal rotors carry the weight [rpm]"""
        return math.sqrt(self.mass_kg * self.gravity_m_s2 / (len(self.rotors) * self.kf_n_per_rpm2))

    DERIVED = ("max_thrust_n", "thrust_to_weight", "hover_rpm")  # written for readers, checked on load

    def __post_init__(self):
        for name in ("mass_kg", "kf_n_per_rpm2", "max_rpm", "tau_up_s", "tau_down_s", "gravity_m_s2"):
            if not getattr(self, name) > 0:
                raise ContractError(f"vehicle.{name} must be positive, got {getattr(self, name)!r}")
        if not self.rotors or min(self.inertia_kg_m2) <= 0:
            raise ContractError("vehicle needs rotors and three positive inertia_kg_m2")
        if self.rotor_gain is not None and len(self.rotor_gain) != len(self.rotors):
            raise ContractError(f"vehicle.rotor_gain has {len(self.rotor_gain)} values for {len(self.rotors)} rotors")

    @classmethod
    def from_preset(cls, preset: Any, randomization: Any = None, gravity_m_s2: float = 9.81) -> "VehicleSpec":
        """From any preset dataclass holding these fields by name (sim.quadrotor.presets.QuadrotorPreset)
        with ``rotor_pos_b`` + ``rotor_spin``, and a randomization config dataclass: every field of both
        is written, so a parameter or range added there appears here without an edit."""
        nominal = config_to_dict(preset)
        rotors = tuple(Rotor(tuple(float(x) for x in p), int(s))
                       for p, s in zip(nominal.pop("rotor_pos_b"), nominal.pop("rotor_spin")))
        own = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _tuples(v) for k, v in nominal.items() if k in own}
        extra = {k: v for k, v in nominal.items() if k not in own}
        ranges = config_to_dict(randomization) if randomization is not None else {}
        docs = field_docs(type(randomization)) if randomization is not None else {}
        return cls(rotors=rotors, gravity_m_s2=gravity_m_s2, randomization=ranges, randomization_doc=docs,
                   extra=extra, **kwargs)


@dataclasses.dataclass(frozen=True)
class LatencySpec:
    """The action delay training sampled, and where it acts."""

    min_steps: int
    """fewest whole control periods of delay [1]"""
    max_steps: int
    """most whole control periods of delay [1]"""
    step_s: float
    """one control period, 1 / control_rate_hz [s]"""
    distribution: str = "uniform_steps"
    """'uniform_steps': k control periods, k uniform over {min_steps, ..., max_steps}, drawn per env at
    every episode start and fixed for the episode"""
    acts_on: str = ("the normalized action, before the action mapping and the rate controller (which "
                    "sees the measured body rates undelayed); prev_actions in the observation hold the "
                    "undelayed actions")
    """what the delay applies to"""

    def __post_init__(self):
        if self.distribution not in LATENCY_DISTRIBUTIONS:
            raise ContractError(f"latency.distribution must be one of {LATENCY_DISTRIBUTIONS}, got {self.distribution!r}")
        if not 0 <= self.min_steps <= self.max_steps or not self.step_s > 0:
            raise ContractError(f"latency needs 0 <= min_steps <= max_steps and step_s > 0, got "
                                f"{self.min_steps}, {self.max_steps}, {self.step_s}")

    @property
    def values_s(self) -> tuple[float, ...]:
        """every delay training used [s]"""
        return tuple(k * self.step_s for k in range(self.min_steps, self.max_steps + 1))

    @property
    def mean_s(self) -> float:
        return 0.5 * (self.min_steps + self.max_steps) * self.step_s


@dataclasses.dataclass(frozen=True)
class ControllerSpec:
    """What the outputs drive in training (the robot's own inner loop should match it)."""

    type: str
    """'rate_p_gyro_ff' (ctbr): torque_b = J * rate_kp * (rates_des_b - w_b) + w_b x (J w_b), then
    least-squares allocation to rotor thrusts (negative ones clipped to 0), then each rotor's command
    sqrt(f / kf) / max_rpm clipped to [0, 1]; J, allocation, kf and max_rpm of the NOMINAL vehicle
    (tether.actions.RateController). 'direct' (rotor): each output is its rotor's command, no loop"""
    loop_rate_hz: float
    """how often the loop (ctbr) or the motor command (rotor) is evaluated: control_rate_hz * substeps [Hz]"""
    rotor_command: str = "fraction_of_vehicle_max_rpm"
    """what a rotor command means: 'fraction_of_vehicle_max_rpm' (rpm = command * the flown vehicle's own
    max rpm, for each randomized vehicle its own) or 'absolute_rpm'"""
    rate_kp: tuple[float, ...] = ()
    """ctbr: rate-error gain about x_b, y_b, z_b [1/s]"""
    inertia_kg_m2: tuple[float, ...] = ()
    """ctbr: the nominal principal inertia the loop multiplies by [kg m^2]"""
    feedforward: tuple[str, ...] = ()
    """ctbr: feed-forward terms, e.g. 'gyroscopic: w_b x (J w_b)'"""

    def __post_init__(self):
        if self.type not in CONTROLLER_TYPES:
            raise ContractError(f"controller.type must be one of {CONTROLLER_TYPES}, got {self.type!r}")
        if self.rotor_command not in ROTOR_COMMANDS:
            raise ContractError(f"controller.rotor_command must be one of {ROTOR_COMMANDS}, got {self.rotor_command!r}")
        if not self.loop_rate_hz > 0:
            raise ContractError(f"controller.loop_rate_hz must be positive [Hz], got {self.loop_rate_hz!r}")
        if self.type == "rate_p_gyro_ff" and (len(self.rate_kp) != 3 or len(self.inertia_kg_m2) != 3
                                              or min(self.rate_kp) <= 0 or min(self.inertia_kg_m2) <= 0):
            raise ContractError("a rate_p_gyro_ff controller needs three positive rate_kp [1/s] and inertia_kg_m2")


@dataclasses.dataclass(frozen=True)
class FramesSpec:
    """Axes and the timing rules of the action stream."""

    body: str = "FLU"
    """body axes: x forward, y left, z up"""
    world: str = "ENU"
    """world axes: x east, y north, z up; gravity along -z"""
    initial_action_history: str = "hover"
    """what prev_actions and the delay queue hold at an episode start: 'hover' (action.hover_action in
    every slot) or 'zeros'"""
    hold: str = "zero_order"
    """'zero_order': an action holds unchanged from the tick it takes effect until the next one"""

    def __post_init__(self):
        if self.body != "FLU" or self.world != "ENU":
            raise ContractError(f"frames: this runtime reads body FLU and world ENU, got {self.body}, {self.world}")
        if self.initial_action_history not in INITIAL_ACTION_HISTORIES:
            raise ContractError(f"frames.initial_action_history must be one of {INITIAL_ACTION_HISTORIES}, "
                                f"got {self.initial_action_history!r}")
        if self.hold not in HOLD_RULES:
            raise ContractError(f"frames.hold must be one of {HOLD_RULES}, got {self.hold!r}")


IMAGE_ENCODINGS = ("32FC1", "16UC1")
IMAGE_POOLINGS = ("nearest",)


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """One image input of a policy (an observation group of its own): what the robot's camera must
    publish, and what the network does with it.

    The ONNX input ``name`` takes the camera image as published, decoded to metres: float32 [B, 1,
    height, width], z-depth along the optical axis, with REP 117 special values (+inf: no return within
    range, -inf: too near, NaN: invalid; a 16UC1 image's 0 is NaN). Everything after that is IN the
    graph (one implementation, the one trained with): +inf -> max_range_m, -inf -> min_range_m, the
    ``pooling`` down to pooled_height x pooled_width (NaN ignored unless a whole block is NaN), a block
    still NaN -> ``invalid_m``, then the encoder. So the runner only decodes, checks and feeds.
    """

    name: str
    """ONNX input name and observation group, e.g. 'depth'"""
    quantity: str
    """vocabulary entry the image holds, e.g. 'depth_c'"""
    width: int
    """image width the camera publishes and the input takes [px]"""
    height: int
    """image height [px]"""
    encoding: str
    """REP 118 encoding of the sensor_msgs/Image: '32FC1' (metres) or '16UC1' (millimetres, 0 = no data)"""
    topic: str
    """sensor_msgs/Image topic the runner subscribes to (relative to the robot's namespace)"""
    camera_info_topic: str
    """sensor_msgs/CameraInfo topic of the same camera"""
    fx_fy_cx_cy_px: tuple[float, float, float, float]
    """nominal intrinsics trained with at width x height, pixel centres at integers (camera_info P) [px]"""
    intrinsics_tolerance_rel: float
    """a camera_info whose fx, fy differ by more than this fraction, or cx, cy by more than this fraction of
    the width / height, from the nominal ones is refused (training randomized within it) [1]"""
    mount_position_b_m: tuple[float, float, float]
    """camera_link origin in the body frame (FLU) [m]"""
    mount_rpy_rad: tuple[float, float, float]
    """camera_link roll, pitch, yaw in the body frame, URDF convention, pitch > 0 looks down [rad];
    the optical frame is z forward, x right, y down (REP 103)"""
    min_range_m: float
    """nearer returns are -inf, then read as this in the graph [m]"""
    max_range_m: float
    """returns beyond this are +inf, then read as this in the graph [m]"""
    pooling: str
    """'nearest': the nearest depth of each block (a max-pool of -depth), in the graph"""
    pooled_width: int
    """width after pooling: width must be a multiple of it [px]"""
    pooled_height: int
    """height after pooling: height must be a multiple of it [px]"""
    invalid_m: float
    """what a pooled block with no valid pixel reads, in the graph [m]"""
    max_age_s: float
    """an image whose header stamp is older than this at the tick is unusable (the policy is not run on
    it; the robot holds a safe action) [s]"""
    normalization: str = "depth_m / max_range_m, in the graph"
    """what the graph does to the pooled depth before the encoder (for readers)"""

    def __post_init__(self):
        if self.quantity not in VOCABULARY or VOCABULARY[self.quantity].frame != "camera":
            raise ContractError(f"images.{self.name}: quantity {self.quantity!r} is not a camera quantity of the "
                                f"vocabulary")
        if self.encoding not in IMAGE_ENCODINGS:
            raise ContractError(f"images.{self.name}: encoding must be one of {IMAGE_ENCODINGS}, got {self.encoding!r}")
        if self.pooling not in IMAGE_POOLINGS:
            raise ContractError(f"images.{self.name}: pooling must be one of {IMAGE_POOLINGS}, got {self.pooling!r}")
        if min(self.width, self.height, self.pooled_width, self.pooled_height) < 1 or \
                self.width % self.pooled_width or self.height % self.pooled_height:
            raise ContractError(f"images.{self.name}: {self.width}x{self.height} px must be a whole multiple of the "
                                f"pooled {self.pooled_width}x{self.pooled_height}")
        if not 0.0 <= self.min_range_m < self.max_range_m or not math.isfinite(self.max_range_m):
            raise ContractError(f"images.{self.name}: need 0 <= min_range_m < max_range_m < inf [m], got "
                                f"{self.min_range_m}, {self.max_range_m}")
        if not self.max_age_s > 0 or not self.intrinsics_tolerance_rel >= 0:
            raise ContractError(f"images.{self.name}: max_age_s must be > 0 s and intrinsics_tolerance_rel >= 0")
        if len(self.fx_fy_cx_cy_px) != 4 or min(self.fx_fy_cx_cy_px[:2]) <= 0:
            raise ContractError(f"images.{self.name}: fx_fy_cx_cy_px needs 4 values with fx, fy > 0 [px]")

    @property
    def shape(self) -> tuple[int, int, int]:
        """the ONNX input's shape after the batch axis: (channels, height, width)"""
        return (1, self.height, self.width)

    def intrinsics_error(self, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> str | None:
        """None if a camera_info (its P, at width x height) matches what training used, else what differs."""
        if (width, height) != (self.width, self.height):
            return f"camera_info is {width}x{height} px, the policy takes {self.width}x{self.height}"
        nfx, nfy, ncx, ncy = self.fx_fy_cx_cy_px
        tol = self.intrinsics_tolerance_rel
        if abs(fx - nfx) > tol * nfx or abs(fy - nfy) > tol * nfy:
            return f"camera_info focal lengths ({fx:.1f}, {fy:.1f}) px differ from the trained ({nfx:.1f}, {nfy:.1f}) " \
                   f"by more than {tol:.0%}"
        if abs(cx - ncx) > tol * self.width or abs(cy - ncy) > tol * self.height:
            return f"camera_info principal point ({cx:.1f}, {cy:.1f}) px differs from the trained ({ncx:.1f}, " \
                   f"{ncy:.1f}) by more than {tol:.0%} of the image"
        return None


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class PolicyContract:
    task: str
    control_rate_hz: float
    action_latency_s: float
    """mean of the latency distribution [s] (1.0 field; 2.0 states the distribution in ``latency``)"""
    observation: tuple[ObsSlice, ...]
    action: ActionSpec
    provenance: dict[str, Any]
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)
    recurrent_state: dict[str, Any] | None = None
    version: str | None = None
    """None: the version these fields make (2.0 with every 2.0 section, else 1.0)"""
    quaternion_order: str = QUATERNION_ORDER
    input_name: str = "obs"
    output_name: str = "actions"
    vehicle: VehicleSpec | None = None
    """2.0: the nominal vehicle trained on and the randomization ranges"""
    latency: LatencySpec | None = None
    """2.0: the action delay distribution and where it acts"""
    controller: ControllerSpec | None = None
    """2.0: what the outputs drive"""
    frames: FramesSpec | None = None
    """2.0: axes, initial action history, hold rule"""
    images: tuple[ImageInput, ...] = ()
    """2.1: image inputs, each one more ONNX input after ``input_name`` in this order"""

    def __post_init__(self):
        if self.version is None:
            object.__setattr__(self, "version", "1.0" if self.missing else
                               IMAGES_CONTRACT_VERSION if self.images else CONTRACT_VERSION)
        if str(self.version).split(".")[0] not in SUPPORTED_MAJOR_VERSIONS:
            raise ContractError(f"contract version {self.version!r} is not supported (this runtime reads "
                                f"{', '.join(v + '.x' for v in SUPPORTED_MAJOR_VERSIONS)})")
        if self.major_version >= 2 and self.missing:
            raise ContractError(f"contract {self.version} is missing its section(s) {list(self.missing)}")
        if self.images and (self.major_version, int(str(self.version).split(".")[1])) < (2, 1):
            raise ContractError(f"contract {self.version} cannot hold images (they need {IMAGES_CONTRACT_VERSION})")
        names = [self.input_name] + [im.name for im in self.images]
        if len(set(names)) != len(names):
            raise ContractError(f"input names must differ, got {names}")
        _check_sections(self)

    @property
    def input_names(self) -> tuple[str, ...]:
        """the ONNX inputs in order: the state vector, then each image"""
        return (self.input_name,) + tuple(im.name for im in self.images)

    def image(self, name: str) -> ImageInput:
        for im in self.images:
            if im.name == name:
                return im
        raise KeyError(f"policy has no image input {name!r}; it has {[im.name for im in self.images]}")

    @property
    def major_version(self) -> int:
        return int(str(self.version).split(".")[0])

    @property
    def missing(self) -> tuple[str, ...]:
        """The 2.0 sections this contract lacks (a 1.0 file lacks all of them)."""
        return tuple(name for name in V2_SECTIONS if getattr(self, name) is None)

    @property
    def obs_dim(self) -> int:
        return sum(s.length for s in self.observation)

    def slice(self, name: str) -> ObsSlice:
        for s in self.observation:
            if s.name == name:
                return s
        raise KeyError(f"observation has no slice {name!r}; it has {[s.name for s in self.observation]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["obs_dim"] = self.obs_dim
        for name in V2_SECTIONS:
            if d[name] is None:
                del d[name]
        if not self.images:
            del d["images"]
        if self.vehicle is not None:
            d["vehicle"].update({k: getattr(self.vehicle, k) for k in VehicleSpec.DERIVED})
        if self.latency is not None:
            d["latency"].update(values_s=list(self.latency.values_s), mean_s=self.latency.mean_s)
        return d


def compat_note(contract: PolicyContract) -> str | None:
    """One line saying what an older contract lacks and what that limits; None for a complete one."""
    if not contract.missing:
        return None
    return (f"policy.json {contract.version}: no {', '.join(contract.missing)} section"
            f"{'s' if len(contract.missing) > 1 else ''}; vehicle check limited to the action spec")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _check_sections(c: PolicyContract) -> None:
    """The 2.0 sections agree with the action spec and each other (they are written from one config;
    a disagreement is a hand edit or a bug, and the robot side would act on one of the two)."""
    a, v, ctl = c.action, c.vehicle, c.controller
    if v is not None:
        if a.rotors and (len(a.rotors) != len(v.rotors) or any(
                ra.spin != rv.spin or max(abs(x - y) for x, y in zip(ra.pos_b, rv.pos_b)) > 1e-9
                for ra, rv in zip(a.rotors, v.rotors))):
            raise ContractError("action.rotors and vehicle.rotors differ: one rotor layout, written twice, must agree")
        for name in ("max_rpm", "kf_n_per_rpm2", "km_nm_per_rpm2"):
            if getattr(a, name) > 0 and _rel(getattr(a, name), getattr(v, name)) > 1e-9:
                raise ContractError(f"action.{name} {getattr(a, name)!r} != vehicle.{name} {getattr(v, name)!r}")
        if a.type == "ctbr" and _rel(a.max_thrust_n, v.max_thrust_n) > 1e-6:
            raise ContractError(f"action.max_thrust_n {a.max_thrust_n!r} is not the vehicle's maximum thrust "
                                f"{v.max_thrust_n!r} N")
    if ctl is not None:
        want = "rate_p_gyro_ff" if a.type == "ctbr" else "direct"
        if ctl.type != want:
            raise ContractError(f"controller.type {ctl.type!r} does not drive {a.type} actions (expected {want!r})")
        if a.type == "ctbr" and any(k > 0 for k in a.rate_kp) and tuple(a.rate_kp) != tuple(ctl.rate_kp):
            raise ContractError(f"action.rate_kp {list(a.rate_kp)} != controller.rate_kp {list(ctl.rate_kp)}")
        if ctl.loop_rate_hz < c.control_rate_hz:
            raise ContractError(f"controller.loop_rate_hz {ctl.loop_rate_hz} is below control_rate_hz "
                                f"{c.control_rate_hz}")
    if c.latency is not None:
        if _rel(c.latency.step_s, 1.0 / c.control_rate_hz) > 1e-6:
            raise ContractError(f"latency.step_s {c.latency.step_s} is not one control period "
                                f"(1 / {c.control_rate_hz} Hz)")
        if abs(c.latency.mean_s - c.action_latency_s) > 1e-9:
            raise ContractError(f"action_latency_s {c.action_latency_s} is not the mean of the latency "
                                f"distribution {c.latency.mean_s}")
    if c.frames is not None and c.frames.initial_action_history == "hover" and len(a.hover_action) != a.dim:
        raise ContractError("frames.initial_action_history is 'hover' but action.hover_action is not recorded")


def make_slices(entries: list[tuple[str, int] | tuple[str, int, float]]) -> tuple[ObsSlice, ...]:
    """Lay out named quantities back to back; the only place offsets are computed."""
    out, offset = [], 0
    for entry in entries:
        name, length = entry[0], entry[1]
        scale = float(entry[2]) if len(entry) > 2 else 1.0
        if name not in VOCABULARY:
            raise ContractError(f"{name!r} is not in the shared vocabulary {sorted(VOCABULARY)}")
        q = VOCABULARY[name]
        if q.length is not None and q.length != length:
            raise ContractError(f"{name!r} has length {q.length}, got {length}")
        out.append(ObsSlice(name, offset, length, q.unit, q.frame, scale))
        offset += length
    return tuple(out)


# ---------------------------------------------------------------------------------------- files


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_REQUIRED = ("version", "task", "control_rate_hz", "action_latency_s", "observation", "action",
             "provenance", "quaternion_order", "input_name", "output_name")
_REQUIRED_SLICE = ("name", "offset", "length", "unit", "frame")
_REQUIRED_PROVENANCE = ("onnx_sha256", "opset", "created", "config_hash")


def contract_from_dict(d: dict[str, Any], where: str = "policy.json") -> PolicyContract:
    """Parse and validate a contract; every error names the field at fault."""
    if not isinstance(d, dict):
        raise ContractError(f"{where}: top level must be an object, got {type(d).__name__}")
    for key in _REQUIRED:
        if key not in d:
            raise ContractError(f"{where}: missing required field {key!r}")
    if str(d["version"]).split(".")[0] not in SUPPORTED_MAJOR_VERSIONS:
        raise ContractError(f"{where}: contract version {d['version']!r} is not supported "
                            f"(this runtime reads {', '.join(v + '.x' for v in SUPPORTED_MAJOR_VERSIONS)})")
    if int(str(d["version"]).split(".")[0]) >= 2:
        for key in V2_SECTIONS:
            if key not in d:
                raise ContractError(f"{where}: missing required field {key!r} (contract {d['version']})")
    if d["quaternion_order"] != QUATERNION_ORDER:
        raise ContractError(f"{where}: quaternion_order {d['quaternion_order']!r}, expected 'wxyz'")
    for key in _REQUIRED_PROVENANCE:
        if key not in d["provenance"]:
            raise ContractError(f"{where}: missing required field 'provenance.{key}'")
    rate = d["control_rate_hz"]
    if not isinstance(rate, (int, float)) or not rate > 0:
        raise ContractError(f"{where}: control_rate_hz must be a positive number [Hz], got {rate!r}")
    slices, expected_offset = [], 0
    for i, s in enumerate(d["observation"]):
        for key in _REQUIRED_SLICE:
            if key not in s:
                raise ContractError(f"{where}: missing required field 'observation[{i}].{key}'")
        if s["name"] not in VOCABULARY:
            raise ContractError(f"{where}: observation[{i}].name {s['name']!r} is not in the vocabulary")
        if s["offset"] != expected_offset:
            raise ContractError(f"{where}: observation[{i}] ({s['name']}) offset {s['offset']} "
                                f"should be {expected_offset}: slices must be contiguous")
        expected_offset += int(s["length"])
        slices.append(ObsSlice(s["name"], int(s["offset"]), int(s["length"]), s["unit"], s["frame"],
                               float(s.get("scale", 1.0))))
    if "obs_dim" in d and d["obs_dim"] != expected_offset:
        raise ContractError(f"{where}: obs_dim {d['obs_dim']} != sum of slice lengths {expected_offset}")
    a = dict(d["action"])
    for key in ("type", "dim"):
        if key not in a:
            raise ContractError(f"{where}: missing required field 'action.{key}'")
    a["rotors"] = _rotors(a.get("rotors", ()), f"{where}: action.rotors")
    a["body_rate_limits_rad_s"] = tuple(a.get("body_rate_limits_rad_s", (0.0, 0.0, 0.0)))
    a["hover_action"] = tuple(a.get("hover_action", ()))
    a["rate_kp"] = tuple(a.get("rate_kp", (0.0, 0.0, 0.0)))
    known = {f.name for f in dataclasses.fields(ActionSpec)}
    unknown = set(a) - known
    if unknown:
        raise ContractError(f"{where}: unknown field(s) in action: {sorted(unknown)}")
    action = ActionSpec(**a)
    sections = {name: _section(cls, d[name], f"{where}: {name}") for name, cls in _SECTION_TYPES.items()
                if d.get(name) is not None}
    images = d.get("images", [])
    if not isinstance(images, list):
        raise ContractError(f"{where}: images must be a list, got {type(images).__name__}")
    sections["images"] = tuple(_section(ImageInput, im, f"{where}: images[{i}]") for i, im in enumerate(images))
    try:
        return PolicyContract(
            task=d["task"], control_rate_hz=float(rate), action_latency_s=float(d["action_latency_s"]),
            observation=tuple(slices), action=action, provenance=dict(d["provenance"]),
            normalization=dict(d.get("normalization", {})), recurrent_state=d.get("recurrent_state"),
            version=str(d["version"]), quaternion_order=d["quaternion_order"],
            input_name=d["input_name"], output_name=d["output_name"], **sections)
    except ContractError as e:
        raise ContractError(f"{where}: {e}") from e


_SECTION_TYPES = {"vehicle": VehicleSpec, "latency": LatencySpec, "controller": ControllerSpec, "frames": FramesSpec}
_SECTION_DERIVED = {VehicleSpec: VehicleSpec.DERIVED, LatencySpec: ("values_s", "mean_s")}


def _rotors(entries, where: str) -> tuple[Rotor, ...]:
    out = []
    for i, r in enumerate(entries):
        if not isinstance(r, dict) or "pos_b" not in r or "spin" not in r or len(r["pos_b"]) != 3:
            raise ContractError(f"{where}[{i}] needs pos_b [x, y, z] m and spin +1/-1, got {r!r}")
        out.append(Rotor(tuple(float(x) for x in r["pos_b"]), int(r["spin"])))
    return tuple(out)


def _section(cls: type, d: Any, where: str):
    """One 2.0 section: known fields only, every required one present, types as annotated; derived
    values (written for readers) must equal what the fields give."""
    if not isinstance(d, dict):
        raise ContractError(f"{where} must be an object, got {type(d).__name__}")
    d = dict(d)
    derived = {k: d.pop(k) for k in _SECTION_DERIVED.get(cls, ()) if k in d}
    for f in dataclasses.fields(cls):
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(f"{where}: missing required field {f.name!r}")
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    try:
        for name, value in d.items():
            kwargs[name] = _rotors(value, f"{where}.rotors") if name == "rotors" else \
                check_value(hints[name], value, f"{where}.{name}")
    except ValueError as e:
        raise ContractError(str(e)) from e
    obj = cls(**kwargs)
    for k, v in derived.items():
        want = getattr(obj, k)
        if isinstance(want, tuple):
            ok = len(v) == len(want) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(v, want))
        else:
            ok = isinstance(v, (int, float)) and math.isclose(v, want, rel_tol=1e-6, abs_tol=1e-12)
        if not ok:
            raise ContractError(f"{where}.{k} {v!r} is not what the section's fields give ({want!r})")
    return obj


def save_contract(contract: PolicyContract, path: str | Path) -> None:
    Path(path).write_text(json.dumps(contract.to_dict(), indent=2, sort_keys=False) + "\n")


def load_contract(path: str | Path) -> PolicyContract:
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"contract file {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ContractError(f"{path}: not valid JSON ({e})") from e
    return contract_from_dict(d, where=str(path))


def load_policy_dir(policy_dir: str | Path) -> tuple[Path, PolicyContract]:
    """Load and verify ``policy.onnx`` + ``policy.json`` from a directory (hash only, no runtime)."""
    policy_dir = Path(policy_dir)
    onnx_path = policy_dir / "policy.onnx"
    contract = load_contract(policy_dir / "policy.json")
    if not onnx_path.is_file():
        raise ContractError(f"{onnx_path} does not exist")
    digest = sha256_file(onnx_path)
    if digest != contract.provenance["onnx_sha256"]:
        raise ContractError(f"{onnx_path}: sha256 {digest[:12]}... does not match the contract's "
                            f"{contract.provenance['onnx_sha256'][:12]}... (file changed or corrupt)")
    return onnx_path, contract
