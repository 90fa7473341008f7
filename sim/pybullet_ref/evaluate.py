"""Closed-loop evaluation of an exported policy in pybullet, through its contract only, and the metrics.

:func:`fly` runs M drones in one pybullet world; the policy sees exactly what the deploy side would build
from the contract (tether.observation.build_observation), so a policy that flies here flies from the
same ``policy.json`` on the robot side. The metrics are pure numpy functions of the result.

Aggregates follow Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS 2021 (rliable): interquartile mean with stratified bootstrap confidence intervals.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sim.pybullet_ref.quadrotor import PhysicsOverrides, PybulletQuadrotors
from sim.pybullet_ref.rate_control import actions_to_rotor_cmd, check_action_spec, make_rate_controller
from sim.quadrotor.presets import QuadrotorPreset
from tether.actions import initial_action
from tether.contract import PolicyContract
from tether.observation import PositionErrorIntegral, build_observation

Policy = Callable[[np.ndarray], np.ndarray]
Reference = np.ndarray | Callable[[float], np.ndarray]


def _reference(ref: Reference | None, t: float, m: int, name: str) -> np.ndarray:
    value = np.zeros((m, 3)) if ref is None else (ref(t) if callable(ref) else ref)
    value = np.broadcast_to(np.asarray(value, dtype=np.float64), (m, 3))
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} at t={t:.3f} s contains NaN or Inf")
    return value


def fly(policy: Policy, contract: PolicyContract, preset: QuadrotorPreset, init: dict[str, np.ndarray],
        goal_w: Reference, duration_s: float, goal_vel_w: Reference | None = None,
        rate_kp: tuple[float, float, float] | None = None, latency_steps: int | np.ndarray = 0,
        overrides: PhysicsOverrides | None = None, substeps: int = 4,
        crash_distance_m: float = 3.0, rate_div: np.ndarray | None = None,
        ext_force_w: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fly M drones under ``policy`` for ``duration_s`` seconds at the contract's control rate.

    policy: obs [M, obs_dim] float32 -> actions [M, A] (e.g. tether.runtime.OnnxPolicy).
    init: pos_w [M, 3] m, quat_wxyz [M, 4], lin_vel_w [M, 3] m/s, ang_vel_b [M, 3] rad/s; optional
        rotor_rpm [M, R] rpm (default: nominal hover speed).
    goal_w: [M, 3] m or a function t [s] -> [M, 3]; goal_vel_w likewise in m/s (default zeros).
    rate_kp: CTBR rate-controller gains [1/s]; default the contract's ``action.rate_kp`` if set (non-zero).
    latency_steps: whole control steps between the policy's output and its effect, one for all or [M].
    overrides: per-drone physics deviations from ``preset``.
    rate_div: [M] physics substeps per CTBR rate-loop tick (the loop restarts at every control tick and
        holds its rotor commands in between, as the training simulator's); None: every substep.
    ext_force_w: [M, 3] or [3] steady world-frame force on each drone's centre of mass (a steady wind) [N].
    A drone crashes when it goes below z = 0 m, farther than crash_distance_m from its goal, or NaN;
    from then on it is parked and its recorded series stay at their values at the crash.

    Returns t_s [T], pos_w [T, M, 3], quat_wxyz [T, M, 4], lin_vel_w [T, M, 3], goal_w [T, M, 3],
    pos_err [T, M] m (norm of goal - position), actions [T-1, M, A] (actions[k] is output at t_s[k]
    and, after the latency, acts until t_s[k+1]), crashed [M] bool, crash_time_s [M] (NaN: no crash).
    Sample 0 is the initial state; T = round(duration_s * control_rate_hz) + 1.
    """
    spec = contract.action
    check_action_spec(spec, preset)
    dt = 1.0 / contract.control_rate_hz
    n_steps = int(round(duration_s / dt))
    m = len(np.asarray(init["pos_w"]))
    if rate_kp is None and any(getattr(spec, "rate_kp", ())):
        rate_kp = spec.rate_kp
    rate_ctrl = None
    if spec.type == "ctbr":
        if rate_kp is None:
            raise ValueError("a ctbr policy needs rate-controller gains: pass rate_kp [1/s] (the contract's "
                             "action.rate_kp is unset)")
        rate_ctrl = make_rate_controller(preset, rate_kp)
    lat = np.broadcast_to(np.asarray(latency_steps, dtype=np.int64), (m,))
    if np.any(lat < 0):
        raise ValueError(f"latency_steps must be >= 0, got {latency_steps}")
    div = None if rate_div is None else np.broadcast_to(np.asarray(rate_div, dtype=np.int64), (m,))
    if div is not None and np.any(div < 1):
        raise ValueError(f"rate_div must be >= 1 substeps, got {rate_div}")
    names = {s.name for s in contract.observation}
    k_hist = contract.slice("prev_actions").length // spec.dim if "prev_actions" in names else 0
    integral = PositionErrorIntegral(dt) if "pos_err_int_b" in names else None
    a0 = initial_action(contract)
    history = np.tile(a0, (m, k_hist, 1))  # [M, k, A], oldest first
    depth = int(lat.max()) + 1
    queue = np.tile(a0, (depth, m, 1))  # [D+1, M, A], newest last

    t_s = np.arange(n_steps + 1) * dt
    out = {key: np.zeros((n_steps + 1, m, n)) for key, n in (("pos_w", 3), ("quat_wxyz", 4), ("lin_vel_w", 3),
                                                              ("goal_w", 3))}
    out["actions"] = np.zeros((n_steps, m, spec.dim))
    crashed = np.zeros(m, dtype=bool)
    crash_time_s = np.full(m, np.nan)
    parked: dict[str, np.ndarray] = {}

    def record(k: int, s: dict[str, np.ndarray], goal: np.ndarray) -> None:
        alive = ~crashed
        for key in ("pos_w", "quat_wxyz", "lin_vel_w"):
            out[key][k] = np.where(alive[:, None], s[key], out[key][k - 1] if k > 0 else s[key])
        out["goal_w"][k] = goal

    with PybulletQuadrotors(preset, m, dt, substeps, overrides) as quads:
        quads.reset(init["pos_w"], init["quat_wxyz"], init["lin_vel_w"], init["ang_vel_b"], init.get("rotor_rpm"))
        s = quads.state()
        record(0, s, _reference(goal_w, 0.0, m, "goal_w"))
        for k in range(n_steps):
            t = k * dt
            quantities = {key: s[key] for key in ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b")}
            quantities["goal_w"] = _reference(goal_w, t, m, "goal_w")
            quantities["goal_vel_w"] = _reference(goal_vel_w, t, m, "goal_vel_w")
            if k_hist:
                quantities["prev_actions"] = history.reshape(m, k_hist * spec.dim)
            if integral is not None:
                quantities["pos_err_int_w"] = integral.update(quantities["goal_w"], quantities["pos_w"])
            obs = build_observation(contract, quantities)
            actions = np.asarray(policy(obs), dtype=np.float64)
            if actions.shape != (m, spec.dim):
                raise ValueError(f"policy returned shape {actions.shape}, expected {(m, spec.dim)}")
            if not np.all(np.isfinite(actions)):
                raise ValueError(f"policy returned NaN or Inf at t={t:.3f} s")
            actions = np.clip(actions, spec.low, spec.high)
            out["actions"][k] = actions
            if k_hist:
                history = np.concatenate([history[:, 1:], actions[:, None]], axis=1)
            queue = np.concatenate([queue[1:], actions[None]], axis=0)
            applied = queue[depth - 1 - lat, np.arange(m)]
            tick = {"i": 0, "held": None}

            def rotor_cmd(ang_vel_b: np.ndarray, applied=applied, tick=tick) -> np.ndarray:
                # evaluated every physics substep: the rate controller runs faster than the policy
                cmd = actions_to_rotor_cmd(spec, applied, ang_vel_b, rate_ctrl)
                if div is not None and tick["held"] is not None:
                    cmd = np.where((tick["i"] % div == 0)[:, None], cmd, tick["held"])
                tick["i"] += 1
                tick["held"] = cmd
                cmd = cmd.copy()
                cmd[crashed] = 0.0
                return cmd

            quads.step(rotor_cmd, ext_force_w)
            s = quads.state()
            goal_next = _reference(goal_w, t + dt, m, "goal_w")
            finite = np.all(np.isfinite(s["pos_w"]), -1) & np.all(np.isfinite(s["quat_wxyz"]), -1)
            new = ~crashed & (~finite | (np.where(finite, s["pos_w"][:, 2], -1.0) < 0.0)
                              | (np.linalg.norm(np.where(finite[:, None], s["pos_w"] - goal_next, np.inf), axis=-1)
                                 > crash_distance_m))
            record(k + 1, s, goal_next)
            if new.any():
                crashed |= new
                crash_time_s[new] = t + dt
                # A crashed drone is parked where it was last finite and held there, so that the
                # observation for the whole batch stays finite.
                ids = np.flatnonzero(crashed)
                parked = {"pos_w": np.where(np.isfinite(out["pos_w"][k + 1][ids]), out["pos_w"][k + 1][ids],
                                            goal_next[ids]),
                          "quat_wxyz": np.tile([1.0, 0.0, 0.0, 0.0], (len(ids), 1))}
            if crashed.any():
                ids = np.flatnonzero(crashed)
                quads.reset(parked["pos_w"], parked["quat_wxyz"], np.zeros((len(ids), 3)), np.zeros((len(ids), 3)),
                            np.zeros((len(ids), quads.rotor_rpm.shape[1])), ids=ids)
                s = quads.state()

    out["t_s"] = t_s
    out["pos_err"] = np.linalg.norm(out["goal_w"] - out["pos_w"], axis=-1)
    out["crashed"] = crashed
    out["crash_time_s"] = crash_time_s
    return out


# ------------------------------------------------------------------------------------- metrics


def hover_metrics(result: dict[str, np.ndarray], tol_m: float = 0.05, reach_within_s: float = 5.0,
                  steady_window_s: float = 1.0) -> dict[str, np.ndarray]:
    """Per-episode hover metrics from a :func:`fly` result (needs t_s [T], pos_err [T, M], crashed [M]).

    success [M] bool: not crashed, and from some time <= reach_within_s to the end the position error
        stays <= tol_m ("reach and hold": a run that reaches the goal and then leaves it fails).
    settle_time_s [M]: the first time after which the error stays <= tol_m (NaN if never).
    steady_state_err_m [M]: mean position error over the last steady_window_s seconds [m].
    """
    t, err, crashed = np.asarray(result["t_s"]), np.asarray(result["pos_err"]), np.asarray(result["crashed"])
    within = np.where(np.isfinite(err), err <= tol_m, False)  # [T, M]
    holds_to_end = np.flip(np.logical_and.accumulate(np.flip(within, 0), axis=0), 0)  # [T, M]
    ever = holds_to_end.any(0)
    settle_time_s = np.where(ever, t[np.argmax(holds_to_end, axis=0)], np.nan)
    window = t >= t[-1] - steady_window_s - 1e-9
    steady = err[window].mean(0)
    success = ~crashed & ever & (np.nan_to_num(settle_time_s, nan=np.inf) <= reach_within_s)
    return {"success": success, "settle_time_s": settle_time_s, "steady_state_err_m": steady}


def reach_metrics(result: dict[str, np.ndarray], tol_m: float, speed_m_s: float) -> dict[str, np.ndarray]:
    """Per-episode go-to-goal metrics (needs t_s [T], pos_err [T, M], lin_vel_w [T, M, 3], crashed [M],
    crash_time_s [M]; goal_vel_w [T, M, 3] if the goal moves).

    The goal is reached at the first sample within tol_m of it and slower than speed_m_s relative to it
    (the waypoint task's success, which ends its episode). success [M]: reached before any crash;
    reach_time_s [M] (NaN: never); final_err_m [M]: the error at the last sample [m].
    """
    t, err = np.asarray(result["t_s"]), np.asarray(result["pos_err"])
    vel = np.asarray(result["lin_vel_w"])
    goal_vel = np.asarray(result.get("goal_vel_w", np.zeros_like(vel)))
    speed = np.linalg.norm(vel - goal_vel, axis=-1)  # [T, M]
    reached = np.isfinite(err) & (err < tol_m) & (speed < speed_m_s)
    ever = reached.any(0)
    reach_time_s = np.where(ever, t[np.argmax(reached, axis=0)], np.nan)
    crash_time = np.where(np.asarray(result["crashed"]), np.asarray(result["crash_time_s"]), np.inf)
    success = ever & (np.nan_to_num(reach_time_s, nan=np.inf) < crash_time)
    return {"success": success, "reach_time_s": reach_time_s, "final_err_m": err[-1]}


def tracking_metrics(result: dict[str, np.ndarray], tol_m: float, settle_s: float) -> dict[str, np.ndarray]:
    """Per-episode tracking metrics of a moving reference (needs t_s [T], pos_err [T, M], crashed [M]).

    The error counts from settle_s on (the start is off the reference by design). rms_err_m [M] and
    max_err_m [M] over that window [m]; success [M]: not crashed and rms_err_m <= tol_m.
    """
    t, err, crashed = np.asarray(result["t_s"]), np.asarray(result["pos_err"]), np.asarray(result["crashed"])
    window = t >= min(settle_s, t[-1]) - 1e-9
    e = err[window]
    rms = np.sqrt(np.mean(np.square(e), axis=0))
    success = ~crashed & np.isfinite(rms) & (rms <= tol_m)
    return {"success": success, "rms_err_m": rms, "max_err_m": e.max(0)}


def _finite_1d(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name}: no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: values contain NaN or Inf; drop or fill them explicitly first")
    return v


def bootstrap_ci(values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap (1 - alpha) confidence interval of the mean: (mean, lo, hi)."""
    v = _finite_1d(values, "bootstrap_ci")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(-1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(v.mean()), float(lo), float(hi)


def _trimmed_mean_sorted(sorted_values: np.ndarray) -> np.ndarray:
    """Mean of the middle 50 % along the last axis of already sorted values (scipy.stats.trim_mean, 0.25)."""
    n = sorted_values.shape[-1]
    cut = int(0.25 * n)
    return sorted_values[..., cut:n - cut].mean(-1)


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (robust to outlier episodes)."""
    return float(_trimmed_mean_sorted(np.sort(_finite_1d(values, "iqm"))))


def iqm_ci(per_seed_scores, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """IQM of scores [n_seeds, n_strata] with a stratified-bootstrap (1 - alpha) interval: (iqm, lo, hi).

    As rliable: each bootstrap sample redraws the seeds (training runs) with replacement independently
    within each stratum (a column: a task or a fixed evaluation condition), then takes the IQM of all
    scores. A 1-D input is one stratum of n_seeds scores.
    """
    scores = np.asarray(per_seed_scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2:
        raise ValueError(f"iqm_ci: scores must be [n_seeds, n_strata], got shape {scores.shape}")
    _finite_1d(scores, "iqm_ci")
    n_seeds, n_strata = scores.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds, n_strata))
    samples = scores[idx, np.arange(n_strata)].reshape(n_boot, -1)
    boot = _trimmed_mean_sorted(np.sort(samples, axis=-1))
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return iqm(scores), float(lo), float(hi)
