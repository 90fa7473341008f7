"""Flight logs from rosbag2 bags: what ``tether deploy --record`` writes, and plain odometry + rotor bags.

Two kinds of bag are read into one :class:`calibration.flightlog.FlightLog`:

* a deploy log (the recorder's MCAP): ``state/odom`` (nav_msgs/Odometry) and ``cmd/executed``, the
  normalized action the robot was sent each tick. Its meaning comes from the policy contract: the one
  passed with ``--policy``, else a ``policy.json`` in the bag folder, else the policy folder the log's
  ``runner/active_policy`` names (checked by its sha256): rotor actions map to
  rotor commands by (a + 1) / 2, matched to the vehicle's motors by position and spin; CTBR actions
  (collective thrust, body rates) go through the firmware rate loop the contract names (its
  ``rate_kp`` on the vehicle preset), evaluated with the measured body rates, as the robot does. A log
  whose ``runner/active_policy`` names another policy than the contract is refused.
* a plain bag: an Odometry topic and a rotor-command topic (Float32/Float64MultiArray, one value per
  rotor, fraction of max rpm), e.g. from a flight controller bridge.

Messages are read through ``policies.hil.dataset.read_messages`` (MCAP; torch-free; truncation
checked) and command values through ``tether_deploy.conversions.command_values``, so that a change of
message type lands in one place; sqlite3 bags go through ``rosbags``.

Timing: the state samples (odometry, stamped by the robot) set the time axis. The command in force
over the interval from sample k to k+1 is the last one the recorder received before sample k+1, since
a robot applies the newest command at its next step; both arrival times are the recorder's clock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from calibration.boards import CalibrationError
from calibration.flightlog import FlightLog

ODOM_TOPICS = ("/state/odom", "state/odom", "/odom")
"""odometry topics tried in order when --odom-topic is not given"""
DEPLOY_CMD_TOPICS = ("/cmd/executed", "cmd/executed")
"""the recorder's executed-action topic (normalized actions, meaning from the contract)"""
ROTOR_CMD_TOPICS = ("/rotor_cmd",)
"""plain rotor-command topics (fractions of max rpm) tried when the bag is not a deploy log"""
ACTIVE_POLICY_TOPICS = ("/runner/active_policy", "runner/active_policy")
RESET_JUMP_M = 0.25
"""a position step larger than this between two samples is a reset (twin respawn): the log is split there [m]"""


@dataclasses.dataclass(frozen=True)
class BagSource:
    """What a bag held and how it was read (printed in the report)."""

    odom_topic: str
    cmd_topic: str
    meaning: str
    """'rotor fractions' or the contract's action type and where the contract came from"""
    policy_sha: str | None
    """sha256 of the ONNX policy that flew (deploy logs)"""
    notes: tuple[str, ...] = ()
    """what the reader noticed and the user may want to change (irregular stamps, ...)"""


def bag_messages(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(receive time ns, decoded message)] of a rosbag2 bag (MCAP file or folder, or sqlite3)."""
    if not path.exists():
        raise CalibrationError(f"bag {path} does not exist")
    if path.suffix.lower() == ".mcap" or (path.is_dir() and any(path.glob("*.mcap"))):
        import struct

        from policies.hil.dataset import LogError, read_messages

        try:
            return read_messages(path)
        except LogError as e:
            raise CalibrationError(str(e)) from None
        except (struct.error, EOFError) as e:  # a file shorter than the MCAP magic
            raise CalibrationError(f"{path}: truncated or corrupt MCAP ({type(e).__name__}: {e}); record the flight "
                                   "again or give the bag folder") from None
    from rosbags.highlevel import AnyReader  # sqlite3 bags

    out: dict[str, list[tuple[int, object]]] = {}
    try:
        with AnyReader([path]) as reader:
            for c in reader.connections:
                out.setdefault(c.topic, [])
            for conn, stamp_ns, raw in reader.messages():
                out[conn.topic].append((stamp_ns, reader.deserialize(raw, conn.msgtype)))
    except Exception as e:  # rosbags raises its own hierarchy for every kind of unreadable bag
        raise CalibrationError(f"{path}: not a readable rosbag2 bag ({type(e).__name__}: {e})") from None
    return out


def _pick(msgs: dict, wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    topics = sorted(t for t, m in msgs.items() if m)
    if wanted is not None:
        if not msgs.get(wanted):
            raise CalibrationError(f"{path}: no messages on {what} topic {wanted!r}; topics with messages: {topics}")
        return wanted
    for t in candidates:
        if msgs.get(t):
            return t
    raise CalibrationError(f"{path}: none of the {what} topics {list(candidates)} has messages; topics with "
                           f"messages: {topics} (name one with --{what}-topic)")


def find_contract(bag: Path, policy: Path | None, active: list[tuple[str, str]] = ()):
    """The contract giving the executed actions their meaning: --policy (a folder with policy.json, or
    the file), else a policy.json recorded with the log (in the bag folder), else the policy folder the
    log's runner/active_policy names, if it is still there with the same sha256. Returns (contract,
    where) or (None, None)."""
    from tether.contract import ContractError, load_contract

    if policy is not None:
        candidates = [(policy / "policy.json" if policy.is_dir() else policy, f"--policy {policy}", None)]
    else:
        folder = bag if bag.is_dir() else bag.parent
        candidates = [(p, f"{p} (recorded with the log)", None)
                      for p in (folder / "policy.json", folder / "policy" / "policy.json")]
        candidates += [(Path(d) / "policy.json", f"{d} (the policy the log names)", sha) for sha, d in active]
    for file, where, sha in candidates:
        if policy is None and not file.is_file():
            continue
        try:
            contract = load_contract(file)
        except ContractError as e:
            raise CalibrationError(f"{where}: {e}") from None
        if sha is None or contract.provenance.get("onnx_sha256") == sha:
            return contract, where
    return None, None


def _active_policies(msgs: dict) -> list[tuple[str, str]]:
    """(sha256, policy folder) of every policy the runner reported active, in order, without repeats."""
    for t in ACTIVE_POLICY_TOPICS:
        words = [m.data.split(maxsplit=2) for _, m in msgs.get(t, [])]
        found = [(w[1], w[2] if len(w) > 2 else "") for w in words if len(w) > 1 and w[0] == "active"]
        if found:
            return list(dict.fromkeys(found))
    return []


def _odometry(items) -> tuple[np.ndarray, ...]:
    """Receive time [ns], stamp [ns], pos_w, quat_wxyz, lin_vel_w, ang_vel_b of Odometry messages
    (REP 105: the twist is in the body frame; it is rotated into the world frame here)."""
    from calibration.flightlog import rotmat_wxyz

    n = len(items)
    recv = np.array([t for t, _ in items], dtype=np.int64)
    stamp = np.zeros(n, dtype=np.int64)  # integer ns: float seconds since 1970 lose 0.1 us
    pos, quat, vel_b, ang = np.zeros((n, 3)), np.zeros((n, 4)), np.zeros((n, 3)), np.zeros((n, 3))
    for k, (_, m) in enumerate(items):
        p, o, v, w = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist.linear, m.twist.twist.angular
        stamp[k] = int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec)
        pos[k], quat[k], vel_b[k], ang[k] = (p.x, p.y, p.z), (o.w, o.x, o.y, o.z), (v.x, v.y, v.z), (w.x, w.y, w.z)
    norm = np.linalg.norm(quat, axis=1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 0.5):
        bad = int(np.argmax(~np.isfinite(norm[:, 0]) | (norm[:, 0] < 0.5)))
        raise CalibrationError(f"odometry message {bad} has no usable orientation (quaternion norm {norm[bad, 0]:.3g})")
    quat = quat / norm
    vel_w = np.einsum("nij,nj->ni", rotmat_wxyz(quat), vel_b)
    return recv, stamp, pos, quat, vel_w, ang


def _command_values(items, names: list[str] | None, topic: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from tether_deploy.conversions import command_values

    t = np.array([x[0] for x in items], dtype=np.int64)
    try:
        rows = [command_values(m, names) for _, m in items]
    except (ValueError, AttributeError) as e:
        raise CalibrationError(f"{path}: {topic}: {e}") from None
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise CalibrationError(f"{path}: {topic} messages carry {sorted(widths)} values; expected one width")
    return t, np.stack(rows)


def _to_rotor_fractions(actions: np.ndarray, ang_vel_b: np.ndarray, contract, preset) -> np.ndarray:
    """Normalized actions [N, A] -> rotor commands [N, R] in the preset's motor order, by the contract."""
    from tether.actions import RateController, action_map, actions_to_rotor_cmd
    from tether.contract import ContractError
    from tether_deploy.actuation import rotor_permutation

    spec = contract.action
    if actions.shape[1] != spec.dim:
        raise CalibrationError(f"the executed actions have {actions.shape[1]} values, the contract's action.dim is "
                               f"{spec.dim}: the log was recorded with another policy")
    if spec.type == "rotor":
        try:
            perm = rotor_permutation(spec, preset.rotor_pos_b, preset.rotor_spin)
        except ContractError as e:
            raise CalibrationError(f"--preset {preset.name}: {e}") from None
        return action_map(spec).to_rotor_fraction(actions)[:, perm]
    if not (len(spec.rate_kp) == 3 and min(spec.rate_kp) > 0):
        raise CalibrationError("the contract's CTBR action names no rate-controller gains (action.rate_kp), so its "
                               "rotor commands cannot be reconstructed; log rotor commands instead")
    # the robot's firmware loop: the contract's gains on the vehicle's own nominal model, as the twin runs it
    ctrl = RateController.for_vehicle(preset.rotor_pos_b, preset.rotor_spin, preset.kf_n_per_rpm2,
                                      preset.km_nm_per_rpm2, preset.max_rpm, preset.inertia_kg_m2, spec.rate_kp)
    return actions_to_rotor_cmd(action_map(spec), actions, ang_vel_b, ctrl)


def read_bag(path: str | Path, preset_for, odom_topic: str | None = None, cmd_topic: str | None = None,
             policy: Path | None = None, sample_rate_hz: float | None = None) -> tuple[FlightLog, BagSource]:
    """FlightLog of a bag (see the module doc). ``preset_for(contract)`` returns the vehicle geometry
    (the --preset, or the contract's); it is called once the contract, if any, is known.

    sample_rate_hz: the state samples come at this fixed rate, whatever their stamps say: a simulator
    that steps one period per message (the digital twin, at its rate_hz) stamps them with a wall clock
    that jitters under load while its physics does not [Hz]. None: the stamps are the time axis.
    """
    path = Path(path)
    msgs = bag_messages(path)
    odom = _pick(msgs, odom_topic, ODOM_TOPICS, "odom", path)
    deploy_log = cmd_topic is None and any(msgs.get(t) for t in DEPLOY_CMD_TOPICS)
    if cmd_topic is None:
        cmd_topic = _pick(msgs, None, DEPLOY_CMD_TOPICS + ROTOR_CMD_TOPICS, "cmd", path)
    else:
        _pick(msgs, cmd_topic, (), "cmd", path)
        deploy_log = cmd_topic.lstrip("/").startswith("cmd/")
    active = _active_policies(msgs)
    shas = list(dict.fromkeys(sha for sha, _ in active))
    contract, where = (find_contract(path, policy, active) if deploy_log or policy is not None else (None, None))
    if deploy_log and contract is None:
        raise CalibrationError(f"{path}: {cmd_topic} holds normalized actions, and no policy.json was recorded "
                               "with the log (nor is the policy folder it names still there); pass --policy DIR (the "
                               "policy that flew) to give them a meaning")
    if contract is not None and shas:
        sha = contract.provenance.get("onnx_sha256", "")
        if sha not in shas:
            raise CalibrationError(f"{path} was flown by policy sha256 {', '.join(s[:12] for s in shas)}..., but "
                                   f"{where} is policy {sha[:12]}...; pass --policy with the policy that flew")
    preset = preset_for(contract)
    names = None
    if contract is not None:
        from tether_deploy.conversions import command_names

        names = command_names(contract.action)
    recv, stamp, pos, quat, vel_w, ang = _odometry(msgs[odom])
    t_cmd, values = _command_values(msgs[cmd_topic], names if deploy_log else None, cmd_topic, path)

    order = np.argsort(recv, kind="stable")
    recv, stamp, pos, quat, vel_w, ang = (a[order] for a in (recv, stamp, pos, quat, vel_w, ang))
    c_order = np.argsort(t_cmd, kind="stable")
    t_cmd, values = t_cmd[c_order], values[c_order]
    # command in force over (k, k+1]: the newest received before sample k+1 (the last sample reuses its own)
    nxt = np.concatenate([recv[1:], recv[-1:]])
    idx = np.searchsorted(t_cmd, nxt, side="left") - 1
    keep = idx >= 0  # before the first command nothing was commanded
    if keep.sum() < 2:
        raise CalibrationError(f"{path}: {int(keep.sum())} state samples after the first command on {cmd_topic}; "
                               "need a flight")
    stamp, pos, quat, vel_w, ang, idx = (a[keep] for a in (stamp, pos, quat, vel_w, ang, idx))
    notes = []
    if sample_rate_hz is not None:
        t = np.arange(len(stamp)) / sample_rate_hz
    else:
        t_ns = stamp if np.all(np.diff(stamp) > 0) else recv[order][keep]  # robot stamps, else arrival
        t = (t_ns - t_ns[0]) * 1e-9
        step = np.diff(t)
        irregular = float(np.mean(step > 1.5 * np.median(step))) if len(step) else 0.0
        if irregular > 0:  # any gap: sysid cuts the flight there, and a few can leave too little
            lo, hi = np.percentile(step, [5, 95]) * 1e3
            notes.append(f"{100 * irregular:.0f}% of the state steps are gaps (5-95% of the steps: {lo:.1f}-{hi:.1f} "
                         "ms); a simulator stamping with a wall clock (the digital twin) steps evenly: pass "
                         "--sample-rate-hz with its rate")
    actions = values[idx]
    if contract is None:
        u = actions
        meaning = "rotor commands as fractions of max rpm"
    else:
        ang_mid = np.concatenate([0.5 * (ang[:-1] + ang[1:]), ang[-1:]])  # the rate loop runs through the interval
        u = _to_rotor_fractions(actions, ang_mid, contract, preset)
        meaning = f"normalized {contract.action.type} actions, mapped by the contract in {where}"
    # a reset (respawn) is a jump in position: drop the sample after it, which makes a time gap there
    dt = np.diff(t)
    jump = (np.linalg.norm(np.diff(pos, axis=0), axis=1) > RESET_JUMP_M) & (dt <= 1.5 * np.median(dt))
    ok = np.concatenate([[True], ~jump])
    t, u, pos, quat, vel_w, ang = (a[ok] for a in (t, u, pos, quat, vel_w, ang))
    return (FlightLog(t, u, pos, quat, vel_w, ang),
            BagSource(odom, cmd_topic, meaning, shas[0] if shas else None, tuple(notes)))
