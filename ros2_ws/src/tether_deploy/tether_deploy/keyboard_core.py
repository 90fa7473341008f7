"""Keyboard -> gamepad sample (sensor_msgs/Joy axes and buttons) as a pure step: no ROS, no terminal.

A terminal reports key presses, never releases, and auto-repeats only the key pressed last: hold SPACE,
then hold w, and SPACE arrives once while only w repeats. A held key cannot be a deadman, so the
takeover is latched (a toggle) with a presence timeout instead:

KEYS
  SPACE      take over / hand back (toggle). While taken over every Joy message holds the deadman
             button; the takeover also ends by itself when no key at all arrives for
             takeover_timeout_s (3 s by default): a person who walks away hands back to the policy.
  w / s      throttle up / down            a / d   yaw left / right
  i / k      pitch forward / back          j / l   roll left / right
             A stick is deflected while its key repeats (for hold_timeout_s after the last repeat, longer
             than the terminal's repeat delay) and recentres after; Shift (W, A, ...) = full deflection.
  e          E-STOP: latched; the Joy e-stop button stays pressed (and the takeover ends) until reset.
  r          reset the e-stop: releases the e-stop button, then asks the runner (runner/reset_estop).
  h or ?     show these keys.
  q, Ctrl-C  quit: sends a released sample (no deadman, no e-stop button) and stops publishing; the
             runner then flies its policy, or stays e-stopped if it was.

The stick directions follow the gamepad convention of teleop_map.StickMapper (and its JoyMapping):
w = more thrust, a = yaw to the left (+z rate), i = nose down (+y_b rate, flies forward),
l = roll to the right (+x_b rate).
"""

from __future__ import annotations

import dataclasses

from tether_deploy.teleop_map import JoyMapping

KEYS_HELP = __doc__.split("KEYS\n", 1)[1].split("\nThe stick directions", 1)[0].rstrip()
"""The key table above, for --help texts and the README."""

# key -> (stick, direction): stick names are the StickMapper's commands, direction in its sign convention
STICK_KEYS = {"w": ("throttle", 1.0), "s": ("throttle", -1.0), "a": ("yaw", 1.0), "d": ("yaw", -1.0),
              "i": ("pitch", 1.0), "k": ("pitch", -1.0), "j": ("roll", -1.0), "l": ("roll", 1.0)}
TAKEOVER_KEY, ESTOP_KEY, RESET_KEY, QUIT_KEY = " ", "e", "r", "q"
HELP_KEYS = ("h", "?")


@dataclasses.dataclass(frozen=True)
class KeyboardCfg:
    hold_timeout_s: float = 0.7
    """a stick key counts as held this long after its last repeat; longer than the usual 250-600 ms
    repeat delay of a terminal [s]"""
    takeover_timeout_s: float = 3.0
    """the takeover ends when no key at all arrives for this long [s]"""
    stick_value: float = 0.6
    """stick deflection of a lower-case key; Shift gives full deflection [1]"""
    reset_delay_s: float = 0.15
    """after r, the released e-stop button is published this long before the reset request, so the
    runner has seen the release (it refuses a reset while a source is pressed) [s]"""
    joy: JoyMapping = JoyMapping()
    """the runner's stick layout (its joy.* parameters): which axis and button is which, inversions"""
    num_axes: int = 8
    """axes per Joy message (the joy package's Xbox layout) [1]"""
    num_buttons: int = 11
    """buttons per Joy message (the joy package's Xbox layout) [1]"""

    def __post_init__(self):
        for name in ("hold_timeout_s", "takeover_timeout_s"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ValueError(f"{name} must be > 0 [s], got {getattr(self, name)}")
        if not self.reset_delay_s >= 0:
            raise ValueError(f"reset_delay_s must be >= 0 [s], got {self.reset_delay_s}")
        if not 0 < self.stick_value <= 1:
            raise ValueError(f"stick_value must be in (0, 1], got {self.stick_value}")
        for name in ("axis_throttle", "axis_yaw", "axis_pitch", "axis_roll"):
            if not 0 <= getattr(self.joy, name) < self.num_axes:
                raise ValueError(f"joy.{name} {getattr(self.joy, name)} outside the {self.num_axes} axes")
        for name in ("button_deadman", "button_estop"):
            if not 0 <= getattr(self.joy, name) < self.num_buttons:
                raise ValueError(f"joy.{name} {getattr(self.joy, name)} outside the {self.num_buttons} buttons")


@dataclasses.dataclass(frozen=True)
class JoySample:
    axes: tuple[float, ...]
    """sensor_msgs/Joy axes in [-1, 1]"""
    buttons: tuple[int, ...]
    """sensor_msgs/Joy buttons, 0 or 1"""
    request_reset: bool
    """call the runner's reset_estop service now"""
    notes: tuple[str, ...]
    """what changed by itself since the last sample (a timeout), for the operator's terminal"""


class KeyboardTeleopCore:
    """``key(ch, now_s)`` for every character the terminal gives (returns notes for the operator);
    ``sample(now_s)`` at the publish rate gives the Joy sample to send."""

    def __init__(self, cfg: KeyboardCfg = KeyboardCfg()):
        self.cfg = cfg
        self.takeover = False
        self.estop_latched = False
        self.quit = False
        self._last_key_s: float | None = None
        self._sticks: dict[str, tuple[float, float]] = {}  # stick -> (value, last repeat [s])
        self._reset_at_s: float | None = None

    def key(self, ch: str, now_s: float) -> list[str]:
        self._last_key_s = now_s  # any key shows a person is at the keyboard
        low = ch.lower()
        if ch == TAKEOVER_KEY:
            self.takeover = not self.takeover
            if self.takeover and self.estop_latched:
                return ["TAKEOVER (the e-stop is latched: motors stay off until r)"]
            return ["TAKEOVER: you fly (SPACE hands back)" if self.takeover else "HAND BACK: the policy flies"]
        if low in STICK_KEYS:
            stick, direction = STICK_KEYS[low]
            value = direction * (1.0 if ch.isupper() else self.cfg.stick_value)
            self._sticks[stick] = (value, now_s)  # the newest key of a stick wins (w then s: down)
            return []
        if low == ESTOP_KEY:
            notes = [] if self.estop_latched else ["E-STOP latched: motors off (r resets)"]
            self.estop_latched, self._reset_at_s = True, None
            if self.takeover:
                self.takeover = False
                notes.append("takeover ended by the e-stop (SPACE takes over again)")
            return notes
        if low == RESET_KEY:
            was = self.estop_latched
            self.estop_latched = False
            # released button first, then the request (the runner refuses a reset while a source is pressed)
            self._reset_at_s = now_s + (self.cfg.reset_delay_s if was else 0.0)
            return ["e-stop button released; asking the runner to reset the e-stop"]
        if low == QUIT_KEY:
            self.quit, self.takeover = True, False
            return ["quit"]
        if low in HELP_KEYS:
            return [KEYS_HELP]
        return []

    def held(self, now_s: float) -> dict[str, float]:
        """The deflected sticks: stick name -> value, in StickMapper's sign convention."""
        return {s: v for s, (v, t) in self._sticks.items() if now_s - t <= self.cfg.hold_timeout_s}

    def sample(self, now_s: float) -> JoySample:
        c, j = self.cfg, self.cfg.joy
        notes = []
        if self.takeover and (self._last_key_s is None or now_s - self._last_key_s > c.takeover_timeout_s):
            self.takeover = False
            notes.append(f"HAND BACK: no key for {c.takeover_timeout_s:g} s, the policy flies (SPACE takes over)")
        axes = [0.0] * c.num_axes
        sign = {"throttle": 1.0, "pitch": 1.0, "yaw": -1.0 if j.invert_yaw else 1.0,
                "roll": -1.0 if j.invert_roll else 1.0}
        index = {"throttle": j.axis_throttle, "pitch": j.axis_pitch, "yaw": j.axis_yaw, "roll": j.axis_roll}
        for stick, value in self.held(now_s).items():
            axes[index[stick]] = sign[stick] * value
        buttons = [0] * c.num_buttons
        if self.takeover and not self.quit:
            buttons[j.button_deadman] = 1
        if self.estop_latched and not self.quit:
            buttons[j.button_estop] = 1
        request = self._reset_at_s is not None and now_s >= self._reset_at_s
        if request:
            self._reset_at_s = None
        if self.quit:
            axes = [0.0] * c.num_axes
        return JoySample(tuple(axes), tuple(buttons), request, tuple(notes))
