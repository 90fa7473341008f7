"""CTBR: the on-board rate controller runs every physics substep in both simulators, and a
thrust + body-rate setpoint sequence that excites every axis flies the same in torch and pybullet."""

import math

import numpy as np
import pytest
import torch

from sim.pybullet_ref import rate_control as np_rc
from sim.pybullet_ref.quadrotor import PybulletQuadrotors
from sim.quadrotor import dynamics
from sim.quadrotor.presets import CRAZYFLIE_2X, PX4_1KG

DT, SUBSTEPS, DURATION_S = 0.02, 4, 1.0
KP = (25.0, 25.0, 12.0)


def setpoint(preset, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Collective thrust [N] around hover and body rates [rad/s] on all three axes."""
    hover_n = preset.mass_kg * 9.81
    thrust = hover_n * (1.0 + 0.15 * math.sin(2 * math.pi * 1.1 * t))
    rates = np.array([2.0 * math.sin(2 * math.pi * 1.3 * t), 1.5 * math.sin(2 * math.pi * 0.9 * t + 0.5),
                      1.0 * math.sin(2 * math.pi * 0.7 * t + 1.0)])
    return np.array([[thrust]]), rates[None]


@pytest.mark.parametrize("preset", [CRAZYFLIE_2X, PX4_1KG], ids=lambda p: p.name)
def test_ctbr_torch_and_pybullet_agree(preset):
    params = dynamics.QuadParams(*[x.double() for x in dynamics.nominal_params(preset, 1)])
    ctrl = dynamics.make_rate_controller(preset, KP)
    ctrl = ctrl._replace(kp=ctrl.kp.double(), inertia=ctrl.inertia.double(), mixer_pinv=ctrl.mixer_pinv.double())
    np_ctrl = np_rc.make_rate_controller(preset, KP)
    start = np.array([[0.0, 0.0, 1.0]])
    state = dynamics.hover_state(1, preset)
    state = dynamics.QuadState(*[x.double() for x in state])._replace(pos_w=torch.tensor(start))
    rates_seen = []
    with PybulletQuadrotors(preset, 1, DT, SUBSTEPS) as quads:
        quads.reset(start, [[1.0, 0.0, 0.0, 0.0]], np.zeros((1, 3)), np.zeros((1, 3)))
        for k in range(int(round(DURATION_S / DT))):
            thrust, rates = setpoint(preset, k * DT)
            sp = dynamics.CtbrSetpoint(torch.tensor(thrust), torch.tensor(rates), ctrl)
            state = dynamics.step(state, None, params, DT, SUBSTEPS, ctbr=sp)
            quads.step(lambda w, thrust=thrust, rates=rates: np_rc.ctbr_to_rotor_cmd(thrust, rates, w, np_ctrl))
            rates_seen.append((rates[0], state.ang_vel_b.numpy()[0]))
        ref = quads.state()
    pos = state.pos_w.numpy()[0]
    assert np.linalg.norm(pos - start[0]) > 0.05, "the setpoints must move the vehicle"
    assert np.linalg.norm(ref["pos_w"][0] - pos) < 0.01
    np.testing.assert_allclose(ref["ang_vel_b"][0], state.ang_vel_b.numpy()[0], atol=0.02)
    # the rate loop tracks: body rates follow the setpoints (with lag) rather than drifting freely
    des = np.array([d for d, _ in rates_seen[10:]])
    got = np.array([g for _, g in rates_seen[10:]])
    corr = [np.corrcoef(des[:, i], got[:, i])[0, 1] for i in range(3)]
    assert min(corr) > 0.8, f"body rates do not track their setpoints: correlation {corr}"
