"""The deploy nodes as real processes over DDS on loopback (one ROS domain for this module).

Timing assertions leave room for a loaded 2-core machine; the measured figures are printed (pytest -s).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from probe import Probe
from tether.contract import load_policy_dir
from tether_deploy.teleop_map import StickMapper


def _runner_params(policy_dir: Path, **kw) -> dict:
    return {"policy_dir": str(policy_dir), "autostart": True, "max_state_age_periods": 3.0,
            "teleop_timeout_s": 0.25, "diagnostics_rate_hz": 5.0} | kw


def _twin_params(policy_dir: Path, **kw) -> dict:
    """The twin at the policy's rate, with sensor noise and command latency (a hold is not trivial)."""
    _, c = load_policy_dir(policy_dir)
    return {"policy_dir": str(policy_dir), "rate_hz": c.control_rate_hz, "latency_s": 0.01, "noise_pos_m": 0.002,
            "noise_vel_m_s": 0.01, "noise_att_rad": 0.002, "noise_ang_vel_rad_s": 0.01} | kw


@pytest.fixture
def probe(rclpy_context):
    p = Probe(rclpy_context)
    yield p
    p.close()


def _wait_flying(probe: Probe, timeout_s: float = 20.0, need_states: bool = True) -> None:
    assert probe.spin_until(lambda: probe.mode_now() == "policy" and len(probe.executed) > 20
                            and (len(probe.states) > 20 or not need_states), timeout_s), \
        f"runner never flew the policy; modes {probe.modes}"


def test_hover_hold_and_clean_recording(launcher, probe, policy_dir, tmp_path):
    """The hover policy holds the twin within 5 cm of the goal for 10 s; after a clean stop the
    recorder's MCAP holds every topic and is readable by both readers."""
    bag = tmp_path / "bag"
    rec = launcher.start("recorder_node", {"output": str(bag)})
    launcher.start("twin_node", _twin_params(policy_dir))
    # 10 periods: on a loaded 2-core machine the twin's state stream stalls > 30 ms now and then, and a
    # watchdog trip (open-loop descent) is not what this test measures; test 2 checks the watchdog.
    runner = launcher.start("runner_node", _runner_params(policy_dir, max_state_age_periods=10.0))
    _wait_flying(probe)
    n0 = len(probe.states)
    probe.spin_for(10.0)
    from tether.contract import compat_note
    note = compat_note(load_policy_dir(policy_dir)[1])  # a 1.0 contract says once what it lacks
    assert note is None or runner.output().count(note) == 1, runner.output()[-2000:]
    pos = np.array([p for _, p in probe.states[n0:]])
    err = np.linalg.norm(pos - np.array([0.0, 0.0, 1.0]), axis=1)
    print(f"\nhover: {len(pos)} states over 10 s, max |pos - goal| {err.max() * 100:.2f} cm")
    from tether.contract import load_contract

    rate_hz = load_contract(Path(policy_dir) / "policy.json").control_rate_hz  # the twin runs at the contract's rate
    assert len(pos) > 0.8 * 10.0 * rate_hz, f"the twin published too few states: {len(pos)} in 10 s at {rate_hz} Hz"
    assert err.max() < 0.05, [m for _, m in probe.modes]
    n_exec = len(probe.executed)
    assert rec.stop() == 0, rec.output()

    from bag_check import read_bag
    counts = read_bag(bag)
    for topic in ("/state/odom", "/state/imu", "/cmd/policy", "/cmd/executed", "/intervention", "/diagnostics",
                  "/runner/mode", "/runner/active_policy", "/runner/goal"):
        assert counts[topic] > 0, f"{topic} missing from the bag: {counts}"
    assert counts["/cmd/executed"] >= 0.9 * n_exec, counts


class _StandCheck:
    """A noise-free twin on its stand and a probe that sends it commands (cmd/executed) and, for a twin with
    release_on_runner_flying, the runner's mode."""

    def __init__(self, launcher, probe, policy_dir, **twin_params):
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from tether_deploy import qos
        from tether_deploy.conversions import command_names

        _, self.contract = load_policy_dir(policy_dir)
        self.probe, self.String = probe, String
        self.twin = launcher.start("twin_node", _twin_params(
            policy_dir, latency_s=0.0, noise_pos_m=0.0, noise_vel_m_s=0.0, noise_att_rad=0.0,
            noise_ang_vel_rad_s=0.0, **twin_params))
        self.cmd_pub = probe.create_publisher(JointState, qos.EXECUTED_ACTION, qos.COMMAND)
        self.mode_pub = probe.create_publisher(String, qos.RUNNER_MODE, qos.LATCHED)
        self.names, self.msg = command_names(self.contract.action), JointState()
        self.low = np.asarray(self.contract.action.hover_action, dtype=np.float64).copy()
        self.low[0] -= 0.3  # less than hover thrust: it sinks once physics runs
        assert probe.spin_until(lambda: len(probe.states) > 10, 30.0), "the twin published no state"

    def mode(self, text: str) -> None:
        self.mode_pub.publish(self.String(data=text))

    def sender(self, action):
        from tether_deploy.conversions import fill_command

        def publish():
            fill_command(self.msg, self.names, action, "base_link")
            self.msg.header.stamp = self.probe.get_clock().now().to_msg()
            self.cmd_pub.publish(self.msg)
        return publish

    def stays_still(self, action, seconds: float = 1.0) -> np.ndarray:
        """Send ``action`` for ``seconds``; the twin must not move (physics paused). Returns its position."""
        n0 = len(self.probe.states)
        self.probe.spin_for(seconds, every=self.sender(action), period_s=0.02)
        still = np.array([p for _, p in self.probe.states[n0:]])
        assert len(still) > 10 and np.ptp(still, axis=0).max() < 1e-9, f"the twin left its stand under {action}"
        assert "physics running" not in self.twin.output()
        return still[-1]

    def sinks_under_low_thrust(self, still: np.ndarray) -> None:
        probe = self.probe
        assert probe.spin_until(lambda: probe.states[-1][1][2] < still[2] - 0.01, 15.0,
                                every=self.sender(self.low), period_s=0.02), (still, probe.states[-1][1])
        assert "physics running" in self.twin.output()


def test_twin_stays_on_its_stand_until_a_command_spins_a_motor(launcher, probe, policy_dir):
    """Motors-off commands (a runner recovering from a long state loss sends them for a few ticks) leave the
    twin on its stand; the first command with thrust starts physics. Released with its motors stopped, the
    vehicle would drop and spin its rotors down before the policy flew (the old twin fell 1 m here)."""
    from tether_deploy.runner_core import motors_off_action

    check = _StandCheck(launcher, probe, policy_dir)
    check.sinks_under_low_thrust(check.stays_still(motors_off_action(check.contract)))


def test_twin_released_when_the_runner_flies(launcher, probe, policy_dir):
    """With release_on_runner_flying (the correction loop's twin) thrust commands leave the twin on its stand
    while runner/mode says safe (a runner recovering from the last episode's end), and it starts once the
    mode is policy: the episode is the policy's flight from its first step; with flight_s it ends itself
    after that much flight."""
    check = _StandCheck(launcher, probe, policy_dir, release_on_runner_flying=True, flight_s=1.5)
    check.mode("safe:land_open_loop")
    still = check.stays_still(check.low)
    check.mode("policy")
    check.sinks_under_low_thrust(still)
    # flight_s: the node ends itself, status 0, after 1.5 s of flight (sim time), however late it started
    probe.spin_until(lambda: check.twin.p.poll() is not None, 30.0, every=check.sender(check.low), period_s=0.02)
    assert check.twin.stop() == 0, check.twin.output()[-2000:]
    assert "flight of 1.50 s done" in check.twin.output()


def test_killing_the_twin_sends_runner_to_safe_within_one_tick(launcher, probe, policy_dir):
    twin = launcher.start("twin_node", _twin_params(policy_dir))
    launcher.start("runner_node", _runner_params(policy_dir))
    _wait_flying(probe)
    probe.spin_for(0.5)
    n_modes = len(probe.modes)
    twin.kill()
    assert probe.spin_until(lambda: any("state stale" in m for _, m in probe.modes[n_modes:])
                            and probe.mode_now().startswith("safe"), 3.0), probe.modes
    _, c = load_policy_dir(policy_dir)
    period = 1.0 / c.control_rate_hz
    mode = [m for _, m in probe.modes[n_modes:] if "state stale" in m][-1]
    # The runner measures the state age on its own clock at the tick that switched: it must be within
    # one tick of the stale threshold (3 periods). Probe-side arrival times include DDS and this process.
    age_ms = float(mode.split("state stale: ")[1].split(" ms")[0])
    t_safe = next(t for t, m in probe.modes[n_modes:] if m.startswith("safe"))
    print(f"\nrunner: switched to {mode!r}: {age_ms - 3 * period * 1e3:.1f} ms after the state went stale "
          f"(one tick = {period * 1e3:.0f} ms); probe saw it {(t_safe - probe.states[-1][0]) * 1e3:.0f} ms after "
          f"its last state message")
    assert age_ms <= (3 + 1) * period * 1e3 + 2.0
    n = len(probe.executed)
    probe.spin_for(0.3)
    assert len(probe.executed) - n >= 0.5 * 0.3 / period, "the runner stopped commanding after the fault"


def test_deadman_takeover_and_release(launcher, probe, linear_policy_dir):
    launcher.start("twin_node", _twin_params(linear_policy_dir))
    # 10 periods: a stall of the twin's stream on a loaded machine (a state fault, then 5 good states to
    # recover) is not what this test is about; test_killing_the_twin... checks the watchdog
    launcher.start("runner_node", _runner_params(linear_policy_dir, max_state_age_periods=10.0))
    _wait_flying(probe)
    _, c = load_policy_dir(linear_policy_dir)
    period = 1.0 / c.control_rate_hz
    axes = [0.0, 0.3, 0.0, 0.2, -0.1, 0.0, 0.0, 0.0]  # a little throttle, roll and pitch
    held = [0] * 11
    held[4] = 1
    expected, _, _ = StickMapper(c.action)(axes, held)

    n_before = len(probe.executed)
    t_press = time.monotonic()
    probe.spin_for(1.0, every=lambda: probe.joy(axes, held), period_s=0.02)
    after = [(t, a) for t, a in probe.executed[n_before:] if t > t_press]
    first_human = next(i for i, (_, a) in enumerate(after) if np.allclose(a, expected, atol=1e-5))
    print(f"\ntakeover: {first_human} executed command(s) after the press before the human's "
          f"({(after[first_human][0] - t_press) * 1e3:.1f} ms)")
    assert first_human <= 2, "the takeover took more than the tick after the deadman press (+1 in flight)"
    tail = [a for _, a in probe.executed[-20:]]
    assert all(np.allclose(a, expected, atol=1e-5) for a in tail), "executed != human while the deadman is held"
    assert probe.flags[-1][1] is True
    assert probe.mode_now() == "human"

    released = [0] * 11
    n_rel = len(probe.executed)
    probe.spin_for(1.0, every=lambda: probe.joy([0.0] * 8, released), period_s=0.02)
    assert probe.mode_now() == "policy", probe.modes[-3:]
    assert probe.flags[-1][1] is False
    # the two topics are separate streams, and the newest policy action may still be in flight: every
    # recent executed command but the newest two is one of the recent policy actions
    recent_policy = [a for _, a in probe.policy[-30:]]
    for _, executed in probe.executed[-10:-2]:
        assert any(np.allclose(executed, a, atol=1e-5) for a in recent_policy), "executed != policy after release"
    assert len(probe.executed) - n_rel > 0.5 / period


def test_teleop_loss_while_intervening_is_safe_not_frozen(launcher, probe, linear_policy_dir):
    launcher.start("twin_node", _twin_params(linear_policy_dir))
    # 10 periods: a stall of the twin's stream on a loaded machine (a state fault, then 5 good states to
    # recover) is not what this test is about; test_killing_the_twin... checks the watchdog
    launcher.start("runner_node", _runner_params(linear_policy_dir, max_state_age_periods=10.0))
    _wait_flying(probe)
    _, c = load_policy_dir(linear_policy_dir)
    axes = [0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    held = [0] * 11
    held[4] = 1
    human, _, _ = StickMapper(c.action)(axes, held)
    probe.spin_for(0.5, every=lambda: probe.joy(axes, held), period_s=0.02)
    assert probe.mode_now() == "human"
    t_loss = time.monotonic()
    assert probe.spin_until(lambda: probe.mode_now().startswith("safe"), 2.0), probe.modes[-3:]
    t_safe = next(t for t, m in probe.modes if m.startswith("safe") and t > t_loss)
    print(f"\nteleop loss -> {probe.mode_now()!r} after {(t_safe - t_loss) * 1e3:.0f} ms (timeout 250 ms)")
    assert "teleop lost" in probe.mode_now()
    probe.spin_for(0.3)
    tail = [a for t, a in probe.executed if t > t_safe + 0.05]
    assert tail and not any(np.allclose(a, human, atol=1e-4) for a in tail), "the last human command was frozen"
    assert probe.flags[-1][1] is True  # the person was in command: the log labels it an intervention


def test_bad_policies_refused_old_keeps_running_good_one_swapped(launcher, probe, linear_policy_dir, tmp_path):
    from linear_policy import write_linear_hover_policy

    launcher.start("twin_node", _twin_params(linear_policy_dir))
    # 10 periods: a stall of the twin's stream on a loaded machine is not what this test is about
    runner = launcher.start("runner_node", _runner_params(linear_policy_dir, max_state_age_periods=10.0))
    _wait_flying(probe)
    _, c = load_policy_dir(linear_policy_dir)
    period = 1.0 / c.control_rate_hz
    active_sha = c.provenance["onnx_sha256"]

    corrupt = tmp_path / "corrupt"
    shutil.copytree(linear_policy_dir, corrupt)
    data = bytearray((corrupt / "policy.onnx").read_bytes())
    data[-10] ^= 0xFF
    (corrupt / "policy.onnx").write_bytes(bytes(data))
    mismatched = write_linear_hover_policy(tmp_path / "rate", control_rate_hz=50.0)
    nan_policy = write_linear_hover_policy(tmp_path / "nan", nan=True)
    for bad, why in ((corrupt, "sha256"), (mismatched, "control_rate_hz"), (tmp_path / "missing", "does not exist"),
                     (nan_policy, "test inference")):
        n = len(probe.status)
        probe.load_pub.publish(__import__("std_msgs.msg", fromlist=["String"]).String(data=str(bad)))
        assert probe.spin_until(lambda: len(probe.status) > n, 10.0), f"no answer for {bad}"
        status = probe.status[-1][1]
        print(f"\n{bad.name}: {status}")
        assert status.startswith("rejected") and why in status, status
    assert probe.mode_now() == "policy"

    good = write_linear_hover_policy(tmp_path / "good", bias_offset=0.01)
    _, good_contract = load_policy_dir(good)
    assert probe.spin_until(lambda: probe.diagnostics and "ticks" in probe.diagnostics[-1][1], 5.0)
    t_before, before = probe.diagnostics[-1]
    n = len(probe.status)
    probe.load_pub.publish(__import__("std_msgs.msg", fromlist=["String"]).String(data=str(good)))
    assert probe.spin_until(lambda: len(probe.status) > n, 10.0)
    assert probe.status[-1][1].startswith("active"), probe.status[-1][1]
    assert good_contract.provenance["onnx_sha256"] in probe.status[-1][1] and active_sha not in probe.status[-1][1]
    probe.spin_for(1.0)
    n_diag = len(probe.diagnostics)
    assert probe.spin_until(lambda: len(probe.diagnostics) > n_diag, 5.0)
    t_after, after = probe.diagnostics[-1]
    # behaviour, not wall-clock: the swap happened at a tick (counted once), the tick count runs on
    # (no reconfigure, no restart), every tick across the swap sent a command, and the policy flies on
    assert after["policy_swaps"] == "1" and before["policy_swaps"] == "0", (before, after)
    ticks = int(after["ticks"]) - int(before["ticks"])
    sent = int(after["commands_sent"]) - int(before["commands_sent"])
    received = sum(t_before < t <= t_after for t, _ in probe.executed)
    assert ticks > 0.5 / period and sent == ticks, f"{ticks} ticks, {sent} commands sent"
    # delivery to this process (keep-last-1 commands, a loaded machine) is not the runner's behaviour:
    # only that the stream kept flowing
    assert received > 0.5 * ticks, f"{ticks} ticks, {received} commands received"
    assert probe.spin_until(lambda: probe.mode_now() == "policy", 2.0), probe.modes[-3:]
    # the timing figure is the runner's own (diagnostics), printed, never a bound here (bench/ measures it)
    print(f"hot swap: the swap tick came {after.get('last_swap_tick_gap_ms')} ms after the one before "
          f"(period {period * 1e3:.0f} ms); {ticks} ticks, {sent} commands sent, {received} received around it")
    assert "refused" in runner.output() and "sha256" in runner.output()


def test_configure_refuses_a_mismatched_policy(launcher, probe, linear_policy_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(linear_policy_dir, bad)
    (bad / "policy.json").write_text((bad / "policy.json").read_text().replace('"version": "1.0"', '"version": "7.0"'))
    runner = launcher.start("runner_node", _runner_params(bad))
    assert probe.spin_until(lambda: probe.status and probe.status[-1][1].startswith("rejected"), 15.0)
    print(f"\n{probe.status[-1][1]}")
    assert "contract version" in probe.status[-1][1]
    probe.spin_for(0.5)
    assert not probe.executed
    assert "configure refused" in runner.output() or "refused" in runner.output()


def test_nan_and_out_of_range_states_rejected(launcher, probe, linear_policy_dir):
    # this test process is the state source: a generous stale limit keeps its own stalls out of the way
    runner = launcher.start("runner_node", _runner_params(linear_policy_dir, max_state_age_periods=20.0))
    pos = [0.0, 0.0, 1.0]
    good = lambda: probe.publish_state(pos)  # noqa: E731
    assert probe.spin_until(lambda: probe.mode_now() == "policy", 15.0, every=good, period_s=0.01), probe.modes
    for bad, why in ((lambda: probe.publish_state([0.0, float("nan"), 1.0]), "NaN"),
                     (lambda: probe.publish_state([0.0, 0.0, 1.0], quat_wxyz=(float("nan"),) * 4), "NaN"),
                     (lambda: probe.publish_state([0.0, 0.0, 1.0e4]), "out of range"),
                     (lambda: probe.publish_state(pos, lin_vel_w=(500.0, 0.0, 0.0)), "out of range")):
        n = len(probe.modes)
        bad()
        assert probe.spin_until(lambda: any(why in m for _, m in probe.modes[n:]), 2.0), \
            (probe.modes[-2:], runner.output()[-3000:])
        print(f"\n{[m for _, m in probe.modes[n:] if why in m][0]}")
        assert probe.spin_until(lambda: probe.mode_now() == "policy", 2.0, every=good, period_s=0.01), \
            (probe.modes[-3:], runner.output()[-3000:])
    probe.spin_for(0.6, every=good, period_s=0.01)
    assert int(probe.diagnostics[-1][1]["rejected_states"]) >= 4


def test_frames_and_stamps_checked_said_once_diagnostics_recover(launcher, probe, linear_policy_dir):
    """Wrong frame, zero quaternion, stale and future stamps: each is unusable and named; a stream with
    one broken message in three keeps the safe behaviour (no chatter) and is logged once; after 5 good
    messages in a row the policy flies and /diagnostics is back at OK, the counts kept."""
    runner = launcher.start("runner_node", _runner_params(linear_policy_dir, max_state_age_periods=20.0,
                                                          good_states_to_recover=5))
    pos = [0.0, 0.0, 1.0]
    good = lambda: probe.publish_state(pos)  # noqa: E731
    assert probe.spin_until(lambda: probe.mode_now() == "policy", 15.0, every=good, period_s=0.01), probe.modes
    cases = ((dict(frame_id="map"), "frame_id 'map'"), (dict(child_frame_id="imu"), "child_frame_id 'imu'"),
             (dict(quat_wxyz=(0.0, 0.0, 0.0, 0.0)), "quat_wxyz"), (dict(stamp_offset_s=-1.0), "ms old"),
             (dict(stamp_offset_s=+1.0), "ahead of the node clock"))
    for kw, why in cases:
        n = len(probe.modes)
        probe.publish_state(pos, **kw)
        assert probe.spin_until(lambda: any(why in m for _, m in probe.modes[n:]), 2.0), \
            (kw, probe.modes[-2:], runner.output()[-2000:])
        assert "lin_vel_w" not in probe.modes[-1][1], probe.modes[-1]
        assert probe.spin_until(lambda: probe.mode_now() == "policy", 2.0, every=good, period_s=0.01)

    # intermittent: every third message broken for 1 s
    k = [0]

    def flaky():
        k[0] += 1
        probe.publish_state(pos, frame_id="map" if k[0] % 3 == 0 else "world")

    n_modes, n_out = len(probe.modes), len(runner.output())
    probe.spin_for(1.0, every=flaky, period_s=0.01)
    modes = [m for _, m in probe.modes[n_modes:]]
    assert len(modes) == 1 and modes[0].startswith("safe"), f"chatter between policy and safe: {modes}"
    log = runner.output()[n_out:]
    # one fault line and one mode line for ~30 broken messages (the line before may be the last recovery)
    assert log.count("state fault:") == 1 and log.count("frame_id 'map'") <= 2, log
    assert probe.spin_until(lambda: probe.mode_now() == "policy", 2.0, every=good, period_s=0.01)
    assert "usable again after 5 good messages" in runner.output()
    n_diag = len(probe.diagnostics)
    probe.spin_for(0.8, every=good, period_s=0.01)
    last = probe.diagnostics[-1][1]
    assert len(probe.diagnostics) > n_diag and last["level"] == 0, last  # OK again
    assert int(last["rejected_frame"]) >= 2 + 10 and int(last["rejected_quaternion"]) == 1, last
    assert int(last["rejected_stamp_stale"]) == 1 and int(last["rejected_stamp_future"]) == 1, last
    from tether_deploy.interface import DIAGNOSTIC_VALUES

    undocumented = [k for k in last if k not in ("level", "message") and k not in DIAGNOSTIC_VALUES
                    and not (k.startswith("rejected_") and "rejected_<cause>" in DIAGNOSTIC_VALUES)]
    assert not undocumented, f"diagnostics keys missing from interface.DIAGNOSTIC_VALUES: {undocumented}"


def test_recording_survives_sigkill(launcher, probe, linear_policy_dir, tmp_path):
    bag = tmp_path / "killed"
    rec = launcher.start("recorder_node", {"output": str(bag), "chunk_interval_s": 0.5})
    launcher.start("twin_node", _twin_params(linear_policy_dir))
    launcher.start("runner_node", _runner_params(linear_policy_dir))
    _wait_flying(probe)
    probe.spin_for(2.0)
    t_kill = time.time()
    rec.kill()
    from bag_check import read_bag
    counts = read_bag(bag)
    lost_s = t_kill - counts["_last_log_time_ns"] * 1e-9
    print(f"\nSIGKILL: bag readable, {counts['/cmd/executed']} executed commands, {counts['/state/odom']} states; "
          f"the last {lost_s * 1e3:.0f} ms before the kill are lost (chunk interval 500 ms)")
    assert counts["/cmd/executed"] > 100 and counts["/state/odom"] > 100 and counts["/intervention"] > 100
    assert lost_s <= 0.5 + 0.25
