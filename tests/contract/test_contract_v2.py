"""Contract 2.0: every claim its vehicle, latency, controller and frames sections make is what the
training simulator does; the file round-trips, refuses inconsistent or incomplete sections by name, and
1.0 files still load with a note of what they lack."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from policies.export import contract_sections
from sim.quadrotor import dynamics
from sim.quadrotor.presets import CRAZYFLIE_2X
from sim.randomization import RandomizationCfg
from sim.tasks import make_env
from tether.actions import ActionMap, initial_action, rate_controller
from tether.config import config_to_dict
from tether.contract import (CONTRACT_VERSION, ContractError, PolicyContract, compat_note, contract_from_dict,
                             load_policy_dir)

CASES = [(p, a) for p in ("crazyflie2x", "px4_1kg") for a in ("ctbr", "rotor")]
IDS = [f"{p}-{a}" for p, a in CASES]
RANDOMIZED = RandomizationCfg(latency_s=(0.0, 0.04), thrust_to_weight=(1.5, 3.0))


def v2_contract(env) -> PolicyContract:
    """What export writes (minus the ONNX), through JSON as a robot reads it."""
    sections = contract_sections(env.cfg)
    c = PolicyContract(task="hover", control_rate_hz=env.cfg.control_rate_hz,
                       action_latency_s=sections["latency"].mean_s, observation=env.slices,
                       action=env.action_spec(), **sections,
                       provenance={"onnx_sha256": "0" * 64, "opset": 17, "created": "test", "config_hash": "test"})
    return contract_from_dict(json.loads(json.dumps(c.to_dict())))


@pytest.mark.parametrize("preset,action_space", CASES, ids=IDS)
def test_v2_round_trips_and_states_the_vehicle_trained_on(preset, action_space):
    env = make_env("hover", num_envs=4, preset=preset, action_space=action_space, randomization=RANDOMIZED)
    c = v2_contract(env)
    assert c.version == CONTRACT_VERSION == "2.0" and c.missing == () and compat_note(c) is None
    assert json.loads(json.dumps(c.to_dict())) == json.loads(json.dumps(v2_contract(env).to_dict()))
    v, p = c.vehicle, env.cfg.vehicle
    assert (v.name, v.mass_kg, v.inertia_kg_m2, v.kf_n_per_rpm2, v.km_nm_per_rpm2, v.max_rpm, v.tau_up_s,
            v.tau_down_s, v.drag_n_s_per_m) == (p.name, p.mass_kg, p.inertia_kg_m2, p.kf_n_per_rpm2,
                                                 p.km_nm_per_rpm2, p.max_rpm, p.tau_up_s, p.tau_down_s,
                                                 p.drag_n_s_per_m)
    assert [r.pos_b for r in v.rotors] == [tuple(x) for x in p.rotor_pos_b]
    assert [r.spin for r in v.rotors] == list(p.rotor_spin)
    assert v.thrust_to_weight == pytest.approx(p.thrust_to_weight) and v.max_thrust_n == pytest.approx(p.max_thrust_n)
    # every randomization field is written, with its doc: ranges added to the config appear unedited
    assert json.loads(json.dumps(v.randomization)) == json.loads(json.dumps(config_to_dict(env.cfg.randomization)))
    assert set(v.randomization_doc) == set(v.randomization) and all(v.randomization_doc.values())
    assert "[1]" in v.randomization_doc["mass_scale"]


@pytest.mark.parametrize("preset,action_space", CASES, ids=IDS)
def test_hover_action_of_the_contract_is_the_env_s(preset, action_space):
    env = make_env("hover", num_envs=4, preset=preset, action_space=action_space)
    c = v2_contract(env)
    h = ActionMap(c.action).hover_action(c.vehicle.mass_kg, c.vehicle.gravity_m_s2)
    np.testing.assert_allclose(h, env.hover_action.numpy(), atol=1e-6)
    np.testing.assert_allclose(c.action.hover_action, h, atol=1e-6)


def test_latency_is_whole_control_steps_uniform_per_episode_as_stated():
    env = make_env("hover", num_envs=4000, seed=5, randomization=RANDOMIZED)
    lat = v2_contract(env).latency
    assert (lat.min_steps, lat.max_steps, lat.distribution) == (0, 2, "uniform_steps")  # 0..40 ms at 50 Hz
    assert lat.values_s == pytest.approx((0.0, 0.02, 0.04)) and lat.mean_s == pytest.approx(0.02)
    counts = np.bincount(env.latency_steps.numpy(), minlength=lat.max_steps + 1)
    assert len(counts) == lat.max_steps + 1 and counts.min() > 0.9 * 4000 / 3
    # it acts on the action: a step change reaches the command exactly k ticks later
    env = make_env("hover", num_envs=3, seed=5,
                   randomization=dataclasses.replace(RandomizationCfg.nominal(), latency_s=(0.0, 0.04)))
    env.latency_steps[:] = torch.tensor([0, 1, 2])
    env.reset()
    env.latency_steps[:] = torch.tensor([0, 1, 2])
    kick = env.hover_action + torch.tensor([0.5, 0.0, 0.0, 0.0])
    applied = []
    for _ in range(3):
        applied.append(env._apply_actions(kick.repeat(3, 1))[1].thrust_n[:, 0].clone())
    changed = torch.stack(applied) > float(ActionMap(v2_contract(env).action).hover_thrust_n) * 1.01
    assert changed.int().argmax(0).tolist() == [0, 1, 2]


@pytest.mark.parametrize("preset,action_space", CASES, ids=IDS)
def test_initial_action_history_is_the_hover_action(preset, action_space):
    env = make_env("hover", num_envs=8, preset=preset, action_space=action_space, randomization=RANDOMIZED)
    env.reset()
    c = v2_contract(env)
    assert c.frames.initial_action_history == "hover" and c.frames.hold == "zero_order"
    assert (c.frames.body, c.frames.world) == ("FLU", "ENU")
    want = initial_action(c)
    np.testing.assert_allclose(env.prev_actions.numpy(), np.broadcast_to(want, env.prev_actions.shape), atol=1e-7)
    np.testing.assert_allclose(env.action_queue.numpy(), np.broadcast_to(want, env.action_queue.shape), atol=1e-7)


@pytest.mark.parametrize("preset", ["crazyflie2x", "px4_1kg"])
def test_the_contract_s_rate_controller_is_the_one_training_runs(preset):
    env = make_env("hover", num_envs=4, preset=preset, action_space="ctbr", randomization=RANDOMIZED)
    c = v2_contract(env)
    assert c.controller.type == "rate_p_gyro_ff" and c.controller.rate_kp == env.cfg.rate_kp
    assert c.controller.loop_rate_hz == env.cfg.control_rate_hz * env.cfg.substeps
    ctrl = rate_controller(c)  # from the contract alone: no preset
    g = torch.Generator().manual_seed(0)
    a = torch.rand(256, 4, generator=g) * 2 - 1
    w = (torch.rand(256, 3, generator=g) * 2 - 1) * 8.0
    _, sp = env.action_to_command(a)
    want = dynamics.ctbr_to_rotor_cmd(sp.thrust_n, sp.rates_b, w, sp.ctrl).numpy()
    thrust, rates = ActionMap(c.action).to_ctbr(a.numpy())
    np.testing.assert_allclose(ctrl.rotor_command(thrust, rates, w.numpy()), want, atol=2e-5)


@pytest.mark.parametrize("action_space", ["ctbr", "rotor"])
def test_a_rotor_command_is_a_fraction_of_each_vehicle_s_own_max_rpm(action_space):
    """What 'rotor_command: fraction_of_vehicle_max_rpm' claims, on randomized vehicles whose max rpm
    differs (thrust_to_weight is drawn): the motors settle at command * that vehicle's max rpm."""
    env = make_env("hover", num_envs=64, seed=2, action_space="rotor", randomization=RANDOMIZED)
    c = v2_contract(make_env("hover", num_envs=1, action_space=action_space))
    assert c.controller.rotor_command == "fraction_of_vehicle_max_rpm"
    p = env.params._replace(tau_up=torch.full_like(env.params.tau_up, 1e-5),
                            tau_down=torch.full_like(env.params.tau_down, 1e-5))
    assert float(p.max_rpm.std()) > 100.0
    cmd = torch.rand(64, 4, generator=torch.Generator().manual_seed(1))
    s = dynamics.step(dynamics.hover_state(64, env.cfg.vehicle), cmd, p, 0.02, 4)
    np.testing.assert_allclose(s.rotor_rpm.numpy(), (cmd * p.max_rpm).numpy(), rtol=1e-5)


# ------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def v2_dict():
    return v2_contract(make_env("hover", num_envs=1, randomization=RANDOMIZED)).to_dict()


def _refused(d, *words):
    with pytest.raises(ContractError) as e:
        contract_from_dict(d)
    for w in words:
        assert w in str(e.value), f"{str(e.value)!r} should name {w!r}"


@pytest.mark.parametrize("section", ["vehicle", "latency", "controller", "frames"])
def test_a_2_0_file_without_a_section_is_refused_by_name(v2_dict, section):
    d = copy.deepcopy(v2_dict)
    del d[section]
    _refused(d, repr(section), "2.0")


def _underived(d, section: str) -> dict:
    """The section without its derived values (written for readers), as a hand edit might leave it."""
    for k in ("max_thrust_n", "thrust_to_weight", "hover_rpm", "values_s", "mean_s"):
        d[section].pop(k, None)
    return d[section]


@pytest.mark.parametrize("edit,words", [
    (lambda d: d["vehicle"].pop("mass_kg"), ("vehicle", "'mass_kg'")),
    (lambda d: d["vehicle"].update(mass_kg=0.05), ("vehicle.thrust_to_weight",)),  # derived no longer holds
    (lambda d: _underived(d, "vehicle").update(max_rpm=20000.0), ("max_rpm",)),
    (lambda d: d["vehicle"]["rotors"][0].update(spin=1), ("rotors",)),
    (lambda d: d["vehicle"].update(colour="red"), ("unknown", "colour")),
    (lambda d: _underived(d, "latency").update(max_steps=5), ("action_latency_s",)),
    (lambda d: d["latency"].update(distribution="gaussian"), ("latency.distribution",)),
    (lambda d: d["controller"].update(type="direct"), ("controller.type",)),
    (lambda d: d["controller"].update(rate_kp=[1.0, 1.0, 1.0]), ("rate_kp",)),
    (lambda d: d["controller"].update(loop_rate_hz=10.0), ("loop_rate_hz",)),
    (lambda d: d["frames"].update(body="FRD"), ("FLU",)),
    (lambda d: d["frames"].update(initial_action_history="last"), ("initial_action_history",)),
    (lambda d: d["vehicle"].update(tau_up_s="fast"), ("vehicle.tau_up_s",)),
], ids=["no-mass", "derived", "rpm-disagrees", "layout-disagrees", "unknown", "mean", "distribution",
        "controller-type", "gains-disagree", "loop-rate", "frd", "history", "type"])
def test_inconsistent_sections_are_refused_naming_the_field(v2_dict, edit, words):
    d = copy.deepcopy(v2_dict)
    edit(d)
    _refused(d, *words)


def test_a_1_0_file_loads_and_says_what_it_lacks():
    _, c = load_policy_dir("tests/fixtures/hover_policy")
    assert c.version == "1.0"
    assert c.missing == ("vehicle", "latency", "controller", "frames")
    assert compat_note(c) == ("policy.json 1.0: no vehicle, latency, controller, frames sections; vehicle check "
                              "limited to the action spec")
    assert c.vehicle is None and c.action.type == "ctbr"


def test_unsupported_versions_are_refused(v2_dict):
    _refused({**v2_dict, "version": "3.0"}, "'3.0'", "1.x, 2.x")
    env = make_env("hover", num_envs=1)
    with pytest.raises(ContractError, match="missing its section"):
        PolicyContract(task="hover", control_rate_hz=50.0, action_latency_s=0.0, observation=env.slices,
                       action=env.action_spec(), provenance={}, version="2.0")


# ------------------------------------------------------------------------- the robot's vehicle check


def test_the_robot_side_checks_the_v2_vehicle_against_the_trained_span():
    """A vehicle inside the class a policy was trained on is accepted, one outside it refused naming
    both; the span comes from the contract's randomization (the 1.0 check knew only the nominal)."""
    from hardware.robot import VehicleFacts, check_vehicle, contract_vehicle
    from hardware.twin_config import TwinConfig, twin_vehicle

    cf = CRAZYFLIE_2X
    # the independent simulator's vehicle of issue 10: 30.6 g, thrust-to-weight 1.47
    other = VehicleFacts("other_cf", 0.0306, 1.47 * 0.0306 * 9.81,
                         tuple(tuple(p) for p in cf.rotor_pos_b), tuple(cf.rotor_spin))
    wide = dataclasses.replace(RandomizationCfg(), mass_scale=(0.7, 1.3), thrust_to_weight=(1.4, 3.0))
    narrow = RandomizationCfg()  # thrust-to-weight 2.0-2.5
    c_wide = v2_contract(make_env("hover", num_envs=1, randomization=wide))
    c_narrow = v2_contract(make_env("hover", num_envs=1, randomization=narrow))
    assert contract_vehicle(c_wide).thrust_to_weight_range == pytest.approx((1.4, 3.0))
    check_vehicle(c_wide, other, "the simulator")
    check_vehicle(c_narrow, twin_vehicle(TwinConfig()), "the twin")
    with pytest.raises(ContractError) as e:
        check_vehicle(c_narrow, other, "the simulator")
    msg = str(e.value)
    assert "trained for crazyflie2x" in msg and "the simulator is other_cf" in msg
    assert "thrust/weight 1.47 outside the trained 2.00-2.50" in msg and "\n" not in msg
    with pytest.raises(ContractError, match=r"crazyflie2x.*px4_1kg.*mass 1 kg outside the trained"):
        check_vehicle(c_wide, twin_vehicle(TwinConfig(preset="px4_1kg")), "the twin")


def test_the_twin_flies_full_rate_commands_as_the_contract_means_them():
    """The twin's firmware is configured from the contract: a full rate command is the contract's
    12/12/6 rad/s, not the twin's own default clip of 10/10/5 rad/s (the copy that disagreed)."""
    from hardware.twin import DigitalTwin, TwinConfig, with_policy_rate_gains
    from tether_deploy.actuation import ActionToCommand

    _, c = load_policy_dir("tests/fixtures/hover_policy")
    a = np.array([c.action.hover_action[0], 1.0, -1.0, 1.0])
    cmd = ActionToCommand(c.action)(a)
    np.testing.assert_allclose(cmd.body_rates_b, ActionMap(c.action).to_ctbr(a)[1])
    np.testing.assert_allclose(cmd.body_rates_b, [12.0, -12.0, 6.0])
    twin = DigitalTwin(with_policy_rate_gains(TwinConfig(), c.action))
    twin.connect()
    try:
        sent = twin.send(cmd)
    finally:
        twin.disconnect()
    np.testing.assert_allclose(sent.body_rates_b, [12.0, -12.0, 6.0])
    assert sent.thrust_n == pytest.approx(ActionMap(c.action).hover_thrust_n)
    assert twin.cfg.rate_kp == c.action.rate_kp
