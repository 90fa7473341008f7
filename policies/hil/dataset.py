"""Intervention logs (the recorder's rosbag2-layout MCAP) -> per-step arrays, checked before use.

One step is one runner tick, i.e. one /cmd/executed message (sensor_msgs/JointState named by the
contract's outputs; logs recorded before commands were stamped hold std_msgs/Float32MultiArray and still
load). Aligned to it (by the recorder's log
time, within half a control period): /cmd/policy (what the policy asked), /cmd/human (the mapped
gamepad command, when a person was on the sticks), /intervention (who was in command), and the latest
/state/odom received before it (the state the runner acted on). The observation is rebuilt from these
by the contract's named slices; prev_actions is the runner's history of executed actions. Because the
recorded policy is deterministic, re-running it on the rebuilt observations must reproduce the logged
policy actions: ``replay_match`` measures that, and a low value means the log and the policy (or the
goal) do not belong together.

Refused with a :class:`LogError` naming the log and what is wrong, before anything is written: a
missing topic, a truncated file (a record cut short, or fewer messages than metadata.yaml counts), a log
recorded with a policy that is neither the parent nor one of its ancestors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from tether.actions import initial_action
from tether.contract import PolicyContract
from tether.observation import build_observation, integrate_pos_err, quat_wxyz_to_rotmat
from tether_deploy.conversions import command_names, command_values
from tether_deploy.runner_core import RunnerConfig

REQUIRED_TOPICS = ("/state/odom", "/cmd/policy", "/cmd/executed", "/intervention", "/runner/active_policy")
EPISODE_GAP_S = 0.5
POS_ERR_INT_TOPIC = "/runner/pos_err_int"
"""the runner's position-error integral per tick (tether_deploy.qos.POS_ERR_INT), where the policy observes one"""
MAX_MISSING_HUMAN_FRACTION = 0.05
"""a gap this long between ticks, or a position jump of more than EPISODE_JUMP_M, starts a new episode"""
EPISODE_JUMP_M = 0.25


class LogError(ValueError):
    """An intervention log cannot be used; the message names the file and the reason."""


@dataclasses.dataclass
class StepLog:
    """Per-step arrays of one or more logs; N steps, A action outputs."""

    t_s: np.ndarray  # [N] log time of the tick [s]
    state_t_s: np.ndarray  # [N] stamp of the state the tick acted on [s] (the tick's time in logs without stamps)
    pos_w: np.ndarray  # [N, 3] m
    quat_wxyz: np.ndarray  # [N, 4]
    lin_vel_w: np.ndarray  # [N, 3] m/s
    ang_vel_b: np.ndarray  # [N, 3] rad/s
    goal_w: np.ndarray  # [N, 3] m
    pos_err_int_w: np.ndarray  # [N, 3] m s: the runner's position-error integral at the tick (episode_integrals)
    policy_action: np.ndarray  # [N, A], NaN where the policy did not run
    human_action: np.ndarray  # [N, A], NaN where there was no teleop input
    executed: np.ndarray  # [N, A] what the robot was sent
    prev_executed: np.ndarray  # [N, H, A] the runner's action history before the tick, oldest first
    intervention: np.ndarray  # [N] bool: a person was in command
    episode: np.ndarray  # [N] int, global episode index
    policy_sha: np.ndarray  # [N] object: sha256 of the policy that was running
    source: np.ndarray  # [N] object: 'robot' (a log) or 'sim'
    logs: list[str]

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def human_controlled(self) -> np.ndarray:
        return self.intervention & np.all(np.isfinite(self.human_action), axis=1)

    def quantities(self) -> dict[str, np.ndarray]:
        return {"pos_w": self.pos_w, "quat_wxyz": self.quat_wxyz, "lin_vel_w": self.lin_vel_w,
                "ang_vel_b": self.ang_vel_b, "goal_w": self.goal_w, "goal_vel_w": np.zeros_like(self.goal_w),
                "prev_actions": self.prev_executed.reshape(len(self), -1), "pos_err_int_w": self.pos_err_int_w}

    def observations(self, contract: PolicyContract) -> np.ndarray:
        """[N, obs_dim] float32, laid out by the contract (what the runner fed the policy)."""
        return build_observation(contract, self.quantities())

    def pos_err_m(self) -> np.ndarray:
        return np.linalg.norm(self.goal_w - self.pos_w, axis=1)

    def select(self, mask: np.ndarray) -> "StepLog":
        kw = {f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self) if f.name != "logs"}
        return StepLog(**kw, logs=list(self.logs))

    @staticmethod
    def concat(parts: list["StepLog"]) -> "StepLog":
        if not parts:
            raise LogError("no steps to concatenate")
        kw, offset, episodes = {}, 0, []
        for p in parts:
            episodes.append(p.episode + offset)
            offset += int(p.episode.max()) + 1 if len(p) else 0
        for f in dataclasses.fields(StepLog):
            if f.name not in ("logs", "episode"):
                kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        return StepLog(**kw, episode=np.concatenate(episodes), logs=[x for p in parts for x in p.logs])


def _mcap_file(log: Path) -> Path:
    if log.is_file():
        return log
    files = sorted(log.glob("*.mcap"))
    if not log.is_dir() or not files:
        raise LogError(f"{log}: no MCAP file (expected a bag directory with <name>_0.mcap, or the .mcap file)")
    return files[0]


_ODOM_DOUBLES = 7 + 36 + 6 + 36
"""nav_msgs/Odometry after its two strings: pose (position, orientation), its covariance, twist, its covariance"""


def _decode_odometry(data: bytes):
    """A little-endian CDR nav_msgs/msg/Odometry read with two struct calls and one numpy view (the generic
    decoder unpacks its 72 covariance doubles one Python call each: most of a log's reading time); the
    same attributes as the generic decoder's message. None for anything else (big-endian, cut short): the
    caller then uses the generic decoder."""
    import struct
    from types import SimpleNamespace as NS

    if len(data) < 16 or data[:2] != b"\x00\x01":  # CDR_LE encapsulation
        return None
    sec, nanosec, n = struct.unpack_from("<iII", data, 4)
    o = 16 + n  # offsets count from the end of the 4-byte encapsulation header
    frame_id = data[16:o - 1].decode()
    o += -(o - 4) % 4
    if o + 4 > len(data):
        return None
    (n,) = struct.unpack_from("<I", data, o)
    child = data[o + 4:o + 3 + n].decode()
    o += 4 + n
    o += -(o - 4) % 8
    if o + 8 * _ODOM_DOUBLES > len(data):
        return None
    v = np.frombuffer(data, dtype="<f8", count=_ODOM_DOUBLES, offset=o).tolist()
    xyz = lambda k: NS(x=v[k], y=v[k + 1], z=v[k + 2])  # noqa: E731
    return NS(header=NS(stamp=NS(sec=sec, nanosec=nanosec), frame_id=frame_id), child_frame_id=child,
              pose=NS(pose=NS(position=xyz(0), orientation=NS(x=v[3], y=v[4], z=v[5], w=v[6])), covariance=v[7:43]),
              twist=NS(twist=NS(linear=xyz(43), angular=xyz(46)), covariance=v[49:85]))


def read_messages(log: str | Path, fast_odometry: bool = True) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(log_time_ns, decoded message)] of one bag; LogError if the file is cut short.
    fast_odometry: nav_msgs/msg/Odometry through _decode_odometry (same fields; False: the generic decoder)."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from mcap_ros2.decoder import DecoderFactory

    path = _mcap_file(Path(log))
    schemas, channels, decoders = {}, {}, {}
    out: dict[str, list[tuple[int, object]]] = {}
    factory = DecoderFactory()
    with open(path, "rb") as f:
        try:
            for rec in StreamReader(f, validate_crcs=True).records:
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec
                elif isinstance(rec, Channel):
                    channels[rec.id] = rec
                    out.setdefault(rec.topic, [])
                elif isinstance(rec, Message):
                    ch = channels[rec.channel_id]
                    if ch.id not in decoders:
                        decoders[ch.id] = factory.decoder_for(ch.message_encoding, schemas.get(ch.schema_id))
                        schema = schemas.get(ch.schema_id)
                        if fast_odometry and ch.message_encoding == "cdr" and schema is not None and \
                                schema.name == "nav_msgs/msg/Odometry":
                            decoders[ch.id] = lambda data, generic=decoders[ch.id]: \
                                _decode_odometry(data) or generic(data)
                    out[ch.topic].append((rec.log_time, decoders[ch.id](rec.data)))
        except (McapError, EOFError, ValueError, KeyError) as e:
            raise LogError(f"{path}: truncated or corrupt MCAP ({type(e).__name__}: {e}); read "
                           f"{sum(map(len, out.values()))} messages before it") from e
    meta = path.parent / "metadata.yaml"
    if meta.is_file():
        info = yaml.load(meta.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)).get("rosbag2_bagfile_information", {})
        for entry in info.get("topics_with_message_count", []):
            name, count = entry["topic_metadata"]["name"], int(entry["message_count"])
            if len(out.get(name, [])) < count:
                raise LogError(f"{path}: truncated: metadata.yaml counts {count} messages on {name}, the MCAP "
                               f"holds {len(out.get(name, []))}")
    return out


def _stamps(msgs, topic: str) -> np.ndarray | None:
    """header.stamp [ns] of every message on ``topic``; None if its messages have no header."""
    items = msgs.get(topic, [])
    if not items or not hasattr(items[0][1], "header"):
        return None
    return np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in items], dtype=np.int64)


def _nearest(times: np.ndarray, query: np.ndarray, tol_ns: int) -> np.ndarray:
    """Index into ``times`` (sorted) nearest each query, -1 where none within tol_ns."""
    if len(times) == 0:
        return np.full(len(query), -1)
    i = np.clip(np.searchsorted(times, query), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(query), int)
    left = np.clip(i - 1, 0, len(times) - 1)
    pick = np.where(np.abs(times[left] - query) <= np.abs(times[i] - query), left, i)
    return np.where(np.abs(times[pick] - query) <= tol_ns, pick, -1)


def load_log(log: str | Path, contract: PolicyContract, accepted_shas: set[str],
             goal_w=(0.0, 0.0, 1.0), policy=None) -> StepLog:
    """Per-step arrays of one bag recorded with a policy of ``contract``'s layout.

    accepted_shas: sha256 of the policies whose logs may be used (the parent and its ancestors).
    goal_w: the runner's goal [m] for logs without /runner/goal (recorded before the runner published
        it); a log that carries it uses the goal in force at each tick.
    policy: the loaded parent (tether.runtime.OnnxPolicy). With it, a tick whose state message arrived
        at the recorder out of order (two processes' streams interleave under load) is matched to the
        neighbouring state message that reproduces the logged policy action, when one does.
    """
    log = Path(log)
    msgs = read_messages(log)
    missing = [t for t in REQUIRED_TOPICS if not msgs.get(t)]
    if missing:
        raise LogError(f"{log}: topic(s) {missing} missing or empty; an intervention log needs "
                       f"{list(REQUIRED_TOPICS)} (record with `tether deploy --record`)")
    a_dim = contract.action.dim
    period_ns = int(1e9 / contract.control_rate_hz)
    active = [(t, m.data.split()) for t, m in msgs["/runner/active_policy"] if m.data.startswith("active ")]
    if not active:
        raise LogError(f"{log}: /runner/active_policy never names an active policy")
    for _, words in active:
        if words[1] not in accepted_shas:
            raise LogError(f"{log}: recorded with policy sha256 {words[1][:12]}..., which is neither the parent "
                           f"nor one of its ancestors ({sorted(s[:12] for s in accepted_shas)}): a log from a "
                           "different policy contract is refused")

    names = command_names(contract.action)

    def arr(topic: str) -> tuple[np.ndarray, np.ndarray]:
        items = msgs.get(topic, [])
        t = np.array([x[0] for x in items], dtype=np.int64)
        if not items:
            return t, np.zeros((0, a_dim))
        try:
            v = np.array([command_values(x[1], names) for x in items]).reshape(len(items), -1)
        except ValueError as e:
            raise LogError(f"{log}: {topic}: {e}: a log from a different policy contract is refused") from e
        return t, v

    t_exec, executed = arr("/cmd/executed")
    if executed.shape[1] != a_dim:
        raise LogError(f"{log}: /cmd/executed has {executed.shape[1]} values per message, the contract's "
                       f"action.dim is {a_dim}: a log from a different policy contract is refused")
    t_pol, pol = arr("/cmd/policy")
    t_hum, hum = arr("/cmd/human")
    t_flag = np.array([t for t, _ in msgs["/intervention"]], dtype=np.int64)
    flags = np.array([bool(m.data) for _, m in msgs["/intervention"]])
    tol = period_ns // 2
    i_flag = _nearest(t_flag, t_exec, tol)  # the flag has no stamp: by the recorder's log time
    s_exec, s_odom = _stamps(msgs, "/cmd/executed"), _stamps(msgs, "/state/odom")
    by_stamp = s_exec is not None and s_odom is not None and np.all(s_odom > 0)
    if by_stamp:
        # Stamped commands: a tick's policy, human and executed commands carry the same stamp, and the
        # state it acted on is the newest stamped before it. The recorder's arrival times jitter under
        # load (bursts of a few messages 1 ms apart); the stamps do not.
        i_pol = _nearest(_stamps(msgs, "/cmd/policy"), s_exec, 0) if len(pol) else np.full(len(t_exec), -1)
        i_hum = _nearest(_stamps(msgs, "/cmd/human"), s_exec, 0) if len(hum) else np.full(len(t_exec), -1)
    else:  # logs recorded before commands were stamped
        i_pol, i_hum = _nearest(t_pol, t_exec, tol), _nearest(t_hum, t_exec, tol)
    policy_action = np.where((i_pol >= 0)[:, None], pol[np.maximum(i_pol, 0)], np.nan) if len(pol) else \
        np.full((len(t_exec), a_dim), np.nan)
    human_action = np.where((i_hum >= 0)[:, None], hum[np.maximum(i_hum, 0)], np.nan) if len(hum) else \
        np.full((len(t_exec), a_dim), np.nan)
    intervention = np.where(i_flag >= 0, flags[np.maximum(i_flag, 0)], False)
    # Under load a /cmd/human message can land more than half a period from its tick at the recorder.
    # While a person is in command the runner executes the human's (limited) command, so a few such ticks
    # take the executed action; many of them mean a broken log, which is refused.
    no_human = intervention & ~np.isfinite(human_action).all(1)
    if no_human.sum() > max(1, MAX_MISSING_HUMAN_FRACTION * intervention.sum()):
        raise LogError(f"{log}: {int(intervention.sum())} intervention steps but /cmd/human is missing for "
                       f"{int(no_human.sum())} of them (more than {MAX_MISSING_HUMAN_FRACTION:.0%})")
    human_action[no_human] = executed[no_human]

    odom = msgs["/state/odom"]
    if by_stamp:
        order = np.argsort(s_odom, kind="stable")
        odom = [odom[k] for k in order]
        t_odom = s_odom[order]
        i_odom = np.searchsorted(t_odom, s_exec, side="right") - 1
        t_tick = s_exec  # tick times on the runner's clock
    else:
        t_odom = np.array([t for t, _ in odom], dtype=np.int64)
        i_odom = np.searchsorted(t_odom, t_exec, side="right") - 1
        t_tick = t_exec
    pos, quat, vel_b, ang = (np.zeros((len(odom), n)) for n in (3, 4, 3, 3))
    for k, (_, m) in enumerate(odom):
        p, o, v, w = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist.linear, m.twist.twist.angular
        pos[k], quat[k], vel_b[k], ang[k] = (p.x, p.y, p.z), (o.w, o.x, o.y, o.z), (v.x, v.y, v.z), (w.x, w.y, w.z)
    vel_w = np.einsum("nij,nj->ni", quat_wxyz_to_rotmat(quat), vel_b)  # REP 105: twist in the body frame

    hist = next((s.length // a_dim for s in contract.observation if s.name == "prev_actions"), 1)

    # A tick belongs to a continuous stretch when the previous tick is one period before it
    gap = np.diff(t_tick, prepend=t_tick[0] - period_ns) > EPISODE_GAP_S * 1e9
    p_step = pos[np.maximum(i_odom, 0)]
    jump = np.linalg.norm(np.diff(p_step, axis=0, prepend=p_step[:1]), axis=1) > EPISODE_JUMP_M
    episode = np.cumsum(gap | jump)
    first = np.zeros(len(t_exec), dtype=bool)
    first[:hist] = True  # the history before the first logged tick is not in the log
    sha_t = np.array([t for t, _ in active], dtype=np.int64)
    sha_idx = np.clip(np.searchsorted(sha_t, t_exec, side="right") - 1, 0, None)
    keep = (i_odom >= 0) & ~first
    goals = msgs.get("/runner/goal", [])
    if goals:  # latched: the first one was in force before the recorder heard it
        g_t = np.array([t for t, _ in goals], dtype=np.int64)
        g_v = np.array([(m.point.x, m.point.y, m.point.z) for _, m in goals], dtype=np.float64)
        goal_per_tick = g_v[np.clip(np.searchsorted(g_t, t_exec, side="right") - 1, 0, None)]
    else:
        goal_per_tick = np.tile(np.asarray(goal_w, dtype=np.float64), (len(t_exec), 1))
    # the runner restarts its action history and integral when its policy runs again after it could not (no
    # usable state) for a while; it integrates on the ticks its policy ran (it published /cmd/policy)
    ran = (i_odom >= 0) & np.all(np.isfinite(policy_action), axis=1)
    restart = integral_restarts(t_tick * 1e-9, ran, episode, period_ns * 1e-9)
    prev = action_histories(executed, restart, initial_action(contract), hist)

    # The runner publishes the integral it fed the policy (POS_ERR_INT_TOPIC, stamped as the tick's commands):
    # where the log holds it, it is taken as is, since a recorder that joined after the flight's start (DDS
    # discovery of a new twin or runner takes a moment) cannot rebuild it; elsewhere (logs from before the topic)
    # it is rebuilt from the logged states, which holds when the log saw the runner restart it.
    int_msgs = msgs.get(POS_ERR_INT_TOPIC, [])
    if int_msgs:
        s_int = _stamps(msgs, POS_ERR_INT_TOPIC)
        i_int = _nearest(s_int, s_exec, 0) if by_stamp else _nearest(
            np.array([t for t, _ in int_msgs], dtype=np.int64), t_exec, tol)
        int_vals = np.array([(m.vector.x, m.vector.y, m.vector.z) for _, m in int_msgs], dtype=np.float64)
    else:
        i_int = np.full(len(t_exec), -1)

    def integral(idx: np.ndarray) -> np.ndarray:  # [N, 3] with the states idx (per tick) acted on
        out = episode_integrals(goal_per_tick, pos[np.maximum(idx, 0)], restart, ran, 1.0 / contract.control_rate_hz)
        logged = i_int >= 0
        if logged.any():
            out[logged] = int_vals[i_int[logged]]
        return out

    step = StepLog(
        t_s=t_tick * 1e-9, state_t_s=t_odom[np.maximum(i_odom, 0)] * 1e-9,
        pos_w=pos[i_odom], quat_wxyz=quat[i_odom], lin_vel_w=vel_w[i_odom], ang_vel_b=ang[i_odom],
        goal_w=goal_per_tick, pos_err_int_w=integral(i_odom),
        policy_action=policy_action,
        human_action=human_action, executed=executed, prev_executed=prev, intervention=intervention,
        episode=episode, policy_sha=np.array([active[i][1][1] for i in sha_idx], dtype=object),
        source=np.full(len(t_exec), "robot", dtype=object), logs=[str(log)])
    step = step.select(keep)
    if policy is not None and len(step):
        best = _realign(step, policy, odom_arrays=(pos, quat, vel_w, ang), i_odom=i_odom[keep])
        if best is not None:  # the integral of the realigned states
            full = i_odom.copy()
            full[keep] = best
            step.pos_err_int_w = integral(full)[keep]
            step.state_t_s = t_odom[best] * 1e-9
    if len(step) < 2:
        raise LogError(f"{log}: only {len(step)} usable steps (ticks with a state before them)")
    return step


def episode_integrals(goal_w: np.ndarray, pos_w: np.ndarray, restart: np.ndarray, ran: np.ndarray,
                      control_dt: float) -> np.ndarray:
    """[N, 3] the position-error integral behind ``pos_err_int_b`` after each of N consecutive ticks, as the
    runner keeps it: it adds tether.observation.integrate_pos_err on the ticks its policy ran (``ran``), and a
    tick with ``restart`` starts it from zero first; in between it holds."""
    out = np.zeros_like(pos_w, dtype=np.float64)
    value = np.zeros(3)
    for k in range(len(pos_w)):
        if restart[k]:
            value = np.zeros(3)
        if ran[k]:
            value = integrate_pos_err(value, goal_w[k] - pos_w[k], control_dt, np.clip)
        out[k] = value
    return out


def action_histories(executed: np.ndarray, restart: np.ndarray, initial: np.ndarray, length: int) -> np.ndarray:
    """[N, length, A] the runner's history of executed actions before each tick, oldest first: every tick
    appends what it executed; a ``restart`` tick (and the log's first) starts from ``initial`` repeated (the
    runner's _reset_history; before the first logged tick the true history is unknown: the caller drops
    those ticks)."""
    out = np.empty((len(executed), length, executed.shape[1]), dtype=np.float64)
    hist = np.tile(initial, (length, 1)).astype(np.float64)
    for k in range(len(executed)):
        if restart[k]:
            hist = np.tile(initial, (length, 1)).astype(np.float64)
        out[k] = hist
        hist = np.concatenate([hist[1:], executed[k:k + 1]])
    return out


def integral_restarts(t_s: np.ndarray, ran: np.ndarray, episode: np.ndarray, period_s: float,
                      reset_after_s: float = RunnerConfig.history_reset_after_s) -> np.ndarray:
    """[N] bool: the ticks where the runner restarted its integral (and history): the first tick its policy
    ran, and one that follows more than ``reset_after_s`` without it (the runner was blind: no usable state)
    or starts another episode of the log."""
    restart = np.zeros(len(t_s), dtype=bool)
    prev = None
    for k in np.flatnonzero(ran):
        restart[k] = prev is None or episode[k] != episode[prev] or t_s[k] - t_s[prev] - period_s > reset_after_s
        prev = k
    return restart


def _realign(step: StepLog, policy, odom_arrays, i_odom: np.ndarray, tol: float = 1e-3) -> np.ndarray | None:
    """Move each tick to the neighbouring state (one or two back, one on) on which the logged policy
    reproduces its logged action, where the one before it does not; returns the chosen state indices (None:
    no tick of this policy to check). The integral is the caller's to recompute from them."""
    sha = policy.contract.provenance["onnx_sha256"]
    logged = step.policy_action
    mask = (step.policy_sha == sha) & np.all(np.isfinite(logged), axis=1)
    if not mask.any():
        return None

    def error(idx: np.ndarray) -> np.ndarray:
        trial = dataclasses.replace(step, pos_w=odom_arrays[0][idx], quat_wxyz=odom_arrays[1][idx],
                                    lin_vel_w=odom_arrays[2][idx], ang_vel_b=odom_arrays[3][idx])
        e = np.full(len(step), np.inf)
        e[mask] = np.abs(policy(trial.select(mask).observations(policy.contract)) - logged[mask]).max(axis=1)
        return e

    best_idx, best_err = i_odom.copy(), error(i_odom)
    for shift in (-1, 1, -2):
        cand = np.clip(i_odom + shift, 0, len(odom_arrays[0]) - 1)
        bad = best_err > tol
        if not bad.any():
            break
        e = error(cand)
        better = bad & (e < best_err)
        best_idx[better], best_err[better] = cand[better], e[better]
    step.pos_w, step.quat_wxyz = odom_arrays[0][best_idx], odom_arrays[1][best_idx]
    step.lin_vel_w, step.ang_vel_b = odom_arrays[2][best_idx], odom_arrays[3][best_idx]
    return best_idx


def replay_match(step: StepLog, policy, tol: float = 1e-3) -> float:
    """Fraction of steps (run by ``policy``'s sha, with a logged policy action) where ``policy`` on the
    rebuilt observation reproduces the logged action within ``tol``; NaN if there are none."""
    sha = policy.contract.provenance["onnx_sha256"]
    mask = (step.policy_sha == sha) & np.all(np.isfinite(step.policy_action), axis=1)
    if not mask.any():
        return float("nan")
    obs = step.select(mask).observations(policy.contract)
    return float(np.mean(np.abs(policy(obs) - step.policy_action[mask]).max(axis=1) < tol))


def load_logs(logs: list[str | Path], contract: PolicyContract, accepted_shas: set[str],
              goal_w=(0.0, 0.0, 1.0), policy=None) -> StepLog:
    if not logs:
        raise LogError("no intervention logs given")
    return StepLog.concat([load_log(p, contract, accepted_shas, goal_w, policy) for p in logs])


def tick_images(log: str | Path, image, tick_s: np.ndarray, msgs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The image of input ``image`` (tether.contract.ImageInput) the runner could see at each tick: the
    newest message on its topic stamped at or before the tick (``tick_s`` [N], the runner's clock, e.g.
    StepLog.t_s), decoded to metres as the runner decodes it (tether_deploy.conversions.depth_msg_to_metres).

    Returns (images [N, 1, H, W] float32, NaN where no image preceded the tick; age [N] s of each at its
    tick, inf where none). ``msgs``: read_messages(log) if already read. The runner ran the policy only
    where the age was within image.max_age_s. LogError if the topic is missing or an image does not fit."""
    from tether_deploy.conversions import depth_msg_to_metres

    msgs = read_messages(log) if msgs is None else msgs
    topic = image.topic if image.topic.startswith("/") else "/" + image.topic
    items = msgs.get(topic, [])
    if not items:
        raise LogError(f"{log}: no images on {topic} (record it: the policy takes the image input {image.name!r})")
    stamps = _stamps(msgs, topic)
    order = np.argsort(stamps, kind="stable")
    stamps = stamps[order]
    tick_ns = np.round(np.asarray(tick_s, dtype=np.float64) * 1e9).astype(np.int64)
    idx = np.searchsorted(stamps, tick_ns, side="right") - 1
    out = np.full((len(tick_ns), 1, image.height, image.width), np.nan, dtype=np.float32)
    age = np.full(len(tick_ns), np.inf)
    decoded: dict[int, np.ndarray] = {}
    for n, k in enumerate(idx):
        if k < 0:
            continue
        if k not in decoded:
            m = items[order[k]][1]
            if (m.encoding, m.width, m.height) != (image.encoding, image.width, image.height):
                raise LogError(f"{log}: {topic} holds a {m.width}x{m.height} {m.encoding} image, the policy takes "
                               f"{image.width}x{image.height} {image.encoding}")
            decoded[k] = depth_msg_to_metres(m)
        out[n, 0] = decoded[k]
        age[n] = (tick_ns[n] - stamps[k]) * 1e-9
    return out, age


def contract_images(log: str | Path, contract, tick_s: np.ndarray,
                    msgs: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`tick_images` of every image input ``contract`` (tether.contract.PolicyContract) declares:
    name -> (images [N, 1, H, W] float32, age [N] s). LogError if any input's topic was not recorded."""
    msgs = read_messages(log) if msgs is None else msgs
    return {im.name: tick_images(log, im, tick_s, msgs) for im in contract.images}
