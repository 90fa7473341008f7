"""Navigate teacher: its training time and its success at 16 and 32 obstacles over unseen fields.

The teacher is the privileged PPO policy of `tether train navigate` (groups "policy" + "privileged":
state and the analytic ray fan; no camera). Success = within 0.5 m of the goal within the time limit
without collision (sim.tasks.navigate), one episode on each of --fields fields of exactly N obstacles
drawn from --seed, which no training env used (training envs draw from the run's seed, 0 by default,
and fields per episode from that stream). The depth student's figures come from policies/distill.py.

Training figures are read from the checkpoint (``train_time_s``: wall-clock training time without
checkpoint I/O; ``global_step``: env steps), with the machine and the 1-min load printed beside them:
the machine is shared. Never pass/fail (exit 0 when it ran).

    python bench/bench_navigate.py --checkpoint artifacts/navigate/teacher_v1/model_00600.pt
    python bench/bench_navigate.py --run-dir artifacts/navigate/teacher_v1 --fields 100 --obstacles 16 32
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from policies.export import model_from_checkpoint  # noqa: E402
from sim.tasks import task_cfg_from_dict  # noqa: E402
from sim.tasks.navigate import evaluate_fields  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a navigate teacher checkpoint (.pt)")
    src.add_argument("--run-dir", help="a run folder: its latest checkpoint")
    p.add_argument("--fields", type=int, default=100, help="unseen fields per obstacle count (default: 100)")
    p.add_argument("--obstacles", type=int, nargs="+", default=[16, 32], help="obstacle counts (default: 16 32)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the evaluation fields (default: 1000)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = p.parse_args(argv)
    if args.fields < 1 or min(args.obstacles) < 0:
        print("error: --fields must be >= 1 and --obstacles >= 0", file=sys.stderr)
        return 2
    path = Path(args.checkpoint) if args.checkpoint else None
    try:
        if path is None:
            path = latest_checkpoint(args.run_dir)
        ckpt = load_checkpoint(path, task="navigate")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {' '.join(str(e).split())}; give a navigate checkpoint (tether train navigate)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = model_from_checkpoint(ckpt)
    cfg = task_cfg_from_dict("navigate", ckpt["task_cfg"])

    def policy(groups: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.act_mean(groups)  # deterministic: the mean action

    steps, secs = ckpt["global_step"], ckpt["train_time_s"]
    run = ckpt.get("run_cfg", {})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load now "
          f"{os.getloadavg()[0]:.1f}")
    print(f"teacher: {path} (groups {list(model.groups)}, iteration {ckpt['iteration']}, "
          f"{run.get('num_envs', '?')} envs, {run.get('physics', '?')} physics)")
    print(f"training: {secs / 60:.1f} min wall-clock, {steps / 1e6:.2f} M env-steps, "
          f"{steps / max(secs, 1e-9) / 1e3:.1f} k env-steps/s end to end (PPO updates included)")
    for n in args.obstacles:
        r = evaluate_fields(policy, cfg, num_obstacles=n, num_fields=args.fields, seed=args.seed + n)
        print(f"{n:3d} obstacles, {args.fields} unseen fields: success {r['success']:.0%}, collision "
              f"{r['collision']:.0%}, out of bounds {r['crash_other']:.0%}, time-out {r['timeout']:.0%}, "
              f"time to goal {r['time_to_goal_s']:.1f} s (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
