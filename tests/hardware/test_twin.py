"""The digital twin behind the Robot interface: schema, connection errors, clipping, disturbances, latency."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardware.robot import CtbrCommand, RobotNotConnectedError, RobotState, RotorCommand
from hardware.twin import DigitalTwin, Payload, TwinConfig, WeakMotor, WindGust
from tether.contract import ActionSpec, PolicyContract, make_slices
from tether.observation import build_observation


def fly_hover(cfg: TwinConfig, steps: int) -> list[RobotState]:
    with DigitalTwin(cfg) as twin:
        states = []
        for _ in range(steps):
            twin.send(twin.hover_command)
            twin.advance()
            states.append(twin.true_state())
    return states


def test_schema_is_readable_before_connect_and_read_raises():
    twin = DigitalTwin(TwinConfig())
    assert not twin.is_connected
    assert twin.state_schema["pos_w"] == ((3,), "m")
    assert twin.state_schema["ang_vel_b"] == ((3,), "rad/s")
    assert twin.command_schema["rotor_cmd"][0] == (4,)
    for call in (twin.read, twin.advance, lambda: twin.send(twin.hover_command), twin.safe_stop):
        with pytest.raises(RobotNotConnectedError, match="connect"):
            call()


def test_read_gives_vocabulary_quantities_for_a_contract():
    contract = PolicyContract(
        task="hover", control_rate_hz=100.0, action_latency_s=0.0,
        observation=make_slices([("pos_err_w", 3), ("rotmat_bw", 9), ("lin_vel_b", 3), ("ang_vel_b", 3)]),
        action=ActionSpec(type="ctbr", dim=4), provenance={})
    with DigitalTwin(TwinConfig(init_pos_w=(1.0, 2.0, 3.0))) as twin:
        state = twin.read()
        assert state.stamp_s == 0.0
        obs = build_observation(contract, {**state.as_quantities(), "goal_w": np.array([1.0, 2.0, 4.0])})
        pos_err = contract.slice("pos_err_w")
        np.testing.assert_allclose(obs[pos_err.offset:pos_err.offset + pos_err.length], [0.0, 0.0, 1.0], atol=1e-6)
        assert twin.advance() == pytest.approx(0.01)
        assert twin.read().stamp_s == pytest.approx(0.01)


def test_send_returns_the_clipped_command():
    cfg = TwinConfig(body_rate_limits_rad_s=(5.0, 5.0, 2.0))
    with DigitalTwin(cfg) as twin:
        sent = twin.send(RotorCommand([1.5, -0.2, 0.5, 0.7]))
        np.testing.assert_allclose(sent.rotor_cmd, [1.0, 0.0, 0.5, 0.7])
        sent = twin.send(CtbrCommand(thrust_n=100.0, body_rates_b=[9.0, -9.0, 1.0]))
        assert sent.thrust_n == pytest.approx(twin.preset.max_thrust_n)
        np.testing.assert_allclose(sent.body_rates_b, [5.0, -5.0, 1.0])
        with pytest.raises(ValueError, match="4 values"):
            twin.send(RotorCommand([0.5, 0.5, 0.5]))


def test_nan_command_is_rejected_and_the_previous_command_stays():
    with DigitalTwin(TwinConfig()) as twin:
        twin.send(RotorCommand(np.zeros(4)))
        with pytest.raises(ValueError, match="NaN"):
            twin.send(RotorCommand([0.5, math.nan, 0.5, 0.5]))
        with pytest.raises(ValueError, match="NaN"):
            twin.send(CtbrCommand(thrust_n=math.nan, body_rates_b=[0.0, 0.0, 0.0]))
        for _ in range(10):
            twin.advance()
        # motors off held for 0.1 s: free fall, about 0.5 * 9.81 * 0.1^2 m (rotors spin down first)
        assert 0.5 * 9.81 * 0.1 ** 2 * 0.3 < 1.0 - twin.true_state().pos_w[2] < 0.5 * 9.81 * 0.1 ** 2 + 1e-3


def test_nominal_twin_hovers_under_the_hover_command():
    states = fly_hover(TwinConfig(), 100)
    assert np.linalg.norm(states[-1].pos_w - [0.0, 0.0, 1.0]) < 1e-3
    assert np.linalg.norm(states[-1].ang_vel_b) < 1e-3


def test_weak_motor_makes_the_vehicle_roll_pitch_and_yaw_away():
    nominal = fly_hover(TwinConfig(), 30)[-1]
    # Crazyflie M1 is front-right and spins clockwise. Less thrust at y < 0 gives tau_x = sum(f y) > 0
    # (right side down), less at x > 0 gives tau_y = -sum(f x) > 0 (nose down), and less of its
    # reaction torque -spin km rpm^2 = +km rpm^2 gives tau_z < 0 (yaw clockwise seen from above).
    weak = fly_hover(TwinConfig(weak_motor=WeakMotor(index=0, gain=0.7)), 30)[-1]
    assert np.linalg.norm(nominal.ang_vel_b) < 1e-3
    assert weak.ang_vel_b[0] > 0.5 and weak.ang_vel_b[1] > 0.5
    assert weak.ang_vel_b[2] < -0.05
    assert weak.pos_w[2] < nominal.pos_w[2] - 0.01, "less total thrust: it sinks"


def test_payload_and_wind_push_the_vehicle():
    nominal = fly_hover(TwinConfig(), 50)[-1]
    heavy = fly_hover(TwinConfig(payload=Payload(mass_kg=0.005, pos_b=(0.0, 0.0, 0.0))), 50)[-1]
    assert heavy.pos_w[2] < nominal.pos_w[2] - 0.05
    offset = fly_hover(TwinConfig(payload=Payload(mass_kg=0.005, pos_b=(0.02, 0.0, 0.0))), 50)[-1]
    assert offset.ang_vel_b[1] > 0.5, "a payload in front pitches the nose down (+y rotation)"
    gust = WindGust(start_s=0.2, duration_s=0.2, force_w=(0.05, 0.0, 0.0))
    windy = fly_hover(TwinConfig(wind_gust=gust), 50)
    assert abs(windy[19].pos_w[0]) < 1e-6 and windy[-1].pos_w[0] > 0.05


@pytest.mark.parametrize("latency_steps", [1, 3])
def test_latency_delays_a_command_by_whole_steps(latency_steps):
    rate_hz = 100.0
    up = RotorCommand(np.full(4, 0.9))

    def climb(latency_s: float) -> np.ndarray:
        with DigitalTwin(TwinConfig(rate_hz=rate_hz, latency_s=latency_s)) as twin:
            twin.send(up)
            heights = []
            for _ in range(10):
                twin.advance()
                heights.append(twin.true_state().pos_w[2])
        return np.asarray(heights)

    immediate, delayed = climb(0.0), climb(latency_steps / rate_hz)
    np.testing.assert_allclose(delayed[:latency_steps], 1.0, atol=1e-9)
    assert immediate[0] > 1.0 + 1e-6
    np.testing.assert_allclose(delayed[latency_steps:], immediate[:-latency_steps], atol=1e-9)


def test_ctbr_command_tracks_a_body_rate():
    with DigitalTwin(TwinConfig(rate_kp=(20.0, 20.0, 8.0))) as twin:
        hover_thrust = twin.preset.mass_kg * 9.81
        for _ in range(30):
            twin.send(CtbrCommand(thrust_n=hover_thrust, body_rates_b=[1.0, 0.0, 0.0]))
            twin.advance()
        np.testing.assert_allclose(twin.true_state().ang_vel_b, [1.0, 0.0, 0.0], atol=0.1)


def test_noise_has_the_configured_spread_and_safe_stop_cuts_the_motors():
    with DigitalTwin(TwinConfig(noise_pos_m=0.01, noise_att_rad=0.02, seed=3)) as twin:
        reads = [twin.read() for _ in range(500)]
        pos_std = np.std([r.pos_w for r in reads], axis=0)
        np.testing.assert_allclose(pos_std, 0.01, rtol=0.15)
        assert all(abs(np.linalg.norm(r.quat_wxyz) - 1.0) < 1e-12 for r in reads)
        twin.safe_stop()
        for _ in range(20):
            twin.advance()
        assert np.all(twin.true_state().pos_w[2] < 0.9)


def test_config_validates_and_reads_plain_data():
    with pytest.raises(ValueError, match="not milliseconds"):
        TwinConfig(latency_s=20.0)
    with pytest.raises(ValueError, match="weak_motor"):
        TwinConfig(weak_motor=WeakMotor(index=4, gain=0.7))
    with pytest.raises(ValueError, match="unknown key"):
        TwinConfig.from_dict({"preset": "crazyflie2x", "latency": 0.01})
    cfg = TwinConfig.from_dict({"preset": "px4_1kg", "latency_s": 0.02, "weak_motor": {"index": 1, "gain": 0.8},
                                "wind_gust": {"start_s": 1.0, "duration_s": 0.5, "force_w": [1.0, 0.0, 0.0]}})
    assert cfg.latency_steps == 2 and cfg.weak_motor == WeakMotor(1, 0.8)
    assert cfg.wind_gust.force_w == (1.0, 0.0, 0.0)


def test_twin_and_pybullet_reference_do_not_import_torch():
    """The robot side needs no torch (DESIGN.md): importing the twin must not pull it in."""
    code = ("import sys, hardware.twin, hardware.robot, sim.pybullet_ref.evaluate; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"torch was imported (or import failed): {done.stderr}"


def test_send_rejects_what_is_not_a_command():
    with DigitalTwin(TwinConfig()) as twin:
        with pytest.raises(TypeError, match="RotorCommand or CtbrCommand"):
            twin.send([0.5, 0.5, 0.5, 0.5])
