"""Bad inputs to ``tether deploy --robot NAME`` for the hardware adapters (robot_bridge): each is refused
before any node starts (exit 2, one ``error:`` line naming the problem and the fix, nothing written)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from tests.bad_inputs.harness import REPO_ROOT, BadInput, check_bad_input
from tests.bad_inputs.test_deploy import _params, _policy, deploy, with_params


def _rotor_policy(tmp: Path) -> None:
    """A rotor-level hover policy (the linear PD controller the ROS tests fly) in tmp/policy."""
    sys.path.insert(0, str(REPO_ROOT / "tests" / "ros2"))
    try:
        from linear_policy import write_linear_hover_policy
    finally:
        sys.path.remove(str(REPO_ROOT / "tests" / "ros2"))
    (tmp / "policy").mkdir()
    write_linear_hover_policy(tmp / "policy", control_rate_hz=100.0)


CASES = [
    BadInput("deploy-robot-misspelt", deploy("--robot", "crazyfly"), setup=_policy,
             words=("crazyfly", "did you mean 'crazyflie'", "px4")),
    BadInput("deploy-robot-rotor-policy-on-crazyflie", deploy("--robot", "crazyflie"), setup=_rotor_policy,
             words=("rotor-level policies go onboard", "tether export --onboard c", "ctbr")),
    BadInput("deploy-robot-unknown-adapter-parameter", deploy("--robot", "crazyflie", "--ros-arg",
                                                              "robot_bridge:robot.urii:=udp://127.0.0.1:19850"),
             setup=_policy, words=("robot.urii", "did you mean 'robot.uri'")),
    BadInput("deploy-robot-unknown-safety-parameter", deploy("--robot", "px4", "--ros-arg",
                                                             "robot_bridge:safety.max_tilt:=0.5"),
             setup=_policy, words=("safety.max_tilt", "did you mean 'safety.max_tilt_rad'")),
    BadInput("deploy-robot-bad-safety-value", deploy("--robot", "crazyflie", "--ros-arg",
                                                     "robot_bridge:safety.max_thrust_frac:=1.5"),
             setup=_policy, words=("safety.max_thrust_frac", "(0, 1]")),
    BadInput("deploy-robot-inverted-geofence", with_params("--robot", "crazyflie"),
             setup=_params("robot_bridge:\n  ros__parameters:\n    safety:\n      geofence_min_w: [0.0, 0.0, 5.0]\n"),
             words=("geofence_min_w", "geofence_max_w")),
    BadInput("deploy-robot-adapter-owned-by-robot", deploy("--robot", "crazyflie", "--ros-arg",
                                                           "robot_bridge:adapter:=px4"),
             setup=_policy, words=("adapter", "--robot")),
    BadInput("deploy-robot-vehicle-mismatch", deploy("--robot", "px4"), setup=_policy,
             words=("crazyflie2x", "px4 adapter", "robot_bridge:robot.")),
    BadInput("deploy-robot-quadrotor-policy-on-an-arm", deploy("--robot", "arm"), setup=_policy,
             words=("arm adapter is not one", "quadrotor")),
    BadInput("deploy-robot-twin-parameter-on-the-bridge", deploy("--robot", "crazyflie", "--ros-arg",
                                                                 "twin:rate_hz:=200"),
             setup=_policy, words=("twin", "not started")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(dataclasses.replace(case, exit_code=2), tmp_path)
