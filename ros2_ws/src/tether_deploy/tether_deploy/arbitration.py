"""Who commands the vehicle this tick: a pure step, no ROS (twist_mux style priorities with timeouts).

Priority, highest first:
  1. e-stop (latched): motors off, until an explicit reset while the e-stop button is released;
  2. human, while the deadman button is held on a fresh teleop stream;
  3. safe behaviour, when the human was holding the deadman but the teleop stream went silent
     (never the frozen last command), or when the policy cannot run (state fault, inference fault);
  4. policy.

``arbitrate`` returns the executed action for human and policy; for ``safe`` the caller computes the
safe behaviour (it needs the policy and the state), for ``estop`` the caller sends motors off.
"""

from __future__ import annotations

import dataclasses

import numpy as np


FLYING_SOURCES = ("policy", "human")
"""the Decision sources that fly the vehicle (the runner's mode is one of them while it flies)"""


@dataclasses.dataclass(frozen=True)
class ArbiterConfig:
    teleop_timeout_s: float = 0.25
    """teleop input older than this is lost [s]; a gamepad at 20 Hz gives 5 chances"""

    def __post_init__(self):
        if not self.teleop_timeout_s > 0:
            raise ValueError(f"teleop_timeout_s must be > 0 [s], got {self.teleop_timeout_s}")


@dataclasses.dataclass(frozen=True)
class HumanInput:
    """The latest teleop sample, mapped into the policy's action space."""

    action: np.ndarray | None
    """[A] normalized command, None if the sticks could not be mapped"""
    deadman: bool
    """hold-to-intervene button held"""
    received_s: float
    """when it was received [s, monotonic]"""


@dataclasses.dataclass(frozen=True)
class Decision:
    source: str
    """policy | human | safe | estop"""
    action: np.ndarray | None
    """the action to execute for policy and human; None for safe and estop"""
    intervention: bool
    """a person is (or was, until the safe behaviour took over) in command"""
    reason: str


def arbitrate(policy_action: np.ndarray | None, policy_fault: str | None, human: HumanInput | None,
              now_s: float, estop: bool, cfg: ArbiterConfig) -> Decision:
    """One arbitration step. ``policy_action`` is None exactly when ``policy_fault`` says why."""
    if estop:
        return Decision("estop", None, True, "e-stop latched")
    if human is not None and human.deadman:
        age = now_s - human.received_s
        if age > cfg.teleop_timeout_s:
            return Decision("safe", None, True, f"teleop lost while intervening: last input "
                                                 f"{age * 1e3:.0f} ms ago > {cfg.teleop_timeout_s * 1e3:.0f} ms")
        if human.action is None or not np.all(np.isfinite(human.action)):
            return Decision("safe", None, True, "teleop input invalid while intervening")
        return Decision("human", np.asarray(human.action, dtype=np.float32), True, "deadman held")
    if policy_fault is not None or policy_action is None:
        return Decision("safe", None, False, policy_fault or "policy produced no action")
    return Decision("policy", policy_action, False, "")


class EstopLatch:
    """Latched e-stop: a press on any source (gamepad button, external topic) latches; only reset()
    clears it, and only while no source is pressed."""

    def __init__(self):
        self.latched = False
        self._active: dict[str, bool] = {}

    def update(self, pressed: bool, source: str = "joy") -> bool:
        self._active[source] = bool(pressed)
        if pressed:
            self.latched = True
        return self.latched

    def reset(self) -> tuple[bool, str]:
        active = sorted(k for k, v in self._active.items() if v)
        if active:
            return False, f"e-stop input still active on {active}: release it first"
        was = self.latched
        self.latched = False
        return True, "e-stop reset" if was else "e-stop was not latched"
