"""The main job on a built-in default: train a hover policy (the vehicle-class one, its best checkpoint kept on
held-out vehicles, or with ``--task hover`` the nominal one), export it, fly it in pybullet from
randomized starts through its contract and across the vehicle class in Tether's simulator, print a report and
write plots, then correct it on a perturbed twin."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """How the demo trains one task (None: the task's own default)."""

    num_envs: int | None
    """training envs (None: sim.tasks.run_cfg.RUN_DEFAULTS)"""
    iterations: int | None
    """PPO iterations (None: policies.ppo.PPO_DEFAULTS)"""
    save_interval: int | None
    """iterations between checkpoints (None: the PPO default's)"""
    threads: int
    """torch threads of training, at most the machine's CPUs"""


DEMO_RECIPES: dict[str, DemoRecipe] = {
    # 120 iterations: at 80, seed 0 with this machine's torch 2.13 CPU build settles 5.2 cm low (the mean action's
    # thrust sags below hover) on every start, at every commit tried back to session 4's; 120 holds 100/100 at
    # 1.7 cm (160: 1.4 cm). 1 thread is fastest at 512 envs here (bench/time_to_hover.py).
    "hover": DemoRecipe(num_envs=512, iterations=120, save_interval=10, threads=1),
    # issue 10: any Crazyflie-class vehicle, with integral action; 1024 envs train in about half the time on 2
    # threads as on 1; selected with the nominal gate (policies.select)
    "hover_robust": DemoRecipe(num_envs=None, iterations=None, save_interval=None, threads=2),
}
DEMO_TASK = "hover_robust"
"""the default policy of the demo (issue 10): the vehicle-class one. Over ROS 2 its correction loop goes from 0 to
100 % in one round (the weak motor identified from the logs, then refined in the simulator); ``--task hover`` trains
the nominal policy of the earlier demo (about 4x faster to train, and it holds 38 of 256 class vehicles)"""


def run_demo(out: Path, iterations: int | None = None, num_envs: int | None = None, seed: int = 0,
             hil_backend: str | None = "ros", hil_rounds: int = 2, hil_episodes: int = 10,
             task: str = DEMO_TASK) -> dict:
    import torch

    from policies.evaluation import AcceptanceCfg, evaluate_hover
    from policies.export import export_policy
    from policies.ppo import ppo_defaults, train
    from policies.select import BEST_FILE, SELECTION, select_best
    from policies.sweep import SweepCfg, cm, plot_sweep, run_sweep
    from sim.tasks import make_env
    from sim.tasks.run_cfg import run_defaults

    recipe = DEMO_RECIPES[task]
    torch.set_num_threads(min(recipe.threads, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    num_envs = num_envs or recipe.num_envs or run_defaults(task).num_envs
    env = make_env(task, num_envs=num_envs, seed=seed)
    defaults = ppo_defaults(task)
    ppo = dataclasses.replace(defaults, num_iterations=iterations or recipe.iterations or defaults.num_iterations,
                              save_interval=recipe.save_interval or defaults.save_interval, seed=seed)
    rand = env.cfg.randomization
    print(f"[1/4] training {task} ({env.num_envs} envs x {ppo.num_steps} steps x {ppo.num_iterations} iterations, "
          f"{env.cfg.preset}, thrust-to-weight {rand.thrust_to_weight[0]:g}-{rand.thrust_to_weight[1]:g}, "
          f"{env.cfg.action_space} at {env.cfg.control_rate_hz:g} Hz, domain randomization on)")
    t0 = time.perf_counter()
    ckpt = train(env, task, ppo, out / "run", progress=True)
    train_s = time.perf_counter() - t0
    chosen = None
    if task in SELECTION:  # a class policy's checkpoints swing: keep the best on held-out vehicles
        ckpt = select_best(out / "run", SELECTION[task])
        chosen = next(c for c in json.loads((out / "run" / BEST_FILE).read_text())["candidates"]
                      if c["checkpoint"] == ckpt.name)
        print(f"[2/4] exporting {ckpt.name}, the best checkpoint on held-out vehicles: {chosen['successes']}/"
              f"{chosen['num_starts']} class vehicles held, nominal {chosen['nominal']['successes']}/"
              f"{chosen['nominal']['num_starts']}")
    else:
        print(f"[2/4] exporting {ckpt.name}")
    policy_dir, contract, parity = export_policy(ckpt, out / "policy")
    print(f"      {policy_dir}/policy.onnx + policy.json, ONNX parity max |diff| {parity:.1e}")
    print("[3/4] flying 100 randomized starts in pybullet and in Tether's simulator, then the vehicle class")
    report = evaluate_hover(policy_dir, env.cfg, AcceptanceCfg(), sims=("pybullet", "tether"))
    pb, ts = report["pybullet"], report["tether"]
    sweep = run_sweep(policy_dir, env.cfg, SweepCfg(starts_per_cell=4, random_draws=64), ("tether",))
    sweep_png = plot_sweep(sweep, out / "class_sweep.png", title=f"{task}: {policy_dir}")
    summary = {
        "train_wall_s": train_s, "checkpoint": str(ckpt), "policy_dir": str(policy_dir), "onnx_parity": parity,
        "pybullet": {k: v for k, v in pb.items() if not k.startswith("_")},
        "tether": {k: v for k, v in ts.items() if not k.startswith("_")},
        "pybullet_over_tether_success": pb["success_rate"] / ts["success_rate"] if ts["success_rate"] else None,
        "task": task, "selected": chosen,
        "vehicle_class": {"simulator": "tether", "random": sweep["tether"]["random"],
                          "grid": sweep["tether"]["grid"], "grid_all": sweep["tether"]["grid_all"],
                          "thrust_to_weight": sweep["sweep"]["thrust_to_weight"],
                          "motor_tau_s": sweep["sweep"]["motor_tau_s"], "plot": str(sweep_png)},
    }
    summary["acceptance"] = {"required_successes": pb["required_successes"], "num_starts": pb["num_starts"],
                             "simulator": "pybullet", "passed": pb["passed"]}
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    plot = _plot(out / "run", pb["_result"], report["acceptance"]["tol_m"], out / "hover_report.png")
    print()
    print("| simulator | success | 95% CI | steady-state error | settle time | crashes |")
    print("|---|---|---|---|---|---|")
    for name, r in (("pybullet", pb), ("tether", ts)):
        print(f"| {name} | {r['successes']}/{r['num_starts']} | {r['success_ci95'][0]:.2f}-{r['success_ci95'][1]:.2f} | "
              f"{r['steady_state_err_m_median'] * 100:.1f} cm | {r['settle_time_s_median']:.2f} s | {r['crashes']} |")
    print(f"\ntraining {train_s:.1f} s wall clock; pybullet keeps "
          f"{100 * (summary['pybullet_over_tether_success'] or 0):.0f}% of Tether's success; "
          f"acceptance (>= {pb['required_successes']}/{pb['num_starts']} in pybullet): "
          f"{'PASS' if pb['passed'] else 'FAIL'}")
    cls = sweep["tether"]["random"]
    print(f"vehicle class (Tether's simulator): {cls['successes']}/{cls['num_starts']} random vehicles held, steady "
          f"error median {cm(cls['steady_err_m_median'])}; grid of thrust-to-weight x motor time constant: "
          f"{sweep['tether']['grid_all']['successes']}/{sweep['tether']['grid_all']['num_starts']}")
    print(f"report: {out / 'report.json'}   plots: {plot}, {sweep_png}")
    if hil_backend:
        summary["correction_loop"] = _correction_loop(policy_dir, out / "correction", hil_backend, hil_rounds,
                                                      hil_episodes, seed)
    return summary


def _correction_loop(policy_dir: Path, out: Path, backend: str, rounds: int, episodes: int, seed: int) -> dict:
    """Deploy on the twin with a 30% weaker motor, let the scripted operator correct it, finetune on the
    logged interventions, redeploy; a before/after report with plots."""
    from policies.hil.loop import LoopCfg, run_correction_loop

    cfg = LoopCfg(rounds=rounds, episodes_per_round=episodes, backend=backend, seed=seed)
    print(f"\n[4/4] human-in-the-loop correction on the perturbed twin ({backend}: "
          f"{'ROS 2 nodes as processes over DDS' if backend == 'ros' else 'in-process'}), "
          f"{rounds} rounds x {episodes} episodes")
    return run_correction_loop(policy_dir, out, cfg)


def _plot(run_dir: Path, result: dict, tol_m: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from policies.checkpoint import load_checkpoint

    ckpts = [load_checkpoint(p) for p in sorted(run_dir.glob("model_*.pt"))]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot([c["train_time_s"] for c in ckpts], [c["logs"]["rollout/pos_err_m"] for c in ckpts], "o-")
    ax.set(xlabel="training time [s]", ylabel="mean position error in rollouts [m]", title="training", yscale="log")
    ax.grid(alpha=0.3)
    ax = axes[1]
    t, err = result["t_s"], result["pos_err"]
    ax.plot(t, err * 100, color="tab:blue", alpha=0.25, lw=0.8)
    ax.axhline(tol_m * 100, color="k", ls="--", lw=1, label=f"{tol_m * 100:.0f} cm tolerance")
    ax.set(xlabel="time [s]", ylabel="position error [cm]", title="pybullet: 100 randomized starts", yscale="log")
    ax.legend()
    ax = axes[2]
    pos = result["pos_w"]
    goal = result["goal_w"][0, 0]
    ax.plot(pos[:, :, 0] - goal[0], pos[:, :, 2] - goal[2], color="tab:green", alpha=0.3, lw=0.8)
    ax.plot(0, 0, "k+", ms=12)
    ax.set(xlabel="x - goal [m]", ylabel="z - goal [m]", title="trajectories (side view)", aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
