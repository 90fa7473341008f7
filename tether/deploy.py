"""``tether deploy``: bring the robot-side ROS 2 nodes up as separate processes, without ros2 launch.

The ros-jazzy-* wheels have no ``ros2`` CLI and no launch; this launcher does what the launch files in
ros2_ws/src/tether_deploy/launch/ do on a full ROS install: one process per node, each with its
parameter files (the package's config/*.yaml, then --params, then --ros-arg), logs forwarded with a
prefix, and a clean shutdown on SIGINT/SIGTERM (SIGINT to each node in reverse start order, the recorder
last so the log holds the end; SIGKILL only for a node that does not exit in time).

``--robot twin`` runs the digital twin's own node; every other registered adapter (hardware/adapters.py:
crazyflie, px4, ardupilot, arm) runs in the ``robot_bridge`` node under the shared safety layer
(hardware/safety.py), with ``adapter`` set from --robot and ``exit_on_link_loss`` true.

Before any node starts, everything is checked (each failure is one `error:` line, exit 2): the robot
adapter (its module and driver library import, its vehicle read from its parameters without connecting;
a rotor-level policy on the Crazyflie goes onboard instead); the policy folder (policy.onnx + policy.json, the contract, the sha256, a test inference); the
policy's vehicle and action space against the robot's; every parameter file and --ros-arg against the
parameters each node declares (tether_deploy/params.py), values included; the --record folder (new or
empty); --duration > 0; a terminal for --teleop keyboard.

Exit status: 0 a clean run (--duration reached, SIGTERM, or `q` in keyboard teleop); 1 a node failed or
exited early (a crash of the twin included), named in one `error:` line; 2 nothing started (bad input);
130 Ctrl-C. No node outlives the launcher, however it dies (tether_deploy.child: PR_SET_PDEATHSIG and a
parent-pid watcher). DDS discovery is restricted to this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
unless the environment already sets a range.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tether.errors import EXIT_INTERRUPTED, CommandFailed, UserError

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SRC = REPO / "ros2_ws" / "src" / "tether_deploy"
# the ROS package's parameter files: beside its sources in a checkout (an editable install), else where a
# wheel install puts them, share/tether_deploy/config under the prefix as colcon does (robot/: tether-robot)
CONFIG = (PACKAGE_SRC / "config" if (PACKAGE_SRC / "config").is_dir()
          else Path(sys.prefix) / "share" / "tether_deploy" / "config")

# --robot twin runs the twin's own node; every other registered adapter (hardware/adapters.py) runs in the
# robot bridge under the shared safety layer. (node name, module, default parameter files)
TWIN_NODE = ("twin", "tether_deploy.twin_node", ("twin.yaml",))
BRIDGE_NODE = ("robot_bridge", "tether_deploy.bridge_node", ())
ADAPTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {"twin": TWIN_NODE}
"""--robot names with a node of their own; the rest of robot_names() use BRIDGE_NODE"""
# Parameters the launcher sets from its own options; a --ros-arg may not override them.
OWNED = {"policy_dir": "--policy", "output": "--record", "autostart": "tether deploy (always true)",
         "exit_on_autostart_failure": "tether deploy (always true)", "adapter": "--robot"}
ONBOARD_ONLY = {"crazyflie": "cflib streams only collective-thrust and body-rate (CTBR) setpoints"}
"""adapters that cannot stream a rotor-level policy, and why: such a policy runs onboard"""


def robot_names() -> list[str]:
    """Every --robot: the twin and each registered adapter."""
    from hardware.adapters import adapter_names

    return sorted(set(ADAPTERS) | set(adapter_names()))


def robot_node(robot: str) -> tuple[str, str, tuple[str, ...]]:
    return ADAPTERS.get(robot, BRIDGE_NODE)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("deploy", help="run a policy on a robot or its digital twin (ROS 2 nodes)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", default="twin", help=f"robot adapter: {', '.join(robot_names())} (default twin: the "
                   f"digital twin; the others run in the robot_bridge node under the safety layer)")
    p.add_argument("--policy", required=True, type=Path, help="directory with policy.onnx + policy.json")
    p.add_argument("--params", type=Path, action="append", default=[],
                   help="ROS parameter YAML (node names as top-level keys), after the defaults; repeatable")
    p.add_argument("--record", type=Path, default=None,
                   help="record the intervention log into this new (or empty) directory")
    p.add_argument("--teleop", choices=("none", "keyboard"), default="none",
                   help="keyboard: this terminal becomes the gamepad (a real one: run the joy package)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop everything after this many seconds (> 0; default: until Ctrl-C)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for all nodes (0-232)")
    p.add_argument("--ros-arg", action="append", default=[], metavar="NODE:NAME:=VALUE",
                   help="one parameter override for one node, e.g. policy_runner:safe_behaviour:=land")
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------------- preflight


@dataclasses.dataclass(frozen=True)
class Plan:
    """What deploy starts, after every check passed."""

    commands: list[tuple[str, list[str]]]
    """(node name, argv) in start order"""
    params: dict[str, object]
    """node name -> its validated parameter dataclass"""
    contract: object
    """the policy's contract"""


def _one_line(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_policy(policy: Path):
    from tether.contract import ContractError, load_policy_dir

    if not policy.is_dir():
        raise UserError(f"--policy {policy} is not a directory; give the folder `tether export` wrote "
                        f"(policy.onnx + policy.json)")
    for name in ("policy.json", "policy.onnx"):
        if not (policy / name).is_file():
            raise UserError(f"--policy {policy} has no {name}; give the folder `tether export` wrote "
                            f"(policy.onnx + policy.json)")
    try:
        load_policy_dir(policy)  # contract fields, version, sha256 of the ONNX file
        from tether_deploy.runner_core import load_policy

        return load_policy(policy).contract  # what the runner will check at configure, test inference included
    except ContractError as e:
        raise UserError(f"policy refused: {_one_line(e)}; re-export it with `tether export`") from None
    except OSError as e:
        raise UserError(f"--policy {policy}: cannot read it ({_one_line(e)})") from None


def _read_params_file(path: Path) -> dict[str, dict]:
    import yaml

    from tether_deploy.params import ParameterError, params_file_values

    if not path.is_file():
        raise UserError(f"--params {path} does not exist; give an existing ROS parameter YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"--params {path} is not valid YAML ({_one_line(e, 200)}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--params {path} cannot be read ({_one_line(e, 200)})") from None
    try:
        return params_file_values(data, f"--params {path}")
    except ParameterError as e:
        raise UserError(f"{e}; fix the file") from None


def _parse_ros_arg(item: str) -> tuple[str, str, str]:
    m = re.fullmatch(r"([A-Za-z_][\w/]*):([A-Za-z_][\w.]*):=(.*)", item, flags=re.S)
    if m is None:
        raise UserError(f"--ros-arg {item!r} is not NODE:NAME:=VALUE; e.g. --ros-arg policy_runner:safe_behaviour:=land")
    return m.group(1), m.group(2), m.group(3)


def _check_record(record: Path) -> None:
    if record.exists() and (not record.is_dir() or any(record.iterdir())):
        raise UserError(f"--record {record} already exists and is not an empty directory; record into a new "
                        f"directory (nothing is overwritten)")
    parent = record.parent if not record.exists() else record
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--record {record}: cannot create it in {parent} (not a writable directory); choose "
                        f"another place")


def preflight(args, stdin=None) -> Plan:
    """Check everything a deploy needs before any node starts; raises UserError (one line) otherwise."""
    from tether_deploy.params import NODE_PARAMS, ParameterError, node_params, parse_value

    stdin = sys.stdin if stdin is None else stdin
    if args.robot not in robot_names():
        hint = difflib.get_close_matches(args.robot, robot_names(), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"--robot {args.robot!r} is not a robot adapter{did}; available: {', '.join(robot_names())}")
    if args.duration is not None and not args.duration > 0:  # NaN too
        raise UserError(f"--duration {args.duration} must be > 0 seconds; leave it out to run until Ctrl-C")
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        raise UserError(f"--domain-id {args.domain_id} must be in 0..232 (ROS_DOMAIN_ID)")
    if args.teleop == "keyboard" and not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise UserError("--teleop keyboard needs an interactive terminal (stdin is not a TTY); run it in a "
                        "terminal, or use a gamepad (joy package) with --teleop none")
    if args.record is not None:
        _check_record(args.record)

    robot_node_name, robot_module, robot_files = robot_node(args.robot)
    bridged = robot_node_name == BRIDGE_NODE[0]
    if bridged:
        _check_adapter(args.robot)
    nodes: list[tuple[str, str, tuple[str, ...]]] = []  # (node, module, default files) in start order
    if args.record is not None:
        nodes.append(("recorder", "tether_deploy.recorder_node", ("recorder.yaml",)))
    nodes.append((robot_node_name, robot_module, robot_files))
    nodes.append(("policy_runner", "tether_deploy.runner_node", ("runner.yaml",)))
    if args.teleop == "keyboard":
        nodes.append(("keyboard_teleop", "tether_deploy.keyboard_teleop", ()))
    started = [n for n, _, _ in nodes]

    # parameter values per node: package defaults, then each --params file, then ours, then --ros-arg
    values: dict[str, dict] = {n: {} for n in started}
    for node, _, files in nodes:
        for f in files:
            values[node].update(_read_params_file(CONFIG / f).get(node, {}))
    for f in args.params:
        for node, vals in _read_params_file(f).items():
            targets = started if node == "**" else [node] if node in values else []
            for t in targets:
                known = vals if node != "**" else {k: v for k, v in vals.items() if _knows(t, k)}
                values[t].update(known)
    policy = args.policy.resolve()
    ours = {"recorder": {"output": str(args.record.resolve()) if args.record else "", "policy_dir": str(policy)},
            robot_node_name: ({"adapter": args.robot, "policy_dir": str(policy), "exit_on_link_loss": True}
                              if bridged else {"policy_dir": str(policy), "exit_on_crash": True}),
            "policy_runner": {"policy_dir": str(policy), "autostart": True, "exit_on_autostart_failure": True}}
    overrides: dict[str, list[str]] = {n: [] for n in started}
    for item in args.ros_arg:
        node, name, value = _parse_ros_arg(item)
        if node not in NODE_PARAMS:
            try:
                node_params(node, {})
            except ParameterError as e:
                raise UserError(f"--ros-arg {item!r}: {e}") from None
        if node not in values:
            raise UserError(f"--ros-arg {item!r}: node {node!r} is not started by this deploy (it starts "
                            f"{', '.join(started)}); drop the override or add the option that starts it")
        if name in OWNED:
            raise UserError(f"--ros-arg {item!r}: {name} is set by {OWNED[name]}; use that option instead")
        try:
            node_params(node, {**values[node], **ours.get(node, {}), name: parse_value(value)})
        except ParameterError as e:
            raise UserError(f"--ros-arg {item!r}: {e}") from None
        values[node][name] = parse_value(value)
        overrides[node].append(f"{name}:={value}")
    contract = _check_policy(args.policy)

    params = {}
    for node in started:
        try:
            params[node] = node_params(node, {**values[node], **ours.get(node, {})})
        except ParameterError as e:
            raise UserError(f"parameters of {node}: {e}; fix the --params file or --ros-arg") from None

    if bridged:
        _check_adapter_vehicle(args.robot, params[robot_node_name].robot, contract)
    if robot_node_name == "twin":
        from hardware.robot import check_vehicle
        from hardware.twin_config import twin_vehicle
        from tether.contract import ContractError

        try:
            check_vehicle(contract, twin_vehicle(params["twin"]), "the twin")
        except ContractError as e:
            raise UserError(f"{e} (the twin's preset and action_spaces come from --params or --ros-arg "
                            f"twin:NAME:=VALUE)") from None

    commands = []
    for node, module, files in nodes:
        argv = [sys.executable, "-m", "tether_deploy.child", str(os.getpid()), module,
                "--ros-args", "-r", f"__node:={node}"]
        for f in files:
            argv += ["--params-file", str(CONFIG / f)]
        for f in args.params:
            argv += ["--params-file", str(f.resolve())]
        for name, value in ours.get(node, {}).items():
            argv += ["-p", f"{name}:={'true' if value is True else value}"]
        for o in overrides[node]:
            argv += ["-p", o]
        commands.append((node, argv))
    return Plan(commands, params, contract)


def _check_adapter(robot: str) -> None:
    """The adapter's module and driver library import here (its robot.* parameters come from them)."""
    from tether_deploy.params import ParameterError, bridge_params_class

    try:
        bridge_params_class(robot)
    except ParameterError as e:
        raise UserError(f"--robot {robot}: {_one_line(e).split(': ', 1)[-1]}") from None


def _check_adapter_vehicle(robot: str, cfg, contract) -> None:
    """The policy against the adapter's vehicle (VehicleFacts, read without connecting); a rotor-level
    policy on an adapter that streams only CTBR is refused with where it goes instead."""
    from hardware.adapters import adapter_classes
    from hardware.robot import check_vehicle
    from tether.contract import ContractError

    if contract.action.type == "rotor" and robot in ONBOARD_ONLY:
        raise UserError(f"--robot {robot}: rotor-level policies go onboard ({ONBOARD_ONLY[robot]}): export it "
                        f"with `tether export --onboard c` and build it into the firmware, or deploy a policy "
                        f"trained with action_space=ctbr")
    cls, _ = adapter_classes(robot)
    try:
        vehicle = cls(cfg).vehicle
    except (ValueError, TypeError) as e:
        raise UserError(f"--robot {robot}: its parameters are refused ({_one_line(e)}); fix robot_bridge:robot.* "
                        f"in --params or --ros-arg") from None
    if vehicle is None:  # not a quadrotor (an arm): the bridge maps only quadrotor actions so far
        kinds = ", ".join(sorted(cls(cfg).command_schema))
        raise UserError(f"--robot {robot}: the policy outputs {contract.action.type} commands for a quadrotor, but "
                        f"the {robot} adapter is not one (it takes {kinds}); deploy a quadrotor policy on a "
                        f"quadrotor adapter ({', '.join(n for n in robot_names() if n not in (robot, 'arm'))})")
    try:
        check_vehicle(contract, vehicle, f"the {robot} adapter")
    except ContractError as e:
        raise UserError(f"{e} (the {robot} adapter's vehicle comes from its parameters: --ros-arg "
                        f"robot_bridge:robot.NAME:=VALUE)") from None


def _knows(node: str, name: str) -> bool:
    from tether_deploy.params import NODE_PARAMS, param_specs

    return any(s.name == name for s in param_specs(NODE_PARAMS[node]))


# ------------------------------------------------------------------------------------- running


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


_LOG_PREFIX = re.compile(r"^\[(ERROR|FATAL)\] \[[\d.]+\] \[[^\]]*\]: ")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


class NodeGroup:
    """Child processes, each in its own session (the launcher decides the shutdown order), each ended by
    the kernel if the launcher dies (tether_deploy.child)."""

    def __init__(self, commands: list[tuple[str, list[str]]], env: dict[str, str], out=sys.stderr):
        self.commands, self.env, self.out = commands, env, out
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.last_error: dict[str, str] = {}
        """node -> its last error line (ROS ERROR/FATAL log, or the last line of a traceback)"""
        self._threads: list[threading.Thread] = []

    def _forward(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            self.out.write(f"[{name}] {line}")
            self.out.flush()
            text = line.strip()
            m = _LOG_PREFIX.match(text)
            if m:
                self.last_error[name] = text[m.end():]
            elif _EXCEPTION.match(text):
                self.last_error[name] = text

    def start(self) -> None:
        for name, argv in self.commands:
            interactive = name == "keyboard_teleop"
            proc = subprocess.Popen(argv, env=self.env, start_new_session=True,
                                    stdin=None if interactive else subprocess.DEVNULL,
                                    stdout=None if interactive else subprocess.PIPE,
                                    stderr=None if interactive else subprocess.STDOUT)
            if not interactive:
                t = threading.Thread(target=self._forward, args=(name, proc.stdout), daemon=True)
                t.start()
                self._threads.append(t)
            self.procs.append((name, proc))

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.poll() is not None]

    def stop(self, timeout_s: float = 8.0) -> dict[str, int]:
        """SIGINT each node in reverse start order; SIGKILL one that does not exit within timeout_s."""
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
        for t in self._threads:
            t.join(1.0)  # the last lines of every node are out before the summary
        return codes

    def reason(self, name: str) -> str:
        return self.last_error.get(name, "no error line in its log (see above)")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"


def run(args) -> int:
    plan = preflight(args)
    group = NodeGroup(plan.commands, node_env(args.domain_id))
    stop = threading.Event()
    why: list[str] = []

    def on_signal(signum, frame):
        why.append(signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    early: list[tuple[str, int]] = []
    try:
        group.start()
        pids = ", ".join(f"{n} (pid {p.pid})" for n, p in group.procs)
        print(f"[tether deploy] started {pids}; Ctrl-C stops", file=sys.stderr, flush=True)
        t_end = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            early = group.exited()
            if early:
                break
            stop.wait(0.2)
    finally:
        codes = group.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"[tether deploy] stopped: {', '.join(f'{n} {_describe_exit(c)}' for n, c in codes.items())}",
          file=sys.stderr)
    saved = f"; the log so far is in {args.record}" if args.record is not None else ""
    if early:
        name, code = early[0]
        if name == "keyboard_teleop" and code == 0:
            return 0  # `q` in the terminal: the person ended the run
        raise CommandFailed(f"{name} exited early ({_describe_exit(code)}): {group.reason(name)}; "
                            f"stopped the other nodes{saved}")
    if why and why[0] == "SIGINT":
        print("[tether deploy] interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [(n, c) for n, c in codes.items() if c != 0]
    if failed:
        name, code = failed[0]
        raise CommandFailed(f"{name} did not shut down cleanly ({_describe_exit(code)}): {group.reason(name)}{saved}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, CommandFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
