"""The fused training env draws what the eager env draws (issue 13): the step-by-step parity tests
(test_fused_env.py) give both envs the same starts and no observation noise, so they cannot see a
difference in the distributions each env draws on its own: the starts of its episodes (pending starts,
redrawn every REFRESH_STEPS steps, against the eager env's reset at the moment an episode ends), the
vehicles, the latencies and the observation noise. These tests compare those distributions, each env
drawing from its own generator, under the same fixed stochastic policy (op by op: no compile).
"""

from __future__ import annotations

import math

import pytest
import torch

from sim.tasks import TASKS, make_env
from sim.tasks.fused_env import REFRESH_STEPS, FusedQuadrotorEnv, _observation

NUM_ENVS = 256
STEPS = 160
ACTION_STD = 0.6  # above the initial policy's 0.37 (PPOCfg.init_log_std = -1): episodes end by crashing, soon


def _envs(task: str = "hover", seed: int = 3):
    eager = make_env(task, num_envs=NUM_ENVS, seed=seed, physics="eager")
    fused_env = FusedQuadrotorEnv(eager.cfg, make_env(task, num_envs=NUM_ENVS, seed=seed + 1, physics="eager").run,
                                  TASKS[task][1], compiled=False)
    return eager, fused_env


def _episodes(env) -> dict[str, torch.Tensor]:
    """First observations, lengths and crashes of every episode that starts / ends within STEPS steps."""
    gen = torch.Generator().manual_seed(11)
    obs = env.reset()["policy"]
    firsts, lengths, crashed, rewards = [obs], [], [], []
    ep_len = torch.zeros(NUM_ENVS)
    for _ in range(STEPS):
        actions = env.hover_action + ACTION_STD * torch.randn(NUM_ENVS, env.cfg.action_dim, generator=gen)
        obs, rew, term, trunc, info = env.step(actions)
        done = term | trunc
        ep_len += 1
        firsts.append(obs["policy"][done])
        lengths.append(ep_len[done].clone())
        crashed.append(info["crashed"][done].float())
        rewards.append(rew)
        ep_len[done] = 0
    return {"first_obs": torch.cat(firsts), "length": torch.cat(lengths), "crashed": torch.cat(crashed),
            "reward": torch.stack(rewards)}


def _assert_same_mean(a: torch.Tensor, b: torch.Tensor, what: str, sigmas: float = 5.0):
    """Means of two independent samples agree within ``sigmas`` standard errors of their difference."""
    se = torch.sqrt(a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).clamp_min(1e-6)
    z = (a.mean(0) - b.mean(0)).abs() / se
    assert bool((z < sigmas).all()), f"{what}: means differ by {z.max():.1f} standard errors (index {int(z.argmax())})"


def _assert_same_std(a: torch.Tensor, b: torch.Tensor, what: str, rel: float = 0.15):
    ratio = (a.std(0) + 1e-6) / (b.std(0) + 1e-6)
    assert bool(((ratio - 1).abs() < rel).all()), f"{what}: std ratio {ratio.tolist()} (bound 1 +- {rel})"


@pytest.mark.parametrize("task", ["hover", "recover"])
def test_fused_episodes_start_from_the_eager_distribution(task):
    eager, fused_env = _envs(task)
    e, f = _episodes(eager), _episodes(fused_env)
    # not vacuous: the envs restarted many episodes, mostly by crashing, some of them after a refresh
    for d in (e, f):
        assert len(d["length"]) >= NUM_ENVS and d["crashed"].mean() > 0.5
    assert STEPS > 4 * REFRESH_STEPS
    _assert_same_mean(f["first_obs"], e["first_obs"], "first observation of an episode")
    _assert_same_std(f["first_obs"], e["first_obs"], "first observation of an episode")
    _assert_same_mean(f["length"], e["length"], "episode length")
    _assert_same_mean(f["crashed"], e["crashed"], "crash rate")
    _assert_same_mean(f["reward"].reshape(-1), e["reward"].reshape(-1), "reward")
    _assert_same_std(f["reward"].reshape(-1, 1), e["reward"].reshape(-1, 1), "reward")


def test_fused_draws_the_eager_vehicles_and_latencies():
    """The pending starts' vehicles and latencies (what a finished env takes) against the eager env's draw."""
    eager, fused_env = _envs()
    fused_env.reset()
    fused_env._draw_pending()
    pending = dict(zip(__import__("sim.quadrotor.fused", fromlist=["param_rows"]).param_rows(4),
                       fused_env.pending_params))
    mass_f = -1.0 / pending["neg_inv_mass"]
    eager.reset()
    _assert_same_mean(mass_f.unsqueeze(-1), eager.params.mass, "mass")
    _assert_same_std(mass_f.unsqueeze(-1), eager.params.mass, "mass", rel=0.2)
    lat_f, lat_e = fused_env.pending_latency.float(), eager.latency_steps.float()
    assert lat_e.std() > 0, "latency must be randomized for this test to mean anything"
    _assert_same_mean(lat_f.unsqueeze(-1), lat_e.unsqueeze(-1), "latency steps")


def test_fused_observation_noise_is_the_configured_noise():
    """Observation minus its noise-free value: per component, the std the randomization config states (the
    parity tests run without noise)."""
    eager, fused_env = _envs()
    r = eager.cfg.randomization
    std = {"pos_err_b": r.obs_noise_pos_m, "lin_vel_b": r.obs_noise_vel_m_s, "up_b": r.obs_noise_rot,
           "ang_vel_b": r.obs_noise_ang_vel_rad_s, "prev_actions": 0.0}
    expected = torch.cat([torch.full((sl.length,), std[sl.name] * sl.scale) for sl in eager.slices])
    assert expected.max() > 0
    fused_env.reset()
    hover = fused_env.hover_action.expand(NUM_ENVS, -1)
    noise_f = []
    for _ in range(8):
        obs = fused_env.step(hover)[0]["policy"]
        clean = _observation(fused_env.cfg, fused_env.slices, fused_env.x, fused_env.goal_rows,
                             fused_env.prev_rows.reshape(-1, NUM_ENVS), torch.zeros(fused_env.noise_cols, NUM_ENVS))
        noise_f.append(obs - clean)
    eager.reset()
    noise_e = []
    for _ in range(8):
        eager.step(hover)
        clean = torch.cat([eager.quantities()[sl.name] * sl.scale for sl in eager.slices], dim=-1)
        noise_e.append(eager.observe()["policy"] - clean)
    for name, noise in (("fused", torch.cat(noise_f)), ("eager", torch.cat(noise_e))):
        measured = noise.std(0)
        zero = expected == 0
        assert bool((measured[zero] < 1e-5).all()), f"{name}: noise on a noise-free component"
        rel = (measured[~zero] / expected[~zero] - 1).abs()
        assert bool((rel < 0.1).all()), f"{name}: noise std {measured.tolist()} vs configured {expected.tolist()}"
        assert noise.mean(0).abs().max() < 5 * expected.max() / math.sqrt(noise.shape[0])
