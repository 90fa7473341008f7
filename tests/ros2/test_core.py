"""The deploy logic without ROS: arbitration, watchdog, validation, safe behaviours, hot swap, scheduler,
actuation mapping, bag writing (plain pytest, no DDS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tether.contract import ContractError
from tether_deploy.actuation import ActionToCommand, rotor_permutation
from tether_deploy.arbitration import ArbiterConfig, EstopLatch, HumanInput, arbitrate
from tether_deploy.runner_core import (RunnerConfig, RunnerCore, TickScheduler, load_policy, motors_off_action,
                                       open_loop_descent_action)
from tether_deploy.teleop_map import StickMapper

HOVER = {"pos_w": np.array([0.0, 0.0, 1.0]), "quat_wxyz": np.array([1.0, 0, 0, 0]),
         "lin_vel_w": np.zeros(3), "ang_vel_b": np.zeros(3)}


@pytest.fixture(scope="module")
def policy(linear_policy_dir):
    return load_policy(linear_policy_dir)


# ---------------------------------------------------------------------------------- arbitration

def test_arbitration_priorities():
    cfg = ArbiterConfig(teleop_timeout_s=0.25)
    pa, ha = np.zeros(4, np.float32), np.ones(4, np.float32)
    assert arbitrate(pa, None, None, 1.0, False, cfg).source == "policy"
    d = arbitrate(pa, None, HumanInput(ha, True, 0.9), 1.0, False, cfg)
    assert d.source == "human" and d.intervention and np.array_equal(d.action, ha)
    assert arbitrate(pa, None, HumanInput(ha, False, 0.9), 1.0, False, cfg).source == "policy"
    lost = arbitrate(pa, None, HumanInput(ha, True, 0.5), 1.0, False, cfg)
    assert lost.source == "safe" and lost.action is None and "teleop lost" in lost.reason
    assert arbitrate(None, "state stale", None, 1.0, False, cfg).source == "safe"
    assert arbitrate(pa, None, HumanInput(ha, True, 0.99), 1.0, True, cfg).source == "estop"
    assert arbitrate(pa, None, HumanInput(np.full(4, np.nan), True, 0.99), 1.0, False, cfg).source == "safe"


def test_estop_latches_until_reset_with_input_released():
    e = EstopLatch()
    assert e.update(True, "joy")
    assert e.update(False, "joy")
    e.update(True, "topic")
    ok, why = e.reset()
    assert not ok and "topic" in why and e.latched
    e.update(False, "topic")
    assert e.reset()[0] and not e.latched


# --------------------------------------------------------------------------------- runner core

def _recover(core: RunnerCore, t: float, n: int | None = None) -> tuple[float, list[str]]:
    """Feed good states one period apart, ticking after each; returns the time and the sources."""
    sources = []
    for _ in range(core.cfg.good_states_to_recover if n is None else n):
        t += core.period_s
        assert core.set_state(HOVER, t) is None
        sources.append(core.tick(t, None, False).source)
    return t, sources


def test_runner_core_policy_watchdog_and_rejections(policy):
    core = RunnerCore(policy, RunnerConfig(max_state_age_periods=3.0, good_states_to_recover=5))
    p = core.period_s
    assert core.set_state(HOVER, 0.0) is None
    r = core.tick(0.001, None, False)
    assert r.source == "policy" and np.allclose(r.executed, policy.contract.action.hover_action, atol=1e-3)
    r = core.tick(3.5 * p, None, False)
    assert r.source == "safe" and "state stale" in r.reason
    t, sources = _recover(core, 3.5 * p)
    assert sources == ["safe"] * 4 + ["policy"], "a stale stream needs 5 good states before the policy flies"
    for bad, why in (({**HOVER, "pos_w": np.array([0, np.nan, 1.0])}, "NaN"),
                     ({**HOVER, "pos_w": np.array([0, 0, 1e4])}, "out of range"),
                     ({**HOVER, "ang_vel_b": np.array([100.0, 0, 0])}, "out of range"),
                     ({**HOVER, "quat_wxyz": np.array([2.0, 0, 0, 0])}, "unit quaternion")):
        t += p
        assert why in core.set_state(bad, t)
        r = core.tick(t, None, False)
        assert r.source == "safe" and why in r.reason
        t, sources = _recover(core, t)
        assert sources == ["safe"] * 4 + ["policy"], (why, sources)
    assert core.faults == 5 and sum(core.rejections.values()) == 4


def test_each_rejection_names_its_real_cause():
    from nav_msgs.msg import Odometry

    from tether_deploy.conversions import fill_odometry, odometry_to_quantities
    from tether_deploy.runner_core import StateLimits, check_state

    m = Odometry()
    fill_odometry(m, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert check_state(odometry_to_quantities(m), StateLimits()) is None
    o = m.pose.pose.orientation
    o.w = o.x = o.y = o.z = 0.0  # an estimator that has not initialised
    r = check_state(odometry_to_quantities(m), StateLimits())
    assert r.kind == "quaternion" and "quat_wxyz" in r.reason and "norm 0.000" in r.reason, r
    assert "lin_vel" not in r.reason
    o.w = float("nan")
    r = check_state(odometry_to_quantities(m), StateLimits())
    assert r.kind == "not_finite" and "quat_wxyz" in r.reason and "pose.pose.orientation" in r.reason, r
    o.w = 1.0
    m.twist.twist.linear.y = float("inf")
    r = check_state(odometry_to_quantities(m), StateLimits())
    assert r.kind == "not_finite" and "lin_vel_w" in r.reason and "twist.twist.linear" in r.reason, r


def test_header_checks_frames_and_stamps(policy):
    from tether_deploy.runner_core import StateHeader

    core = RunnerCore(policy, RunnerConfig(max_stamp_age_s=0.2, max_stamp_lead_s=0.05, good_states_to_recover=2))
    clock = 1000.0

    def offer(stamp_s=None, frame="world", child="base_link", dt=0.0):
        stamp = clock + dt if stamp_s is None else stamp_s
        return core.set_state(HOVER, 0.0, StateHeader(frame, child, stamp, clock))

    assert offer(clock - 0.01) is None
    for kw, kind, words in ((dict(frame="map"), "frame", ("'map'", "world_frame")),
                            (dict(child="body"), "frame", ("'body'", "body_frame")),
                            (dict(stamp_s=0.0), "unstamped", ("not set",)),
                            (dict(dt=-0.5), "stamp_stale", ("500 ms old", "max_stamp_age_s")),
                            (dict(dt=0.2), "stamp_future", ("200 ms ahead", "max_stamp_lead_s"))):
        n = core.rejections[kind]
        reason = offer(**kw)
        assert reason is not None and all(w in reason for w in words), (kind, reason)
        assert core.rejections[kind] == n + 1 and core.recovering
        clock += 0.01
        assert offer(dt=-0.002) is None and offer(dt=-0.001) is None and not core.recovering
        clock += 0.01
    # out of order or repeated: dropped and counted, but no fault (the newer state stays in force)
    faults = core.faults
    last = core.state
    reason = offer(dt=-0.05)
    assert "out of order" in reason and core.rejections["out_of_order"] == 1
    assert core.state is last and not core.recovering and core.faults == faults
    # a replay with another clock: stamps unchecked, frames still checked
    replay = RunnerCore(policy, RunnerConfig(check_stamps=False))
    assert replay.set_state(HOVER, 0.0, StateHeader("world", "base_link", 0.0, clock)) is None
    assert "frame_id" in replay.set_state(HOVER, 0.0, StateHeader("odom", "base_link", 0.0, clock))


def test_intermittent_faults_do_not_chatter_and_are_logged_once(policy):
    """Every third state message broken: the safe behaviour flies throughout (no switching back and forth
    each message), the log says so once; then 5 good messages in a row and the policy flies again."""
    core = RunnerCore(policy, RunnerConfig(good_states_to_recover=5))
    p, t = core.period_s, 0.0
    core.set_state(HOVER, t)
    assert core.tick(t, None, False).source == "policy"
    core.drain_events()
    sources = []
    for k in range(61):  # ends with a broken message
        t += p
        bad = {**HOVER, "quat_wxyz": np.zeros(4)} if k % 3 == 0 else HOVER
        core.set_state(bad, t)
        sources.append(core.tick(t, None, False).source)
    switches = sum(a != b for a, b in zip(sources, sources[1:]))
    assert set(sources) == {"safe"} and switches == 0, sources
    events = core.drain_events()
    assert len(events) == 1 and events[0][0] == "warn" and "unit quaternion" in events[0][1], events
    assert core.rejections["quaternion"] == 21 and core.faults == 1
    t, sources = _recover(core, t)
    assert sources[-1] == "policy" and sources[:-1] == ["safe"] * 4
    events = core.drain_events()
    assert len(events) == 1 and "usable again after 5" in events[0][1], events


def test_runner_config_refuses_bad_state_check_settings():
    for kw, word in ((dict(good_states_to_recover=0), "good_states_to_recover"),
                     (dict(good_states_to_recover=2.5), "good_states_to_recover"),
                     (dict(max_stamp_age_s=0.0), "max_stamp_age_s"),
                     (dict(max_stamp_lead_s=float("nan")), "max_stamp_lead_s"),
                     (dict(world_frame=""), "world_frame")):
        with pytest.raises(ValueError, match=word):
            RunnerConfig(**kw)


def test_commands_are_named_by_the_contract(policy):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray

    from tether_deploy.conversions import command_names, command_values, fill_command

    a = policy.contract.action
    names = command_names(a)
    assert names == [n + "_norm" for n in a.output_names] and len(names) == a.dim
    m = JointState()
    fill_command(m, names, [0.1, -0.2, 0.3, 0.4], "base_link")
    assert m.header.frame_id == "base_link" and list(m.name) == names
    np.testing.assert_allclose(command_values(m, names), [0.1, -0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="not the contract's"):
        command_values(m, ["collective_thrust_norm", "body_rate_x_norm", "body_rate_y_norm", "body_rate_z_norm"])
    # logs recorded before commands were stamped still decode
    np.testing.assert_allclose(command_values(Float32MultiArray(data=[0.5, 0.5, 0.5, 0.5]), names), 0.5)


def test_safe_behaviours_degrade(policy):
    c = policy.contract
    assert np.all(motors_off_action(c) == -1.0)
    descent = open_loop_descent_action(c, RunnerConfig().open_loop_thrust_scale)
    assert np.all(descent < np.asarray(c.action.hover_action))
    core = RunnerCore(policy, RunnerConfig(safe_behaviour="hold", land_timeout_s=1.0))
    core.set_state(HOVER, 0.0)
    human_lost = HumanInput(np.ones(4, np.float32), True, -1.0)
    r = core.tick(0.0, human_lost, False)
    assert r.mode.startswith("safe:hold") and np.allclose(r.executed, c.action.hover_action, atol=1e-3)
    r = core.tick(0.2, None, False)  # state stale: hold needs state -> open-loop land
    assert r.mode.startswith("safe:land_open_loop") and np.allclose(r.executed, descent)
    assert core.tick(2.0, None, False).mode.startswith("safe:motors_off")
    assert core.tick(2.0, None, True).source == "estop"


def test_action_limits(policy):
    core = RunnerCore(policy, RunnerConfig(action_low=(-0.5,), action_high=(0.2,), max_action_delta=0.05))
    core.set_state(HOVER, 0.0)
    r = core.tick(0.0, HumanInput(np.ones(4, np.float32), True, 0.0), False)
    assert np.all(r.executed <= 0.2 + 1e-6)
    r2 = core.tick(0.001, HumanInput(-np.ones(4, np.float32), True, 0.0), False)
    assert np.allclose(r2.executed, r.executed - 0.05, atol=1e-6)


def test_hot_swap_checks(policy, linear_policy_dir, tmp_path):
    from linear_policy import write_linear_hover_policy

    core = RunnerCore(policy, RunnerConfig())
    with pytest.raises(ContractError, match="control_rate_hz"):
        load_policy(write_linear_hover_policy(tmp_path / "r", control_rate_hz=50.0), running=core.contract)
    other = load_policy(write_linear_hover_policy(tmp_path / "o", bias_offset=0.01), running=core.contract)
    core.set_state(HOVER, 0.0)
    core.tick(0.0, None, False)
    core.offer_policy(other)
    assert core.policy is policy and core.swaps == 0, "the swap waits for the next tick"
    r = core.tick(0.01, None, False)
    assert core.policy is other and core.swaps == 1 and r.source == "policy"
    assert np.allclose(r.policy_action, np.asarray(policy.contract.action.hover_action) + 0.01, atol=2e-3)


def test_tick_scheduler_follows_state_and_falls_back_to_timer():
    s = TickScheduler(0.01, "state")
    ticks = [s.on_state(i * 0.002) for i in range(500)]  # state at 5x the control rate
    assert abs(sum(ticks) - 100) <= 2
    s = TickScheduler(0.01, "state")
    assert s.on_state(0.0)
    assert not s.on_timer(0.005)
    assert s.on_timer(0.0126)  # the state is late: the timer ticks
    assert s.missed == 0
    assert s.on_timer(0.05) and s.missed >= 2


@pytest.mark.parametrize("ratio", [1, 2, 3, 5])
def test_tick_scheduler_ticks_every_kth_state_under_jitter(ratio):
    """A state stream at ``ratio`` x the control rate with arrival jitter of +-20 % of its interval: every
    tick lands on every ratio-th state, never one early or late (the policy would see states a wrong
    interval apart). A fixed threshold of half a period flipped between 1 and 3 states at ratio 2."""
    period = 0.02
    rng = np.random.default_rng(ratio)
    s = TickScheduler(period, "state")
    interval = period / ratio
    arrivals = np.arange(2000) * interval + rng.uniform(-0.2, 0.2, 2000) * interval
    ticked = np.nonzero([s.on_state(t) for t in arrivals])[0]
    gaps = np.diff(ticked[10:])  # after the interval estimate settled
    assert set(gaps.tolist()) == {ratio}, np.unique(gaps, return_counts=True)
    assert s.missed == 0


def test_tick_scheduler_timer_is_a_deadline_after_state_ticks():
    s = TickScheduler(0.01, "state")
    assert s.timer_period_s("state") == pytest.approx(0.0125)  # re-armed on every state tick
    assert s.timer_period_s("timer") == pytest.approx(0.01)    # a blackout: tick every period
    assert s.on_state(0.0)
    # the deadline timer fires 1.25 periods after the last tick, the state is lost: it must tick,
    # within the 1.5-period gap that counts as a miss
    t, ticks = 0.0, []
    for _ in range(5):
        t += s.timer_period_s("timer" if ticks else "state")
        ticks.append(s.on_timer(t))
    assert all(ticks) and s.missed == 0
    assert TickScheduler(0.01, "timer").timer_period_s("state") == pytest.approx(0.01)


# ----------------------------------------------------------------------------- teleop, actuation

def test_stick_mapping(policy):
    a = policy.contract.action
    m = StickMapper(a)
    centre, dead, stop = m([0.0] * 8, [0] * 11)
    assert np.allclose(centre, a.hover_action, atol=1e-4) and not dead and not stop
    up, dead, _ = m([0, 1.0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert dead and np.all(up > centre)
    roll_right, _, _ = m([0, 0, 0, -1.0, 0, 0, 0, 0], [0] * 11)
    left = np.array([r.pos_b[1] > 0 for r in a.rotors])
    assert np.all(roll_right[left] > centre[left]) and np.all(roll_right[~left] < centre[~left])


def test_rotor_mapping_by_layout(policy):
    a = policy.contract.action
    pos = [r.pos_b for r in a.rotors]
    spin = [r.spin for r in a.rotors]
    assert list(rotor_permutation(a, pos[::-1], spin[::-1])) == [3, 2, 1, 0]
    with pytest.raises(ContractError, match="matches no rotor"):
        rotor_permutation(a, pos, [-s for s in spin])
    cmd = ActionToCommand(a, pos, spin)(np.array([1.0, -1.0, 0.0, 0.0]))
    assert np.allclose(cmd.rotor_cmd, [1.0, 0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        ActionToCommand(a, pos, spin)(np.array([np.nan, 0, 0, 0]))


# ---------------------------------------------------------------------------------------- bag

def test_bag_readable_after_clean_close_and_sigkill(tmp_path):
    from bag_check import read_bag

    script = textwrap.dedent("""
        import os, signal, sys
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool
        from tether_deploy import qos
        from tether_deploy.bag import BagWriter
        from tether_deploy.conversions import fill_command
        w = BagWriter(sys.argv[1], chunk_interval_s=1e9, chunk_size=10 ** 9)
        w.add_topic("/intervention", Bool, qos.qos_to_rosbag2_yaml(qos.COMMAND))
        w.add_topic("/cmd/executed", JointState, qos.qos_to_rosbag2_yaml(qos.COMMAND))
        for i in range(100):
            w.write("/intervention", 1000 + i, serialize_message(Bool(data=i % 2 == 0)))
            cmd = JointState()
            fill_command(cmd, [f"rotor_{k}_speed_norm" for k in range(4)], [0.1 * i] * 4, "base_link")
            w.write("/cmd/executed", 1000 + i, serialize_message(cmd))
            if i == 49:
                w.flush()  # a chunk boundary: the next 50 are in the open chunk when killed
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        w.close()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for mode, expected in (("close", 100), ("kill", 50)):
        rc = subprocess.run([sys.executable, "-c", script, str(tmp_path / mode), mode], env=env).returncode
        assert rc == (0 if mode == "close" else -signal.SIGKILL)
        counts = read_bag(tmp_path / mode)
        assert counts["/intervention"] == expected and counts["/cmd/executed"] == expected


def test_action_history_restarts_at_hover_after_a_long_blackout_only(policy):
    """Commands sent while blind (descent, motors off) must not seed the observation of a vehicle whose
    state comes back after a long gap; a brief dropout keeps the true history."""
    core = RunnerCore(policy, RunnerConfig(history_reset_after_s=0.5))
    seen = []

    def recording_policy(obs):
        seen.append(np.array(obs))
        return policy(obs)

    core.policy = recording_policy
    c = core.contract
    sl = c.slice("prev_actions")
    hover = np.tile(np.asarray(c.action.hover_action, dtype=np.float32), sl.length // c.action.dim)
    state = {"pos_w": np.array([0.0, 0.0, 1.0]), "quat_wxyz": np.array([1.0, 0.0, 0.0, 0.0]),
             "lin_vel_w": np.zeros(3), "ang_vel_b": np.zeros(3)}
    p = core.period_s

    def blackout_then_resume(t0: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        core.set_state(state, t0)
        core.tick(t0, None, False)
        t = t0
        while t < t0 + seconds:  # no state: the safe behaviour ticks
            t += p
            core.tick(t, None, False)
        n_seen = len(seen)
        while True:  # the state is back; the policy flies after good_states_to_recover messages
            t += p
            blind = core._history.reshape(-1).copy()
            core.set_state(state, t)
            if core.tick(t, None, False).source == "policy":
                break
        assert len(seen) > n_seen
        return blind, seen[-1][sl.offset:sl.offset + sl.length]

    blind, prev = blackout_then_resume(0.0, 2.0)  # long enough to reach a descent / motors off
    assert not np.allclose(blind, hover), "the safe behaviour should have commanded something other than hover"
    np.testing.assert_allclose(prev, hover, atol=1e-6, err_msg="history must restart at hover after a long blackout")

    blind, prev = blackout_then_resume(10.0, 5 * p)  # a brief dropout keeps what was really sent
    np.testing.assert_allclose(prev, blind, atol=1e-6)
    assert not np.allclose(prev, hover)


def test_operator_takes_over_after_its_reaction_time_only():
    from tether_deploy.operator_core import OperatorCfg, ScriptedOperator

    cfg = OperatorCfg(takeover_m=0.05, reaction_s=0.25)
    goal, q, v = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3)
    far, near = goal + [0.06, 0.0, 0.0], goal + [0.01, 0.0, 0.0]
    op = ScriptedOperator(cfg)
    dt = 0.02
    # a 0.2 s excursion past the threshold, then back: left alone
    for k in range(10):
        op.step(k * dt, far, q, v, goal)
    for k in range(10, 20):
        op.step(k * dt, near, q, v, goal)
    assert not op.engaged and op.takeovers == 0
    # past the threshold and staying there: on the sticks (deadman held) once the reaction time is over
    t0 = 20 * dt
    pressed = []
    for k in range(20):
        _, buttons = op.step(t0 + k * dt, far, q, v, goal)
        pressed.append(buttons[cfg.joy.button_deadman] == 1)
    first = pressed.index(True) * dt
    assert op.takeovers == 1 and cfg.reaction_s - 1e-9 <= first <= cfg.reaction_s + dt
