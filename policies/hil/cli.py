"""``tether finetune``: intervention logs -> a fine-tuned child policy (ONNX + contract), optionally
validated on the twin and hot-swapped into a running runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("finetune", help="fine-tune a deployed policy on intervention logs (MCAP)",
                              description=__doc__)
    p.add_argument("--policy", required=True, type=Path, help="the deployed (parent) policy directory")
    p.add_argument("--logs", required=True, nargs="+", type=Path, help="bag directories or .mcap files")
    p.add_argument("--method", default="hil_serl", choices=("hil_serl", "rlif", "hg_dagger"),
                   help="learning from interventions: HIL-SERL, RLIF or HG-DAgger")
    p.add_argument("--out", required=True, type=Path, help="directory for the child policy.onnx + policy.json")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--goal", type=float, nargs=3, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
                   help="the runner's hover goal [m], for logs recorded without /runner/goal")
    p.add_argument("--updates", type=int, default=None, help="learner updates after the critic warm-up")
    p.add_argument("--seed", type=int, default=0, help="seed of the learner and of the simulator stage")
    p.add_argument("--validate-twin", type=Path, default=None,
                   help="TwinConfig YAML (hardware.twin keys) to validate parent and child on")
    p.add_argument("--validate-estimated", action="store_true",
                   help="validate on the twin with the disturbance identified from the logs instead of its own "
                        "disturbances (with --validate-twin: that twin's other settings); skipped, and said so, "
                        "when the identified model cannot predict the logged flight")
    p.add_argument("--sim-iterations", type=int, default=None,
                   help="rollouts of the simulator stage (default 20); 0: fine-tune on the logs only")
    p.add_argument("--swap", action="store_true", help="offer the child to the running runner (runner/load_policy); "
                   "refused when the twin validation is worse, or missing (see --swap-unvalidated)")
    p.add_argument("--swap-unvalidated", action="store_true",
                   help="with --swap: offer a child that could not be validated (no twin, or 'cannot predict')")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the running runner (--swap)")
    p.add_argument("--report", type=Path, default=None, help="write the report JSON here")
    p.set_defaults(func=run)
    return p


MCAP_MAGIC = b"\x89MCAP0\r\n"


def _check_args(args) -> None:
    """Everything the user gave, checked before any work: one ``error:`` line (exit 2) naming the fix."""
    import math

    from tether.errors import UserError

    if args.sim_iterations is not None and args.sim_iterations < 0:
        raise UserError(f"--sim-iterations must be >= 0 (0: no simulator stage), got {args.sim_iterations}")
    if args.updates is not None and args.updates < 1:
        raise UserError(f"--updates must be >= 1, got {args.updates}")
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        raise UserError(f"--domain-id must be a ROS_DOMAIN_ID in 0..232, got {args.domain_id}")
    if not all(math.isfinite(g) for g in args.goal):
        raise UserError(f"--goal must be three finite numbers [m], got {list(args.goal)}")
    if not (args.policy / "policy.json").is_file():
        raise UserError(f"--policy {args.policy} holds no policy.json; give the folder `tether export` (or a "
                        "previous finetune) wrote")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the child policy")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise UserError(f"--out {args.out} exists and is not empty; pass --force to replace it, or another --out")
    if args.validate_twin is not None and not args.validate_twin.is_file():
        raise UserError(f"--validate-twin {args.validate_twin} does not exist; give a TwinConfig YAML file")
    if args.report is not None and args.report.is_dir():
        raise UserError(f"--report {args.report} is a folder; give a file name for the report JSON")
    for log in args.logs:
        if not log.exists():
            raise UserError(f"--logs {log} does not exist; give the bag folders (or .mcap files) that "
                            "`tether deploy --record` wrote")
        files = [log] if log.is_file() else sorted(log.glob("*.mcap"))
        if not files:
            raise UserError(f"--logs {log}: no .mcap file in the folder; give the bag folders that "
                            "`tether deploy --record` wrote")
        with open(files[0], "rb") as f:
            head = f.read(len(MCAP_MAGIC))
        if head != MCAP_MAGIC:
            raise UserError(f"--logs {files[0]} is not an MCAP file ({files[0].stat().st_size} bytes, no MCAP magic); "
                            "give the bag folders that `tether deploy --record` wrote")


def run(args) -> int:
    import dataclasses
    import struct

    import yaml

    from hardware.twin import TwinConfig
    from policies.hil.algorithms import FinetuneCfg
    from policies.hil.dataset import LogError
    from policies.hil.finetune import finetune
    from tether.contract import ContractError
    from tether.errors import CommandFailed, UserError

    from policies.hil.sim_refine import SimRefineCfg

    _check_args(args)
    cfg = FinetuneCfg(method=args.method, seed=args.seed)
    sim = SimRefineCfg(seed=args.seed)
    if args.sim_iterations is not None:
        sim = dataclasses.replace(sim, iterations=args.sim_iterations) if args.sim_iterations > 0 else None
    if args.updates is not None:
        cfg = dataclasses.replace(cfg, updates=args.updates)
    try:
        twin = None
        if args.validate_twin is not None:
            twin = TwinConfig.from_dict(yaml.safe_load(args.validate_twin.read_text()) or {}, str(args.validate_twin))
    except (ValueError, OSError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise UserError(f"--validate-twin {args.validate_twin}: {' '.join(str(e).split())}") from e
    try:
        report = finetune(args.policy, args.logs, args.method, args.out, cfg, goal_w=tuple(args.goal),
                          force=args.force, validate_twin=twin, validate_estimated=args.validate_estimated, sim_refine=sim)
    except (LogError, ContractError, FileExistsError, ValueError, OSError, struct.error) as e:
        # the logs and the parent policy are the user's input; a log that decodes badly is named by its path
        raise UserError(" ".join(str(e).split())) from e
    except RuntimeError as e:
        raise CommandFailed(" ".join(str(e).split())) from e
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2, default=float) + "\n")
    pred = report["prediction"]
    if pred["status"] == "cannot predict":
        print(f"cannot predict: {pred['why']}. No twin validation and no simulator stage were used; the child "
              "is not claimed to be better than its parent until new flights measure it", file=sys.stderr)
    val = report.get("validation")
    if args.swap and val is not None and val["child"]["success_rate"] < val["parent"]["success_rate"]:
        print("not swapped: the child validates worse than its parent on the twin", file=sys.stderr)
        return 1
    if args.swap and val is None and not args.swap_unvalidated:
        print("not swapped: the child has no twin validation (pass --swap-unvalidated to fly it anyway, "
              "with the operator ready)", file=sys.stderr)
        return 1
    if args.swap:
        from policies.hil.loop import request_hot_swap

        status = request_hot_swap(args.out, domain_id=args.domain_id)
        print(f"hot swap: {status}")
        if not status.startswith("active"):
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
