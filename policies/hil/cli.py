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
    p.add_argument("--method", default="hil_serl", choices=("hil_serl", "rlif", "hg_dagger"))
    p.add_argument("--out", required=True, type=Path, help="directory for the child policy.onnx + policy.json")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--goal", type=float, nargs=3, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
                   help="the runner's hover goal [m], for logs recorded without /runner/goal")
    p.add_argument("--updates", type=int, default=None, help="learner updates after the critic warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-twin", type=Path, default=None,
                   help="TwinConfig YAML (hardware.twin keys) to validate parent and child on")
    p.add_argument("--validate-estimated", action="store_true",
                   help="validate on the twin with the rotor gains estimated from the logs instead of its own "
                        "disturbances (with --validate-twin: that twin's other settings)")
    p.add_argument("--sim-iterations", type=int, default=None,
                   help="rollouts of the simulator stage (default 20); 0: fine-tune on the logs only")
    p.add_argument("--swap", action="store_true", help="offer the child to the running runner (runner/load_policy)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the running runner (--swap)")
    p.add_argument("--report", type=Path, default=None, help="write the report JSON here")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import dataclasses

    import yaml

    from hardware.twin import TwinConfig
    from policies.hil.algorithms import FinetuneCfg
    from policies.hil.dataset import LogError
    from policies.hil.finetune import finetune
    from tether.contract import ContractError

    from policies.hil.sim_refine import SimRefineCfg

    cfg = FinetuneCfg(method=args.method, seed=args.seed)
    sim = SimRefineCfg(seed=args.seed)
    if args.sim_iterations is not None:
        if args.sim_iterations < 0:
            raise SystemExit(f"error: --sim-iterations must be >= 0 (0: no simulator stage), got {args.sim_iterations}")
        sim = dataclasses.replace(sim, iterations=args.sim_iterations) if args.sim_iterations > 0 else None
    if args.updates is not None:
        cfg = dataclasses.replace(cfg, updates=args.updates)
    try:
        twin = None
        if args.validate_twin is not None:
            twin = TwinConfig.from_dict(yaml.safe_load(args.validate_twin.read_text()) or {}, str(args.validate_twin))
        report = finetune(args.policy, args.logs, args.method, args.out, cfg, goal_w=tuple(args.goal),
                          force=args.force, validate_twin=twin, validate_estimated=args.validate_estimated, sim_refine=sim)
    except (LogError, ContractError, FileExistsError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2, default=float) + "\n")
    val = report.get("validation")
    if args.swap and val is not None and val["child"]["success_rate"] < val["parent"]["success_rate"]:
        print("not swapped: the child validates worse than its parent on the twin", file=sys.stderr)
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
