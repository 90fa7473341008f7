"""``tether estop | policy | lifecycle | status``: operate a running stack where there is no ``ros2`` CLI.

Each command is a short-lived rclpy client on the same DDS domain as the nodes (``--domain-id``, else
ROS_DOMAIN_ID, else 0; discovery on this machine only unless ROS_AUTOMATIC_DISCOVERY_RANGE says
otherwise, as for ``tether deploy``). It waits for the policy runner at most ``--timeout`` seconds:

  tether estop trigger          press and release the e-stop (std_msgs/Bool on ``estop``); the runner latches
                                it: motors off until a reset
  tether estop reset            call ``runner/reset_estop`` (std_srvs/Trigger) and print the runner's answer
  tether policy load DIR        check DIR holds an exported policy, offer it on ``runner/load_policy`` and
                                wait for ``runner/active_policy`` to show its sha256 or the runner's refusal
  tether lifecycle get|configure|activate|deactivate|cleanup|shutdown
                                the runner's lifecycle (``<node>/get_state``, ``<node>/change_state``)
  tether status [--json]        lifecycle state, mode, active policy, the runner's last diagnostics

Exit status (tether.errors): 0 done; 1 nothing answered within --timeout, or the runner refused (a reset
while an e-stop input is still pressed, a policy it does not accept, a failed transition); 2 a bad
argument or a transition impossible from the current state (nothing was sent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from tether.errors import CommandFailed, UserError

DEFAULT_NODE = "policy_runner"
LIFECYCLE = ("get", "configure", "activate", "deactivate", "cleanup", "shutdown")
MAX_DOMAIN_ID = 232  # the largest the DDS port mapping allows (ROS 2 docs: "Domain ID")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


# ------------------------------------------------------------------------------------ arguments

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _domain_id(text: str, where: str = "--domain-id") -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_DOMAIN_ID:
        raise argparse.ArgumentTypeError(f"{where} must be an integer in 0..{MAX_DOMAIN_ID} (0..101 on Linux keeps "
                                         f"clear of the ephemeral ports), got {text!r}")
    return value


def _node_name(text: str) -> str:
    if not re.fullmatch(_NAME, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ROS node name (letters, digits, _; not starting "
                                         "with a digit)")
    return text


def _namespace(text: str) -> str:
    ns = "/" + text.strip("/")
    if ns != "/" and not re.fullmatch(rf"(/{_NAME})+", ns):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ROS namespace (e.g. /drone1)")
    return ns


def add_parser(subparsers) -> None:
    """Registers estop, policy, lifecycle and status (cli.EXTERNAL_COMMANDS names this module once)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--domain-id", type=_domain_id, default=None,
                        help="ROS_DOMAIN_ID of the stack (default: $ROS_DOMAIN_ID, else 0)")
    common.add_argument("--namespace", type=_namespace, default="/", help="namespace of the stack (default /)")
    common.add_argument("--node", type=_node_name, default=DEFAULT_NODE,
                        help=f"name of the policy runner node (default {DEFAULT_NODE})")

    def timeout(p, default: float) -> None:
        p.add_argument("--timeout", type=_seconds, default=default,
                       help=f"seconds to wait for the runner's answer (default {default:g})")

    epilog = "exit status: 0 done, 1 no answer or refused, 2 bad argument (nothing sent)"
    p = subparsers.add_parser("estop", help="trigger or reset the runner's e-stop (no ros2 CLI needed)",
                              description="Trigger or reset the policy runner's latched e-stop.", epilog=epilog)
    sub = p.add_subparsers(dest="estop_action", required=True, metavar="{trigger,reset}")
    q = sub.add_parser("trigger", parents=[common], epilog=epilog,
                       help="press and release the e-stop (std_msgs/Bool on estop): motors off until a reset")
    timeout(q, 5.0)
    q.set_defaults(func=cmd_estop_trigger)
    q = sub.add_parser("reset", parents=[common], epilog=epilog,
                       help="call runner/reset_estop and print the answer (refused while an e-stop input is pressed)")
    timeout(q, 5.0)
    q.set_defaults(func=cmd_estop_reset)

    p = subparsers.add_parser("policy", help="hot-swap the running policy (no ros2 CLI needed)",
                              description="Offer a policy to the running policy runner.", epilog=epilog)
    sub = p.add_subparsers(dest="policy_action", required=True, metavar="{load}")
    q = sub.add_parser("load", parents=[common], epilog=epilog,
                       help="check DIR, offer it on runner/load_policy, wait for runner/active_policy's verdict")
    q.add_argument("dir", type=Path, help="directory with policy.onnx + policy.json (tether export)")
    timeout(q, 15.0)
    q.set_defaults(func=cmd_policy_load)

    p = subparsers.add_parser("lifecycle", parents=[common], epilog=epilog,
                              help="get or change the runner's lifecycle state (no ros2 CLI needed)",
                              description="get: print the state. The others: one lifecycle transition "
                                          "(unconfigured -configure-> inactive -activate-> active; "
                                          "deactivate, cleanup go back; shutdown from any).")
    p.add_argument("transition", choices=LIFECYCLE, help="get | configure | activate | deactivate | cleanup | shutdown")
    timeout(p, 10.0)
    p.set_defaults(func=cmd_lifecycle)

    p = subparsers.add_parser("status", parents=[common], epilog=epilog,
                              help="the runner's lifecycle state, mode, active policy and diagnostics")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    timeout(p, 5.0)
    p.set_defaults(func=cmd_status)


# ------------------------------------------------------------------------------------ the client

class RosClient:
    """One rclpy context, node and executor for one command, on the stack's domain and namespace."""

    def __init__(self, args):
        from tether.deploy import node_env

        if args.domain_id is not None:
            domain = args.domain_id
        else:
            try:
                domain = _domain_id(os.environ.get("ROS_DOMAIN_ID", "0") or "0", where="ROS_DOMAIN_ID")
            except argparse.ArgumentTypeError as e:
                raise UserError(f"{e}; set it to the stack's domain or pass --domain-id") from e
        # the discovery settings tether deploy gives its nodes, applied to this process before rclpy starts
        env = node_env(domain)
        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION"):
            if key in env:
                os.environ[key] = env[key]
        try:
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
            from rclpy.signals import SignalHandlerOptions
        except ImportError as e:
            raise UserError(f"this command needs rclpy ({e}); install the ROS 2 wheels: "
                            "pip install -e '.[ros-wheels]', or source a ROS 2 Jazzy install") from e

        self.args, self.domain, self.timeout_s = args, domain, args.timeout
        self.node_name, self.namespace = args.node, args.namespace
        self.deadline = time.monotonic() + args.timeout
        self.ctx = rclpy.Context()
        # no rclpy signal handler: Ctrl-C is a KeyboardInterrupt that tether's main turns into exit 130
        rclpy.init(args=[], context=self.ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"tether_cli_{os.getpid()}", namespace=self.namespace, context=self.ctx,
                                      use_global_arguments=False, enable_rosout=False,
                                      start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def spin_until(self, pred, until: float | None = None) -> bool:
        end = self.deadline if until is None else until
        while True:
            if pred():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return bool(pred())
            self.executor.spin_once(timeout_sec=min(0.05, left))

    def spin_for(self, seconds: float) -> None:
        end = min(time.monotonic() + seconds, self.deadline)
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def call(self, srv_type, name: str, request, grace_s: float = 0.0):
        """Call a service of the runner; None when it is not there or does not answer in time."""
        client = self.node.create_client(srv_type, name)
        end = self.deadline + grace_s
        if not self.spin_until(client.service_is_ready, until=end):
            return None
        future = client.call_async(request)
        self.spin_until(future.done, until=end)
        return future.result() if future.done() else None

    def has_endpoint(self, topic: str, kind: str) -> bool:
        """The runner node (by name) subscribes ('sub') or publishes ('pub') ``topic``."""
        name = self.node.resolve_topic_name(topic)
        infos = (self.node.get_subscriptions_info_by_topic(name) if kind == "sub"
                 else self.node.get_publishers_info_by_topic(name))
        return any(i.node_name == self.node_name and i.node_namespace == self.namespace for i in infos)

    def lifecycle_state(self, grace_s: float = 0.0) -> str | None:
        from lifecycle_msgs.srv import GetState

        r = self.call(GetState, f"{self.node_name}/get_state", GetState.Request(), grace_s)
        return None if r is None else r.current_state.label

    def no_answer(self, what: str, verb: str = "answer") -> CommandFailed:
        """The one-line failure when ``what`` did not answer (or appear); says whether the runner is there."""
        where = f"domain {self.domain}" + ("" if self.namespace == "/" else f", namespace {self.namespace}")
        # a fresh process may still be discovering the graph when the wait ran out: give the node a
        # moment to appear before saying nothing is there
        present = self.spin_until(lambda: any(n == self.node_name and ns == self.namespace
                                              for n, ns in self.node.get_node_names_and_namespaces()),
                                  until=time.monotonic() + 2.0)
        if present:
            state = self.lifecycle_state(grace_s=1.0)
            hint = ("configure it first: `tether lifecycle configure`" if state == "unconfigured"
                    else "see `tether status` and its log")
            return CommandFailed(f"{self.node_name} is on {where} (lifecycle state {state or 'unknown'}) but "
                                 f"{what} did not {verb} within {self.timeout_s:g} s; {hint}")
        local = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "") == "LOCALHOST"
        return CommandFailed(f"no {self.node_name} answered on {where} within {self.timeout_s:g} s (waited for "
                             f"{what}); is "
                             f"`tether deploy` running? same ROS_DOMAIN_ID?"
                             + (" (discovery is limited to this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)"
                                if local else ""))

    def close(self) -> None:
        import rclpy

        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def _with_client(args, body):
    ros = RosClient(args)
    try:
        return body(ros)
    finally:
        ros.close()


class _Latest:
    """Collects the messages of one subscription (latched topics deliver their last one on joining)."""

    def __init__(self, ros: RosClient, msg_type, topic: str, qos_profile, keep=lambda m: True):
        self.msgs: list = []
        ros.node.create_subscription(msg_type, topic, lambda m: self.msgs.append(m) if keep(m) else None,
                                     qos_profile)

    @property
    def last(self):
        return self.msgs[-1] if self.msgs else None


# ------------------------------------------------------------------------------------- commands

def cmd_estop_reset(args) -> int:
    def body(ros: RosClient) -> int:
        from std_srvs.srv import Trigger

        from tether_deploy import qos

        answer = ros.call(Trigger, qos.RESET_ESTOP, Trigger.Request())
        if answer is None:
            raise ros.no_answer(f"service {ros.node.resolve_service_name(qos.RESET_ESTOP)}")
        if not answer.success:
            raise CommandFailed(f"{args.node} refused the e-stop reset: {answer.message}")
        print(f"{args.node}: {answer.message}")
        return 0

    return _with_client(args, body)


def _diag_of(node_name: str):
    return lambda m: any(st.hardware_id == node_name for st in m.status)


def _diag_values(msg, node_name: str) -> dict | None:
    if msg is None:
        return None
    st = next(st for st in msg.status if st.hardware_id == node_name)
    level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
    return {"level": {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}.get(level, str(level)), "message": st.message,
            "values": {kv.key: kv.value for kv in st.values}}


def cmd_estop_trigger(args) -> int:
    def body(ros: RosClient) -> int:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.duration import Duration
        from std_msgs.msg import Bool, String

        from tether_deploy import qos

        pub = ros.node.create_publisher(Bool, qos.ESTOP, qos.COMMAND)
        mode = _Latest(ros, String, qos.RUNNER_MODE, qos.LATCHED)
        diag = _Latest(ros, DiagnosticArray, qos.DIAGNOSTICS, qos.DIAGNOSTICS_QOS, keep=_diag_of(args.node))
        topic = ros.node.resolve_topic_name(qos.ESTOP)
        if not ros.spin_until(lambda: ros.has_endpoint(qos.ESTOP, "sub")):
            raise ros.no_answer(f"its subscription to {topic}", verb="appear")
        n_mode, n_diag = len(mode.msgs), len(diag.msgs)
        pub.publish(Bool(data=True))
        if not pub.wait_for_all_acked(Duration(seconds=max(ros.remaining(), 0.5))):
            raise CommandFailed(f"the e-stop was sent on {topic} but not acknowledged within {args.timeout:g} s; "
                                f"it may not have latched: check `tether status`")

        def latched() -> bool:
            return any(m.data.startswith("estop") for m in mode.msgs[n_mode:]) or any(
                (_diag_values(m, args.node) or {}).get("values", {}).get("estop_latched") == "True"
                for m in diag.msgs[n_diag:])

        # The release follows only once the runner has taken the press (its reader keeps the newest
        # sample only): confirmed by its mode or diagnostics, else after a second of processing time.
        confirmed = ros.spin_until(latched, until=min(time.monotonic() + 1.0, ros.deadline))
        pub.publish(Bool(data=False))  # released: the latch holds, and a reset is not refused for a held input
        pub.wait_for_all_acked(Duration(seconds=max(ros.remaining(), 0.5)))
        how = "runner mode: estop" if confirmed else "acknowledged; the runner is not ticking, so no mode confirms it"
        print(f"{args.node}: e-stop latched, motors off ({how}); `tether estop reset` clears it")
        return 0

    return _with_client(args, body)


def _check_policy_dir(path: Path):
    """The contract and sha256 of an exported policy folder, or a UserError saying what is wrong."""
    from tether.contract import ContractError, load_policy_dir

    if not path.exists():
        raise UserError(f"policy folder {path} does not exist; give the folder `tether export` wrote "
                        "(policy.onnx + policy.json)")
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give the folder that holds policy.onnx + policy.json")
    try:
        _, contract = load_policy_dir(path)
    except ContractError as e:
        raise UserError(f"{path} holds no loadable policy: {e}; export one with `tether export`") from e
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}; check the folder's permissions") from e
    return contract


def cmd_policy_load(args) -> int:
    path = args.dir.expanduser().resolve()  # the runner is another process: it needs an absolute path
    contract = _check_policy_dir(path)
    sha = contract.provenance["onnx_sha256"]

    def body(ros: RosClient) -> int:
        from std_msgs.msg import String

        from tether_deploy import qos

        pub = ros.node.create_publisher(String, qos.LOAD_POLICY, qos.COMMAND)
        status = _Latest(ros, String, qos.ACTIVE_POLICY, qos.LATCHED)
        topic = ros.node.resolve_topic_name(qos.LOAD_POLICY)
        # a configured runner subscribes to load_policy and has published its active policy (latched)
        if not ros.spin_until(lambda: ros.has_endpoint(qos.LOAD_POLICY, "sub") and status.msgs):
            raise ros.no_answer(f"its subscription to {topic} and its latched {qos.ACTIVE_POLICY}", verb="appear")
        before, n = status.last.data, len(status.msgs)
        pub.publish(String(data=str(path)))

        def verdict():
            for m in status.msgs[n:]:
                if m.data == f"active {sha} {path}" or m.data.startswith(f"rejected {path}:"):
                    return m.data
            return None

        if not ros.spin_until(lambda: verdict() is not None):
            raise CommandFailed(f"{args.node} gave no verdict on {path} within {args.timeout:g} s (a slow load?); "
                                f"check `tether status`, or retry with a longer --timeout")
        answer = verdict()
        if answer.startswith("rejected"):
            keeps = before.split(" ", 2)[1][:12] if before.startswith("active ") else "no policy"
            raise CommandFailed(f"{args.node} refused {path}: {answer.split(': ', 1)[1]} (it keeps running {keeps})")
        print(f"{args.node}: runs {path} (sha256 {sha[:12]})")
        return 0

    return _with_client(args, body)


def cmd_lifecycle(args) -> int:
    def body(ros: RosClient) -> int:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions
        from std_msgs.msg import String

        from tether_deploy import qos

        status = _Latest(ros, String, qos.ACTIVE_POLICY, qos.LATCHED)
        state = ros.lifecycle_state()
        if state is None:
            raise ros.no_answer(f"service {ros.node.resolve_service_name(f'{args.node}/get_state')}")
        if args.transition == "get":
            print(f"{args.node}: {state}")
            return 0
        avail = ros.call(GetAvailableTransitions, f"{args.node}/get_available_transitions",
                         GetAvailableTransitions.Request())
        if avail is None:
            raise ros.no_answer(f"service {args.node}/get_available_transitions")
        labels = sorted({t.transition.label for t in avail.available_transitions})
        if args.transition not in labels:
            raise UserError(f"{args.node} is {state}: {args.transition} is not possible from there; possible: "
                            f"{', '.join(labels) or 'none (restart the node)'}")
        ros.spin_for(0.2)  # the latched active_policy, so that a refusal below can be told from an old one
        n = len(status.msgs)
        answer = ros.call(ChangeState, f"{args.node}/change_state",
                          ChangeState.Request(transition=Transition(label=args.transition)))
        if answer is None:
            raise CommandFailed(f"{args.node} did not finish {args.transition} within {args.timeout:g} s (it may "
                                f"still); check `tether lifecycle get`")
        after = ros.lifecycle_state(grace_s=2.0) or "unknown"
        if not answer.success:
            refusals = [m.data for m in status.msgs[n:] if m.data.startswith("rejected")]
            why = refusals[-1] if refusals else "see its log"
            raise CommandFailed(f"{args.node} failed to {args.transition} ({state} -> {after}): {why}")
        print(f"{args.node}: {state} -> {after}")
        return 0

    return _with_client(args, body)


def cmd_status(args) -> int:
    def body(ros: RosClient) -> int:
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String

        from tether_deploy import qos

        mode = _Latest(ros, String, qos.RUNNER_MODE, qos.LATCHED)
        policy = _Latest(ros, String, qos.ACTIVE_POLICY, qos.LATCHED)
        diag = _Latest(ros, DiagnosticArray, qos.DIAGNOSTICS, qos.DIAGNOSTICS_QOS, keep=_diag_of(args.node))
        state = ros.lifecycle_state()
        if state is None:
            raise ros.no_answer(f"service {ros.node.resolve_service_name(f'{args.node}/get_state')}")
        ros.spin_for(0.3)  # endpoint discovery trails the service's; latched messages arrive on joining

        def settled() -> bool:
            latched = all(sub.msgs or not ros.has_endpoint(topic, "pub")
                          for sub, topic in ((mode, qos.RUNNER_MODE), (policy, qos.ACTIVE_POLICY)))
            return latched and (bool(diag.msgs) or state != "active")  # periodic diagnostics only while active

        ros.spin_until(settled)
        report = {"node": args.node, "namespace": args.namespace, "domain_id": ros.domain, "lifecycle": state,
                  "mode": mode.last.data if mode.last else None,
                  "active_policy": policy.last.data if policy.last else None,
                  "diagnostics": _diag_values(diag.last, args.node)}
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        d = report["diagnostics"]
        print(f"{args.node} (domain {ros.domain}): {state}")
        print(f"  mode:          {report['mode'] or '-'}")
        print(f"  policy:        {report['active_policy'] or '-'}")
        if d is None:
            print("  diagnostics:   - (none received; the runner sends them periodically only while active)")
        else:
            print(f"  diagnostics:   {d['level']}: {d['message']}")
            print("                 " + ", ".join(f"{k}={v}" for k, v in d["values"].items() if v != ""))
        return 0

    return _with_client(args, body)


def main(argv: list[str] | None = None) -> int:
    """``python -m tether.operate status``: the robot side's command line (no tether_app on a robot)."""
    from tether.robot_cli import main as robot_main

    return robot_main(argv)


if __name__ == "__main__":
    sys.exit(main())
