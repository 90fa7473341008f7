"""Keyboard teleop: the key handling as a pure step (plain pytest, simulated terminal key streams), then
the node itself as a real process on a pseudo-terminal, flying the twin through the runner."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tether.contract import load_contract
from tether_deploy import qos
from tether_deploy.keyboard_core import KEYS_HELP, KeyboardCfg, KeyboardTeleopCore
from tether_deploy.teleop_map import JoyMapping, StickMapper

CFG = KeyboardCfg()
DEADMAN, ESTOP = CFG.joy.button_deadman, CFG.joy.button_estop


def _repeat(core: KeyboardTeleopCore, ch: str, t0: float, t1: float, period_s: float = 1 / 30) -> None:
    """A key held from t0 to t1 as a terminal reports it: one press, a repeat delay, then auto-repeat."""
    core.key(ch, t0)
    t = t0 + 0.5
    while t <= t1:
        core.key(ch, t)
        t += period_s


def _samples(core: KeyboardTeleopCore, t0: float, t1: float, period_s: float = 0.05):
    return [(t, core.sample(t)) for t in np.arange(t0, t1, period_s)]


# ---------------------------------------------------------------------------------- pure step

def test_takeover_survives_steering_when_only_the_last_key_repeats():
    """SPACE once, then only w repeats (what a terminal sends while both are held): the deadman stays held
    for all 6 s, and the throttle is up while w repeats."""
    core = KeyboardTeleopCore()
    core.key(" ", 0.0)
    _repeat(core, "w", 0.2, 6.0)
    samples = _samples(core, 0.0, 6.0)
    assert all(s.buttons[DEADMAN] == 1 for _, s in samples), "the takeover dropped while steering"
    throttle = [s.axes[CFG.joy.axis_throttle] for t, s in samples if t >= 0.2]
    assert min(throttle) == pytest.approx(CFG.stick_value), "w did not hold the throttle up"
    assert not any(s.notes for _, s in samples)


def test_takeover_times_out_without_keys_and_says_so():
    core = KeyboardTeleopCore()
    core.key(" ", 0.0)
    _repeat(core, "a", 0.1, 2.0)
    last_key = max(t for t in np.arange(0.6, 2.0 + 1e-9, 1 / 30))
    still = core.sample(last_key + CFG.takeover_timeout_s - 0.05)
    assert still.buttons[DEADMAN] == 1 and not still.notes
    gone = core.sample(last_key + CFG.takeover_timeout_s + 0.05)
    assert gone.buttons[DEADMAN] == 0
    assert len(gone.notes) == 1 and "HAND BACK" in gone.notes[0]
    assert core.sample(last_key + 10.0).buttons[DEADMAN] == 0, "the takeover came back by itself"


def test_space_toggles_and_sticks_recentre():
    core = KeyboardTeleopCore()
    assert core.sample(0.0).buttons[DEADMAN] == 0
    assert "TAKEOVER" in core.key(" ", 0.0)[0]
    assert core.sample(0.1).buttons[DEADMAN] == 1
    core.key("d", 0.2)
    assert core.sample(0.3).axes[CFG.joy.axis_yaw] != 0.0
    assert core.sample(0.2 + CFG.hold_timeout_s + 0.01).axes == (0.0,) * CFG.num_axes, "the stick did not recentre"
    assert "HAND BACK" in core.key(" ", 1.0)[0]
    assert core.sample(1.05).buttons[DEADMAN] == 0


def test_newest_key_of_a_stick_wins_and_shift_is_full():
    core = KeyboardTeleopCore()
    core.key("w", 0.0)
    core.key("s", 0.1)
    assert core.sample(0.2).axes[CFG.joy.axis_throttle] == pytest.approx(-CFG.stick_value)
    core.key("W", 0.3)
    assert core.sample(0.35).axes[CFG.joy.axis_throttle] == pytest.approx(1.0)


def test_estop_key_latches_and_ends_the_takeover():
    core = KeyboardTeleopCore()
    core.key(" ", 0.0)
    notes = core.key("e", 0.5)
    assert any("E-STOP" in n for n in notes) and any("takeover ended" in n for n in notes)
    samples = _samples(core, 0.5, 20.0)
    assert all(s.buttons[ESTOP] == 1 for _, s in samples), "the e-stop button was released without a reset"
    assert all(s.buttons[DEADMAN] == 0 for _, s in samples)
    assert not any(s.request_reset for _, s in samples)
    core.key(" ", 20.0)  # taking over again does not clear the e-stop
    s = core.sample(20.05)
    assert s.buttons[ESTOP] == 1 and s.buttons[DEADMAN] == 1


def test_reset_key_releases_the_button_then_requests_one_reset():
    core = KeyboardTeleopCore()
    core.key("e", 0.0)
    core.key("r", 1.0)
    first = core.sample(1.0)
    assert first.buttons[ESTOP] == 0, "the button must be released before the runner is asked"
    assert not first.request_reset, "the reset request must come after the release was published"
    samples = _samples(core, 1.05, 3.0)
    requests = [t for t, s in samples if s.request_reset]
    assert len(requests) == 1 and requests[0] >= 1.0 + CFG.reset_delay_s
    assert all(s.buttons[ESTOP] == 0 for _, s in samples)


def test_reset_key_without_a_keyboard_estop_still_asks_the_runner():
    """The runner may be e-stopped from elsewhere (tether estop trigger, a gamepad): r asks at once."""
    core = KeyboardTeleopCore()
    core.key("r", 0.0)
    assert core.sample(0.0).request_reset
    assert not core.sample(0.05).request_reset


def test_estop_after_reset_cancels_a_pending_request():
    core = KeyboardTeleopCore()
    core.key("e", 0.0)
    core.key("r", 1.0)
    core.key("e", 1.05)
    assert not any(s.request_reset for _, s in _samples(core, 1.05, 2.0))


def test_quit_sends_a_released_sample():
    core = KeyboardTeleopCore()
    core.key(" ", 0.0)
    core.key("e", 0.1)
    core.key("w", 0.2)
    core.key("q", 0.3)
    s = core.sample(0.3)
    assert core.quit and s.buttons == (0,) * CFG.num_buttons and s.axes == (0.0,) * CFG.num_axes


@pytest.mark.parametrize("mapping", [JoyMapping(), JoyMapping(invert_roll=False, invert_yaw=True, axis_yaw=2)],
                         ids=["default", "remapped"])
def test_key_directions_through_the_runners_stick_mapper(mapping, policy_dir):
    """Through the runner's own StickMapper: w more thrust, a yaw left (+z), i nose down (+y_b),
    l roll right (+x_b); the keyboard follows the mapping's axes and inversions."""
    spec = load_contract(policy_dir / "policy.json").action
    if spec.type != "ctbr":
        pytest.skip(f"direction check reads CTBR rates; the fixture policy is {spec.type}")
    mapper = StickMapper(spec, mapping)
    hover, _, _ = mapper([0.0] * 8, [0] * 11)
    for key, index, sign in (("w", 0, 1), ("s", 0, -1), ("a", 3, 1), ("d", 3, -1), ("i", 2, 1), ("k", 2, -1),
                             ("l", 1, 1), ("j", 1, -1)):
        core = KeyboardTeleopCore(KeyboardCfg(joy=mapping))
        core.key(key, 0.0)
        s = core.sample(0.05)
        action, _, _ = mapper(s.axes, s.buttons)
        delta = action - hover
        assert np.sign(delta[index]) == sign, f"{key}: {delta}"
        assert np.count_nonzero(np.abs(delta) > 1e-6) == 1, f"{key} moved more than one command: {delta}"


@pytest.mark.parametrize("kw", [dict(takeover_timeout_s=0.0), dict(takeover_timeout_s=float("nan")),
                                dict(hold_timeout_s=-1.0), dict(stick_value=1.5), dict(reset_delay_s=-0.1),
                                dict(joy=JoyMapping(button_deadman=20))])
def test_config_refuses_bad_values(kw):
    with pytest.raises(ValueError):
        KeyboardCfg(**kw)


def test_every_key_is_in_the_help():
    for token in ("SPACE", "w / s", "a / d", "i / k", "j / l", "e ", "r ", "q, Ctrl-C", "takeover_timeout_s"):
        assert token in KEYS_HELP, token


# ------------------------------------------------------------------------------ the real node

def test_keyboard_node_needs_a_terminal_and_prints_its_keys():
    from conftest import PKG, REPO

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(PKG), os.environ.get("PYTHONPATH", "")]))
    help_ = subprocess.run([sys.executable, "-m", "tether_deploy.keyboard_teleop", "--help"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "SPACE" in help_.stdout and "reset the e-stop" in help_.stdout
    no_tty = subprocess.run([sys.executable, "-m", "tether_deploy.keyboard_teleop"], env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    assert no_tty.returncode == 2 and no_tty.stderr.startswith("error:") and "Traceback" not in no_tty.stderr


class _Pty:
    """keyboard_teleop on a pseudo-terminal: what a person types goes to the master side."""

    def __init__(self, env: dict[str, str]):
        self.master, slave = pty.openpty()
        self.p = subprocess.Popen([sys.executable, "-m", "tether_deploy.keyboard_teleop", "--ros-args",
                                   "-p", "rate_hz:=50.0"], env=env, stdin=slave, stdout=slave, stderr=slave,
                                  start_new_session=True)
        os.close(slave)
        self.out = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read(self) -> str:
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.out += chunk
        return self.out.decode(errors="replace")

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.read()
        os.close(self.master)
        return self.p.returncode


def test_keyboard_node_takes_over_estops_and_resets_through_the_runner(launcher, rclpy_context, linear_policy_dir):
    """A person at the terminal: SPACE, then only w repeats for 3 s -> the runner stays in 'human' the whole
    time; e -> e-stop; r -> the runner's reset_estop answers and the e-stop clears; q quits cleanly."""
    from probe import Probe

    c = load_contract(linear_policy_dir / "policy.json")
    launcher.start("twin_node", {"policy_dir": str(linear_policy_dir), "rate_hz": c.control_rate_hz})
    runner = launcher.start("runner_node", {"policy_dir": str(linear_policy_dir), "autostart": True,
                                            "max_state_age_periods": 10.0, "teleop_timeout_s": 0.25})
    probe = Probe(rclpy_context)
    kb = _Pty(launcher.env)
    try:
        assert probe.spin_until(lambda: probe.mode_now() == "policy", 30.0), \
            f"runner never flew: {probe.modes}\n{runner.output()}"
        # the keyboard node must be on the graph before its takeover can reach the runner (discovery of a
        # fresh process takes seconds on 2 loaded cores; the key itself waits in the terminal either way)
        joy = probe.resolve_topic_name(qos.JOY)
        assert probe.spin_until(lambda: any(i.node_name == "keyboard_teleop"
                                            for i in probe.get_publishers_info_by_topic(joy)), 30.0), kb.read()
        kb.type(" ")
        assert probe.spin_until(lambda: probe.mode_now() == "human", 15.0), \
            f"SPACE did not take over: {probe.modes[-3:]}\n{kb.read()}"
        t_steer = time.monotonic()
        n_modes = len(probe.modes)
        probe.spin_for(3.0, every=lambda: kb.type("w"), period_s=1 / 30)  # only w repeats
        assert [m for _, m in probe.modes[n_modes:]] == [], \
            f"the takeover dropped while only w repeated: {probe.modes[n_modes:]}"
        assert probe.mode_now() == "human" and time.monotonic() - t_steer >= 3.0

        kb.type("e")
        assert probe.spin_until(lambda: probe.mode_now().startswith("estop"), 5.0), probe.modes[-3:]
        probe.spin_for(1.0)
        assert probe.mode_now().startswith("estop"), "the e-stop did not hold"
        kb.type("r")
        assert probe.spin_until(lambda: not probe.mode_now().startswith("estop"), 10.0), \
            f"r did not reset the e-stop: {probe.modes[-3:]}\n{kb.read()}"
        assert probe.spin_until(lambda: "e-stop reset" in kb.read(), 5.0), kb.read()
        kb.type("q")
        assert kb.p.wait(15) == 0, kb.read()
    finally:
        kb.stop()
        probe.close()
