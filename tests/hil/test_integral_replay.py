"""The correction loop on a policy with integral action (``pos_err_int_b``, the vehicle-class policy that
`tether demo` trains): its observation has memory, so the log replay must rebuild the runner's integral
tick by tick, and the simulator stage must carry it between segments without keeping their graphs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from tether.observation import PositionErrorIntegral

REPO = Path(__file__).resolve().parents[2]
ROBUST_FIXTURE = REPO / "tests" / "fixtures" / "robust_policy"


def test_episode_integrals_are_the_runners_integral_restarted_where_it_restarts():
    from policies.hil.dataset import episode_integrals, integral_restarts

    rng = np.random.default_rng(0)
    n, dt = 40, 0.02
    pos = rng.normal(0.0, 0.08, (n, 3)) + np.array([0.0, 0.0, 1.0])
    goal = np.tile([0.0, 0.0, 1.0], (n, 1))
    t = np.arange(n) * dt
    ran = np.ones(n, dtype=bool)
    ran[25:30] = False  # 0.1 s without the policy: the runner keeps its integral
    ran[30:] = True
    assert not integral_restarts(t, ran, np.zeros(n, int), dt)[1:].any()
    t[30:] += 1.0  # a second without ticks (blind for longer than history_reset_after_s): it restarts
    restart = integral_restarts(t, ran, np.zeros(n, int), dt)
    assert np.flatnonzero(restart).tolist() == [0, 30]
    got = episode_integrals(goal, pos, restart, ran, dt)
    np.testing.assert_array_equal(got[25:30], np.repeat(got[24:25], 5, axis=0))  # held while it did not run
    for lo, hi in ((0, 25), (30, 40)):
        ref = PositionErrorIntegral(dt)
        want = np.stack([ref.update(goal[k], pos[k]) for k in range(lo, hi)])
        np.testing.assert_allclose(got[lo:hi], want, rtol=0, atol=1e-12)
    assert np.abs(got).max() > 1e-3


def test_logs_of_an_integral_policy_replay_exactly_and_refine_in_sim(tmp_path, monkeypatch):
    from hardware.twin import TwinConfig, WeakMotor, with_policy_rate_gains
    from policies.evaluation import task_cfg_from_contract
    from policies.hil.algorithms import actor_from_onnx
    from policies.hil.dataset import load_logs, replay_match
    from policies.hil.finetune import lineage
    from policies.hil.flight import EpisodeCfg, episode_starts, fly_corrected_episode
    from policies.hil.loop import _operator_cfg
    from policies.hil.sim_refine import SimRefineCfg, refine_in_sim
    from tether.runtime import OnnxPolicy
    from tether_deploy.operator_core import ScriptedOperator

    torch.set_num_threads(1)
    policy = OnnxPolicy(ROBUST_FIXTURE)
    assert any(s.name == "pos_err_int_b" for s in policy.contract.observation)
    twin = with_policy_rate_gains(TwinConfig(weak_motor=WeakMotor(index=2, gain=0.7)), policy.contract.action)
    operator = ScriptedOperator(_operator_cfg(policy.contract))
    bags = []
    for k, start in enumerate(episode_starts(2, EpisodeCfg(), seed=7)):
        bags.append(tmp_path / f"episode{k}")
        fly_corrected_episode(policy, str(ROBUST_FIXTURE), twin, operator, start, EpisodeCfg(), bags[-1])
    from policies.hil import dataset
    from tether_deploy import qos

    assert dataset.POS_ERR_INT_TOPIC == "/" + qos.POS_ERR_INT
    steps = load_logs(bags, policy.contract, set(lineage(policy.contract)), (0.0, 0.0, 1.0), policy)
    assert np.abs(steps.pos_err_int_w).max() > 0.01, "the flights moved the integral"
    assert replay_match(steps, policy) == 1.0, "the runner's logged integral, read back"
    # a log without the runner's integral topic (recorded before it existed): rebuilt from the logged states
    monkeypatch.setattr(dataset, "POS_ERR_INT_TOPIC", "/not/recorded")
    rebuilt = load_logs(bags, policy.contract, set(lineage(policy.contract)), (0.0, 0.0, 1.0), policy)
    np.testing.assert_allclose(rebuilt.pos_err_int_w, steps.pos_err_int_w, rtol=0, atol=1e-6)
    assert replay_match(rebuilt, policy) == 1.0, "the integral rebuilt from the logs is the runner's"
    blind = dataclasses.replace(steps, pos_err_int_w=np.zeros_like(steps.pos_err_int_w))
    assert replay_match(blind, policy) < 0.5, "without the integral the policy's actions are not reproduced"

    parent = actor_from_onnx(policy.onnx_path, policy.contract)
    obs = torch.as_tensor(steps.observations(policy.contract))
    cfg = SimRefineCfg(iterations=1, num_envs=16, segments_per_rollout=2, segment_steps=5)
    _, rep = refine_in_sim(parent, task_cfg_from_contract(ROBUST_FIXTURE), (1.0, 1.0, 0.7, 1.0), obs, cfg)
    assert np.isfinite(rep["cost_last"]) and rep["sim_env_steps"] == 1 * 2 * 5 * 16
