"""Lift added by exploration noise (issue 13: why a policy trained with noise sags when flown without it).

Hover envs (default randomization) fly the hover action plus Gaussian noise of the given std on each
normalized action, drawn every control step as PPO's sampling does; the figure is the mean total rotor
thrust over the vehicle's weight, after a few steps of settling, minus the same without noise. A policy
learns to cancel this extra lift during training, so flown deterministically it lacks it and sags by
(extra lift) / (its position gain). Prints one row per std; never pass/fail.

    python bench/noise_lift.py                       # stds 0.37 (PPOCfg.init_log_std -1), 0.22, 0.135
    python bench/noise_lift.py --stds 0.37,0,0,0     # thrust only (CTBR: thrust, roll, pitch, yaw rate)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.tasks import make_env  # noqa: E402
from tether.presets import GRAVITY  # noqa: E402


def lift_over_weight(stds: list[float], num_envs: int, steps: int, settle: int, seed: int) -> float:
    """Mean total thrust / weight over envs and the steps after ``settle``, noise ``stds`` per action."""
    env = make_env("hover", num_envs=num_envs, seed=seed, physics="eager")
    env.reset()
    gen = torch.Generator().manual_seed(seed + 1)
    std = torch.tensor(stds)
    ratios = []
    for t in range(steps):
        env.step(env.hover_action + torch.randn(num_envs, env.cfg.action_dim, generator=gen) * std)
        p, s = env.params, env.state
        if t >= settle:
            thrust = (p.kf * p.rotor_gain * s.rotor_rpm.square()).sum(-1)
            ratios.append(thrust / (p.mass.squeeze(-1) * GRAVITY))
    return float(torch.stack(ratios).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stds", nargs="+", default=["0.37", "0.22", "0.135", "0.37,0,0,0", "0,0.37,0.37,0.37"],
                    help="one std for every action, or one per action separated by commas")
    ap.add_argument("--num-envs", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=15, help="control steps (short: the vehicles drift)")
    ap.add_argument("--settle", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    act_dim = make_env("hover", num_envs=1, physics="eager").cfg.action_dim
    base = lift_over_weight([0.0] * act_dim, args.num_envs, args.steps, args.settle, args.seed)
    print(f"noise_lift: {args.num_envs} hover envs, load {os.getloadavg()[0]:.1f}; no noise: lift/weight {base:.4f}")
    for item in args.stds:
        stds = [float(v) for v in item.split(",")]
        stds = stds * act_dim if len(stds) == 1 else stds
        if len(stds) != act_dim:
            raise SystemExit(f"error: --stds {item}: give 1 or {act_dim} values")
        ratio = lift_over_weight(stds, args.num_envs, args.steps, args.settle, args.seed)
        print(f"  std {stds}: lift/weight {ratio:.4f}, {100 * (ratio - base):+.2f} % of the weight")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
