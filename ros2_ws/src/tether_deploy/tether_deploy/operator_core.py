"""A scripted operator: the human stand-in of tests and demos, as a pure step (no ROS, no torch).

It watches the state like a pilot watches the vehicle and answers with gamepad sticks, exactly what a
person's gamepad would send (sensor_msgs/Joy axes and buttons, the joy package's Xbox layout that
teleop_map.JoyMapping reads). It is a corrective controller with its own gains, not the policy:
  * takeover: position error above ``takeover_m`` for ``reaction_s`` -> hold the deadman and fly;
  * hand back: error below ``handback_m`` and speed below ``handback_speed_m_s`` for ``handback_hold_s``
    (hysteresis, so it does not chatter at the threshold);
  * flying: PID on the world-frame position error gives a desired acceleration, hence a desired body
    z axis and collective thrust; a P loop on the tilt error (plus an integral that learns the trim a
    weak motor or an off-centre payload needs) gives body rates; sticks = rates / full-stick rates.
The integrals keep their value between takeovers: a pilot remembers the trim of the vehicle.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tether_deploy.teleop_map import JoyMapping

GRAVITY = 9.81


@dataclasses.dataclass(frozen=True)
class OperatorCfg:
    # when to intervene
    takeover_m: float = 0.05
    """position error that makes the operator take over [m]"""
    reaction_s: float = 0.25
    """the error must stay above takeover_m this long before the operator is on the sticks: a person's
    reaction time (0.2-0.3 s), so a brief excursion the vehicle corrects by itself is left alone [s]"""
    handback_m: float = 0.015
    """position error below which the operator may hand back [m]"""
    handback_speed_m_s: float = 0.05
    """speed below which the operator may hand back [m/s]"""
    handback_hold_s: float = 0.6
    """how long both must hold before handing back [s]"""
    # the operator's own gains
    kp_pos: float = 6.0
    """position error -> desired acceleration [1/s^2]"""
    kd_pos: float = 4.0
    """velocity -> desired acceleration [1/s]"""
    ki_pos: float = 4.0
    """integrated position error -> desired acceleration [1/s^3]"""
    k_tilt: float = 12.0
    """tilt error -> body rate [1/s]"""
    ki_tilt: float = 20.0
    """integrated tilt error -> body rate trim [1/s^2]"""
    k_yaw: float = 2.0
    """heading error -> yaw rate [1/s]"""
    max_tilt_rad: float = 0.5
    """largest tilt the operator asks for [rad]"""
    # the gamepad (must match the runner's joy parameters)
    joy: JoyMapping = JoyMapping()
    """the runner's stick layout and scaling (its joy.* parameters): axes, inversions, deadman, thrust_range"""
    full_stick_rate_rad_s: tuple[float, float, float] = (6.0, 6.0, 3.0)
    """body rate at full stick, roll, pitch, yaw [rad/s] (runner: joy.rate_fraction * body-rate limits)"""
    num_axes: int = 8
    """axes per Joy message (the joy package's Xbox layout) [1]"""
    num_buttons: int = 11
    """buttons per Joy message (the joy package's Xbox layout) [1]"""

    def __post_init__(self):
        if self.reaction_s < 0:
            raise ValueError(f"reaction_s must be >= 0 [s], got {self.reaction_s}")
        if not 0 < self.handback_m < self.takeover_m:
            raise ValueError(f"need 0 < handback_m < takeover_m [m], got {self.handback_m}, {self.takeover_m}")
        if min(self.full_stick_rate_rad_s) <= 0 or not 0 < self.joy.thrust_range <= 1:
            raise ValueError("full_stick_rate_rad_s must be positive [rad/s] and joy.thrust_range in (0, 1]")
        for name in ("axis_throttle", "axis_yaw", "axis_pitch", "axis_roll"):
            if not 0 <= getattr(self.joy, name) < self.num_axes:
                raise ValueError(f"joy.{name} {getattr(self.joy, name)} outside the {self.num_axes} axes")
        if not 0 <= self.joy.button_deadman < self.num_buttons:
            raise ValueError(f"joy.button_deadman {self.joy.button_deadman} outside the {self.num_buttons} buttons")


def _rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class ScriptedOperator:
    """``step(t_s, pos_w, quat_wxyz, lin_vel_w, goal_w)`` -> (axes, buttons) of one gamepad sample."""

    def __init__(self, cfg: OperatorCfg = OperatorCfg()):
        self.cfg = cfg
        self.engaged = False
        self.takeovers = 0
        self._calm_since: float | None = None
        self._over_since: float | None = None
        self._last_t: float | None = None
        self._i_pos = np.zeros(3)
        self._i_tilt = np.zeros(2)

    def reset_episode(self) -> None:
        """A new flight: hand back, keep the learnt trim (integrals)."""
        self.engaged, self._calm_since, self._over_since, self._last_t = False, None, None, None

    def _supervise(self, t: float, err: float, speed: float) -> None:
        c = self.cfg
        if not self.engaged:
            if err <= c.takeover_m:
                self._over_since = None
                return
            self._over_since = t if self._over_since is None else self._over_since
            if t - self._over_since >= c.reaction_s:
                self.engaged, self._calm_since, self._over_since = True, None, None
                self.takeovers += 1
            return
        if err < c.handback_m and speed < c.handback_speed_m_s:
            self._calm_since = t if self._calm_since is None else self._calm_since
            if t - self._calm_since >= c.handback_hold_s:
                self.engaged = False
        else:
            self._calm_since = None

    def sticks(self, dt: float, pos_w, quat_wxyz, lin_vel_w, goal_w) -> np.ndarray:
        """Roll, pitch, yaw, throttle sticks in [-1, 1] that fly the vehicle to ``goal_w``."""
        c = self.cfg
        e = np.asarray(goal_w, dtype=np.float64) - np.asarray(pos_w, dtype=np.float64)
        v = np.asarray(lin_vel_w, dtype=np.float64)
        self._i_pos = np.clip(self._i_pos + e * dt, -0.5, 0.5)
        acc = c.kp_pos * e - c.kd_pos * v + c.ki_pos * self._i_pos + np.array([0.0, 0.0, GRAVITY])
        r = _rotmat(np.asarray(quat_wxyz, dtype=np.float64))
        z_b = r[:, 2]
        z_des = acc / max(np.linalg.norm(acc), 1e-6)
        tilt = np.arccos(np.clip(z_des[2], -1.0, 1.0))
        if tilt > c.max_tilt_rad:  # keep the heading of the horizontal part, limit the angle
            h = z_des[:2] / max(np.linalg.norm(z_des[:2]), 1e-9)
            z_des = np.array([h[0] * np.sin(c.max_tilt_rad), h[1] * np.sin(c.max_tilt_rad), np.cos(c.max_tilt_rad)])
        tilt_err_b = (r.T @ np.cross(z_b, z_des))[:2]
        self._i_tilt = np.clip(self._i_tilt + tilt_err_b * dt, -0.2, 0.2)
        rates_xy = c.k_tilt * tilt_err_b + c.ki_tilt * self._i_tilt
        yaw = np.arctan2(r[1, 0], r[0, 0])
        rate_z = -c.k_yaw * yaw
        thrust_over_hover = float(acc @ z_b) / GRAVITY
        throttle = (thrust_over_hover - 1.0) / c.joy.thrust_range
        rates = np.array([rates_xy[0], rates_xy[1], rate_z]) / np.asarray(c.full_stick_rate_rad_s)
        return np.clip(np.array([rates[0], rates[1], rates[2], throttle]), -1.0, 1.0)

    def step(self, t_s: float, pos_w, quat_wxyz, lin_vel_w, goal_w) -> tuple[list[float], list[int]]:
        c = self.cfg
        dt = 0.0 if self._last_t is None else max(0.0, min(t_s - self._last_t, 0.1))
        self._last_t = t_s
        err = float(np.linalg.norm(np.asarray(goal_w) - np.asarray(pos_w)))
        self._supervise(t_s, err, float(np.linalg.norm(lin_vel_w)))
        axes, buttons = [0.0] * c.num_axes, [0] * c.num_buttons
        if not self.engaged:
            return axes, buttons
        roll, pitch, yaw, throttle = self.sticks(dt, pos_w, quat_wxyz, lin_vel_w, goal_w)
        j = c.joy
        axes[j.axis_roll] = float(-roll if j.invert_roll else roll)
        axes[j.axis_pitch] = float(pitch)
        axes[j.axis_yaw] = float(-yaw if j.invert_yaw else yaw)
        axes[j.axis_throttle] = float(throttle)
        buttons[j.button_deadman] = 1
        return axes, buttons
