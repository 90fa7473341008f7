"""Evaluate an exported policy from the same randomized starts in Tether's own simulator and in
pybullet (the reference physics), with the hover acceptance test of the time-to-hover benchmark."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from sim.math import quat_mul
from sim.pybullet_ref.evaluate import bootstrap_ci, fly, hover_metrics
from sim.quadrotor import dynamics
from sim.randomization import RandomizationCfg
from tether.runtime import OnnxPolicy


@dataclasses.dataclass(frozen=True)
class AcceptanceCfg:
    num_starts: int = 100
    """randomized starts"""
    init_pos_m: float = 0.5
    """max start distance from the goal [m]"""
    init_tilt_rad: float = math.radians(30.0)
    """max start tilt [rad]"""
    init_lin_vel_m_s: float = 0.5
    """max start speed [m/s]"""
    init_ang_vel_rad_s: float = 0.5
    """max start body rate magnitude [rad/s]"""
    duration_s: float = 8.0
    """episode length [s]"""
    tol_m: float = 0.05
    """hold tolerance [m]"""
    reach_within_s: float = 5.0
    """must be within tol by this time and stay there [s]"""
    required_successes: int = 99
    """successes out of num_starts to pass"""
    seed: int = 12345


RECOVERY = AcceptanceCfg(init_tilt_rad=math.radians(90.0), required_successes=95)


def task_cfg_from_contract(policy_dir: str | Path):
    """The resolved task config a policy was trained with, from its contract's provenance."""
    from sim.tasks import TASKS
    from tether.config import config_from_dict
    from tether.contract import ContractError, load_contract

    contract = load_contract(Path(policy_dir) / "policy.json")
    if contract.task not in TASKS or "task_cfg" not in contract.provenance:
        raise ContractError(f"{policy_dir}: contract names task {contract.task!r} without a task_cfg in its "
                            "provenance; it was not exported by `tether export`")
    cfg_cls, _ = TASKS[contract.task]
    return config_from_dict(cfg_cls, contract.provenance["task_cfg"], where=f"{policy_dir}/policy.json task_cfg")


def sample_starts(cfg: AcceptanceCfg, goal_w: np.ndarray) -> dict[str, np.ndarray]:
    """Starts uniform in a ball around the goal, uniform random tilt axis, random velocity directions."""
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


def fly_tether(policy: OnnxPolicy, task_cfg, starts: dict[str, np.ndarray], goal_w: np.ndarray,
               duration_s: float, latency_steps: int = 0) -> dict[str, np.ndarray]:
    """Fly the policy in Tether's batched simulator on the nominal vehicle from ``starts``."""
    from sim.tasks import make_env, task_name_of

    m = len(starts["pos_w"])
    env = make_env(task_name_of(task_cfg), task_cfg, num_envs=m, randomization=_fixed_latency(latency_steps, task_cfg),
                   max_distance_m=1e9, ground_z_m=-1e9, episode_length_s=1e9, compile=False)
    env.reset()
    env.goal_w[:] = _tq(goal_w)
    s = env.state
    preset = task_cfg.vehicle
    env.state = dynamics.QuadState(_tq(starts["pos_w"]), _tq(starts["quat_wxyz"]), _tq(starts["lin_vel_w"]),
                                   _tq(starts["ang_vel_b"]), torch.full_like(s.rotor_rpm, preset.hover_rpm))
    steps = int(round(duration_s * task_cfg.control_rate_hz))
    err = np.zeros((steps + 1, m))
    crashed = np.zeros(m, dtype=bool)
    err[0] = np.linalg.norm(goal_w - starts["pos_w"], axis=1)
    obs = env.observe()["policy"]
    for k in range(steps):
        actions = torch.from_numpy(policy(obs.numpy()))
        obs = env.step(actions)[0]["policy"]
        e = (env.goal_w - env.state.pos_w).norm(dim=-1).numpy()
        crashed |= (env.state.pos_w[:, 2].numpy() < 0.0) | (e > 3.0) | ~np.isfinite(e)
        err[k + 1] = np.where(crashed, np.nan_to_num(err[k], nan=9.9), e)
    t = np.arange(steps + 1) / task_cfg.control_rate_hz
    return {"t_s": t, "pos_err": err, "crashed": crashed}


def _fixed_latency(latency_steps: int, task_cfg) -> RandomizationCfg:
    lat = latency_steps / task_cfg.control_rate_hz
    return dataclasses.replace(RandomizationCfg.nominal(), latency_s=(lat, lat))


def evaluate_hover(policy_dir: str | Path, task_cfg, cfg: AcceptanceCfg = AcceptanceCfg(),
                   sims: tuple[str, ...] = ("pybullet", "tether"), latency_steps: int = 0) -> dict:
    """Success rate (95% bootstrap CI), steady-state error and settle time per simulator."""
    policy = OnnxPolicy(policy_dir)
    goal = np.asarray(task_cfg.goal_w, dtype=np.float64)
    starts = sample_starts(cfg, goal)
    goal_m = np.broadcast_to(goal, (cfg.num_starts, 3)).copy()
    report = {"acceptance": dataclasses.asdict(cfg)}
    for sim in sims:
        if sim == "pybullet":
            result = fly(policy, policy.contract, task_cfg.vehicle, starts, goal_m, cfg.duration_s,
                         latency_steps=latency_steps, substeps=task_cfg.substeps)
        elif sim == "tether":
            result = fly_tether(policy, task_cfg, starts, goal_m, cfg.duration_s, latency_steps)
        else:
            raise ValueError(f"unknown simulator {sim!r}; choose 'pybullet' or 'tether'")
        met = hover_metrics(result, cfg.tol_m, cfg.reach_within_s)
        rate, lo, hi = bootstrap_ci(met["success"].astype(float))
        settle = met["settle_time_s"][met["success"]]
        report[sim] = {
            "successes": int(met["success"].sum()), "success_rate": rate, "success_ci95": [lo, hi],
            "passed": bool(met["success"].sum() >= cfg.required_successes),
            "steady_state_err_m_median": float(np.nanmedian(met["steady_state_err_m"])),
            "settle_time_s_median": float(np.median(settle)) if settle.size else float("nan"),
            "crashes": int(result["crashed"].sum()),
            "_result": result,
        }
    return report
