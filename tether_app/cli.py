"""`tether` command line: train, export, eval, demo, and the subcommands of other stages
(calibrate, deploy) registered by their own modules. Errors in user input end with one clear line."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tether.command_line import ArgumentParser, run

# Subcommands owned by other stages: each module provides add_parser(subparsers). Imported lazily so
# that `tether train` does not need rclpy and `tether deploy` does not need torch.
EXTERNAL_COMMANDS = {"calibrate": "calibration.cli", "deploy": "tether.deploy", "finetune": "policies.hil.cli",
                     "operate": "tether.operate", "distill": "policies.distill_cli"}  # adds estop, policy, lifecycle, status


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    from tether.errors import UserError

    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(e).split())}); "
                            "write lists as [1.0, 2.0] and NaN/Inf as .nan/.inf") from e
    return out


def _task_cfg(task: str, config: str | None, overrides: dict):
    """(task config, run-setting overrides) from --config and --set: run keys (num_envs, device, seed,
    physics, threads; the old task key compile) go to the run, never into the task config (issue 13)."""
    import yaml

    from sim.tasks import TASKS
    from sim.tasks.run_cfg import split_run_keys
    from tether.config import config_from_dict, config_to_dict
    from tether.errors import UserError

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; registered tasks: {', '.join(sorted(TASKS))}")
    cfg_cls, _ = TASKS[task]
    if config and not Path(config).is_file():
        raise UserError(f"--config {config} does not exist (or is not a file); give a YAML file of {task} config keys")
    data = {}
    if config:
        try:
            data = yaml.safe_load(Path(config).read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{config}: not valid YAML ({_one_line(e)})") from e
        except (UnicodeDecodeError, OSError) as e:
            raise UserError(f"{config}: not a readable YAML text file ({_one_line(e)})") from e
        if not isinstance(data, dict):
            raise UserError(f"{config}: expected a mapping of config keys, got {type(data).__name__}")
    file_task, file_run = split_run_keys(data)
    task_over, run_over = split_run_keys(overrides)
    try:
        base = config_to_dict(cfg_cls())
        base.update({**file_task, **task_over})
        return config_from_dict(cfg_cls, base, where=config or f"{task} config"), {**file_run, **run_over}
    except (ValueError, OSError) as e:
        raise UserError(_one_line(e)) from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _calibrated(cfg, path: str, k: float):
    """The vehicle identified in a calibration file, with randomization ranges from its uncertainty."""
    import dataclasses

    from calibration.files import load_calibration
    from calibration.to_sim import preset_and_randomization
    from tether.errors import UserError

    try:
        calib = load_calibration(path)
        vehicle, randomization = preset_and_randomization(calib, cfg.vehicle, k=k,
                                                          base_randomization=cfg.randomization)
        return dataclasses.replace(cfg, vehicle_params=vehicle, randomization=randomization)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise UserError(f"--calibration {path}: {_one_line(e)}") from e


def _at_least(flag: str, value, low) -> None:
    """0 is a value: an option given as 0 is checked like any other, never taken for 'not given'."""
    from tether.errors import UserError

    if value is not None and value < low:
        raise UserError(f"{flag} must be >= {low}, got {value}")


def _finite_positive(flag: str, value) -> None:
    import math

    from tether.errors import UserError

    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} must be a finite number > 0, got {value}")


def _check_device(device: str) -> None:
    """A device torch has here; `cuda` on a CPU-only build is one line, not a traceback at the first tensor."""
    import torch

    from tether.errors import UserError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"--device {device!r} is not a torch device ({_one_line(e)}); use cpu or cuda[:N]") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device; use "
                            "--device cpu, or a CUDA build of torch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {device}: this torch sees no Apple MPS device; use --device cpu")
    elif dev.type != "cpu":
        raise UserError(f"--device {device}: device type {dev.type!r} is not supported; use cpu or cuda[:N]")


def _listing(folder: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _refuse_file(path: Path, flag: str) -> None:
    from tether.errors import UserError

    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; give a folder (a new one, or --force for a "
                        "non-empty one)")


def _resolve_checkpoint(path: str, flag: str, skipped: list[Path] | None = None) -> Path:
    """A checkpoint file, or a run folder's latest checkpoint of its own run (run.json)."""
    from policies.checkpoint import CheckpointError, latest_checkpoint
    from tether.errors import UserError

    p = Path(path)
    if not p.exists():
        if p.suffix == ".pt":
            raise UserError(f"checkpoint {p} does not exist; give a model_*.pt file or the run folder that "
                            "`tether train` wrote")
        raise UserError(f"{flag} {p} does not exist; give the run folder that `tether train` wrote (or one of "
                        "its model_*.pt files)")
    try:
        return latest_checkpoint(p, skipped) if p.is_dir() else p
    except CheckpointError as e:
        raise UserError(_one_line(e)) from e


# The files `tether train` writes into a run folder; --force removes exactly these, so that nothing of
# the old run (a higher-numbered checkpoint, a second TensorBoard history) stays behind.
RUN_OUTPUTS = ("model_*.pt", "model_*.pt.tmp", "tb", "config.yaml", "randomization.yaml", "run.json")


def _clear_run(run_dir: Path) -> None:
    import shutil

    for pattern in RUN_OUTPUTS:
        for p in run_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _run_cfg(args, run_over: dict):
    """The run settings of `tether train`: the task's defaults, then --config / --set run keys, then the
    flags (--num-envs, --device, --seed, --physics, --threads)."""
    import dataclasses

    from sim.tasks.run_cfg import RunCfg, run_defaults
    from tether.config import config_from_dict, config_to_dict
    from tether.errors import UserError

    flags = {"num_envs": args.num_envs, "device": args.device, "seed": args.seed, "physics": args.physics,
             "threads": args.threads}
    merged = {**config_to_dict(run_defaults(args.task)), **run_over,
              **{k: v for k, v in flags.items() if v is not None}}
    try:
        run = config_from_dict(RunCfg, merged, where="run")
    except ValueError as e:
        raise UserError(_one_line(e)) from e
    return run if run.threads is not None else dataclasses.replace(run, threads=1)


def cmd_train(args) -> int:
    """One process, or rank RANK of a data-parallel run (torchrun's environment), or --nproc N local ranks."""
    import os

    from policies import distributed as ddp
    from tether.errors import CommandFailed, UserError

    _at_least("--nproc", args.nproc, 1)
    if not ddp.in_distributed_launch():
        return _train(args) if args.nproc == 1 else _launch_ranks(args)
    try:
        return _train(args)
    except (UserError, CommandFailed) as e:
        if int(os.environ.get("RANK", "0")) != 0:  # every rank checks the same: rank 0 alone says it
            raise SystemExit(e.exit_code) from e
        raise
    finally:
        ddp.shutdown()


def _launch_ranks(args) -> int:
    """`tether train ... --nproc N`: N local processes, each `tether train` with torchrun's environment."""
    from policies import distributed as ddp
    from tether.errors import EXIT_USAGE, CommandFailed

    argv, skip = [], False
    for a in _ARGV:  # the same command line without --nproc
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    status, why = ddp.launch_local(["-m", "tether_app.cli", *argv], args.nproc)
    if why is not None and status != EXIT_USAGE:  # a user error was said by rank 0 already
        # the ranks share this stderr, and rank 0's progress bar was cut mid-line (it redraws with \r and
        # ends its line only when it closes): the error must start a line of its own
        sys.stderr.write("\n")
        raise CommandFailed(f"{why}; the other ranks were stopped; resume the run with `tether train {args.task} "
                            f"--resume <its run folder>` (any --nproc)")
    return status


def _train(args) -> int:
    from tether.errors import CommandFailed, UserError

    _at_least("--num-envs", args.num_envs, 1)
    _at_least("--iterations", args.iterations, 1)
    _at_least("--threads", args.threads, 1)
    _finite_positive("--calibration-k", args.calibration_k)
    import torch

    from policies.checkpoint import CheckpointError, load_checkpoint
    from policies.ppo import PPOCfg, group_widths, ppo_defaults, train
    from sim.tasks import make_env
    from tether.config import config_from_dict, config_to_dict

    overrides = _parse_overrides(args.set)
    ppo_over = {k[4:]: overrides.pop(k) for k in list(overrides) if k.startswith("ppo.")}
    cfg, run_over = _task_cfg(args.task, args.config, overrides)
    run = _run_cfg(args, run_over)
    torch.set_num_threads(run.threads)
    import dataclasses

    from policies import distributed as ddp

    ctx = None
    if ddp.in_distributed_launch():  # each rank: its own device (cuda -> cuda:LOCAL_RANK) and seed
        _check_device(run.device)
        ctx = ddp.init_from_env(run.device)
        run = dataclasses.replace(run, device=ddp.rank_device(run.device, ctx.local_rank),
                                  seed=ddp.rank_seed(run.seed, ctx.rank))
    if args.calibration:
        cfg = _calibrated(cfg, args.calibration, args.calibration_k)
    if args.iterations is not None:
        ppo_over["num_iterations"] = args.iterations
    ppo_over.setdefault("seed", args.seed)
    try:
        ppo = config_from_dict(PPOCfg, {**config_to_dict(ppo_defaults(args.task)), **ppo_over}, where="ppo")
    except ValueError as e:
        raise UserError(_one_line(e)) from e
    _check_device(run.device)

    resume = _resolve_checkpoint(args.resume, "--resume") if args.resume else None
    resume_dir = None if resume is None else (Path(args.resume) if Path(args.resume).is_dir() else resume.parent)
    run_dir = Path(args.run_dir or (resume_dir if resume_dir is not None else f"artifacts/runs/{args.task}_seed{ppo.seed}"))
    _refuse_file(run_dir, "--run-dir")
    continuing = resume_dir is not None and run_dir.resolve() == resume_dir.resolve()
    if continuing and args.force:
        raise UserError(f"--force would delete the checkpoints of {run_dir} that --resume continues from; "
                        "drop --force, or give a new --run-dir")
    if _is_non_empty_dir(run_dir) and not continuing and not args.force:
        raise UserError(f"run folder {run_dir} is not empty ({_listing(run_dir)}); pass --resume {run_dir} to "
                        "continue its run, --force to replace it, or another --run-dir")
    try:
        env = make_env(args.task, cfg, run)
    except (ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{args.task} config: {_one_line(e)}") from e
    if env.num_envs * ppo.num_steps < ppo.num_minibatches:
        raise UserError(f"ppo.num_minibatches {ppo.num_minibatches} > the {env.num_envs * ppo.num_steps} samples "
                        f"of a rollout ({env.num_envs} envs x {ppo.num_steps} steps); use more envs or fewer minibatches")
    try:  # the observation groups ppo.actor_groups (and critic_groups) name, with their widths (the env draws from its own generator)
        first_obs = env.reset()
        widths = group_widths(first_obs, ppo.actor_groups)
        group_widths(first_obs, ppo.value_groups, "critic_groups")
    except ValueError as e:
        raise UserError(_one_line(e)) from e
    if resume is not None:
        try:
            ckpt = load_checkpoint(resume, task=args.task, obs_dim=env.obs_dim, action_dim=cfg.action_dim,
                                   action_space=cfg.action_space, obs_groups=widths)
        except CheckpointError as e:
            raise UserError(f"--resume: {_one_line(e)}") from e
        if ckpt["iteration"] >= ppo.num_iterations:
            raise UserError(f"--resume: {resume} is at iteration {ckpt['iteration']} already; pass --iterations "
                            f"> {ckpt['iteration']} (the total) to continue it")
        for key in ("actor_hidden", "critic_hidden"):
            if tuple(ckpt["ppo_cfg"][key]) != tuple(getattr(ppo, key)):
                raise UserError(f"--resume: {resume} has ppo.{key} {list(ckpt['ppo_cfg'][key])}, this run "
                                f"{list(getattr(ppo, key))}; a resumed run keeps its network")
        # continuing in its own folder must not overwrite checkpoints already there (resumed from an
        # earlier one than the latest, or a stale one of another run)
        start = ckpt["iteration"]
        taken = [run_dir / f"model_{i:05d}.pt" for i in range(start + 1, ppo.num_iterations + 1)
                 if (i % ppo.save_interval == 0 or i == ppo.num_iterations) and (run_dir / f"model_{i:05d}.pt").exists()]
        if taken:
            raise UserError(f"--resume: continuing {resume} (iteration {start}) would overwrite "
                            f"{', '.join(p.name for p in taken[:3])} in {run_dir}; resume the folder (its latest "
                            "checkpoint) or give a new --run-dir")

    # Every check passed: from here on files are written, by rank 0 alone (the others wait for it)
    ddp.barrier(ctx)
    if ctx is not None and not ctx.is_main:
        ddp.barrier(ctx)
        try:
            train(env, args.task, ppo, run_dir, resume=resume, progress=False, dist_ctx=ctx)
        except ddp.RankFailure as e:
            raise CommandFailed(_one_line(e)) from e
        return 0
    if args.force and run_dir.is_dir():
        _clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    (run_dir / "config.yaml").write_text(yaml.safe_dump({"task": args.task, "task_cfg": config_to_dict(cfg),
                                                         "ppo": config_to_dict(ppo), "run": config_to_dict(env.run)},
                                                        sort_keys=False))
    (run_dir / "randomization.yaml").write_text(yaml.safe_dump(config_to_dict(cfg.randomization), sort_keys=False))
    writer = SummaryWriter(str(run_dir / "tb"))
    ddp.barrier(ctx)
    try:
        ckpt_path = train(env, args.task, ppo, run_dir, resume=resume, writer=writer, dist_ctx=ctx)
    except CheckpointError as e:
        raise UserError(_one_line(e)) from e
    except ddp.RankFailure as e:
        raise CommandFailed(_one_line(e)) from e
    finally:
        writer.close()
    print(f"checkpoint: {ckpt_path}")
    from policies.select import SELECTION, select_best

    if args.task in SELECTION:  # checkpoints of a vehicle-class task swing: keep the best on held-out vehicles
        best = select_best(run_dir, SELECTION[args.task])
        print(f"best checkpoint by evaluation on held-out class vehicles: {best} ({run_dir / 'best.json'})")
    return 0


def cmd_export(args) -> int:
    from tether.errors import CommandFailed, UserError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for policy.onnx + policy.json")
    if _is_non_empty_dir(out) and not args.force:
        raise UserError(f"--out {out} is not empty ({_listing(out)}); pass --force to replace the policy in it, "
                        "or give another folder")
    if args.onboard == "c":
        from policies.export_c import COMPILERS, find_compiler
        if find_compiler() is None:
            raise UserError(f"--onboard c needs a C compiler to check the C against onnxruntime and none is on PATH "
                            f"($CC, {', '.join(COMPILERS)}); install one (apt install gcc) or drop --onboard")
    from policies.checkpoint import CheckpointError, load_checkpoint, read_run_id
    from policies.export import export_policy

    from policies.select import best_checkpoint

    skipped: list[Path] = []
    try:  # a run folder whose checkpoints were selected by evaluation (policies.select): its best one
        best = None if args.latest or not Path(args.checkpoint).is_dir() else best_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise UserError(_one_line(e)) from e
    ckpt = best or _resolve_checkpoint(args.checkpoint, "checkpoint", skipped)
    if best is not None:
        print(f"best checkpoint by evaluation ({Path(args.checkpoint) / 'best.json'}; --latest for the last one)")
    try:
        info = load_checkpoint(ckpt)
        if Path(args.checkpoint).is_dir():
            run_id = read_run_id(args.checkpoint)
            if run_id is not None and info.get("run_id") != run_id:  # latest_checkpoint guarantees it; say so
                raise CheckpointError(f"{ckpt} is not of run {run_id}")
        out_dir, contract, err = export_policy(ckpt, out, overwrite=True)
    except (CheckpointError, ValueError, KeyError) as e:
        raise UserError(_one_line(e)) from e
    except RuntimeError as e:  # the ONNX parity check
        raise CommandFailed(_one_line(e)) from e
    run = info.get("run_id") or "unknown (a checkpoint written before run ids)"
    print(f"checkpoint: {ckpt} (iteration {info['iteration']}, run {run})")
    if skipped:
        print(f"passed over {len(skipped)} checkpoint(s) of another run in {args.checkpoint}: "
              f"{', '.join(p.name for p in skipped[:4])}")
    print(f"exported -> {out_dir}/policy.onnx + policy.json (obs {contract.obs_dim}, "
          f"action {contract.action.type}x{contract.action.dim}, {contract.control_rate_hz:g} Hz); "
          f"ONNX parity max |diff| = {err:.2e}")
    if args.onboard == "c":
        from policies.export_c import OnboardError, export_c

        try:  # out_dir was new, empty or --force: onboard/ is replaced only with --force
            onb = export_c(out_dir, out_dir / "onboard", force=args.force)
        except FileExistsError as e:
            raise UserError(f"{_one_line(e)}; pass --force") from e
        except OnboardError as e:
            raise CommandFailed(_one_line(e)) from e
        print(f"onboard C -> {onb.c_path} + {onb.h_path.name}; max |C - onnxruntime| = {onb.max_abs_err:.2e} "
              f"on {onb.n_checked} observations ({onb.compiler})")
    return 0


EVAL_OUTPUTS = ("report.json", "eval*.png", "sweep*.png", "rollout_*.mp4", "rollout_*.npz")


def _fresh_eval_out(out: Path, force: bool) -> None:
    """Create the eval folder; with --force remove what an earlier eval or sweep wrote there (only that)."""
    out.mkdir(parents=True, exist_ok=True)
    if force:
        for pattern in EVAL_OUTPUTS:
            for f in out.glob(pattern):
                f.unlink()


def _eval_out(args) -> Path:
    """--out, or `<policy>_eval` beside the (first) policy folder."""
    if args.out:
        return Path(args.out)
    first = Path(args.policy[0]).resolve()
    return first.parent / f"{first.name}_eval"


def cmd_eval(args) -> int:
    import dataclasses
    import json

    from tether.errors import EXIT_ACCEPTANCE, UserError

    _at_least("--starts", args.starts, 1)
    for p in args.policy:
        if not Path(p).is_dir():
            raise UserError(f"policy folder {p} does not exist; give the folder `tether export --out` wrote "
                            "(policy.onnx + policy.json)")
    out = _eval_out(args)
    _refuse_file(out, "--out")
    if _is_non_empty_dir(out) and not args.force:
        raise UserError(f"--out {out} is not empty ({_listing(out)}); pass --force to replace the evaluation in "
                        "it, or give another --out")
    from policies.evaluation import (ACCEPTANCE, evaluate_policy, plot_evaluation, report_for_json, summary_line,
                                     task_cfg_from_contract)
    from sim.pybullet_ref.evaluate import iqm_ci
    from sim.tasks import task_name_of
    from tether.contract import ContractError
    from tether.runtime import OnnxPolicy

    cfgs = []
    for p in args.policy:
        try:
            OnnxPolicy(p)  # the contract and the ONNX file are checked before anything flies
            cfgs.append(task_cfg_from_contract(p))
        except (ContractError, ValueError, OSError) as e:
            raise UserError(f"{p}: {_one_line(e)}; give a policy folder that `tether export` wrote") from e
    tasks = sorted({task_name_of(c) for c in cfgs})
    if len(tasks) > 1:
        raise UserError(f"the policies are of different tasks ({', '.join(tasks)}); evaluate one task at a time")
    if tasks[0] == "navigate":  # judged over obstacle fields: policies/nav_eval.py
        from policies.nav_eval import cli_eval

        return cli_eval(args.policy, out, args.sim, args.fields, args.seed, args.video,
                        {"--sweep": args.sweep, "--acceptance": args.acceptance, "--starts": args.starts},
                        prepare_out=lambda: _fresh_eval_out(out, args.force))
    if args.sweep:
        return _eval_sweep(args, cfgs, tasks[0], out)
    name = args.acceptance or tasks[0]
    if name not in ACCEPTANCE:
        raise UserError(f"task {name!r} has no default acceptance; give --acceptance "
                        f"({', '.join(sorted(ACCEPTANCE))}) or --sweep")
    acceptance = ACCEPTANCE[name]
    if args.starts is not None:
        acceptance = acceptance.with_starts(args.starts)
    if args.seed is not None:
        acceptance = dataclasses.replace(acceptance, seed=args.seed)
    sims = ("pybullet", "tether") if args.sim == "both" else (args.sim,)

    reports = []
    for policy_dir, cfg in zip(args.policy, cfgs):
        try:
            report = evaluate_policy(policy_dir, cfg, acceptance, sims=sims)
        except (ContractError, ValueError) as e:
            raise UserError(f"{policy_dir}: {_one_line(e)}") from e
        reports.append(report)
        for sim in sims:
            print(f"{policy_dir} [{sim}] {report['task']}: {summary_line(report, sim)}")
    across = {}
    if len(reports) > 1:
        for sim in sims:
            m, lo, hi = iqm_ci([r[sim]["success_rate"] for r in reports])
            across[sim] = {"iqm_success": m, "iqm_ci95": [lo, hi]}
            print(f"[{sim}] across {len(reports)} seeds: IQM success {m:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    passed = all(r[sim]["passed"] for r in reports for sim in sims)

    _fresh_eval_out(out, args.force)
    plots = []
    for k, (policy_dir, report) in enumerate(zip(args.policy, reports)):
        name = "eval.png" if len(reports) == 1 else f"eval_{k}_{Path(policy_dir).resolve().name}.png"
        plots.append(str(plot_evaluation(report, out / name, title=f"{policy_dir} ({report['task']})")))
    doc = {"task": tasks[0], "sims": list(sims), "acceptance": dataclasses.asdict(acceptance), "passed": passed,
           "policies": [{"policy": str(p), **report_for_json(r)} for p, r in zip(args.policy, reports)],
           "across_seeds": across, "plots": plots}
    (out / "report.json").write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n")
    need = f"{acceptance.required_successes}/{acceptance.num_starts}"
    print(f"acceptance ({tasks[0]}, >= {need} in {' and '.join(sims)}): {'PASS' if passed else 'FAIL'}")
    print(f"report: {out / 'report.json'}   plot: {', '.join(plots)}")
    return 0 if passed else EXIT_ACCEPTANCE


def _eval_sweep(args, cfgs, task: str, out: Path) -> int:
    """`tether eval --sweep`: each policy over its vehicle class (policies.sweep): a thrust-to-weight x motor
    time constant grid and --starts random vehicles of the class; passes when >= 99 % of the random
    vehicles hold in every simulator."""
    import dataclasses
    import json

    from tether.errors import EXIT_ACCEPTANCE, UserError

    from policies.sweep import SweepCfg, cm, plot_sweep, run_sweep
    from sim.tasks import TASKS

    if TASKS[task][1].success_metric != "hold":
        raise UserError(f"--sweep judges hovering (reach and hold); task {task!r} is judged by "
                        f"{TASKS[task][1].success_metric!r}")
    if args.acceptance is not None:
        raise UserError("--sweep has its own starts (within 0.5 m, tilt up to 60 deg, up to 1 m/s, any yaw); "
                        "drop --acceptance")
    sweep = SweepCfg()
    if args.starts is not None:
        sweep = dataclasses.replace(sweep, random_draws=args.starts)
    if args.seed is not None:
        sweep = dataclasses.replace(sweep, seed=args.seed)
    sims = ("pybullet", "tether") if args.sim == "both" else (args.sim,)
    reports = []
    for policy_dir, cfg in zip(args.policy, cfgs):
        try:
            r = run_sweep(policy_dir, cfg, sweep, sims)
        except ValueError as e:
            raise UserError(f"{policy_dir}: {_one_line(e)}") from e
        reports.append(r)
        for sim in sims:
            g, d = r[sim]["grid_all"], r[sim]["random"]
            print(f"{policy_dir} [{sim}] grid {g['successes']}/{g['num_starts']} hold, random vehicles of "
                  f"{r['vehicle_class']} {d['successes']}/{d['num_starts']} (95% CI {d['success_ci95'][0]:.2f}-"
                  f"{d['success_ci95'][1]:.2f}), steady error median {cm(d['steady_err_m_median'])}, "
                  f"p90 {cm(d['steady_err_m_p90'])}")
    passed = all(r[sim]["random"]["success_rate"] >= 0.99 for r in reports for sim in sims)
    _fresh_eval_out(out, args.force)
    plots = []
    for k, (policy_dir, r) in enumerate(zip(args.policy, reports)):
        name = "sweep.png" if len(reports) == 1 else f"sweep_{k}_{Path(policy_dir).resolve().name}.png"
        plots.append(str(plot_sweep(r, out / name, title=f"{policy_dir} ({task})")))
    doc = {"task": task, "sims": list(sims), "sweep": dataclasses.asdict(sweep), "passed": passed,
           "pass_rule": ">= 99 % of the random vehicles reach and hold in every simulator",
           "policies": [{"policy": str(p), **r} for p, r in zip(args.policy, reports)], "plots": plots}
    (out / "report.json").write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n")
    print(f"sweep ({task}, >= 99 % of random vehicles in {' and '.join(sims)}): {'PASS' if passed else 'FAIL'}")
    print(f"report: {out / 'report.json'}   heat map: {', '.join(plots)}")
    return 0 if passed else EXIT_ACCEPTANCE


DEMO_ROOT = Path("artifacts/demo")
# What `tether demo` writes into its folder; --force over an existing --out removes exactly these.
DEMO_OUTPUTS = ("run", "policy", "correction", "report.json", "hover_report.png")


def _fresh_demo_dir(root: Path) -> Path:
    """root/<UTC timestamp>, and root/latest pointing to it (a new folder per run: two runs never mix)."""
    import datetime
    import os

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out, n = root / stamp, 1
    while out.exists():
        n += 1
        out = root / f"{stamp}-{n}"
    out.mkdir(parents=True)
    latest = root / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp = root / f".latest.{os.getpid()}"
        tmp.symlink_to(out.name)
        os.replace(tmp, latest)
    return out


def cmd_demo(args) -> int:
    import shutil

    from policies.hil.dataset import LogError
    from tether_app.demo import run_demo
    from tether.errors import EXIT_ACCEPTANCE, CommandFailed, UserError

    for flag, value in (("--iterations", args.iterations), ("--num-envs", args.num_envs),
                        ("--hil-rounds", args.hil_rounds), ("--hil-episodes", args.hil_episodes)):
        _at_least(flag, value, 1)
    if args.out is not None:
        out = Path(args.out)
        _refuse_file(out, "--out")
        if _is_non_empty_dir(out) and not args.force:
            raise UserError(f"--out {out} is not empty ({_listing(out)}); pass --force to replace the demo in it, "
                            "or leave --out out for a fresh folder under artifacts/demo/")
        if args.force and out.is_dir():
            for name in DEMO_OUTPUTS:
                p = out / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    else:
        out = _fresh_demo_dir(DEMO_ROOT)
        print(f"demo folder: {out} ({DEMO_ROOT / 'latest'} points to it)")
    try:
        summary = run_demo(out, iterations=args.iterations, num_envs=args.num_envs, seed=args.seed, task=args.task,
                           hil_backend=None if args.hil == "off" else args.hil, hil_rounds=args.hil_rounds,
                           hil_episodes=args.hil_episodes)
    except (RuntimeError, LogError) as e:  # a node that died, a runner that refused the child, logs that do not
        # replay: the demo ran and failed
        raise CommandFailed(f"demo in {out}: {_one_line(e)}") from e
    return 0 if summary["pybullet"]["passed"] else EXIT_ACCEPTANCE


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="tether", description="Tether: sim-to-real control stack")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a policy with PPO in the batched simulator")
    p.add_argument("task", help="a registered task (sim.tasks.TASKS), e.g. hover or navigate; an unknown name "
                   "lists them all")
    p.add_argument("--config", help="YAML file of task config keys (unknown keys are errors)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task config key (or ppo.KEY), e.g. --set action_space=rotor; values are "
                        "YAML (lists [1.0, 2.0]); NaN and Inf are refused")
    p.add_argument("--num-envs", type=int, help="parallel environments per process (default: the task's run "
                                                "default, 4096; 1024 for hover_robust)")
    p.add_argument("--iterations", type=int, help="PPO iterations (default: ppo.num_iterations, 150); with "
                                                  "--resume the total, counting the resumed ones")
    p.add_argument("--seed", type=int, default=0, help="PPO and env seed (also in the name of the run folder)")
    p.add_argument("--device", help="torch device, cpu or cuda[:N] (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest at small batch)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (each with --num-envs envs; gloo on CPUs, NCCL "
                        "on GPUs, one GPU per process); for several machines use torchrun (README)")
    # eager by default: on 7 time-to-hover seeds the fused env failed 3 that eager passes (cause not found
    # yet; the step-by-step parity tests agree), so the faster kernel stays opt-in until it is explained
    p.add_argument("--physics", choices=("auto", "fused", "eager", "compiled"), default="eager",
                   help="simulator step: eager (op by op); fused (one compiled kernel for physics, observation, "
                        "reward, resets; 3.5-5x the env throughput); compiled (torch.compile of the eager physics); "
                        "auto: fused where the task supports it, else eager")
    p.add_argument("--run-dir", help="run folder for checkpoints, config and TensorBoard (default: "
                                     "artifacts/runs/<task>_seed<seed>, or the --resume folder)")
    p.add_argument("--resume", help="run folder (its latest checkpoint) or checkpoint file to continue; same task, "
                                    "action space and network")
    p.add_argument("--force", action="store_true", help="replace the run in a non-empty --run-dir (its "
                                                        "checkpoints, config and TensorBoard logs are deleted)")
    p.add_argument("--calibration", help="calibration YAML of the unit: its identified parameters become the "
                                         "nominal vehicle, randomization = nominal +- k sigma")
    p.add_argument("--calibration-k", type=float, default=2.0, help="sigmas of randomization (default 2)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a checkpoint to policy.onnx + policy.json")
    p.add_argument("checkpoint", help="checkpoint file, or run folder (its best.json's checkpoint when selected by "
                                      "evaluation, else the latest checkpoint of its own run)")
    p.add_argument("--latest", action="store_true", help="a run folder's latest checkpoint even if best.json names one")
    p.add_argument("--out", required=True, help="output folder (new or empty, or --force)")
    p.add_argument("--force", action="store_true", help="replace the policy in a non-empty --out")
    p.add_argument("--onboard", choices=["c"], help="also write OUT/onboard/tether_policy.c + .h for firmware, "
                                                    "checked against onnxruntime (needs a C compiler)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="fly exported policies from randomized starts and judge them as their task "
                                    "defines success (exit 3 when the acceptance fails)")
    p.add_argument("--policy", nargs="+", required=True, help="policy folders (several: one per seed, same task)")
    p.add_argument("--sim", choices=("pybullet", "tether", "both"), default="pybullet",
                   help="simulator(s) to fly in; both: the same starts and goals in each")
    p.add_argument("--acceptance", choices=("hover", "recovery", "waypoint", "trajectory"), default=None,
                   help="start distribution and pass mark (default: the policy's task's own)")
    p.add_argument("--starts", type=int, default=None,
                   help="randomized starts (default: the acceptance's, 100); the pass mark keeps its fraction")
    p.add_argument("--seed", type=int, default=None, help="seed of the starts and goals (default: the acceptance's, "
                                                          "12345)")
    p.add_argument("--out", help="folder for report.json and eval.png (default: <policy>_eval beside the policy)")
    p.add_argument("--force", action="store_true", help="replace the evaluation in a non-empty --out")
    p.add_argument("--sweep", action="store_true",
                   help="fly across the vehicle class instead: a thrust-to-weight x motor time constant grid and "
                        "--starts (default 64) random vehicles of the class; heat map sweep.png")
    p.add_argument("--fields", type=int, default=None, help="navigate: unseen obstacle fields per density (default 100)")
    p.add_argument("--video", type=int, default=None, help="navigate: rollout videos of the first N fields per "
                                                            "simulator and density (default 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the main job: train the vehicle-class hover policy, export, evaluate in "
                                       "pybullet and across the vehicle class, then correct it on a perturbed twin "
                                       "and finetune (human-in-the-loop), report + plots")
    p.add_argument("--out", default=None, help="demo folder, new or empty (default: a fresh "
                                               "artifacts/demo/<UTC time>, artifacts/demo/latest points to it)")
    p.add_argument("--force", action="store_true", help="replace the demo in a non-empty --out")
    from tether_app.demo import DEMO_RECIPES, DEMO_TASK

    p.add_argument("--task", choices=sorted(DEMO_RECIPES), default=DEMO_TASK,
                   help=f"the policy to train (default {DEMO_TASK}; hover_robust: any Crazyflie-class vehicle, "
                        "hover: the nominal vehicle only)")
    p.add_argument("--iterations", type=int, default=None,
                   help="PPO iterations (default: the task's demo recipe, tether_app.demo.DEMO_RECIPES)")
    p.add_argument("--num-envs", type=int, default=None,
                   help="parallel training environments (default: the task's demo recipe)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the correction loop")
    p.add_argument("--hil", choices=("ros", "inproc", "off"), default="ros",
                   help="then correct the policy on a perturbed twin and finetune it (default: ROS 2 nodes)")
    p.add_argument("--hil-rounds", type=int, default=2, help="correction rounds")
    p.add_argument("--hil-episodes", type=int, default=10, help="episodes per correction round")
    p.set_defaults(func=cmd_demo)

    for name, module in EXTERNAL_COMMANDS.items():
        try:
            importlib.import_module(module).add_parser(sub)
        except ImportError as e:
            q = sub.add_parser(name, help=f"(unavailable: {e})")
            q.set_defaults(func=lambda a, e=e, n=name: sys.exit(f"error: `tether {n}` needs {e.name}: {e}"))
    return ap


_ARGV: list[str] = []
"""the command line of this process's command (`train --nproc` starts its ranks with it)"""


def main(argv: list[str] | None = None) -> int:
    """Run one command; its status follows tether.errors (0 ok, 1 failed, 2 user error, 3 acceptance failed)."""
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
