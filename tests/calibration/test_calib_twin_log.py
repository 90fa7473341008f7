"""`tether calibrate quadrotor` on a flight recorded by the real nodes: `tether deploy --record` flies the
committed hover policy (CTBR) on the digital twin from an offset start, then calibrate reads the bag as
recorded (no --policy: the contract comes from the policy folder the log names) and identifies the twin's
vehicle, the nominal Crazyflie preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.files import load_calibration
from sim.quadrotor.presets import CRAZYFLIE_2X
from tests.ros2.conftest import fresh_domain_id

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "hover_policy"

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DOMAIN = fresh_domain_id()


def _tether(*argv: str, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "ros2_ws" / "src" / "tether_deploy")]))
    return subprocess.run([sys.executable, "-m", "tether_app.cli", *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout_s)


def test_calibrate_a_flight_recorded_by_tether_deploy_on_the_twin(tmp_path):
    # 22 s of wall clock: on a loaded machine the twin publishes fewer states than its rate (16 s left 9.3 s
    # of flight at load 7 with two test workers), and calibration needs 10 s
    flown = _tether("deploy", "--robot", "twin", "--policy", str(FIXTURE), "--record", "bag", "--duration", "22",
                    "--ros-arg", "twin:init_pos_w:=[0.6,-0.5,0.5]", cwd=tmp_path, timeout_s=120)
    assert flown.returncode == 0, flown.stdout + flown.stderr
    # the twin stamps odometry with a wall clock that jitters under load while its physics steps 10 ms
    # per message: the stamps alone leave too little gap-free flight, and the refusal says what to pass
    refused = _tether("calibrate", "quadrotor", "--log", "bag", "--unit-id", "twin-1", "--out", "twin.yaml",
                      cwd=tmp_path, timeout_s=120)
    if refused.returncode != 0:
        assert refused.returncode == 2 and "--sample-rate-hz" in refused.stderr, refused.stderr
        assert not (tmp_path / "twin.yaml").exists()
    done = _tether("calibrate", "quadrotor", "--log", "bag", "--sample-rate-hz", "100", "--unit-id", "twin-1",
                   "--out", "twin.yaml", "--force", cwd=tmp_path, timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "normalized ctbr actions" in done.stdout and "the policy the log names" in done.stdout
    q = load_calibration(tmp_path / "twin.yaml").quadrotor
    assert q.base_preset == "crazyflie2x"
    p = CRAZYFLIE_2X
    # a hover flight excites thrust and horizontal drag well, the motor lags and yaw torque poorly
    assert abs(q.params["kf_per_kg"].value / (p.kf_n_per_rpm2 / p.mass_kg) - 1) < 0.03
    for axis in (0, 1):
        name = f"drag_{'xyz'[axis]}_per_kg"
        assert abs(q.params[name].value / (p.drag_n_s_per_m[axis] / p.mass_kg) - 1) < 0.1, q.params[name]
