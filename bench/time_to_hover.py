"""Time-to-hover: wall-clock training seconds until the first checkpoint that passes the hover
acceptance in pybullet (>= 99 of 100 randomized starts within 0.5 m, tilted up to 30 deg, moving up to
0.5 m/s, reach and hold 5 cm within 5 s, no crash), over several seeds.

Training time is the sum of the training iterations up to that checkpoint, as recorded in it: it
excludes the evaluation itself and checkpoint I/O. ``--task recover --acceptance recovery`` gives the
harder figure (starts tilted up to 90 deg). Writes JSON and prints a table.

    python bench/time_to_hover.py --seeds 0 1 2
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.checkpoint import load_checkpoint  # noqa: E402
from policies.evaluation import RECOVERY, AcceptanceCfg, evaluate_hover  # noqa: E402
from policies.export import env_from_checkpoint, export_policy  # noqa: E402
from policies.ppo import PPOCfg, ppo_defaults, train  # noqa: E402
from sim.tasks import make_env, run_defaults  # noqa: E402
from tether.config import config_from_dict, config_to_dict  # noqa: E402


def ppo_cfg(task: str, seed: int, args) -> PPOCfg:
    """The task's PPO settings (``tether train``'s: PPO_DEFAULTS), with this bench's iterations, checkpoint
    interval and seed, and any ``--set ppo.KEY=VALUE``."""
    over = {"num_iterations": args.iterations, "save_interval": args.save_interval, "seed": seed,
            **{k[4:]: v for k, v in args.overrides.items() if k.startswith("ppo.")}}
    return config_from_dict(PPOCfg, {**config_to_dict(ppo_defaults(task)), **over}, where="ppo")


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ppo."):
            raise SystemExit(f"error: --set {item!r}: expected ppo.KEY=VALUE (e.g. ppo.update_epochs=2)")
        out[key] = yaml.safe_load(value)
    return out


def run_seed(task: str, seed: int, args, acceptance: AcceptanceCfg, work: Path) -> dict:
    t_start = time.perf_counter()
    env = make_env(task, num_envs=args.num_envs or run_defaults(task).num_envs, seed=seed, device=args.device,
                   physics="compiled" if args.compile else args.physics)
    startup_s = time.perf_counter() - t_start  # env construction; a fused env compiles at its first step
    ppo = ppo_cfg(task, seed, args)
    run_dir = work / f"{task}_seed{seed}"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    train(env, task, ppo, run_dir, progress=True, compile_update=args.compile_update, fused_adam=args.fused_adam)
    wall_train = time.perf_counter() - t0
    result = {"seed": seed, "passed": False, "time_to_pass_s": None, "cpu_s_to_pass": None, "iteration": None,
              "wall_clock_incl_checkpointing_s": wall_train, "env_construction_s": startup_s,
              "load_1min_before": load_before, "load_1min_after_training": os.getloadavg()[0], "checkpoints": []}
    for ckpt_path in sorted(run_dir.glob("model_*.pt")):
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["iteration"] < args.min_iteration:
            continue
        policy_dir, _, _ = export_policy(ckpt_path, run_dir / f"export_{ckpt['iteration']:05d}")
        cfg = env_from_checkpoint(ckpt).cfg
        report = evaluate_hover(policy_dir, cfg, acceptance, sims=("pybullet", *(("tether",) if args.tether_sim else ())))
        pb, ts = report["pybullet"], report.get("tether", {"successes": -1, "success_rate": None, "success_ci95": None})
        cpu_s = ckpt["logs"].get("charts/train_cpu_s")
        print(f"  seed {seed} it {ckpt['iteration']:4d} t {ckpt['train_time_s']:6.1f}s (CPU {cpu_s or float('nan'):5.1f}s)  "
              f"pybullet {pb['successes']:3d}/{acceptance.num_starts}  tether {ts['successes']:3d}  "
              f"err {pb['steady_state_err_m_median'] * 100:.1f} cm", flush=True)
        result["checkpoints"].append({"iteration": ckpt["iteration"], "train_time_s": ckpt["train_time_s"],
                                      "train_cpu_s": cpu_s, "pybullet_successes": pb["successes"],
                                      "steady_state_err_m": pb["steady_state_err_m_median"]})
        if pb["passed"]:
            result.update(passed=True, time_to_pass_s=ckpt["train_time_s"], cpu_s_to_pass=cpu_s,
                          iteration=ckpt["iteration"],
                          pybullet_success=pb["success_rate"], pybullet_ci95=pb["success_ci95"],
                          tether_success=ts["success_rate"], tether_ci95=ts["success_ci95"],
                          steady_state_err_m=pb["steady_state_err_m_median"],
                          settle_time_s=pb["settle_time_s_median"])
            break
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hover")
    ap.add_argument("--acceptance", choices=("hover", "recovery"), default="hover")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-envs", type=int, default=1024, help="0: the task's run default (sim.tasks.run_cfg)")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--save-interval", type=int, default=5)
    ap.add_argument("--min-iteration", type=int, default=20, help="skip evaluating earlier checkpoints")
    ap.add_argument("--compile", action="store_true", help="torch.compile the eager physics (physics 'compiled')")
    ap.add_argument("--physics", choices=("auto", "fused", "eager"), default="auto",
                    help="training env: fused kernel (auto: where the task supports it) or eager")
    ap.add_argument("--compile-update", action="store_true",
                    help="torch.compile PPO's minibatch loss and its backward (kernels cached between runs)")
    ap.add_argument("--fused-adam", action="store_true", help="Adam's fused kernel")
    ap.add_argument("--device", default="cpu", help="training device (the acceptance flies on the CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-tether-sim", dest="tether_sim", action="store_false",
                    help="judge in pybullet only (the pass criterion; skips the second evaluation)")
    ap.add_argument("--set", action="append", default=[], metavar="ppo.KEY=VALUE",
                    help="override the task's PPO setting (repeatable), e.g. --set ppo.update_epochs=2")
    ap.add_argument("--out", default="artifacts/bench/time_to_hover.json")
    args = ap.parse_args(argv)
    args.overrides = _parse_sets(args.set)
    torch.set_num_threads(args.threads)
    acceptance = RECOVERY if args.acceptance == "recovery" else AcceptanceCfg()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tether-tth-") as tmp:
        results = [run_seed(args.task, s, args, acceptance, Path(tmp)) for s in args.seeds]
    times = [r["time_to_pass_s"] for r in results if r["passed"]]
    cpus = [r["cpu_s_to_pass"] for r in results if r["passed"] and r["cpu_s_to_pass"] is not None]
    summary = {
        "task": args.task, "acceptance": dataclasses.asdict(acceptance),
        "num_envs": args.num_envs or run_defaults(args.task).num_envs,
        "ppo": config_to_dict(ppo_cfg(args.task, 0, args)), "load_1min_at_start": load_at_start,
        "threads": args.threads, "compile": args.compile, "compile_update": args.compile_update,
        "fused_adam": args.fused_adam, "physics": args.physics, "device": args.device,
        "seeds": results, "load_1min_at_end": os.getloadavg()[0],
        "all_seeds_pass": len(times) == len(results),
        "median_time_to_pass_s": statistics.median(times) if times else None,
        "median_cpu_s_to_pass": statistics.median(cpus) if cpus else None,
        "machine": {"torch": torch.__version__, "cpu_threads": torch.get_num_threads()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print("\n| seed | passed | time to pass [s] | CPU to pass [s] | iteration | load | pybullet success | tether success |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {r['passed']} | {r['time_to_pass_s'] or float('nan'):.1f} | "
              f"{r['cpu_s_to_pass'] or float('nan'):.1f} | {r['iteration']} | {r['load_1min_before']:.1f} | "
              f"{r.get('pybullet_success', float('nan')):.2f} | {r.get('tether_success') or float('nan'):.2f} |")
    med = summary["median_time_to_pass_s"]
    cmed = summary["median_cpu_s_to_pass"]
    print(f"median time-to-{args.acceptance}: {med if med is None else round(med, 1)} s "
          f"({cmed if cmed is None else round(cmed, 1)} CPU-s); "
          f"all seeds pass: {summary['all_seeds_pass']}  ->  {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
