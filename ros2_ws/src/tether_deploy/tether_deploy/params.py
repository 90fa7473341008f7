"""Every ROS parameter of every node, defined once: one frozen dataclass per node.

A node's parameters are the fields of its dataclass, flattened: a nested dataclass field becomes a group
with a dotted prefix (``joy.axis_roll``, ``wind_gust.start_s``) unless the class lists it in ``INLINE``
(its fields then appear without a prefix, e.g. the runner's ``RunnerConfig``). Defaults, types, units and
validation all come from the dataclasses (``__post_init__``); nodes declare their parameters from them
(:func:`declare_node_params`), ``tether deploy`` checks parameter files and ``--ros-arg`` overrides
against them before anything starts (:func:`check_overrides`, :func:`node_params`), and the ROS
interface document prints them (:func:`parameters_markdown`). Nothing types a parameter twice.

Torch-free and rclpy-free (rclpy is imported inside :func:`declare_node_params` only). The twin's
parameters (``TwinParams``) live beside its TwinConfig in hardware/twin_config.py and are imported on
first use, so the runner on a robot never imports the simulator's vehicle presets.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from hardware.safety import SafetyCfg
from tether.config import field_docs
from tether_deploy.arbitration import ArbiterConfig  # noqa: F401  (resolves RunnerConfig's annotations)
from tether_deploy.keyboard_core import KeyboardCfg
from tether_deploy.operator_core import OperatorCfg
from tether_deploy.runner_core import SAFE_BEHAVIOURS, RunnerConfig, StateLimits  # noqa: F401
from tether_deploy.teleop_map import JoyMapping

TICK_SOURCES = ("state", "timer")
COMPRESSIONS = ("none", "lz4", "zstd")


class ParameterError(ValueError):
    """A node parameter is unknown or has an invalid value; the message is one line naming the node,
    the parameter and what is allowed."""


# ------------------------------------------------------------------------------------ the nodes


@dataclasses.dataclass(frozen=True)
class RunnerParams:
    """policy_runner (runner_node.py). Rates, observation layout and action scaling come from the policy
    contract, never from parameters."""

    INLINE: ClassVar[tuple[str, ...]] = ("core", "core.state_limits", "core.arbiter")

    policy_dir: str = ""
    """directory with policy.onnx + policy.json; empty: configure is refused (tether deploy sets it)"""
    autostart: bool = False
    """configure + activate on start (tether deploy sets true; launch files manage it)"""
    exit_on_autostart_failure: bool = False
    """with autostart: a refused configure or activate ends the node (status 1) instead of leaving it
    unconfigured, so the launcher sees it (tether deploy sets true; a lifecycle manager keeps false)"""
    tick_source: str = "state"
    """state: tick on the fresh state message nearest each control period (every state of a stream at the
    control rate, every k-th of one k times faster), the timer as a deadline | timer: tick on the timer"""
    diagnostics_rate_hz: float = 2.0
    """/diagnostics publications per second [Hz]"""
    command_deadline_periods: float = 5.0
    """DDS deadline offered on cmd/executed [control periods]"""
    realtime_priority: int = 0
    """SCHED_FIFO priority of the runner's threads on activate, 1..99 (needs CAP_SYS_NICE); 0 = normal"""
    core: RunnerConfig = RunnerConfig(action_low=(-1.0,), action_high=(1.0,))
    """watchdog, safe behaviour, action limits, goal (runner_core.RunnerConfig), parameters without prefix"""
    joy: JoyMapping = JoyMapping()
    """gamepad layout and scaling (joy package, Xbox layout); keyboard_teleop publishes the same"""

    def __post_init__(self):
        _choice("tick_source", self.tick_source, TICK_SOURCES)
        _positive("diagnostics_rate_hz", self.diagnostics_rate_hz, "Hz")
        _positive("command_deadline_periods", self.command_deadline_periods, "control periods")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority must be 0 (normal scheduling) or a SCHED_FIFO priority "
                             f"1..99, got {self.realtime_priority}")
        for name in ("action_low", "action_high"):
            v = getattr(self.core, name)
            if not all(-1.0 <= x <= 1.0 for x in v):
                raise ValueError(f"{name} must lie within the contract's normalized range [-1, 1], got {list(v)}")


@dataclasses.dataclass(frozen=True)
class RecorderParams:
    """recorder (recorder_node.py): the intervention log, rosbag2-layout MCAP."""

    output: str = ""
    """the bag directory, which must not exist yet (tether deploy --record sets it)"""
    chunk_interval_s: float = 0.5
    """the open chunk is flushed this often, so a SIGKILL loses at most this much [s]"""
    chunk_size_bytes: int = 1 << 20
    """MCAP chunk size [bytes]"""
    compression: str = "none"
    """chunk compression: none | lz4 | zstd"""
    topics: tuple[str, ...] = ()
    """topics to record (relative names, see qos.py); empty: every recordable topic"""
    policy_dir: str = ""
    """the deployed policy (policy.json): every image input's topic and camera_info_topic is recorded too,
    beside ``topics`` (tether deploy and the launch files set it); empty: no topics from a contract"""

    def __post_init__(self):
        _positive("chunk_interval_s", self.chunk_interval_s, "s")
        if self.chunk_size_bytes < 1024:
            raise ValueError(f"chunk_size_bytes must be >= 1024 [bytes], got {self.chunk_size_bytes}")
        _choice("compression", self.compression, COMPRESSIONS)


@dataclasses.dataclass(frozen=True)
class KeyboardTeleopParams:
    """keyboard_teleop (keyboard_teleop.py): a terminal stands in for a gamepad."""

    INLINE: ClassVar[tuple[str, ...]] = ("cfg",)

    rate_hz: float = 20.0
    """Joy messages per second [Hz]"""
    cfg: KeyboardCfg = KeyboardCfg()
    """key hold and takeover timing, stick values, the gamepad layout (keyboard_core.KeyboardCfg), without prefix"""

    def __post_init__(self):
        _positive("rate_hz", self.rate_hz, "Hz")


@dataclasses.dataclass(frozen=True)
class OperatorParams:
    """operator (operator_node.py): the scripted stand-in for a person with a gamepad."""

    INLINE: ClassVar[tuple[str, ...]] = ("cfg",)

    rate_hz: float = 50.0
    """Joy messages per second [Hz]"""
    goal_w: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """where the operator steers the vehicle to, world frame [m]"""
    new_flight_gap_s: float = 0.5
    """a pause of the state stream longer than this is a new flight (the operator hands back) [s]"""
    cfg: OperatorCfg = OperatorCfg()
    """takeover, hand-back and the operator's own gains (operator_core.OperatorCfg), without prefix"""

    def __post_init__(self):
        _positive("rate_hz", self.rate_hz, "Hz")
        _positive("new_flight_gap_s", self.new_flight_gap_s, "s")


BRIDGE_NODE = "robot_bridge"
BRIDGE_SELECTOR = "adapter"
"""the robot_bridge parameter that chooses the adapter, and with it the ``robot.*`` parameters"""


@dataclasses.dataclass(frozen=True)
class BridgeParams:
    """robot_bridge (bridge_node.py): any registered Robot adapter (hardware/adapters.py) behind the
    twin's ROS interface, under the shared safety layer. Its ``robot.*`` parameters are the fields of the
    chosen adapter's config dataclass (:func:`bridge_params_class`), ``safety.*`` those of SafetyCfg."""

    adapter: str = ""
    """registered robot adapter (hardware/adapters.py): twin, crazyflie, px4, ardupilot, arm (tether deploy
    --robot sets it); empty: none chosen, the node refuses to start"""
    policy_dir: str = ""
    """directory of policy.onnx + policy.json: its action spec maps cmd/executed to robot commands"""
    rate_hz: float = 0.0
    """how often the robot is read and state published [Hz]; 0: the adapter config's rate_hz, else 100"""
    cmd_timeout_s: float = 0.5
    """after the first command, this long without one lands the vehicle (offboard-loss failsafe) [s]"""
    auto_arm: bool = False
    """arm at the first command (after the arming checks); false: call the robot/arm service"""
    exit_on_link_loss: bool = False
    """end the node (status 1) once the link is lost and the safe state is commanded (tether deploy
    sets true)"""
    battery_rate_hz: float = 2.0
    """state/battery publications per second, when the adapter measures its battery [Hz]"""
    world_frame: str = "world"
    """frame_id of state/odom's pose"""
    body_frame: str = "base_link"
    """child_frame_id of state/odom and frame_id of state/imu and commands"""
    safety: SafetyCfg = SafetyCfg()
    """the limits every adapter flies under (hardware.safety.SafetyCfg), parameters safety.*"""

    def __post_init__(self):
        if not self.rate_hz >= 0:
            raise ValueError(f"rate_hz must be >= 0 [Hz] (0: the adapter's own rate), got {self.rate_hz!r}")
        _positive("cmd_timeout_s", self.cmd_timeout_s, "s")
        _positive("battery_rate_hz", self.battery_rate_hz, "Hz")


@functools.lru_cache(maxsize=None)
def bridge_params_class(adapter: str) -> type:
    """BridgeParams plus a ``robot`` group: the fields of adapter ``adapter``'s config dataclass (one
    definition: the adapter's). Raises ParameterError for an unknown adapter (with a close match) or
    one whose module cannot be imported here (naming the missing library)."""
    from hardware.adapters import ADAPTERS, adapter_classes, adapter_names

    if adapter not in ADAPTERS:
        hint = difflib.get_close_matches(adapter, adapter_names(), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParameterError(f"{BRIDGE_NODE}: no robot adapter {adapter!r}{did}; available: {adapter_names()}")
    try:
        _, cfg_cls = adapter_classes(adapter)
    except ImportError as e:
        raise ParameterError(f"{BRIDGE_NODE}: robot adapter {adapter!r} cannot be loaded here ({e}); "
                             f"install the library it names") from None
    try:
        default = cfg_cls()
    except TypeError as e:
        raise ParameterError(f"{BRIDGE_NODE}: {cfg_cls.__name__} needs a default for every field to be "
                             f"ROS parameters ({e})") from None
    return dataclasses.make_dataclass(
        f"BridgeParams_{adapter}", [(BRIDGE_SELECTOR, str, dataclasses.field(default=adapter)),
                                    ("robot", cfg_cls, dataclasses.field(default=default))],
        bases=(BridgeParams,), frozen=True, namespace={"__module__": __name__})


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _positive(name: str, value: float, unit: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 [{unit}], got {value!r}")


class _NodeParams(Mapping):
    """node name -> parameter dataclass; the twin's is imported on first access (it needs the vehicle
    presets, which the robot side does not install)."""

    _eager = {"policy_runner": RunnerParams, "recorder": RecorderParams,
              "keyboard_teleop": KeyboardTeleopParams, "operator": OperatorParams,
              BRIDGE_NODE: BridgeParams}
    _names = ("twin", "policy_runner", "recorder", "keyboard_teleop", "operator", BRIDGE_NODE)

    def __getitem__(self, node: str) -> type:
        if node == "twin":
            from hardware.twin_config import TwinParams

            return TwinParams
        return self._eager[node]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


NODE_PARAMS: Mapping[str, type] = _NodeParams()
"""node name (as tether deploy and the launch files name it) -> its parameter dataclass (robot_bridge:
BridgeParams without the adapter's ``robot.*`` group, which :func:`node_class` adds for the chosen adapter)"""


def __getattr__(name: str):
    if name == "TwinParams":
        from hardware.twin_config import TwinParams

        return TwinParams
    raise AttributeError(name)


# ------------------------------------------------------------------------------- flattening


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter of a node."""

    name: str
    """dotted ROS name, e.g. joy.axis_roll"""
    type: Any
    """the field's resolved annotation (float, int, bool, str, tuple[...], X | None)"""
    default: Any
    """the default in ROS form (tuples as lists, None as [])"""
    doc: str
    """the field's one-line doc (with its unit)"""


@functools.lru_cache(maxsize=None)
def _optional_of(tp) -> Any | None:
    """X for ``X | None`` (or Optional[X]), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _nested_type(tp) -> type | None:
    """The dataclass of a nested group (``X`` or ``X | None``), else None."""
    inner = _optional_of(tp) or tp
    return inner if dataclasses.is_dataclass(inner) and isinstance(inner, type) else None


def _to_ros(value) -> Any:
    if value is None:
        return []
    if isinstance(value, tuple):
        return [_to_ros(v) for v in value]
    return value


def _walk(cls: type, default, prefix: str, path: str, inline: tuple[str, ...]):
    """(ParamSpec, attribute path) of every leaf of ``cls`` with ``default`` as the default instance."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(default, f.name)
        sub_path = f"{path}.{f.name}" if path else f.name
        nested = _nested_type(tp)
        if nested is not None:
            nested_default = value if value is not None else nested()
            sub_prefix = prefix if sub_path in inline else f"{prefix}{f.name}."
            yield from _walk(nested, nested_default, sub_prefix, sub_path, inline)
        elif _unsupported(tp) is None:
            yield ParamSpec(prefix + f.name, tp, _to_ros(value), docs.get(f.name, "")), sub_path


_SCALARS = (bool, int, float, str)


def _unsupported(tp) -> str | None:
    """Why a field type cannot be a ROS parameter (None: it can). ROS parameters are scalars and flat
    arrays of one scalar type; a field such as a tuple of 3-vectors keeps its default (listed in the
    interface document)."""
    inner = _optional_of(tp) or tp
    if inner in _SCALARS:
        return None
    if typing.get_origin(inner) is tuple:
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if args and all(a in _SCALARS for a in args) and len(set(args)) == 1:
            return None
        return f"{_type_name_safe(inner)} is not a flat array of one scalar type"
    return f"{_type_name_safe(inner)} is not a ROS parameter type"


def _type_name_safe(tp) -> str:
    if typing.get_origin(tp) is not None:  # tuple[tuple[float, float, float], ...], not just 'tuple'
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def skipped_fields(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, why) of every field of ``cls`` that is not a ROS parameter (it keeps its default)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        nested = _nested_type(hints[f.name])
        if nested is not None:
            out += skipped_fields(nested, f"{prefix}{f.name}.")
        else:
            why = _unsupported(hints[f.name])
            if why is not None:
                out.append((prefix + f.name, why))
    return out


@functools.lru_cache(maxsize=None)
def param_specs(cls: type) -> tuple[ParamSpec, ...]:
    """Every ROS parameter of the node whose dataclass is ``cls``, in declaration order."""
    return tuple(spec for spec, _ in _walk(cls, cls(), "", "", getattr(cls, "INLINE", ())))


def node_class(node: str, values: Mapping[str, Any] | None = None) -> type:
    """The parameter dataclass of ``node`` given its parameter values: robot_bridge's depends on its
    ``adapter`` value (default: BridgeParams' default)."""
    if node == BRIDGE_NODE:
        adapter = (values or {}).get(BRIDGE_SELECTOR, BridgeParams.adapter)
        if not isinstance(adapter, str):
            raise ParameterError(f"{BRIDGE_NODE}: {BRIDGE_SELECTOR} must be a string, got {adapter!r}")
        return bridge_params_class(adapter) if adapter else BridgeParams
    return _node_class(node)


def _node_class(node: str) -> type:
    try:
        return NODE_PARAMS[node]
    except KeyError:
        hint = difflib.get_close_matches(node, list(NODE_PARAMS), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParameterError(f"no node {node!r}{did}; nodes with parameters: {list(NODE_PARAMS)}") from None


def _type_name(tp) -> str:
    inner = _optional_of(tp)
    if inner is not None:
        return f"{_type_name(inner)} or []"
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {args[0].__name__}"
        return f"list of {len(args)} {args[0].__name__}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, name: str):
    """A ROS parameter value as the field's Python type; ValueError naming the parameter otherwise."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{name} must be {what}, got {value!r}")

    inner = _optional_of(tp)
    if inner is not None:
        return None if value is None or (isinstance(value, (list, tuple)) and len(value) == 0) \
            else _coerce(value, inner, name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise bad("an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if value is None and len(args) == 2 and args[1] is Ellipsis:
            return ()  # ROS reads an empty YAML list as "not set"
        if not isinstance(value, (list, tuple)):
            raise bad(f"a {_type_name(tp)}")
        if len(args) == 2 and args[1] is Ellipsis:
            elems = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} values")
            elems = list(args)
        return tuple(_coerce(v, t, name) for v, t in zip(value, elems))
    raise TypeError(f"parameter {name}: unsupported field type {tp!r}")


def _build(cls: type, values: Mapping[str, Any], prefix: str, path: str, inline: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub_path = f"{path}.{f.name}" if path else f.name
        nested = _nested_type(tp)
        if nested is not None:
            sub_prefix = prefix if sub_path in inline else f"{prefix}{f.name}."
            obj = _build(nested, values, sub_prefix, sub_path, inline)
            # An optional group (a disturbance) is off when its own ``off`` property says so.
            kw[f.name] = None if _optional_of(tp) is not None and getattr(obj, "off", False) else obj
        elif prefix + f.name in values:
            kw[f.name] = _coerce(values[prefix + f.name], tp, prefix + f.name)
    return cls(**kw)


def node_params(node: str, values: Mapping[str, Any]) -> Any:
    """The node's parameter dataclass from ``values`` (ROS name -> value, e.g. parsed YAML); missing
    names keep their defaults. Raises ParameterError naming the node, the parameter and what is allowed."""
    cls = node_class(node, values)
    known = [s.name for s in param_specs(cls)]
    for name in values:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ParameterError(f"{node}: unknown parameter {name!r}{did}; the parameters of {node} are "
                                 f"listed in docs/ROS_INTERFACE.md")
    try:
        return _build(cls, values, "", "", getattr(cls, "INLINE", ()))
    except ValueError as e:
        raise ParameterError(f"{node}: {e}") from None
    except TypeError as e:  # a nested dataclass rejecting a missing or extra field
        raise ParameterError(f"{node}: {e}") from None


def parse_value(text: str) -> Any:
    """A command-line parameter value as ROS reads it (YAML: 1.5, true, [0, 0, 1], .nan, text)."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # ROS takes what YAML cannot read as a plain string


def check_overrides(node: str, overrides: Mapping[str, str], base: Mapping[str, Any] | None = None) -> None:
    """Check ``NAME:=VALUE`` overrides of one node ({name: value string}) on top of ``base`` (values from
    parameter files). Raises ParameterError (one line: node, parameter, what is allowed, a close match)."""
    values = dict(base or {})
    values.update({k: parse_value(v) for k, v in overrides.items()})
    node_params(node, values)


def flatten_yaml(node_section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A node's ``ros__parameters`` mapping (nested groups as sub-mappings) as ROS names -> values."""
    out: dict[str, Any] = {}
    for k, v in node_section.items():
        if isinstance(v, Mapping):
            out.update(flatten_yaml(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def params_file_values(data: Any, where: str) -> dict[str, dict[str, Any]]:
    """node name -> {parameter: value} of a ROS parameter file's parsed YAML (``node: ros__parameters:``);
    raises ParameterError for an unknown node or parameter, or a file of another shape."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ParameterError(f"{where}: a ROS parameter file maps node names to 'ros__parameters:', "
                             f"got a {type(data).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        name = str(node).rsplit("/", 1)[-1]  # "/ns/twin" and "twin" name the same node
        if name != "**":
            try:
                _node_class(name)
            except ParameterError as e:
                raise ParameterError(f"{where}: {e}") from None
        if not isinstance(section, Mapping) or set(section) != {"ros__parameters"} or \
                not isinstance(section["ros__parameters"], (Mapping, type(None))):
            raise ParameterError(f"{where}: node {node!r} needs exactly one key 'ros__parameters:' "
                                 f"holding its parameters")
        values = flatten_yaml(section["ros__parameters"] or {})
        if name != "**":
            checked = values
            if name == BRIDGE_NODE and BRIDGE_SELECTOR not in values:
                # robot.* depends on the adapter, chosen elsewhere (tether deploy --robot): checked there
                checked = {k: v for k, v in values.items() if not k.startswith("robot.")}
            try:
                node_params(name, checked)
            except ParameterError as e:
                raise ParameterError(f"{where}: {e}") from None
        else:  # every node gets these; each must be a parameter of at least one node
            every = sorted({s.name for cls in NODE_PARAMS.values() for s in param_specs(cls)})
            for key in values:
                if key not in every:
                    hint = difflib.get_close_matches(key, every, n=1, cutoff=0.6)
                    did = f" (did you mean {hint[0]!r}?)" if hint else ""
                    raise ParameterError(f"{where}: {node!r}: no node has a parameter {key!r}{did}")
        out.setdefault(name, {}).update(values)
    return out


# ----------------------------------------------------------------------------------------- docs


def _param_rows(node: str, specs) -> list[str]:
    rows = []
    for s in specs:
        default = "" if s.default == "" else s.default
        doc = s.doc.replace("|", "\\|")
        rows.append(f"| {node} | `{s.name}` | {_type_name(s.type)} | `{default!r}` | {doc} |"
                    .replace("`''`", "`\"\"`"))
    return rows


def parameters_markdown() -> str:
    """A Markdown table of every node's parameters: node, parameter, type, default, meaning (unit).
    robot_bridge: its own and the safety parameters, then each registered adapter's ``robot.*`` group."""
    from hardware.adapters import adapter_names

    rows = ["| node | parameter | type | default | meaning [unit] |", "|---|---|---|---|---|"]
    for node, cls in NODE_PARAMS.items():
        rows += _param_rows(node, param_specs(cls))
    notes = []
    for adapter in adapter_names():
        where = f"{BRIDGE_NODE} (adapter {adapter})"
        try:
            cls = bridge_params_class(adapter)
        except ParameterError as e:
            notes.append(f"- adapter `{adapter}`: no `robot.*` parameters listed: {str(e).split(': ', 1)[-1]}")
            continue
        rows += _param_rows(where, [s for s in param_specs(cls) if s.name.startswith("robot.")])
        notes += [f"- adapter `{adapter}`: `{name}` is not a parameter ({why}); it keeps its default"
                  for name, why in skipped_fields(cls) if name.startswith("robot.")]
    return "\n".join(rows) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


# ------------------------------------------------------------------------------- rclpy helper


def declare_node_params(node, node_name: str):
    """Declare every parameter of ``node`` from the dataclass of ``node_name`` (its NODE_PARAMS key, which
    stays the same when the node is started under another name) and return the validated instance.

    An invalid value (from a parameter file or ``-p``) ends the process with status 2 after one FATAL log
    line naming the node, the parameter and what is allowed. Later changes (``ros2 param set``) are
    validated the same way and refused with the reason."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

    cls = NODE_PARAMS[node_name]
    if node_name == BRIDGE_NODE:  # the adapter chooses the robot.* group: declared first, read, then the rest
        node.declare_parameter(BRIDGE_SELECTOR, BridgeParams.adapter, ParameterDescriptor(
            description=field_docs(BridgeParams)[BRIDGE_SELECTOR], dynamic_typing=True))
        try:
            cls = node_class(node_name, {BRIDGE_SELECTOR: node.get_parameter(BRIDGE_SELECTOR).value})
        except ParameterError as e:
            node.get_logger().fatal(f"invalid parameter: {e}")
            raise SystemExit(2) from None
    specs = param_specs(cls)
    for s in specs:
        if node.has_parameter(s.name):
            continue
        # dynamic typing: `-p goal_w:=[0,0,1]` (integers) must reach our validator, not fail in rclpy
        node.declare_parameter(s.name, s.default, ParameterDescriptor(description=s.doc, dynamic_typing=True))
    values = {s.name: node.get_parameter(s.name).value for s in specs}
    try:
        params = node_params(node_name, values)
    except ParameterError as e:
        node.get_logger().fatal(f"invalid parameter: {e}")
        raise SystemExit(2) from None

    def on_set(changes) -> SetParametersResult:
        new = dict(values)
        new.update({p.name: p.value for p in changes if p.name in new})
        try:
            node_params(node_name, new)
        except ParameterError as e:
            return SetParametersResult(successful=False, reason=str(e))
        values.update(new)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return params
