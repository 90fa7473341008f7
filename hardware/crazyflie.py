"""Crazyflie 2.x behind the :class:`~hardware.robot.Robot` interface, through Bitcraze's cflib.

One cflib link (``radio://`` on hardware, ``udp://`` to a simulator or to the CI stand-in,
sim/standins/crazyflie_peer.py) carries:

- state: two log blocks every ``log_period_s`` (position and velocity in the world frame; attitude
  quaternion, gyro and battery voltage) combined into one :class:`RobotState` when both have arrived;
- commands: collective thrust and body rates as the legacy RPYT setpoint with roll, pitch and yaw in
  rate mode (``flightmode.stabMode*`` = 0, set at connect), in the firmware's units and signs;
- arming (the supervisor's arming request, answered), the emergency stop, and its keepalive: once one
  keepalive has arrived, the firmware stops the motors 1 s after the last one, so a dead control loop
  (no :meth:`send`) cannot leave the motors running;
- a staleness watchdog: state older than ``state_timeout_s`` (well inside the firmware's 500 ms
  commander watchdog) makes :meth:`read` raise RobotLinkLost, and a background thread calls
  :meth:`safe_stop` within ``link_loss_deadline_s``. cflib reports a closed port at once, but a peer that
  goes silent with its socket open raises nothing for seconds: hence our own watchdog.

Firmware conventions (crazyflie-firmware, src/modules/src/crtp_commander_rpyt.c, controller_pid.c):
thrust is a uint16 (65535 = full scale, values above 60000 are capped and below 1000 give zero; the
first setpoint after connect must be zero thrust or the thrust stays locked at zero); rates are deg/s;
the PID rate loop tracks roll = gyro.x, pitch = -gyro.y and yaw = gyro.z, and the legacy yaw rate input
is inverted, so a body rate w_b (FLU) is sent as cflib's ``send_setpoint(deg(wx), deg(wy), -deg(wz),
thrust)`` (cflib itself negates pitch on the wire). Rotor-level commands cannot be streamed: a rotor
policy runs onboard (the C export), and :meth:`send` refuses a RotorCommand saying so.

Thrust [N] <-> uint16 is linear in ``max_thrust_n`` (the thrust at full scale: the contract's
``action.max_thrust_n`` for the vehicle it was trained on); a calibrated unit sets its own value.
cflib is imported when connecting, so the config is readable without it (ROS parameter generation).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Callable

import numpy as np

from hardware.robot import (CTBR_SCHEMA, Command, CtbrCommand, Robot, RobotAlreadyConnectedError, RobotError, RobotLinkLost,
                            RobotState, RotorCommand, Schema, VehicleFacts, check_finite_command)
from tether.presets import PRESETS

# ------------------------------------------------------------------------- firmware facts (cited above)

THRUST_FULL_SCALE = 65535
"""uint16 thrust of the legacy setpoint at full scale [1]"""
FIRMWARE_MAX_THRUST = 60000
"""the RPYT commander caps thrust here (MAX_THRUST) [1]"""
FIRMWARE_MIN_THRUST = 1000
"""thrust below this is executed as zero (MIN_THRUST) [1]"""
GYRO_RANGE_DEG_S = 2000.0
"""the gyro's full-scale range; a rate setpoint beyond it cannot be tracked [deg/s]"""
COMMANDER_WDT_LEVEL_OUT_S = 0.5
"""firmware supervisor: no setpoint for this long -> level out (attitude 0, thrust kept) [s]"""
COMMANDER_WDT_SHUTDOWN_S = 2.0
"""firmware supervisor: no setpoint for this long -> motors off [s]"""
EMERGENCY_STOP_WDT_S = 1.0
"""firmware supervisor: after the first keepalive, none for this long -> emergency stop [s]"""
RATE_MODE_PARAMS = ("flightmode.stabModeRoll", "flightmode.stabModePitch", "flightmode.stabModeYaw")
"""parameters selecting rate (0) or angle (1) mode per axis of the RPYT commander"""

POSE_BLOCK = (("stateEstimate.x", "float"), ("stateEstimate.y", "float"), ("stateEstimate.z", "float"),
              ("stateEstimate.vx", "float"), ("stateEstimate.vy", "float"), ("stateEstimate.vz", "float"))
"""log block 1 (24 of 26 bytes): position [m] and velocity [m/s] in the world frame"""
ATTITUDE_BLOCK = (("stateEstimate.qw", "float"), ("stateEstimate.qx", "float"), ("stateEstimate.qy", "float"),
                  ("stateEstimate.qz", "float"), ("gyro.x", "FP16"), ("gyro.y", "FP16"), ("gyro.z", "FP16"),
                  ("pm.vbat", "FP16"))
"""log block 2 (24 of 26 bytes): attitude quaternion body to world [1], gyro in the body frame [deg/s]
(half precision: 0.06 deg/s at 100 deg/s), battery voltage [V]"""

ROS_INTERFACE = {
    # name: (topic or service relative to the robot's namespace, type, direction); crazyswarm2's names
    "pose": ("{robot}/pose", "geometry_msgs/msg/PoseStamped", "out"),
    "odom": ("{robot}/odom", "nav_msgs/msg/Odometry", "out"),
    "imu": ("{robot}/imu", "sensor_msgs/msg/Imu", "out"),
    "battery": ("{robot}/battery", "sensor_msgs/msg/BatteryState", "out"),
    "status": ("{robot}/status", "diagnostic_msgs/msg/DiagnosticStatus", "out"),
    "cmd_ctbr": ("{robot}/cmd_ctbr", "tether command (collective thrust N, body rates rad/s)", "in"),
    "cmd_executed": ("{robot}/cmd_executed", "the command send() returned", "out"),
    "arm": ("{robot}/arm", "std_srvs/srv/SetBool", "service"),
    "emergency": ("{robot}/emergency", "std_srvs/srv/Empty", "service"),
    "land": ("{robot}/land", "std_srvs/srv/Trigger", "service"),
    "notify_setpoints_stop": ("{robot}/notify_setpoints_stop", "std_srvs/srv/Trigger", "service"),
}
"""What a bridge node exposes for a Crazyflie, named like crazyswarm2 (crazyflie_interfaces is not
available as a wheel: standard types stand in for its Status, Arm and Emergency)."""


@dataclasses.dataclass(frozen=True)
class CrazyflieCfg:
    """How to reach and fly one Crazyflie (plain types only: a bridge node's ROS parameters are
    generated from these fields)."""

    uri: str = "radio://0/80/2M/E7E7E7E7E7"
    """cflib link URI: radio://0/80/2M/E7E7E7E7E7 (Crazyradio), udp://127.0.0.1:19850 (simulator, CI)"""
    preset: str = "crazyflie2x"
    """vehicle preset (tether.presets) whose mass, layout and maximum thrust the contract is checked against"""
    max_thrust_n: float = 0.0
    """collective thrust at full-scale command (uint16 65535) [N]; 0: the preset's maximum thrust"""
    log_period_s: float = 0.01
    """period of both state log blocks; the firmware counts in 10 ms units [s]"""
    state_timeout_s: float = 0.1
    """state older than this is stale: read() raises RobotLinkLost and the watchdog stops [s]"""
    watchdog_period_s: float = 0.01
    """how often the background watchdog checks the state's age [s]"""
    connect_timeout_s: float = 15.0
    """connect() gives up when the TOCs and parameters have not arrived by then [s]"""
    arm_timeout_s: float = 2.0
    """arm() gives up when the supervisor has not answered by then [s]"""
    request_arming: bool = True
    """arm() sends the supervisor's arming request (False: a firmware that arms itself) [1]"""
    keepalive_period_s: float = 0.1
    """send() refreshes the emergency-stop keepalive at most this often (firmware stops 1 s after the last) [s]"""
    stop_repeats: int = 3
    """safe_stop() sends the stop setpoint this many times (a radio link may drop one) [packets]"""
    toc_cache_dir: str = ""
    """folder where cflib caches log/param TOCs by CRC (faster reconnects); "": no cache"""

    def __post_init__(self):
        if not (self.uri.startswith("radio://") or self.uri.startswith("udp://") or self.uri.startswith("usb://")):
            raise ValueError(f"uri must be radio://..., udp://HOST:PORT or usb://N, got {self.uri!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} unknown; available: {sorted(PRESETS)}")
        for name in ("log_period_s", "state_timeout_s", "watchdog_period_s", "connect_timeout_s", "arm_timeout_s",
                     "keepalive_period_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0 [s], got {v!r}")
        if not (self.max_thrust_n >= 0 and math.isfinite(self.max_thrust_n)):
            raise ValueError(f"max_thrust_n must be >= 0 [N] (0: the preset's), got {self.max_thrust_n!r}")
        period_10ms = self.log_period_s / 0.01
        if abs(period_10ms - round(period_10ms)) > 1e-6 or not 1 <= round(period_10ms) <= 254:
            raise ValueError(f"log_period_s must be a multiple of 10 ms in 10..2540 ms, got {self.log_period_s!r}")
        if not self.state_timeout_s >= 2 * self.log_period_s:
            raise ValueError(f"state_timeout_s ({self.state_timeout_s} s) must be at least two log periods "
                             f"({2 * self.log_period_s} s)")
        if not self.link_loss_deadline_s < COMMANDER_WDT_LEVEL_OUT_S:
            raise ValueError(f"state_timeout_s + watchdog_period_s = {self.link_loss_deadline_s} s must stay inside "
                             f"the firmware's {COMMANDER_WDT_LEVEL_OUT_S} s commander watchdog")
        if not self.keepalive_period_s < EMERGENCY_STOP_WDT_S / 2:
            raise ValueError(f"keepalive_period_s must be < {EMERGENCY_STOP_WDT_S / 2} s (the firmware stops "
                             f"{EMERGENCY_STOP_WDT_S} s after the last keepalive), got {self.keepalive_period_s}")
        if isinstance(self.stop_repeats, bool) or not isinstance(self.stop_repeats, int) or self.stop_repeats < 1:
            raise ValueError(f"stop_repeats must be an integer >= 1, got {self.stop_repeats!r}")

    @property
    def link_loss_deadline_s(self) -> float:
        """the latest the watchdog calls safe_stop after the last state arrived [s]"""
        return self.state_timeout_s + self.watchdog_period_s

    @property
    def full_scale_thrust_n(self) -> float:
        """collective thrust at uint16 65535 [N]"""
        return self.max_thrust_n if self.max_thrust_n > 0 else PRESETS[self.preset].max_thrust_n


def crazyflie_vehicle(cfg: CrazyflieCfg) -> VehicleFacts:
    """The vehicle a Crazyflie adapter flies: its preset's facts, with the configured maximum thrust;
    the commander takes collective thrust and body rates only."""
    p = PRESETS[cfg.preset]
    return VehicleFacts(name=p.name, mass_kg=p.mass_kg, max_thrust_n=cfg.full_scale_thrust_n,
                        rotor_pos_b=tuple(tuple(float(x) for x in r) for r in p.rotor_pos_b),
                        rotor_spin=tuple(p.rotor_spin), action_spaces=("ctbr",))


def thrust_to_uint16(thrust_n: float, full_scale_n: float) -> int:
    """Collective thrust [N] -> the uint16 the firmware executes (capped at 60000; below 1000 is zero)."""
    cmd = int(round(float(np.clip(thrust_n / full_scale_n, 0.0, 1.0)) * THRUST_FULL_SCALE))
    cmd = min(cmd, FIRMWARE_MAX_THRUST)
    return 0 if cmd < FIRMWARE_MIN_THRUST else cmd


def uint16_to_thrust(cmd: int, full_scale_n: float) -> float:
    """uint16 thrust command -> collective thrust [N]."""
    return cmd / THRUST_FULL_SCALE * full_scale_n


def rates_to_setpoint_deg(body_rates_b: np.ndarray) -> tuple[float, float, float]:
    """Body rates (FLU) [rad/s] -> cflib send_setpoint's (roll, pitch, yawrate) [deg/s] in rate mode
    (cflib negates pitch on the wire; the firmware inverts the legacy yaw rate)."""
    wx, wy, wz = np.degrees(body_rates_b)
    return float(wx), float(wy), float(-wz)


class Crazyflie(Robot):
    """One Crazyflie over cflib; see the module doc. Thread-safe: cflib delivers log data on its own
    thread, the watchdog runs on another, the caller reads and sends on a third."""

    def __init__(self, cfg: CrazyflieCfg | None = None):
        self.cfg = cfg or CrazyflieCfg()
        self.name = f"crazyflie:{self.cfg.uri}"
        self.vehicle = crazyflie_vehicle(self.cfg)
        self._full_scale_n = self.cfg.full_scale_thrust_n
        self._cf = None
        self._lock = threading.Lock()
        self._new_state = threading.Condition(self._lock)
        self._pose: tuple[float, dict] | None = None  # (arrival time [s, monotonic], values)
        self._state: RobotState | None = None
        self._state_arrival_s: float | None = None  # monotonic time the latest complete state arrived [s]
        self._vbat: float | None = None
        self._lost: str | None = None  # why the link is lost; None while it is good
        self._stopped = True  # no flight setpoint since the last safe_stop (the next must unlock at zero thrust)
        self._last_keepalive_s = -math.inf
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        self.safe_stops: list[tuple[float, str]] = []
        """(monotonic time [s], why) of every safe_stop since connect(), the watchdog's included"""
        self.link_errors: list[tuple[float, str]] = []
        """(monotonic time [s], "cflib: ...") of every link error cflib reported since connect(), also those
        after the watchdog had already declared the link lost for a stale state"""
        self.last_send_s: float | None = None
        """monotonic time the latest commander packet was handed to the link [s]"""
        self.on_link_lost: list[Callable[[str], None]] = []
        """called once (watchdog thread) with the reason when the link is lost, after the stop is latched"""

    # ----------------------------------------------------------------------------------- schema

    @property
    def command_schema(self) -> Schema:
        return dict(CTBR_SCHEMA)

    @property
    def is_connected(self) -> bool:
        return self._cf is not None

    @property
    def link_lost(self) -> str | None:
        """why the link was lost since connect(); None while it is good"""
        return self._lost

    # -------------------------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        if self.is_connected:
            raise RobotAlreadyConnectedError(f"{self.name} is already connected")
        import cflib.crtp
        from cflib.crazyflie import Crazyflie as CflibCrazyflie
        from cflib.crazyflie.log import LogConfig

        cflib.crtp.init_drivers()
        cache = self.cfg.toc_cache_dir or None
        cf = CflibCrazyflie(rw_cache=cache)
        ready, failed = threading.Event(), []
        cf.fully_connected.add_callback(lambda uri: ready.set())
        cf.connection_failed.add_callback(lambda uri, msg: (failed.append(msg), ready.set()))
        cf.connection_lost.add_callback(self._on_connection_lost)
        self._reset_link_state()
        cf.open_link(self.cfg.uri)
        if not ready.wait(self.cfg.connect_timeout_s) or failed:
            cf.close_link()
            why = failed[0].splitlines()[0] if failed else f"no TOCs and parameters within {self.cfg.connect_timeout_s} s"
            raise RobotError(f"{self.name}: cannot connect: {why}; check the URI, the radio and that the "
                             "Crazyflie is on")
        # cflib's 10 Hz latency ping deadlocks a link loss: the thread whose send fails runs the error
        # path holding the send lock, and that path joins the ping thread, which waits for the send lock
        # (seen here: send() hung forever when the peer closed its port). Our staleness watchdog measures
        # the link instead.
        cf.link_statistics.stop()
        try:
            missing = [n for n, _ in POSE_BLOCK + ATTITUDE_BLOCK if cf.log.toc.get_element_by_complete_name(n) is None]
            missing += [n for n in RATE_MODE_PARAMS if cf.param.toc.get_element_by_complete_name(n) is None]
            if missing:
                raise RobotError(f"{self.name}: the firmware lacks {missing}; flash a firmware with the PID "
                                 "controller's state estimate, gyro and pm log groups and the flightmode parameters")
            self._set_rate_mode(cf)
            period_ms = int(round(self.cfg.log_period_s * 1000))
            for block_name, block, cb in (("tether_pose", POSE_BLOCK, self._on_pose),
                                          ("tether_attitude", ATTITUDE_BLOCK, self._on_attitude)):
                conf = LogConfig(name=block_name, period_in_ms=period_ms)
                for var, fetch_as in block:
                    conf.add_variable(var, fetch_as)
                cf.log.add_config(conf)
                conf.data_received_cb.add_callback(cb)
                conf.start()
            # the thrust lock: the firmware ignores thrust until a zero-thrust setpoint arrives
            cf.commander.send_setpoint(0.0, 0.0, 0.0, 0)
            deadline = time.monotonic() + self.cfg.connect_timeout_s
            self._cf = cf
            with self._lock:
                while self._state is None and self._lost is None and time.monotonic() < deadline:
                    self._new_state.wait(0.05)
            if self._lost is not None:
                raise RobotError(f"{self.name}: the link was lost while connecting: {self._lost}")
            if self._state is None:
                raise RobotError(f"{self.name}: connected, but no state from the log blocks within "
                                 f"{self.cfg.connect_timeout_s} s")
        except BaseException:
            self._cf = None
            cf.close_link()
            raise
        self._closing.clear()
        self._watchdog = threading.Thread(target=self._watch, name="crazyflie-watchdog", daemon=True)
        self._watchdog.start()

    def _set_rate_mode(self, cf) -> None:
        """Rate mode (0) on every axis, confirmed by the firmware's answer to each write."""
        confirmed = {name: threading.Event() for name in RATE_MODE_PARAMS}

        def on_update(name: str, value: str) -> None:
            if name in confirmed and int(float(value)) == 0:
                confirmed[name].set()

        for name in RATE_MODE_PARAMS:
            group, var = name.split(".")
            cf.param.add_update_callback(group=group, name=var, cb=on_update)
            cf.param.set_value(name, 0)
        try:
            for name, done in confirmed.items():
                if not done.wait(self.cfg.connect_timeout_s):
                    raise RobotError(f"{self.name}: {name} did not switch to rate mode (0) within "
                                     f"{self.cfg.connect_timeout_s} s")
        finally:
            for name in RATE_MODE_PARAMS:
                group, var = name.split(".")
                cf.param.remove_update_callback(group=group, name=var, cb=on_update)

    def disconnect(self) -> None:
        cf = self._cf
        if cf is None:
            return
        if self._lost is None:
            self.safe_stop()
        self._closing.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=1.0)
        self._cf = None
        cf.close_link()

    def _reset_link_state(self) -> None:
        with self._lock:
            self._pose, self._state, self._state_arrival_s, self._vbat = None, None, None, None
            self._lost, self._stopped = None, True
        self._last_keepalive_s = -math.inf
        self.safe_stops = []
        self.link_errors = []
        self.last_send_s = None

    # ---------------------------------------------------------------------------------- state

    def _on_pose(self, timestamp_ms, data, conf) -> None:
        with self._lock:
            self._pose = (time.monotonic(), data)

    def _on_attitude(self, timestamp_ms, data, conf) -> None:
        now = time.monotonic()
        with self._lock:
            if self._pose is None or now - self._pose[0] > 2 * self.cfg.log_period_s:
                return  # the matching position has not arrived (or is from an older period)
            p = self._pose[1]
            quat = np.array([data["stateEstimate.qw"], data["stateEstimate.qx"], data["stateEstimate.qy"],
                             data["stateEstimate.qz"]])
            norm = float(np.linalg.norm(quat))
            if not norm > 0:
                return
            self._state = RobotState(
                stamp_s=timestamp_ms / 1000.0,
                pos_w=[p["stateEstimate.x"], p["stateEstimate.y"], p["stateEstimate.z"]],
                quat_wxyz=quat / norm,
                lin_vel_w=[p["stateEstimate.vx"], p["stateEstimate.vy"], p["stateEstimate.vz"]],
                ang_vel_b=np.radians([data["gyro.x"], data["gyro.y"], data["gyro.z"]]))
            self._vbat = float(data["pm.vbat"])
            self._state_arrival_s = now
            self._new_state.notify_all()

    def _check_fresh(self, now: float) -> RobotState:
        """The latest state, or RobotLinkLost (caller holds the lock)."""
        if self._lost is not None:
            raise RobotLinkLost(f"{self.name}: link lost ({self._lost}); motors stopped")
        if self._state is None:
            raise RobotLinkLost(f"{self.name}: no state received yet")
        age = now - self._state_arrival_s
        if age > self.cfg.state_timeout_s:
            raise RobotLinkLost(f"{self.name}: state is {age * 1e3:.0f} ms old (state_timeout_s "
                                f"{self.cfg.state_timeout_s:g}); the link is silent")
        return self._state

    def read(self) -> RobotState:
        self._require_connected("read")
        with self._lock:
            return self._check_fresh(time.monotonic())

    def wait_state(self, newer_than_s: float | None, timeout_s: float) -> RobotState:
        """Block until a state whose stamp is later than ``newer_than_s`` [s, the robot's clock] arrives
        (None: any), up to timeout_s; raises RobotLinkLost when none comes (event-driven loops)."""
        self._require_connected("wait_state")
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                now = time.monotonic()
                s = self._state
                if self._lost is not None or (s is not None and (newer_than_s is None or s.stamp_s > newer_than_s)):
                    return self._check_fresh(now)
                if now >= deadline:
                    raise RobotLinkLost(f"{self.name}: no new state within {timeout_s:g} s")
                self._new_state.wait(deadline - now)

    @property
    def state_arrival_s(self) -> float | None:
        """monotonic time the latest complete state arrived [s] (latency measurements)"""
        return self._state_arrival_s

    def battery_v(self) -> float | None:
        return self._vbat

    # ------------------------------------------------------------------------------- commands

    def _clip(self, cmd: Command) -> tuple[CtbrCommand, int, tuple[float, float, float]]:
        if isinstance(cmd, RotorCommand):
            raise ValueError(f"{self.name}: cflib cannot stream rotor commands (the firmware's commander takes "
                             "collective thrust and rates); run a rotor-level policy onboard (the C export), or "
                             "deploy a policy trained with action_space=ctbr")
        if not isinstance(cmd, CtbrCommand):
            raise TypeError(f"{self.name}: send() takes a CtbrCommand, got {type(cmd).__name__}")
        thrust = thrust_to_uint16(cmd.thrust_n, self._full_scale_n)
        limit = math.radians(GYRO_RANGE_DEG_S)
        rates = np.clip(cmd.body_rates_b, -limit, limit)
        sent = CtbrCommand(uint16_to_thrust(thrust, self._full_scale_n), rates)
        return sent, thrust, rates_to_setpoint_deg(rates)

    def send(self, cmd: Command) -> Command:
        """Send collective thrust and body rates; returns what the firmware executes (thrust quantized,
        capped at 60000/65535 of full scale, zero below 1000/65535; rates within the gyro's range).
        Raises ValueError for NaN, a RotorCommand or a malformed command, RobotLinkLost when the link is
        gone or silent (the watchdog has stopped the motors)."""
        self._require_connected("send")
        check_finite_command(cmd)
        sent, thrust, (roll, pitch, yawrate) = self._clip(cmd)
        cf = self._cf
        with self._lock:
            self._check_fresh(time.monotonic())
            unlock = self._stopped
            self._stopped = False
        if unlock:  # after connect or a stop: the thrust lock wants a zero setpoint first
            cf.commander.send_setpoint(0.0, 0.0, 0.0, 0)
        cf.commander.send_setpoint(roll, pitch, yawrate, thrust)
        now = time.monotonic()
        self.last_send_s = now
        if now - self._last_keepalive_s >= self.cfg.keepalive_period_s:
            cf.supervisor.send_emergency_stop_watchdog()
            self._last_keepalive_s = now
        return sent

    def safe_stop(self, why: str = "safe_stop") -> None:
        """Motors off now: the generic commander's stop setpoint (repeated; the next flight setpoint
        unlocks thrust at zero first). On a lost link nothing arrives: the firmware's own watchdogs
        (emergency stop 1 s after the last keepalive, motors off 2 s after the last setpoint) act."""
        self._require_connected("safe_stop")
        self._latch_stop(why)
        self._send_stop()

    def _latch_stop(self, why: str) -> None:
        """From now on no flight setpoint leaves until the next send() after a stop (recorded)."""
        with self._lock:
            self._stopped = True
        self.safe_stops.append((time.monotonic(), why))

    def _send_stop(self) -> None:
        # best effort: while cflib tears a failed link down it holds its send lock (up to 1 s, the UDP
        # driver's receive timeout), so this may wait; the stop is latched before
        cf = self._cf
        for _ in range(self.cfg.stop_repeats):
            if cf is not None and cf.link is not None:
                cf.commander.send_stop_setpoint()

    def emergency_stop(self) -> None:
        """The supervisor's emergency stop: motors off and the Crazyflie locked until it is restarted."""
        self._require_connected("emergency_stop")
        with self._lock:
            self._stopped = True
        if self._cf.link is not None:
            self._cf.supervisor.send_emergency_stop()
        self.safe_stops.append((time.monotonic(), "emergency_stop"))

    def arm(self) -> None:
        """The supervisor's arming request, waiting for its answer; RobotError when refused."""
        self._require_connected("arm")
        self._arming(True)

    def disarm(self) -> None:
        self._require_connected("disarm")
        self.safe_stop("disarm")
        self._arming(False)

    def land(self) -> None:
        """No onboard landing through the RPYT commander: the runner's land behaviour flies the descent;
        here the motors stop."""
        self.safe_stop("land")

    def _arming(self, do_arm: bool) -> None:
        if not self.cfg.request_arming:
            return
        from cflib.crtp.crtpstack import CRTPPort
        cf, answer = self._cf, threading.Event()
        reply: list[tuple[bool, bool]] = []

        def on_reply(pk) -> None:  # the supervisor answers (cmd | 0x80, success, is_armed)
            if pk.channel == 1 and len(pk.data) >= 3 and pk.data[0] == 0x81:
                reply.append((bool(pk.data[1]), bool(pk.data[2])))
                answer.set()

        cf.add_port_callback(CRTPPort.SUPERVISOR, on_reply)
        try:
            cf.supervisor.send_arming_request(do_arm)
            if not answer.wait(self.cfg.arm_timeout_s):
                raise RobotError(f"{self.name}: the supervisor did not answer the {'arming' if do_arm else 'disarming'} "
                                 f"request within {self.cfg.arm_timeout_s} s (firmware older than CRTP protocol 12?)")
        finally:
            cf.remove_port_callback(CRTPPort.SUPERVISOR, on_reply)
        success, armed = reply[0]
        if not success or armed != do_arm:
            raise RobotError(f"{self.name}: the supervisor refused to {'arm' if do_arm else 'disarm'} (armed={armed}); "
                             "check the battery, that it is level and not locked after an emergency stop")

    # ------------------------------------------------------------------------------- watchdog

    def _on_connection_lost(self, uri, msg) -> None:
        why = f"cflib: {msg.splitlines()[0] if msg else 'connection lost'}"
        with self._lock:
            self.link_errors.append((time.monotonic(), why))
            if self._lost is None:
                self._lost = why
            self._new_state.notify_all()

    def _watch(self) -> None:
        """A stale state or a lost link -> the stop latched, on_link_lost, the stop sent; once. Wakes
        every watchdog_period_s, and just after the moment the latest state turns stale."""
        period = self.cfg.watchdog_period_s
        while True:
            arrival = self._state_arrival_s
            wait = period if arrival is None else \
                min(period, max(0.0005, arrival + self.cfg.state_timeout_s - time.monotonic() + 0.0005))
            if self._closing.wait(wait):
                return
            now = time.monotonic()
            with self._lock:
                lost = self._lost
                if lost is None and self._state_arrival_s is not None \
                        and now - self._state_arrival_s > self.cfg.state_timeout_s:
                    lost = self._lost = (f"no state for {(now - self._state_arrival_s) * 1e3:.0f} ms "
                                         f"(state_timeout_s {self.cfg.state_timeout_s:g})")
                    self._new_state.notify_all()
            if lost is not None:
                self._latch_stop(f"link lost: {lost}")
                for cb in list(self.on_link_lost):
                    cb(lost)
                self._send_stop()
                return
