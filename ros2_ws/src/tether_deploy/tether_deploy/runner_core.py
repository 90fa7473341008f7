"""The policy runner's logic without ROS: validation, watchdog, action limits, safe behaviours, hot swap.

The ROS node (runner_node.py) only moves messages in and out; every decision is made here, so plain
pytest covers it. Time is passed in explicitly (seconds on a monotonic clock), nothing here sleeps.

State messages (:meth:`RunnerCore.set_state`) are checked before use: frame ids, header stamp against
the node clock (stale, from the future, out of order), then the values. A rejected message or a stale
stream is a *state fault*: the policy flies again only after ``good_states_to_recover`` good messages in
a row, so intermittent faults do not make the command chatter between policy and safe behaviour. An
out-of-order (or repeated) message is dropped and counted but is no fault: the newer state stays in
force. Each fault, each new cause and each recovery is one event (:meth:`RunnerCore.drain_events`) for
the log, never one per message; rejections are counted by cause for the diagnostics.

One tick (:meth:`RunnerCore.tick`):
  1. swap in a pending, already validated policy (between ticks: never a missed tick);
  2. check the latest state: present, fresh (age <= max_state_age_periods control periods), no fault;
  3. run the policy on the observation built by the contract's named slices;
  4. arbitrate between policy, human and e-stop (arbitration.py);
  5. if the arbiter or a fault asks for the safe behaviour, compute it (hold, land or motors off);
  6. apply the action limits and remember the executed action for ``prev_actions``.

Image inputs (contract 2.1, ``contract.images``): each has an :class:`ImageSlot` holding its latest
image (:meth:`RunnerCore.set_image`, checked on arrival: encoding, size, layout, stamp set) and its
camera_info (:meth:`RunnerCore.set_camera_info`, judged by ``ImageInput.intrinsics_error``). At a tick
with a usable state the policy runs only if every image is there, valid and no older than its
``max_age_s`` (header stamp against the node clock); otherwise the tick is unusable input like a failed
inference: the safe behaviour flies (hold needs the policy, so it degrades to a land), one log event per
cause, and the tick is counted by cause (``image_problems``, IMAGE_PROBLEMS).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from pathlib import Path

import numpy as np

from tether.actions import action_map, initial_action
from tether.contract import ContractError, PolicyContract
from tether.observation import PositionErrorIntegral, build_observation
from tether_deploy.arbitration import FLYING_SOURCES, ArbiterConfig, Decision, HumanInput, arbitrate
from tether_deploy.image_core import IMAGE_PROBLEMS, ImageFrame, ImageSlot  # noqa: F401 (part of the core's API)

SAFE_BEHAVIOURS = ("hold", "land", "motors_off")
IMAGE_LOG_INTERVAL_S = 5.0
"""an image problem's cause is logged again at most this often (a flickering camera: one line, not one per
flicker; every tick is still counted in the diagnostics) [s]"""

# Quantities the runner can provide to a policy; anything else in a contract is refused at configure.
PROVIDED_QUANTITIES = ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b", "goal_w", "goal_vel_w", "prev_actions",
                       "pos_err_w", "pos_err_b", "rotmat_bw", "up_b", "lin_vel_b", "goal_vel_b", "pos_err_int_b")


@dataclasses.dataclass(frozen=True)
class StateLimits:
    """A state outside these bounds is rejected (a broken estimator, not a vehicle to fly)."""

    max_abs_pos_m: float = 100.0
    """largest |x|, |y|, |z| of pos_w accepted [m]"""
    max_speed_m_s: float = 30.0
    """largest |lin_vel_w| accepted [m/s]"""
    max_ang_vel_rad_s: float = 60.0
    """largest |ang_vel_b| accepted [rad/s]"""
    quat_norm_tol: float = 0.05
    """| |quat_wxyz| - 1 | above this means a malformed quaternion [1]"""

    def __post_init__(self):
        for name in ("max_abs_pos_m", "max_speed_m_s", "max_ang_vel_rad_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and not math.isnan(v)):
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if not (isinstance(self.quat_norm_tol, (int, float)) and 0 < self.quat_norm_tol < 1):
            raise ValueError(f"quat_norm_tol must be in (0, 1) [1], got {self.quat_norm_tol!r}")


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    # watchdog
    max_state_age_periods: float = 3.0
    """state older than this many control periods is stale -> safe behaviour [periods]"""
    history_reset_after_s: float = 0.5
    """when the state stream comes back after being unusable this long, the action history in the
    observation restarts from the hover action: what was sent while blind (a descent, motors off) says
    nothing about the vehicle the new state describes (e.g. a restarted or re-armed robot) [s]"""
    safe_behaviour: str = "hold"
    """hold | land | motors_off"""
    state_limits: StateLimits = StateLimits()
    # safe behaviours
    land_speed_m_s: float = 0.3
    """closed-loop land: the goal descends at this speed [m/s]"""
    land_timeout_s: float = 8.0
    """a land (closed or open loop) ends with motors off after this long [s]"""
    open_loop_thrust_scale: float = 0.92
    """open-loop descent (no usable state or policy) commands this fraction of hover thrust [1]"""
    # action limits
    action_low: tuple[float, ...] = ()
    """per-output lower bound, () = the contract's low; never wider than the contract [1]"""
    action_high: tuple[float, ...] = ()
    """per-output upper bound, () = the contract's high [1]"""
    max_action_delta: float = 0.0
    """largest change of a policy/human output per tick, 0 = off [1/tick]"""
    good_states_to_recover: int = 5
    """after a state fault (rejected message, stale stream), this many good state messages in a row
    before the policy flies again; the safe behaviour holds meanwhile [messages]"""
    # header checks
    world_frame: str = "world"
    """the state's header.frame_id must be this (the frame of pos_w and the goal)"""
    body_frame: str = "base_link"
    """the state's child_frame_id must be this (the frame of its twist); commands carry it"""
    check_stamps: bool = True
    """check header.stamp against the node clock (off only for a replay with another clock)"""
    max_stamp_age_s: float = 0.2
    """a state stamped longer ago than this (node clock) is stale: latency plus clock offset [s]"""
    max_stamp_lead_s: float = 0.05
    """a state stamped further ahead of the node clock than this is from the future [s]"""
    # goal
    goal_w: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """goal position until a goal message arrives [m]"""
    arbiter: ArbiterConfig = ArbiterConfig()

    def __post_init__(self):
        if self.safe_behaviour not in SAFE_BEHAVIOURS:
            raise ValueError(f"safe_behaviour must be one of {SAFE_BEHAVIOURS}, got {self.safe_behaviour!r}")
        if not self.max_state_age_periods > 0:
            raise ValueError(f"max_state_age_periods must be > 0 [periods], got {self.max_state_age_periods}")
        if not 0 < self.open_loop_thrust_scale <= 1:
            raise ValueError(f"open_loop_thrust_scale must be in (0, 1], got {self.open_loop_thrust_scale}")
        if len(self.goal_w) != 3:
            raise ValueError(f"goal_w must be [x, y, z] m, got {self.goal_w!r}")
        if self.max_action_delta < 0:
            raise ValueError(f"max_action_delta must be >= 0, got {self.max_action_delta}")
        if isinstance(self.good_states_to_recover, bool) or not isinstance(self.good_states_to_recover, int) \
                or self.good_states_to_recover < 1:
            raise ValueError(f"good_states_to_recover must be an integer >= 1 [messages], got "
                             f"{self.good_states_to_recover!r}")
        for name in ("max_stamp_age_s", "max_stamp_lead_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0 [s], got {v!r}")
        for name, default in (("world_frame", "world"), ("body_frame", "base_link")):
            if not getattr(self, name):
                raise ValueError(f"{name} must name the frame the state messages use (e.g. {default!r}), "
                                 f"got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------- validation


def check_policy(contract: PolicyContract, running: PolicyContract | None = None) -> None:
    """Raise ContractError unless the runner can feed this policy (and swap it for ``running``)."""
    for s in contract.observation:
        if s.name not in PROVIDED_QUANTITIES:
            raise ContractError(f"the policy observes {s.name!r}, which the runner cannot provide "
                                f"(it provides {list(PROVIDED_QUANTITIES)})")
        if s.name == "prev_actions" and s.length % contract.action.dim != 0:
            raise ContractError(f"prev_actions has length {s.length}, not a multiple of action.dim "
                                f"{contract.action.dim}")
    if contract.action.hover_action and len(contract.action.hover_action) != contract.action.dim:
        raise ContractError(f"action.hover_action has {len(contract.action.hover_action)} values for "
                            f"{contract.action.dim} outputs")
    if running is None:
        return
    if contract.images != running.images:
        raise ContractError("the image inputs differ from the running policy's (its camera subscriptions are set "
                            "up for them): reconfigure instead")
    if contract.control_rate_hz != running.control_rate_hz:
        raise ContractError(f"control_rate_hz {contract.control_rate_hz} differs from the running policy's "
                            f"{running.control_rate_hz}: a hot swap keeps the rate (reconfigure instead)")
    if contract.action != running.action:
        diff = [f.name for f in dataclasses.fields(contract.action)
                if getattr(contract.action, f.name) != getattr(running.action, f.name)]
        raise ContractError(f"the action spec differs from the running policy's in {diff}: the robot "
                            f"adapter is set up for the running one (reconfigure instead)")


def load_policy(policy_dir: str | Path, running: PolicyContract | None = None, intra_op_threads: int = 1):
    """Load and verify ``policy.onnx`` + ``policy.json`` (sha256, I/O names and shapes, contract version),
    check the runner can feed it, and run it once on a hover-like observation. Raises ContractError."""
    from tether.runtime import OnnxPolicy  # onnxruntime import is slow: only where a policy is loaded

    policy = OnnxPolicy(policy_dir, intra_op_threads=intra_op_threads)
    check_policy(policy.contract, running)
    probe = np.zeros(policy.contract.obs_dim, dtype=np.float32)
    images = {im.name: np.full(im.shape, im.max_range_m, dtype=np.float32) for im in policy.contract.images}
    try:
        out = policy(probe, images) if images else policy(probe)
    except Exception as e:  # onnxruntime raises several private exception types
        raise ContractError(f"{policy.onnx_path}: a test inference failed ({e})") from e
    if out.shape != (policy.contract.action.dim,) or not np.all(np.isfinite(out)):
        raise ContractError(f"{policy.onnx_path}: a test inference returned {out!r}, expected "
                            f"{policy.contract.action.dim} finite values")
    return policy


# where each quantity comes from in nav_msgs/Odometry: a rejection names the field to look at
_ODOM_FIELD = {"pos_w": "pose.pose.position", "quat_wxyz": "pose.pose.orientation",
               "lin_vel_w": "twist.twist.linear", "ang_vel_b": "twist.twist.angular"}


@dataclasses.dataclass(frozen=True)
class StateHeader:
    """What a state message says about itself, and the node clock when it arrived."""

    frame_id: str
    """header.frame_id: the frame of the pose"""
    child_frame_id: str
    """the frame of the twist"""
    stamp_s: float
    """header.stamp [s, the robot's clock]"""
    clock_s: float
    """the node clock when the message arrived [s, same time base as the stamp]"""


REJECTION_KINDS = {
    "frame": "header.frame_id is not world_frame, or child_frame_id is not body_frame",
    "unstamped": "header.stamp is 0 (not set)",
    "stamp_stale": "header.stamp older than max_stamp_age_s by the node clock",
    "stamp_future": "header.stamp ahead of the node clock by more than max_stamp_lead_s",
    "out_of_order": "header.stamp not after the last accepted one: dropped, not a fault",
    "missing": "a quantity is missing",
    "not_finite": "a quantity contains NaN or Inf",
    "quaternion": "the orientation is not a unit quaternion (a zero quaternion included)",
    "out_of_range": "position, speed or angular rate beyond the state limits",
    "stale": "no state message for max_state_age_periods control periods (a fault, not a message)",
}
"""why a state is unusable, by cause (the diagnostics count each as rejected_<kind>)"""


@dataclasses.dataclass(frozen=True)
class Rejection:
    kind: str
    """the cause, a key of REJECTION_KINDS"""
    reason: str
    """what is wrong, naming the message field"""
    fault: bool = True
    """False: the message is dropped but the stream is not at fault (out of order)"""


def check_header(h: StateHeader, last_stamp_s: float | None, cfg: RunnerConfig) -> Rejection | None:
    """None if the header is usable, else why not."""
    if h.frame_id != cfg.world_frame:
        return Rejection("frame", f"header.frame_id {h.frame_id!r} is not the world frame {cfg.world_frame!r} "
                                  f"(parameter world_frame): the pose would be read in the wrong frame")
    if h.child_frame_id != cfg.body_frame:
        return Rejection("frame", f"child_frame_id {h.child_frame_id!r} is not the body frame {cfg.body_frame!r} "
                                  f"(parameter body_frame): the twist would be read in the wrong frame")
    if not cfg.check_stamps:
        return None
    if h.stamp_s == 0.0:
        return Rejection("unstamped", "header.stamp is 0 (not set): stamp each state with the time it was "
                                      "measured")
    age = h.clock_s - h.stamp_s
    if age > cfg.max_stamp_age_s:
        return Rejection("stamp_stale", f"header.stamp is {age * 1e3:.0f} ms old by the node clock "
                                        f"(> max_stamp_age_s {cfg.max_stamp_age_s * 1e3:.0f} ms)")
    if -age > cfg.max_stamp_lead_s:
        return Rejection("stamp_future", f"header.stamp is {-age * 1e3:.0f} ms ahead of the node clock "
                                         f"(> max_stamp_lead_s {cfg.max_stamp_lead_s * 1e3:.0f} ms): "
                                         f"the clocks disagree")
    if last_stamp_s is not None and h.stamp_s <= last_stamp_s:
        return Rejection("out_of_order", f"header.stamp {h.stamp_s:.6f} s is not after the last accepted "
                                         f"{last_stamp_s:.6f} s (out of order or repeated): dropped",
                         fault=False)
    return None


def check_state(q: dict[str, np.ndarray], limits: StateLimits) -> Rejection | None:
    """None if the state's values can be used, else why not, naming the quantity and its message field.

    The attitude is checked before the velocities: the world velocity is computed with it, so a broken
    quaternion must be reported as the cause, not the velocity it spoils. Runs on every state message
    at up to 500 Hz: plain float math on 13 numbers is several times cheaper than numpy's per-call
    overhead on 3-vectors."""
    values = {}
    for name in ("pos_w", "quat_wxyz", "ang_vel_b", "lin_vel_w"):
        v = q.get(name)
        if v is None:
            return Rejection("missing", f"state has no {name}")
        v = np.asarray(v, dtype=np.float64).tolist()
        if not all(map(math.isfinite, v)):
            return Rejection("not_finite", f"state {name} ({_ODOM_FIELD[name]}) contains NaN or Inf: "
                                           f"{[round(x, 3) for x in v]}")
        values[name] = v
        if name == "quat_wxyz":
            qn = math.sqrt(sum(x * x for x in v))
            if abs(qn - 1.0) > limits.quat_norm_tol:
                return Rejection("quaternion", f"state quat_wxyz ({_ODOM_FIELD[name]}) "
                                               f"{[round(x, 3) for x in v]} has norm {qn:.3f}, not a unit "
                                               f"quaternion (|norm - 1| <= {limits.quat_norm_tol})")
    pos = values["pos_w"]
    if max(abs(x) for x in pos) > limits.max_abs_pos_m:
        return Rejection("out_of_range", f"state pos_w {[round(x, 3) for x in pos]} out of range "
                                         f"(|.| <= {limits.max_abs_pos_m} m)")
    speed = math.sqrt(sum(x * x for x in values["lin_vel_w"]))
    if speed > limits.max_speed_m_s:
        return Rejection("out_of_range", f"state speed {speed:.2f} m/s out of range (<= {limits.max_speed_m_s} m/s)")
    rate = math.sqrt(sum(x * x for x in values["ang_vel_b"]))
    if rate > limits.max_ang_vel_rad_s:
        return Rejection("out_of_range", f"state angular rate {rate:.2f} rad/s out of range "
                                         f"(<= {limits.max_ang_vel_rad_s} rad/s)")
    return None


def validate_state(q: dict[str, np.ndarray], limits: StateLimits) -> str | None:
    """None if the state can be used, else why not (names the quantity)."""
    r = check_state(q, limits)
    return None if r is None else r.reason


# ------------------------------------------------------------------------------ safe behaviours


def motors_off_action(contract: PolicyContract) -> np.ndarray:
    """Zero rotor speed (rotor) or zero thrust and zero rates (ctbr), in normalized units."""
    a = contract.action
    if a.type == "rotor":
        return np.full(a.dim, a.low, dtype=np.float32)
    out = np.zeros(a.dim, dtype=np.float32)
    out[0] = a.low
    return out


def hover_thrust_n(contract: PolicyContract) -> float | None:
    """Collective thrust of the contract's hover action [N], None if the contract has none."""
    return action_map(contract.action).hover_thrust_n


def open_loop_descent_action(contract: PolicyContract, thrust_scale: float) -> np.ndarray | None:
    """Hover action with its thrust scaled by ``thrust_scale`` and no rate/torque command; None if the
    contract has no hover action (then only motors off is possible without state)."""
    a = contract.action
    if not a.hover_action:
        return None
    m, h = action_map(a), np.asarray(a.hover_action, dtype=np.float64)
    if a.type == "ctbr":
        out = m.from_ctbr(thrust_scale * m.to_ctbr(h)[0], np.zeros(3))
    else:  # thrust ~ rpm^2: scale every rotor's speed by sqrt(scale)
        out = m.from_rotor_fraction(math.sqrt(thrust_scale) * m.to_rotor_fraction(h))
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------- the core


@dataclasses.dataclass
class StateSample:
    """The latest accepted state: vocabulary quantities and when it was received [s, monotonic]."""

    quantities: dict[str, np.ndarray]
    received_s: float


@dataclasses.dataclass(frozen=True)
class TickResult:
    policy_action: np.ndarray | None
    """what the policy asked for this tick (None when it could not run)"""
    human_action: np.ndarray | None
    """the human's mapped command (None without a fresh teleop stream)"""
    executed: np.ndarray
    """what is sent to the robot, normalized [-1, 1], after the action limits"""
    intervention: bool
    source: str
    """policy | human | safe | estop"""
    mode: str
    """human-readable mode, e.g. 'policy', 'human', 'safe:hold (state stale: ...)'"""
    reason: str
    pos_err_int_w: np.ndarray | None = None
    """the position-error integral this tick's observation was built from [m s, world] (None: the policy did
    not run, or its contract has no pos_err_int_b)"""


class RunnerCore:
    """Holds the running policy and its history; :meth:`tick` decides one command. Not thread-safe
    except :meth:`offer_policy`, which a loader thread may call at any time."""

    def __init__(self, policy, cfg: RunnerConfig):
        self.cfg = cfg
        self.policy = policy
        self.contract: PolicyContract = policy.contract
        self.period_s = 1.0 / self.contract.control_rate_hz
        self._pending = None
        self.swaps = 0  # policies swapped in so far
        self.goal_w = np.asarray(cfg.goal_w, dtype=np.float64)
        self.state: StateSample | None = None
        self.state_fault: str | None = None  # the fault in force (first cause), until enough good states
        self.good_run = 0  # good state messages in a row since the last fault
        self.rejections: collections.Counter[str] = collections.Counter()  # by Rejection.kind
        self.faults = 0  # state faults so far (each needed a recovery)
        self.last_rejection = ""
        self._last_stamp_s: float | None = None
        self._reported: set[str] = set()  # causes already in the log during this fault
        self._cause = ""  # the latest cause of the fault in force
        self._last_message_s: float | None = None  # newest accepted or faulty state message [s, monotonic]
        self._events: list[tuple[str, str]] = []
        self._safe_since: float | None = None
        self._safe_anchor_w: np.ndarray | None = None
        self._last_executed: np.ndarray | None = None
        self._blind_since: float | None = None  # since when the state has been unusable [s]
        self.images = {im.name: ImageSlot(im) for im in self.contract.images}
        self.image_problems: collections.Counter[str] = collections.Counter()  # ticks refused, by cause
        self.last_image_problem = ""
        self._image_fault: str | None = None  # the image problem in force (first cause)
        self._image_reported: set[str] = set()  # causes logged in the image fault in force
        self._image_logged_s: dict[str, float] = {}  # when each cause was last logged [s, monotonic]
        self._image_fault_logged = False  # the image fault in force was logged (then so is its recovery)
        self._image_bad_ticks = 0  # ticks without a usable image in the fault in force
        self._feed: dict[str, np.ndarray] | None = None  # the images of this tick
        self._set_limits(self.contract)
        self._reset_history(self.contract)

    # ------------------------------------------------------------------------------ policy swap

    def offer_policy(self, policy) -> None:
        """Hand over an already loaded and validated policy; it takes over at the start of the next tick."""
        check_policy(policy.contract, self.contract)
        self._pending = policy

    def _take_pending(self) -> bool:
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        self.policy, self.contract = pending, pending.contract
        self.swaps += 1
        self._reset_history(self.contract, keep=True)
        return True

    def _reset_history(self, c: PolicyContract, keep: bool = False) -> None:
        k = 0
        for s in c.observation:
            if s.name == "prev_actions":
                k = s.length // c.action.dim
        init = initial_action(c).astype(np.float32)  # as training started every episode
        old = getattr(self, "_history", None)
        self._history = np.tile(init, (max(k, 1), 1))
        # pos_err_int_b: the integral restarts with the history (a training episode starts both afresh)
        uses_integral = any(s.name == "pos_err_int_b" for s in c.observation)
        if not (keep and getattr(self, "_integral", None) is not None):
            self._integral = PositionErrorIntegral(1.0 / c.control_rate_hz) if uses_integral else None
        elif not uses_integral:
            self._integral = None
        if keep and old is not None and old.shape[1] == c.action.dim:
            n = min(len(old), len(self._history))
            self._history[-n:] = old[-n:]

    def _set_limits(self, c: PolicyContract) -> None:
        a = c.action
        low = np.full(a.dim, a.low, dtype=np.float32)
        high = np.full(a.dim, a.high, dtype=np.float32)
        for name, given, base, pick in (("action_low", self.cfg.action_low, low, np.maximum),
                                        ("action_high", self.cfg.action_high, high, np.minimum)):
            if given:
                if len(given) not in (1, a.dim):
                    raise ValueError(f"{name} has {len(given)} values for {a.dim} outputs (give 1 or {a.dim})")
                base[:] = pick(base, np.asarray(given, dtype=np.float32))
        if np.any(low > high):
            raise ValueError(f"action limits are empty: low {low.tolist()} > high {high.tolist()}")
        self.action_low, self.action_high = low, high

    # ------------------------------------------------------------------------------------ inputs

    def set_state(self, q: dict[str, np.ndarray], received_s: float,
                  header: StateHeader | None = None) -> str | None:
        """Offer a state (``header``: what the message says about its frame and time; None for an
        in-process source). Returns None if accepted, else the reason it was rejected."""
        r = check_header(header, self._last_stamp_s, self.cfg) if header is not None else None
        if r is None:
            r = check_state(q, self.cfg.state_limits)
        if r is not None:
            self.rejections[r.kind] += 1
            self.last_rejection = r.reason
            if r.fault:
                self._last_message_s = received_s
                self._fault(r.kind, f"state rejected: {r.reason}")
            elif r.kind not in self._reported:
                self._reported.add(r.kind)
                self._events.append(("warn", f"state message {r.reason} (logged once; counted in diagnostics)"))
            return r.reason
        if header is not None:
            self._last_stamp_s = header.stamp_s
        self.state = StateSample(q, received_s)
        self._last_message_s = received_s
        if self.state_fault is not None:
            self.good_run += 1
            if self.good_run >= self.cfg.good_states_to_recover:
                self._events.append(("info", f"state usable again after {self.good_run} good messages in a row "
                                             f"(fault was: {self.state_fault})"))
                self.state_fault = None
                self._reported.clear()
        return None

    def _fault(self, kind: str, text: str) -> None:
        """A state fault: starts (or restarts) the run of good messages needed to recover. Logged once
        per fault and once per new cause within it."""
        if self.state_fault is None:
            self.faults += 1
            self.state_fault = text
            self._events.append(("warn", f"state fault: {text}; the policy flies again after "
                                         f"{self.cfg.good_states_to_recover} good messages in a row"))
        elif kind not in self._reported:
            self._events.append(("warn", f"state fault continues, also: {text}"))
        self._reported.add(kind)
        self._cause = text
        self.good_run = 0

    def drain_events(self) -> list[tuple[str, str]]:
        """(level 'info' | 'warn', text) of the faults, new causes and recoveries since the last call."""
        events, self._events = self._events, []
        return events

    @property
    def recovering(self) -> bool:
        """A state fault is in force (the safe behaviour flies until enough good states came)."""
        return self.state_fault is not None

    def set_image(self, name: str, frame: ImageFrame) -> str | None:
        """Offer the image of input ``name``; returns None if it can be used, else why not."""
        problem = self.images[name].offer(frame)
        return None if problem is None else problem[1]

    def set_camera_info(self, name: str, fx: float, fy: float, cx: float, cy: float, width: int,
                        height: int) -> str | None:
        """Offer the camera_info of input ``name`` (P's fx, fy, cx, cy at width x height px); None if it
        matches the trained intrinsics, else what differs."""
        return self.images[name].offer_camera_info(fx, fy, cx, cy, width, height)

    def images_waiting(self) -> str | None:
        """Before the first tick that can fly: None once every image input has had a valid image and a
        matching camera_info (whatever their age), else what is missing. The node does not command a
        vehicle that never saw its camera (as with no state yet)."""
        for name, slot in self.images.items():
            problem = slot.problem if slot.depth_m is None else slot.info_problem
            if problem is not None:
                return f"image {name!r} ({slot.image.topic}): {problem[1]}"
        return None

    def image_problem(self, now_s: float, clock_s: float) -> str | None:
        """None if every image input is usable now (and this tick's images are set), else the cause.
        Counts the tick by cause; logs each cause once within a run of unusable ticks, and again in a later
        run only IMAGE_LOG_INTERVAL_S after it was last logged; the recovery of a logged run is logged."""
        self._feed = None
        if not self.images:
            return None
        for name, slot in self.images.items():
            problem = slot.check(now_s, clock_s, self.cfg.check_stamps, self.cfg.max_stamp_lead_s)
            if problem is not None:
                kind, text = problem
                text = f"image {name!r} ({slot.image.topic}) unusable: {text}"
                self.image_problems[kind] += 1
                self.last_image_problem = text
                self._image_bad_ticks += 1
                if self._image_fault is None:
                    self._image_fault = text
                if kind not in self._image_reported and \
                        now_s - self._image_logged_s.get(kind, -math.inf) >= IMAGE_LOG_INTERVAL_S:
                    self._image_reported.add(kind)
                    self._image_logged_s[kind] = now_s
                    self._image_fault_logged = True
                    self._events.append(("warn", f"{text}; the policy does not run without a fresh valid image, "
                                                 f"the safe behaviour flies (logged once per cause; ticks counted "
                                                 f"in diagnostics image_{kind})"))
                return text
        if self._image_fault is not None:
            if self._image_fault_logged:
                self._events.append(("info", f"images usable again after {self._image_bad_ticks} ticks without "
                                             f"(was: {self._image_fault})"))
            self._image_fault, self._image_bad_ticks, self._image_fault_logged = None, 0, False
            self._image_reported.clear()
        self._feed = {name: slot.depth_m for name, slot in self.images.items()}
        return None

    def set_goal(self, goal_w) -> str | None:
        g = np.asarray(goal_w, dtype=np.float64)
        if g.shape != (3,) or not np.all(np.isfinite(g)):
            return f"goal {g.tolist()} rejected: needs 3 finite values [m]"
        self.goal_w = g
        return None

    # -------------------------------------------------------------------------------------- tick

    def _infer(self, state: StateSample, goal_w: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        q = dict(state.quantities)
        q["goal_w"] = goal_w
        q["goal_vel_w"] = np.zeros(3)
        q["prev_actions"] = self._history.reshape(-1)
        self._tick_integral = None
        if self._integral is not None:  # every tick the state is good, whoever flies: the flight's own integral
            q["pos_err_int_w"] = self._tick_integral = self._integral.update(goal_w, q["pos_w"])
        try:
            obs = build_observation(self.contract, q)
            out = self.policy(obs, self._feed) if self.images else self.policy(obs)
        except Exception as e:  # a failed inference must become the safe behaviour, whatever raised
            return None, f"inference failed: {type(e).__name__}: {e}"
        if not np.all(np.isfinite(out)):
            return None, "inference returned NaN or Inf"
        return np.asarray(out, dtype=np.float32), None

    def state_problem(self, now_s: float) -> str | None:
        """None if the latest state can fly the policy, else the real cause: no state yet, a stale stream
        (nothing usable or faulty came in time), or the fault in force (its latest cause)."""
        if self._last_message_s is None:
            return "no state received yet"
        age = now_s - self._last_message_s
        limit = self.cfg.max_state_age_periods * self.period_s
        if age > limit:  # also breaks a run of good messages during a fault
            text = f"state stale: {age * 1e3:.1f} ms old > {limit * 1e3:.1f} ms"
            self._fault("stale", text)
            return text
        if self.state_fault is not None:
            if self.good_run:
                return f"{self._cause}; recovering, {self.good_run}/{self.cfg.good_states_to_recover} good"
            return self._cause
        return None

    def tick(self, now_s: float, human: HumanInput | None, estop: bool, clock_s: float | None = None) -> TickResult:
        """One command at ``now_s`` [s, monotonic]; ``clock_s``: the node clock now (image stamps are
        judged against it; None: the same clock as now_s)."""
        self._take_pending()
        state_problem = self.state_problem(now_s)
        if state_problem is not None:
            if self._blind_since is None:
                self._blind_since = now_s
        elif self._blind_since is not None:
            if now_s - self._blind_since > self.cfg.history_reset_after_s:
                self._reset_history(self.contract)
            self._blind_since = None
        policy_action, policy_problem = None, None
        self._tick_integral = None
        if state_problem is None:
            policy_problem = self.image_problem(now_s, now_s if clock_s is None else clock_s)
            if policy_problem is None:
                policy_action, policy_problem = self._infer(self.state, self.goal_w)
        fault = state_problem or policy_problem
        human_action = None
        if human is not None and human.action is not None:
            human_action = np.clip(np.asarray(human.action, dtype=np.float32), self.action_low, self.action_high)
        d: Decision = arbitrate(policy_action, fault, human, now_s, estop, self.cfg.arbiter)
        if d.source == "estop":
            executed, mode = motors_off_action(self.contract), "estop"
        elif d.source == "safe":
            executed, mode = self._safe_action(now_s, state_problem is None, policy_problem is None)
        else:
            executed = self._limit(d.action)
            mode = d.source
        if d.source in FLYING_SOURCES:
            self._safe_since, self._safe_anchor_w = None, None
        self._last_executed = executed
        self._history[:-1] = self._history[1:].copy()  # oldest first; in place (np.roll allocates)
        self._history[-1] = executed
        if d.source not in FLYING_SOURCES:
            mode = f"{mode} ({d.reason})"
        return TickResult(policy_action, human_action, executed, d.intervention, d.source, mode, d.reason,
                          self._tick_integral if policy_action is not None else None)

    def _limit(self, action: np.ndarray) -> np.ndarray:
        a = np.minimum(np.maximum(action, self.action_low), self.action_high)  # np.clip's wrapper is slow
        if self.cfg.max_action_delta > 0 and self._last_executed is not None:
            a = np.clip(a, self._last_executed - self.cfg.max_action_delta,
                        self._last_executed + self.cfg.max_action_delta)
        return a.astype(np.float32)

    def _safe_action(self, now_s: float, state_ok: bool, policy_ok: bool) -> tuple[np.ndarray, str]:
        """The configured safe behaviour, degraded to what is still possible:
        hold needs state and policy (else land); a closed-loop land needs both (else open-loop descent
        on the contract's hover thrust); every land ends in motors off after land_timeout_s."""
        cfg, c = self.cfg, self.contract
        if self._safe_since is None:
            self._safe_since = now_s
            if self.state is not None:
                self._safe_anchor_w = np.array(self.state.quantities["pos_w"], dtype=np.float64)
        behaviour = cfg.safe_behaviour
        closed_loop = state_ok and policy_ok and self._safe_anchor_w is not None
        if behaviour == "hold" and not closed_loop:
            behaviour = "land"
        elapsed = now_s - self._safe_since
        if behaviour == "land" and elapsed > cfg.land_timeout_s:
            behaviour = "motors_off"
        if behaviour == "motors_off":
            return motors_off_action(c), "safe:motors_off"
        if closed_loop:
            goal = self._safe_anchor_w.copy()
            if behaviour == "land":
                goal[2] -= cfg.land_speed_m_s * elapsed
            action, problem = self._infer(self.state, goal)
            if action is not None:
                return np.clip(action, self.action_low, self.action_high).astype(np.float32), f"safe:{behaviour}"
        descent = open_loop_descent_action(c, cfg.open_loop_thrust_scale)
        if descent is None:
            return motors_off_action(c), "safe:motors_off"
        return descent, "safe:land_open_loop"


class TickScheduler:
    """When to tick: on a fresh state message (lowest latency) or, if none came in time, on the timer.

    A token bucket refilled at the control rate (one token per period, at most ``burst`` tokens) keeps
    the average rate at the contract's rate whatever the robot's state rate is, and follows the phase
    of the state stream instead of a fixed schedule (robot and runner clocks drift). A state message
    ticks if at least ``1 - early`` tokens are there (it may come that much of a period early); the
    timer ticks once ``1 + late`` tokens piled up (the state is that late or gone: the watchdog still
    runs every period). ``source='timer'`` ticks on every timer callback.

    A state faster than the control rate ticks on the arrival nearest one period after the last tick:
    it ticks once at least ``1 - early_now`` periods have passed since then, ``early_now`` being
    ``early`` or half the state stream's interval (an average of the last arrivals), whichever is less,
    so the threshold sits midway between two arrivals and every k-th state of a stream at k x the
    control rate ticks, whatever its jitter (within +-half an interval). The token bucket still bounds
    the average rate (a stream at 1.5 x ticks at the control rate on average). The tokens alone do not
    lock the phase: with a threshold of half a period on them, a stream at twice the control rate put
    every other arrival exactly on it, so jitter of a fraction of a millisecond decided the tick and the
    policy saw states 10 and 30 ms apart instead of 20 (seen over ROS 2 on the twin: 5 % of a 50 Hz
    policy's ticks; system identification from those logs missed the weak motor's fit by 9 % of the
    residual).

    With the state as the source, the timer is a deadline, not a clock: ``timer_period_s(source)`` says
    what its period must be after a tick from ``source``, and the node restarts it on every tick. While
    states flow it never fires (no wake-ups competing with the state callback); a state later than
    ``late`` periods gets a tick from the timer ``(1 + late)`` periods after the last one, whatever the
    phase of the two streams, and in a blackout the timer ticks every period.
    A gap of more than 1.5 periods between ticks counts as missed ticks.
    """

    STATE_INTERVAL_GAIN = 0.05
    """weight of the newest arrival interval in the average (about the last 20 arrivals count)"""

    def __init__(self, period_s: float, source: str = "state", early: float = 0.5, late: float = 0.25,
                 burst: float = 1.5):
        if source not in ("state", "timer"):
            raise ValueError(f"tick source must be 'state' or 'timer', got {source!r}")
        if not (0 <= early < 1 and 0 < late < 0.5 and 1 + late <= burst):
            raise ValueError(f"need 0 <= early < 1, 0 < late < 0.5, burst >= 1 + late; got {early}, {late}, {burst}")
        self.period_s, self.source = period_s, source
        self.early, self.late, self.burst = early, late, burst
        self.tokens = burst
        self._accrued_s: float | None = None
        self._last_state_s: float | None = None
        self.state_interval_s: float | None = None
        """average time between state messages (an exponential average, each interval capped at one period)"""
        self.last_tick_s: float | None = None
        self.prev_tick_s: float | None = None  # the tick before the last one (the swap-gap figure)
        self.ticks = 0
        self.missed = 0

    def timer_period_s(self, after: str) -> float:
        """The fallback timer's period after a tick from ``after`` ('state' or 'timer')."""
        if self.source == "state" and after == "state":
            return (1.0 + self.late) * self.period_s
        return self.period_s

    def _accrue(self, now_s: float) -> None:
        if self._accrued_s is not None:
            self.tokens = min(self.burst, self.tokens + (now_s - self._accrued_s) / self.period_s)
        self._accrued_s = now_s

    def early_now(self) -> float:
        """How early (in periods) a state may come and still tick: ``early``, or half the state interval."""
        if self.state_interval_s is None:
            return self.early
        return min(self.early, 0.5 * self.state_interval_s / self.period_s)

    def on_state(self, now_s: float) -> bool:
        if self.source != "state":
            return False
        if self._last_state_s is not None:
            dt = min(max(now_s - self._last_state_s, 0.0), self.period_s)  # a blackout is not a rate
            avg = self.state_interval_s
            self.state_interval_s = dt if avg is None else avg + self.STATE_INTERVAL_GAIN * (dt - avg)
        self._last_state_s = now_s
        self._accrue(now_s)
        if self.tokens < 1.0 - self.early:
            return False
        if self.last_tick_s is not None and now_s - self.last_tick_s < (1.0 - self.early_now()) * self.period_s:
            return False
        self._consume(now_s)
        return True

    def on_timer(self, now_s: float) -> bool:
        self._accrue(now_s)
        # 5 % slack: a deadline timer fires (1 + late) periods after the tick, give or take its clock
        if self.source == "state" and self.tokens < 1.0 + self.late - 0.05:
            return False
        self._consume(now_s)
        return True

    def _consume(self, now_s: float) -> None:
        self.tokens -= 1.0
        if self.last_tick_s is not None:
            gap = now_s - self.last_tick_s
            if gap > 1.5 * self.period_s:
                self.missed += int(round(gap / self.period_s)) - 1
        self.prev_tick_s, self.last_tick_s = self.last_tick_s, now_s
        self.ticks += 1
