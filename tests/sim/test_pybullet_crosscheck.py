"""The torch batched dynamics and the pybullet reference agree on the same open-loop rotor commands."""

import math

import numpy as np
import pybullet as pb
import pytest
import torch

from sim.pybullet_ref import rate_control as np_rc
from sim.pybullet_ref.quadrotor import PhysicsOverrides, PybulletQuadrotors
from sim.quadrotor import dynamics
from sim.quadrotor.presets import CRAZYFLIE_2X, PX4_1KG

DT, SUBSTEPS, DURATION_S = 0.01, 4, 1.0
# Bullet integrates the gyroscopic term with forward Euler, which gains energy in fast tumbles (20 deg off
# the converged solution after this 1 s excitation at 2.5 ms steps); the torch model uses the midpoint
# rule. So the reference runs at a 16x finer step, where its own error is small, and two checks are made:
# the models agree when both integrate finely, and the training step stays within 1 cm of the reference.
PB_SUBSTEPS = 16 * SUBSTEPS


def excitation(preset, t: float) -> np.ndarray:
    """Rotor commands [R] around hover that excite roll, pitch, yaw and thrust (up and down) at once."""
    pos = np.asarray(preset.rotor_pos_b)
    spin = np.asarray(preset.rotor_spin, dtype=np.float64)
    hover = preset.hover_rpm / preset.max_rpm
    roll = 0.02 * math.sin(2 * math.pi * 1.3 * t)
    pitch = 0.02 * math.sin(2 * math.pi * 0.9 * t + 0.5)
    yaw = 0.06 * math.sin(2 * math.pi * 0.7 * t + 1.0)
    thrust = 0.06 * math.sin(2 * math.pi * 1.0 * t)
    cmd = hover * (1.0 + thrust) + roll * np.sign(pos[:, 1]) - pitch * np.sign(pos[:, 0]) - yaw * spin
    return np.clip(cmd, 0.0, 1.0)


def angle_between(q1: np.ndarray, q2: np.ndarray) -> float:
    """Rotation angle [rad] between two unit quaternions (sign-invariant)."""
    return 2.0 * math.acos(min(1.0, abs(float(np.dot(q1, q2)))))


def _fly_both(preset, torch_substeps: int, pb_substeps: int):
    params = dynamics.QuadParams(*[x.double() for x in dynamics.nominal_params(preset, 1)])
    state = dynamics.QuadState(*[x.double() for x in dynamics.hover_state(1, preset)])
    start = np.array([[0.0, 0.0, 1.0]])
    state = state._replace(pos_w=torch.tensor(start, dtype=torch.float64))
    with PybulletQuadrotors(preset, 1, DT, pb_substeps) as quads:
        quads.reset(start, [[1.0, 0.0, 0.0, 0.0]], np.zeros((1, 3)), np.zeros((1, 3)))
        for k in range(int(round(DURATION_S / DT))):
            cmd = excitation(preset, k * DT)[None]
            state = dynamics.step(state, torch.tensor(cmd, dtype=torch.float64), params, DT, torch_substeps)
            quads.step(cmd)
        ref = quads.state()
    pos_torch, quat_torch = state.pos_w.numpy()[0], state.quat_wxyz.numpy()[0]
    assert np.linalg.norm(pos_torch - start[0]) > 0.05, "the excitation must move the vehicle"
    assert angle_between(quat_torch, [1.0, 0.0, 0.0, 0.0]) > math.radians(10), "the excitation must rotate it"
    return state, ref


@pytest.mark.parametrize("preset", [CRAZYFLIE_2X, PX4_1KG], ids=lambda p: p.name)
def test_torch_and_pybullet_models_agree_open_loop(preset):
    """Both integrated finely (0.3 ms torch, 0.08 ms pybullet): the same physics to a millimetre."""
    state, ref = _fly_both(preset, 32, 128)
    assert np.linalg.norm(ref["pos_w"][0] - state.pos_w.numpy()[0]) < 0.002
    assert angle_between(ref["quat_wxyz"][0], state.quat_wxyz.numpy()[0]) < math.radians(0.5)
    np.testing.assert_allclose(ref["lin_vel_w"][0], state.lin_vel_w.numpy()[0], atol=0.01)
    np.testing.assert_allclose(ref["ang_vel_b"][0], state.ang_vel_b.numpy()[0], atol=0.05)
    np.testing.assert_allclose(ref["rotor_rpm"][0], state.rotor_rpm.numpy()[0], rtol=1e-6)


@pytest.mark.parametrize("preset", [CRAZYFLIE_2X, PX4_1KG], ids=lambda p: p.name)
def test_torch_at_the_training_step_tracks_the_reference(preset):
    """The batched simulator at its coarse step against the finely integrated reference, after a 1 s
    open-loop excitation of every axis: position within 1 cm (the bar), attitude within 4 deg."""
    state, ref = _fly_both(preset, SUBSTEPS, PB_SUBSTEPS)
    assert np.linalg.norm(ref["pos_w"][0] - state.pos_w.numpy()[0]) < 0.01
    assert angle_between(ref["quat_wxyz"][0], state.quat_wxyz.numpy()[0]) < math.radians(4.0)
    np.testing.assert_allclose(ref["rotor_rpm"][0], state.rotor_rpm.numpy()[0], rtol=1e-6)


def test_com_offset_is_reported_at_the_body_origin():
    """Pybullet's base frame is the centre of mass; the state is of the body origin, 1 cm behind it."""
    com_b = np.array([[0.01, 0.0, 0.0]])
    yaw90 = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]  # x_b along +y_w
    with PybulletQuadrotors(CRAZYFLIE_2X, 1, DT, SUBSTEPS, PhysicsOverrides(com_offset_b=com_b)) as quads:
        quads.reset([[0.0, 0.0, 1.0]], [yaw90], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 3.0]])
        com_pos, _ = pb.getBasePositionAndOrientation(quads.bodies[0], physicsClientId=quads.client)
        com_vel, omega_w = pb.getBaseVelocity(quads.bodies[0], physicsClientId=quads.client)
        np.testing.assert_allclose(com_pos, [0.0, 0.01, 1.0], atol=1e-9)
        # v_com = w x com_w = 3 z x 0.01 y = (-0.03, 0, 0) m/s while the origin is at rest
        np.testing.assert_allclose(com_vel, [-0.03, 0.0, 0.0], atol=1e-9)
        np.testing.assert_allclose(omega_w, [0.0, 0.0, 3.0], atol=1e-9)
        s = quads.state()
        np.testing.assert_allclose(s["pos_w"][0], [0.0, 0.0, 1.0], atol=1e-9)
        np.testing.assert_allclose(s["lin_vel_w"][0], 0.0, atol=1e-9)
        np.testing.assert_allclose(s["ang_vel_b"][0], [0.0, 0.0, 3.0], atol=1e-9)


def test_drones_in_one_world_do_not_interact():
    """Two drones at the same spot fly through each other exactly like one alone."""
    with PybulletQuadrotors(CRAZYFLIE_2X, 2, DT, SUBSTEPS) as pair, PybulletQuadrotors(CRAZYFLIE_2X, 1, DT,
                                                                                         SUBSTEPS) as single:
        pair.reset(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), [1.0, 0.0, 0.0, 0.0], np.zeros(3), np.zeros(3))
        single.reset([[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0, 0.0]], np.zeros((1, 3)), np.zeros((1, 3)))
        for k in range(20):
            cmd = excitation(CRAZYFLIE_2X, k * DT)
            pair.step(np.stack([cmd, cmd]))
            single.step(cmd[None])
        np.testing.assert_allclose(pair.state()["pos_w"], np.repeat(single.state()["pos_w"], 2, 0), atol=1e-12)


@pytest.mark.parametrize("preset", [CRAZYFLIE_2X, PX4_1KG], ids=lambda p: p.name)
def test_numpy_and_torch_rate_controllers_agree(preset):
    kp = (20.0, 18.0, 8.0)
    ctrl_t = dynamics.make_rate_controller(preset, kp)
    ctrl_n = np_rc.make_rate_controller(preset, kp)
    rng = np.random.default_rng(0)
    n = 256
    thrust = rng.uniform(0.0, preset.max_thrust_n, (n, 1))
    rates_des = rng.uniform(-8.0, 8.0, (n, 3))
    ang_vel = rng.uniform(-8.0, 8.0, (n, 3))
    out_t = dynamics.ctbr_to_rotor_cmd(torch.tensor(thrust, dtype=torch.float32),
                                       torch.tensor(rates_des, dtype=torch.float32),
                                       torch.tensor(ang_vel, dtype=torch.float32), ctrl_t).numpy()
    out_n = np_rc.ctbr_to_rotor_cmd(thrust, rates_des, ang_vel, ctrl_n)
    assert out_n.shape == (n, len(preset.rotor_spin))
    assert 0.1 < out_n.mean() < 0.9 and out_n.std() > 0.05, "inputs must span the command range"
    np.testing.assert_allclose(out_n, out_t, atol=1e-4)
