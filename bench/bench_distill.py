"""Distillation bench (issue 11 item 4): DAgger from a privileged navigate teacher into the depth student,
with the figures that decide between distillation and end-to-end PPO on depth.

Prints and writes OUT/bench_distill.json + OUT/bench_distill.png:
- env-steps/s of navigate without and with the depth camera (the teacher's and the student's cost per
  step), teacher actions, --throughput-envs envs;
- the teacher's own success at each density over --fields unseen fields (the student's ceiling);
- the student's training time and its success at each density (default 16 and 32 obstacles) over the
  same unseen fields, at every --eval-every iterations (success against training time);
- the machine (CPU model, cores, torch threads) and its load (os.getloadavg) beside every figure.

    .venv/bin/python bench/bench_distill.py --teacher artifacts/navigate/teacher_v1 --out /tmp/bench_distill

End to end (PPO on depth, no teacher) would need at least the env steps the teacher needed, every one
rendered: the JSON states that lower bound from the teacher checkpoint's global_step and the measured
rendering rate (``end_to_end_lower_bound_s``), beside the DAgger time measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from policies.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from policies.distill import CheckpointTeacher, DistillCfg, distill, student_from_checkpoint  # noqa: E402
from policies.export import env_from_checkpoint  # noqa: E402
from sim.tasks import task_cfg_from_dict  # noqa: E402
from sim.tasks.navigate import evaluate_fields  # noqa: E402


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@torch.no_grad()
def env_steps_per_s(ckpt: dict, teacher, num_envs: int, steps: int, render: bool, level: int) -> float:
    env = env_from_checkpoint(ckpt, num_envs=num_envs, seed=7, render_depth=render, curriculum_start_level=level,
                              curriculum_auto=False)
    obs = env.reset()
    obs = env.step(teacher(obs))[0]  # first step outside the clock (allocations)
    t0 = time.perf_counter()
    for _ in range(steps):
        obs = env.step(teacher(obs))[0]
    return num_envs * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, type=Path, help="teacher run folder or model_*.pt")
    ap.add_argument("--out", required=True, type=Path, help="folder for the student run and the figures")
    ap.add_argument("--iterations", type=int, default=60, help="DAgger iterations")
    ap.add_argument("--num-envs", type=int, default=64, help="rendering envs of the DAgger rollouts")
    ap.add_argument("--eval-every", type=int, default=20, help="iterations between evaluations at each density")
    ap.add_argument("--densities", type=int, nargs="+", default=[16, 32], help="obstacle counts evaluated")
    ap.add_argument("--fields", type=int, default=100, help="unseen fields per density")
    ap.add_argument("--field-seed", type=int, default=424242, help="seed of the unseen fields (never trained on)")
    ap.add_argument("--level", type=int, default=None, help="curriculum level of the DAgger fields (default: top)")
    ap.add_argument("--throughput-envs", type=int, default=64, help="envs of the env-steps/s measurement")
    ap.add_argument("--throughput-steps", type=int, default=20, help="steps of the env-steps/s measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--force", action="store_true", help="replace a previous bench run in --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    teacher_path = latest_checkpoint(args.teacher) if args.teacher.is_dir() else args.teacher
    ckpt = load_checkpoint(teacher_path, task="navigate")
    teacher = CheckpointTeacher(ckpt)
    top = ckpt["task_cfg"]["curriculum_levels"]
    level = top if args.level is None else args.level
    report: dict = {"machine": machine(), "teacher": {"checkpoint": str(teacher_path), "iteration": ckpt["iteration"],
                                                      "global_step": ckpt["global_step"],
                                                      "train_time_s": ckpt["train_time_s"]}}
    print(f"machine: {report['machine']}; load {load()}", flush=True)

    # ---- env-steps/s without / with the camera
    rate = {}
    for render in (False, True):
        rate[render] = env_steps_per_s(ckpt, teacher, args.throughput_envs, args.throughput_steps, render, top)
        print(f"navigate env-steps/s, {args.throughput_envs} envs, top density, render_depth={render}: "
              f"{rate[render]:.0f} (load {load()})", flush=True)
    report["env_steps_per_s"] = {"no_render": rate[False], "render": rate[True], "num_envs": args.throughput_envs,
                                 "load": load()}

    # ---- the teacher on the unseen fields: the student's ceiling
    cfg_nav = task_cfg_from_dict("navigate", ckpt["task_cfg"])
    render_cfg = dataclasses.replace(cfg_nav, render_depth=True)
    report["teacher"]["success"] = {}
    for n_obs in args.densities:
        t0 = time.perf_counter()
        r = evaluate_fields(teacher, cfg_nav, n_obs, args.fields, args.field_seed)
        report["teacher"]["success"][n_obs] = r
        print(f"teacher @ {n_obs} obstacles, {args.fields} unseen fields: success {r['success']:.2f} collision "
              f"{r['collision']:.2f} timeout {r['timeout']:.2f} ({time.perf_counter() - t0:.0f} s, load {load()})",
              flush=True)

    # ---- DAgger, evaluated along the way at each density
    env = env_from_checkpoint(ckpt, num_envs=args.num_envs, seed=0, render_depth=True, curriculum_start_level=level)
    cfg = DistillCfg(num_iterations=args.iterations, save_interval=args.eval_every, eval_interval=0)
    curve: list[dict] = []
    distill(env, teacher, "navigate", cfg, args.out, teacher_info=report["teacher"], force=args.force,
            progress=sys.stderr.isatty(), on_iteration=lambda i, logs: curve.append(logs))
    points = []
    for path in sorted(args.out.glob("model_*.pt")):
        sck = torch.load(path, weights_only=True)
        student = student_from_checkpoint(sck)

        def act(groups, student=student):
            return student.act_mean(groups["policy"], groups["depth"]).clamp(-1.0, 1.0)

        point = {"iteration": sck["iteration"], "train_time_s": sck["train_time_s"], "env_steps": sck["global_step"],
                 "success": {}}
        for n_obs in args.densities:
            r = evaluate_fields(act, render_cfg, n_obs, args.fields, args.field_seed)
            point["success"][n_obs] = r
            print(f"student it {sck['iteration']} ({sck['train_time_s'] / 60:.1f} min, {sck['global_step']} rendered "
                  f"steps) @ {n_obs} obstacles: success {r['success']:.2f} collision {r['collision']:.2f} timeout "
                  f"{r['timeout']:.2f} (load {load()})", flush=True)
        points.append(point)
    report["student"] = {"points": points, "num_envs": args.num_envs, "level": level,
                         "distill_cfg": dataclasses.asdict(cfg), "curve": curve}
    report["end_to_end_lower_bound_s"] = ckpt["global_step"] / rate[True]
    report["dagger_train_time_s"] = curve[-1]["charts/train_time_s"]
    print(f"end to end on depth needs >= the teacher's {ckpt['global_step']} env steps, all rendered: >= "
          f"{report['end_to_end_lower_bound_s'] / 60:.0f} min at {rate[True]:.0f} env-steps/s (no CNN update "
          f"counted); DAgger trained in {report['dagger_train_time_s'] / 60:.1f} min on "
          f"{curve[-1]['charts/env_steps']:.0f} rendered steps", flush=True)
    report["load_end"] = load()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distill.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(report, args.out / "bench_distill.png", args.densities)
    print(f"wrote {args.out / 'bench_distill.json'} and {args.out / 'bench_distill.png'}")
    return 0


def plot(report: dict, path: Path, densities: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    curve = report["student"]["curve"]
    ax0.semilogy([c["charts/train_time_s"] / 60 for c in curve], [c["losses/imitation"] for c in curve])
    ax0.set(xlabel="DAgger training time [min]", ylabel="imitation MSE", title="loss on the aggregate")
    for n_obs in densities:
        pts = report["student"]["points"]
        line, = ax1.plot([p["train_time_s"] / 60 for p in pts], [p["success"][n_obs]["success"] for p in pts], "o-",
                         label=f"student, {n_obs} obstacles")
        ax1.axhline(report["teacher"]["success"][n_obs]["success"], color=line.get_color(), ls="--",
                    label=f"teacher, {n_obs} obstacles")
    ax1.axhline(0.9, color="k", lw=0.5)
    ax1.axhline(0.8, color="k", lw=0.5)
    ax1.set(xlabel="DAgger training time [min]", ylabel="success (unseen fields)", ylim=(0, 1.02))
    ax1.legend(fontsize=7, loc="best")
    m = report["machine"]
    fig.suptitle(f"DAgger navigate: {m['cpu']}, {m['torch_threads']} thread(s), load {report['load_end']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
