"""The safety layer every adapter shares (hardware/safety.py): the pure monitor on synthetic states, and
SafeRobot around the digital twin (a real adapter: pybullet physics)."""

import math

import numpy as np
import pytest

from hardware.robot import CtbrCommand, Robot, RobotError, RobotLinkLost, RobotState, RotorCommand
from hardware.safety import LAND, OK, STOP, SafeRobot, SafetyCfg, SafetyLatched, SafetyMonitor, Verdict, tilt_rad
from hardware.twin import DigitalTwin, TwinConfig


def state(pos=(0.0, 0.0, 1.0), quat=(1.0, 0.0, 0.0, 0.0), vel=(0.0, 0.0, 0.0), rate=(0.0, 0.0, 0.0), t=0.0):
    return RobotState(t, pos, quat, vel, rate)


def tilted(angle_rad: float) -> tuple[float, float, float, float]:
    """Rotation about x_b by angle_rad, w first."""
    return (math.cos(angle_rad / 2), math.sin(angle_rad / 2), 0.0, 0.0)


CFG = SafetyCfg(geofence_min_w=(-1.0, -1.0, -0.2), geofence_max_w=(1.0, 1.0, 2.0), max_tilt_rad=0.8,
                max_rate_rad_s=6.0, max_rate_cmd_rad_s=(2.0, 2.0, 1.0), max_thrust_frac=0.7,
                battery_low_v=3.5, battery_critical_v=3.2, state_timeout_s=0.1)


# ------------------------------------------------------------------------------------- the monitor


def test_tilt_of_a_known_rotation():
    for angle in (0.0, 0.3, 1.2, math.pi / 2, 3.0):
        assert tilt_rad(tilted(angle)) == pytest.approx(angle, abs=1e-9)


def test_ctbr_commands_are_clipped_to_the_thrust_fraction_and_rates():
    mon = SafetyMonitor(CFG, max_thrust_n=0.6)
    cmd = mon.clip(CtbrCommand(5.0, [3.0, -7.0, 0.5]))
    assert cmd.thrust_n == pytest.approx(0.7 * 0.6)
    np.testing.assert_allclose(cmd.body_rates_b, [2.0, -2.0, 0.5])
    inside = mon.clip(CtbrCommand(0.2, [0.1, -0.1, 0.0]))  # inside every limit: untouched
    assert inside.thrust_n == 0.2 and np.allclose(inside.body_rates_b, [0.1, -0.1, 0.0])
    assert mon.clip(CtbrCommand(-1.0, [0.0, 0.0, 0.0])).thrust_n == 0.0
    with pytest.raises(ValueError, match="NaN"):
        mon.clip(CtbrCommand(math.nan, [0.0, 0.0, 0.0]))


def test_rotor_commands_keep_their_ratios_under_the_collective_limit():
    mon = SafetyMonitor(CFG)
    u = np.array([1.0, 0.9, 1.0, 0.8])
    out = mon.clip(RotorCommand(u)).rotor_cmd
    assert np.mean(out ** 2) == pytest.approx(0.7)
    np.testing.assert_allclose(out / out[0], u / u[0])  # the torques' ratios stay
    low = np.array([0.5, 0.6, 0.5, 0.4])
    np.testing.assert_allclose(mon.clip(RotorCommand(low)).rotor_cmd, low)
    np.testing.assert_allclose(mon.clip(RotorCommand([-0.2, 0.1, 0.1, 0.1])).rotor_cmd, [0.0, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("st, battery, action, words", [
    (state(), 3.9, OK, ""),
    (state(pos=(1.5, 0.0, 1.0)), None, LAND, "x 1.50 m above geofence_max_w"),
    (state(pos=(0.0, 0.0, -0.5)), None, LAND, "z -0.50 m below geofence_min_w"),
    (state(quat=tilted(1.0)), None, STOP, "tilt 57 deg"),
    (state(rate=(0.0, 7.0, 0.0)), None, STOP, "body rate 7.00 rad/s"),
    (state(), 3.4, LAND, "battery 3.40 V at or below battery_low_v"),
    (state(), 3.1, STOP, "battery_critical_v"),
    (state(pos=(5.0, 0.0, 1.0), quat=tilted(1.5)), None, STOP, "tilt"),  # the worse verdict wins
    (state(pos=(math.nan, 0.0, 1.0)), None, STOP, "NaN"),
])
def test_verdicts_on_synthetic_states(st, battery, action, words):
    v = SafetyMonitor(CFG).check(st, battery, now_s=0.0)
    assert v.action == action and words in v.reason, v


def test_a_state_whose_stamp_stops_changing_is_stale():
    mon = SafetyMonitor(CFG)
    assert mon.check(state(t=1.0), None, now_s=10.0).ok
    assert mon.check(state(t=1.0), None, now_s=10.05).ok  # within state_timeout_s 0.1
    v = mon.check(state(t=1.0), None, now_s=10.2)
    assert v.action == STOP and "stale" in v.reason
    assert mon.check(state(t=1.01), None, now_s=10.3).ok  # a fresh stamp


def test_arming_needs_level_still_inside_and_charged():
    mon = SafetyMonitor(CFG)
    assert mon.arming_failures(state(pos=(0, 0, 0)), 3.9) == []
    fails = mon.arming_failures(state(pos=(0, 0, 3.0), quat=tilted(0.5), vel=(0.5, 0, 0), rate=(0, 0, 1.0)), 3.3)
    assert [f.split(":")[0] for f in fails] == ["not level", "moving", "rotating", "outside the geofence",
                                                 "battery 3.30 V at or below battery_low_v 3.5"]


@pytest.mark.parametrize("kw, words", [
    (dict(geofence_min_w=(0.0, 0.0, 0.0), geofence_max_w=(1.0, -1.0, 1.0)), "below geofence_max_w"),
    (dict(max_thrust_frac=1.5), "max_thrust_frac"),
    (dict(max_tilt_rad=0.0), "max_tilt_rad"),
    (dict(battery_low_v=3.2, battery_critical_v=3.5), "battery_critical_v 3.5 must be below"),
    (dict(max_rate_cmd_rad_s=(1.0, 0.0, 1.0)), "max_rate_cmd_rad_s"),
])
def test_bad_safety_configs_are_refused(kw, words):
    with pytest.raises(ValueError, match=words):
        SafetyCfg(**kw)


# ----------------------------------------------------------------------------- SafeRobot on the twin


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def fly(robot: SafeRobot, twin: DigitalTwin, cmd, steps: int, clock: Clock) -> list:
    """Send, advance, read until the safety layer latches (or ``steps``); the commands sent."""
    sent = []
    for _ in range(steps):
        if robot.latched:
            break
        sent.append(robot.send(cmd))
        twin.advance()
        clock.t += twin.cfg.dt_s
        robot.read()
    return sent


def test_saferobot_sends_the_clipped_command_and_lands_on_a_geofence_breach():
    twin = DigitalTwin(TwinConfig(noise_pos_m=0.0, noise_vel_m_s=0.0, noise_att_rad=0.0, noise_ang_vel_rad_s=0.0))
    clock = Clock()
    robot = SafeRobot(twin, SafetyCfg(geofence_max_w=(3.0, 3.0, 1.2), max_thrust_frac=0.8), clock=clock)
    robot.connect()
    try:
        max_thrust = twin.vehicle.max_thrust_n
        sent = robot.send(CtbrCommand(10 * max_thrust, [50.0, 0.0, 0.0]))
        assert sent.thrust_n == pytest.approx(0.8 * max_thrust)  # what the twin was actually sent
        assert sent.body_rates_b[0] == pytest.approx(10.0)
        twin.reset()  # the roll command above never acted (latency)
        # full thrust, clipped to 80 %, climbs out of the 1.2 m box: land (the twin's land is motors off)
        up = CtbrCommand(max_thrust, [0.0, 0.0, 0.0])
        sent = fly(robot, twin, up, 300, clock)
        assert robot.verdict.action == LAND and "z" in robot.verdict.reason and "geofence_max_w 1.2" in robot.verdict.reason
        assert all(s.thrust_n == pytest.approx(0.8 * max_thrust) for s in sent)
        assert len(sent) < 300  # it stopped sending once latched
        vz_at_latch = twin.true_state().lin_vel_w[2]
        for _ in range(30):
            twin.advance()
        # motors off: it decelerates at about g (at least half of it, drag aside) over 0.3 s
        assert twin.true_state().lin_vel_w[2] < vz_at_latch - 0.5 * 9.81 * 30 * twin.cfg.dt_s
        with pytest.raises(SafetyLatched, match="land"):
            robot.send(up)
        robot.reset()
        twin.reset()
        assert robot.send(twin.hover_command) is not None  # flying again after the operator's reset
    finally:
        robot.disconnect()


def test_saferobot_stops_on_tilt_and_refuses_to_arm_while_tilted():
    twin = DigitalTwin(TwinConfig())
    clock = Clock()
    robot = SafeRobot(twin, SafetyCfg(max_tilt_rad=0.5), clock=clock)
    robot.connect()
    try:
        robot.arm()  # level and still at the start: arms
        twin.reset(quat_wxyz=tilted(0.3))
        with pytest.raises(RobotError, match="arming refused: not level"):
            robot.arm()
        twin.reset()
        fly(robot, twin, CtbrCommand(twin.vehicle.max_thrust_n * 0.5, [6.0, 0.0, 0.0]), 200, clock)
        assert robot.verdict.action == STOP and "tilt" in robot.verdict.reason
        # the twin's motors are off from the verdict on
        assert np.all(twin._active.rotor_cmd == 0.0)  # noqa: SLF001  (the command in force)
    finally:
        robot.disconnect()


class LinkLossTwin(DigitalTwin):
    """The twin whose link fails after ``good_reads`` reads (the adapters raise RobotLinkLost then)."""

    def __init__(self, good_reads: int):
        super().__init__(TwinConfig())
        self.reads_left = good_reads
        self.stops = 0

    def read(self) -> RobotState:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise RobotLinkLost("no state for 0.3 s")
        return super().read()

    def safe_stop(self) -> None:
        self.stops += 1
        super().safe_stop()


def test_link_loss_latches_a_stop_once_and_is_raised():
    twin = LinkLossTwin(good_reads=3)
    robot = SafeRobot(twin, clock=Clock())
    robot.connect()
    try:
        for _ in range(3):
            robot.read()
        for _ in range(2):
            with pytest.raises(RobotLinkLost):
                robot.read()
        assert robot.verdict.action == STOP and "link lost" in robot.verdict.reason
        assert twin.stops == 1  # once, not per read
    finally:
        robot.disconnect()


def test_a_land_escalates_to_a_stop_but_not_back():
    calls = []

    class Recorder(DigitalTwin):
        def land(self):
            calls.append("land")

        def safe_stop(self):
            calls.append("stop")

    robot = SafeRobot(Recorder(TwinConfig()), clock=Clock())
    robot.connect()
    try:
        robot.latch(Verdict(LAND, "a"))
        robot.latch(Verdict(LAND, "b"))
        robot.latch(Verdict(STOP, "c"))
        robot.latch(Verdict(LAND, "d"))
        assert calls == ["land", "stop"] and robot.verdict.reason == "c"
    finally:
        robot.disconnect()


def test_every_robot_is_wrappable():
    assert issubclass(SafeRobot, Robot)
