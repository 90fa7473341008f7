"""The Crazyflie adapter against the CRTP stand-in (sim/standins/crazyflie_peer.py) over real UDP: the
real cflib connects, fetches the TOCs, arms, flies the ONNX hover policy the way the runner does, and
reaches the safe state when the link goes silent or its port closes; the stand-in's own firmware
watchdogs stop the motors when setpoints stop. Timing figures are in bench/bench_crazyflie.py."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cflib", reason="cflib is a dev dependency (the crazyflie extra); install it to run these")

from hardware.adapters import adapter_classes  # noqa: E402
from hardware.crazyflie import (FIRMWARE_MAX_THRUST, THRUST_FULL_SCALE, Crazyflie, CrazyflieCfg,  # noqa: E402
                                thrust_to_uint16)
from hardware.robot import (CtbrCommand, RobotError, RobotLinkLost, RobotNotConnectedError,  # noqa: E402
                            RotorCommand, check_vehicle)
from sim.standins.crazyflie_peer import CrazyfliePeerCfg, start_peer_process  # noqa: E402
from tether.actions import initial_action  # noqa: E402
from tether.config import field_docs  # noqa: E402
from tether.contract import ContractError, load_contract  # noqa: E402
from tether.observation import build_observation  # noqa: E402
from tether.presets import PRESETS  # noqa: E402
from tether.runtime import OnnxPolicy  # noqa: E402

HOVER_POLICY = Path(__file__).resolve().parents[1] / "fixtures" / "hover_policy"
WAIT_S = 30.0  # generous condition timeouts on a loaded machine (never a pass/fail bound)


def wait_for(condition, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Peer:
    def __init__(self, tmp_path: Path, **cfg):
        self.events_path = tmp_path / "peer_events.jsonl"
        self.proc, self.uri = start_peer_process(CrazyfliePeerCfg(port=0, events_path=str(self.events_path), **cfg))

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def peer(tmp_path):
    p = Peer(tmp_path, rate_kp=tuple(load_contract(HOVER_POLICY / "policy.json").action.rate_kp))
    yield p
    p.close()


@pytest.fixture
def robot(peer, tmp_path, request):
    # state_timeout_s 0.3 (default 0.1): a peer process stalled by a loaded CI machine is not a link loss;
    # a test may ask for another (indirect parametrization)
    timeout_s = getattr(request, "param", 0.3)
    cf = Crazyflie(CrazyflieCfg(uri=peer.uri, toc_cache_dir=str(tmp_path / "toc"), state_timeout_s=timeout_s))
    cf.connect()
    yield cf
    cf.disconnect()


def weight_n() -> float:
    p = PRESETS["crazyflie2x"]
    return p.mass_kg * 9.81


# ------------------------------------------------------------------------------ without a link


def test_config_is_plain_documented_and_validated():
    robot_cls, cfg_cls = adapter_classes("crazyflie")
    assert robot_cls is Crazyflie and cfg_cls is CrazyflieCfg
    docs = field_docs(CrazyflieCfg)
    for f in dataclasses.fields(CrazyflieCfg):
        value = getattr(CrazyflieCfg(), f.name)
        assert isinstance(value, (str, int, float, bool)), f"{f.name} is not a plain type: {type(value)}"
        assert docs.get(f.name), f"{f.name} has no doc line"
    for bad in ({"uri": "tcp://x"}, {"log_period_s": 0.015}, {"state_timeout_s": 0.01}, {"state_timeout_s": 0.6},
                {"keepalive_period_s": 0.8}, {"preset": "nope"}, {"stop_repeats": 0}, {"max_thrust_n": -1.0}):
        with pytest.raises(ValueError):
            CrazyflieCfg(**bad)
    cfg = CrazyflieCfg()
    assert cfg.link_loss_deadline_s == cfg.state_timeout_s + cfg.watchdog_period_s


def test_schema_readable_and_read_refused_before_connect():
    cf = Crazyflie(CrazyflieCfg(uri="udp://127.0.0.1:1"))
    assert set(cf.command_schema) == {"thrust_n", "body_rates_b"}
    assert "pos_w" in cf.state_schema and not cf.is_connected
    with pytest.raises(RobotNotConnectedError):
        cf.read()
    with pytest.raises(RobotNotConnectedError):
        cf.send(CtbrCommand(0.1, [0, 0, 0]))


def test_vehicle_agrees_with_a_crazyflie_policy_and_refuses_rotor_policies():
    contract = load_contract(HOVER_POLICY / "policy.json")
    cf = Crazyflie(CrazyflieCfg())
    check_vehicle(contract, cf.vehicle, "the Crazyflie")  # the contract's vehicle is this one: no error
    rotor = dataclasses.replace(contract, action=dataclasses.replace(contract.action, type="rotor"))
    with pytest.raises(ContractError, match="accepts only"):
        check_vehicle(rotor, cf.vehicle, "the Crazyflie")


def test_thrust_units_follow_the_firmware():
    full = CrazyflieCfg().full_scale_thrust_n
    assert full == pytest.approx(PRESETS["crazyflie2x"].max_thrust_n)
    assert thrust_to_uint16(full / 2, full) == round(THRUST_FULL_SCALE / 2)
    assert thrust_to_uint16(full, full) == FIRMWARE_MAX_THRUST  # the RPYT commander's cap
    assert thrust_to_uint16(full * 0.01, full) == 0  # below MIN_THRUST the firmware runs no motors
    assert thrust_to_uint16(-1.0, full) == 0


def test_connect_fails_loudly_without_a_peer():
    cf = Crazyflie(CrazyflieCfg(uri="udp://127.0.0.1:9", connect_timeout_s=1.0))
    with pytest.raises(RobotError, match="cannot connect"):
        cf.connect()
    assert not cf.is_connected


# ------------------------------------------------------------------------------ over the link


def test_connect_sets_rate_mode_unlocks_thrust_and_arms(peer, robot):
    params = {e["name"]: e["value"] for e in peer.events() if e["event"] == "param"}
    assert params == {"flightmode.stabModeRoll": 0, "flightmode.stabModePitch": 0, "flightmode.stabModeYaw": 0}
    assert "thrust_unlocked" in peer.kinds()
    robot.arm()
    wait_for(lambda: "armed" in peer.kinds(), "the peer to report armed")
    s = robot.read()
    assert s.pos_w[2] == pytest.approx(0.0, abs=0.02)  # standing on the ground
    assert np.linalg.norm(s.quat_wxyz) == pytest.approx(1.0)
    assert 3.0 < robot.battery_v() < 4.5


def test_send_refuses_rotor_commands_and_nan(robot):
    with pytest.raises(ValueError, match="onboard"):
        robot.send(RotorCommand([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError):
        robot.send(CtbrCommand(float("nan"), [0, 0, 0]))
    sent = robot.send(CtbrCommand(10.0, [100.0, 0.0, 0.0]))  # past full scale and the gyro's range
    assert sent.thrust_n == pytest.approx(FIRMWARE_MAX_THRUST / THRUST_FULL_SCALE * robot.cfg.full_scale_thrust_n)
    assert sent.body_rates_b[0] == pytest.approx(np.radians(2000.0))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_body_rate_signs_reach_the_vehicle(robot, axis):
    """Pitch sign, the inverted legacy yaw and deg/s: a positive rate about an axis (FLU) turns the
    vehicle that way, as its gyro log reports it."""
    robot.arm()
    rates = np.zeros(3)
    rates[axis] = 2.0
    start = robot.read().stamp_s
    while robot.read().stamp_s < start + 0.15:
        robot.send(CtbrCommand(1.3 * weight_n(), rates))
        time.sleep(0.01)
    w = robot.read().ang_vel_b
    robot.safe_stop()
    assert w[axis] > 0.5, f"commanded +2 rad/s about axis {axis}, gyro reads {w.tolist()} rad/s"
    others = [abs(w[i]) for i in range(3) if i != axis]
    assert max(others) < 0.5 * w[axis], w.tolist()


def test_flies_the_onnx_hover_policy_as_the_runner_does(peer, tmp_path):
    """tether.runtime + tether.observation + the runner's action history and actuation: take off from
    the ground to the goal and hold it for several seconds."""
    # loaded before connecting: creating the onnxruntime session starves cflib's threads in this process
    # for a few hundred ms on a loaded machine, which the staleness watchdog rightly calls a link loss
    policy = OnnxPolicy(HOVER_POLICY)
    robot = Crazyflie(CrazyflieCfg(uri=peer.uri, toc_cache_dir=str(tmp_path / "toc"), state_timeout_s=0.3))
    robot.connect()
    try:
        _fly_hover(policy, robot, peer)
    finally:
        robot.disconnect()


def _fly_hover(policy, robot, peer):
    from tether_deploy.actuation import ActionToCommand

    c = policy.contract
    check_vehicle(c, robot.vehicle, "the Crazyflie")
    to_command = ActionToCommand(c.action)
    history = np.tile(initial_action(c).astype(np.float32), (c.slice("prev_actions").length // c.action.dim, 1))
    goal = np.array([0.0, 0.0, 0.5])
    robot.arm()
    period_s = 1.0 / c.control_rate_hz
    errors, stamps = [], []
    stamp = None
    t_end = None
    while True:
        s = robot.wait_state(stamp, WAIT_S)
        stamp = s.stamp_s
        if t_end is None:
            t_end = stamp + 6.0
        if stamp >= t_end:
            break
        q = {**s.as_quantities(), "goal_w": goal, "goal_vel_w": np.zeros(3), "prev_actions": history.reshape(-1)}
        action = np.asarray(policy(build_observation(c, q)), dtype=np.float32)
        history[:-1] = history[1:].copy()
        history[-1] = action
        robot.send(to_command(action))
        errors.append(float(np.linalg.norm(s.pos_w - goal)))
        stamps.append(stamp)
        # one tick per control period of the vehicle's clock, as the runner's scheduler does
        next_stamp = stamp + period_s - 0.5 / 100.0
        while robot.read().stamp_s < next_stamp:
            time.sleep(0.002)
    robot.safe_stop()
    errors, stamps = np.array(errors), np.array(stamps)
    held = errors[stamps >= stamps[0] + 3.0]
    assert len(held) > 50, f"only {len(held)} ticks in the last 3 s: the loop did not run at the control rate"
    assert held.max() < 0.1, f"after 3 s the vehicle strayed {held.max():.3f} m from the goal (max over 3 s)"
    assert "crashed" not in peer.kinds() and robot.link_lost is None
    assert [why for _t, why in robot.safe_stops] == ["safe_stop"]


def _stream_until_loss(robot: Crazyflie, lost: threading.Event) -> None:
    while not lost.is_set():
        try:
            robot.send(CtbrCommand(0.5 * weight_n(), [0.0, 0.0, 0.0]))
        except RobotLinkLost:
            return
        time.sleep(0.02)


# a closed port is reported by cflib when the next packet fails to go out; on a loaded machine (two test
# workers on two cores) that took over 0.45 s once and the staleness watchdog spoke first: whichever comes
# first is the reason, and cflib's report must still arrive and be kept (link_errors)
@pytest.mark.parametrize("how, robot", [("silent", 0.3), ("port_closed", 0.45)], indirect=["robot"],
                         ids=["silent", "port_closed"])
def test_link_loss_reaches_the_safe_state(peer, robot, how):
    """A peer silent with its socket open (cflib says nothing) or one that closed its port (cflib reports
    it): the watchdog calls safe_stop, read and send raise RobotLinkLost, the callback hears why."""
    heard = []
    lost = threading.Event()
    robot.on_link_lost.append(lambda why: (heard.append(why), lost.set()))
    streamer = threading.Thread(target=_stream_until_loss, args=(robot, lost))
    streamer.start()
    wait_for(lambda: robot.read().stamp_s > 0.5, "a flowing state stream")
    last_good = robot.state_arrival_s
    peer.proc.send_signal(signal.SIGUSR1 if how == "silent" else signal.SIGUSR2)
    wait_for(lost.is_set, "the adapter to notice the link loss")
    streamer.join(timeout=WAIT_S)
    assert robot.link_lost and heard == [robot.link_lost]
    stops = [(t, why) for t, why in robot.safe_stops if why.startswith("link lost")]
    assert len(stops) == 1 and stops[0][0] > last_good
    if how == "silent":
        assert "no state for" in robot.link_lost
    else:
        wait_for(lambda: robot.link_errors, "cflib to report the closed port")
        first_error = robot.link_errors[0][1]
        assert first_error.startswith("cflib:")
        assert robot.link_lost == first_error or robot.link_lost.startswith("no state for")
    with pytest.raises(RobotLinkLost):
        robot.read()
    with pytest.raises(RobotLinkLost):
        robot.send(CtbrCommand(0.1, [0, 0, 0]))


def test_firmware_watchdogs_stop_the_motors_when_setpoints_stop(peer, robot):
    """The stand-in's supervisor: no setpoint for 500 ms levels out, 2 s stops the motors; the
    keepalive's 1 s emergency stop then locks the vehicle (arming refused)."""
    robot.arm()
    start = robot.read().stamp_s
    while robot.read().stamp_s < start + 0.3:
        robot.send(CtbrCommand(0.8 * weight_n(), [0.0, 0.0, 0.0]))
        time.sleep(0.02)
    wait_for(lambda: "watchdog_motors_off" in peer.kinds(), "the commander watchdog to stop the motors")
    ev = {e["event"]: e for e in peer.events()}
    assert 0.5 <= ev["watchdog_level_out"]["setpoint_age_s"] < 2.0
    assert ev["watchdog_motors_off"]["setpoint_age_s"] >= 2.0
    assert ev["emergency_stop"]["source"].startswith("keepalive watchdog")
    wait_for(lambda: robot.read().lin_vel_w[2] == pytest.approx(0.0, abs=1e-3) and robot.read().pos_w[2] < 0.02,
             "the vehicle to rest on the ground")
    with pytest.raises(RobotError, match="refused"):
        robot.arm()


def test_thrust_lock_ignores_thrust_until_a_zero_setpoint(peer):
    """crtp_commander_rpyt.c, seen from a bare cflib client: thrust sent before any zero-thrust setpoint
    does not spin the motors; after one it does."""
    import cflib.crtp
    from cflib.crazyflie import Crazyflie as CflibCrazyflie
    from cflib.crazyflie.log import LogConfig

    cflib.crtp.init_drivers()
    cf = CflibCrazyflie()
    ready = threading.Event()
    cf.fully_connected.add_callback(lambda uri: ready.set())
    cf.open_link(peer.uri)
    try:
        assert ready.wait(WAIT_S), "cflib did not connect to the peer"
        thrust_log = []
        conf = LogConfig(name="thrust", period_in_ms=10)
        conf.add_variable("stabilizer.thrust", "float")
        conf.add_variable("stateEstimate.z", "float")
        cf.log.add_config(conf)
        conf.data_received_cb.add_callback(lambda ts, data, c: thrust_log.append(data))
        conf.start()
        cf.param.set_value("flightmode.stabModeRoll", 0)
        cf.param.set_value("flightmode.stabModePitch", 0)
        cf.supervisor.send_arming_request(True)
        wait_for(lambda: "armed" in peer.kinds(), "arming")
        for _ in range(20):
            cf.commander.send_setpoint(0.0, 0.0, 0.0, 40000)
            time.sleep(0.01)
        n = len(thrust_log)
        wait_for(lambda: len(thrust_log) > n + 5, "log data")
        assert all(d["stabilizer.thrust"] == 0 for d in thrust_log), "thrust ran while the thrust lock was closed"
        assert "thrust_unlocked" not in peer.kinds()
        cf.commander.send_setpoint(0.0, 0.0, 0.0, 0)
        for _ in range(20):
            cf.commander.send_setpoint(0.0, 0.0, 0.0, 40000)
            time.sleep(0.01)
        wait_for(lambda: thrust_log[-1]["stabilizer.thrust"] == pytest.approx(40000, abs=1), "thrust after unlocking")
        assert "thrust_unlocked" in peer.kinds()
    finally:
        cf.close_link()
