"""The MAVLink adapter (hardware.mavlink) with the real pymavlink over real UDP sockets, against the
PX4/ArduCopter-style stand-in (sim.standins.mavlink_vehicle) flown by the pybullet twin in real time.

Every wait has a timeout and no assertion bounds wall-clock time (figures: bench/bench_mavlink.py)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

pytest.importorskip("pymavlink", reason="the MAVLink adapter needs pymavlink (the mavlink extra)")

from hardware import mavlink_frames as frames  # noqa: E402
from hardware.adapters import adapter_classes  # noqa: E402
from hardware.mavlink import ArduPilotCfg, MavlinkVehicle, Px4Cfg  # noqa: E402
from hardware.robot import CtbrCommand, RobotError, RobotLinkLost, RotorCommand  # noqa: E402
from sim.quadrotor.presets import PRESETS  # noqa: E402
from sim.standins.mavlink_vehicle import MavlinkStandin, StandinCfg, position_hold_ctbr  # noqa: E402
from tether.actions import ActionMap  # noqa: E402
from tether.contract import ActionSpec  # noqa: E402
from tether.observation import quat_wxyz_to_rotmat  # noqa: E402

PRESET = PRESETS["px4_1kg"]
GOAL_W = np.array([0.3, -0.2, 1.0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def make_standin(port):
    started = []

    def make(**kw) -> MavlinkStandin:
        # 5 Hz heartbeats only make connect() quicker; the rules under test do not depend on them
        s = MavlinkStandin(StandinCfg(connection=f"udpout:127.0.0.1:{port}", heartbeat_rate_hz=5.0, **kw)).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def make_vehicle(port):
    made = []

    def make(cls=Px4Cfg, **kw) -> MavlinkVehicle:
        kw = {"connect_timeout_s": 5.0, **kw}
        cfg = cls(connection=f"udpin:127.0.0.1:{port}", vehicle_name=PRESET.name, mass_kg=PRESET.mass_kg,
                  max_thrust_n=PRESET.max_thrust_n, **kw)
        v = MavlinkVehicle(cfg)
        made.append(v)
        return v

    yield make
    for v in made:
        if v.is_connected:
            v._close()  # no landing at teardown: the stand-in stops with the test


def policy_map(vehicle: MavlinkVehicle) -> ActionMap:
    """The action semantics a CTBR policy for this vehicle would carry in its contract."""
    return ActionMap(ActionSpec(type="ctbr", dim=4, max_thrust_n=PRESET.max_thrust_n,
                                body_rate_limits_rad_s=vehicle.cfg.body_rate_limits_rad_s))


def fly(vehicle: MavlinkVehicle, standin: MavlinkStandin, seconds: float, goal_w=GOAL_W):
    """Hover controller -> normalized ctbr action (as a policy outputs) -> tether.actions -> send(), on every
    new state, for ``seconds``; returns the stand-in's true positions [T, 3] and (read, true) state pairs."""
    amap, seq, truth, pairs = policy_map(vehicle), 0, [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seq, _ = vehicle.wait_state(seq, 1.0)
        state = vehicle.read()
        action = amap.from_ctbr(*position_hold_ctbr(state, goal_w, PRESET.mass_kg))
        thrust_n, rates = amap.to_ctbr(action)
        vehicle.send(CtbrCommand(thrust_n, rates))
        true = standin.true_state()
        truth.append(true.pos_w)
        pairs.append((state, true))
    return np.array(truth), pairs


# ------------------------------------------------------------------------------------ frames


def test_a_level_vehicle_facing_north_is_yawed_90_degrees_in_enu():
    q = frames.quat_enu_flu_from_ned_frd((1.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(q, [np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)], atol=1e-12)


def test_quaternion_and_vector_conversions_agree_and_invert():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q_ned = rng.normal(size=4)
        q_ned /= np.linalg.norm(q_ned)
        v_frd = rng.normal(size=3)
        q_enu = frames.quat_enu_flu_from_ned_frd(q_ned)
        r_ned, r_enu = (quat_wxyz_to_rotmat(np.asarray(q)[None])[0] for q in (q_ned, q_enu))
        # the same physical vector, rotated into the world in either convention
        np.testing.assert_allclose(r_enu @ frames.flu_from_frd(v_frd), frames.enu_from_ned(r_ned @ v_frd), atol=1e-12)
        back = frames.quat_ned_frd_from_enu_flu(q_enu)
        assert abs(abs(back @ q_ned) - 1.0) < 1e-12  # same rotation (q and -q)


def test_mode_codes_round_trip():
    for name in frames.PX4_MODES:
        assert frames.px4_mode_name(frames.px4_custom_mode(name)) == name
    for name, number in frames.ARDUCOPTER_MODES.items():
        assert frames.arducopter_mode_name(number) == name
    assert frames.px4_custom_mode("OFFBOARD") == 6 << 16 and frames.px4_custom_mode("HOLD") == (4 << 16) | (3 << 24)


# ------------------------------------------------------------------------------------ config


def test_the_registry_builds_both_adapters_from_their_configs():
    for name, cfg_cls in (("px4", Px4Cfg), ("ardupilot", ArduPilotCfg)):
        cls, cfg = adapter_classes(name)
        assert cls is MavlinkVehicle and cfg is cfg_cls
        robot = cls(cfg())
        assert robot.cfg.autopilot == name and not robot.is_connected
        assert robot.vehicle.action_spaces == ("ctbr",)


@pytest.mark.parametrize("bad, match", [
    (dict(connection="udp:1.2.3.4"), "udpin:HOST:PORT"),
    (dict(setpoint_rate_hz=2.0), "above 2 Hz"),
    (dict(link_loss_deadline_s=0.015, watchdog_margin_s=0.005), "two state periods"),
    (dict(link_loss_deadline_s=0.1, watchdog_margin_s=0.05), "half link_loss_deadline_s"),
    (dict(safe_stop="explode"), "safe_stop"),
    (dict(body_rate_limits_rad_s=(1.0, 1.0)), "three positive"),
])
def test_bad_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        Px4Cfg(**bad)


# ------------------------------------------------------------------------------------ connect


def test_connect_without_a_vehicle_fails_naming_the_connection(make_vehicle):
    v = make_vehicle(connect_timeout_s=0.3)
    with pytest.raises(RobotError, match="no autopilot HEARTBEAT on udpin:127.0.0.1"):
        v.connect()
    assert not v.is_connected


def test_a_serial_link_fails_loudly_without_its_port(make_vehicle):
    v = MavlinkVehicle(Px4Cfg(connection="serial:/dev/tether-no-such-port:921600"))
    with pytest.raises(RobotError, match="pyserial|cannot open serial:/dev/tether-no-such-port"):
        v.connect()
    assert not v.is_connected


def test_udpout_reaches_a_vehicle_that_listens(port):
    with MavlinkStandin(StandinCfg(connection=f"udpin:127.0.0.1:{port}", heartbeat_rate_hz=5.0)):
        v = MavlinkVehicle(Px4Cfg(connection=f"udpout:127.0.0.1:{port}", connect_timeout_s=5.0))
        v.connect()  # the vehicle only learns where we are from our HEARTBEAT
        try:
            assert v.read().pos_w[2] < 0.05 and v.mode == "HOLD"
        finally:
            v.disconnect()


def test_the_px4_adapter_refuses_an_ardupilot_vehicle(make_standin, make_vehicle):
    make_standin(flavour="ardupilot")
    v = make_vehicle()
    with pytest.raises(RobotError, match="is MAV_AUTOPILOT_ARDUPILOTMEGA, not px4: use the 'ardupilot' adapter"):
        v.connect()
    assert not v.is_connected


def test_state_arrives_converted_and_commands_are_checked(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle()
    v.connect()
    # the twin starts with its origin on the ground plane and settles onto its collision box first
    wait_until(lambda: np.linalg.norm(standin.true_state().lin_vel_w) < 1e-3, 5.0, "the vehicle to come to rest")
    v.wait_state(v.wait_state(0, 1.0)[0], 1.0)
    truth = standin.true_state()
    state = v.read()
    np.testing.assert_allclose(state.pos_w, truth.pos_w, atol=1e-3)  # at rest on the ground
    np.testing.assert_allclose(np.abs(state.quat_wxyz @ truth.quat_wxyz), 1.0, atol=1e-6)
    assert v.mode == "HOLD" and not v.armed
    wait_until(lambda: len(standin.companion_heartbeats) >= 2, 5.0, "the companion's HEARTBEATs")
    assert set(standin.companion_heartbeats) == {18}  # MAV_TYPE_ONBOARD_CONTROLLER
    wait_until(lambda: v.battery_v() is not None, 2.0, "SYS_STATUS")
    assert v.battery_v() == pytest.approx(standin.cfg.battery_v, abs=1e-3)
    with pytest.raises(RobotError, match="rotor-level commands are not streamed over MAVLink"):
        v.send(RotorCommand(np.full(4, 0.5)))
    with pytest.raises(ValueError, match="NaN"):
        v.send(CtbrCommand(float("nan"), np.zeros(3)))
    sent = v.send(CtbrCommand(2.0 * PRESET.max_thrust_n, (-100.0, 0.5, 100.0)))
    assert sent.thrust_n == PRESET.max_thrust_n
    np.testing.assert_allclose(sent.body_rates_b, [-v.cfg.body_rate_limits_rad_s[0], 0.5, v.cfg.body_rate_limits_rad_s[2]])


def test_an_answer_parsed_before_the_send_returns_still_counts(make_standin, make_vehicle):
    # On a quiet machine the stand-in answers so fast that the receiver thread parses the COMMAND_ACK (or
    # PARAM_VALUE) before the sending thread is scheduled again after sendto; the adapter once stamped the
    # request after the write, called that answer stale, and gave up "no COMMAND_ACK after 3 tries".
    # Here every request's write returns only once its answer has been parsed: that order, every time.
    make_standin(flavour="ardupilot")
    v = make_vehicle(ArduPilotCfg)
    real_send = v._send_msg

    def send_then_wait_for_the_answer(msg):
        before_ns = time.monotonic_ns()
        done_ns = real_send(msg)
        kind = msg.get_type()
        if kind in ("COMMAND_LONG", "PARAM_REQUEST_READ", "PARAM_SET"):
            answers = v._acks if kind == "COMMAND_LONG" else v._params
            key = msg.command if kind == "COMMAND_LONG" else msg.param_id
            with v._lock:
                assert v._lock.wait_for(lambda: answers.get(key, (0, -1))[1] >= before_ns, 5.0), f"no answer to {kind}"
            done_ns = time.monotonic_ns()
        return done_ns

    v._send_msg = send_then_wait_for_the_answer
    v.connect()  # SET_MESSAGE_INTERVAL x3 and the GUID_ parameters, each answered before its send returned
    v.arm()  # GUIDED_NOGPS, then arm
    wait_until(lambda: v.armed and v.mode == "GUIDED_NOGPS", 5.0, "an armed GUIDED_NOGPS HEARTBEAT")
    v.safe_stop()


def test_offboard_is_denied_without_a_setpoint_stream(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle()
    v.connect()
    with pytest.raises(RobotError, match="switch to OFFBOARD refused: the vehicle answered "
                                         "MAV_RESULT_TEMPORARILY_REJECTED .*Offboard is currently not available"):
        v.set_mode("OFFBOARD")
    assert standin.mode == "HOLD" and standin.setpoints_received == 0


# ------------------------------------------------------------------------------------ flight


@pytest.mark.slow  # seconds of real-time flight
def test_px4_offboard_hover_then_land(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle()
    v.connect()
    v.arm()
    events = standin.events()
    names = [e for _, e in events]
    assert names[:2] == ["mode OFFBOARD", "armed"]  # the mode switch only after the stream, then arming
    assert standin.setpoints_received >= 2.0 * standin.cfg.offboard_min_stream_s  # > 2 Hz for the required time
    truth, pairs = fly(v, standin, 7.0)
    assert v.mode == "OFFBOARD" and v.armed
    last = truth[-len(truth) * 3 // 7:]  # the last 3 s
    err = np.linalg.norm(last - GOAL_W, axis=1)
    assert err.max() < 0.1, f"hover left the goal by up to {err.max():.3f} m"
    # what read() reports is the vehicle's state in Tether's frames (at most a few ms old)
    for state, true in pairs[-50:]:
        assert np.linalg.norm(state.pos_w - true.pos_w) < 0.02
        assert abs(state.quat_wxyz @ true.quat_wxyz) > 0.999
    v.land()
    with pytest.raises(RobotError, match=r"send\(\) after land\(\)"):
        v.send(CtbrCommand(10.0, np.zeros(3)))
    wait_until(lambda: not standin.armed, 10.0, "the vehicle to land and disarm")
    assert standin.true_state().pos_w[2] < 0.05 and "disarmed (landed)" in [e for _, e in standin.events()]
    v.disconnect()


@pytest.mark.slow  # seconds of real-time flight
def test_link_loss_stops_the_stream_then_the_vehicle_holds_and_lands_when_heard_again(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle(link_loss_deadline_s=0.3)
    v.connect()
    v.arm()
    fly(v, standin, 4.0)
    last_heard_ns = standin.go_silent()
    wait_until(lambda: v.link_lost_at_ns is not None, 5.0, "the adapter to declare the link lost")
    with pytest.raises(RobotLinkLost, match="no vehicle state"):
        v.read()
    with pytest.raises(RobotLinkLost):
        v.send(CtbrCommand(10.0, np.zeros(3)))
    assert v.link_lost_at_ns > last_heard_ns
    assert v.last_setpoint_tx_ns <= v.link_lost_at_ns  # nothing streamed after the loss
    # the vehicle's own failsafe: Hold once the stream has been gone COM_OF_LOSS_T, in the air
    wait_until(lambda: standin.mode == "HOLD", 5.0, "the vehicle's offboard-loss failsafe")
    t_hold = [t for t, e in standin.events() if e == "mode HOLD"][-1]
    assert t_hold - v.last_setpoint_tx_ns * 1e-9 >= standin.cfg.offboard_loss_timeout_s - 0.02
    assert standin.armed and standin.true_state().pos_w[2] > 0.5
    received = standin.setpoints_received
    standin.go_silent(False)
    wait_until(lambda: v.land_on_return_result not in (None, "pending"), 5.0, "LAND on the link's return")
    assert v.land_on_return_result == "LAND accepted" and standin.mode == "LAND"
    assert standin.setpoints_received == received  # still no setpoints: the adapter stays stopped
    wait_until(lambda: not standin.armed, 10.0, "the vehicle to land")


@pytest.mark.slow  # seconds of real-time flight
def test_safe_stop_forces_a_disarm_in_flight_and_a_plain_disarm_is_refused(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle()
    v.connect()
    v.arm()
    fly(v, standin, 2.5)
    assert standin.true_state().pos_w[2] > 0.3
    with pytest.raises(RobotError, match="disarm refused: the vehicle answered MAV_RESULT_DENIED .*not landed"):
        v.disarm()
    assert standin.armed
    v.safe_stop()
    assert not standin.armed and "disarmed (forced)" in [e for _, e in standin.events()]


def test_safe_stop_can_be_flight_termination(make_standin, make_vehicle):
    standin = make_standin()
    v = make_vehicle(safe_stop="terminate")
    v.connect()
    v.arm()
    v.safe_stop()
    assert "disarmed (flight termination)" in [e for _, e in standin.events()]


# ------------------------------------------------------------------------------------ ArduPilot


def test_ardupilot_refuses_or_sets_its_guided_parameters(make_standin, make_vehicle):
    standin = make_standin(flavour="ardupilot", guid_options=0, guid_timeout_s=3.0)
    strict = make_vehicle(ArduPilotCfg, write_params=False)
    with pytest.raises(RobotError, match="GUID_OPTIONS 0 lacks bit 3.*GUID_TIMEOUT 3 s exceeds"):
        strict.connect()
    assert standin.params["GUID_OPTIONS"] == 0
    v = make_vehicle(ArduPilotCfg)
    v.connect()
    assert int(standin.params["GUID_OPTIONS"]) & 8 and standin.params["GUID_TIMEOUT"] == v.cfg.guided_timeout_s


@pytest.mark.slow  # seconds of real-time flight
def test_ardupilot_guided_nogps_hover_and_guided_timeout(make_standin, make_vehicle):
    standin = make_standin(flavour="ardupilot")
    v = make_vehicle(ArduPilotCfg)
    v.connect()
    v.arm()
    assert [e for _, e in standin.events()][:2] == ["mode GUIDED_NOGPS", "armed"]
    truth, _ = fly(v, standin, 5.0)
    assert np.linalg.norm(truth[-1] - GOAL_W) < 0.15 and v.mode == "GUIDED_NOGPS"
    assert "failsafe guided timeout" not in [e for _, e in standin.events()]
    v._stop_flight("test: the stream stops")
    wait_until(lambda: "failsafe guided timeout" in [e for _, e in standin.events()], 5.0, "GUID_TIMEOUT")
    assert standin.armed and standin.true_state().pos_w[2] > 0.5  # levelled, holding its climb rate at zero
    v.land()
    wait_until(lambda: not standin.armed, 10.0, "the vehicle to land")
