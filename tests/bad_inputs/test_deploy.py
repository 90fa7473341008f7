"""Bad inputs to ``tether deploy``: each is refused before any node starts (exit 2, one ``error:`` line
naming the problem and the fix, nothing written)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.bad_inputs.harness import REPO_ROOT, BadInput, check_bad_input

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hover_policy"


def _policy(tmp: Path) -> Path:
    dst = tmp / "policy"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit_contract(tmp: Path, edit) -> None:
    path = _policy(tmp) / "policy.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _drop(name: str):
    def setup(tmp: Path) -> None:
        (_policy(tmp) / name).unlink()
    return setup


def _truncated_onnx(tmp: Path) -> None:
    onnx = _policy(tmp) / "policy.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])


def _corrupt_onnx_with_matching_hash(tmp: Path) -> None:
    p = _policy(tmp)
    (p / "policy.onnx").write_bytes(b"\x08\x07not an onnx graph" * 20)
    d = json.loads((p / "policy.json").read_text())
    d["provenance"]["onnx_sha256"] = hashlib.sha256((p / "policy.onnx").read_bytes()).hexdigest()
    (p / "policy.json").write_text(json.dumps(d))


def _params(text: str):
    def setup(tmp: Path) -> None:
        _policy(tmp)
        (tmp / "params.yaml").write_text(text)
    return setup


def _existing_record(tmp: Path) -> None:
    _policy(tmp)
    (tmp / "bag").mkdir()
    (tmp / "bag" / "bag_0.mcap").write_bytes(b"an earlier run")


def _record_is_a_file(tmp: Path) -> None:
    _policy(tmp)
    (tmp / "bag").write_text("not a directory")


def deploy(*extra: str, policy: str = "policy"):
    return lambda tmp: ["deploy", "--policy", str(tmp / policy), *extra]


def with_params(*extra: str):
    return lambda tmp: ["deploy", "--policy", str(tmp / "policy"), "--params", str(tmp / "params.yaml"), *extra]


CASES = [
    BadInput("deploy-missing-policy-folder", deploy(policy="no_such_policy"), words=("no_such_policy", "directory")),
    BadInput("deploy-policy-folder-without-policy-json", deploy(), setup=_drop("policy.json"), words=("policy.json",)),
    BadInput("deploy-policy-folder-without-onnx", deploy(), setup=_drop("policy.onnx"), words=("policy.onnx",)),
    BadInput("deploy-truncated-onnx", deploy(), setup=_truncated_onnx, words=("sha256",)),
    BadInput("deploy-corrupt-onnx-with-matching-hash", deploy(), setup=_corrupt_onnx_with_matching_hash,
             words=("onnxruntime", "policy.onnx")),
    BadInput("deploy-hash-mismatch", deploy(),
             setup=lambda t: _edit_contract(t, lambda d: d["provenance"].update(onnx_sha256="0" * 64)),
             words=("sha256", "does not match")),
    BadInput("deploy-policy-json-not-json", deploy(),
             setup=lambda t: (_policy(t) / "policy.json").write_text("{not json"), words=("JSON",)),
    BadInput("deploy-contract-without-action", deploy(), setup=lambda t: _edit_contract(t, lambda d: d.pop("action")),
             words=("action",)),
    BadInput("deploy-contract-unsupported-version", deploy(),
             setup=lambda t: _edit_contract(t, lambda d: d.update(version="7.0")), words=("version",)),
    BadInput("deploy-existing-record-folder", deploy("--record", "bag"), setup=_existing_record,
             words=("--record", "new directory")),
    BadInput("deploy-record-is-a-file", deploy("--record", "bag"), setup=_record_is_a_file, words=("--record",)),
    BadInput("deploy-missing-params-file", deploy("--params", "no_such.yaml"), setup=_policy,
             words=("--params", "no_such.yaml")),
    BadInput("deploy-params-unknown-parameter", with_params(),
             setup=_params("twin:\n  ros__parameters:\n    latency: 0.02\n"), words=("twin", "latency", "latency_s")),
    BadInput("deploy-params-misspelled-group-parameter", with_params(),
             setup=_params("twin:\n  ros__parameters:\n    weak_motor:\n      gian: 0.7\n"),
             words=("weak_motor.gian", "weak_motor.gain")),
    BadInput("deploy-params-wildcard-unknown-parameter", with_params(),
             setup=_params('"/**":\n  ros__parameters:\n    sed: 3\n'), words=("sed", "did you mean 'seed'")),
    BadInput("deploy-params-unknown-node", with_params(),
             setup=_params("runner:\n  ros__parameters:\n    safe_behaviour: land\n"), words=("runner", "policy_runner")),
    BadInput("deploy-params-invalid-value", with_params(),
             setup=_params("policy_runner:\n  ros__parameters:\n    safe_behaviour: hover\n"),
             words=("safe_behaviour", "hover", "land")),
    BadInput("deploy-params-not-yaml", with_params(), setup=_params("twin: [unclosed\n"), words=("YAML",)),
    BadInput("deploy-params-without-ros-parameters", with_params(),
             setup=_params("twin:\n  latency_s: 0.02\n"), words=("ros__parameters",)),
    BadInput("deploy-ros-arg-misspelled-name", deploy("--ros-arg", "policy_runner:safe_behavior:=land"), setup=_policy,
             words=("safe_behavior", "did you mean 'safe_behaviour'")),
    BadInput("deploy-ros-arg-invalid-choice", deploy("--ros-arg", "policy_runner:safe_behaviour:=hover"),
             setup=_policy, words=("safe_behaviour", "motors_off")),
    BadInput("deploy-ros-arg-out-of-range", deploy("--ros-arg", "twin:latency_s:=20"), setup=_policy,
             words=("latency_s", "0.5")),
    BadInput("deploy-ros-arg-nan", deploy("--ros-arg", "policy_runner:max_speed_m_s:=.nan"), setup=_policy,
             words=("max_speed_m_s", "finite")),
    BadInput("deploy-ros-arg-not-a-number", deploy("--ros-arg", "twin:rate_hz:=fast"), setup=_policy,
             words=("rate_hz", "number")),
    BadInput("deploy-ros-arg-short-vector", deploy("--ros-arg", "policy_runner:goal_w:=[0, 0]"), setup=_policy,
             words=("goal_w", "3")),
    BadInput("deploy-ros-arg-malformed", deploy("--ros-arg", "policy_runner=safe_behaviour:=land"), setup=_policy,
             words=("NODE:NAME:=VALUE",)),
    BadInput("deploy-ros-arg-unknown-node", deploy("--ros-arg", "runner:safe_behaviour:=land"), setup=_policy,
             words=("runner", "policy_runner")),
    BadInput("deploy-ros-arg-node-not-started", deploy("--ros-arg", "recorder:compression:=lz4"), setup=_policy,
             words=("recorder", "not started")),
    BadInput("deploy-ros-arg-owned-by-an-option", deploy("--ros-arg", "twin:policy_dir:=/elsewhere"), setup=_policy,
             words=("policy_dir", "--policy")),
    BadInput("deploy-unknown-robot", deploy("--robot", "crazyfly"), setup=_policy, words=("crazyfly", "twin")),
    BadInput("deploy-duration-zero", deploy("--duration", "0"), setup=_policy, words=("--duration", "> 0")),
    BadInput("deploy-duration-negative", deploy("--duration", "-5"), setup=_policy, words=("--duration",)),
    BadInput("deploy-duration-nan", deploy("--duration", "nan"), setup=_policy, words=("--duration",)),
    BadInput("deploy-domain-id-out-of-range", deploy("--domain-id", "300"), setup=_policy, words=("domain-id",)),
    BadInput("deploy-keyboard-teleop-without-terminal", deploy("--teleop", "keyboard"), setup=_policy,
             words=("keyboard", "terminal")),
    BadInput("deploy-vehicle-mismatch", with_params(), setup=_params("twin:\n  ros__parameters:\n    preset: px4_1kg\n"),
             words=("crazyflie2x", "px4_1kg", "0.027 kg")),
    BadInput("deploy-vehicle-mismatch-ros-arg", deploy("--ros-arg", "twin:preset:=px4_1kg"), setup=_policy,
             words=("crazyflie2x", "px4_1kg")),
    BadInput("deploy-action-space-mismatch", with_params(),
             setup=_params("twin:\n  ros__parameters:\n    action_spaces: [rotor]\n"), words=("ctbr", "rotor")),
    BadInput("deploy-contract-for-another-vehicle", deploy(),
             setup=lambda t: _edit_contract(t, lambda d: d["action"].update(max_thrust_n=28.0, hover_action=[-0.3, 0, 0, 0])),
             words=("policy was trained for", "the twin is crazyflie2x")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    # status 2: a user error, nothing started (not 1, a run that failed)
    check_bad_input(dataclasses.replace(case, exit_code=2), tmp_path)
