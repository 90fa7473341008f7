"""`tether` command line: train, export, eval, demo, and the subcommands of other stages
(calibrate, deploy) registered by their own modules. Errors in user input end with one clear line."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# Subcommands owned by other stages: each module provides add_parser(subparsers). Imported lazily so
# that `tether train` does not need rclpy and `tether deploy` does not need torch.
EXTERNAL_COMMANDS = {"calibrate": "calibration.cli", "deploy": "tether.deploy", "finetune": "policies.hil.cli"}


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _task_cfg(task: str, config: str | None, overrides: dict):
    from sim.tasks import TASKS
    from tether.config import config_from_dict, config_to_dict, load_yaml_config

    if task not in TASKS:
        raise SystemExit(f"error: unknown task {task!r}; registered tasks: {', '.join(sorted(TASKS))}")
    cfg_cls, _ = TASKS[task]
    try:
        if config:
            return load_yaml_config(cfg_cls, config, overrides)
        base = config_to_dict(cfg_cls())
        base.update(overrides)
        return config_from_dict(cfg_cls, base, where=f"{task} config")
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e


def _calibrated(cfg, path: str, k: float):
    """The vehicle identified in a calibration file, with randomization ranges from its uncertainty."""
    import dataclasses

    from calibration.files import load_calibration
    from calibration.to_sim import preset_and_randomization

    try:
        calib = load_calibration(path)
        vehicle, randomization = preset_and_randomization(calib, cfg.vehicle, k=k,
                                                          base_randomization=cfg.randomization)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    return dataclasses.replace(cfg, vehicle_params=vehicle, randomization=randomization)


def cmd_train(args) -> Path:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from policies.checkpoint import CheckpointError
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env
    from tether.config import config_from_dict, config_to_dict

    torch.set_num_threads(args.threads)
    overrides = _parse_overrides(args.set)
    ppo_over = {k[4:]: overrides.pop(k) for k in list(overrides) if k.startswith("ppo.")}
    if args.num_envs:
        overrides["num_envs"] = args.num_envs
    if args.device:
        overrides["device"] = args.device
    cfg = _task_cfg(args.task, args.config, overrides)
    if args.calibration:
        cfg = _calibrated(cfg, args.calibration, args.calibration_k)
    if args.iterations:
        ppo_over["num_iterations"] = args.iterations
    ppo_over.setdefault("seed", args.seed)
    try:
        ppo = config_from_dict(PPOCfg, {**config_to_dict(PPOCfg()), **ppo_over}, where="ppo")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    run_dir = Path(args.run_dir or f"artifacts/runs/{args.task}_seed{ppo.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump({"task": args.task, "task_cfg": config_to_dict(cfg),
                                                         "ppo": config_to_dict(ppo)}, sort_keys=False))
    (run_dir / "randomization.yaml").write_text(yaml.safe_dump(config_to_dict(cfg.randomization), sort_keys=False))
    env = make_env(args.task, cfg)
    writer = SummaryWriter(str(run_dir / "tb"))
    try:
        ckpt = train(env, args.task, ppo, run_dir, resume=args.resume, writer=writer)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from e
    finally:
        writer.close()
    print(f"checkpoint: {ckpt}")
    return ckpt


def _resolve_checkpoint(path: str) -> Path:
    from policies.checkpoint import CheckpointError, latest_checkpoint

    p = Path(path)
    try:
        return latest_checkpoint(p) if p.is_dir() else p
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from e


def cmd_export(args) -> Path:
    from policies.checkpoint import CheckpointError
    from policies.export import export_policy

    ckpt = _resolve_checkpoint(args.checkpoint)
    try:
        out, contract, err = export_policy(ckpt, args.out)
    except (CheckpointError, FileExistsError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from e
    print(f"exported {ckpt} -> {out}/policy.onnx + policy.json (obs {contract.obs_dim}, "
          f"action {contract.action.type}x{contract.action.dim}, {contract.control_rate_hz:g} Hz); "
          f"ONNX parity max |diff| = {err:.2e}")
    return out


def cmd_eval(args) -> dict:
    from policies.evaluation import RECOVERY, AcceptanceCfg, evaluate_hover, task_cfg_from_contract
    from sim.pybullet_ref.evaluate import iqm_ci
    from tether.contract import ContractError

    acceptance = RECOVERY if args.acceptance == "recovery" else AcceptanceCfg()
    sims = ("pybullet", "tether") if args.sim == "both" else (args.sim,)
    reports = []
    for policy_dir in args.policy:
        try:
            cfg = task_cfg_from_contract(policy_dir)
            report = evaluate_hover(policy_dir, cfg, acceptance, sims=sims)
        except (ContractError, ValueError) as e:
            raise SystemExit(f"error: {policy_dir}: {e}") from e
        reports.append(report)
        for sim in sims:
            r = report[sim]
            print(f"{policy_dir} [{sim}] success {r['successes']}/{acceptance.num_starts} "
                  f"(95% CI {r['success_ci95'][0]:.2f}-{r['success_ci95'][1]:.2f}), steady-state error "
                  f"{r['steady_state_err_m_median'] * 100:.1f} cm, settle {r['settle_time_s_median']:.2f} s, "
                  f"crashes {r['crashes']}")
    if len(reports) > 1:
        for sim in sims:
            scores = [r[sim]["success_rate"] for r in reports]
            m, lo, hi = iqm_ci(scores)
            print(f"[{sim}] across {len(scores)} seeds: IQM success {m:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    return {"reports": reports}


def cmd_demo(args) -> None:
    from tether.demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations, num_envs=args.num_envs, seed=args.seed,
             hil_backend=None if args.hil == "off" else args.hil, hil_rounds=args.hil_rounds,
             hil_episodes=args.hil_episodes)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="tether", description="Tether: sim-to-real control stack")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a policy with PPO in the batched simulator")
    p.add_argument("task", help="registered task: hover, recover, waypoint, trajectory")
    p.add_argument("--config", help="YAML file of task config keys (unknown keys are errors)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task config key (or ppo.KEY), e.g. --set action_space=rotor")
    p.add_argument("--num-envs", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="torch device (default: the config's, cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest at small batch)")
    p.add_argument("--run-dir")
    p.add_argument("--resume", help="checkpoint to resume from (same task and shapes)")
    p.add_argument("--calibration", help="calibration YAML of the unit: its identified parameters become the "
                                         "nominal vehicle, randomization = nominal +- k sigma")
    p.add_argument("--calibration-k", type=float, default=2.0, help="sigmas of randomization (default 2)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a checkpoint to policy.onnx + policy.json")
    p.add_argument("checkpoint", help="checkpoint file or run directory (latest checkpoint)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="fly exported policies from randomized starts and report success")
    p.add_argument("--policy", nargs="+", required=True, help="policy directories (several: one per seed)")
    p.add_argument("--sim", choices=("pybullet", "tether", "both"), default="pybullet")
    p.add_argument("--acceptance", choices=("hover", "recovery"), default="hover")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the main job: train hover, export, evaluate in pybullet, then correct it on a "
                                       "perturbed twin and finetune (human-in-the-loop), report + plots")
    p.add_argument("--out", default="artifacts/demo")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--num-envs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hil", choices=("ros", "inproc", "off"), default="ros",
                   help="then correct the policy on a perturbed twin and finetune it (default: ROS 2 nodes)")
    p.add_argument("--hil-rounds", type=int, default=2)
    p.add_argument("--hil-episodes", type=int, default=10)
    p.set_defaults(func=cmd_demo)

    for name, module in EXTERNAL_COMMANDS.items():
        try:
            importlib.import_module(module).add_parser(sub)
        except ImportError as e:
            q = sub.add_parser(name, help=f"(unavailable: {e})")
            q.set_defaults(func=lambda a, e=e, n=name: sys.exit(f"error: `tether {n}` needs {e.name}: {e}"))
    return ap


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the front door's error shape: one ``error:`` line naming the fix, exit 2."""

    def error(self, message: str):
        from tether.errors import EXIT_USAGE

        self.exit(EXIT_USAGE, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default and keeps hand-wrapped descriptions as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, [], False, argparse.SUPPRESS):
            return text  # said in the help already, or nothing to show
        return super()._get_help_string(action)


def _defaults_in_help(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _defaults_in_help(sub)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its status follows tether.errors (0 ok, 1 failed, 2 user error, 3 acceptance failed)."""
    from tether.errors import EXIT_INTERRUPTED, CommandFailed, UserError

    parser = build_parser()
    _defaults_in_help(parser)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (UserError, CommandFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
