"""sim/ and the deploy side agree: the batched simulator's observation equals the one the robot side
builds from the contract and raw state, and a policy flies the same in pybullet and in Tether's sim.

The only place that imports both stages (DESIGN.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies.evaluation import AcceptanceCfg, evaluate_hover, task_cfg_from_contract
from sim.randomization import RandomizationCfg
from sim.tasks import TASKS, make_env
from tether.contract import PolicyContract, contract_from_dict
from tether.observation import build_observation

RAW_STATE = ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b", "goal_w", "goal_vel_w")
CASES = [(task, space) for task in TASKS for space in ("rotor", "ctbr")]


def contract_of(task: str, env) -> PolicyContract:
    """The contract as the robot side reads it: built from the env's spec, then through JSON."""
    c = PolicyContract(task=task, control_rate_hz=env.cfg.control_rate_hz, action_latency_s=0.0,
                       observation=env.slices, action=env.action_spec(),
                       provenance={"onnx_sha256": "0" * 64, "opset": 17, "created": "test", "config_hash": "test"})
    return contract_from_dict(json.loads(json.dumps(c.to_dict())))


@pytest.mark.parametrize("task,action_space", CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_sim_observation_equals_contract_observation(task, action_space):
    env = make_env(task, num_envs=32, seed=11, action_space=action_space, randomization=RandomizationCfg.nominal())
    contract = contract_of(task, env)
    assert contract.observation == env.slices and contract.obs_dim == env.obs_dim

    env.reset()
    gen = torch.Generator().manual_seed(0)
    hist = env.cfg.action_history
    sent, ended = [], []
    for _ in range(hist + 3):
        action = env.hover_action + 0.3 * (2 * torch.rand(env.num_envs, env.cfg.action_dim, generator=gen) - 1)
        _, _, terminated, truncated, _ = env.step(action)
        sent.append(action.clamp(-1, 1))
        ended.append(terminated | truncated)
    # envs that restarted within the history window hold hover actions from their reset instead
    fresh = torch.stack(ended[-hist:]).any(0)

    # raw state in robot-side form (numpy, float64), nothing derived
    raw = {"pos_w": env.state.pos_w, "quat_wxyz": env.state.quat_wxyz, "lin_vel_w": env.state.lin_vel_w,
           "ang_vel_b": env.state.ang_vel_b, "goal_w": env.goal_w, "goal_vel_w": env.goal_vel_w}
    raw = {k: v.double().numpy() for k, v in raw.items()}
    raw["prev_actions"] = env.prev_actions.reshape(env.num_envs, -1).double().numpy()
    # pos_err_int_b: the robot side keeps the world-frame integral itself (tether.observation.PositionErrorIntegral,
    # checked tick by tick against the sim in tests/sim/test_vehicle_class.py); here its frame and layout
    raw["pos_err_int_w"] = env.pos_err_int_w.double().numpy()

    # prev_actions are the last actions sent, oldest first (the vocabulary's definition)
    expected_hist = torch.cat(sent[-hist:], dim=-1)
    keep = ~fresh
    assert keep.sum() > env.num_envs // 2
    np.testing.assert_allclose(raw["prev_actions"][keep.numpy()], expected_hist[keep].double().numpy(), atol=1e-7)

    sim_obs = env.observe()["policy"].numpy()
    deploy_obs = build_observation(contract, raw)
    assert deploy_obs.shape == sim_obs.shape == (env.num_envs, contract.obs_dim)
    for s in contract.observation:
        a = sim_obs[:, s.offset:s.offset + s.length]
        b = deploy_obs[:, s.offset:s.offset + s.length]
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"slice {s.name} [{s.unit}, {s.frame}]")
    # the state is generic (tilted, moving), so a frame or sign slip could not hide in zeros
    assert np.abs(raw["lin_vel_w"]).max() > 0.05 and np.abs(raw["quat_wxyz"][:, 1:]).max() > 0.05


def test_default_randomization_only_adds_noise():
    """With observation noise on, the sim's observation differs from the contract's by noise of the
    configured size, not by a layout difference."""
    rand = RandomizationCfg()
    env = make_env("hover", num_envs=512, seed=3, randomization=rand)
    env.reset()
    contract = contract_of("hover", env)
    raw = {k: v.double().numpy() for k, v in (("pos_w", env.state.pos_w), ("quat_wxyz", env.state.quat_wxyz),
                                               ("lin_vel_w", env.state.lin_vel_w), ("ang_vel_b", env.state.ang_vel_b),
                                               ("goal_w", env.goal_w), ("goal_vel_w", env.goal_vel_w))}
    raw["prev_actions"] = env.prev_actions.reshape(env.num_envs, -1).double().numpy()
    diff = env.observe()["policy"].numpy() - build_observation(contract, raw)
    stds = {"pos_err_b": rand.obs_noise_pos_m, "lin_vel_b": rand.obs_noise_vel_m_s, "up_b": rand.obs_noise_rot,
            "ang_vel_b": rand.obs_noise_ang_vel_rad_s, "prev_actions": 0.0}
    for s in contract.observation:
        d = diff[:, s.offset:s.offset + s.length]
        expected = stds[s.name]
        assert float(d.std()) == pytest.approx(expected, rel=0.15, abs=1e-6), s.name
        assert abs(float(d.mean())) < 4 * expected / np.sqrt(d.size) + 1e-6, s.name


def test_pybullet_and_tether_fly_the_trained_policy_alike(trained_hover):
    task_cfg = task_cfg_from_contract(trained_hover.policy_dir)
    assert task_cfg == trained_hover.env_cfg
    acceptance = AcceptanceCfg(num_starts=8, duration_s=2.0)
    report = evaluate_hover(trained_hover.policy_dir, task_cfg, acceptance)
    pb, th = report["pybullet"]["_result"], report["tether"]["_result"]
    steps = round(acceptance.duration_s * task_cfg.control_rate_hz)
    assert pb["pos_err"].shape == th["pos_err"].shape == (steps + 1, acceptance.num_starts)
    np.testing.assert_allclose(pb["t_s"], th["t_s"])
    assert not pb["crashed"].any() and not th["crashed"].any()
    # same starts in both simulators
    np.testing.assert_allclose(pb["pos_err"][0], th["pos_err"][0], atol=1e-6)
    diff = np.abs(pb["pos_err"] - th["pos_err"])
    assert float(diff.max()) < 3e-3, f"pybullet and Tether differ by up to {diff.max() * 1e3:.1f} mm"
    # the policy actually flew: errors moved by much more than the tolerance
    assert float(np.abs(th["pos_err"] - th["pos_err"][0]).max()) > 0.05
