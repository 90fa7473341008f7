"""hover_robust_rotor (issue 10): the rotor-level task across the Crazyflie class builds, its exported
contract states the env's observation layout and rotor-command meaning, a few steps run, and its reward
penalizes a yaw spin and rotor commands beyond the thrust margin."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.export import export_policy
from policies.ppo import PPOCfg, train
from sim.randomization import CRAZYFLIE_CLASS, RandomizationCfg
from sim.tasks import TASKS, make_env
from sim.tasks.hover_rotor import RobustHoverRotorCfg
from tether.actions import action_map
from tether.contract import load_contract
from tether.runtime import OnnxPolicy

TASK = "hover_robust_rotor"


def test_task_is_rotor_level_over_the_class():
    cfg, env_cls = TASKS[TASK]
    c = cfg()
    assert c.action_space == "rotor"
    # the class of the CTBR task, less its rate loop (no rate controller between policy and motors)
    assert dataclasses.replace(c.randomization, rate_loop_hz=CRAZYFLIE_CLASS.rate_loop_hz) == CRAZYFLIE_CLASS
    assert c.randomization.rate_loop_hz is None
    assert "pos_err_int_b" in env_cls.observation_names
    with pytest.raises(ValueError, match="thrust_margin"):
        RobustHoverRotorCfg(thrust_margin=0.5)


def test_steps_run_and_reward_terms_are_logged():
    env = make_env(TASK, num_envs=8, seed=0)
    obs = env.reset()["policy"]
    assert obs.shape == (8, env.obs_dim)
    for _ in range(5):
        obs, rew, term, trunc, info = env.step(env.hover_action.repeat(8, 1))
        assert torch.isfinite(obs["policy"]).all() and torch.isfinite(rew).all()
    assert {"yaw_rate", "thrust_margin"} <= set(env.episode_sums)


def _reward_after(env, ang_vel_b: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The reward of one step from the goal, level and at rest, with the given body rates."""
    env.reset()
    s = env.state
    s.pos_w[:] = env.goal_w
    s.quat_wxyz[:] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    s.lin_vel_w[:] = 0.0
    s.ang_vel_b[:] = ang_vel_b
    env.prev_actions[:] = actions.unsqueeze(1)
    env.action_queue[:] = actions.unsqueeze(1)
    return env.step(actions)[1]


def test_yaw_term_penalizes_spin():
    # the nominal vehicle, no noise: the only difference between the two envs is the yaw rate
    env = make_env(TASK, num_envs=2, seed=0, randomization=RandomizationCfg.nominal())
    hover = env.hover_action.repeat(2, 1)
    spin = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    rew = _reward_after(env, spin, hover)
    yaw = env.episode_sums["yaw_rate"]
    assert float(yaw[0]) == pytest.approx(0.0, abs=1e-3)
    assert float(yaw[1]) < 0.1 * env.cfg.rew_yaw_rate * 10.0 * env.cfg.control_dt, "10 rad/s of yaw is penalized"
    assert float(rew[1]) < float(rew[0])
    # the same step without the term: the term is the difference, and it outweighs the shared body-rate cost
    free = make_env(TASK, num_envs=2, seed=0, rew_yaw_rate=0.0, randomization=env.cfg.randomization)
    rew_free = _reward_after(free, spin, hover)
    shared_cost = float(rew_free[0] - rew_free[1])
    assert float(rew[0] - rew[1]) - shared_cost == pytest.approx(-float(yaw[1]), rel=1e-4)
    assert -float(yaw[1]) > 2.0 * shared_cost


def test_thrust_margin_penalizes_saturated_rotors():
    env = make_env(TASK, num_envs=3, seed=0)
    full, hover, empty = torch.ones(4), env.hover_action, -torch.ones(4)
    env.reset()
    env.step(torch.stack([full, hover, empty]))
    margin = env.episode_sums["thrust_margin"]
    assert float(margin[1]) == 0.0, "hover is inside the margin"
    assert float(margin[0]) < 0.0 and float(margin[2]) < 0.0


def test_exported_contract_matches_the_env(tmp_path):
    env = make_env(TASK, num_envs=16, seed=0)
    ckpt = train(env, TASK, PPOCfg(num_iterations=1, num_steps=4, save_interval=1), tmp_path / "run", progress=False)
    out, _, _ = export_policy(ckpt, tmp_path / "policy")
    contract = load_contract(out / "policy.json")
    assert contract.task == TASK
    assert [(s.name, s.offset, s.length) for s in contract.observation] == \
        [(s.name, s.offset, s.length) for s in env.slices]
    assert contract.action.type == "rotor" and contract.action.dim == len(env.cfg.vehicle.rotor_spin)
    assert contract.controller.type == "direct"
    assert contract.controller.rotor_command == "fraction_of_vehicle_max_rpm"
    # the contract's action mapping (tether.actions) is the env's: a fraction of the vehicle's max rpm
    a = np.random.default_rng(0).uniform(-1.0, 1.0, (32, env.cfg.action_dim)).astype(np.float32)
    np.testing.assert_allclose(action_map(contract.action).to_rotor_fraction(a),
                               env.action_to_command(torch.from_numpy(a))[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(contract.action.hover_action, env.hover_action.numpy(), atol=1e-6)
    # the exported graph flies the env's observations
    actions = OnnxPolicy(out)(env.reset()["policy"].numpy())
    assert actions.shape == (16, env.cfg.action_dim) and np.all(np.abs(actions) <= 1.0)
    env.step(torch.from_numpy(actions))
