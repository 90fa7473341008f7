"""The fused structure-of-arrays step (sim/quadrotor/fused.py) is the model of dynamics.step.

Eager only: compiling takes tens of seconds; bench/bench_sim_throughput.py checks the compiled kernel
against dynamics.step on every run.
"""

import math

import pytest
import torch

from sim.math import quat_mul, random_quat_within
from sim.quadrotor import dynamics, fused
from sim.quadrotor.presets import CRAZYFLIE_2X, PX4_1KG
from sim.randomization import RandomizationCfg, sample_params

DT, SUBSTEPS, DURATION_S, N = 0.02, 4, 1.0, 32
RATE_KP = (25.0, 25.0, 12.0)


def randomized_setup(preset, dtype: torch.dtype, seed: int = 0):
    """Randomized params (weakened rotors included), tilted, moving and spinning starts, wind."""
    g = torch.Generator().manual_seed(seed)
    p = sample_params(preset, RandomizationCfg(), N, g)
    p = p._replace(rotor_gain=0.8 + 0.2 * torch.rand(N, len(preset.rotor_spin), generator=g))
    s = dynamics.hover_state(N, preset)
    yaw = (2 * torch.rand(N, 1, generator=g) - 1) * math.pi
    yaw_q = torch.cat([torch.cos(0.5 * yaw), torch.zeros(N, 2), torch.sin(0.5 * yaw)], dim=-1)
    s = s._replace(pos_w=torch.randn(N, 3, generator=g),
                   quat_wxyz=quat_mul(yaw_q, random_quat_within(N, math.radians(60), g)),
                   lin_vel_w=torch.randn(N, 3, generator=g),
                   ang_vel_b=2.0 * torch.randn(N, 3, generator=g),
                   rotor_rpm=preset.hover_rpm * (0.8 + 0.4 * torch.rand(N, len(preset.rotor_spin), generator=g)))
    ext = 0.1 * preset.mass_kg * torch.randn(N, 3, generator=g)
    cast = lambda t: t.to(dtype)  # noqa: E731
    return dynamics.QuadParams(*map(cast, p)), dynamics.QuadState(*map(cast, s)), cast(ext), g


def command_sequence(preset, action_space: str, steps: int, g: torch.Generator, dtype: torch.dtype):
    """Per-step commands around hover that excite thrust, roll, pitch and yaw: (dynamics form, fused [K, A, N])."""
    if action_space == "rotor":
        hover = preset.hover_rpm / preset.max_rpm
        cmds = [(hover * (1.0 + 0.15 * torch.randn(N, len(preset.rotor_spin), generator=g))).clamp(0, 1).to(dtype)
                for _ in range(steps)]
        return cmds, torch.stack([fused.pack_command(c) for c in cmds])
    ctrl = dynamics.make_rate_controller(preset, RATE_KP)
    ctrl = ctrl._replace(kp=ctrl.kp.to(dtype), inertia=ctrl.inertia.to(dtype), mixer_pinv=ctrl.mixer_pinv.to(dtype))
    weight = preset.mass_kg * 9.81
    setpoints = [dynamics.CtbrSetpoint((weight * (1.0 + 0.3 * torch.randn(N, 1, generator=g))).to(dtype),
                                       (3.0 * torch.randn(N, 3, generator=g)).to(dtype), ctrl) for _ in range(steps)]
    return setpoints, torch.stack([fused.pack_command(thrust_n=c.thrust_n, rates_b=c.rates_b) for c in setpoints])


def run_both(preset, action_space: str, dtype: torch.dtype):
    p, s0, ext, g = randomized_setup(preset, dtype)
    steps = int(round(DURATION_S / DT))
    cmds, packed = command_sequence(preset, action_space, steps, g, dtype)
    ctrl = cmds[0].ctrl if action_space == "ctbr" else None
    spec = fused.FusedSpec.from_params(p, DT, SUBSTEPS, ctrl)
    ref = s0
    for c in cmds:
        ref = dynamics.step(ref, None if ctrl else c, p, DT, SUBSTEPS, ext, c if ctrl else None)
    x = fused.pack_state(s0)
    params, ext_rows = fused.pack_params(p, spec), ext.T.contiguous()
    for k in range(steps):
        x = fused.step(spec, x, params, packed[k], ext_rows)
    return ref, fused.unpack_state(x), s0


@pytest.mark.parametrize("action_space", ["rotor", "ctbr"])
@pytest.mark.parametrize("preset", [CRAZYFLIE_2X, PX4_1KG], ids=lambda p: p.name)
def test_fused_matches_dynamics_float32(preset, action_space):
    ref, out, start = run_both(preset, action_space, torch.float32)
    assert (ref.pos_w - start.pos_w).norm(dim=-1).min() > 0.05, "every vehicle must move"
    assert torch.isfinite(out.pos_w).all()
    assert (out.pos_w - ref.pos_w).abs().max() < 1e-4  # m, after 1 s
    assert (out.quat_wxyz - ref.quat_wxyz).abs().max() < 1e-5
    assert (out.lin_vel_w - ref.lin_vel_w).abs().max() < 1e-3  # m/s
    assert (out.ang_vel_b - ref.ang_vel_b).abs().max() < 1e-3  # rad/s
    assert ((out.rotor_rpm - ref.rotor_rpm).abs() / ref.rotor_rpm).max() < 1e-5


@pytest.mark.parametrize("action_space", ["rotor", "ctbr"])
def test_fused_is_the_same_model_in_float64(action_space):
    """In float64 only the order of roundings differs, so any modelling difference would show."""
    ref, out, _ = run_both(CRAZYFLIE_2X, action_space, torch.float64)
    for name, a, b in zip(ref._fields, out, ref):
        assert (a - b).abs().max() < 1e-9 * max(1.0, b.abs().max().item()), name


def test_pack_unpack_round_trip():
    p, s, _, _ = randomized_setup(PX4_1KG, torch.float32)
    spec = fused.FusedSpec.from_params(p, DT, SUBSTEPS)
    x = fused.pack_state(s)
    assert len(x) == len(fused.state_rows(4)) and all(r.shape == (N,) and r.is_contiguous() for r in x)
    assert len({r.data_ptr() for r in x}) == len(x), "rows must not share storage (updated in place)"
    for a, b in zip(fused.unpack_state(x), s):
        assert torch.equal(a, b)
    packed = fused.pack_params(p, spec)
    assert packed.shape == (len(fused.param_rows(4)), N) and packed.is_contiguous()
    rows = dict(zip(fused.param_rows(4), packed))
    assert torch.equal(rows["max_rpm"], p.max_rpm[:, 0]) and torch.equal(rows["drag_z"], p.drag[:, 2])
    torch.testing.assert_close(rows["kf_gain_3"], p.kf[:, 0] * p.rotor_gain[:, 3])
    other = fused.FusedSpec.from_params(dynamics.nominal_params(CRAZYFLIE_2X, N), DT, SUBSTEPS)
    with pytest.raises(ValueError, match="rotor layout"):
        fused.pack_params(p, other)


def test_rollout_in_place_and_multi_step():
    p, s, ext, g = randomized_setup(CRAZYFLIE_2X, torch.float32)
    cmds, packed = command_sequence(CRAZYFLIE_2X, "ctbr", 3, g, torch.float32)
    spec = fused.FusedSpec.from_params(p, DT, SUBSTEPS, cmds[0].ctrl)
    params, ext_rows = fused.pack_params(p, spec), ext.T.contiguous()
    stepped = fused.pack_state(s)
    for k in range(3):
        stepped = fused.step(spec, stepped, params, packed[k], ext_rows)
    state = fused.pack_state(s)
    rows_before = [r.data_ptr() for r in state]
    fused.rollout_(spec, state, params, packed, ext_rows)
    assert [r.data_ptr() for r in state] == rows_before
    for a, b in zip(state, stepped):
        assert torch.equal(a, b)


def test_shape_errors_are_explained():
    p, s, _, _ = randomized_setup(CRAZYFLIE_2X, torch.float32)
    spec = fused.FusedSpec.from_params(p, DT, SUBSTEPS)
    with pytest.raises(ValueError, match=r"\[K, 4, N\]"):
        fused.rollout(spec, fused.pack_state(s), fused.pack_params(p, spec), torch.zeros(1, 3, N))
    with pytest.raises(ValueError, match="rows"):
        fused.rollout(spec, fused.pack_state(s)[:-1], fused.pack_params(p, spec), torch.zeros(1, 4, N))
    with pytest.raises(ValueError, match="substeps"):
        fused.FusedSpec(dt=DT, substeps=0, rotor_pos_b=spec.rotor_pos_b, rotor_spin=spec.rotor_spin)
