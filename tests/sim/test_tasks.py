"""Every registered task, both action spaces: the batched env API keeps its promises (shapes equal the
declared spec, no NaN, terminated vs truncated, per-term reward logging, seeding), plus task specifics
(waypoint success, trajectory reference)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sim.quadrotor.dynamics import QuadState
from sim.randomization import RandomizationCfg
from sim.tasks import TASKS, make_env

NUM_ENVS = 16
EPISODE_S = 0.1  # a short time limit [s], so that every policy crosses several episode boundaries
ACTION_SPACES = ("rotor", "ctbr")
CASES = [(task, space) for task in TASKS for space in ACTION_SPACES]


def reward_terms(cfg) -> set[str]:
    """Reward term names declared by the config: one ``rew_<term>`` scale per term."""
    return {f.name[len("rew_"):] for f in dataclasses.fields(cfg) if f.name.startswith("rew_")}


def min_thrust_action(env) -> torch.Tensor:
    """[N, A]: all rotors stopped (rotor) or zero collective thrust, level rates (ctbr)."""
    a = torch.full((env.num_envs, env.cfg.action_dim), -1.0)
    if env.cfg.action_space == "ctbr":
        a[:, 1:] = 0.0
    return a


def place(env, pos_w, lin_vel_w=None):
    """Put every env at pos_w [N, 3], level, at rest (or lin_vel_w), rotors at hover speed."""
    n = env.num_envs
    quat = torch.zeros(n, 4)
    quat[:, 0] = 1.0
    rpm = torch.full_like(env.state.rotor_rpm, env.cfg.vehicle.hover_rpm)
    vel = torch.zeros(n, 3) if lin_vel_w is None else lin_vel_w
    env.state = QuadState(pos_w.clone(), quat, vel.clone(), torch.zeros(n, 3), rpm)


@pytest.mark.parametrize("task,action_space", CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_task_api(task, action_space):
    env = make_env(task, num_envs=NUM_ENVS, action_space=action_space, seed=1, episode_length_s=EPISODE_S)
    cfg = env.cfg
    max_steps = cfg.max_episode_steps
    assert max_steps == round(EPISODE_S * cfg.control_rate_hz) and max_steps > 1

    # ---- declared spec
    expected_dim = len(cfg.vehicle.rotor_spin) if action_space == "rotor" else 4
    assert cfg.action_dim == expected_dim
    assert env.hover_action.shape == (expected_dim,)
    assert env.obs_dim == sum(s.length for s in env.slices)
    offset = 0
    for s in env.slices:
        assert s.offset == offset, f"slice {s.name} offset {s.offset}, expected {offset}: not contiguous"
        offset += s.length

    obs = env.reset()["policy"]
    assert obs.shape == (NUM_ENVS, env.obs_dim)
    assert obs.dtype == torch.float32
    assert torch.isfinite(obs).all()

    # ---- hover, zero and random actions through several episode boundaries
    gen = torch.Generator().manual_seed(0)
    policies = {
        "hover": lambda: env.hover_action.expand(NUM_ENVS, -1).clone(),
        "zero": lambda: torch.zeros(NUM_ENVS, cfg.action_dim),
        "random": lambda: 2.0 * torch.rand(NUM_ENVS, cfg.action_dim, generator=gen) - 1.0,
    }
    terms = reward_terms(cfg)
    steps_in_episode = torch.zeros(NUM_ENVS, dtype=torch.long)
    episode_return = torch.zeros(NUM_ENVS)
    episodes_logged = truncations = 0
    for name, policy in policies.items():
        for _ in range(2 * max_steps + 1):
            obs, rewards, terminated, truncated, info = env.step(policy())
            obs = obs["policy"]
            assert obs.shape == (NUM_ENVS, env.obs_dim) and torch.isfinite(obs).all(), name
            assert rewards.shape == (NUM_ENVS,) and rewards.dtype == torch.float32, name
            assert torch.isfinite(rewards).all(), name
            for flag in (terminated, truncated):
                assert flag.shape == (NUM_ENVS,) and flag.dtype == torch.bool, name
            assert not (terminated & truncated).any(), f"{name}: terminated and truncated both true"
            assert torch.equal(info["time_outs"], truncated)

            steps_in_episode += 1
            episode_return += rewards
            # truncation is the time limit exactly: at max_episode_steps, and only for envs still flying
            assert (steps_in_episode[truncated] == max_steps).all(), name
            at_limit = (steps_in_episode == max_steps) & ~terminated
            assert truncated[at_limit].all(), f"{name}: env reached the time limit without truncation"
            assert (steps_in_episode <= max_steps).all()
            truncations += int(truncated.sum())

            done = terminated | truncated
            if done.any():
                ep = info["episode"]
                assert {f"reward/{t}" for t in terms} <= set(ep), f"missing per-term logs: {sorted(ep)}"
                # the logged terms add up to the reward actually returned over the finished episodes
                logged = sum(float(ep[f"reward/{t}"]) for t in terms)
                assert logged == pytest.approx(float(episode_return[done].mean()), rel=1e-4, abs=1e-4), name
                assert float(ep["episode/length_s"]) == pytest.approx(
                    float(steps_in_episode[done].float().mean()) * cfg.control_dt, rel=1e-6)
                episodes_logged += 1
            else:
                assert "episode" not in info
            steps_in_episode[done] = 0
            episode_return[done] = 0.0
    assert episodes_logged > 0 and truncations > 0

    # ---- a shape mismatch is an error, never a silent broadcast
    for bad in ((NUM_ENVS, cfg.action_dim + 1), (NUM_ENVS - 1, cfg.action_dim), (cfg.action_dim,)):
        with pytest.raises(ValueError, match="actions must be shaped"):
            env.step(torch.zeros(bad))

    # ---- seeding: same seed, same actions -> identical runs; another seed -> another run
    def run(seed: int):
        e = make_env(task, num_envs=NUM_ENVS, action_space=action_space, seed=seed, episode_length_s=EPISODE_S)
        g = torch.Generator().manual_seed(123)
        out = [e.reset()["policy"]]
        for _ in range(max_steps + 3):  # crosses an automatic reset
            o, r, te, tr, _ = e.step(2.0 * torch.rand(NUM_ENVS, cfg.action_dim, generator=g) - 1.0)
            out += [o["policy"], r, te.float(), tr.float()]
        return out

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "same seed gave different rollouts"
    assert not torch.allclose(a[0], c[0]), "a different seed gave the same initial observations"


@pytest.mark.parametrize("task,action_space", CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_crash_is_terminated_not_truncated(task, action_space):
    env = make_env(task, num_envs=NUM_ENVS, action_space=action_space, seed=2, episode_length_s=5.0)
    cfg = env.cfg
    env.reset()

    # zero thrust: every vehicle falls and must end as a crash (ground or out of bounds), long before
    # the 5 s limit
    first_end = torch.full((NUM_ENVS,), -1)
    for k in range(int(2.0 * cfg.control_rate_hz)):
        _, rewards, terminated, truncated, info = env.step(min_thrust_action(env))
        assert not truncated.any()
        new = terminated & (first_end < 0)
        assert info["crashed"][new].all() and not info["success"][new].any()
        if new.any():
            first_end[new] = k
            ep = info["episode"]
            assert float(ep["episode/crash_rate"]) == 1.0
            # exactly one crash penalty per crashed episode, scaled by the control period
            assert float(ep["reward/crash"]) == pytest.approx(cfg.rew_crash * cfg.control_dt, rel=1e-6)
        if (first_end >= 0).all():
            break
    assert (first_end >= 0).all(), f"{int((first_end < 0).sum())} envs with zero thrust never crashed"

    # below the ground: a vehicle just above it, sinking, crashes on the next step
    hover = env.hover_action.expand(NUM_ENVS, -1).clone()
    env.reset()
    pos = env.goal_w.clone()
    pos[:, 2] = cfg.ground_z_m + 0.005
    place(env, pos, lin_vel_w=torch.tensor([0.0, 0.0, -2.0]).expand(NUM_ENVS, 3))
    _, _, terminated, truncated, info = env.step(hover)
    assert terminated.all() and info["crashed"].all() and not truncated.any()

    # out of bounds: only the env placed beyond max_distance_m from its goal ends
    env.reset()
    pos = env.goal_w.clone()
    pos[0, 0] += cfg.max_distance_m + 0.5
    place(env, pos)
    _, _, terminated, truncated, info = env.step(hover)
    assert terminated[0] and info["crashed"][0] and not truncated[0]
    assert not info["crashed"][1:].any(), "envs at their goal, at rest, crashed"


def test_waypoint_success_terminates_when_close_and_slow():
    cfg_cls, _ = TASKS["waypoint"]
    env = make_env("waypoint", num_envs=4, seed=3, randomization=RandomizationCfg.nominal())
    c = env.cfg
    assert isinstance(c, cfg_cls)
    env.reset()
    goal = env.goal_w.clone()
    hover = env.hover_action.expand(4, -1).clone()

    # env 0: at the goal, at rest -> success; env 1: at the goal but fast; env 2: slow but 3x tol away;
    # env 3: just inside the tolerance, at rest -> success
    pos = goal.clone()
    pos[2, 0] += 3.0 * c.success_tol_m
    pos[3, 1] += 0.5 * c.success_tol_m
    vel = torch.zeros(4, 3)
    vel[1, 0] = 10.0 * c.success_speed_m_s
    place(env, pos, vel)
    _, rewards, terminated, truncated, info = env.step(hover)
    assert info["success"].tolist() == [True, False, False, True]
    assert terminated.tolist() == [True, False, False, True]
    assert not truncated.any() and not info["crashed"].any()
    # the success bonus is paid on the success step only
    bonus = c.rew_success * c.control_dt
    assert bonus > 0
    assert float(rewards[0]) > bonus * 0.9 and float(rewards[2]) < bonus * 0.1
    assert float(info["episode"]["reward/success"]) == pytest.approx(bonus, rel=1e-6)
    # a finished env starts a new episode towards a new goal
    assert not torch.allclose(env.goal_w[0], goal[0])
    assert torch.allclose(env.goal_w[1], goal[1])


def _trajectory_series(env, steps: int):
    hover = env.hover_action.expand(env.num_envs, -1).clone()
    goals, vels, dones = [env.goal_w.clone()], [env.goal_vel_w.clone()], []
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(hover)
        goals.append(env.goal_w.clone())
        vels.append(env.goal_vel_w.clone())
        dones.append(terminated | truncated)
    return torch.stack(goals), torch.stack(vels), torch.stack(dones)


def test_trajectory_goal_moves_and_goal_vel_is_its_derivative():
    env = make_env("trajectory", num_envs=8, seed=4, randomization=RandomizationCfg.nominal(),
                   episode_length_s=0.3)
    c = env.cfg
    dt = c.control_dt
    env.reset()
    goals, vels, dones = _trajectory_series(env, 2 * c.max_episode_steps + 5)

    assert dones.any(), "expected automatic resets within the window"
    speed_bound = math.dist((0, 0, 0), [a * 2 * math.pi * f for a, f in zip(c.amplitude_m, c.frequency_hz)])
    moved = (goals[1:] - goals[:-1]).norm(dim=-1)
    assert (moved[~dones] > 0.2 * speed_bound * dt).any(), "the goal does not move"
    # Within an episode, the goal's finite difference over a step equals the mean reference velocity
    # at its two ends (second-order accurate). Transitions k -> k+1 where step k+1 reset are skipped:
    # there the goal jumps to the new episode's curve. The first transition after every reset is kept,
    # so a stale goal_vel_w at the start of an episode fails here.
    fd = (goals[1:] - goals[:-1]) / dt
    mid = 0.5 * (vels[1:] + vels[:-1])
    err = (fd - mid).norm(dim=-1)[~dones]
    assert float(err.max()) < 0.01 * speed_bound, f"goal_vel_w != d goal_w / dt (max error {float(err.max()):.3f} m/s)"
    # the observation carries the same reference velocity, in the body frame
    obs = env.observe()["policy"]
    s = next(s for s in env.slices if s.name == "goal_vel_b")
    q = env.quantities()
    assert torch.allclose(obs[:, s.offset:s.offset + s.length], q["goal_vel_b"], atol=1e-6)


def test_trajectory_goal_vel_is_consistent_right_after_reset():
    """The very first observation of an episode must carry the reference velocity at t = 0 of that
    episode's curve, not the previous episode's last one."""
    env = make_env("trajectory", num_envs=8, seed=4, randomization=RandomizationCfg.nominal())
    dt = env.cfg.control_dt
    env.reset()
    goal0, vel0 = env.goal_w.clone(), env.goal_vel_w.clone()
    env.step(env.hover_action.expand(8, -1).clone())
    goal1, vel1 = env.goal_w.clone(), env.goal_vel_w.clone()
    err = ((goal1 - goal0) / dt - 0.5 * (vel0 + vel1)).norm(dim=-1)
    assert float(err.max()) < 0.02, (f"goal_vel_w after reset() is inconsistent with the goal's motion "
                                     f"(max error {float(err.max()):.3f} m/s)")
