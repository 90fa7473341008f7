"""Bad inputs of the ROS interface's settings (state checks, frames, fault recovery): `tether deploy`
refuses each before any node starts (exit 2, one ``error:`` line naming the parameter, nothing written)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tests.bad_inputs.harness import REPO_ROOT, BadInput, check_bad_input

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hover_policy"


def _policy(tmp: Path) -> None:
    shutil.copytree(FIXTURE, tmp / "policy")


def _params(text: str):
    def setup(tmp: Path) -> None:
        _policy(tmp)
        (tmp / "params.yaml").write_text("policy_runner:\n  ros__parameters:\n" + text)
    return setup


def arg(value: str):
    return lambda tmp: ["deploy", "--policy", str(tmp / "policy"), "--ros-arg", f"policy_runner:{value}"]


def with_params():
    return lambda tmp: ["deploy", "--policy", str(tmp / "policy"), "--params", str(tmp / "params.yaml")]


CASES = [
    BadInput("ros-good-states-zero", arg("good_states_to_recover:=0"), setup=_policy,
             words=("good_states_to_recover", ">= 1")),
    BadInput("ros-good-states-negative", arg("good_states_to_recover:=-3"), setup=_policy,
             words=("good_states_to_recover",)),
    BadInput("ros-good-states-fraction", arg("good_states_to_recover:=2.5"), setup=_policy,
             words=("good_states_to_recover",)),
    BadInput("ros-stamp-age-zero", arg("max_stamp_age_s:=0.0"), setup=_policy, words=("max_stamp_age_s", "> 0")),
    BadInput("ros-stamp-age-nan", arg("max_stamp_age_s:=.nan"), setup=_policy, words=("max_stamp_age_s",)),
    BadInput("ros-stamp-age-inf", arg("max_stamp_age_s:=.inf"), setup=_policy, words=("max_stamp_age_s",)),
    BadInput("ros-stamp-lead-negative", arg("max_stamp_lead_s:=-0.1"), setup=_policy, words=("max_stamp_lead_s",)),
    BadInput("ros-check-stamps-not-bool", arg("check_stamps:=maybe"), setup=_policy, words=("check_stamps",)),
    BadInput("ros-world-frame-empty", arg("world_frame:=''"), setup=_policy, words=("world_frame",)),
    BadInput("ros-body-frame-empty", arg("body_frame:=''"), setup=_policy, words=("body_frame",)),
    BadInput("ros-misspelled-good-states", arg("good_state_to_recover:=5"), setup=_policy,
             words=("good_state_to_recover", "good_states_to_recover")),
    BadInput("ros-misspelled-stamp-age", arg("max_stamp_age:=0.1"), setup=_policy,
             words=("max_stamp_age", "max_stamp_age_s")),
    BadInput("ros-quat-tolerance-too-large", arg("quat_norm_tol:=2.0"), setup=_policy, words=("quat_norm_tol",)),
    BadInput("ros-position-limit-zero", arg("max_abs_pos_m:=0.0"), setup=_policy, words=("max_abs_pos_m",)),
    BadInput("ros-rate-limit-negative", arg("max_ang_vel_rad_s:=-1.0"), setup=_policy, words=("max_ang_vel_rad_s",)),
    BadInput("ros-params-good-states-zero", with_params(), setup=_params("    good_states_to_recover: 0\n"),
             words=("good_states_to_recover",)),
    BadInput("ros-params-stamp-lead-zero", with_params(), setup=_params("    max_stamp_lead_s: 0.0\n"),
             words=("max_stamp_lead_s",)),
    BadInput("ros-params-misspelled-frame", with_params(), setup=_params("    world_fram: map\n"),
             words=("world_fram", "world_frame")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(dataclasses.replace(case, exit_code=2), tmp_path)
