"""tether.actions, the one implementation of what a policy's outputs mean: normalized <-> physical,
thrust allocation over a rotor layout, the hover action and the rate loop (numpy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.quadrotor.presets import CRAZYFLIE_2X, GRAVITY, PX4_1KG, QuadrotorPreset
from tether.actions import (ActionMap, Mixer, RateController, actions_to_rotor_cmd, allocation_matrix, rate_controller,
                            rotor_rpm, rotor_thrust_n)
from tether.contract import ActionSpec, ContractError, Rotor, load_policy_dir

PRESETS = [CRAZYFLIE_2X, PX4_1KG]
IDS = [p.name for p in PRESETS]


def spec_of(p: QuadrotorPreset, kind: str) -> ActionSpec:
    rotors = tuple(Rotor(tuple(x), s) for x, s in zip(p.rotor_pos_b, p.rotor_spin))
    common = dict(rotors=rotors, max_rpm=p.max_rpm, kf_n_per_rpm2=p.kf_n_per_rpm2, km_nm_per_rpm2=p.km_nm_per_rpm2)
    if kind == "rotor":
        return ActionSpec(type="rotor", dim=len(rotors), **common)
    return ActionSpec(type="ctbr", dim=4, max_thrust_n=p.max_thrust_n, body_rate_limits_rad_s=(12.0, 12.0, 6.0),
                      rate_kp=(25.0, 25.0, 12.0), **common)


def mixer_of(p: QuadrotorPreset) -> Mixer:
    return Mixer.from_layout(p.rotor_pos_b, p.rotor_spin, p.km_nm_per_rpm2 / p.kf_n_per_rpm2)


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_allocation_is_the_physics_of_each_rotor(p):
    """Column i is the wrench of 1 N on rotor i alone: thrust 1, torque r_i x z_b, reaction -spin km/kf."""
    a = allocation_matrix(p.rotor_pos_b, p.rotor_spin, p.km_nm_per_rpm2 / p.kf_n_per_rpm2)
    assert a.shape == (4, len(p.rotor_spin))
    for i, (pos, spin) in enumerate(zip(p.rotor_pos_b, p.rotor_spin)):
        torque = np.cross(pos, [0.0, 0.0, 1.0])
        np.testing.assert_allclose(a[:, i], [1.0, torque[0], torque[1], -spin * p.km_nm_per_rpm2 / p.kf_n_per_rpm2])


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_pure_thrust_is_equal_rotors_on_a_symmetric_vehicle(p):
    f = mixer_of(p).rotor_thrusts(p.mass_kg * GRAVITY, np.zeros(3))
    np.testing.assert_allclose(f, p.mass_kg * GRAVITY / len(p.rotor_spin), rtol=1e-12)


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_allocation_round_trips_any_wrench(p):
    m = mixer_of(p)
    rng = np.random.default_rng(0)
    wrench = rng.normal(size=(50, 4)) * [p.mass_kg * GRAVITY, 1e-3, 1e-3, 1e-4]
    f = m.rotor_thrusts(wrench[:, 0], wrench[:, 1:])
    np.testing.assert_allclose(m.wrench(f), wrench, rtol=1e-9, atol=1e-15)
    # and a roll torque lifts the rotors on -y (left side up: +x roll is right wing down)
    f = m.rotor_thrusts(1.0, np.array([1e-3, 0.0, 0.0]))
    y = np.asarray(p.rotor_pos_b)[:, 1]
    assert np.all(f[y > 0] > f[y < 0].max())


def test_a_degenerate_layout_is_refused():
    with pytest.raises(ContractError, match="rank"):
        Mixer.from_layout([(0.1, 0, 0), (-0.1, 0, 0), (0.2, 0, 0), (-0.2, 0, 0)], [1, 1, -1, -1], 0.01)
    with pytest.raises(ContractError, match="spins"):
        allocation_matrix([(0.1, 0, 0)], [2], 0.01)


def test_rpm_and_thrust_round_trip():
    rpm = np.array([0.0, 1000.0, 15000.0, 21702.0])
    np.testing.assert_allclose(rotor_rpm(rotor_thrust_n(rpm, 3.16e-10), 3.16e-10), rpm)
    assert rotor_rpm(-1.0, 3.16e-10) == 0.0


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_ctbr_normalized_and_physical_round_trip(p):
    m = ActionMap(spec_of(p, "ctbr"))
    a = np.random.default_rng(1).uniform(-1, 1, size=(100, 4))
    thrust, rates = m.to_ctbr(a)
    np.testing.assert_allclose(thrust, (a[:, 0] + 1) / 2 * p.max_thrust_n)
    np.testing.assert_allclose(rates, a[:, 1:] * [12.0, 12.0, 6.0])
    np.testing.assert_allclose(m.from_ctbr(thrust, rates), a, atol=1e-12)
    # beyond the bounds saturates, as training clamps
    np.testing.assert_allclose(m.to_ctbr([2.0, -3.0, 0.5, 9.0])[1], [-12.0, 6.0, 6.0])
    assert m.to_ctbr([2.0, 0, 0, 0])[0] == pytest.approx(p.max_thrust_n)


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_rotor_normalized_fraction_rpm_thrust_round_trip(p):
    m = ActionMap(spec_of(p, "rotor"))
    a = np.random.default_rng(2).uniform(-1, 1, size=(100, 4))
    frac = m.to_rotor_fraction(a)
    np.testing.assert_allclose(frac, (a + 1) / 2)
    np.testing.assert_allclose(m.from_rotor_fraction(frac), a, atol=1e-12)
    np.testing.assert_allclose(m.to_rotor_rpm(a), frac * p.max_rpm)
    np.testing.assert_allclose(m.from_rotor_thrust_n(m.to_rotor_thrust_n(a)), a, atol=1e-9)
    # a command is a fraction of the flown vehicle's own max rpm, not an absolute rpm
    np.testing.assert_allclose(m.to_rotor_rpm(a, max_rpm=0.8 * p.max_rpm), 0.8 * frac * p.max_rpm)


@pytest.mark.parametrize("kind", ["ctbr", "rotor"])
@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_hover_action_gives_weight_and_no_torque(p, kind):
    m = ActionMap(spec_of(p, kind))
    h = m.hover_action(p.mass_kg)
    assert m.collective_thrust_n(h) == pytest.approx(p.mass_kg * GRAVITY, rel=1e-9)
    if kind == "ctbr":
        np.testing.assert_allclose(h[1:], 0.0)
        assert h[0] == pytest.approx(2 * p.mass_kg * GRAVITY / p.max_thrust_n - 1)
    else:
        np.testing.assert_allclose(m.mixer.wrench(m.to_rotor_thrust_n(h))[1:], 0.0, atol=1e-12 * p.mass_kg)
        np.testing.assert_allclose(h, 2 * p.hover_rpm / p.max_rpm - 1, rtol=1e-9)


def test_wrench_to_rotor_actions_clips_what_rotors_cannot_push():
    m = ActionMap(spec_of(CRAZYFLIE_2X, "rotor"))
    a = m.rotor_action_for_wrench(0.05, np.array([0.01, 0.0, 0.0]))  # far more roll than 0.05 N can make
    assert np.all(a >= -1) and np.sum(a == -1) >= 1


def test_bad_actions_are_refused_naming_why():
    m = ActionMap(spec_of(CRAZYFLIE_2X, "ctbr"))
    with pytest.raises(ValueError, match="action.dim is 4"):
        m.to_ctbr([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        m.to_ctbr([np.nan, 0.0, 0.0, 0.0])
    with pytest.raises(ContractError, match="not rotor"):
        m.to_rotor_fraction([0.0] * 4)
    with pytest.raises(ContractError, match="max_thrust_n"):
        ActionMap(ActionSpec(type="ctbr", dim=4, body_rate_limits_rad_s=(1.0, 1.0, 1.0)))
    with pytest.raises(ContractError, match="body_rate_limits"):
        ActionMap(ActionSpec(type="ctbr", dim=4, max_thrust_n=1.0))


@pytest.mark.parametrize("p", PRESETS, ids=IDS)
def test_rate_loop_is_p_on_rate_error_plus_gyroscopic_feedforward(p):
    ctrl = RateController.for_vehicle(p.rotor_pos_b, p.rotor_spin, p.kf_n_per_rpm2, p.km_nm_per_rpm2, p.max_rpm,
                                      p.inertia_kg_m2, (25.0, 25.0, 12.0))
    weight = p.mass_kg * GRAVITY
    # at hover with no rate error: equal rotors at the hover speed
    np.testing.assert_allclose(ctrl.rotor_command([weight], np.zeros((1, 3)), np.zeros((1, 3))),
                               p.hover_rpm / p.max_rpm, rtol=1e-9)
    # the torque the loop asks of the rotors (read back through the allocation)
    w = np.array([[1.0, -2.0, 0.5]])
    rates_des = np.array([[1.5, -2.0, 0.0]])
    cmd = ctrl.rotor_command([weight], rates_des, w)
    wrench = ctrl.mixer.wrench(rotor_thrust_n(cmd * p.max_rpm, p.kf_n_per_rpm2))[0]
    j = np.asarray(p.inertia_kg_m2)
    want = j * np.array([25.0, 25.0, 12.0]) * (rates_des[0] - w[0]) + np.cross(w[0], j * w[0])
    np.testing.assert_allclose(wrench, [weight, *want], rtol=1e-9, atol=1e-12)


def test_a_1_0_contract_maps_actions_and_names_what_the_rate_loop_lacks():
    _, c = load_policy_dir("tests/fixtures/hover_policy")
    m = ActionMap(c.action)
    assert m.hover_thrust_n == pytest.approx(CRAZYFLIE_2X.mass_kg * GRAVITY, rel=1e-6)
    with pytest.raises(ContractError, match="no controller inertia"):
        rate_controller(c)
    ctrl = rate_controller(c, inertia_kg_m2=CRAZYFLIE_2X.inertia_kg_m2)
    np.testing.assert_allclose(ctrl.kp, c.action.rate_kp)
    cmd = actions_to_rotor_cmd(m, np.asarray(c.action.hover_action)[None], np.zeros((1, 3)), ctrl)
    np.testing.assert_allclose(cmd, CRAZYFLIE_2X.hover_rpm / CRAZYFLIE_2X.max_rpm, rtol=1e-6)
