"""`tether eval` judges each task as it defines success, and both simulators fly the same goals: a
trajectory policy's goal moves in pybullet exactly as in Tether's simulator, a waypoint policy gets
the task's own random goals, the same in each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.evaluation import ACCEPTANCE, AcceptanceCfg, evaluate_policy, task_cfg_from_contract
from policies.export import export_policy
from policies.ppo import PPOCfg, train
from sim.tasks import make_env

TINY_PPO = PPOCfg(num_iterations=1, num_steps=4, num_minibatches=1, update_epochs=1)


def tiny_policy(task: str, root):
    """A policy of ``task`` trained for one tiny iteration: what it does is irrelevant here, only which
    goals the evaluation feeds it."""
    ckpt = train(make_env(task, num_envs=16, seed=0), task, TINY_PPO, root / "run", progress=False)
    policy_dir, _, _ = export_policy(ckpt, root / "policy")
    return policy_dir


@pytest.fixture(scope="module")
def trajectory_policy(tmp_path_factory):
    return tiny_policy("trajectory", tmp_path_factory.mktemp("trajectory"))


@pytest.fixture(scope="module")
def waypoint_policy(tmp_path_factory):
    return tiny_policy("waypoint", tmp_path_factory.mktemp("waypoint"))


def test_trajectory_goal_moves_in_pybullet_exactly_as_in_tether(trajectory_policy):
    cfg = task_cfg_from_contract(trajectory_policy)
    acceptance = AcceptanceCfg(num_starts=4, init_pos_m=0.1, duration_s=1.0, tol_m=0.1, settle_s=0.5,
                               required_successes=4)
    report = evaluate_policy(trajectory_policy, cfg, acceptance)
    assert report["task"] == "trajectory" and report["metric"] == "track"
    pb, th = report["pybullet"]["_result"], report["tether"]["_result"]
    t = pb["t_s"]
    goal = pb["goal_w"]  # [T, M, 3] what pybullet's flights were judged (and observed) against
    assert goal.shape == (len(t), 4, 3)
    travel = np.linalg.norm(goal[-1] - goal[0], axis=-1)
    assert (travel > 0.2).all(), f"the goal barely moved in pybullet over 1 s: {travel} m"
    # The same goal as Tether's simulator, whose own goal update moved it there (not a copy of ours)
    np.testing.assert_allclose(goal, th["goal_w"], atol=1e-5)
    # and it is the task's Lissajous curve: y = c_y + A_y sin(2 pi f_y t) whatever the phase,
    # x on an ellipse of the x amplitude (phase per start), z fixed
    amp, freq, centre = np.array(cfg.amplitude_m), np.array(cfg.frequency_hz), np.array(cfg.goal_w)
    y = centre[1] + amp[1] * np.sin(2 * math.pi * freq[1] * t)
    np.testing.assert_allclose(goal[:, :, 1], np.broadcast_to(y[:, None], goal.shape[:2]), atol=1e-5)
    np.testing.assert_allclose(goal[:, :, 2], np.full(goal.shape[:2], centre[2]), atol=1e-6)
    w = 2 * math.pi * freq[0]
    x, vx = goal[:, :, 0] - centre[0], th["goal_vel_w"][:, :, 0]
    np.testing.assert_allclose(x ** 2 + (vx / w) ** 2, np.full(x.shape, amp[0] ** 2), rtol=1e-4)
    assert np.ptp(goal[0, :, 0]) > 0.05, "every start got the same phase"
    # the tracking metric is the one reported
    assert {"tracking_rms_m_median", "tracking_max_m_median"} <= set(report["pybullet"])
    rms = report["pybullet"]["_metrics"]["rms_err_m"]
    window = t >= 0.5 - 1e-9
    np.testing.assert_allclose(rms, np.sqrt(np.mean(pb["pos_err"][window] ** 2, axis=0)))


def test_waypoint_goals_are_the_task_s_own_and_the_same_in_both_simulators(waypoint_policy):
    cfg = task_cfg_from_contract(waypoint_policy)
    acceptance = ACCEPTANCE["waypoint"].with_starts(6)
    acceptance = AcceptanceCfg(**{**acceptance.__dict__, "duration_s": 0.5})
    report = evaluate_policy(waypoint_policy, cfg, acceptance)
    assert report["metric"] == "reach" and acceptance.required_successes == 6
    pb, th = report["pybullet"]["_result"], report["tether"]["_result"]
    np.testing.assert_allclose(pb["goal_w"], th["goal_w"], atol=1e-6)
    goals = pb["goal_w"][0]
    assert np.ptp(pb["goal_w"], axis=0).max() < 1e-9, "a waypoint does not move"
    box, centre = np.array(cfg.goal_box_m), np.array(cfg.goal_w)
    assert (np.abs(goals - centre) <= box + 1e-6).all() and np.ptp(goals, axis=0).min() > 0.01
    # starts at the box centre (acceptance init_pos_m 0), not at the goal
    np.testing.assert_allclose(pb["pos_w"][0], np.broadcast_to(centre, (6, 3)), atol=1e-6)
    assert "reach_time_s_median" in report["pybullet"]


def test_the_seed_changes_starts_and_goals(waypoint_policy):
    cfg = task_cfg_from_contract(waypoint_policy)
    base = AcceptanceCfg(num_starts=3, init_pos_m=0.0, duration_s=0.1, required_successes=0)
    a = evaluate_policy(waypoint_policy, cfg, base, sims=("tether",))
    b = evaluate_policy(waypoint_policy, cfg, AcceptanceCfg(**{**base.__dict__, "seed": 1}), sims=("tether",))
    assert not np.allclose(a["tether"]["_result"]["goal_w"][0], b["tether"]["_result"]["goal_w"][0])


def test_acceptance_over_another_number_of_starts_keeps_its_fraction():
    assert ACCEPTANCE["hover"].with_starts(10).required_successes == 10  # 99 % of 10, rounded up
    assert ACCEPTANCE["recover"].with_starts(20).required_successes == 19
    assert ACCEPTANCE["hover"].with_starts(200).required_successes == 198
    with pytest.raises(ValueError, match="num_starts"):
        AcceptanceCfg(num_starts=0, required_successes=0)
    with pytest.raises(ValueError, match="duration_s"):
        AcceptanceCfg(duration_s=float("nan"))


def test_every_state_task_has_a_default_acceptance():
    """`tether eval` without --acceptance judges a policy by its task's own acceptance: every task flown by
    start distribution has one (navigate is judged over obstacle fields by policies/nav_eval.py instead)."""
    from sim.tasks import TASKS

    missing = [t for t in TASKS if t != "navigate" and t not in ACCEPTANCE]
    assert not missing, f"tasks without a default acceptance: {missing}"
    assert ACCEPTANCE["hover_robust"] == ACCEPTANCE["hover"]  # a class policy is judged on its nominal vehicle
