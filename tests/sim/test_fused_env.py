"""The fused training env (sim.tasks.fused_env) against the eager env it replaces in training: the same
trajectories, rewards, dones and episode statistics over several episodes, with randomized vehicles and
latency, when both start every episode from the same draw."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sim.randomization import RandomizationCfg
from sim.tasks import TASKS, make_env
from sim.tasks.fused_env import FusedQuadrotorEnv, fused_unsupported

NUM_ENVS = 48
STEPS = 60  # 4 episodes of 15 steps, plus the crashes in between


def _cfg(task: str, action_space: str):
    # randomized vehicles and latency (the default ranges), no observation noise: the two envs draw
    # their noise differently; short episodes and a tight bound so that truncations and crashes reset
    rand = dataclasses.replace(RandomizationCfg(), obs_noise_pos_m=0.0, obs_noise_vel_m_s=0.0, obs_noise_rot=0.0,
                               obs_noise_ang_vel_rad_s=0.0)
    return dataclasses.replace(TASKS[task][0](), randomization=rand, action_space=action_space,
                               episode_length_s=0.3, max_distance_m=0.9)


def _adopt_pending_starts(eager, fused_env):
    """Make the eager env's resets take the fused env's pending starts (what it drew is not compared)."""
    def reset_envs(ids):
        s = fused_env.sampler
        eager.state = type(eager.state)(*(cur.index_put((ids,), new[ids]) for cur, new in zip(eager.state, s.state)))
        for field, cur, new in zip(eager.params._fields, eager.params, s.params):
            if field not in ("rotor_pos_b", "rotor_spin"):
                cur[ids] = new[ids]
        eager.goal_w[ids] = s.goal_w[ids]
        eager.latency_steps[ids] = s.latency_steps[ids]
        eager.action_queue[ids] = eager.hover_action
        eager.prev_actions[ids] = eager.hover_action
        eager.episode_step[ids] = 0

    eager._reset_envs = reset_envs


def _compare(task: str, action_space: str, compiled: bool):
    cfg = _cfg(task, action_space)
    fused_env = FusedQuadrotorEnv(cfg, make_env(task, cfg, num_envs=NUM_ENVS, seed=5).run, TASKS[task][1],
                                  compiled=compiled)
    eager = make_env(task, cfg, num_envs=NUM_ENVS, seed=5, physics="eager")
    obs_f = fused_env.reset()["policy"]
    _adopt_pending_starts(eager, fused_env)
    obs_e = eager.reset()["policy"]
    torch.testing.assert_close(obs_f, obs_e, atol=1e-5, rtol=1e-5)
    gen = torch.Generator().manual_seed(0)
    resets = crashes = 0
    for t in range(STEPS):
        actions = fused_env.hover_action + 0.3 * torch.randn(NUM_ENVS, cfg.action_dim, generator=gen)
        obs_f, rew_f, term_f, trunc_f, info_f = fused_env.step(actions)
        obs_e, rew_e, term_e, trunc_e, info_e = eager.step(actions)
        assert torch.equal(term_f, term_e) and torch.equal(trunc_f, trunc_e), f"dones differ at step {t}"
        torch.testing.assert_close(rew_f, rew_e, atol=1e-4, rtol=1e-3, msg=f"rewards differ at step {t}")
        torch.testing.assert_close(obs_f["policy"], obs_e["policy"], atol=1e-3, rtol=1e-3,
                                   msg=f"observations differ at step {t}")
        torch.testing.assert_close(info_f["pos_err_m"], info_e["pos_err_m"], atol=1e-4, rtol=1e-3)
        assert int(info_f["episode_count"]) == int(info_e["episode_count"])
        if int(info_e["episode_count"]) > 0:
            for k, v in info_e["episode"].items():
                torch.testing.assert_close(info_f["episode"][k], v, atol=1e-4, rtol=1e-3, msg=f"{k} at step {t}")
        resets += int(info_e["episode_count"])
        crashes += int(info_e["crashed"].sum())
    # not vacuous: every env reset several times, some by crashing, and the vehicles differ
    assert resets >= 3 * NUM_ENVS and crashes > 0
    assert eager.params.mass.std() > 0


@pytest.mark.parametrize("action_space", ["ctbr", "rotor"])
@pytest.mark.parametrize("task", ["hover", "recover"])
def test_fused_step_matches_eager_op_by_op(task, action_space):
    _compare(task, action_space, compiled=False)


@pytest.mark.slow
def test_compiled_fused_step_matches_eager():
    """The compiled kernels (tens of seconds to compile cold, seconds from inductor's disk cache)."""
    _compare("hover", "ctbr", compiled=True)


def test_fused_covers_the_base_tasks_and_refuses_the_rest():
    assert fused_unsupported(TASKS["hover"][1], TASKS["hover"][0]()) is None
    for task in ("hover_robust", "waypoint", "trajectory"):
        assert fused_unsupported(TASKS[task][1], TASKS[task][0]()) is not None
        assert make_env(task, num_envs=2, physics="auto").run.physics == "eager"
        with pytest.raises(ValueError, match="does not cover"):
            make_env(task, num_envs=2, physics="fused")
