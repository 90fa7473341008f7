"""Fixtures for the ROS 2 tests: real node processes over DDS on loopback, one ROS domain per module.

Every process a fixture starts is stopped in its teardown (SIGINT, then SIGKILL after a timeout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "tether_deploy"
for p in (str(REPO), str(PKG), str(Path(__file__).parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

HOVER_FIXTURE = REPO / "tests" / "fixtures" / "hover_policy"

_domain_counter = [0]


def fresh_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test of this run uses (0..101 are valid with Fast DDS ports).

    Under pytest-xdist (`make test` runs two workers) each worker draws from its own residue class of
    10..99, so two workers never share a domain; the process id varies the start between runs."""
    _domain_counter[0] += 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slots = 90 // count
    return 10 + index + count * ((os.getpid() * 7 + _domain_counter[0] * 13) % slots)


class Proc:
    """A node process with its output captured (for assertions on log lines)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        self.lines: list[str] = []
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in iter(self.p.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)

    def stop(self, timeout_s: float = 5.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._t.join(2)
        return self.p.returncode


class Launcher:
    """Starts tether_deploy nodes as `python -m` processes with --ros-args parameters."""

    def __init__(self, domain_id: int):
        self.env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                        PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join([str(REPO), str(PKG), os.environ.get("PYTHONPATH", "")]))
        self.procs: list[Proc] = []

    def start(self, module: str, params: dict, name: str | None = None) -> Proc:
        argv = [sys.executable, "-m", f"tether_deploy.{module}", "--ros-args"]
        for k, v in params.items():
            if isinstance(v, bool):
                v = str(v).lower()
            elif isinstance(v, (list, tuple)):
                v = "[" + ",".join(repr(float(x)) if isinstance(x, float) else str(x) for x in v) + "]"
            argv += ["-p", f"{k}:={v}"]
        proc = Proc(name or module, argv, self.env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@pytest.fixture(scope="module")
def domain_id():
    return fresh_domain_id()


@pytest.fixture(scope="module")
def rclpy_context(domain_id):
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture
def launcher(domain_id):
    lch = Launcher(domain_id)
    yield lch
    lch.stop_all()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """The lead's exported hover policy when it is committed, else the linear PD hover policy."""
    if (HOVER_FIXTURE / "policy.onnx").is_file():
        return HOVER_FIXTURE
    from linear_policy import write_linear_hover_policy

    return write_linear_hover_policy(tmp_path_factory.mktemp("policy"), control_rate_hz=100.0)


@pytest.fixture(scope="module")
def linear_policy_dir(tmp_path_factory) -> Path:
    from linear_policy import write_linear_hover_policy

    return write_linear_hover_policy(tmp_path_factory.mktemp("linear"), control_rate_hz=100.0)
