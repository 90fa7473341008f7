"""``tether deploy``: bring the robot-side ROS 2 nodes up as separate processes, without ros2 launch.

The ros-jazzy-* wheels have no ``ros2`` CLI and no launch; this launcher does what the launch files in
ros2_ws/src/tether_deploy/launch/ do on a full ROS install: one process per node, each with its
parameter files (the package's config/*.yaml, then --params), logs forwarded with a prefix, and a clean
shutdown on SIGINT/SIGTERM (SIGINT to each node in reverse start order, the recorder last so the log
holds the end; SIGKILL only for a node that does not exit in time).

DDS discovery is restricted to this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) unless the
environment already sets a range.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SRC = REPO / "ros2_ws" / "src" / "tether_deploy"
CONFIG = PACKAGE_SRC / "config"

# Robot adapters: --robot NAME -> (module, default parameter files). The twin is the only one so far;
# hardware adapters (crazyflie, mavlink) slot in here and in launch/robot.launch.py.
ADAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "twin": ("tether_deploy.twin_node", ("twin.yaml",)),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("deploy", help="run a policy on a robot or its digital twin (ROS 2 nodes)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", default="twin", help=f"robot adapter: {sorted(ADAPTERS)} (default twin)")
    p.add_argument("--policy", required=True, type=Path, help="directory with policy.onnx + policy.json")
    p.add_argument("--params", type=Path, action="append", default=[],
                   help="ROS parameter YAML (node names as top-level keys), after the defaults; repeatable")
    p.add_argument("--record", type=Path, default=None, help="record the intervention log into this new directory")
    p.add_argument("--teleop", choices=("none", "keyboard"), default="none",
                   help="keyboard: this terminal becomes the gamepad (a real one: run the joy package)")
    p.add_argument("--duration", type=float, default=None, help="stop everything after this many seconds")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for all nodes")
    p.add_argument("--ros-arg", action="append", default=[], metavar="NODE:NAME:=VALUE",
                   help="one parameter override for one node, e.g. policy_runner:safe_behaviour:=land")
    p.set_defaults(func=run)
    return p


def node_commands(args) -> list[tuple[str, list[str]]]:
    """(name, argv) of each node in start order."""
    if args.robot not in ADAPTERS:
        raise SystemExit(f"tether deploy: no robot adapter {args.robot!r}; available: {sorted(ADAPTERS)}")
    policy = args.policy.resolve()
    overrides: dict[str, list[str]] = {}
    for item in args.ros_arg:
        node, sep, assignment = item.partition(":")
        if not sep or ":=" not in assignment:
            raise SystemExit(f"tether deploy: --ros-arg {item!r} is not NODE:NAME:=VALUE")
        overrides.setdefault(node, []).append(assignment)

    def ros_args(node: str, files: tuple[str, ...], params: list[str]) -> list[str]:
        out = ["--ros-args", "-r", f"__node:={node}"]
        for f in files:
            out += ["--params-file", str(CONFIG / f)]
        for f in args.params:
            out += ["--params-file", str(f.resolve())]
        for p in params + overrides.get(node, []):
            out += ["-p", p]
        return out

    py = [sys.executable, "-m"]
    module, files = ADAPTERS[args.robot]
    cmds = []
    if args.record is not None:
        cmds.append(("recorder", py + ["tether_deploy.recorder_node"] +
                     ros_args("recorder", ("recorder.yaml",), [f"output:={args.record.resolve()}"])))
    cmds.append((args.robot, py + [module] + ros_args("twin" if args.robot == "twin" else args.robot, files,
                                                      [f"policy_dir:={policy}"])))
    cmds.append(("policy_runner", py + ["tether_deploy.runner_node"] +
                 ros_args("policy_runner", ("runner.yaml",), [f"policy_dir:={policy}", "autostart:=true"])))
    if args.teleop == "keyboard":
        cmds.append(("keyboard_teleop", py + ["tether_deploy.keyboard_teleop"] + ros_args("keyboard_teleop", (), [])))
    return cmds


def node_env(domain_id: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    paths = [str(REPO), str(PACKAGE_SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _forward(name: str, stream, out) -> None:
    for line in iter(stream.readline, b""):
        out.write(f"[{name}] {line.decode(errors='replace')}")
        out.flush()


class NodeGroup:
    """Child processes, each in its own session (the launcher decides the shutdown order)."""

    def __init__(self, commands: list[tuple[str, list[str]]], env: dict[str, str], out=sys.stderr):
        self.commands, self.env, self.out = commands, env, out
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self) -> None:
        for name, argv in self.commands:
            interactive = name == "keyboard_teleop"
            proc = subprocess.Popen(argv, env=self.env, start_new_session=True,
                                    stdin=None if interactive else subprocess.DEVNULL,
                                    stdout=None if interactive else subprocess.PIPE,
                                    stderr=None if interactive else subprocess.STDOUT)
            if not interactive:
                threading.Thread(target=_forward, args=(name, proc.stdout, self.out), daemon=True).start()
            self.procs.append((name, proc))

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.poll() is not None]

    def stop(self, timeout_s: float = 5.0) -> dict[str, int]:
        codes = {}
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.out.write(f"[tether deploy] {name} did not stop in {timeout_s} s: killing it\n")
                    proc.kill()
                    proc.wait()
            codes[name] = proc.returncode
        return codes


def run(args) -> int:
    if not (args.policy / "policy.onnx").is_file() or not (args.policy / "policy.json").is_file():
        print(f"tether deploy: {args.policy} must hold policy.onnx and policy.json", file=sys.stderr)
        return 2
    group = NodeGroup(node_commands(args), node_env(args.domain_id))
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    group.start()
    print(f"[tether deploy] started {[n for n, _ in group.procs]} (Ctrl-C stops)", file=sys.stderr)
    t_end = None if args.duration is None else time.monotonic() + args.duration
    failed = []
    try:
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            failed = group.exited()
            if failed:
                print(f"[tether deploy] {failed} exited: stopping the rest", file=sys.stderr)
                break
            stop.wait(0.2)
    finally:
        codes = group.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"[tether deploy] stopped: {codes}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
