"""The main job on a built-in default: train a hover policy, export it, fly it in pybullet from
randomized starts through its contract, print a report and write plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_ITERATIONS = 120
"""PPO iterations of the demo's hover policy"""


def run_demo(out: Path, iterations: int | None = None, num_envs: int | None = None, seed: int = 0,
             hil_backend: str | None = "ros", hil_rounds: int = 2, hil_episodes: int = 10) -> dict:
    import torch

    from policies.evaluation import AcceptanceCfg, evaluate_hover
    from policies.export import export_policy
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    torch.set_num_threads(1)  # fastest here at this batch size; see bench/time_to_hover.py
    out.mkdir(parents=True, exist_ok=True)
    env = make_env("hover", num_envs=512 if num_envs is None else num_envs, seed=seed)
    # 120 iterations: at 80, seed 0 with this machine's torch 2.13 CPU build settles 5.2 cm low (the mean
    # action's thrust sags below hover) on every start, at every commit tried back to session 4's; 120 holds
    # 100/100 at 1.7 cm (160: 1.4 cm)
    ppo = PPOCfg(num_iterations=DEMO_ITERATIONS if iterations is None else iterations, save_interval=10, seed=seed)
    print(f"[1/4] training hover ({env.num_envs} envs x {ppo.num_steps} steps x {ppo.num_iterations} iterations, "
          f"{env.cfg.preset}, {env.cfg.action_space} at {env.cfg.control_rate_hz:g} Hz, domain randomization on)")
    t0 = time.perf_counter()
    ckpt = train(env, "hover", ppo, out / "run", progress=True)
    train_s = time.perf_counter() - t0
    print(f"[2/4] exporting {ckpt.name}")
    policy_dir, contract, parity = export_policy(ckpt, out / "policy")
    print(f"      {policy_dir}/policy.onnx + policy.json, ONNX parity max |diff| {parity:.1e}")
    print("[3/4] flying 100 randomized starts in pybullet and in Tether's simulator")
    report = evaluate_hover(policy_dir, env.cfg, AcceptanceCfg(), sims=("pybullet", "tether"))
    pb, ts = report["pybullet"], report["tether"]
    summary = {
        "train_wall_s": train_s, "checkpoint": str(ckpt), "policy_dir": str(policy_dir), "onnx_parity": parity,
        "pybullet": {k: v for k, v in pb.items() if not k.startswith("_")},
        "tether": {k: v for k, v in ts.items() if not k.startswith("_")},
        "pybullet_over_tether_success": pb["success_rate"] / ts["success_rate"] if ts["success_rate"] else None,
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
    print(f"report: {out / 'report.json'}   plot: {plot}")
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
