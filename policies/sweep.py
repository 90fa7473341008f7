"""Evaluation across a vehicle class (issue 10): one exported policy flown on many vehicles, in pybullet and
in Tether's simulator, through its contract, from the same starts.

Two parts, both on the policy's own preset:
- a grid: thrust-to-weight x motor time constant (rise = fall = tau), every other parameter nominal, no
  latency, the rate loop at the physics rate; ``starts_per_cell`` starts per cell;
- random draws: ``random_draws`` vehicles drawn from the class (:data:`sim.randomization.RANDOMIZATIONS`,
  by default the preset's own class), each with its own latency and rate-loop period, one start each.

Both simulators run their physics at ``physics_hz`` whatever the policy trained with, so that every
policy meets the same vehicles (the rate loop of a vehicle runs every ``rate_div``-th substep). Each
episode is judged as the hover acceptance: reach ``tol_m`` within ``reach_within_s`` and hold it to the
end, no crash; the steady error is the mean error over the last second.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from policies.evaluation import AcceptanceCfg, evaluation_env, fly_tether, goal_schedule, sample_starts, _on_grid
from sim.pybullet_ref.evaluate import bootstrap_ci, fly, hover_metrics
from sim.pybullet_ref.quadrotor import PhysicsOverrides
from sim.quadrotor.dynamics import QuadParams, nominal_params
from sim.quadrotor.presets import GRAVITY, QuadrotorPreset
from sim.randomization import (RANDOMIZATIONS, VEHICLE_CLASSES, sample_latency_steps, sample_params,
                               sample_rate_divisors)
from tether.runtime import OnnxPolicy


@dataclasses.dataclass(frozen=True)
class SweepCfg:
    thrust_to_weight: tuple[float, ...] = (1.4, 1.7, 2.0, 2.5, 3.0)
    """grid rows: max thrust / weight [1]"""
    motor_tau_s: tuple[float, ...] = (0.02, 0.06, 0.12, 0.25)
    """grid columns: motor time constant, rising and falling alike [s]"""
    starts_per_cell: int = 8
    """starts flown on each grid vehicle"""
    random_draws: int = 64
    """vehicles drawn from the class, one start each"""
    vehicle_class: str = ""
    """name in sim.randomization.RANDOMIZATIONS to draw from; '': the preset's class (VEHICLE_CLASSES)"""
    physics_hz: float = 500.0
    """physics substep rate of both simulators [Hz]; a multiple of the policy's control rate"""
    init_pos_m: float = 0.5
    """max start distance from the goal [m]"""
    init_tilt_rad: float = math.radians(60.0)
    """max start tilt [rad], any heading"""
    init_lin_vel_m_s: float = 1.0
    """max start speed [m/s]"""
    init_ang_vel_rad_s: float = 0.5
    """max start body rate magnitude [rad/s]"""
    duration_s: float = 8.0
    """episode length [s]"""
    tol_m: float = 0.05
    """hold tolerance [m]"""
    reach_within_s: float = 5.0
    """must be within tol_m by this time and stay there [s]"""
    seed: int = 2026
    """seed of the starts and of the drawn vehicles"""

    def __post_init__(self):
        if not self.thrust_to_weight or min(self.thrust_to_weight) <= 1.0:
            raise ValueError(f"sweep thrust_to_weight needs values > 1, got {list(self.thrust_to_weight)}")
        if not self.motor_tau_s or min(self.motor_tau_s) <= 0:
            raise ValueError(f"sweep motor_tau_s needs values > 0 s, got {list(self.motor_tau_s)}")
        if self.starts_per_cell < 0 or self.random_draws < 0 or self.starts_per_cell + self.random_draws == 0:
            raise ValueError("sweep needs starts_per_cell > 0 or random_draws > 0")
        if self.vehicle_class and self.vehicle_class not in RANDOMIZATIONS:
            raise ValueError(f"sweep vehicle_class {self.vehicle_class!r} unknown; known: {sorted(RANDOMIZATIONS)}")

    def acceptance(self, num_starts: int) -> AcceptanceCfg:
        return AcceptanceCfg(num_starts=num_starts, init_pos_m=self.init_pos_m, init_tilt_rad=self.init_tilt_rad,
                             init_lin_vel_m_s=self.init_lin_vel_m_s, init_ang_vel_rad_s=self.init_ang_vel_rad_s,
                             duration_s=self.duration_s, tol_m=self.tol_m, reach_within_s=self.reach_within_s,
                             required_successes=math.ceil(0.99 * num_starts), seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Vehicles:
    """M vehicles, one per start: per-env parameters as the torch simulator takes them, plus timing."""

    params: QuadParams
    """[M, ...] physical parameters"""
    latency_steps: np.ndarray
    """[M] whole control steps of action delay"""
    rate_div: np.ndarray
    """[M] physics substeps per rate-loop tick"""


def grid_vehicles(preset: QuadrotorPreset, cfg: SweepCfg) -> Vehicles:
    """The grid's vehicles, row-major (thrust-to-weight, then tau), ``starts_per_cell`` copies each."""
    rows = [(twr, tau) for twr in cfg.thrust_to_weight for tau in cfg.motor_tau_s]
    m = len(rows) * cfg.starts_per_cell
    p = nominal_params(preset, m)
    twr = torch.tensor([r[0] for r in rows for _ in range(cfg.starts_per_cell)]).unsqueeze(1)
    tau = torch.tensor([r[1] for r in rows for _ in range(cfg.starts_per_cell)]).unsqueeze(1)
    max_rpm = torch.sqrt(twr * p.mass * GRAVITY / (len(preset.rotor_spin) * p.kf))
    return Vehicles(p._replace(max_rpm=max_rpm, tau_up=tau.clone(), tau_down=tau.clone()),
                    np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64))


def random_vehicles(preset: QuadrotorPreset, cfg: SweepCfg, control_rate_hz: float) -> Vehicles:
    """``random_draws`` vehicles of the class, each with its own latency and rate-loop period."""
    name = cfg.vehicle_class or VEHICLE_CLASSES.get(preset.name, "default")
    rand = RANDOMIZATIONS[name]
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.random_draws
    p = sample_params(preset, rand, n, gen)
    lat = sample_latency_steps(rand, n, 1.0 / control_rate_hz, gen).numpy()
    div = sample_rate_divisors(rand, n, cfg.physics_hz, gen)
    if div is None:  # no rate-loop range in the class: the loop runs every substep
        div = torch.ones(n, 1, dtype=torch.long)
    return Vehicles(p, lat.astype(np.int64), div[:, 0].numpy().astype(np.int64))


def concat(a: Vehicles, b: Vehicles) -> Vehicles:
    shared = ("rotor_pos_b", "rotor_spin")
    params = QuadParams(*[x if f in shared else torch.cat([x, y]) for f, x, y in zip(QuadParams._fields, a.params,
                                                                                        b.params)])
    return Vehicles(params, np.concatenate([a.latency_steps, b.latency_steps]), np.concatenate([a.rate_div, b.rate_div]))


def overrides_for(preset: QuadrotorPreset, v: Vehicles) -> PhysicsOverrides:
    """The same vehicles as pybullet overrides of ``preset``."""
    def col(t: torch.Tensor) -> np.ndarray:
        return t.double().numpy()

    p = v.params
    return PhysicsOverrides(
        mass_scale=col(p.mass[:, 0]) / preset.mass_kg,
        inertia_scale=col(p.inertia) / np.asarray(preset.inertia_kg_m2),
        kf_scale=col(p.kf[:, 0]) / preset.kf_n_per_rpm2, km_scale=col(p.km[:, 0]) / preset.km_nm_per_rpm2,
        max_rpm_scale=col(p.max_rpm[:, 0]) / preset.max_rpm,
        tau_up_scale=col(p.tau_up[:, 0]) / preset.tau_up_s, tau_down_scale=col(p.tau_down[:, 0]) / preset.tau_down_s,
        drag_scale=col(p.drag) / np.asarray(preset.drag_n_s_per_m),
        rotor_gain=col(p.rotor_gain) / np.asarray(preset.rotor_gain or 1.0))


def thrust_to_weight(preset: QuadrotorPreset, v: Vehicles) -> np.ndarray:
    p = v.params
    return (len(preset.rotor_spin) * p.kf * p.rotor_gain.mean(-1, keepdim=True) * p.max_rpm ** 2
            / (p.mass * GRAVITY))[:, 0].double().numpy()


def _substeps(task_cfg, physics_hz: float) -> int:
    k = physics_hz / task_cfg.control_rate_hz
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise ValueError(f"sweep physics_hz {physics_hz:g} is not a multiple of the control rate "
                         f"{task_cfg.control_rate_hz:g} Hz")
    return int(round(k))


def fly_vehicles(policy: OnnxPolicy, task_cfg, vehicles: Vehicles, starts: dict[str, np.ndarray], duration_s: float,
                 physics_hz: float, sims: tuple[str, ...]) -> dict[str, dict]:
    """Fly every start on its vehicle in each simulator; returns {sim: fly result}."""
    substeps = _substeps(task_cfg, physics_hz)
    cfg = dataclasses.replace(task_cfg, substeps=substeps)
    m = len(vehicles.latency_steps)
    preset = cfg.vehicle
    out = {}
    env = evaluation_env(cfg, m, seed=0)
    goal_w, _ = goal_schedule(env, duration_s)
    if "pybullet" in sims:
        out["pybullet"] = fly(policy, policy.contract, preset, starts, _on_grid(goal_w, cfg.control_dt), duration_s,
                              latency_steps=vehicles.latency_steps, overrides=overrides_for(preset, vehicles),
                              substeps=substeps, rate_div=vehicles.rate_div)
    if "tether" in sims:
        env.params = QuadParams(*[t.clone() for t in vehicles.params])
        env.latency_steps = torch.as_tensor(vehicles.latency_steps, dtype=torch.long)
        env.rate_div = torch.as_tensor(vehicles.rate_div, dtype=torch.long).unsqueeze(1)
        depth = int(vehicles.latency_steps.max()) + 1
        env.action_queue = env.hover_action.repeat(m, depth, 1)
        out["tether"] = fly_tether(policy, env, starts, duration_s)
    return out


def summarize(met: dict, idx=slice(None), crashed: np.ndarray | None = None) -> dict:
    """Success (with its bootstrap 95 % CI) and the steady errors of the successful starts among rows ``idx``
    of :func:`policies.evaluation.hover_metrics`' output; the steady-error figures are None when no start
    succeeded (JSON has no NaN). With ``crashed`` (per start) the count of crashes too."""
    ok = met["success"][idx]
    steady = met["steady_state_err_m"][idx]
    pick = steady[np.isfinite(steady) & ok]
    rate, lo, hi = bootstrap_ci(ok.astype(float)) if len(ok) else (float("nan"),) * 3
    out = {"successes": int(ok.sum()), "num_starts": int(len(ok)), "success_rate": rate, "success_ci95": [lo, hi],
           "steady_err_m_median": float(np.median(pick)) if pick.size else None,
           "steady_err_m_p90": float(np.quantile(pick, 0.9)) if pick.size else None,
           "steady_err_m_max": float(pick.max()) if pick.size else None}
    if crashed is not None:
        out["crashes"] = int(np.asarray(crashed)[idx].sum())
    return out


def cm(err_m: float | None) -> str:
    """A steady error of :func:`summarize` for people: centimetres, or "n/a" when nothing held."""
    return "n/a" if err_m is None else f"{err_m * 100:.2f} cm"


def run_sweep(policy_dir: str | Path, task_cfg, cfg: SweepCfg | None = None,
              sims: tuple[str, ...] = ("pybullet", "tether")) -> dict:
    """Success and steady error over the grid and the random draws, per simulator (steady errors of the
    successful episodes)."""
    cfg = cfg or SweepCfg()
    policy = OnnxPolicy(policy_dir)
    preset = task_cfg.vehicle
    grid = grid_vehicles(preset, cfg)
    draws = random_vehicles(preset, cfg, task_cfg.control_rate_hz)
    vehicles = concat(grid, draws)
    m_grid, m = len(grid.latency_steps), len(vehicles.latency_steps)
    acc = cfg.acceptance(m)
    starts = sample_starts(acc, np.asarray(task_cfg.goal_w, dtype=np.float64))
    flights = fly_vehicles(policy, task_cfg, vehicles, starts, cfg.duration_s, cfg.physics_hz, sims)
    twr = thrust_to_weight(preset, vehicles)
    report: dict = {"sweep": dataclasses.asdict(cfg), "preset": preset.name,
                    "vehicle_class": cfg.vehicle_class or VEHICLE_CLASSES.get(preset.name, "default"),
                    "random_vehicles": {
                        "thrust_to_weight": twr[m_grid:].tolist(),
                        "tau_up_s": vehicles.params.tau_up[m_grid:, 0].tolist(),
                        "tau_down_s": vehicles.params.tau_down[m_grid:, 0].tolist(),
                        "mass_kg": vehicles.params.mass[m_grid:, 0].tolist(),
                        "km_scale": (vehicles.params.km[m_grid:, 0] / preset.km_nm_per_rpm2).tolist(),
                        "drag": bool_list(vehicles.params.drag[m_grid:, 0] > 0),
                        "latency_steps": vehicles.latency_steps[m_grid:].tolist(),
                        "rate_loop_hz": (cfg.physics_hz / vehicles.rate_div[m_grid:]).tolist()}}
    n_t, n_tau, k = len(cfg.thrust_to_weight), len(cfg.motor_tau_s), cfg.starts_per_cell
    for sim, result in flights.items():
        met = hover_metrics(result, cfg.tol_m, cfg.reach_within_s)
        cells = [[summarize(met, np.arange((i * n_tau + j) * k, (i * n_tau + j + 1) * k)) for j in range(n_tau)]
                 for i in range(n_t)] if k else []
        report[sim] = {
            "grid": {"success_rate": [[c["success_rate"] for c in row] for row in cells],
                     "steady_err_m_median": [[c["steady_err_m_median"] for c in row] for row in cells],
                     "successes": [[c["successes"] for c in row] for row in cells]},
            "grid_all": summarize(met, np.arange(m_grid)) if m_grid else None,
            "random": summarize(met, np.arange(m_grid, m)) if m > m_grid else None,
            "random_per_start": {"success": met["success"][m_grid:].tolist(),
                                 "steady_err_m": np.nan_to_num(met["steady_state_err_m"][m_grid:], nan=-1.0).tolist()},
        }
    return report


def bool_list(t: torch.Tensor) -> list[bool]:
    return [bool(x) for x in t.tolist()]


def plot_sweep(report: dict, path: str | Path, title: str = "") -> Path:
    """Heat maps of success and steady error over the grid, and the random draws, per simulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = [s for s in ("pybullet", "tether") if s in report]
    cfg = report["sweep"]
    twr, tau = cfg["thrust_to_weight"], cfg["motor_tau_s"]
    draws = bool(report["random_vehicles"]["thrust_to_weight"])
    fig, axes = plt.subplots(len(sims), 3 if draws else 2, figsize=(15 if draws else 10, 4.2 * len(sims)),
                             squeeze=False)
    for row, sim in zip(axes, sims):
        r = report[sim]
        for ax, key, label, cmap, vmax in ((row[0], "success_rate", "success", "RdYlGn", 1.0),
                                           (row[1], "steady_err_m_median", "steady error [cm]", "viridis_r", 5.0)):
            data = np.asarray(r["grid"][key], dtype=float) * (100.0 if key.startswith("steady") else 1.0)
            im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax, origin="lower", aspect="auto")
            for i in range(len(twr)):
                for j in range(len(tau)):
                    v = data[i, j]
                    ax.text(j, i, "-" if not np.isfinite(v) else (f"{v:.0%}" if vmax == 1.0 else f"{v:.1f}"),
                            ha="center", va="center", fontsize=9, color="k")
            ax.set(xticks=range(len(tau)), xticklabels=[f"{t * 1000:.0f}" for t in tau],
                   yticks=range(len(twr)), yticklabels=[f"{t:g}" for t in twr],
                   xlabel="motor time constant, rise = fall [ms]", ylabel="thrust-to-weight",
                   title=f"{sim}: {label}")
            fig.colorbar(im, ax=ax)
        if not draws:
            continue
        ax = row[2]
        rv = report["random_vehicles"]
        ok = np.asarray(r["random_per_start"]["success"], dtype=bool)
        err = np.asarray(r["random_per_start"]["steady_err_m"]) * 100
        x, y = np.asarray(rv["thrust_to_weight"]), np.asarray(rv["tau_down_s"]) * 1000
        if len(x):
            sc = ax.scatter(x[ok], y[ok], c=np.clip(err[ok], 0, 5), cmap="viridis_r", vmin=0, vmax=5, s=25)
            ax.scatter(x[~ok], y[~ok], marker="x", color="tab:red", s=40, label="fails")
            fig.colorbar(sc, ax=ax, label="steady error [cm]")
            ax.legend(loc="upper right")
        rs = r["random"] or {}
        ax.set(xlabel="thrust-to-weight", ylabel="falling motor time constant [ms]",
               title=f"{sim}: {rs.get('successes', 0)}/{rs.get('num_starts', 0)} random vehicles of "
                     f"{report['vehicle_class']}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
