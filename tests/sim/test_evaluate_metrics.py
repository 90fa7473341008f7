"""Evaluation metrics on constructed runs, and one closed-loop flight through a contract in pybullet."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from sim.pybullet_ref.evaluate import (bootstrap_ci, fly, hover_metrics, iqm, iqm_ci, reach_metrics,
                                      tracking_metrics)
from sim.quadrotor.presets import CRAZYFLIE_2X, GRAVITY
from tether.contract import ActionSpec, PolicyContract, make_slices

DT = 0.01


def run(err_by_episode: list[np.ndarray], crashed=None) -> dict[str, np.ndarray]:
    err = np.stack(err_by_episode, axis=1)
    return {"t_s": np.arange(err.shape[0]) * DT, "pos_err": err,
            "crashed": np.zeros(err.shape[1], bool) if crashed is None else np.asarray(crashed)}


def decay(t: np.ndarray, start_m: float = 0.3, time_constant_s: float = 0.5) -> np.ndarray:
    return start_m * np.exp(-t / time_constant_s)


# ------------------------------------------------------------------------------------ metrics

def test_reach_and_hold_succeeds_reach_then_leave_fails():
    t = np.arange(601) * DT  # 6 s
    holds = decay(t)
    leaves = np.where(t > 4.0, 0.2, decay(t))
    late = np.where(t < 5.5, 0.2, 0.01)
    m = hover_metrics(run([holds, leaves, late]), tol_m=0.05, reach_within_s=5.0)
    expected_settle = t[np.argmax(holds <= 0.05)]  # 0.5 s * ln(6) ~ 0.90 s
    assert m["success"].tolist() == [True, False, False]
    assert m["settle_time_s"][0] == pytest.approx(expected_settle) and 0.85 < expected_settle < 0.95
    assert math.isnan(m["settle_time_s"][1])
    assert m["settle_time_s"][2] == pytest.approx(5.5)
    assert m["steady_state_err_m"][0] == pytest.approx(holds[t >= 5.0 - 1e-9].mean())
    assert m["steady_state_err_m"][1] == pytest.approx(0.2)


def test_a_crash_fails_even_with_a_small_error():
    t = np.arange(301) * DT
    m = hover_metrics(run([decay(t), decay(t)], crashed=[False, True]))
    assert m["success"].tolist() == [True, False]
    nan_err = decay(t).copy()
    nan_err[-10:] = np.nan
    assert not hover_metrics(run([nan_err]))["success"][0]


def test_reach_is_the_first_time_near_and_slow_and_must_come_before_a_crash():
    t = np.arange(301) * DT  # 3 s
    err = decay(t)  # within 5 cm from ~0.90 s
    fast = np.where(t < 1.5, 0.5, 0.05)  # too fast at the goal until 1.5 s
    m = len(t)
    res = {"t_s": t, "pos_err": np.stack([err, err, err, np.full(m, 0.2)], 1),
           "lin_vel_w": np.stack([np.zeros((m, 3)), np.stack([fast, 0 * t, 0 * t], -1), np.zeros((m, 3)),
                                  np.zeros((m, 3))], 1),
           "crashed": np.array([False, False, True, False]), "crash_time_s": np.array([np.nan, np.nan, 0.5, np.nan])}
    met = reach_metrics(res, tol_m=0.05, speed_m_s=0.1)
    assert met["success"].tolist() == [True, True, False, False]
    assert met["reach_time_s"][0] == pytest.approx(t[np.argmax(err < 0.05)])
    assert met["reach_time_s"][1] == pytest.approx(1.5)  # near from 0.9 s, slow only from 1.5 s
    assert math.isnan(met["reach_time_s"][3])
    res["crash_time_s"][2] = 2.0  # a crash after the goal was reached: the task had ended with success
    assert reach_metrics(res, 0.05, 0.1)["success"][2]


def test_tracking_counts_from_settle_time_and_fails_a_crash():
    t = np.arange(501) * DT  # 5 s
    steady = np.where(t < 2.0, 1.0, 0.04)  # far off at the start, then 4 cm
    wobble = np.where(t < 2.0, 1.0, 0.04 + 0.08 * (np.sin(10 * t) > 0))
    m = tracking_metrics(run([steady, wobble, steady], crashed=[False, False, True]), tol_m=0.05, settle_s=2.0)
    assert m["rms_err_m"][0] == pytest.approx(0.04)
    window = t >= 2.0 - 1e-9
    assert m["rms_err_m"][1] == pytest.approx(np.sqrt(np.mean(wobble[window] ** 2)))
    assert m["max_err_m"][1] == pytest.approx(0.12)
    assert m["success"].tolist() == [True, False, False]


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_samples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 2000):
        values = rng.normal(3.0, 1.0, n)
        mean, lo, hi = bootstrap_ci(values, n_boot=2000, alpha=0.05, seed=0)
        assert mean == pytest.approx(values.mean())
        assert lo < mean < hi
        widths.append(hi - lo)
        # close to the normal-theory interval of a mean, +- 1.96 standard errors
        assert hi - lo == pytest.approx(2 * 1.96 * values.std(ddof=1) / math.sqrt(n), rel=0.2)
    # the width scales as 1/sqrt(n): 10x narrower for 100x the samples
    assert widths[1] < widths[0] / 5
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, math.nan])


def test_iqm_ignores_outliers_and_matches_scipy():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1000.0, -1000.0])
    assert iqm(values) == pytest.approx(1.0, abs=0.03)
    rng = np.random.default_rng(2)
    for n in (4, 7, 10, 33):
        x = rng.standard_cauchy(n)
        assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))


def test_iqm_ci_stratified_bootstrap_over_seeds():
    rng = np.random.default_rng(3)
    scores = rng.normal(0.8, 0.05, (10, 6))  # [n_seeds, n_strata]
    scores[0, :] = -50.0  # one broken seed
    value, lo, hi = iqm_ci(scores, n_boot=1000, seed=0)
    assert value == pytest.approx(scipy.stats.trim_mean(scores.reshape(-1), 0.25))
    assert lo <= value <= hi and 0.7 < lo and hi < 0.9, "the IQM and its interval resist one outlier seed"
    one_stratum = iqm_ci(scores[:, 0], n_boot=500)
    assert one_stratum[1] <= one_stratum[0] <= one_stratum[2]


# ------------------------------------------------------------------------------- closed loop

RATE_KP = (20.0, 20.0, 8.0)
RATE_LIMITS = (8.0, 8.0, 4.0)
HISTORY = 2


def hover_contract() -> PolicyContract:
    p = CRAZYFLIE_2X
    hover_thrust_action = 2.0 * p.mass_kg * GRAVITY / p.max_thrust_n - 1.0
    return PolicyContract(
        task="hover_pd", control_rate_hz=100.0, action_latency_s=0.0,
        observation=make_slices([("pos_err_w", 3), ("lin_vel_w", 3), ("rotmat_bw", 9), ("ang_vel_b", 3),
                                 ("prev_actions", 4 * HISTORY)]),
        action=ActionSpec(type="ctbr", dim=4, max_thrust_n=p.max_thrust_n, body_rate_limits_rad_s=RATE_LIMITS,
                          rate_kp=RATE_KP, hover_action=(hover_thrust_action, 0.0, 0.0, 0.0)),
        provenance={})


class PdHover:
    """Position PD -> desired acceleration -> collective thrust along z_b and body rates that turn z_b
    toward it (geometric tilt control, yaw held at 0). Reads its inputs only through the contract."""

    def __init__(self, contract: PolicyContract, kp=6.0, kd=4.0, k_att=10.0, k_yaw=2.0):
        self.c, self.kp, self.kd, self.k_att, self.k_yaw = contract, kp, kd, k_att, k_yaw
        self.sent: list[np.ndarray] = []

    def part(self, obs: np.ndarray, name: str) -> np.ndarray:
        s = self.c.slice(name)
        return obs[:, s.offset:s.offset + s.length]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        history = self.part(obs, "prev_actions").reshape(len(obs), HISTORY, 4)
        expected = [self.sent[-k] if len(self.sent) >= k else np.tile(self.c.action.hover_action, (len(obs), 1))
                    for k in range(HISTORY, 0, -1)]  # oldest first
        np.testing.assert_allclose(history, np.stack(expected, axis=1), atol=1e-6)
        pos_err, vel = self.part(obs, "pos_err_w"), self.part(obs, "lin_vel_w")
        r_bw = self.part(obs, "rotmat_bw").reshape(-1, 3, 3)
        acc_des = self.kp * pos_err - self.kd * vel + np.array([0.0, 0.0, GRAVITY])
        z_b = r_bw[:, :, 2]
        z_des = acc_des / np.linalg.norm(acc_des, axis=-1, keepdims=True)
        thrust = CRAZYFLIE_2X.mass_kg * np.einsum("ni,ni->n", acc_des, z_b)
        tilt_err_b = np.einsum("nji,nj->ni", r_bw, np.cross(z_b, z_des))
        yaw = np.arctan2(r_bw[:, 1, 0], r_bw[:, 0, 0])
        rates = np.concatenate([self.k_att * tilt_err_b[:, :2], -self.k_yaw * yaw[:, None]], axis=-1)
        a = self.c.action
        thrust_action = 2.0 * thrust[:, None] / a.max_thrust_n - 1.0
        actions = np.concatenate([thrust_action, rates / np.asarray(a.body_rate_limits_rad_s)], axis=-1)
        actions = np.clip(actions, -1.0, 1.0)
        self.sent.append(actions)
        return actions


def tilted_starts(m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    yaw = rng.uniform(-math.pi, math.pi, m)  # a yaw far from 0 exposes any body/world frame mix-up
    tilt_axis = rng.normal(size=(m, 3)) * [1.0, 1.0, 0.0]
    tilt_axis /= np.linalg.norm(tilt_axis, axis=-1, keepdims=True)
    tilt = np.radians(15.0)
    q_yaw = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], axis=-1)
    q_tilt = np.concatenate([np.full((m, 1), math.cos(tilt / 2)), math.sin(tilt / 2) * tilt_axis], axis=-1)
    w1, x1, y1, z1 = q_tilt.T
    w2, x2, y2, z2 = q_yaw.T
    quat = np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=-1)
    return {"pos_w": np.array([0.0, 0.0, 1.0]) + rng.uniform(-0.3, 0.3, (m, 3)), "quat_wxyz": quat,
            "lin_vel_w": rng.uniform(-0.3, 0.3, (m, 3)), "ang_vel_b": rng.uniform(-1.0, 1.0, (m, 3))}


@pytest.mark.parametrize("latency_steps", [0, 2])
def test_pd_controller_flown_through_the_contract_holds_the_crazyflie(latency_steps):
    contract = hover_contract()
    m = 4
    goal_w = np.tile([0.0, 0.0, 1.0], (m, 1))
    result = fly(PdHover(contract), contract, CRAZYFLIE_2X, tilted_starts(m, np.random.default_rng(0)), goal_w,
                 duration_s=4.0, latency_steps=latency_steps)  # rate_kp from the contract
    assert result["pos_w"].shape == (401, m, 3) and result["actions"].shape == (400, m, 4)
    assert result["pos_err"][0].min() > 0.1, "the drones must start away from the goal"
    metrics = hover_metrics(result, tol_m=0.05, reach_within_s=3.0)
    assert metrics["success"].all(), metrics
    assert np.all(metrics["steady_state_err_m"] < 0.01)
    assert not result["crashed"].any()


def test_a_policy_that_cuts_the_motors_crashes():
    contract = hover_contract()

    def motors_off(obs: np.ndarray) -> np.ndarray:
        return np.tile([-1.0, 0.0, 0.0, 0.0], (len(obs), 1))

    start = {"pos_w": np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0]]), "quat_wxyz": np.tile([1.0, 0, 0, 0], (2, 1)),
             "lin_vel_w": np.zeros((2, 3)), "ang_vel_b": np.zeros((2, 3))}
    result = fly(motors_off, contract, CRAZYFLIE_2X, start, np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0]]),
                 duration_s=1.0, rate_kp=RATE_KP)
    assert result["crashed"].all()
    assert 0.4 < result["crash_time_s"][0] < 0.6  # free fall from 1 m: sqrt(2 / 9.81) = 0.45 s + spin-down
    assert not hover_metrics(result)["success"].any()
    assert np.all(np.isfinite(result["pos_w"]))


def test_ctbr_without_rate_gains_is_refused():
    contract = hover_contract()
    contract = dataclasses.replace(contract, action=dataclasses.replace(contract.action, rate_kp=(0.0, 0.0, 0.0)))
    start = tilted_starts(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rate_kp"):
        fly(PdHover(contract), contract, CRAZYFLIE_2X, start, np.array([[0.0, 0.0, 1.0]]), duration_s=0.1)
