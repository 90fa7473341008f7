"""`tether deploy` and the node parameters: one definition per parameter (tether_deploy.params), every
parameter file and launch file checked against it, and deploy's exit status and process lifetime with
real node processes (a clean run exits 0; a crash, a node killed mid-run exit 1; SIGKILL of the launcher
takes every node down)."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.ros2.conftest import fresh_domain_id

from tether_deploy.params import (NODE_PARAMS, ParameterError, check_overrides, node_params, param_specs,
                                  parameters_markdown, params_file_values)

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ros2_ws" / "src" / "tether_deploy"
FIXTURE = REPO / "tests" / "fixtures" / "hover_policy"


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("yaml_file", sorted((PKG / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_yaml_key_is_a_declared_parameter(yaml_file):
    data = yaml.safe_load(yaml_file.read_text())
    values = params_file_values(data, str(yaml_file))  # raises on an unknown node, name or bad value
    assert values, f"{yaml_file} sets nothing"
    for node, vals in values.items():
        names = {s.name for s in param_specs(NODE_PARAMS[node])}
        assert set(vals) <= names, set(vals) - names


def _launch_parameter_dicts(path: Path):
    """(node name, keys of each literal dict in its parameters=[...]) for every Node/LifecycleNode call."""
    for call in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") in ("Node", "LifecycleNode")):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        if getattr(kw.get("package"), "value", None) != "tether_deploy":
            continue
        name = kw["name"]
        for item in getattr(kw.get("parameters"), "elts", []):
            if isinstance(item, ast.Dict):
                node = name.value if isinstance(name, ast.Constant) else None
                yield node, [k.value for k in item.keys]


@pytest.mark.parametrize("launch_file", sorted((PKG / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_set_only_declared_parameters(launch_file):
    seen = 0
    for node, keys in _launch_parameter_dicts(launch_file):
        if node is None:  # the robot adapter slot: a name chosen at launch time
            node = "twin"
        names = {s.name for s in param_specs(NODE_PARAMS[node])}
        assert set(keys) <= names, (node, set(keys) - names)
        seen += 1
    assert seen >= 2


def test_defaults_round_trip_and_every_parameter_has_a_doc():
    for node, cls in NODE_PARAMS.items():
        specs = param_specs(cls)
        assert len({s.name for s in specs}) == len(specs), f"{node}: a parameter name appears twice"
        assert node_params(node, {s.name: s.default for s in specs}) == cls(), node
        undocumented = [s.name for s in specs if not s.doc]
        assert not undocumented, f"{node}: parameters without a one-line doc: {undocumented}"


def test_the_markdown_table_lists_every_parameter():
    table = parameters_markdown()
    for node, cls in NODE_PARAMS.items():
        for s in param_specs(cls):
            assert f"| {node} | `{s.name}` |" in table
    assert "| twin | `weak_motor.gain` | float | `1.0` |" in table


@pytest.mark.parametrize("node, overrides, words", [
    ("policy_runner", {"safe_behavior": "land"}, ("policy_runner", "safe_behavior", "did you mean 'safe_behaviour'")),
    ("policy_runner", {"safe_behaviour": "hover"}, ("safe_behaviour", "hold", "land", "motors_off")),
    ("policy_runner", {"goal_w": "[0, 0]"}, ("goal_w", "3")),
    ("policy_runner", {"realtime_priority": "150"}, ("realtime_priority", "1..99")),
    ("policy_runner", {"autostart": "maybe"}, ("autostart", "true or false")),
    ("twin", {"latency_s": ".nan"}, ("latency_s", "finite")),
    ("twin", {"preset": "cf3"}, ("preset", "crazyflie2x")),
    ("twin", {"weak_motor.index": "7"}, ("weak_motor",)),
    ("twin", {"seed": "1.5"}, ("seed", "integer")),
    ("recorder", {"compression": "gzip"}, ("compression", "zstd")),
    ("operator", {"handback_m": "0.5"}, ("handback_m", "takeover_m")),
    ("keyboard_teleop", {"rate_hz": "0"}, ("rate_hz", "> 0")),
    ("runner", {}, ("runner", "policy_runner")),
])
def test_check_overrides_names_node_parameter_and_what_is_allowed(node, overrides, words):
    with pytest.raises(ParameterError) as e:
        check_overrides(node, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_valid_overrides_pass_and_keep_their_types():
    check_overrides("policy_runner", {"safe_behaviour": "land", "goal_w": "[0, 0, 2]", "realtime_priority": "50"})
    p = node_params("twin", {"weak_motor.index": 2, "weak_motor.gain": 0.7, "init_pos_w": [0, 0, 1],
                             "ground_z_m": [], "rotor_gain": [1, 1, 0.8, 1]})
    assert p.weak_motor.index == 2 and p.wind_gust is None and p.ground_z_m is None
    assert p.init_pos_w == (0.0, 0.0, 1.0) and isinstance(p.init_pos_w[0], float)
    assert p.rotor_gain == (1.0, 1.0, 0.8, 1.0)


# --------------------------------------------------------------------------- real processes


def _start_deploy(tmp_path: Path, *extra: str, domain: int) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONPATH=os.pathsep.join([str(REPO), str(PKG)]))
    return subprocess.Popen([sys.executable, "-m", "tether_app.cli", "deploy", "--policy", str(FIXTURE), *extra],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _node_pids(proc: subprocess.Popen, timeout_s: float = 60.0) -> tuple[dict[str, int], list[str]]:
    """Read the launcher's output up to its 'started ...' line: node name -> pid."""
    lines, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("[tether deploy] started"):
            return {n: int(p) for n, p in re.findall(r"(\w+) \(pid (\d+)\)", line)}, lines
    raise AssertionError("deploy printed no 'started' line:\n" + "".join(lines))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (dead) parent's reaper counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_line(proc: subprocess.Popen, pattern: str, timeout_s: float = 60.0) -> list[str]:
    lines, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(lines))


def test_sigkill_of_the_launcher_takes_every_node_down(tmp_path):
    proc = _start_deploy(tmp_path, "--record", str(tmp_path / "bag"), domain=fresh_domain_id())
    try:
        pids, _ = _node_pids(proc)
        assert set(pids) == {"recorder", "twin", "policy_runner"}
        _wait_line(proc, r"first command: physics running")  # every node is up and flying
        assert all(_alive(p) for p in pids.values())
        # the recorder has flushed at least once (its first chunk may follow the first command by a
        # second on a loaded machine): what is recorded from here on must not be lost by the kill
        end = time.monotonic() + 15.0
        while time.monotonic() < end and not (tmp_path / "bag" / "metadata.yaml").is_file():
            time.sleep(0.1)
        time.sleep(2.0)  # a flight of a few recorder flushes
        proc.kill()
        proc.wait(10)
        end = time.monotonic() + 15.0
        while time.monotonic() < end and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        left = {n: p for n, p in pids.items() if _alive(p)}
        assert not left, f"nodes outlived their launcher: {left}"
        # the recorder shut down (SIGTERM from the kernel): the bag has its metadata and reads whole
        from policies.hil.dataset import read_messages

        assert (tmp_path / "bag" / "metadata.yaml").is_file()
        assert read_messages(tmp_path / "bag").get("/state/odom"), "the bag lost the flight"
    finally:
        proc.kill()
        for p in locals().get("pids", {}).values():
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_clean_run_exits_0_and_a_killed_recorder_exits_1(tmp_path):
    proc = _start_deploy(tmp_path, "--record", str(tmp_path / "bag1"), "--duration", "6", domain=fresh_domain_id())
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "error:" not in out
    assert (tmp_path / "bag1" / "metadata.yaml").is_file()

    proc = _start_deploy(tmp_path, "--record", str(tmp_path / "bag2"), domain=fresh_domain_id())
    try:
        pids, _ = _node_pids(proc)
        _wait_line(proc, r"first command: physics running")
        os.kill(pids["recorder"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "recorder exited early (killed by SIGKILL)" in errors[0], out
    assert "Traceback" not in out


def test_a_crash_of_the_twin_is_logged_recorded_and_exits_1(tmp_path):
    # a dead motor: the vehicle falls and hits the ground
    proc = _start_deploy(tmp_path, "--record", str(tmp_path / "bag"), "--duration", "60",
                         "--ros-arg", "twin:weak_motor.index:=0", "--ros-arg", "twin:weak_motor.gain:=0.0", domain=fresh_domain_id())
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: twin exited early (status 1): crashed: hit the ground"), out
    assert "Traceback" not in out

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    crashed = []
    with open(next((tmp_path / "bag").glob("*.mcap")), "rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            if channel.topic.endswith("twin/crashed"):
                crashed.append(msg.data)
    assert len(crashed) == 1 and crashed[0].startswith("hit the ground at"), crashed


def _run_node(module: str, *params: str, domain: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONPATH=os.pathsep.join([str(REPO), str(PKG)]))
    argv = [sys.executable, "-m", f"tether_deploy.{module}", "--ros-args"]
    for p in params:
        argv += ["-p", p]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_an_invalid_parameter_ends_the_node_with_one_fatal_line():
    r = _run_node("runner_node", "safe_behaviour:=hover", domain=fresh_domain_id())
    assert r.returncode == 2, r.stderr
    fatal = [ln for ln in (r.stdout + r.stderr).splitlines() if "[FATAL]" in ln]
    assert len(fatal) == 1 and "policy_runner: safe_behaviour must be one of" in fatal[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "refused" not in r.stderr  # not a policy refusal


def test_the_twin_node_refuses_another_vehicle_with_the_deploy_message():
    from hardware.robot import check_vehicle
    from hardware.twin_config import TwinConfig, twin_vehicle
    from tether.contract import ContractError, load_policy_dir

    _, contract = load_policy_dir(FIXTURE)
    with pytest.raises(ContractError) as expected:
        check_vehicle(contract, twin_vehicle(TwinConfig(preset="px4_1kg")), "the twin")
    r = _run_node("twin_node", f"policy_dir:={FIXTURE}", "preset:=px4_1kg", domain=fresh_domain_id())
    assert r.returncode == 2, r.stderr
    fatal = [ln for ln in (r.stdout + r.stderr).splitlines() if "[FATAL]" in ln]
    assert len(fatal) == 1 and str(expected.value) in fatal[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
