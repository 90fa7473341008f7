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
    p.add_argument("--png", help="also draw the top view of 6 unseen fields at the largest --obstacles count with "
                                 "the teacher's paths into this PNG")
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
    if args.png:
        draw_paths(policy, cfg, max(args.obstacles), args.seed + max(args.obstacles), Path(args.png))
        print(f"top view: {args.png}")
    return 0


def draw_paths(policy, cfg, num_obstacles: int, seed: int, out: Path, num_fields: int = 6) -> None:
    """Top view of the first episode on each of ``num_fields`` fields (the first of evaluate_fields'):
    obstacles, start, goal, path; the path's colour says how it ended."""
    import dataclasses

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle
    from matplotlib.transforms import Affine2D

    from sim.tasks.navigate import NavigateEnv
    from sim.tasks.run_cfg import RunCfg

    cfg = dataclasses.replace(cfg, num_obstacles=(num_obstacles, num_obstacles), curriculum_levels=0,
                              curriculum_start_level=0, curriculum_auto=False)
    env = NavigateEnv(cfg, RunCfg(num_envs=num_fields, seed=seed))
    groups = env.reset()
    field = [t.clone() for t in (env.field.cylinders, env.field.cylinder_valid, env.field.boxes, env.field.box_valid)]
    start, goal = env.start_w.clone(), env.goal_w.clone()
    paths, ends = [[p] for p in env.state.pos_w.clone()], [None] * num_fields
    with torch.no_grad():
        for _ in range(cfg.max_episode_steps):
            groups, _, terminated, truncated, info = env.step(policy(groups))
            for i in range(num_fields):
                if ends[i] is not None:
                    continue
                if bool(terminated[i] | truncated[i]):  # reset at once: the path ends at the last position
                    ends[i] = ("success" if info["success"][i] else "collision" if info["collided"][i]
                               else "out of bounds" if info["crashed"][i] else "time-out")
                else:
                    paths[i].append(env.state.pos_w[i].clone())
            if all(e is not None for e in ends):
                break
    ends = [e or "time-out" for e in ends]
    colour = {"success": "tab:green", "collision": "tab:red", "out of bounds": "tab:orange", "time-out": "tab:gray"}
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    for i, ax in enumerate(axes.flat[:num_fields]):
        cyl, cv, box, bv = (t[i] for t in field)
        for c in cyl[cv]:
            ax.add_patch(Circle((float(c[0]), float(c[1])), float(c[4]), color="0.35"))
        for b in box[bv]:
            rect = Rectangle((-float(b[3]), -float(b[4])), 2 * float(b[3]), 2 * float(b[4]), color="0.35")
            rect.set_transform(Affine2D().rotate(float(b[6])).translate(float(b[0]), float(b[1])) + ax.transData)
            ax.add_patch(rect)
        xy = torch.stack(paths[i])[:, :2]
        ax.plot(xy[:, 0], xy[:, 1], color=colour[ends[i]], lw=2)
        ax.plot(*start[i, :2].tolist(), "ko")
        ax.add_patch(Circle(tuple(goal[i, :2].tolist()), cfg.success_tol_m, fill=False, color="tab:blue", lw=2))
        ax.set_aspect("equal")
        ax.set_title(f"field {i}: {ends[i]}", fontsize=10)
        ax.autoscale_view()
    fig.suptitle(f"navigate teacher, {num_obstacles} obstacles, unseen fields (seed {seed}); start o, goal circle")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
