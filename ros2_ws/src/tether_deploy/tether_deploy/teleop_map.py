"""Gamepad sticks -> the policy's normalized action space (no ROS; reads the contract only).

Mode-2 layout by default (throttle and yaw on the left stick, pitch and roll on the right), axes in
[-1, 1] as sensor_msgs/Joy gives them:
  ctbr:  thrust = hover thrust * (1 + thrust_range * throttle), body rates = stick * rate_fraction *
         body_rate_limits_rad_s (roll about x_b, pitch about y_b, yaw about z_b);
  rotor: the same collective thrust plus body torques (stick * torque_fraction of what one hover rotor
         thrust makes at the arm), mixed onto the contract's rotor layout, then converted to rotor speed.
A rotor-level policy is a raw-motor interface: a person cannot fly it by hand without a rate loop, so
the rotor mapping is meant for brief corrections and for tests; a CTBR policy flies like acro mode.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tether.actions import action_map
from tether.contract import ActionSpec, ContractError


@dataclasses.dataclass(frozen=True)
class JoyMapping:
    axis_throttle: int = 1
    """Joy axis of the throttle stick (left stick up/down in the joy package's Xbox layout) [index]"""
    axis_yaw: int = 0
    """Joy axis of the yaw stick (left stick left/right) [index]"""
    axis_pitch: int = 4
    """Joy axis of the pitch stick (right stick up/down) [index]"""
    axis_roll: int = 3
    """Joy axis of the roll stick (right stick left/right) [index]"""
    invert_roll: bool = True
    """Joy axes are +left; a roll to the right (+x_b rate) comes from pushing the stick right"""
    invert_yaw: bool = False
    """flip the yaw stick (Joy axes are +left; + yaw is counter-clockwise seen from above)"""
    button_deadman: int = 4
    """hold to intervene (LB on an Xbox pad)"""
    button_estop: int = 1
    """press to latch the e-stop (B)"""
    thrust_range: float = 0.5
    """full throttle stick = hover thrust * (1 +- thrust_range) [1]"""
    rate_fraction: float = 0.5
    """full stick = this fraction of the contract's body-rate limits (ctbr) [1]"""
    torque_fraction: float = 0.2
    """full stick = this fraction of one hover rotor's thrust as differential thrust (rotor) [1]"""

    def __post_init__(self):
        if not 0 <= self.thrust_range <= 1:
            raise ValueError(f"thrust_range must be in [0, 1], got {self.thrust_range}")


def joy_mapping_from_parameters(node, prefix: str = "joy.") -> JoyMapping:
    """The JoyMapping of a node's ``joy.*`` parameters (declared from tether_deploy.params), each cast to its
    field's type."""
    default = JoyMapping()
    return JoyMapping(**{f.name: type(getattr(default, f.name))(node.get_parameter(prefix + f.name).value)
                         for f in dataclasses.fields(JoyMapping)})


def _axis(axes, i: int) -> float:
    return float(axes[i]) if 0 <= i < len(axes) else 0.0


def _button(buttons, i: int) -> bool:
    return 0 <= i < len(buttons) and bool(buttons[i])


class StickMapper:
    """Precomputes the mixer for an action spec; ``__call__(axes, buttons)`` -> (action, deadman, estop)."""

    def __init__(self, action: ActionSpec, mapping: JoyMapping = JoyMapping()):
        if not action.hover_action:
            raise ContractError("teleop needs the contract's action.hover_action to map the throttle stick")
        self.spec, self.m = action, mapping
        if action.type == "rotor" and (action.kf_n_per_rpm2 <= 0 or action.max_rpm <= 0):
            raise ContractError("a rotor contract needs kf_n_per_rpm2 and max_rpm for the teleop mixer")
        self.map = action_map(action)  # the contract's mapping and thrust allocation (tether.actions)
        self.hover_thrust_n = self.map.hover_thrust_n
        if action.type == "rotor":
            pos = np.asarray([r.pos_b for r in action.rotors], dtype=np.float64)
            ratio = action.km_nm_per_rpm2 / action.kf_n_per_rpm2
            f_rotor = self.hover_thrust_n / len(action.rotors)
            arm = float(np.mean(np.hypot(pos[:, 0], pos[:, 1])))
            self.torque_scale = np.array([f_rotor * arm, f_rotor * arm, f_rotor * max(ratio, 1e-9)]) \
                * mapping.torque_fraction

    def __call__(self, axes, buttons) -> tuple[np.ndarray, bool, bool]:
        m, a = self.m, self.spec
        throttle = np.clip(_axis(axes, m.axis_throttle), -1, 1)
        roll = np.clip(_axis(axes, m.axis_roll), -1, 1) * (-1 if m.invert_roll else 1)
        pitch = np.clip(_axis(axes, m.axis_pitch), -1, 1)
        yaw = np.clip(_axis(axes, m.axis_yaw), -1, 1) * (-1 if m.invert_yaw else 1)
        thrust = self.hover_thrust_n * (1.0 + m.thrust_range * throttle)
        sticks = np.array([roll, pitch, yaw])
        if a.type == "ctbr":
            # body rates as normalized commands: full stick is rate_fraction of the contract's limits
            action = self.map.from_ctbr(thrust, sticks * m.rate_fraction * self.map.rate_limits_rad_s)
        else:
            action = self.map.rotor_action_for_wrench(thrust, sticks * self.torque_scale)
        return action.astype(np.float32), _button(buttons, m.button_deadman), _button(buttons, m.button_estop)
