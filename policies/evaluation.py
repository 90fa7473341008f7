"""Evaluate an exported policy from the same randomized starts in Tether's own simulator and in
pybullet (the reference physics), each task judged as it defines success:

| task | metric (the env's ``success_metric``) | success |
|---|---|---|
| hover, recover | ``hold``: settle time, steady-state error | within ``tol_m`` by ``reach_within_s`` and to the end |
| waypoint | ``reach``: reach time, final error | the task's own success (``success_tol_m``, ``success_speed_m_s``) before any crash |
| trajectory | ``track``: RMS and max tracking error after ``settle_s`` | RMS error <= ``tol_m``, no crash |

The goals come from the task itself: an evaluation env (seeded by the acceptance seed) samples each
start's goal as in training (a waypoint in its box, a phase on the Lissajous curve), and both
simulators see the same goal at every control step (``QuadrotorEnv.goal_at``): a trajectory's goal
moves in pybullet exactly as it moves in Tether's simulator.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from sim.math import quat_mul
from sim.pybullet_ref.evaluate import bootstrap_ci, fly, hover_metrics, reach_metrics, tracking_metrics
from sim.quadrotor import dynamics
from sim.randomization import RandomizationCfg
from tether.runtime import OnnxPolicy


@dataclasses.dataclass(frozen=True)
class AcceptanceCfg:
    num_starts: int = 100
    """randomized starts"""
    init_pos_m: float = 0.5
    """max start distance from the start centre (the goal at t = 0; a waypoint's box centre) [m]"""
    init_tilt_rad: float = math.radians(30.0)
    """max start tilt [rad]"""
    init_lin_vel_m_s: float = 0.5
    """max start speed [m/s]"""
    init_ang_vel_rad_s: float = 0.5
    """max start body rate magnitude [rad/s]"""
    duration_s: float = 8.0
    """episode length [s]"""
    tol_m: float = 0.05
    """hold tolerance (hover, recover), or the RMS tracking-error bound (trajectory) [m]; a waypoint is
    reached as its task config defines it (success_tol_m, success_speed_m_s)"""
    reach_within_s: float = 5.0
    """hold: must be within tol by this time and stay there [s]"""
    settle_s: float = 2.0
    """track: the tracking error counts from this time on [s]"""
    required_successes: int = 99
    """successes out of num_starts to pass"""
    seed: int = 12345
    """seed of the starts and of the goals the task samples"""

    def __post_init__(self):
        if self.num_starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {self.num_starts}")
        for name in ("init_pos_m", "init_tilt_rad", "init_lin_vel_m_s", "init_ang_vel_rad_s", "duration_s", "tol_m",
                     "reach_within_s", "settle_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"acceptance {name} must be a finite number >= 0, got {value}")
        if self.duration_s <= 0:
            raise ValueError(f"acceptance duration_s must be > 0, got {self.duration_s}")
        if self.required_successes < 0:  # more than num_starts is allowed: a flight check that cannot pass
            raise ValueError(f"required_successes must be >= 0, got {self.required_successes}")

    def with_starts(self, num_starts: int) -> "AcceptanceCfg":
        """The same acceptance over another number of starts, requiring the same fraction (rounded up)."""
        required = math.ceil(self.required_successes * num_starts / self.num_starts - 1e-9)
        return dataclasses.replace(self, num_starts=num_starts, required_successes=required)


RECOVERY = AcceptanceCfg(init_tilt_rad=math.radians(90.0), required_successes=95)
# The acceptance each task is evaluated with by default (`tether eval` without --acceptance).
ACCEPTANCE = {
    "hover": AcceptanceCfg(),
    "recover": RECOVERY,
    "waypoint": AcceptanceCfg(init_pos_m=0.0, duration_s=5.0, required_successes=95),
    "trajectory": AcceptanceCfg(init_pos_m=0.1, duration_s=10.0, tol_m=0.10, settle_s=2.0, required_successes=95),
}
ACCEPTANCE["recovery"] = RECOVERY  # the name `--acceptance recovery` has always had
# A vehicle-class policy's default acceptance is the hover one on its nominal vehicle; the class is judged by
# `tether eval --sweep` (policies/sweep.py).
for _task in ("hover_robust", "hover_robust_px4", "hover_robust_rotor"):
    ACCEPTANCE[_task] = ACCEPTANCE["hover"]


def task_cfg_from_contract(policy_dir: str | Path):
    """The resolved task config a policy was trained with, from its contract's provenance."""
    from sim.tasks import TASKS, task_cfg_from_dict
    from tether.contract import ContractError, load_contract

    contract = load_contract(Path(policy_dir) / "policy.json")
    if contract.task not in TASKS or "task_cfg" not in contract.provenance:
        raise ContractError(f"{policy_dir}: contract names task {contract.task!r} without a task_cfg in its "
                            "provenance; it was not exported by `tether export`")
    # contracts exported before issue 13 hold run settings (device, num_envs) in task_cfg: dropped there
    return task_cfg_from_dict(contract.task, contract.provenance["task_cfg"], where=f"{policy_dir}/policy.json task_cfg")


def sample_starts(cfg: AcceptanceCfg, goal_w: np.ndarray) -> dict[str, np.ndarray]:
    """Starts uniform in a ball around ``goal_w`` ([3] or [M, 3] m), uniform random tilt axis, random
    velocity directions."""
    rng = np.random.default_rng(cfg.seed)
    m = cfg.num_starts

    def ball(radius: float) -> np.ndarray:
        d = rng.normal(size=(m, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return d * radius * rng.uniform(0, 1, size=(m, 1)) ** (1 / 3)

    axis = rng.normal(size=(m, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0, cfg.init_tilt_rad, size=(m, 1))
    yaw = rng.uniform(-math.pi, math.pi, size=(m, 1))
    tilt = np.concatenate([np.cos(angle / 2), axis * np.sin(angle / 2)], 1)
    yaw_q = np.concatenate([np.cos(yaw / 2), np.zeros((m, 2)), np.sin(yaw / 2)], 1)
    quat = quat_mul(_tq(yaw_q), _tq(tilt)).double().numpy()
    return {"pos_w": goal_w + ball(cfg.init_pos_m), "quat_wxyz": quat,
            "lin_vel_w": ball(cfg.init_lin_vel_m_s), "ang_vel_b": ball(cfg.init_ang_vel_rad_s)}


def _tq(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def evaluation_env(task_cfg, num_starts: int, seed: int, latency_steps: int = 0):
    """Tether's simulator for an evaluation: the nominal vehicle, a fixed latency, nothing ends an episode;
    reset, so that each env holds its episode's goal as the task samples it (seeded)."""
    from sim.tasks import make_env, task_name_of

    env = make_env(task_name_of(task_cfg), task_cfg, num_envs=num_starts, seed=seed, device="cpu",
                   randomization=_fixed_latency(latency_steps, task_cfg), max_distance_m=1e9, ground_z_m=-1e9,
                   episode_length_s=1e9, compile=False)
    env.reset()
    return env


def goal_schedule(env, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(goal_w [T, M, 3] m, goal_vel_w [T, M, 3] m/s) of the env's episodes at every control step."""
    steps = int(round(duration_s * env.cfg.control_rate_hz))
    pairs = [env.goal_at(k * env.cfg.control_dt) for k in range(steps + 1)]
    return (np.stack([g.double().numpy() for g, _ in pairs]), np.stack([v.double().numpy() for _, v in pairs]))


def _on_grid(values: np.ndarray, dt: float):
    """A function t [s] -> values[round(t / dt)]: the reference pybullet's ``fly`` samples per control step."""
    def at(t: float) -> np.ndarray:
        return values[min(int(round(t / dt)), len(values) - 1)]
    return at


def fly_tether(policy: OnnxPolicy, env, starts: dict[str, np.ndarray], duration_s: float) -> dict[str, np.ndarray]:
    """Fly the policy in Tether's batched simulator (an :func:`evaluation_env`) from ``starts``.

    The episode runs through the env's own transition and goal update (``advance``, ``_update_goal``),
    never its resets, so a task's success termination does not end the flight. Returns the keys of
    pybullet's ``fly`` that the metrics read.
    """
    m = len(starts["pos_w"])
    s = env.state
    preset = env.cfg.vehicle
    env.state = dynamics.QuadState(_tq(starts["pos_w"]), _tq(starts["quat_wxyz"]), _tq(starts["lin_vel_w"]),
                                   _tq(starts["ang_vel_b"]), torch.full_like(s.rotor_rpm, preset.hover_rpm))
    env.episode_step[:] = 0
    env._update_goal()
    env.restart_pos_err_int()
    steps = int(round(duration_s * env.cfg.control_rate_hz))
    dt = env.cfg.control_dt
    out = {key: np.zeros((steps + 1, m, 3)) for key in ("pos_w", "lin_vel_w", "goal_w", "goal_vel_w")}
    err = np.zeros((steps + 1, m))
    crashed = np.zeros(m, dtype=bool)
    crash_time_s = np.full(m, np.nan)

    def record(k: int) -> np.ndarray:
        pos, vel = env.state.pos_w.double().numpy(), env.state.lin_vel_w.double().numpy()
        for key, value in (("pos_w", pos), ("lin_vel_w", vel)):
            out[key][k] = np.where(crashed[:, None], out[key][k - 1], value) if k else value
        out["goal_w"][k], out["goal_vel_w"][k] = env.goal_w.double().numpy(), env.goal_vel_w.double().numpy()
        # as pybullet's fly: a crashed drone stays where it crashed while the goal goes on
        return np.linalg.norm(out["goal_w"][k] - out["pos_w"][k], axis=-1)

    err[0] = record(0)
    obs = env.observe()["policy"]
    for k in range(steps):
        with torch.no_grad():
            env.advance(torch.from_numpy(policy(obs.numpy())))
        env.episode_step += 1
        env._update_goal()
        obs = env.observe()["policy"]
        e = record(k + 1)
        new = ~crashed & ((out["pos_w"][k + 1][:, 2] < 0.0) | (e > 3.0) | ~np.isfinite(e))
        crashed |= new
        crash_time_s[new] = (k + 1) * dt
        err[k + 1] = np.where(np.isfinite(e), e, 9.9)
    out.update(t_s=np.arange(steps + 1) * dt, pos_err=err, crashed=crashed, crash_time_s=crash_time_s)
    return out


def _fixed_latency(latency_steps: int, task_cfg) -> RandomizationCfg:
    lat = latency_steps / task_cfg.control_rate_hz
    return dataclasses.replace(RandomizationCfg.nominal(), latency_s=(lat, lat))


def _metrics(kind: str, result: dict, cfg: AcceptanceCfg, task_cfg) -> tuple[dict[str, np.ndarray], dict]:
    """Per-start metrics of one kind and their medians for the report."""
    if kind == "hold":
        met = hover_metrics(result, cfg.tol_m, cfg.reach_within_s)
        settle = met["settle_time_s"][met["success"]]
        return met, {"steady_state_err_m_median": float(np.nanmedian(met["steady_state_err_m"])),
                     "settle_time_s_median": float(np.median(settle)) if settle.size else float("nan")}
    if kind == "reach":
        met = reach_metrics(result, task_cfg.success_tol_m, task_cfg.success_speed_m_s)
        reach = met["reach_time_s"][met["success"]]
        return met, {"reach_time_s_median": float(np.median(reach)) if reach.size else float("nan"),
                     "final_err_m_median": float(np.nanmedian(met["final_err_m"])),
                     "reach_tol_m": task_cfg.success_tol_m, "reach_speed_m_s": task_cfg.success_speed_m_s}
    if kind == "track":
        met = tracking_metrics(result, cfg.tol_m, cfg.settle_s)
        return met, {"tracking_rms_m_median": float(np.nanmedian(met["rms_err_m"])),
                     "tracking_max_m_median": float(np.nanmedian(met["max_err_m"]))}
    raise ValueError(f"unknown success metric {kind!r}; known: hold, reach, track")


def evaluate_policy(policy_dir: str | Path, task_cfg, cfg: AcceptanceCfg | None = None,
                    sims: tuple[str, ...] = ("pybullet", "tether"), latency_steps: int = 0) -> dict:
    """Success rate (95% bootstrap CI) and the task's own metrics per simulator, from the same starts and
    the same goals in each. ``cfg`` None: the task's acceptance (:data:`ACCEPTANCE`)."""
    from sim.tasks import task_name_of

    for sim in sims:
        if sim not in ("pybullet", "tether"):
            raise ValueError(f"unknown simulator {sim!r}; choose 'pybullet' or 'tether'")
    task = task_name_of(task_cfg)
    cfg = cfg if cfg is not None else ACCEPTANCE[task]
    policy = OnnxPolicy(policy_dir)
    env = evaluation_env(task_cfg, cfg.num_starts, cfg.seed, latency_steps)
    kind = env.success_metric
    goal_w, goal_vel_w = goal_schedule(env, cfg.duration_s)
    starts = sample_starts(cfg, env.start_centre_w().double().numpy())
    report = {"task": task, "metric": kind, "acceptance": dataclasses.asdict(cfg)}
    for sim in sims:
        if sim == "pybullet":
            result = fly(policy, policy.contract, task_cfg.vehicle, starts, _on_grid(goal_w, task_cfg.control_dt),
                         cfg.duration_s, goal_vel_w=_on_grid(goal_vel_w, task_cfg.control_dt),
                         latency_steps=latency_steps, substeps=task_cfg.substeps)
            result["goal_vel_w"] = goal_vel_w
        else:
            result = fly_tether(policy, env, starts, cfg.duration_s)
        met, medians = _metrics(kind, result, cfg, task_cfg)
        rate, lo, hi = bootstrap_ci(met["success"].astype(float))
        report[sim] = {
            "successes": int(met["success"].sum()), "num_starts": cfg.num_starts,
            "required_successes": cfg.required_successes, "success_rate": rate, "success_ci95": [lo, hi],
            "passed": bool(met["success"].sum() >= cfg.required_successes),
            **medians, "crashes": int(result["crashed"].sum()),
            "_result": result, "_metrics": met,
        }
    return report


# Older name: the hover evaluation is now the per-task one (a hover config gives exactly the old figures).
evaluate_hover = evaluate_policy


def summary_line(report: dict, sim: str) -> str:
    """One line of a simulator's figures for the task's metric."""
    r = report[sim]
    head = (f"success {r['successes']}/{r['num_starts']} (95% CI {r['success_ci95'][0]:.2f}-"
            f"{r['success_ci95'][1]:.2f}, pass needs {r['required_successes']})")
    kind = report["metric"]
    if kind == "hold":
        body = (f"steady-state error {r['steady_state_err_m_median'] * 100:.1f} cm, settle "
                f"{r['settle_time_s_median']:.2f} s")
    elif kind == "reach":
        body = f"reach time {r['reach_time_s_median']:.2f} s, final error {r['final_err_m_median'] * 100:.1f} cm"
    else:
        body = (f"tracking error RMS {r['tracking_rms_m_median'] * 100:.1f} cm, max "
                f"{r['tracking_max_m_median'] * 100:.1f} cm (medians)")
    return f"{head}, {body}, crashes {r['crashes']}"


def report_for_json(report: dict) -> dict:
    """The report without its raw flights (keys starting with '_'), per-start successes kept."""
    out = {}
    for key, value in report.items():
        if isinstance(value, dict) and "_metrics" in value:
            value = {k: v for k, v in value.items() if not k.startswith("_")} | {
                "per_start": {k: np.asarray(v).tolist() for k, v in value["_metrics"].items()}}
        out[key] = value
    return out


def plot_evaluation(report: dict, path: Path, title: str = "") -> Path:
    """Error over time of every start, and the flights seen from above with their goals, per simulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = [s for s in ("pybullet", "tether") if s in report]
    fig, axes = plt.subplots(2, len(sims), figsize=(6.5 * len(sims), 8.5), squeeze=False)
    tol = report["acceptance"]["tol_m"] if report["metric"] != "reach" else report[sims[0]]["reach_tol_m"]
    for col, sim in enumerate(sims):
        res = report[sim]["_result"]
        ok = np.asarray(report[sim]["_metrics"]["success"])
        ax = axes[0, col]
        for j in range(res["pos_err"].shape[1]):
            ax.plot(res["t_s"], np.maximum(res["pos_err"][:, j], 1e-4) * 100, lw=0.8, alpha=0.35,
                    color="tab:blue" if ok[j] else "tab:red")
        ax.axhline(tol * 100, color="k", ls="--", lw=1, label=f"{tol * 100:.0f} cm")
        ax.set(xlabel="time [s]", ylabel="|goal - position| [cm]", yscale="log",
               title=f"{sim}: {report[sim]['successes']}/{report[sim]['num_starts']} succeed (red: fail)")
        ax.legend()
        ax = axes[1, col]
        pos, goal = res["pos_w"], res["goal_w"]
        ax.plot(pos[:, :, 0], pos[:, :, 1], color="tab:green", alpha=0.3, lw=0.8)
        ax.plot(goal[:, :, 0], goal[:, :, 1], color="k", alpha=0.4, lw=0.8, ls=":")
        ax.plot(goal[-1, :, 0], goal[-1, :, 1], "k+", ms=8)
        ax.set(xlabel="x [m]", ylabel="y [m]", title=f"{sim}: flights from above (dotted: goal)", aspect="equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
