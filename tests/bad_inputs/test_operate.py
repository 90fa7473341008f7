"""Bad inputs to the operator commands (estop, policy load, lifecycle, status): each is refused quickly
with one `error:` line, and nothing in the scratch folder changes. The "nothing running" cases talk to
an empty ROS domain with a short --timeout (exit 1: the command ran and nothing answered)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_inputs.harness import BadInput, check_bad_input

EMPTY_DOMAIN = {"ROS_DOMAIN_ID": "3"}  # no test or stack here uses domain 3 (tests/ros2 use 10..99)


def _policy(scratch: Path) -> None:
    """A valid exported policy (the linear hover controller of the ROS tests) in scratch/pol."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2"))
    from linear_policy import write_linear_hover_policy

    write_linear_hover_policy(scratch / "pol")


def _contract_only(scratch: Path) -> None:
    _policy(scratch)
    (scratch / "pol" / "policy.onnx").unlink()


def _corrupt_onnx(scratch: Path) -> None:
    _policy(scratch)
    data = bytearray((scratch / "pol" / "policy.onnx").read_bytes())
    data[-10] ^= 0xFF
    (scratch / "pol" / "policy.onnx").write_bytes(bytes(data))


def _garbage_contract(scratch: Path) -> None:
    _policy(scratch)
    (scratch / "pol" / "policy.json").write_text("{ not json")


def _contract_missing_key(scratch: Path) -> None:
    _policy(scratch)
    d = json.loads((scratch / "pol" / "policy.json").read_text())
    del d["control_rate_hz"]
    (scratch / "pol" / "policy.json").write_text(json.dumps(d))


def _empty_dir(scratch: Path) -> None:
    (scratch / "empty").mkdir()


def _a_file(scratch: Path) -> None:
    (scratch / "policy.onnx").write_bytes(b"\x08\x01")


CASES = [
    # policy load: the folder is checked before anything is sent
    BadInput("policy-load-missing-folder", ("policy", "load", "no_such_policy"), words=("does not exist", "export"),
             exit_code=2),
    BadInput("policy-load-empty-folder", ("policy", "load", "empty"), words=("policy.json", "export"),
             setup=_empty_dir, exit_code=2),
    BadInput("policy-load-contract-without-onnx", ("policy", "load", "pol"), words=("policy.onnx",),
             setup=_contract_only, exit_code=2),
    BadInput("policy-load-onnx-does-not-match-contract", ("policy", "load", "pol"), words=("sha256",),
             setup=_corrupt_onnx, exit_code=2),
    BadInput("policy-load-contract-not-json", ("policy", "load", "pol"), words=("json",),
             setup=_garbage_contract, exit_code=2),
    BadInput("policy-load-contract-missing-key", ("policy", "load", "pol"), words=("control_rate_hz",),
             setup=_contract_missing_key, exit_code=2),
    BadInput("policy-load-a-file-not-a-folder", ("policy", "load", "policy.onnx"), words=("not a folder",),
             setup=_a_file, exit_code=2),
    BadInput("policy-without-action", ("policy",), words=("load",), exit_code=2),
    # lifecycle and estop: unknown verbs
    BadInput("lifecycle-unknown-transition", ("lifecycle", "activat"), words=("activate", "invalid choice"),
             exit_code=2),
    BadInput("lifecycle-without-transition", ("lifecycle",), words=("transition",), exit_code=2),
    BadInput("estop-unknown-action", ("estop", "release"), words=("trigger", "reset"), exit_code=2),
    # --timeout
    BadInput("timeout-zero", ("estop", "reset", "--timeout", "0"), words=("--timeout", "> 0"), exit_code=2),
    BadInput("timeout-negative", ("status", "--timeout", "-1"), words=("--timeout", "> 0"), exit_code=2),
    BadInput("timeout-nan", ("lifecycle", "get", "--timeout", "nan"), words=("--timeout",), exit_code=2),
    BadInput("timeout-inf", ("estop", "trigger", "--timeout", "inf"), words=("--timeout",), exit_code=2),
    BadInput("timeout-not-a-number", ("status", "--timeout", "3s"), words=("--timeout", "3s"), exit_code=2),
    # the domain, namespace and node name
    BadInput("domain-id-negative", ("status", "--domain-id", "-1"), words=("--domain-id", "0..232"), exit_code=2),
    BadInput("domain-id-too-large", ("estop", "reset", "--domain-id", "233"), words=("0..232",), exit_code=2),
    BadInput("domain-id-not-a-number", ("lifecycle", "get", "--domain-id", "zero"), words=("--domain-id",),
             exit_code=2),
    BadInput("env-domain-id-not-a-number", ("status", "--timeout", "0.5"), words=("ROS_DOMAIN_ID", "--domain-id"),
             env={"ROS_DOMAIN_ID": "robot1"}, exit_code=2),
    BadInput("node-name-invalid", ("lifecycle", "get", "--node", "policy-runner"), words=("node name",),
             exit_code=2),
    BadInput("namespace-invalid", ("status", "--namespace", "/drone 1"), words=("namespace",), exit_code=2),
    # nothing running: one line naming the domain and what to check
    BadInput("nothing-running-estop-reset", ("estop", "reset", "--timeout", "0.5"),
             words=("no policy_runner answered", "domain 3", "tether deploy"), env=EMPTY_DOMAIN, exit_code=1),
    BadInput("nothing-running-estop-trigger", ("estop", "trigger", "--timeout", "0.5"),
             words=("no policy_runner answered", "estop"), env=EMPTY_DOMAIN, exit_code=1),
    BadInput("nothing-running-lifecycle", ("lifecycle", "configure", "--timeout", "0.5"),
             words=("no policy_runner answered", "get_state"), env=EMPTY_DOMAIN, exit_code=1),
    BadInput("nothing-running-status", ("status", "--json", "--timeout", "0.5"),
             words=("no policy_runner answered", "ROS_DOMAIN_ID"), env=EMPTY_DOMAIN, exit_code=1),
    BadInput("nothing-running-policy-load", ("policy", "load", "pol", "--timeout", "0.5"),
             words=("no policy_runner answered", "load_policy"), setup=_policy, env=EMPTY_DOMAIN, exit_code=1),
    BadInput("nothing-running-other-node-name", ("lifecycle", "get", "--node", "runner2", "--timeout", "0.5"),
             words=("no runner2 answered",), env=EMPTY_DOMAIN, exit_code=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)
