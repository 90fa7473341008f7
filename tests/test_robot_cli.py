"""``tether-robot``, the robot side's command line, runs where torch, sim/, policies/, calibration/ and
tether_app/ cannot be imported: its help, a bad argument (one error line, exit 2), and ``ping`` (the
containers' health check) against a real recorder node over DDS: exit 0 once the node is on the graph,
exit 1 naming the node that is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from blocked_imports import BLOCK_PRELUDE

from tests.ros2.conftest import fresh_domain_id

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "sim", "policies", "calibration", "tether_app")

# tether-robot's main in a process where the blocked packages raise on import, whatever is installed
_RUN_BLOCKED = BLOCK_PRELUDE + r"""
from tether.robot_cli import main
sys.exit(main(sys.argv[2:]))
"""


def robot_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN_BLOCKED, ",".join(BLOCKED), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def test_help_and_a_bad_argument_without_the_training_side():
    ok = robot_cli("--help")
    assert ok.returncode == 0, ok.stderr
    for command in ("deploy", "estop", "policy", "lifecycle", "status", "ping"):
        assert command in ok.stdout
    bad = robot_cli("ping", "not a node")
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "Traceback" not in bad.stderr, bad.stderr


def test_python_m_tether_operate_needs_no_application_layer():
    proc = subprocess.run([sys.executable, "-c", _RUN_BLOCKED.replace(
        "from tether.robot_cli import main", "from tether.operate import main"), ",".join(BLOCKED), "status", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "--json" in proc.stdout, proc.stderr


@pytest.mark.ros
def test_ping_finds_a_real_node_on_the_graph_and_names_a_missing_one(tmp_path):
    domain = str(fresh_domain_id())
    env = {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    node = subprocess.Popen([sys.executable, "-m", "tether_deploy.recorder_node", "--ros-args", "-r", "__node:=recorder",
                             "-p", f"output:={tmp_path / 'bag'}"], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # discovery under load can take seconds: the timeout is the wait, not a bound on it
        found = robot_cli("ping", "recorder", "--timeout", "60", env=env)
        assert found.returncode == 0, found.stdout + found.stderr
        assert f"domain {domain}" in found.stdout
        missing = robot_cli("ping", "recorder", "no_such_node", "--timeout", "3", env=env)
        assert missing.returncode == 1, missing.stdout + missing.stderr
        lines = [ln for ln in missing.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "no_such_node" in lines[0] and "recorder," not in lines[0], missing.stderr
        elsewhere = robot_cli("ping", "recorder", "--timeout", "3", "--domain-id", str((int(domain) + 1) % 100), env=env)
        assert elsewhere.returncode == 1, "a node on another ROS domain must not answer"
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(5)
