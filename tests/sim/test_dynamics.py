"""Batched quadrotor dynamics against physics worked out by hand, and domain randomization ranges."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sim.math import quat_from_axis_angle, quat_to_rotmat
from sim.quadrotor import dynamics
from sim.quadrotor.presets import CRAZYFLIE_2X, GRAVITY, PRESETS, PX4_1KG
from sim.randomization import (RandomizationCfg, load_randomization, randomization_from_dict,
                               sample_latency_steps, sample_params)

PRESET_LIST = list(PRESETS.values())
PRESET_IDS = [p.name for p in PRESET_LIST]


def f64(nt):
    """A QuadState / QuadParams in float64, so that tolerances below measure the model, not rounding."""
    return type(nt)(*[x.double() for x in nt])


def at_rest(preset, n=1, rpm=0.0):
    s = f64(dynamics.hover_state(n, preset))
    return s._replace(rotor_rpm=torch.full_like(s.rotor_rpm, rpm))


def simulate(state, params, rotor_cmd, seconds, dt=0.02, substeps=10):
    for _ in range(int(round(seconds / dt))):
        state = dynamics.step(state, rotor_cmd, params, dt, substeps)
    return state


# ------------------------------------------------------------------------------ translation


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
def test_free_fall(preset):
    """Rotors off from rest: z(t) = -g t^2 / 2 without drag; with linear drag k = drag_z / m,
    v(t) = -(g/k)(1 - e^-kt), z(t) = -(g/k)(t - (1 - e^-kt)/k)."""
    t = 1.0
    h = 0.002  # substep [s]; semi-implicit Euler is off by about g h t / 2 = 1 cm here
    tol = GRAVITY * h * t
    off = torch.zeros(1, len(preset.rotor_spin), dtype=torch.float64)

    p = f64(dynamics.nominal_params(preset, 1))
    no_drag = simulate(at_rest(preset), p._replace(drag=torch.zeros_like(p.drag)), off, t)
    assert float(no_drag.pos_w[0, 2]) == pytest.approx(-0.5 * GRAVITY * t * t, abs=tol)
    assert float(no_drag.lin_vel_w[0, 2]) == pytest.approx(-GRAVITY * t, abs=1e-6)
    assert torch.allclose(no_drag.pos_w[0, :2], torch.zeros(2, dtype=torch.float64), atol=1e-12)

    with_drag = simulate(at_rest(preset), p, off, t)
    k = preset.drag_n_s_per_m[2] / preset.mass_kg
    z = -(GRAVITY / k) * (t - (1.0 - math.exp(-k * t)) / k)
    v = -(GRAVITY / k) * (1.0 - math.exp(-k * t))
    assert float(with_drag.pos_w[0, 2]) == pytest.approx(z, abs=tol)
    assert float(with_drag.lin_vel_w[0, 2]) == pytest.approx(v, abs=tol)
    # drag matters at this speed: the test would notice if it were dropped
    assert abs(z - (-0.5 * GRAVITY * t * t)) > 5 * tol
    # no rotor turns, no torque: attitude untouched
    assert torch.allclose(with_drag.quat_wxyz[0], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
def test_hover_equilibrium_holds_for_two_seconds(preset):
    p = dynamics.nominal_params(preset, 1)
    s = dynamics.hover_state(1, preset)
    s = s._replace(pos_w=torch.tensor([[0.3, -0.2, 1.5]]))
    cmd = torch.full((1, len(preset.rotor_spin)), preset.hover_rpm / preset.max_rpm)
    thrust, torque = dynamics.rotor_wrench(s.rotor_rpm, p)
    assert float(thrust) == pytest.approx(preset.mass_kg * GRAVITY, rel=1e-5)
    assert torque.abs().max() < 1e-6 * preset.mass_kg
    out = simulate(s, p, cmd, 2.0, dt=0.02, substeps=4)
    assert (out.pos_w - s.pos_w).norm() < 1e-3
    assert out.lin_vel_w.norm() < 1e-3
    assert out.ang_vel_b.norm() < 1e-4
    assert torch.allclose(out.rotor_rpm, s.rotor_rpm, rtol=1e-5)


# --------------------------------------------------------------------------------- rotation


def _euler_like(quat):
    """(left side up, nose up, heading) indicators from the body->world rotation."""
    r = quat_to_rotmat(quat)[0]
    return float(r[2, 1]), float(r[2, 0]), math.atan2(float(r[1, 0]), float(r[0, 0]))


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
def test_torque_signs(preset):
    """Differential thrust by rotor *position and spin* (never by index): left rotors up roll the left
    side up, front rotors up pitch the nose up, counter-clockwise rotors up yaw the body clockwise."""
    p = f64(dynamics.nominal_params(preset, 1))
    pos = torch.tensor(preset.rotor_pos_b)
    spin = torch.tensor(preset.rotor_spin)
    hover = preset.hover_rpm / preset.max_rpm
    s0 = at_rest(preset, rpm=preset.hover_rpm)

    def fly(boost):
        cmd = (hover * (1.0 + 0.05 * boost.double())).unsqueeze(0)
        return simulate(s0, p, cmd, 0.15, dt=0.01, substeps=4)

    left = fly((pos[:, 1] > 0).double() - (pos[:, 1] < 0).double())
    left_up, nose_up, _ = _euler_like(left.quat_wxyz)
    assert float(left.ang_vel_b[0, 0]) > 0 and left_up > 0.01, "more thrust on the left must roll left side up"
    assert abs(nose_up) < 0.1 * left_up

    front = fly((pos[:, 0] > 0).double() - (pos[:, 0] < 0).double())
    left_up, nose_up, _ = _euler_like(front.quat_wxyz)
    assert float(front.ang_vel_b[0, 1]) < 0 and nose_up > 0.01, "more thrust at the front must pitch nose up"
    assert abs(left_up) < 0.1 * nose_up

    ccw = fly(spin.double())  # CCW rotors faster, CW slower: total thrust ~unchanged
    _, _, heading = _euler_like(ccw.quat_wxyz)
    assert float(ccw.ang_vel_b[0, 2]) < 0 and heading < -0.01, "CCW rotors faster must yaw the body clockwise"
    cw = fly(-spin.double())
    _, _, heading = _euler_like(cw.quat_wxyz)
    assert float(cw.ang_vel_b[0, 2]) > 0 and heading > 0.01, "CW rotors faster must yaw the body counter-clockwise"


def test_preset_motor_numbering_matches_the_vendors():
    """Crazyflie 2.x (Bitcraze): M1 front-right CW, M2 back-right CCW, M3 back-left CW, M4 front-left CCW.
    PX4 Quadrotor X: 1 front-right CCW, 2 back-left CCW, 3 front-left CW, 4 back-right CW."""
    def layout(preset):
        return [("front" if x > 0 else "back") + "-" + ("left" if y > 0 else "right") + ("-ccw" if s > 0 else "-cw")
                for (x, y, _), s in zip(preset.rotor_pos_b, preset.rotor_spin)]

    assert layout(CRAZYFLIE_2X) == ["front-right-cw", "back-right-ccw", "back-left-cw", "front-left-ccw"]
    assert layout(PX4_1KG) == ["front-right-ccw", "back-left-ccw", "front-left-cw", "back-right-cw"]


def test_constant_spin_matches_axis_angle_and_keeps_unit_quaternion():
    """Torque-free spin about a principal axis keeps its rate; the attitude is exactly axis-angle(w t)."""
    preset = CRAZYFLIE_2X
    p = f64(dynamics.nominal_params(preset, 3))._replace(drag=torch.zeros(3, 3, dtype=torch.float64))
    s = at_rest(preset, n=3)
    omega = torch.tensor([[7.0, 0, 0], [0, -11.0, 0], [0, 0, 23.0]], dtype=torch.float64)
    s = s._replace(ang_vel_b=omega.clone())
    off = torch.zeros(3, 4, dtype=torch.float64)
    t = 0.5
    out = simulate(s, p, off, t, dt=0.01, substeps=4)
    assert torch.allclose(out.ang_vel_b, omega, atol=1e-9)
    expected = quat_from_axis_angle(omega, omega.norm(dim=-1) * t)
    # q and -q are the same rotation
    dot = (out.quat_wxyz * expected).sum(-1).abs()
    assert torch.allclose(dot, torch.ones(3, dtype=torch.float64), atol=1e-9)


def test_quaternion_stays_unit_under_long_random_spinning():
    """10 s of body rates redrawn at random every control step (up to 40 rad/s on every axis)."""
    preset = CRAZYFLIE_2X
    n = 64
    g = torch.Generator().manual_seed(0)
    p = dynamics.nominal_params(preset, n)
    s = dynamics.hover_state(n, preset)
    hover = torch.full((n, 4), preset.hover_rpm / preset.max_rpm)
    max_dev = 0.0
    for _ in range(500):
        s = s._replace(ang_vel_b=(torch.rand(n, 3, generator=g) * 2 - 1) * 40.0)
        s = dynamics.step(s, hover, p, 0.02, 4)
        max_dev = max(max_dev, float((s.quat_wxyz.norm(dim=-1) - 1.0).abs().max()))
    assert torch.isfinite(s.quat_wxyz).all()
    assert max_dev < 1e-5
    # and the attitudes really wandered: far from the start, and from each other
    assert float(s.quat_wxyz[:, 0].abs().min()) < 0.9
    assert float(s.quat_wxyz.std(0).min()) > 0.1


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
def test_torque_free_tumbling_conserves_energy(preset):
    """Rotors off, no drag, tumbling off a principal axis at a moderate 5-6 rad/s (a recovery manoeuvre
    reaches that): rotational kinetic energy is conserved by the physics; the integrator at the task's
    default step (50 Hz x 4 substeps) must not create more than 1 % in 2 s."""
    p = f64(dynamics.nominal_params(preset, 1))
    p = p._replace(drag=torch.zeros_like(p.drag))
    omega0 = torch.tensor([[5.0, 0.0, 6.0]], dtype=torch.float64)
    s = at_rest(preset)._replace(ang_vel_b=omega0.clone())

    def energy(w):
        return float(0.5 * (p.inertia * w * w).sum())

    out = simulate(s, p, torch.zeros(1, len(preset.rotor_spin), dtype=torch.float64), 2.0, dt=0.02, substeps=4)
    assert not torch.allclose(out.ang_vel_b, omega0, atol=0.1), "the body must actually tumble"
    ratio = energy(out.ang_vel_b) / energy(omega0)
    assert ratio == pytest.approx(1.0, abs=0.01), f"rotational energy x{ratio:.3f} after 2 s of free tumbling"


# ----------------------------------------------------------------------------------- motors


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
def test_motor_lag_rising_and_falling_time_constants(preset):
    assert preset.tau_up_s != preset.tau_down_s
    p = f64(dynamics.nominal_params(preset, 1))
    r = len(preset.rotor_spin)
    lo, hi = 0.2 * preset.max_rpm, 0.9 * preset.max_rpm
    for start, target, tau in ((lo, hi, preset.tau_up_s), (hi, lo, preset.tau_down_s)):
        s = at_rest(preset, rpm=start)
        cmd = torch.full((1, r), target / preset.max_rpm, dtype=torch.float64)
        dt = tau / 20.0
        fractions = []
        for _ in range(40):  # two time constants
            s = dynamics.step(s, cmd, p, dt, 1)
            fractions.append(float((s.rotor_rpm[0, 0] - start) / (target - start)))
        assert fractions[19] == pytest.approx(1.0 - math.exp(-1.0), abs=1e-6)  # t = tau: 63.2 %
        assert fractions[39] == pytest.approx(1.0 - math.exp(-2.0), abs=1e-6)
        assert torch.allclose(s.rotor_rpm, s.rotor_rpm[0, 0].expand(1, r))


# ------------------------------------------------------------------------------ CTBR control


@pytest.mark.parametrize("preset", PRESET_LIST, ids=PRESET_IDS)
@pytest.mark.parametrize("axis", [0, 1, 2], ids=["roll", "pitch", "yaw"])
def test_rate_controller_tracks_a_body_rate_step(preset, axis):
    kp = (25.0, 25.0, 12.0)  # the task default
    ctrl = dynamics.make_rate_controller(preset, kp)
    p = dynamics.nominal_params(preset, 1)
    s = dynamics.hover_state(1, preset)
    rate = 2.0  # rad/s
    rates = torch.zeros(1, 3)
    rates[0, axis] = rate
    setpoint = dynamics.CtbrSetpoint(torch.full((1, 1), preset.mass_kg * GRAVITY), rates, ctrl)
    dt = 0.005
    history = []
    for _ in range(100):  # 0.5 s
        s = dynamics.step(s, None, p, dt, 1, ctbr=setpoint)
        history.append(s.ang_vel_b[0].clone())
    w = torch.stack(history)
    t90 = dt * (1 + int(torch.nonzero(w[:, axis] >= 0.9 * rate)[0]))
    # Roll/pitch: P control at 25 1/s behind 30-60 ms motor lag reaches 90 % in ~80 ms; yaw is slower
    # (lower gain, reaction torque only) at ~160 ms.
    assert t90 <= (0.12 if axis < 2 else 0.25), f"90 % of the rate step after {t90 * 1e3:.0f} ms"
    assert float(w[:, axis].max()) < 1.3 * rate, "overshoot over 30 %"
    assert float(w[-1, axis]) == pytest.approx(rate, rel=0.02)
    others = [i for i in range(3) if i != axis]
    assert float(w[:, others].abs().max()) < 0.02 * rate, "a step on one axis must not move the others"


# ------------------------------------------------------------------------------ randomization


def test_sampled_params_within_ranges():
    preset = CRAZYFLIE_2X
    cfg = RandomizationCfg()
    n = 2000
    g = torch.Generator().manual_seed(0)
    p = sample_params(preset, cfg, n, g)

    def check(values, nominal, rng, name):
        ratio = values / nominal
        lo, hi = rng
        assert float(ratio.min()) >= lo - 1e-6 and float(ratio.max()) <= hi + 1e-6, name
        # uniform over the whole range, not a constant
        assert float(ratio.min()) < lo + 0.05 * (hi - lo) and float(ratio.max()) > hi - 0.05 * (hi - lo), name

    check(p.mass, preset.mass_kg, cfg.mass_scale, "mass")
    check(p.kf, preset.kf_n_per_rpm2, cfg.kf_scale, "kf")
    check(p.km, preset.km_nm_per_rpm2, cfg.km_scale, "km")
    check(p.tau_up, preset.tau_up_s, cfg.tau_scale, "tau_up")
    check(p.tau_down, preset.tau_down_s, cfg.tau_scale, "tau_down")
    for i in range(3):
        check(p.inertia[:, i:i + 1], preset.inertia_kg_m2[i], cfg.inertia_scale, f"inertia[{i}]")
        check(p.drag[:, i:i + 1], preset.drag_n_s_per_m[i], cfg.drag_scale, f"drag[{i}]")
    # one time-constant scale per env: the rising/falling asymmetry of the preset is kept
    assert torch.allclose(p.tau_down / p.tau_up, torch.full((n, 1), preset.tau_down_s / preset.tau_up_s))
    # thrust-to-weight is what the config asks for, per env, whatever mass and kf were drawn
    twr = len(preset.rotor_spin) * p.kf * p.max_rpm ** 2 / (p.mass * GRAVITY)
    lo, hi = cfg.thrust_to_weight
    assert float(twr.min()) >= lo - 1e-4 and float(twr.max()) <= hi + 1e-4
    assert float(twr.min()) < lo + 0.05 and float(twr.max()) > hi - 0.05
    assert torch.isfinite(p.max_rpm).all()



@pytest.mark.parametrize("control_rate_hz", [50.0, 100.0])
def test_sampled_latency_covers_the_configured_range(control_rate_hz):
    """latency_s = (0, 20 ms) must train with every whole-step delay it allows: at the task's default
    50 Hz that is 0 and 1 step (0 and 20 ms), at 100 Hz 0, 1 and 2 steps. A delay that is never sampled
    is a latency the policy never sees, while the contract tells the deploy side it was trained for it."""
    cfg = RandomizationCfg()
    dt = 1.0 / control_rate_hz
    steps = sample_latency_steps(cfg, 4000, dt, torch.Generator().manual_seed(0))
    assert steps.dtype == torch.long
    lo, hi = cfg.latency_s
    allowed = set(range(math.ceil(lo / dt - 1e-6), math.floor(hi / dt + 1e-6) + 1))
    got = set(steps.tolist())
    assert got <= allowed, f"delays {sorted(got - allowed)} steps are outside latency_s {cfg.latency_s}"
    assert got == allowed, (f"latency_s {cfg.latency_s} at {control_rate_hz:g} Hz allows delays {sorted(allowed)} "
                            f"steps, only {sorted(got)} are ever sampled")


def test_nominal_randomization_is_the_preset():
    preset = PX4_1KG
    p = sample_params(preset, RandomizationCfg.nominal(), 8, torch.Generator().manual_seed(0))
    q = dynamics.nominal_params(preset, 8)
    for name, a, b in zip(p._fields, p, q):
        assert torch.allclose(a, b), name
    assert int(sample_latency_steps(RandomizationCfg.nominal(), 8, 0.02, None).abs().max()) == 0


@pytest.mark.parametrize("key,value,words", [
    ("mass_scale", (1.2, 0.8), ["mass_scale", "low"]),
    ("kf_scale", (-0.1, 1.0), ["kf_scale", "positive"]),
    ("drag_scale", (0.0, 1.0), ["drag_scale", "positive"]),
    ("latency_s", (0.0, 20.0), ["latency_s", "milliseconds"]),
    ("latency_s", (-0.01, 0.01), ["latency_s"]),
    ("thrust_to_weight", (0.8, 1.5), ["thrust_to_weight", "hover"]),
    ("inertia_scale", (0.9,), ["inertia_scale", "pair"]),
    ("obs_noise_pos_m", -0.01, ["obs_noise_pos_m"]),
])
def test_randomization_rejects_bad_ranges(key, value, words):
    with pytest.raises(ValueError) as e:
        RandomizationCfg(**{key: value})
    for w in words:
        assert w in str(e.value), f"message {str(e.value)!r} should mention {w!r}"


def test_load_randomization(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("mass_scale: [0.95, 1.05]\nlatency_s: [0.0, 0.01]\nthrust_to_weight: null\n")
    cfg = load_randomization(good)
    assert cfg.mass_scale == (0.95, 1.05) and cfg.latency_s == (0.0, 0.01) and cfg.thrust_to_weight is None
    assert cfg.kf_scale == RandomizationCfg().kf_scale  # unspecified keys keep their defaults

    typo = tmp_path / "typo.yaml"
    typo.write_text("mass_scal: [0.9, 1.1]\n")
    with pytest.raises(ValueError, match="mass_scal"):
        load_randomization(typo)

    ms = tmp_path / "ms.yaml"
    ms.write_text("latency_s: [0, 20]\n")
    with pytest.raises(ValueError, match="latency_s"):
        load_randomization(ms)

    with pytest.raises(ValueError, match="mass_scale"):
        randomization_from_dict({"mass_scale": "0.9..1.1"})


def test_randomization_cfg_is_frozen():
    cfg = RandomizationCfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mass_scale = (1.0, 1.0)
