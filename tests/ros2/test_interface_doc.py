"""docs/ROS_INTERFACE.md cannot drift: it is regenerated and compared, and the tables it is generated from
(tether_deploy/interface.py) are compared with the graph of the running nodes (real processes over DDS)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from tether_deploy import interface as itf
from tether_deploy.interface_doc import DOC, generate

# what rclpy adds to every node (parameters, type descriptions, logging) and to a lifecycle node
_STANDARD_TOPICS = {"/rosout", "/parameter_events"}
_STANDARD_SERVICE_SUFFIXES = ("/describe_parameters", "/get_parameter_types", "/get_parameters",
                              "/list_parameters", "/set_parameters", "/set_parameters_atomically",
                              "/get_type_description", "/change_state", "/get_available_states",
                              "/get_available_transitions", "/get_state", "/get_transition_graph")


def test_the_document_is_what_the_code_generates():
    assert DOC.is_file(), f"{DOC} is missing: run `python -m tether_deploy.interface_doc`"
    assert DOC.read_text() == generate(), (
        f"{DOC} differs from the code (interface.py, qos.py, params.py, runner_core.py, tether/contract.py): "
        "run `python -m tether_deploy.interface_doc` and commit the result")


def test_interface_tables_are_consistent():
    for node in itf.NODES:
        for t in node.subscribes + node.publishes:
            assert t.msg_class.__name__ == t.type.split("/")[-1], t
            t.profile  # noqa: B018  the named QoS profile exists in qos.py
        for t in node.services + node.clients:
            assert t.msg_class.__name__ == t.type.split("/")[-1] and not t.qos, t
    from tether_deploy.recorder_node import RECORDED

    assert set(RECORDED) == {t.name for t in itf.RECORDER.subscribes}
    for name, (cls, _, offered) in RECORDED.items():
        publisher = next(t for n in itf.NODES if n is not itf.RECORDER for t in n.publishes + n.image_publishes
                         if t.name == name)
        assert cls is publisher.msg_class and offered == publisher.profile, name


def _abs(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def _declared(node: itf.NodeInterface) -> dict[str, set[tuple[str, str]]]:
    return {"publishes": {(_abs(t.name), t.type) for t in node.publishes},
            "subscribes": {(_abs(t.name), t.type) for t in node.subscribes},
            "services": {(_abs(t.name), t.type) for t in node.services},
            "clients": {(_abs(t.name), t.type) for t in node.clients}}


def _observed(probe, name: str) -> dict[str, set[tuple[str, str]]] | None:
    """None while the node is not discovered yet."""
    if name not in probe.get_node_names():
        return None

    def keep(entries, services=False):
        out = set()
        for topic, types in entries:
            if topic in _STANDARD_TOPICS or topic == f"/{name}/transition_event":
                continue
            if services and topic.endswith(_STANDARD_SERVICE_SUFFIXES):
                continue
            out |= {(topic, t) for t in types}
        return out

    try:
        return {"publishes": keep(probe.get_publisher_names_and_types_by_node(name, "/")),
                "subscribes": keep(probe.get_subscriber_names_and_types_by_node(name, "/")),
                "services": keep(probe.get_service_names_and_types_by_node(name, "/"), True),
                "clients": keep(probe.get_client_names_and_types_by_node(name, "/"), True)}
    except Exception as e:  # noqa: BLE001  NodeNameNonExistentError while discovery is under way
        if type(e).__name__ == "NodeNameNonExistentError":
            return None
        raise


def _start_keyboard_on_a_pty(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "tether_deploy.keyboard_teleop"], env=env, stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return p, master


def test_the_running_nodes_have_exactly_the_declared_interface(launcher, rclpy_context, linear_policy_dir, tmp_path):
    from rclpy.node import Node

    launcher.start("runner_node", {"policy_dir": str(linear_policy_dir), "autostart": True})
    launcher.start("twin_node", {"policy_dir": str(linear_policy_dir)})
    launcher.start("bridge_node", {"adapter": "twin", "policy_dir": str(linear_policy_dir)})
    launcher.start("recorder_node", {"output": str(tmp_path / "bag")})
    launcher.start("operator_node", {})
    keyboard, master = _start_keyboard_on_a_pty(launcher.env)
    probe = Node("interface_probe", context=rclpy_context)
    try:
        expected = {n.node: _declared(n) for n in itf.NODES}
        observed: dict = {}
        deadline = time.monotonic() + 45.0
        while time.monotonic() < deadline:
            observed = {n: _observed(probe, n) for n in expected}
            if observed == expected:
                break
            time.sleep(0.5)
        for n in expected:
            assert observed[n] is not None, f"node {n} never appeared in the graph"
            for kind in expected[n]:
                extra = sorted(observed[n][kind] - expected[n][kind])
                missing = sorted(expected[n][kind] - observed[n][kind])
                assert not extra and not missing, (
                    f"{n} {kind}: running but not in interface.py {extra}; in interface.py but not running "
                    f"{missing}. Declare it in tether_deploy/interface.py and run python -m tether_deploy.interface_doc")
        # reliability and durability as declared, for every publisher of every node
        for node in itf.NODES:
            for t in node.publishes:
                infos = [i for i in probe.get_publishers_info_by_topic(_abs(t.name)) if i.node_name == node.node]
                assert infos, (node.node, t.name)
                declared = t.profile
                for info in infos:
                    got = info.qos_profile
                    assert (got.reliability, got.durability) == (declared.reliability, declared.durability), \
                        (node.node, t.name, got, declared)
                    if t.deadline:
                        assert got.deadline.nanoseconds > 0, (node.node, t.name, "no deadline offered")
    finally:
        probe.destroy_node()
        if keyboard.poll() is None:
            keyboard.send_signal(signal.SIGINT)
            try:
                keyboard.wait(10)
            except subprocess.TimeoutExpired:
                keyboard.kill()
        os.close(master)


@pytest.mark.parametrize("argv", [["--check"]])
def test_the_generator_check_mode_writes_nothing(tmp_path, argv):
    from tether_deploy.interface_doc import main

    out = tmp_path / "doc.md"
    assert main(argv + ["--out", str(out)]) == 1 and not out.exists()
    assert main(["--out", str(out)]) == 0 and main(argv + ["--out", str(out)]) == 0
