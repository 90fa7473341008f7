"""The policy contract: `policy.json` beside `policy.onnx`.

This module is the single source of truth for what an exported policy consumes and produces. It is
torch-free on purpose: policies/ writes contracts with it and the robot side (ros2_ws/, hardware/)
reads them with it, so the observation layout and action scaling are never re-typed by hand.

Conventions (stated once, here):
  * SI units everywhere.
  * Quaternions are ordered ``wxyz`` and rotate body-frame vectors into the world frame.
  * ``rotmat_bw`` is the same rotation as a 3x3 matrix (body -> world), flattened row-major.
  * World frame is ENU-like: z up, gravity along -z.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

CONTRACT_VERSION = "1.0"
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

    Outputs are normalized to [low, high] = [-1, 1].
      rotor: output i commands rotor i of ``rotors``: rotor speed [rpm] = (a + 1) / 2 * max_rpm,
             thrust [N] = kf * rpm^2, reaction torque [N m] = -spin * km * rpm^2 about z_b.
      ctbr:  output 0 is collective thrust [N] = (a + 1) / 2 * max_thrust_n; outputs 1..3 are body
             rates [rad/s] = a * body_rate_limits_rad_s, tracked by a P rate controller with gain
             rate_kp (the training sim's; a robot's own firmware controller replaces it).
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


@dataclasses.dataclass(frozen=True)
class PolicyContract:
    task: str
    control_rate_hz: float
    action_latency_s: float
    observation: tuple[ObsSlice, ...]
    action: ActionSpec
    provenance: dict[str, Any]
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)
    recurrent_state: dict[str, Any] | None = None
    version: str = CONTRACT_VERSION
    quaternion_order: str = QUATERNION_ORDER
    input_name: str = "obs"
    output_name: str = "actions"

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
        return d


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
    if str(d["version"]).split(".")[0] != CONTRACT_VERSION.split(".")[0]:
        raise ContractError(f"{where}: contract version {d['version']!r} is not supported "
                            f"(this runtime reads {CONTRACT_VERSION})")
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
    a["rotors"] = tuple(Rotor(tuple(r["pos_b"]), int(r["spin"])) for r in a.get("rotors", ()))
    a["body_rate_limits_rad_s"] = tuple(a.get("body_rate_limits_rad_s", (0.0, 0.0, 0.0)))
    a["hover_action"] = tuple(a.get("hover_action", ()))
    a["rate_kp"] = tuple(a.get("rate_kp", (0.0, 0.0, 0.0)))
    known = {f.name for f in dataclasses.fields(ActionSpec)}
    unknown = set(a) - known
    if unknown:
        raise ContractError(f"{where}: unknown field(s) in action: {sorted(unknown)}")
    action = ActionSpec(**a)
    return PolicyContract(
        task=d["task"], control_rate_hz=float(rate), action_latency_s=float(d["action_latency_s"]),
        observation=tuple(slices), action=action, provenance=dict(d["provenance"]),
        normalization=dict(d.get("normalization", {})), recurrent_state=d.get("recurrent_state"),
        version=str(d["version"]), quaternion_order=d["quaternion_order"],
        input_name=d["input_name"], output_name=d["output_name"])


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
