"""`tether calibrate quadrotor` on what `tether deploy --record` writes: state/odom and cmd/executed
(normalized actions, named by the contract) in the recorder's MCAP, written here with the recorder's own
BagWriter from a simulated flight with known parameters. The action meaning comes from the contract
recorded with the log (or --policy); the identified vehicle must be the true one."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from calibration.baglog import read_bag
from calibration.boards import CalibrationError
from calibration.flightlog import log_from_columns
from sim.pybullet_ref.rate_control import make_rate_controller
from sim.quadrotor.presets import CRAZYFLIE_2X
from tether.contract import ActionSpec, PolicyContract, Rotor, make_slices, save_contract

pytest.importorskip("rclpy", reason="serializing ROS messages for the recorder's BagWriter needs rclpy")

SHA = "ab" * 32
# contract rotor order differs from the preset's motor order: the reader must match rotors by layout
PERM = (2, 0, 3, 1)
RECV_DELAY_NS = 1_000_000  # odometry reaches the recorder 1 ms after its stamp
CMD_DELAY_NS = 2_000_000  # the runner's command 2 ms after the state it acted on


def _contract(action_type: str) -> PolicyContract:
    p = CRAZYFLIE_2X
    rotors = tuple(Rotor(tuple(float(x) for x in p.rotor_pos_b[i]), int(p.rotor_spin[i])) for i in PERM)
    spec = ActionSpec(type=action_type, dim=4, rotors=rotors, max_rpm=p.max_rpm, kf_n_per_rpm2=p.kf_n_per_rpm2,
                      km_nm_per_rpm2=p.km_nm_per_rpm2, max_thrust_n=p.max_thrust_n,
                      body_rate_limits_rad_s=(12.0, 12.0, 20.0), rate_kp=(25.0, 25.0, 12.0))
    return PolicyContract(task="hover", control_rate_hz=200.0, action_latency_s=0.0,
                          observation=make_slices([("pos_err_w", 3), ("quat_wxyz", 4)]), action=spec,
                          provenance={"onnx_sha256": SHA, "opset": 17, "config_hash": "0" * 16, "preset": p.name,
                                      "created": datetime.datetime.now(datetime.timezone.utc).isoformat()})


def _ctbr_actions(log, contract) -> np.ndarray:
    """Normalized CTBR actions that the contract's rate loop turns back into the logged rotor commands
    (the mixer is invertible for a quadrotor), evaluated with the body rates the reader uses."""
    ctrl = make_rate_controller(CRAZYFLIE_2X, contract.action.rate_kp)
    pos, spin = np.asarray(CRAZYFLIE_2X.rotor_pos_b), np.asarray(CRAZYFLIE_2X.rotor_spin, np.float64)
    alloc = np.stack([np.ones(4), pos[:, 1], -pos[:, 0], -spin * CRAZYFLIE_2X.km_nm_per_rpm2 / CRAZYFLIE_2X.kf_n_per_rpm2])
    wrench = (ctrl.kf * (log.u * ctrl.max_rpm) ** 2) @ alloc.T
    w = np.concatenate([0.5 * (log.ang_vel_b[:-1] + log.ang_vel_b[1:]), log.ang_vel_b[-1:]])
    rates = w + (wrench[:, 1:] - np.cross(w, ctrl.inertia * w)) / (ctrl.inertia * ctrl.kp)
    spec = contract.action
    return np.concatenate([2 * wrench[:, :1] / spec.max_thrust_n - 1, rates / np.asarray(spec.body_rate_limits_rad_s)],
                          axis=1)


def write_deploy_bag(bag_dir, log, actions, command_type: str = "JointState", names=None,
                     policy_dir: str = "/policies/p") -> None:
    """The recorder's topics, written with tether_deploy.bag.BagWriter as the recorder writes them."""
    from rclpy.serialization import serialize_message
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray, String

    from tether_deploy.bag import BagWriter
    from tether_deploy.conversions import fill_command, fill_odometry

    w = BagWriter(bag_dir)
    cmd_cls = JointState if command_type == "JointState" else Float32MultiArray
    for topic, cls in (("/state/odom", Odometry), ("/cmd/executed", cmd_cls), ("/runner/active_policy", String)):
        w.add_topic(topic, cls)
    t0 = 1_700_000_000 * 10**9
    w.write("/runner/active_policy", t0 - 10**6, serialize_message(String(data=f"active {SHA} {policy_dir}")))
    for k, t in enumerate(log.t):
        ns = t0 + int(round(t * 1e9))
        odom = Odometry()
        odom.header.stamp.sec, odom.header.stamp.nanosec = ns // 10**9, ns % 10**9
        odom.header.frame_id, odom.child_frame_id = "world", "base_link"
        fill_odometry(odom, log.pos_w[k], log.quat_wxyz[k], log.lin_vel_w[k], log.ang_vel_b[k])
        w.write("/state/odom", ns + RECV_DELAY_NS, serialize_message(odom))
        if cmd_cls is JointState:
            cmd = JointState()
            fill_command(cmd, names, actions[k], "base_link")
        else:
            cmd = Float32MultiArray(data=[float(x) for x in actions[k]])
        w.write("/cmd/executed", ns + CMD_DELAY_NS, serialize_message(cmd))
    w.close()


@pytest.fixture(scope="module")
def rotor_bag(flight_columns, tmp_path_factory):
    from tether_deploy.conversions import command_names

    log = log_from_columns(flight_columns)
    contract = _contract("rotor")
    actions = (2.0 * log.u - 1.0)[:, list(PERM)]  # output i drives preset motor PERM[i]
    bag = tmp_path_factory.mktemp("deploy") / "run1"
    write_deploy_bag(bag, log, actions, names=command_names(contract.action))
    save_contract(contract, bag / "policy.json")  # the contract recorded with the log
    return bag, log


def test_rotor_actions_map_to_the_logged_rotor_commands(rotor_bag):
    bag, log = rotor_bag
    back, source = read_bag(bag, lambda contract: CRAZYFLIE_2X)
    assert (source.odom_topic, source.cmd_topic, source.policy_sha) == ("/state/odom", "/cmd/executed", SHA)
    assert "normalized rotor actions" in source.meaning and "recorded with the log" in source.meaning
    # 6 segments with gaps: the reader keeps every sample; the last one has no interval after it
    assert len(back.t) == len(log.t)
    assert np.allclose(back.u[:-1], log.u[:-1], atol=1e-6)
    assert np.allclose(back.lin_vel_w, log.lin_vel_w, atol=1e-6) and np.allclose(back.t, log.t - log.t[0])


def test_calibrate_quadrotor_from_a_deploy_log(rotor_bag, true_vehicle, tmp_path, capsys):
    from calibration.cli import main
    from calibration.files import load_calibration

    bag, _ = rotor_bag
    out = tmp_path / "cf2x-007.yaml"
    assert main(["calibrate", "quadrotor", "--log", str(bag), "--unit-id", "cf2x-007", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "crazyflie2x geometry" in report and "/cmd/executed: normalized rotor actions" in report
    q = load_calibration(out).quadrotor
    p = q.params
    assert q.base_preset == "crazyflie2x"  # from the contract: no --preset given
    assert abs(p["kf_per_kg"].value / (true_vehicle.kf_n_per_rpm2 / true_vehicle.mass_kg) - 1) < 0.03
    assert abs(p["km_nm_per_rpm2"].value / true_vehicle.km_nm_per_rpm2 - 1) < 0.05
    assert abs(p["tau_up_s"].value / true_vehicle.tau_up_s - 1) < 0.1


def test_ctbr_actions_go_through_the_contract_rate_loop(flight_columns, tmp_path):
    from tether_deploy.conversions import command_names

    log = log_from_columns(flight_columns).slice_time(0.0, 5.0)
    contract = _contract("ctbr")
    actions = _ctbr_actions(log, contract)
    inside = np.all(np.abs(actions) <= 1.0, axis=1)  # outside, the robot clipped: not reproducible
    assert inside.mean() > 0.95  # the yaw limit is wide for this test: the flight excites yaw hard
    bag, policy = tmp_path / "ctbr", tmp_path / "policy"
    write_deploy_bag(bag, log, np.clip(actions, -1, 1), names=command_names(contract.action), policy_dir=str(policy))
    with pytest.raises(CalibrationError, match="no policy.json was recorded with the log.*pass --policy"):
        read_bag(bag, lambda contract: CRAZYFLIE_2X)
    policy.mkdir()
    save_contract(contract, policy / "policy.json")
    # the folder the log's runner/active_policy names, now there with the same sha256
    back, source = read_bag(bag, lambda contract: CRAZYFLIE_2X)
    assert "normalized ctbr actions" in source.meaning and "the policy the log names" in source.meaning
    back, source = read_bag(bag, lambda contract: CRAZYFLIE_2X, policy=policy)
    assert f"--policy {policy}" in source.meaning
    ok = inside[:-1]
    assert np.allclose(back.u[:-1][ok], log.u[:-1][ok], atol=1e-6)


def test_legacy_float32_commands_and_refusals(flight_columns, tmp_path):
    log = log_from_columns(flight_columns).slice_time(0.0, 1.0)
    contract = _contract("rotor")
    bag = tmp_path / "legacy"
    write_deploy_bag(bag, log, (2.0 * log.u - 1.0)[:, list(PERM)], command_type="Float32MultiArray")
    save_contract(contract, bag / "policy.json")
    back, _ = read_bag(bag, lambda contract: CRAZYFLIE_2X)
    assert np.allclose(back.u[:-1], log.u[:-1], atol=1e-6)  # logs from before commands were stamped

    other = tmp_path / "other"
    other.mkdir()
    save_contract(PolicyContract(**{**_contract("rotor").__dict__,
                                    "provenance": {**contract.provenance, "onnx_sha256": "cd" * 32}}),
                  other / "policy.json")
    with pytest.raises(CalibrationError, match=r"flown by policy sha256 abababababab.*pass --policy with the policy"):
        read_bag(bag, lambda contract: CRAZYFLIE_2X, policy=other)
