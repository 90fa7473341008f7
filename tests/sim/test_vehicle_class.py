"""The vehicle classes of issue 10: ranges drawn as configured (motor rise and fall apart, drag on and
off, rate loop 100-500 Hz), a slower rate loop acts as a held command, the position-error integral the
sim observes is the one the deploy side computes, and the default randomization's draws are unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sim.quadrotor import dynamics
from sim.quadrotor.presets import CRAZYFLIE_2X, GRAVITY, PRESETS
from sim.randomization import (CRAZYFLIE_CLASS, PX4_CLASS, RANDOMIZATIONS, VEHICLE_CLASSES, RandomizationCfg,
                               rate_loop_divisors, sample_params, sample_rate_divisors)
from sim.tasks import make_env
from tether.observation import POS_ERR_INT_BAND_M, POS_ERR_INT_LIMIT_M_S, PositionErrorIntegral


@pytest.mark.parametrize("name", ["crazyflie_class", "px4_class"])
def test_class_ranges_are_drawn_as_configured(name):
    cfg = RANDOMIZATIONS[name]
    preset = PRESETS[{v: k for k, v in VEHICLE_CLASSES.items()}[name]]
    n = 4000
    p = sample_params(preset, cfg, n, torch.Generator().manual_seed(0))

    def spans(values, rng, what):
        lo, hi = rng
        v = values.flatten()
        assert float(v.min()) >= lo - 1e-6 and float(v.max()) <= hi + 1e-6, what
        assert float(v.min()) < lo + 0.05 * (hi - lo) and float(v.max()) > hi - 0.05 * (hi - lo), what

    spans(p.tau_up, cfg.tau_up_s, "tau_up [s]")
    spans(p.tau_down, cfg.tau_down_s, "tau_down [s]")
    spans(p.mass / preset.mass_kg, cfg.mass_scale, "mass")
    spans(p.km / preset.km_nm_per_rpm2, cfg.km_scale, "km")
    assert cfg.km_scale[1] / cfg.km_scale[0] >= 10.0 - 1e-9, "yaw torque coefficient over a 10x range"
    twr = len(preset.rotor_spin) * p.kf * p.max_rpm ** 2 / (p.mass * GRAVITY)
    spans(twr, cfg.thrust_to_weight, "thrust-to-weight")
    # rise and fall drawn apart: uncorrelated, and both orders occur
    c = np.corrcoef(p.tau_up.flatten().numpy(), p.tau_down.flatten().numpy())[0, 1]
    assert abs(c) < 0.05, f"tau_up and tau_down correlate ({c:.3f}): they must be drawn independently"
    assert bool((p.tau_up > p.tau_down).any()) and bool((p.tau_up < p.tau_down).any())
    # drag off in about drag_off_prob of the envs, on (and scaled) in the rest
    off = (p.drag == 0).all(-1).float().mean()
    assert abs(float(off) - cfg.drag_off_prob) < 0.03, f"drag off in {float(off):.1%} of envs"
    assert bool(((p.drag > 0).all(-1) | (p.drag == 0).all(-1)).all()), "drag is on or off per vehicle, not per axis"


def test_rate_loop_divisors_cover_100_to_500_hz():
    divs = rate_loop_divisors(CRAZYFLIE_CLASS, 500.0)
    rates = [500.0 / d for d in divs]
    assert min(rates) == pytest.approx(100.0) and max(rates) == pytest.approx(500.0)
    assert rate_loop_divisors(RandomizationCfg(), 200.0) == (1,)
    d = sample_rate_divisors(CRAZYFLIE_CLASS, 3000, 500.0, torch.Generator().manual_seed(0))
    assert set(d.flatten().tolist()) == set(divs)
    assert sample_rate_divisors(RandomizationCfg(), 10, 200.0, None) is None
    with pytest.raises(ValueError, match="substeps"):
        rate_loop_divisors(CRAZYFLIE_CLASS, 200.0)  # 4 substeps at 50 Hz cannot run a 500 Hz loop


def test_new_keys_validate():
    with pytest.raises(ValueError, match="drag_off_prob"):
        RandomizationCfg(drag_off_prob=1.5)
    with pytest.raises(ValueError, match="tau_up_s"):
        RandomizationCfg(tau_up_s=(0.0, 0.1))
    with pytest.raises(ValueError, match="rate_loop_hz"):
        RandomizationCfg(rate_loop_hz=(0.0, 100.0))


def test_default_randomization_draws_are_unchanged():
    """The new keys draw nothing unless set: the default config's per-env parameters (and so the
    nominal hover policy's training and its figures) are what they were."""
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = sample_params(CRAZYFLIE_2X, RandomizationCfg(), 64, g1)
    # the old sampler, inlined: tau scale shared by rise and fall, drag always on
    p = dynamics.nominal_params(CRAZYFLIE_2X, 64)
    u = lambda r: r[0] + (r[1] - r[0]) * torch.rand(64, 1, generator=g2)  # noqa: E731
    cfg = RandomizationCfg()
    mass, kf = p.mass * u(cfg.mass_scale), p.kf * u(cfg.kf_scale)
    max_rpm = torch.sqrt(u(cfg.thrust_to_weight) * mass * GRAVITY / (4 * kf))
    tau = u(cfg.tau_scale)
    inertia, km = p.inertia * u(cfg.inertia_scale), p.km * u(cfg.km_scale)
    assert torch.equal(a.mass, mass) and torch.equal(a.max_rpm, max_rpm)
    assert torch.equal(a.tau_up, p.tau_up * tau) and torch.equal(a.tau_down, p.tau_down * tau)
    assert torch.equal(a.inertia, inertia) and torch.equal(a.km, km)


def test_hover_throttle_draw_oversamples_weak_vehicles_within_the_same_range():
    """thrust_to_weight_draw 'hover_throttle' is uniform in weight / thrust: the same range, the same
    one draw per env (every other parameter of the stream unchanged), weak vehicles about twice as often."""
    cfg = dataclasses.replace(CRAZYFLIE_CLASS, thrust_to_weight_draw="hover_throttle")
    n = 8000
    a = sample_params(CRAZYFLIE_2X, CRAZYFLIE_CLASS, n, torch.Generator().manual_seed(0))
    b = sample_params(CRAZYFLIE_2X, cfg, n, torch.Generator().manual_seed(0))
    for field in ("mass", "kf", "inertia", "tau_up", "tau_down", "km", "drag"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    twr_a, twr_b = (4 * p.kf * p.max_rpm ** 2 / (p.mass * GRAVITY) for p in (a, b))
    lo, hi = CRAZYFLIE_CLASS.thrust_to_weight
    assert float(twr_b.min()) >= lo - 1e-4 and float(twr_b.max()) <= hi + 1e-4
    weak = lambda t: float((t < 1.6).float().mean())  # noqa: E731
    expected = (1 / lo - 1 / 1.6) / (1 / lo - 1 / hi)  # uniform in 1 / (thrust / weight)
    assert weak(twr_b) == pytest.approx(expected, abs=0.02)
    assert weak(twr_b) > 1.7 * weak(twr_a)
    hover_throttle = 1.0 / twr_b.flatten()
    assert abs(float(hover_throttle.mean()) - 0.5 * (1 / lo + 1 / hi)) < 0.01
    with pytest.raises(ValueError, match="thrust_to_weight_draw"):
        RandomizationCfg(thrust_to_weight_draw="log")


def test_a_slower_rate_loop_holds_its_commands():
    """rate_div d: the rate controller's rotor commands change only every d-th substep. With d = 1 the
    step equals the plain one; with d = 10 (the whole control step) the vehicle responds to a rate
    step later than with d = 1 (a held command is a delay)."""
    preset = CRAZYFLIE_2X
    ctrl = dynamics.make_rate_controller(preset, (25.0, 25.0, 12.0))
    p = dynamics.nominal_params(preset, 2)
    s = dynamics.hover_state(2, preset)
    thrust = torch.full((2, 1), preset.mass_kg * GRAVITY)
    rates = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    plain = dynamics.step(s, None, p, 0.02, 10, ctbr=dynamics.CtbrSetpoint(thrust, rates, ctrl))
    every = dynamics.step(s, None, p, 0.02, 10, ctbr=dynamics.CtbrSetpoint(thrust, rates, ctrl,
                                                                           torch.ones(2, 1, dtype=torch.long)))
    for a, b in zip(plain, every):
        assert torch.equal(a, b)
    mixed = dynamics.step(s, None, p, 0.02, 10, ctbr=dynamics.CtbrSetpoint(
        thrust, rates, ctrl, torch.tensor([[1], [10]])))
    # from hover the first command is the same; the held one cannot back off as the rate builds up
    assert float(mixed.ang_vel_b[0, 0]) != float(mixed.ang_vel_b[1, 0])
    assert torch.equal(mixed.ang_vel_b[0], plain.ang_vel_b[0])


def test_env_integral_is_the_deploy_side_integral():
    """The robust task's pos_err_int_b observation equals tether.observation.PositionErrorIntegral fed
    with the same goal and positions every tick, rotated into the body frame; it is bounded."""
    env = make_env("hover_robust", num_envs=16, seed=0, max_distance_m=1e9, ground_z_m=-1e9,
                   randomization=dataclasses.replace(RandomizationCfg.nominal(), rate_loop_hz=(100.0, 500.0)))
    env.reset()
    sl = next(s for s in env.slices if s.name == "pos_err_int_b")
    integ = PositionErrorIntegral(env.cfg.control_dt)
    gen = torch.Generator().manual_seed(1)
    for k in range(60):
        q = env.quantities()
        value_w = integ.update(q["goal_w"].double().numpy(), q["pos_w"].double().numpy())
        r = q["rotmat_bw"].double().numpy().reshape(-1, 3, 3)
        expected_b = np.einsum("nji,nj->ni", r, value_w)
        obs = env.quantities()["pos_err_int_b"].double().numpy()
        np.testing.assert_allclose(obs, expected_b, atol=2e-5, err_msg=f"tick {k}")
        actions = env.hover_action + 0.3 * (2 * torch.rand(16, env.cfg.action_dim, generator=gen) - 1)
        _, _, term, trunc, _ = env.step(actions)
        assert not bool((term | trunc).any())
    assert float(np.abs(value_w).max()) > 0.0
    big = PositionErrorIntegral(0.02)
    for _ in range(1000):
        out = big.update(np.array([0.0, 0.0, 10.0]), np.zeros(3))
    assert out[2] == POS_ERR_INT_LIMIT_M_S and out[0] == 0.0
    one = PositionErrorIntegral(0.02).update(np.array([0.0, 0.0, 10.0]), np.zeros(3))
    assert one[2] == pytest.approx(0.02 * POS_ERR_INT_BAND_M), "a far goal adds only the band per tick (anti-windup)"


def test_robust_tasks_train_on_their_class():
    for task, cls in (("hover_robust", CRAZYFLIE_CLASS), ("hover_robust_px4", PX4_CLASS)):
        env = make_env(task, num_envs=8)
        assert env.cfg.randomization == cls
        assert "pos_err_int_b" in env.observation_names
        assert env.rate_div is not None and set(env.rate_div.flatten().tolist()) <= set(
            rate_loop_divisors(cls, env.cfg.physics_hz))
    assert make_env("hover", num_envs=8).rate_div is None  # the nominal task is unchanged


def test_privileged_group_is_the_drawn_vehicle_and_only_on_class_tasks():
    env = make_env("hover_robust", num_envs=256, seed=3)
    obs = env.reset()
    priv = obs["privileged"]
    assert priv.shape == (256, env.privileged_dim) and torch.isfinite(priv).all()
    col = {name: priv[:, i] for i, name in enumerate(env.privileged_names)}
    p, v, cls = env.params, env.cfg.vehicle, CRAZYFLIE_CLASS
    assert torch.allclose(col["mass_ratio"], p.mass[:, 0] / v.mass_kg)
    lo, hi = cls.thrust_to_weight
    assert col["thrust_to_weight"].min() >= lo - 1e-4 and col["thrust_to_weight"].max() <= hi + 1e-4
    assert col["thrust_to_weight"].max() - col["thrust_to_weight"].min() > 0.5 * (hi - lo)
    # the collective action that hovers the vehicle: its thrust equals the weight under the action's mapping
    thrust = 0.5 * (col["hover_action"] + 1.0) * v.max_thrust_n
    assert torch.allclose(thrust, p.mass[:, 0] * GRAVITY, rtol=1e-5)
    assert torch.allclose(col["tau_up_10ms"], p.tau_up[:, 0] / 0.01)
    assert torch.equal(col["latency_steps"], env.latency_steps.float())
    assert torch.allclose(col["rate_period_ms"], env.rate_div[:, 0].float() * 1000.0 / env.cfg.physics_hz)
    assert (col["drag_ratio"] == 0).any() and (col["drag_ratio"] > 0.4).any()  # drag on and off
    # a reset draws new vehicles and the group follows them; the policy group carries none of it
    before = priv.clone()
    env._reset_envs(torch.arange(0, 256, 2))
    after = env.observe()["privileged"]
    assert not torch.allclose(after[::2], before[::2]) and torch.equal(after[1::2], before[1::2])
    assert set(make_env("hover", num_envs=4).reset()) == {"policy"}  # the nominal task is unchanged
