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

def test_runner_core_policy_watchdog_and_rejections(policy):
    core = RunnerCore(policy, RunnerConfig(max_state_age_periods=3.0))
    p = core.period_s
    assert core.set_state(HOVER, 0.0) is None
    r = core.tick(0.001, None, False)
    assert r.source == "policy" and np.allclose(r.executed, policy.contract.action.hover_action, atol=1e-3)
    r = core.tick(3.5 * p, None, False)
    assert r.source == "safe" and "state stale" in r.reason
    for bad, why in (({**HOVER, "pos_w": np.array([0, np.nan, 1.0])}, "NaN"),
                     ({**HOVER, "pos_w": np.array([0, 0, 1e4])}, "out of range"),
                     ({**HOVER, "ang_vel_b": np.array([100.0, 0, 0])}, "out of range"),
                     ({**HOVER, "quat_wxyz": np.array([2.0, 0, 0, 0])}, "unit quaternion")):
        assert why in core.set_state(bad, 1.0)
        r = core.tick(1.0, None, False)
        assert r.source == "safe" and why in r.reason
        core.set_state(HOVER, 1.0)
        assert core.tick(1.0, None, False).source == "policy"


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
    core.offer_policy(other)
    core.set_state(HOVER, 0.0)
    r = core.tick(0.0, None, False)
    assert core.policy is other
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
        from std_msgs.msg import Bool, Float32MultiArray
        from tether_deploy import qos
        from tether_deploy.bag import BagWriter
        w = BagWriter(sys.argv[1], chunk_interval_s=1e9, chunk_size=10 ** 9)
        w.add_topic("/intervention", Bool, qos.qos_to_rosbag2_yaml(qos.COMMAND))
        w.add_topic("/cmd/executed", Float32MultiArray, qos.qos_to_rosbag2_yaml(qos.COMMAND))
        for i in range(100):
            w.write("/intervention", 1000 + i, serialize_message(Bool(data=i % 2 == 0)))
            w.write("/cmd/executed", 1000 + i, serialize_message(Float32MultiArray(data=[0.1 * i] * 4)))
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
        blind = core._history.reshape(-1).copy()
        core.set_state(state, t + p)
        core.tick(t + p, None, False)
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
