"""``tether distill``: a privileged PPO teacher (``tether train navigate``) -> a depth student by DAgger
(policies.distill), exported as policy.onnx + policy.json (contract 2.1, the depth image an input).

    tether train navigate --run-dir artifacts/runs/nav_teacher
    tether distill --teacher artifacts/runs/nav_teacher --out artifacts/runs/nav_student

OUT holds the student's checkpoints (model_*.pt, run.json), distill.json (config, teacher, curves,
final evaluation), distill.png (imitation loss and success against training time) and policy/ (the
exported student) unless --no-export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

DISTILL_OUTPUTS = ("model_*.pt", "model_*.pt.tmp", "run.json", "distill.json", "distill.png", "tb", "policy")
"""what `tether distill` writes into OUT; --force removes exactly these"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("distill", help="distill a privileged PPO teacher into a depth student (DAgger) "
                                              "and export it", description=__doc__)
    p.add_argument("--teacher", required=True, type=Path,
                   help="the teacher: a `tether train` run folder (its latest checkpoint) or a model_*.pt file")
    p.add_argument("--out", required=True, type=Path, help="folder for the student (new or empty, or --force)")
    p.add_argument("--iterations", type=int, default=None, help="DAgger iterations (default: DistillCfg's, 150)")
    p.add_argument("--num-envs", type=int, default=64, help="parallel rendering environments")
    p.add_argument("--eval-envs", type=int, default=32,
                   help="unseen fields of each periodic evaluation (one rendered episode each: on a CPU ~2 min at 32; "
                        "bench/bench_distill.py judges 100 per density)")
    p.add_argument("--level", type=int, default=None,
                   help="curriculum level of the fields (default: the task's top level, the full density range; "
                        "the teacher flies it already, so the student needs no curriculum)")
    p.add_argument("--eval-interval", type=int, default=None,
                   help="iterations between evaluations on --eval-envs unseen fields (default: DistillCfg's, 25; "
                        "0: only rollout statistics)")
    p.add_argument("--beta-decay", type=float, default=None, help="DistillCfg.beta_decay (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the student, its rollouts and the env")
    p.add_argument("--device", default="cpu", help="torch device, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-export", action="store_true", help="stop after training (export later: `tether distill` "
                                                             "writes OUT/policy by default)")
    p.add_argument("--force", action="store_true", help="replace a previous distillation in OUT (only its files)")
    p.set_defaults(func=run)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _check_args(args) -> None:
    from tether.errors import UserError

    for name in ("num_envs", "eval_envs", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if not args.teacher.exists():
        raise UserError(f"--teacher {args.teacher} does not exist; give the run folder `tether train navigate` "
                        "wrote (or one of its model_*.pt files)")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the student")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise UserError(f"--out {args.out} is not empty; pass --force to replace the distillation in it, or give "
                        "another folder")


def _load_teacher(path: Path) -> tuple[Path, dict]:
    from policies.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
    from policies.distill import STUDENT_KIND
    from tether.errors import UserError

    try:
        ckpt_path = latest_checkpoint(path) if path.is_dir() else path
        ckpt = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise UserError(f"--teacher: {_one_line(e)}") from e
    if ckpt.get("kind") == STUDENT_KIND:
        raise UserError(f"--teacher {ckpt_path} is a distilled student; give the PPO teacher it came from "
                        f"({ckpt.get('teacher', {}).get('checkpoint', 'a `tether train navigate` run')})")
    from sim.tasks import TASKS

    def renders(task: str) -> bool:
        return task in TASKS and "render_depth" in {f.name for f in dataclasses.fields(TASKS[task][0])}

    if not renders(ckpt["task"]):
        tasks = ", ".join(repr(n) for n in sorted(TASKS) if renders(n))
        raise UserError(f"--teacher {ckpt_path} was trained on task {ckpt['task']!r}, which has no depth camera; "
                        f"give a teacher of {tasks} (`tether train navigate`)")
    return Path(ckpt_path), ckpt


def _clear(out: Path) -> None:
    for pattern in DISTILL_OUTPUTS:
        for p in out.glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def plot_curves(curve: list[dict], path: Path, title: str) -> Path:
    """distill.png: imitation loss, and the student's success (evaluation and rollouts), against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_min = [c["charts/train_time_s"] / 60 for c in curve]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax0.semilogy(t_min, [c["losses/imitation"] for c in curve])
    ax0.set(xlabel="training time [min]", ylabel="imitation MSE", title="loss on the aggregate")
    ev = [(t, c["eval/success_rate"]) for t, c in zip(t_min, curve) if "eval/success_rate" in c]
    ro = [(t, c["rollout/success_rate"]) for t, c in zip(t_min, curve) if "rollout/success_rate" in c]
    if ro:
        ax1.plot(*zip(*ro), ".", alpha=0.4, label="rollouts (teacher w.p. beta)")
    if ev:
        ax1.plot(*zip(*ev), "o-", label="student alone, unseen fields")
    ax1.set(xlabel="training time [min]", ylabel="success rate", ylim=(0, 1.02), title="success")
    ax1.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args) -> int:
    import torch

    from policies.distill import CheckpointTeacher, DistillCfg, distill, export_student
    from policies.export import env_from_checkpoint
    from tether.config import config_to_dict
    from tether.errors import CommandFailed, UserError

    _check_args(args)
    teacher_path, ckpt = _load_teacher(args.teacher)
    torch.set_num_threads(args.threads)
    cfg = DistillCfg(seed=args.seed)
    try:
        if args.iterations is not None:
            cfg = dataclasses.replace(cfg, num_iterations=args.iterations)
        if args.eval_interval is not None:
            cfg = dataclasses.replace(cfg, eval_interval=args.eval_interval)
        if args.beta_decay is not None:
            cfg = dataclasses.replace(cfg, beta_decay=args.beta_decay)
    except ValueError as e:
        raise UserError(_one_line(e)) from e
    top = ckpt["task_cfg"].get("curriculum_levels", 0)
    level = top if args.level is None else args.level
    if not 0 <= level <= top:
        raise UserError(f"--level must be in 0..{top} (the task's curriculum levels), got {level}")
    common = dict(render_depth=True, curriculum_start_level=level, device=args.device)
    try:
        env = env_from_checkpoint(ckpt, num_envs=args.num_envs, seed=args.seed, **common)
        # unseen fields: another seed, the level held where the training env is (distill sets it)
        eval_env = env_from_checkpoint(ckpt, num_envs=args.eval_envs, seed=args.seed + 100_000,
                                       curriculum_auto=False, **common)
    except (ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"--teacher {teacher_path}: its task cannot be rebuilt here ({_one_line(e)})") from e
    teacher = CheckpointTeacher(ckpt).to(env.device)
    if args.force and args.out.is_dir():
        _clear(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher_info = {"checkpoint": str(teacher_path.resolve()), "run_id": ckpt.get("run_id"),
                    "iteration": ckpt["iteration"], "train_time_s": ckpt["train_time_s"],
                    "config_hash": ckpt["config_hash"], "groups": list(teacher.groups)}
    curve: list[dict] = []
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(args.out / "tb"))
    try:
        last = distill(env, teacher, ckpt["task"], cfg, args.out, eval_env=eval_env, teacher_info=teacher_info,
                       writer=writer, force=args.force, progress=sys.stderr.isatty(), on_iteration=lambda i, logs: curve.append(logs))
    finally:
        writer.close()
    final = curve[-1]
    summary = {"teacher": teacher_info, "distill_cfg": config_to_dict(cfg), "num_envs": args.num_envs,
               "level": level, "checkpoint": str(last), "final": final, "curve": curve}
    (args.out / "distill.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_curves(curve, args.out / "distill.png", f"DAgger {ckpt['task']}: {args.num_envs} envs, level {level}")
    print(f"student: {last} (teacher {teacher_path}); imitation MSE {final['losses/imitation']:.4g}, "
          f"success on {args.eval_envs} unseen fields {final.get('eval/success_rate', float('nan')):.2f}, "
          f"{final['charts/train_time_s'] / 60:.1f} min; curves: {args.out / 'distill.png'}")
    if not args.no_export:
        try:
            out_dir, contract, err = export_student(last, args.out / "policy", overwrite=args.force)
        except RuntimeError as e:  # the ONNX parity check
            raise CommandFailed(_one_line(e)) from e
        print(f"exported -> {out_dir}/policy.onnx + policy.json (inputs {list(contract.input_names)}, "
              f"action {contract.action.type}x{contract.action.dim}); ONNX parity max |diff| = {err:.2e}")
    return 0
