"""System identification from 60 s of simulated flight with sensor noise (position 2 mm, velocity
0.01 m/s, attitude 0.005 rad, gyro 0.02 rad/s), of a vehicle that differs from the nominal preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibration.baglog import read_bag
from calibration.boards import CalibrationError
from calibration.flightlog import FlightLog, log_from_columns, read_csv, write_csv
from calibration.sysid import SysIdCfg, identify_quadrotor, rotor_speed_sq_mean
from sim.quadrotor.dynamics import motor_lag
from sim.quadrotor.presets import CRAZYFLIE_2X


def _rel(value: float, truth: float) -> float:
    return abs(value / truth - 1.0)


def test_recovers_coefficients_and_time_constants_within_5_percent(flight_columns, true_vehicle):
    log = log_from_columns(flight_columns)
    assert log.duration_s >= 60.0
    cfg = SysIdCfg(mass_kg=true_vehicle.mass_kg, inertia_kg_m2=true_vehicle.inertia_kg_m2)
    res = identify_quadrotor(log, CRAZYFLIE_2X, cfg)  # continuous-time model, as for a real vehicle
    p = res.params
    truth = {"kf_n_per_rpm2": true_vehicle.kf_n_per_rpm2, "km_nm_per_rpm2": true_vehicle.km_nm_per_rpm2,
             "tau_up_s": true_vehicle.tau_up_s, "tau_down_s": true_vehicle.tau_down_s}
    errors = {k: _rel(p[k].value, v) for k, v in truth.items()}
    assert max(errors.values()) < 0.05, errors
    for axis, d in zip("xyz", true_vehicle.drag_n_s_per_m):
        assert _rel(p[f"drag_{axis}_n_s_per_m"].value, d) < 0.10
    assert _rel(p["ixx_kg_m2"].value, true_vehicle.inertia_kg_m2[0]) < 0.05
    for name, e in p.items():
        assert np.isfinite(e.sigma) and e.sigma >= 0 and e.unit, name
        if name != "mass_kg":
            assert 0 < e.sigma < 0.05 * abs(e.value), (name, e)
    assert res.residuals["accel_residual_rms_m_s2"] < 0.2 * res.residuals["accel_signal_rms_m_s2"]
    assert res.residuals["ang_accel_residual_rms_rad_s2"] < 0.2 * res.residuals["ang_accel_signal_rms_rad_s2"]


def test_mass_unknown_reports_per_kg_and_sim_model_is_exact(flight_columns, true_vehicle):
    log = log_from_columns(flight_columns)
    cfg = SysIdCfg(mass_kg=None, inertia_kg_m2=true_vehicle.inertia_kg_m2, model_substeps=5)
    p = identify_quadrotor(log, CRAZYFLIE_2X, cfg).params
    assert "kf_n_per_rpm2" not in p and "mass_kg" not in p
    assert p["kf_per_kg"].unit == "N/(kg rpm^2)"
    assert _rel(p["kf_per_kg"].value, true_vehicle.kf_n_per_rpm2 / true_vehicle.mass_kg) < 0.01
    # with the simulator's integration modelled, the lags come out within 1% (no discretization bias)
    assert _rel(p["tau_up_s"].value, true_vehicle.tau_up_s) < 0.01
    assert _rel(p["tau_down_s"].value, true_vehicle.tau_down_s) < 0.01
    assert _rel(p["km_nm_per_rpm2"].value, true_vehicle.km_nm_per_rpm2) < 0.02


def test_motor_model_matches_the_simulator():
    """The closed-form interval mean of rpm^2 equals what sim.quadrotor.dynamics integrates."""
    rng = np.random.default_rng(0)
    dt, sub, n = 0.005, 20, 120
    cmd = np.repeat(rng.uniform(3000, 20000, (n // 10, 2)), 10, axis=0)  # steps up and down
    tau_up, tau_down = (torch.tensor(x, dtype=torch.float64) for x in (0.03, 0.06))
    rpm = torch.tensor(cmd[:1])
    sim_mean = []
    for k in range(n - 1):
        acc = torch.zeros(1, 2, dtype=torch.float64)
        for _ in range(sub):  # the simulator's substeps: lag first, then thrust from the new speed
            rpm = motor_lag(rpm, torch.tensor(cmd[k:k + 1]), tau_up, tau_down, dt / sub)
            acc += rpm ** 2 / sub
        sim_mean.append(acc[0].numpy())
    sim_mean = np.array(sim_mean)
    exact = rotor_speed_sq_mean(cmd, np.full(n - 1, dt), 0.03, 0.06, np.array([0]), substeps=sub)
    assert np.allclose(exact, sim_mean, rtol=1e-12)
    continuous = rotor_speed_sq_mean(cmd, np.full(n - 1, dt), 0.03, 0.06, np.array([0]))
    assert np.allclose(continuous, sim_mean, rtol=0.02)  # a 20-substep integrator is nearly continuous


def test_short_log_is_refused(flight_columns):
    log = log_from_columns(flight_columns).slice_time(0.0, 8.0)
    with pytest.raises(CalibrationError, match=r"covers 8.0 s of flight; need at least 10"):
        identify_quadrotor(log, CRAZYFLIE_2X)


def test_hover_only_log_is_refused():
    n = 4001
    t = np.arange(n) * 0.005
    hover = np.full((n, 4), CRAZYFLIE_2X.hover_rpm / CRAZYFLIE_2X.max_rpm)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    log = FlightLog(t, hover, np.zeros((n, 3)), quat, np.zeros((n, 3)), np.zeros((n, 3)))
    with pytest.raises(CalibrationError, match="does not excite"):
        identify_quadrotor(log, CRAZYFLIE_2X)


def test_csv_round_trip_and_missing_column(flight_columns, tmp_path):
    log = log_from_columns(flight_columns).slice_time(0.0, 2.0)
    path = tmp_path / "flight.csv"
    write_csv(path, log)
    back = read_csv(path)
    assert np.allclose(back.u, log.u, rtol=1e-7) and np.allclose(back.quat_wxyz, log.quat_wxyz, rtol=1e-7)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("ang_vel_b_y")
    path.write_text("\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines))
    with pytest.raises(CalibrationError, match=r"missing column\(s\) \['ang_vel_b_y'\]"):
        read_csv(path)


def test_mcap_log_with_odometry_and_rotor_commands(flight_columns, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from calibration.flightlog import _rotate

    log = log_from_columns(flight_columns).slice_time(0.0, 1.0)
    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    Odom, Cmd = T["nav_msgs/msg/Odometry"], T["std_msgs/msg/Float32MultiArray"]
    conj = log.quat_wxyz * np.array([1.0, -1.0, -1.0, -1.0])
    vel_b = _rotate(conj, log.lin_vel_w)  # Odometry twist is in the body (child) frame
    with Writer(tmp_path / "flight", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c_odom = w.add_connection("/odom", Odom.__msgtype__, typestore=store)
        c_cmd = w.add_connection("/rotor_cmd", Cmd.__msgtype__, typestore=store)
        for k, t in enumerate(log.t):
            ns = int(round(t * 1e9)) + 10**9
            stamp = T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
            header = T["std_msgs/msg/Header"](stamp=stamp, frame_id="world")
            p, q = log.pos_w[k], log.quat_wxyz[k]
            pose = T["geometry_msgs/msg/PoseWithCovariance"](
                pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                                                 orientation=T["geometry_msgs/msg/Quaternion"](x=q[1], y=q[2], z=q[3], w=q[0])),
                covariance=np.zeros(36))
            V3 = T["geometry_msgs/msg/Vector3"]
            twist = T["geometry_msgs/msg/TwistWithCovariance"](
                twist=T["geometry_msgs/msg/Twist"](linear=V3(x=vel_b[k, 0], y=vel_b[k, 1], z=vel_b[k, 2]),
                                                   angular=V3(x=log.ang_vel_b[k, 0], y=log.ang_vel_b[k, 1],
                                                              z=log.ang_vel_b[k, 2])),
                covariance=np.zeros(36))
            w.write(c_odom, ns, store.serialize_cdr(Odom(header=header, child_frame_id="base_link", pose=pose,
                                                         twist=twist), Odom.__msgtype__))
            layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            w.write(c_cmd, ns, store.serialize_cdr(Cmd(layout=layout, data=log.u[k].astype(np.float32)),
                                                   Cmd.__msgtype__))
    back, source = read_bag(tmp_path / "flight", lambda contract: CRAZYFLIE_2X, "/odom", "/rotor_cmd")
    assert len(back.t) == len(log.t) and source.meaning == "rotor commands as fractions of max rpm"
    assert np.allclose(back.t, log.t - log.t[0], atol=1e-9)
    assert np.allclose(back.lin_vel_w, log.lin_vel_w, atol=1e-6)
    # the last sample has no interval after it; every other one carries the command sent at it
    assert np.allclose(back.u[:-1], log.u[:-1], atol=1e-6) and np.allclose(back.pos_w, log.pos_w, atol=1e-9)
    with pytest.raises(CalibrationError, match="no messages on odom topic '/imu'"):
        read_bag(tmp_path / "flight", lambda contract: CRAZYFLIE_2X, "/imu", "/rotor_cmd")
    back2, _ = read_bag(tmp_path / "flight", lambda contract: CRAZYFLIE_2X)  # topics found without naming them
    assert np.array_equal(back2.u, back.u)
