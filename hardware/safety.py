"""One safety layer for every Robot adapter: geofence, tilt and rate limits, battery, stale state, arming.

:class:`SafetyMonitor` is pure (numpy, no rclpy, the clock is passed in): ``clip`` bounds a command to
the limits, ``check`` judges a state (ok / land / stop with a one-line reason), ``arming_failures``
lists what forbids arming. :class:`SafeRobot` wraps any adapter with it: ``send`` returns the clipped
command the adapter actually sent, every ``read`` is checked, and the first verdict that is not ok
calls the adapter's ``land()`` or ``safe_stop()`` once and latches: further commands are refused
(:class:`SafetyLatched`) until :meth:`SafeRobot.reset`.

Verdicts (the worst one wins):
  stop: tilt past max_tilt_rad, measured body rate past max_rate_rad_s, battery at or below
        battery_critical_v, state older than state_timeout_s, a non-finite state, the link lost.
  land: outside the geofence box, battery at or below battery_low_v.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from hardware.robot import (Command, CtbrCommand, Robot, RobotError, RobotLinkLost, RobotState, RotorCommand,
                            Schema, check_finite_command)

OK, LAND, STOP = "ok", "land", "stop"
ACTIONS = (OK, LAND, STOP)
"""verdict actions, mildest first"""


@dataclasses.dataclass(frozen=True)
class SafetyCfg:
    """The limits every adapter flies under. Defaults suit a small indoor quadrotor (a Crazyflie in a
    6 x 6 x 3 m room); set them per robot (robot_bridge parameters ``safety.*``)."""

    # geofence
    geofence_min_w: tuple[float, float, float] = (-3.0, -3.0, -0.5)
    """lower corner of the allowed box, world frame [m]; outside it: land"""
    geofence_max_w: tuple[float, float, float] = (3.0, 3.0, 3.0)
    """upper corner of the allowed box, world frame [m]; outside it: land"""
    # attitude and rates
    max_tilt_rad: float = 1.0
    """largest angle between z_b and z_w before the motors stop (1.0 rad = 57 deg) [rad]"""
    max_rate_rad_s: float = 12.0
    """largest measured body-rate magnitude |ang_vel_b| before the motors stop [rad/s]"""
    max_rate_cmd_rad_s: tuple[float, float, float] = (10.0, 10.0, 5.0)
    """commanded body rates are clipped to +- these about x_b, y_b, z_b (CTBR commands) [rad/s]"""
    max_thrust_frac: float = 0.9
    """commanded collective thrust is clipped to this fraction of the vehicle's maximum thrust (CTBR:
    of VehicleFacts.max_thrust_n; rotor commands: of the sum of rotor thrusts, thrust ~ speed^2) [1]"""
    # battery
    battery_low_v: float | None = None
    """at or below this battery voltage: land; None: not checked [V]"""
    battery_critical_v: float | None = None
    """at or below this battery voltage: stop; None: not checked [V]"""
    # state
    state_timeout_s: float = 0.25
    """a state whose stamp has not changed for this long (caller's clock) is stale: stop [s]"""
    # arming checks
    arm_max_tilt_rad: float = 0.17
    """arming needs the vehicle level: tilt below this (0.17 rad = 10 deg) [rad]"""
    arm_max_speed_m_s: float = 0.2
    """arming needs the vehicle still: |lin_vel_w| below this [m/s]"""
    arm_max_rate_rad_s: float = 0.3
    """arming needs the vehicle still: |ang_vel_b| below this [rad/s]"""

    def __post_init__(self):
        lo, hi = np.asarray(self.geofence_min_w, float), np.asarray(self.geofence_max_w, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"safety.geofence_min_w {list(self.geofence_min_w)} must be below geofence_max_w "
                             f"{list(self.geofence_max_w)} on every axis (three values each, metres)")
        rates = np.asarray(self.max_rate_cmd_rad_s, float)
        if rates.shape != (3,) or not np.all(rates > 0):
            raise ValueError(f"safety.max_rate_cmd_rad_s must be three positive rates, got "
                             f"{list(self.max_rate_cmd_rad_s)}")
        for name in ("max_tilt_rad", "max_rate_rad_s", "state_timeout_s", "arm_max_tilt_rad",
                     "arm_max_speed_m_s", "arm_max_rate_rad_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"safety.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.max_thrust_frac <= 1.0:
            raise ValueError(f"safety.max_thrust_frac must be in (0, 1], got {self.max_thrust_frac!r}")
        if self.max_tilt_rad > np.pi:
            raise ValueError(f"safety.max_tilt_rad must be at most pi, got {self.max_tilt_rad!r}")
        low, crit = self.battery_low_v, self.battery_critical_v
        if low is not None and crit is not None and not crit < low:
            raise ValueError(f"safety.battery_critical_v {crit} must be below battery_low_v {low} (land first, "
                             f"then stop)")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the safety layer decided about one state."""

    action: str
    """ok, land or stop (ACTIONS)"""
    reason: str = ""
    """one line with the numbers, e.g. 'tilt 71 deg past max_tilt_rad 1 (57 deg)'; empty when ok"""

    @property
    def ok(self) -> bool:
        return self.action == OK


_OK = Verdict(OK)


def tilt_rad(quat_wxyz) -> float:
    """Angle between the body z axis and the world z axis [rad]."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    n2 = w * w + x * x + y * y + z * z
    up_z = 1.0 - 2.0 * (x * x + y * y) / max(n2, 1e-12)  # (R e_z) . e_z
    return math.acos(min(max(up_z, -1.0), 1.0))


class SafetyMonitor:
    """The limits of a :class:`SafetyCfg` applied to commands and states. Pure: the only state it keeps
    is when the state stamp last changed (for staleness), on the clock the caller passes as now_s."""

    def __init__(self, cfg: SafetyCfg | None = None, max_thrust_n: float | None = None):
        """max_thrust_n: the vehicle's maximum collective thrust [N] (VehicleFacts.max_thrust_n); None:
        CTBR thrust is clipped to >= 0 only."""
        self.cfg = cfg or SafetyCfg()
        self.max_thrust_n = max_thrust_n
        self._fence_lo = np.asarray(self.cfg.geofence_min_w, dtype=np.float64)
        self._fence_hi = np.asarray(self.cfg.geofence_max_w, dtype=np.float64)
        self._rate_cmd = np.asarray(self.cfg.max_rate_cmd_rad_s, dtype=np.float64)
        self._last_stamp_s: float | None = None
        self._fresh_since_s = 0.0

    def reset(self) -> None:
        """Forget the last state stamp (staleness restarts with the next check)."""
        self._last_stamp_s = None

    # ------------------------------------------------------------------------------- commands

    def clip(self, cmd: Command) -> Command:
        """``cmd`` bounded to the limits: CTBR rates to +- max_rate_cmd_rad_s and thrust to [0,
        max_thrust_frac * max_thrust_n]; rotor commands to [0, 1] and, when their collective thrust
        (mean of speed^2) exceeds max_thrust_frac, scaled down together (the torque ratios kept).
        Non-finite commands raise ValueError; commands of other robots (arms) pass unchanged."""
        if not isinstance(cmd, (CtbrCommand, RotorCommand)):
            return cmd  # another kind of robot (an arm): its adapter enforces its own joint limits
        if isinstance(cmd, CtbrCommand):
            # plain float math: this runs on every command, numpy's per-call cost on 3-vectors dominates it
            thrust, rates = cmd.thrust_n, cmd.body_rates_b.tolist()
            if not (math.isfinite(thrust) and all(map(math.isfinite, rates))):
                raise ValueError(f"CtbrCommand contains NaN or Inf: {rates + [thrust]}")
            hi = math.inf if self.max_thrust_n is None else self.cfg.max_thrust_frac * self.max_thrust_n
            return CtbrCommand(min(max(thrust, 0.0), hi),
                               [min(max(r, -lim), lim) for r, lim in zip(rates, self.cfg.max_rate_cmd_rad_s)])
        check_finite_command(cmd)
        u = np.clip(cmd.rotor_cmd, 0.0, 1.0)
        frac = float(np.mean(u * u))
        if frac > self.cfg.max_thrust_frac:
            u = u * np.sqrt(self.cfg.max_thrust_frac / frac)
        return RotorCommand(u)

    # --------------------------------------------------------------------------------- states

    def check(self, state: RobotState, battery_v: float | None, now_s: float) -> Verdict:
        """The worst verdict for ``state`` (stop before land before ok). now_s: the caller's monotonic
        clock [s], used only to measure how long the state stamp has not changed."""
        c = self.cfg
        if self._last_stamp_s is None or state.stamp_s != self._last_stamp_s:
            self._last_stamp_s, self._fresh_since_s = state.stamp_s, now_s
        # plain float math: this runs on every state (up to 500 Hz), numpy's per-call cost would dominate it
        pos, quat, rates = state.pos_w.tolist(), state.quat_wxyz.tolist(), state.ang_vel_b.tolist()
        if not all(map(math.isfinite, pos + quat + rates + state.lin_vel_w.tolist())):
            return Verdict(STOP, "the state holds NaN or Inf")
        age = now_s - self._fresh_since_s
        if age > c.state_timeout_s:
            return Verdict(STOP, f"state stale for {age:.3f} s (state_timeout_s {c.state_timeout_s:g})")
        tilt = tilt_rad(quat)
        if tilt > c.max_tilt_rad:
            return Verdict(STOP, f"tilt {math.degrees(tilt):.0f} deg past max_tilt_rad {c.max_tilt_rad:g} "
                                 f"({math.degrees(c.max_tilt_rad):.0f} deg)")
        rate = math.sqrt(rates[0] ** 2 + rates[1] ** 2 + rates[2] ** 2)
        if rate > c.max_rate_rad_s:
            return Verdict(STOP, f"body rate {rate:.2f} rad/s past max_rate_rad_s {c.max_rate_rad_s:g}")
        if battery_v is not None and c.battery_critical_v is not None and battery_v <= c.battery_critical_v:
            return Verdict(STOP, f"battery {battery_v:.2f} V at or below battery_critical_v {c.battery_critical_v:g}")
        if not all(lo <= x <= hi for x, lo, hi in zip(pos, c.geofence_min_w, c.geofence_max_w)):
            return Verdict(LAND, self.geofence_breach(pos))
        if battery_v is not None and c.battery_low_v is not None and battery_v <= c.battery_low_v:
            return Verdict(LAND, f"battery {battery_v:.2f} V at or below battery_low_v {c.battery_low_v:g}")
        return _OK

    def geofence_breach(self, pos_w) -> str:
        """'' inside the box, else one line naming the axis and the bound crossed."""
        p = np.asarray(pos_w, dtype=np.float64)
        for i, axis in enumerate("xyz"):
            if p[i] < self._fence_lo[i]:
                return f"outside the geofence: {axis} {p[i]:.2f} m below geofence_min_w {self._fence_lo[i]:g} m"
            if p[i] > self._fence_hi[i]:
                return f"outside the geofence: {axis} {p[i]:.2f} m above geofence_max_w {self._fence_hi[i]:g} m"
        return ""

    def arming_failures(self, state: RobotState, battery_v: float | None) -> list[str]:
        """Why the vehicle must not arm now (empty: it may): level, still, inside the geofence, battery
        above battery_low_v, a finite state."""
        c, out = self.cfg, []
        values = np.concatenate([state.pos_w, state.quat_wxyz, state.lin_vel_w, state.ang_vel_b])
        if not np.all(np.isfinite(values)):
            return ["the state holds NaN or Inf"]
        tilt = tilt_rad(state.quat_wxyz)
        if tilt > c.arm_max_tilt_rad:
            out.append(f"not level: tilt {np.degrees(tilt):.0f} deg (arm_max_tilt_rad {c.arm_max_tilt_rad:g})")
        speed = float(np.linalg.norm(state.lin_vel_w))
        if speed > c.arm_max_speed_m_s:
            out.append(f"moving: {speed:.2f} m/s (arm_max_speed_m_s {c.arm_max_speed_m_s:g})")
        rate = float(np.linalg.norm(state.ang_vel_b))
        if rate > c.arm_max_rate_rad_s:
            out.append(f"rotating: {rate:.2f} rad/s (arm_max_rate_rad_s {c.arm_max_rate_rad_s:g})")
        outside = self.geofence_breach(state.pos_w)
        if outside:
            out.append(outside)
        if battery_v is not None:
            for name, limit in (("battery_low_v", c.battery_low_v), ("battery_critical_v", c.battery_critical_v)):
                if limit is not None and battery_v <= limit:
                    out.append(f"battery {battery_v:.2f} V at or below {name} {limit:g}")
                    break
        return out


class SafetyLatched(RobotError):
    """SafeRobot refuses commands after a land or stop verdict until reset(); the message gives the
    verdict's reason."""


class SafeRobot(Robot):
    """Any adapter under one :class:`SafetyMonitor`. ``inner`` does the talking; this class decides.

    - ``send`` clips with the monitor, then returns what ``inner.send`` actually sent.
    - ``read`` checks every state; the first land/stop verdict calls ``inner.land()`` or
      ``inner.safe_stop()`` once and latches (``verdict`` keeps it); ``send`` then raises SafetyLatched.
    - RobotLinkLost from the adapter latches a stop (``inner.safe_stop()`` tried) and is re-raised.
    - ``arm`` refuses (RobotError listing the failures) unless the arming checks pass.
    """

    def __init__(self, inner: Robot, cfg: SafetyCfg | None = None, clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self.name = f"safe:{inner.name}"
        self.vehicle = inner.vehicle
        max_thrust = None if inner.vehicle is None else inner.vehicle.max_thrust_n
        self.monitor = SafetyMonitor(cfg, max_thrust)
        self._clock = clock
        self.verdict = Verdict(OK)
        """the latched verdict (ok until a land or stop)"""

    @property
    def cfg(self) -> SafetyCfg:
        return self.monitor.cfg

    @property
    def latched(self) -> bool:
        return not self.verdict.ok

    # ------------------------------------------------------------------------ delegated parts

    @property
    def state_schema(self) -> Schema:
        return self.inner.state_schema

    @property
    def command_schema(self) -> Schema:
        return self.inner.command_schema

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    def connect(self) -> None:
        self.inner.connect()
        self.monitor.reset()

    def disconnect(self) -> None:
        self.inner.disconnect()

    def battery_v(self) -> float | None:
        return self.inner.battery_v()

    def disarm(self) -> None:
        self.inner.disarm()

    def land(self) -> None:
        self.latch(Verdict(LAND, "land requested"))

    def safe_stop(self) -> None:
        self.latch(Verdict(STOP, "stop requested"))

    # ------------------------------------------------------------------------------- decisions

    def read(self) -> RobotState:
        try:
            state = self.inner.read()
        except RobotLinkLost as e:
            try:
                self.latch(Verdict(STOP, f"link lost: {e}"))
            except RobotError:  # the link is gone: the vehicle's own failsafe covers the rest
                pass
            raise
        if not isinstance(state, RobotState):  # another kind of robot (an arm): no vehicle checks apply
            return state
        verdict = self.monitor.check(state, self.inner.battery_v(), self._clock())
        if not verdict.ok:
            self.latch(verdict)
        return state

    def send(self, cmd: Command) -> Command:
        if self.latched:
            raise SafetyLatched(f"{self.inner.name}: commands refused after {self.verdict.action} "
                                f"({self.verdict.reason}); reset() once the vehicle is safe")
        return self.inner.send(self.monitor.clip(cmd))

    def check_arming(self) -> None:
        """Raise (SafetyLatched, or RobotError listing the failures) unless the vehicle may arm now."""
        self._require_connected("arm")
        if self.latched:
            raise SafetyLatched(f"{self.inner.name}: arming refused after {self.verdict.action} "
                                f"({self.verdict.reason}); reset() first")
        state = self.inner.read()
        failures = self.monitor.arming_failures(state, self.inner.battery_v()) if isinstance(state, RobotState) else []
        if failures:
            raise RobotError(f"{self.inner.name}: arming refused: {'; '.join(failures)}")

    def arm(self) -> None:
        self.check_arming()
        self.inner.arm()

    def reset(self) -> None:
        """Clear the latch (the operator has seen the vehicle is safe) and restart staleness."""
        self.verdict = Verdict(OK)
        self.monitor.reset()

    def latch(self, verdict: Verdict) -> None:
        """Act on a land/stop verdict once (inner.land() or inner.safe_stop()) and refuse commands until
        reset(); a verdict no worse than the latched one changes nothing, a stop after a land escalates."""
        if ACTIONS.index(verdict.action) <= ACTIONS.index(self.verdict.action):
            return
        self.verdict = verdict
        if verdict.action == STOP:
            self.inner.safe_stop()
        else:
            self.inner.land()
