"""The twin's ground: contact, crash detection (impact speed, tipping over), motors stopped, and the
vehicle check of a policy's contract against the twin (hardware.robot.check_vehicle)."""

import dataclasses
import math

import numpy as np
import pytest

from hardware.robot import (VEHICLE_TOLERANCE, RotorCommand, VehicleFacts, check_vehicle, contract_vehicle,
                            vehicle_mismatches)
from hardware.twin import DigitalTwin, TwinConfig
from hardware.twin_config import TwinParams, twin_vehicle
from sim.quadrotor.presets import PRESETS
from tether.contract import ContractError, load_policy_dir
from tests.bad_inputs.harness import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hover_policy"


def fall(cfg: TwinConfig, steps: int, pos_w=(0.0, 0.0, 1.0), quat_wxyz=(1.0, 0.0, 0.0, 0.0)):
    """Motors off from pos_w; returns (twin state after ``steps`` periods, crash, commands sent after it)."""
    with DigitalTwin(cfg) as twin:
        twin.reset(pos_w, quat_wxyz)
        twin.send(RotorCommand(np.zeros(twin.n_rotors)))
        for _ in range(steps):
            twin.advance()
        after = twin.send(twin.hover_command)
        for _ in range(20):
            twin.advance()
        return twin.true_state(), twin.crash, after


def test_a_fall_from_one_metre_is_a_crash_and_the_vehicle_rests_on_the_ground():
    state, crash, after = fall(TwinConfig(), 150)
    assert crash is not None and "hit the ground" in crash.reason
    speed = float(crash.reason.split(" at ")[1].split(" m/s")[0])
    assert speed > TwinConfig().crash_speed_m_s  # free fall from 1 m: ~3-4.4 m/s with drag and motor lag
    assert 0.45 < crash.time_s < 0.7  # sqrt(2 h / g) = 0.45 s plus the motors spinning down
    assert abs(crash.pos_w[2]) < 0.05
    assert -0.01 < state.pos_w[2] < 0.05 and np.linalg.norm(state.lin_vel_w) < 0.05  # on the ground, not through it
    # motors stay off after a crash, whatever is sent
    assert np.all(after.rotor_cmd == 0)
    assert "t=" in crash.describe() and "position" in crash.describe()


def test_a_short_drop_is_a_touchdown_not_a_crash():
    state, crash, _ = fall(TwinConfig(), 100, pos_w=(0.0, 0.0, 0.04))
    assert crash is None
    assert -0.01 < state.pos_w[2] < 0.05


def test_a_lower_crash_speed_makes_the_same_short_drop_a_crash():
    _, crash, _ = fall(TwinConfig(crash_speed_m_s=0.3), 100, pos_w=(0.0, 0.0, 0.04))
    assert crash is not None and "crash_speed_m_s 0.3" in crash.reason


def test_lying_on_its_side_is_a_crash():
    side = (math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0)  # 90 deg about x_b
    _, crash, _ = fall(TwinConfig(), 50, pos_w=(0.0, 0.0, 0.03), quat_wxyz=side)
    assert crash is not None and "tipped over" in crash.reason


def test_without_ground_the_vehicle_falls_through():
    state, crash, _ = fall(TwinConfig(ground_z_m=None), 150)
    assert crash is None and state.pos_w[2] < -1.0


def test_reset_clears_a_crash():
    with DigitalTwin(TwinConfig()) as twin:
        twin.send(RotorCommand(np.zeros(4)))
        for _ in range(150):
            twin.advance()
        assert twin.crash is not None
        twin.reset((0.0, 0.0, 1.0))
        assert twin.crash is None
        sent = twin.send(twin.hover_command)
        assert np.allclose(sent.rotor_cmd, twin.hover_command.rotor_cmd)


def test_hover_does_not_crash_and_start_below_ground_is_refused():
    with DigitalTwin(TwinConfig()) as twin:
        for _ in range(100):
            twin.send(twin.hover_command)
            twin.advance()
        assert twin.crash is None
    with pytest.raises(ValueError, match="below the ground"):
        TwinConfig(init_pos_w=(0.0, 0.0, -0.5))


# ------------------------------------------------------------------------------ vehicle check


def test_the_fixture_policy_fits_the_crazyflie_twin_and_not_the_1kg_one():
    _, contract = load_policy_dir(FIXTURE)
    trained = contract_vehicle(contract)
    assert trained.name == "crazyflie2x"
    assert trained.mass_kg == pytest.approx(PRESETS["crazyflie2x"].mass_kg, rel=0.02)  # from the hover action
    check_vehicle(contract, twin_vehicle(TwinConfig()))
    with pytest.raises(ContractError) as e:
        check_vehicle(contract, twin_vehicle(TwinConfig(preset="px4_1kg")), "the twin")
    msg = str(e.value)
    assert "trained for crazyflie2x (0.027 kg" in msg and "the twin is px4_1kg (1 kg" in msg
    assert "mass" in msg and "max thrust" in msg and "\n" not in msg


def test_a_payload_or_weak_motor_is_a_disturbance_not_another_vehicle():
    _, contract = load_policy_dir(FIXTURE)
    from hardware.twin_config import Payload, WeakMotor
    check_vehicle(contract, twin_vehicle(TwinConfig(payload=Payload(0.004, (0.01, 0.0, 0.0)),
                                                    weak_motor=WeakMotor(2, 0.7))))


def test_action_space_the_robot_does_not_accept_is_refused():
    _, contract = load_policy_dir(FIXTURE)
    with pytest.raises(ContractError, match=r"outputs ctbr commands but the twin crazyflie2x accepts only \['rotor'\]"):
        check_vehicle(contract, twin_vehicle(TwinConfig(action_spaces=("rotor",))), "the twin")


def test_mismatches_within_tolerance_pass_and_rotor_layouts_are_compared():
    cf = twin_vehicle(TwinConfig())
    near = dataclasses.replace(cf, mass_kg=cf.mass_kg * (1 + 0.5 * VEHICLE_TOLERANCE))
    assert vehicle_mismatches(cf, near) == []
    far = dataclasses.replace(cf, mass_kg=cf.mass_kg * (1 + 2 * VEHICLE_TOLERANCE))
    assert any("mass" in m for m in vehicle_mismatches(cf, far))
    spun = dataclasses.replace(cf, rotor_spin=tuple(-s for s in cf.rotor_spin))
    assert any("rotor spins" in m for m in vehicle_mismatches(cf, spun))
    hexa = dataclasses.replace(cf, rotor_spin=cf.rotor_spin + (1, -1), rotor_pos_b=cf.rotor_pos_b * 1 + ((0, 0, 0),) * 2)
    assert any("4 vs 6 rotors" in m for m in vehicle_mismatches(cf, hexa))
    unknown = VehicleFacts("unknown", None, None)  # nothing recorded: nothing compared
    assert vehicle_mismatches(cf, unknown) == []


def test_twin_params_are_a_twin_config_with_node_fields():
    p = TwinParams(preset="px4_1kg", cmd_timeout_s=0.2)
    assert p.twin_config() == TwinConfig(preset="px4_1kg")
    with pytest.raises(ValueError, match="cmd_timeout_s"):
        TwinParams(cmd_timeout_s=0.0)
