"""A policy for a vehicle class, against today's nominal-trained one (issue 10).

Trains the robust hover policy (task ``hover_robust``: randomization ``crazyflie_class``, position-error
integral observed) for each seed and records its training time; exports it; then flies it and the
nominal-trained policy (default: the demo-like fixture, or ``--baseline DIR``) through their contracts:

- on ``--starts`` vehicles drawn from the class, one start each (within 0.5 m, tilt up to 60 deg, up to
  1 m/s, any yaw), the same starts and vehicles for both, in pybullet (and Tether's sim with
  ``--sims pybullet tether``): success = reach 5 cm within 5 s and hold to 8 s, no crash; steady error =
  mean error over the last second;
- on the nominal vehicle (100 starts of the hover acceptance): steady error;
- on the vehicle the issue reports (30.6 g, thrust-to-weight 1.47, motors 55 ms up / 249 ms down,
  5x less yaw torque, no drag), 64 starts;
- over the sweep grid (thrust-to-weight x motor time constant): a heat map PNG per policy.

Each seed trains as ``tether train`` does: checkpoints every save_interval, then the best one on held-out
class vehicles is chosen (policies.select; ``--no-select``: the last one). Every seed's chosen and last
checkpoints are flown on the class in Tether's sim. Training time is the ``train_time_s`` of the last
checkpoint (training iterations only) plus the selection's wall time; CPU seconds beside it. Report the
load average too: this machine is shared. Writes artifacts/bench/robust.json and prints tables.

    python bench/bench_robust.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from policies.checkpoint import load_checkpoint  # noqa: E402
from policies.evaluation import AcceptanceCfg, evaluate_policy, task_cfg_from_contract  # noqa: E402
from policies.export import export_policy  # noqa: E402
from policies.ppo import PPOCfg, ppo_defaults, train  # noqa: E402
from policies.select import BEST_FILE, SELECTION, select_best  # noqa: E402
from policies.sweep import SweepCfg, Vehicles, cm, fly_vehicles, plot_sweep, run_sweep, summarize  # noqa: E402
from sim.pybullet_ref.evaluate import hover_metrics  # noqa: E402
from sim.quadrotor.dynamics import nominal_params  # noqa: E402
from sim.quadrotor.presets import GRAVITY  # noqa: E402
from sim.tasks import TASKS, make_env, task_cfg_from_dict  # noqa: E402
from tether.config import config_from_dict, config_to_dict  # noqa: E402
from tether.runtime import OnnxPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def issue_vehicle(preset, m: int) -> Vehicles:
    """The independent simulator's vehicle of issue 10, as per-env parameters of ``preset``."""
    p = nominal_params(preset, m)
    mass = torch.full_like(p.mass, 0.0306)
    max_rpm = torch.sqrt(1.47 * mass * GRAVITY / (len(preset.rotor_spin) * p.kf))
    p = p._replace(mass=mass, max_rpm=max_rpm, tau_up=torch.full_like(p.tau_up, 0.055),
                   tau_down=torch.full_like(p.tau_down, 0.249), km=p.km / 5.0, drag=torch.zeros_like(p.drag))
    return Vehicles(p, np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64))


def judge(flights: dict, cfg: SweepCfg) -> dict:
    return {sim: summarize(hover_metrics(result, cfg.tol_m, cfg.reach_within_s), crashed=result["crashed"])
            for sim, result in flights.items()}


def evaluate(policy_dir: Path, args, out_dir: Path, label: str) -> dict:
    task_cfg = task_cfg_from_contract(policy_dir)
    sims = tuple(args.sims)
    t0 = time.perf_counter()
    cls = run_sweep(policy_dir, task_cfg, SweepCfg(starts_per_cell=0, random_draws=args.starts, seed=args.eval_seed,
                                                   vehicle_class=args.vehicle_class), sims)
    nominal = evaluate_policy(policy_dir, task_cfg, AcceptanceCfg(num_starts=100), sims=("pybullet",))["pybullet"]
    cfg = SweepCfg(seed=args.eval_seed)
    acc = cfg.acceptance(64)
    from policies.evaluation import sample_starts
    starts = sample_starts(acc, np.asarray(task_cfg.goal_w, dtype=np.float64))
    foreign = judge(fly_vehicles(OnnxPolicy(policy_dir), task_cfg, issue_vehicle(task_cfg.vehicle, 64), starts,
                                 cfg.duration_s, cfg.physics_hz, ("pybullet",)), cfg)
    grid = None
    if not args.no_grid:
        grid = run_sweep(policy_dir, task_cfg, SweepCfg(random_draws=0, seed=args.eval_seed), ("pybullet",))
        plot_sweep(grid, out_dir / f"sweep_{label}.png", title=f"{label}: {policy_dir}")
    return {"policy": str(policy_dir), "task": task_cfg.__class__.__name__,
            "class": {sim: cls[sim]["random"] for sim in sims},
            "nominal_vehicle": {k: nominal[k] for k in ("successes", "num_starts", "steady_state_err_m_median",
                                                       "settle_time_s_median", "crashes")},
            "issue_vehicle": foreign,
            "grid": None if grid is None else {"success_rate": grid["pybullet"]["grid"]["success_rate"],
                                               "steady_err_m_median": grid["pybullet"]["grid"]["steady_err_m_median"],
                                               "thrust_to_weight": grid["sweep"]["thrust_to_weight"],
                                               "motor_tau_s": grid["sweep"]["motor_tau_s"]},
            "eval_wall_s": time.perf_counter() - t0}


def train_seed(task: str, seed: int, args, work: Path) -> tuple[Path, Path, dict]:
    """Train one seed as `tether train` does (checkpoints every save_interval, then selection by evaluation
    for tasks in policies.select.SELECTION); returns (last checkpoint, chosen checkpoint, timings)."""
    env = make_env(task, args.task_cfg, num_envs=args.num_envs, seed=seed)
    ppo = config_from_dict(PPOCfg, {**config_to_dict(ppo_defaults(task)), **args.ppo,
                                    "num_iterations": args.iterations, "seed": seed}, where="--ppo")
    run_dir = work / f"{task}_seed{seed}"
    c0, w0 = time.process_time(), time.perf_counter()
    ckpt = train(env, task, ppo, run_dir, progress=False)
    timing = {"train_time_s": float(load_checkpoint(ckpt)["train_time_s"]), "train_wall_s": time.perf_counter() - w0,
              "train_cpu_s": time.process_time() - c0, "select_wall_s": 0.0, "select_cpu_s": 0.0}
    chosen = ckpt
    if task in SELECTION and not args.no_select:
        c0, w0 = time.process_time(), time.perf_counter()
        chosen = select_best(run_dir, SELECTION[task])
        timing.update(select_wall_s=time.perf_counter() - w0, select_cpu_s=time.process_time() - c0,
                      selected=json.loads((run_dir / BEST_FILE).read_text()))
    timing["total_s"] = timing["train_time_s"] + timing["select_wall_s"]
    return ckpt, chosen, timing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hover_robust")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-envs", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=None, help="default: the task's (policies.ppo.PPO_DEFAULTS)")
    ap.add_argument("--starts", type=int, default=256, help="vehicles drawn from the class, one start each")
    ap.add_argument("--vehicle-class", default="", help="RANDOMIZATIONS name (default: the preset's class)")
    ap.add_argument("--baseline", default=str(REPO / "tests/fixtures/hover_policy"),
                    help="today's nominal-trained policy folder (default: the demo-like fixture)")
    ap.add_argument("--policy", default=None, help="evaluate this exported robust policy instead of training")
    ap.add_argument("--sims", nargs="+", default=["pybullet"], choices=("pybullet", "tether"))
    ap.add_argument("--eval-seed", type=int, default=2026)
    ap.add_argument("--no-grid", action="store_true", help="skip the grid heat maps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of training (the bar: this machine's 2 cores)")
    ap.add_argument("--no-select", action="store_true", help="use the last checkpoint (no selection by evaluation)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the nominal-trained policy's evaluation")
    ap.add_argument("--ppo", nargs="*", default=[], metavar="KEY=VALUE",
                    help="PPO settings over the task's defaults (YAML values), e.g. critic_groups=[policy]")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="task_set",
                    help="task config keys over the task's defaults (YAML values), e.g. rew_position=-2")
    ap.add_argument("--screen", action="store_true",
                    help="train and fly each seed on the class in Tether's sim only (no full evaluation)")
    ap.add_argument("--out", default="artifacts/bench/robust.json")
    args = ap.parse_args(argv)
    try:
        args.ppo = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.ppo)}
        config_from_dict(PPOCfg, {**config_to_dict(ppo_defaults(args.task)), **args.ppo}, where="--ppo")
    except ValueError as e:
        print(f"error: --ppo {' '.join(str(e).split())}; give KEY=VALUE pairs of policies.ppo.PPOCfg", file=sys.stderr)
        return 2
    try:
        args.task_set = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.task_set)}
        # typed and checked as `tether train --set` checks them (config_from_dict: unknown keys, types, ranges)
        args.task_cfg = task_cfg_from_dict(args.task, {**config_to_dict(TASKS[args.task][0]()), **args.task_set},
                                           where="--set")
    except (ValueError, TypeError, KeyError) as e:
        print(f"error: {' '.join(str(e).split())}; give KEY=VALUE pairs of the task's config", file=sys.stderr)
        return 2
    args.iterations = args.iterations or ppo_defaults(args.task).num_iterations
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary: dict = {"task": args.task, "num_envs": args.num_envs, "iterations": args.iterations, "ppo": args.ppo,
                     "task_set": args.task_set,
                     "threads": args.threads, "machine": {"torch": torch.__version__, "cpus": os.cpu_count()},
                     "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="tether-robust-") as tmp:
        work = Path(tmp)
        if args.policy:
            robust_dir, times = Path(args.policy), []
        else:
            times, robust_dir, per_seed = [], None, []
            for seed in args.seeds:
                load0 = os.getloadavg()
                last, chosen, timing = train_seed(args.task, seed, args, work)
                times.append(timing["total_s"])
                row = {"seed": seed, **timing, "load_avg_before": load0, "load_avg": os.getloadavg()}
                # every seed on the class in Tether's sim (cheap): the chosen checkpoint and the last one
                for key, ckpt in (("class_tether", chosen), ("class_tether_last", last)):
                    if key == "class_tether_last" and ckpt == chosen:
                        row[key] = row["class_tether"]
                        continue
                    seed_dir = export_policy(ckpt, out.parent / f"{out.stem}_{args.task}_seed{seed}"
                                             f"{'' if ckpt == chosen else '_last'}", overwrite=True)[0]
                    row[key] = run_sweep(seed_dir, task_cfg_from_contract(seed_dir), SweepCfg(
                        starts_per_cell=0, random_draws=args.starts, seed=args.eval_seed,
                        vehicle_class=args.vehicle_class), ("tether",))["tether"]["random"]
                    if ckpt == chosen and robust_dir is None:
                        robust_dir = seed_dir  # the first seed is evaluated in full below
                c, cl = row["class_tether"], row["class_tether_last"]
                per_seed.append(row)
                print(f"  seed {seed}: trained in {timing['train_time_s']:.1f} s + selection {timing['select_wall_s']:.1f} s "
                      f"(CPU {timing['train_cpu_s']:.1f} + {timing['select_cpu_s']:.1f} s, load {load0[0]:.1f}-"
                      f"{os.getloadavg()[0]:.1f}); chosen {chosen.name}: {c['successes']}/{c['num_starts']} class vehicles "
                      f"hold in Tether's sim, steady error median {cm(c['steady_err_m_median'])} (last "
                      f"{last.name}: {cl['successes']}/{cl['num_starts']})", flush=True)
            summary["train_time_s"] = times
            summary["train_time_s_median"] = statistics.median(times)
            summary["seeds"] = per_seed
        summary["load_avg_after_training"] = os.getloadavg()
        if not args.screen:
            summary["robust"] = evaluate(robust_dir, args, out.parent, "robust")
        if not args.no_baseline and not args.screen:
            summary["nominal_trained"] = evaluate(Path(args.baseline), args, out.parent, "nominal_trained")
    summary["load_avg_end"] = os.getloadavg()
    out.write_text(json.dumps(summary, indent=2))

    print(f"\n| policy | class: stay up + hold 5 cm ({args.starts} starts) | steady err median / p90 [cm] | "
          "nominal vehicle steady err [cm] | issue's vehicle (64) |")
    print("|---|---|---|---|---|")
    for name in ("robust", "nominal_trained"):
        if name not in summary:
            continue
        r = summary[name]
        for sim, c in r["class"].items():
            f = r["issue_vehicle"]["pybullet"]
            print(f"| {name} ({sim}) | {c['successes']}/{c['num_starts']} ({c['success_rate']:.1%}, CI "
                  f"{c['success_ci95'][0]:.2f}-{c['success_ci95'][1]:.2f}) | {cm(c['steady_err_m_median'])} / "
                  f"{cm(c['steady_err_m_p90'])} | {r['nominal_vehicle']['steady_state_err_m_median'] * 100:.2f} | "
                  f"{f['successes']}/64, steady {cm(f['steady_err_m_median'])} |")
    if times:
        cpu = ", ".join(f"{r['train_cpu_s'] + r['select_cpu_s']:.1f}" for r in summary["seeds"])
        print(f"training time (training + selection): {', '.join(f'{t:.1f}' for t in times)} s, median "
              f"{statistics.median(times):.1f} s; CPU {cpu} s "
              f"({args.num_envs} envs x {args.iterations} iterations, {args.threads} thread(s); load average "
              f"{summary['load_avg_start'][0]:.1f} at start)")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
