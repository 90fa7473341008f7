"""PX4 (offboard) and ArduPilot (GUIDED_NOGPS) vehicles over MAVLink 2, behind the Robot interface.

One adapter, two configs (hardware/adapters.py: "px4" -> Px4Cfg, "ardupilot" -> ArduPilotCfg). pymavlink
opens the link (udpin/udpout in CI and SITL, a serial port on the vehicle) and encodes MAVLink 2 with its
ardupilotmega dialect (common included); three threads run beside the caller:
  receiver   parses everything the vehicle sends (HEARTBEAT, ATTITUDE_QUATERNION, LOCAL_POSITION_NED,
             SYS_STATUS, COMMAND_ACK, PARAM_VALUE, STATUSTEXT) and is the link watchdog;
  heartbeat  the companion computer's HEARTBEAT (MAV_TYPE_ONBOARD_CONTROLLER) at heartbeat_rate_hz;
  setpoints  re-sends the latest collective-thrust-and-body-rate setpoint (SET_ATTITUDE_TARGET,
             type_mask ATTITUDE_IGNORE: rates and thrust only) whenever send() has not sent one within a
             setpoint period, so the stream never drops below setpoint_rate_hz. send() itself transmits
             at once (state in -> command out without waiting for the stream's tick).

Frames: the vehicle states FRD body / NED world, Tether FLU / ENU (hardware.mavlink_frames). Thrust
[N] is sent normalized to the vehicle's max_thrust_n.

PX4 offboard rules (PX4 user guide, Offboard mode; commander offboardCheck.cpp): a setpoint stream
above 2 Hz must be running before OFFBOARD is accepted, and when it stops for COM_OF_LOSS_T the vehicle
leaves offboard (Hold, then the COM_OBL_RC_ACT action). arm() therefore streams for pre_offboard_stream_s,
then MAV_CMD_DO_SET_MODE offboard, then MAV_CMD_COMPONENT_ARM_DISARM; every COMMAND_ACK is checked and a
refusal raises RobotError naming the result and the vehicle's last STATUSTEXT.

ArduPilot: GUIDED_NOGPS takes SET_ATTITUDE_TARGET; its thrust field is thrust only with GUID_OPTIONS bit
3 (SetAttitudeTarget_ThrustAsThrust), else a climb rate, and GUID_TIMEOUT [s] after the last setpoint the
vehicle levels and holds its climb rate at zero. connect() reads both parameters and sets them (or
refuses, write_params False).

Link loss, ours: no vehicle state for link_loss_deadline_s (or no HEARTBEAT for heartbeat_timeout_s)
latches the link as lost: streaming stops (so the vehicle's own failsafe takes over at once), read() and
send() raise RobotLinkLost, and if the vehicle is heard again the adapter commands LAND. Reconnect to fly
again.

Rotor-level commands are refused: PX4 dropped direct motor commands over MAVLink around v1.14 (control
allocation; its maintainers point to the uORB/DDS bridge, mavlink/MAVSDK#2578) and ArduPilot has no such
input; a rotor policy goes onboard (tether's C export). Numpy + pymavlink; nothing here prints.
"""

from __future__ import annotations

import dataclasses
import functools
import select
import threading
import time

import numpy as np

from hardware import mavlink_frames as frames
from hardware.robot import (CTBR_SCHEMA, Command, CtbrCommand, Robot, RobotAlreadyConnectedError, RobotError, RobotLinkLost,
                            RobotState, RotorCommand, Schema, VehicleFacts, check_finite_command)
from tether.presets import PX4_1KG

AUTOPILOTS = ("px4", "ardupilot")
SAFE_STOPS = ("disarm", "terminate")
FORCE_DISARM_MAGIC = 21196.0
"""MAV_CMD_COMPONENT_ARM_DISARM param2 that disarms in flight (PX4 and ArduPilot)"""
GUID_OPTIONS_THRUST_AS_THRUST = 8
"""ArduPilot GUID_OPTIONS bit 3: SET_ATTITUDE_TARGET.thrust is thrust, not a climb rate"""
_UNKNOWN_VOLTAGE_MV = 65535


@dataclasses.dataclass(frozen=True)
class MavlinkCfg:
    """What both autopilots share; use Px4Cfg or ArduPilotCfg."""

    # link
    connection: str = "udpin:0.0.0.0:14540"
    """where the vehicle is: udpin:HOST:PORT (listen, answer the sender: PX4 SITL's offboard port 14540),
    udpout:HOST:PORT (send there first), serial:/dev/ttyACM0:921600 (device and baud, needs pyserial)"""
    system_id: int = 1
    """MAVLink system id of this companion computer (the vehicle's own, by MAVLink convention) [1-255]"""
    component_id: int = 191
    """MAVLink component id of this companion computer (191: MAV_COMP_ID_ONBOARD_COMPUTER) [1-255]"""
    vehicle_system_id: int = 0
    """system id of the vehicle to fly; 0: the first autopilot heard"""
    connect_timeout_s: float = 10.0
    """how long connect() waits for the vehicle's HEARTBEAT and first state [s]"""
    command_timeout_s: float = 1.0
    """how long one COMMAND_LONG waits for its COMMAND_ACK before it is sent again [s]"""
    command_retries: int = 3
    """how many times a command is sent before the adapter gives up [1]"""
    # rates
    heartbeat_rate_hz: float = 2.0
    """companion HEARTBEAT rate (MAVLink asks for >= 1 Hz) [Hz]"""
    state_rate_hz: float = 100.0
    """ATTITUDE_QUATERNION and LOCAL_POSITION_NED rate asked of the vehicle (SET_MESSAGE_INTERVAL) [Hz]"""
    status_rate_hz: float = 2.0
    """SYS_STATUS (battery) rate asked of the vehicle [Hz]"""
    setpoint_rate_hz: float = 50.0
    """the setpoint stream's minimum rate: the latest command is re-sent when none went out for a period [Hz]"""
    pre_offboard_stream_s: float = 1.2
    """setpoints streamed before the mode switch in arm(): PX4 denies offboard without a stream and its
    guide asks for about a second of one; the margin covers the vehicle's first setpoint arriving later [s]"""
    # link loss
    link_loss_deadline_s: float = 0.5
    """no vehicle state for this long: link lost, streaming stopped, read() raises RobotLinkLost [s]"""
    heartbeat_timeout_s: float = 3.0
    """no vehicle HEARTBEAT for this long: link lost likewise (the vehicle sends it at 1 Hz) [s]"""
    watchdog_margin_s: float = 0.02
    """the link is declared lost this long before link_loss_deadline_s: time for the watchdog thread to run
    late on a loaded machine and still stop the stream by the deadline [s]"""
    land_on_link_return: bool = True
    """after a link loss, command LAND as soon as the vehicle is heard again"""
    # vehicle
    vehicle_name: str = PX4_1KG.name
    """model or calibrated unit name, checked against a policy's contract (default: tether.presets px4_1kg)"""
    mass_kg: float = PX4_1KG.mass_kg
    """total mass [kg]"""
    max_thrust_n: float = PX4_1KG.max_thrust_n
    """collective thrust at normalized thrust 1 [N]; on a real vehicle mass x g / MPC_THR_HOVER (PX4) or
    / MOT_THST_HOVER (ArduPilot), with the thrust curve linearized (THR_MDL_FAC, MOT_THST_EXPO)"""
    body_rate_limits_rad_s: tuple[float, float, float] = (3.84, 3.84, 3.49)
    """body rates sent are clipped to +- these about x, y, z (PX4 MC_ROLLRATE_MAX / MC_PITCHRATE_MAX 220
    deg/s, MC_YAWRATE_MAX 200 deg/s) [rad/s]"""
    safe_stop: str = "disarm"
    """what safe_stop() does: 'disarm' (forced, motors stop even in flight) or 'terminate'
    (MAV_CMD_DO_FLIGHTTERMINATION: the vehicle's termination action, e.g. a parachute)"""

    autopilot = "px4"

    def __post_init__(self):
        kind = self.connection.split(":", 1)[0]
        if kind not in ("udpin", "udpout", "serial") or self.connection.count(":") != 2:
            raise ValueError(f"connection {self.connection!r} must be udpin:HOST:PORT, udpout:HOST:PORT or "
                             "serial:DEVICE:BAUD")
        for name in ("system_id", "component_id"):
            if not 1 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} must be in [1, 255], got {getattr(self, name)}")
        for name in ("connect_timeout_s", "command_timeout_s", "heartbeat_rate_hz", "state_rate_hz",
                     "status_rate_hz", "setpoint_rate_hz", "link_loss_deadline_s", "heartbeat_timeout_s",
                     "watchdog_margin_s", "mass_kg", "max_thrust_n"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.setpoint_rate_hz <= 2.0:
            raise ValueError(f"setpoint_rate_hz {self.setpoint_rate_hz} must be above 2 Hz (PX4's offboard minimum)")
        if not self.watchdog_margin_s < self.link_loss_deadline_s / 2:
            raise ValueError(f"watchdog_margin_s {self.watchdog_margin_s} must be below half link_loss_deadline_s "
                             f"{self.link_loss_deadline_s} [s]")
        if self.link_loss_deadline_s <= 2.0 / self.state_rate_hz:
            raise ValueError(f"link_loss_deadline_s {self.link_loss_deadline_s} s must exceed two state periods "
                             f"({2.0 / self.state_rate_hz:g} s at state_rate_hz {self.state_rate_hz})")
        if self.command_retries < 1 or self.pre_offboard_stream_s < 0:
            raise ValueError("command_retries must be >= 1 and pre_offboard_stream_s >= 0")
        if len(self.body_rate_limits_rad_s) != 3 or min(self.body_rate_limits_rad_s) <= 0:
            raise ValueError(f"body_rate_limits_rad_s must be three positive rates, got {self.body_rate_limits_rad_s!r}")
        if self.safe_stop not in SAFE_STOPS:
            raise ValueError(f"safe_stop must be one of {SAFE_STOPS}, got {self.safe_stop!r}")


@dataclasses.dataclass(frozen=True)
class Px4Cfg(MavlinkCfg):
    """A PX4 vehicle in offboard mode (body rates and thrust)."""

    autopilot = "px4"


@dataclasses.dataclass(frozen=True)
class ArduPilotCfg(MavlinkCfg):
    """An ArduCopter in GUIDED_NOGPS (body rates and thrust-as-thrust)."""

    connection: str = "udpin:0.0.0.0:14550"
    """where the vehicle is (see MavlinkCfg; SITL's default output is 14550)"""
    pre_offboard_stream_s: float = 0.0
    """setpoints streamed before the mode switch (GUIDED_NOGPS needs none) [s]"""
    guided_timeout_s: float = 0.5
    """GUID_TIMEOUT the vehicle must have: after this long without a setpoint it levels and holds its
    climb rate at zero [s]"""
    write_params: bool = True
    """set GUID_OPTIONS bit 3 and GUID_TIMEOUT when the vehicle has other values (False: refuse instead)"""

    autopilot = "ardupilot"

    def __post_init__(self):
        super().__post_init__()
        if not self.guided_timeout_s > 0:
            raise ValueError(f"guided_timeout_s must be > 0 [s], got {self.guided_timeout_s}")


@functools.cache
def _mavlink():
    # imported here, not at module import: hardware.adapters lists this module without pymavlink installed
    from pymavlink import mavutil
    from pymavlink.dialects.v20 import ardupilotmega
    return mavutil, ardupilotmega


class MavlinkVehicle(Robot):
    """A PX4 or ArduPilot vehicle over MAVLink 2 (see the module doc)."""

    def __init__(self, cfg: MavlinkCfg | None = None):
        self.cfg = cfg or Px4Cfg()
        if self.cfg.autopilot not in AUTOPILOTS:
            raise ValueError(f"autopilot must be one of {AUTOPILOTS}, got {self.cfg.autopilot!r}")
        self.name = f"{self.cfg.autopilot}:{self.cfg.vehicle_name}"
        self.vehicle = VehicleFacts(name=self.cfg.vehicle_name, mass_kg=self.cfg.mass_kg,
                                    max_thrust_n=self.cfg.max_thrust_n, action_spaces=("ctbr",))
        self._rate_limits = np.asarray(self.cfg.body_rate_limits_rad_s, dtype=np.float64)
        self._conn = None
        self._mav = None
        self._lock = threading.Condition()  # guards everything below that the receiver writes
        self._tx_lock = threading.Lock()  # one writer at a time on the link (pymavlink's sequence numbers)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reset_link_state()

    def _reset_link_state(self) -> None:
        self._target: tuple[int, int] | None = None
        self._heard_autopilot: int | None = None
        self._base_mode = 0
        self._custom_mode = 0
        self._last_heartbeat_ns = 0
        self._last_state_ns = 0
        self._att = None  # (stamp_s, quat_wxyz, ang_vel_b)
        self._pos = None  # (pos_w, lin_vel_w)
        self._state_seq = 0
        self._state_rx_ns = 0
        self._battery_v: float | None = None
        self._acks: dict[int, tuple[int, int]] = {}
        self._params: dict[str, tuple[float, int]] = {}
        self._statustext: list[tuple[int, str]] = []
        self._latest = CtbrCommand(0.0, np.zeros(3))
        self._streaming = False
        self._stream_since_ns = 0
        self._last_setpoint_tx_ns = 0
        self._stopped_reason: str | None = None  # land() or safe_stop() ended this flight
        self.link_lost_at_ns: int | None = None
        """monotonic time the link was declared lost (None: it is up) [ns]"""
        self.link_loss_reason = ""
        self.land_on_return_result: str | None = None
        """after a link loss: 'LAND accepted' or why LAND failed, once the vehicle was heard again"""
        self._t0_ns = time.monotonic_ns()

    # ----------------------------------------------------------------------------------- schema

    @property
    def command_schema(self) -> Schema:
        return dict(CTBR_SCHEMA)

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    @property
    def mode(self) -> str:
        """The vehicle's flight mode from its last HEARTBEAT (e.g. OFFBOARD, HOLD, LAND, GUIDED_NOGPS)."""
        with self._lock:
            custom = self._custom_mode
        return frames.px4_mode_name(custom) if self.cfg.autopilot == "px4" else frames.arducopter_mode_name(custom)

    @property
    def armed(self) -> bool:
        """The vehicle's armed flag from its last HEARTBEAT."""
        _, m = _mavlink()
        with self._lock:
            return bool(self._base_mode & m.MAV_MODE_FLAG_SAFETY_ARMED)

    @property
    def last_setpoint_tx_ns(self) -> int:
        """monotonic time the last SET_ATTITUDE_TARGET left [ns] (0: none yet)"""
        return self._last_setpoint_tx_ns

    # -------------------------------------------------------------------------------- lifecycle

    def _open(self):
        mavutil, m = _mavlink()
        kind, rest = self.cfg.connection.split(":", 1)
        if kind == "serial":
            device, baud = rest.rsplit(":", 1)
            conn = mavutil.mavlink_connection(device, baud=int(baud), source_system=self.cfg.system_id,
                                              source_component=self.cfg.component_id)
        else:
            conn = mavutil.mavlink_connection(self.cfg.connection, source_system=self.cfg.system_id,
                                              source_component=self.cfg.component_id)
        # Our own MAVLink 2 codec on pymavlink's transport: mavutil picks 1.0 or 2.0 from a process-wide
        # environment variable, which an adapter must not set for everyone.
        mav = m.MAVLink(conn, srcSystem=self.cfg.system_id, srcComponent=self.cfg.component_id)
        mav.robust_parsing = True
        return conn, mav

    def connect(self) -> None:
        if self.is_connected:
            raise RobotAlreadyConnectedError(f"{self.name} is already connected")
        self._reset_link_state()
        try:
            self._conn, self._mav = self._open()
        except ImportError as e:  # mavutil imports pyserial only for a serial port
            raise RobotError(f"{self.name}: {self.cfg.connection} needs pyserial ({e}): pip install pyserial") from e
        except (OSError, ValueError) as e:
            raise RobotError(f"{self.name}: cannot open {self.cfg.connection}: {e}") from e
        self._stop.clear()
        # our heartbeat first: over udpout (or to a vehicle that waits for a peer) it is what opens the link
        self._threads = [threading.Thread(target=loop, name=name, daemon=True) for loop, name in (
            (self._receive_loop, "mavlink-rx"), (self._heartbeat_loop, "mavlink-heartbeat"),
            (self._setpoint_loop, "mavlink-setpoints"))]
        for t in self._threads:
            t.start()
        try:
            self._await_vehicle()
            self._request_streams()
            if self.cfg.autopilot == "ardupilot":
                self._check_guided_params()
            self._await(lambda: self._att is not None and self._pos is not None, self.cfg.connect_timeout_s,
                        "no ATTITUDE_QUATERNION and LOCAL_POSITION_NED (does the vehicle have a local position "
                        "estimate?)")
        except BaseException:
            self._close()
            raise

    def _await_vehicle(self) -> None:
        _, m = _mavlink()
        self._await(lambda: self._target is not None, self.cfg.connect_timeout_s,
                    f"no autopilot HEARTBEAT on {self.cfg.connection} (is the vehicle powered and sending "
                    "there, and is the connection string right?)")
        want = m.MAV_AUTOPILOT_PX4 if self.cfg.autopilot == "px4" else m.MAV_AUTOPILOT_ARDUPILOTMEGA
        if self._heard_autopilot != want:
            heard = m.enums["MAV_AUTOPILOT"][self._heard_autopilot].name \
                if self._heard_autopilot in m.enums["MAV_AUTOPILOT"] else str(self._heard_autopilot)
            other = {m.MAV_AUTOPILOT_PX4: "px4", m.MAV_AUTOPILOT_ARDUPILOTMEGA: "ardupilot"}.get(self._heard_autopilot)
            fix = f"use the {other!r} adapter" if other else "this adapter flies PX4 and ArduPilot only"
            raise RobotError(f"{self.name}: the vehicle on {self.cfg.connection} is {heard}, not "
                             f"{self.cfg.autopilot}: {fix}")

    def _close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        self._threads = []
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def disconnect(self) -> None:
        """Land an armed vehicle that can still hear us (LAND mode: it lands and disarms itself; stopping
        the motors of a flying multirotor drops it), then close the link."""
        if not self.is_connected:
            return
        error = None
        try:
            if self.armed and self.link_lost_at_ns is None:
                self.land()
        except RobotError as e:
            error = e
        finally:
            self._close()
        if error is not None:
            raise error

    # ------------------------------------------------------------------------------- receiving

    def _receive_loop(self) -> None:
        fd = self._conn.fd
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], self._watchdog_timeout_s())
            except (OSError, ValueError):  # closed under us by disconnect()
                return
            if ready:
                self._drain()
            self._watch_link(time.monotonic_ns())

    def _drain(self) -> None:
        while True:
            try:
                data = self._conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic_ns()
            for msg in self._mav.parse_buffer(bytes(data) if isinstance(data, (bytes, bytearray)) else data) or ():
                self._handle(msg, now)

    def _handle(self, msg, now_ns: int) -> None:
        _, m = _mavlink()
        kind = msg.get_type()
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        with self._lock:
            if kind == "HEARTBEAT" and self._target is None:
                if msg.autopilot == m.MAV_AUTOPILOT_INVALID or msg.type in (m.MAV_TYPE_GCS, m.MAV_TYPE_ONBOARD_CONTROLLER):
                    return
                if self.cfg.vehicle_system_id not in (0, src[0]):
                    return
                self._target, self._heard_autopilot = src, msg.autopilot
                self._lock.notify_all()
            if src != self._target:
                return
            was_lost = self.link_lost_at_ns is not None
            if kind == "HEARTBEAT":
                self._base_mode, self._custom_mode, self._last_heartbeat_ns = msg.base_mode, msg.custom_mode, now_ns
            elif kind == "ATTITUDE_QUATERNION":
                q = frames.quat_enu_flu_from_ned_frd((msg.q1, msg.q2, msg.q3, msg.q4))
                rates = frames.flu_from_frd((msg.rollspeed, msg.pitchspeed, msg.yawspeed))
                self._att = (msg.time_boot_ms * 1e-3, q, rates)
                self._state_received(now_ns)
            elif kind == "LOCAL_POSITION_NED":
                self._pos = (frames.enu_from_ned((msg.x, msg.y, msg.z)), frames.enu_from_ned((msg.vx, msg.vy, msg.vz)))
                self._state_received(now_ns)
            elif kind == "SYS_STATUS":
                self._battery_v = None if msg.voltage_battery == _UNKNOWN_VOLTAGE_MV else msg.voltage_battery * 1e-3
            elif kind == "COMMAND_ACK":
                self._acks[msg.command] = (msg.result, now_ns)
            elif kind == "PARAM_VALUE":
                self._params[msg.param_id] = (msg.param_value, now_ns)
            elif kind == "STATUSTEXT":
                self._statustext = (self._statustext + [(now_ns, msg.text)])[-8:]
            self._lock.notify_all()
        if was_lost and self.cfg.land_on_link_return and self.land_on_return_result is None:
            self.land_on_return_result = "pending"
            threading.Thread(target=self._land_on_return, name="mavlink-land-on-return", daemon=True).start()

    def _state_received(self, now_ns: int) -> None:
        self._last_state_ns = now_ns
        if self._att is not None and self._pos is not None:
            self._state_seq += 1
            self._state_rx_ns = now_ns

    def _watchdog_timeout_s(self) -> float:
        """Until the state would go stale (the receiver wakes then, not on a poll), within [1, 50] ms."""
        c = self.cfg
        with self._lock:
            last = self._last_state_ns
        if last == 0 or self.link_lost_at_ns is not None:
            return 0.05
        left = (last - time.monotonic_ns()) * 1e-9 + c.link_loss_deadline_s - c.watchdog_margin_s
        return min(max(left, 0.001), 0.05)

    def _watch_link(self, now_ns: int) -> None:
        with self._lock:
            if self.link_lost_at_ns is not None or self._target is None or self._last_state_ns == 0:
                return
            reason = self._staleness(now_ns)
            if reason:
                self._declare_lost(now_ns, reason)

    def _staleness(self, now_ns: int) -> str:
        """Why the link counts as lost now ('' while it is up). Declared watchdog_margin_s early, so that
        a watchdog running late still stops the stream within the deadline."""
        c = self.cfg
        state_age = (now_ns - self._last_state_ns) * 1e-9
        if state_age > c.link_loss_deadline_s - c.watchdog_margin_s:
            return f"no vehicle state for {state_age:.3f} s (link_loss_deadline_s {c.link_loss_deadline_s:g})"
        hb_age = (now_ns - self._last_heartbeat_ns) * 1e-9
        if hb_age > c.heartbeat_timeout_s:
            return f"no vehicle HEARTBEAT for {hb_age:.2f} s (heartbeat_timeout_s {c.heartbeat_timeout_s:g})"
        return ""

    def _declare_lost(self, now_ns: int, reason: str) -> None:
        self._streaming = False  # the vehicle's failsafe (PX4 COM_OF_LOSS_T, ArduPilot GUID_TIMEOUT) takes over
        self.link_lost_at_ns, self.link_loss_reason = now_ns, reason
        self._lock.notify_all()

    def _land_on_return(self) -> None:
        try:
            self._set_mode("LAND")
            self.land_on_return_result = "LAND accepted"
        except RobotError as e:
            self.land_on_return_result = str(e)

    def _await(self, ready, timeout_s: float, what: str) -> None:
        with self._lock:
            if not self._lock.wait_for(ready, timeout_s):
                raise RobotError(f"{self.name}: {what} within {timeout_s:g} s")

    # --------------------------------------------------------------------------------- sending

    def _send_msg(self, msg) -> int:
        with self._tx_lock:
            self._mav.send(msg)
            return time.monotonic_ns()

    def _time_boot_ms(self) -> int:
        return int((time.monotonic_ns() - self._t0_ns) // 1_000_000) & 0xFFFFFFFF

    def _transmit_setpoint(self, cmd: CtbrCommand) -> None:
        _, m = _mavlink()
        rates_frd = frames.flu_from_frd(cmd.body_rates_b)
        target = self._target
        msg = m.MAVLink_set_attitude_target_message(
            self._time_boot_ms(), target[0], target[1], m.ATTITUDE_TARGET_TYPEMASK_ATTITUDE_IGNORE,
            [1.0, 0.0, 0.0, 0.0], float(rates_frd[0]), float(rates_frd[1]), float(rates_frd[2]),
            frames.normalized_thrust(cmd.thrust_n, self.cfg.max_thrust_n))
        self._last_setpoint_tx_ns = self._send_msg(msg)

    def _setpoint_loop(self) -> None:
        # wakes when the stream is due, not on a poll: every extra wake-up competes with the control thread
        period_ns = int(1e9 / self.cfg.setpoint_rate_hz)
        wait_s = period_ns * 1e-9
        while not self._stop.wait(wait_s):
            with self._lock:
                now = time.monotonic_ns()
                left_ns = self._last_setpoint_tx_ns + period_ns - now
                due, cmd = self._streaming and left_ns <= 0, self._latest
                if due and self._last_state_ns and self._staleness(now):  # never stream on past the deadline
                    self._declare_lost(now, self._staleness(now))
                    due = False
            if due:
                self._transmit_setpoint(cmd)
                left_ns = period_ns
            wait_s = max(left_ns, 1_000_000) * 1e-9

    def _heartbeat_loop(self) -> None:
        _, m = _mavlink()
        msg = m.MAVLink_heartbeat_message(m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID, 0, 0,
                                          m.MAV_STATE_ACTIVE, 3)
        while True:
            self._send_msg(msg)
            if self._stop.wait(1.0 / self.cfg.heartbeat_rate_hz):
                return

    def _start_stream(self) -> None:
        with self._lock:
            if self._streaming:
                return
            self._streaming, self._stream_since_ns, cmd = True, time.monotonic_ns(), self._latest
        self._transmit_setpoint(cmd)

    def _stop_stream(self) -> None:
        with self._lock:
            self._streaming = False

    # -------------------------------------------------------------------------------- commands

    def _command(self, command: int, params=(0, 0, 0, 0, 0, 0, 0), what: str = "") -> None:
        """COMMAND_LONG with retries; returns on MAV_RESULT_ACCEPTED, raises RobotError otherwise."""
        _, m = _mavlink()
        name = m.enums["MAV_CMD"][command].name if command in m.enums["MAV_CMD"] else str(command)
        what = what or name
        target, first_sent_ns = self._target, time.monotonic_ns()
        for confirmation in range(self.cfg.command_retries):
            # stamped before the write: the receiver thread can parse the ACK before this thread is scheduled
            # again after sendto (a quick vehicle on a quiet machine), so a stamp taken after the write would
            # call that ACK stale and miss it on every try
            sent_ns = time.monotonic_ns()
            self._send_msg(m.MAVLink_command_long_message(
                target[0], target[1], command, confirmation, *[float(p) for p in params]))
            deadline = time.monotonic() + self.cfg.command_timeout_s
            with self._lock:
                while True:
                    ack = self._acks.get(command)
                    if ack is not None and ack[1] >= sent_ns:
                        if ack[0] != m.MAV_RESULT_IN_PROGRESS:
                            break
                        deadline = time.monotonic() + self.cfg.command_timeout_s  # still working on it
                    left = deadline - time.monotonic()
                    if left <= 0:
                        ack = None
                        break
                    self._lock.wait(left)
                said = [text for t, text in self._statustext if t >= first_sent_ns]
            if ack is None:
                continue
            if ack[0] == m.MAV_RESULT_ACCEPTED:
                return
            result = m.enums["MAV_RESULT"][ack[0]].name if ack[0] in m.enums["MAV_RESULT"] else str(ack[0])
            because = f" ('{said[-1]}')" if said else ""
            raise RobotError(f"{self.name}: {what} refused: the vehicle answered {result} to {name}{because}")
        raise RobotError(f"{self.name}: {what}: no COMMAND_ACK to {name} after {self.cfg.command_retries} tries of "
                         f"{self.cfg.command_timeout_s:g} s; is the link up?")

    def _set_mode(self, mode: str) -> None:
        _, m = _mavlink()
        if self.cfg.autopilot == "px4":
            main, sub = frames.PX4_MODES[mode]
            params = (m.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, main, sub, 0, 0, 0, 0)
        else:
            params = (m.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, frames.ARDUCOPTER_MODES[mode], 0, 0, 0, 0, 0)
        self._command(m.MAV_CMD_DO_SET_MODE, params, f"switch to {mode}")

    def set_mode(self, mode: str) -> None:
        """Ask the vehicle for flight mode ``mode`` (PX4: a key of mavlink_frames.PX4_MODES, ArduPilot: of
        ARDUCOPTER_MODES); raises RobotError naming the COMMAND_ACK result when refused."""
        self._require_connected("set_mode")
        modes = frames.PX4_MODES if self.cfg.autopilot == "px4" else frames.ARDUCOPTER_MODES
        if mode not in modes:
            raise ValueError(f"{self.name}: unknown mode {mode!r}; known: {sorted(modes)}")
        self._set_mode(mode)

    def _request_streams(self) -> None:
        _, m = _mavlink()
        for msg_id, rate in ((m.MAVLINK_MSG_ID_ATTITUDE_QUATERNION, self.cfg.state_rate_hz),
                             (m.MAVLINK_MSG_ID_LOCAL_POSITION_NED, self.cfg.state_rate_hz),
                             (m.MAVLINK_MSG_ID_SYS_STATUS, self.cfg.status_rate_hz)):
            self._command(m.MAV_CMD_SET_MESSAGE_INTERVAL, (msg_id, 1e6 / rate, 0, 0, 0, 0, 0),
                          f"stream message {msg_id} at {rate:g} Hz")

    def _param(self, name: str, set_to: float | None = None, param_type: int = 0) -> float:
        """Read (or set and confirm) one vehicle parameter by PARAM_REQUEST_READ / PARAM_SET -> PARAM_VALUE."""
        _, m = _mavlink()
        target = self._target
        for _ in range(self.cfg.command_retries):
            sent_ns = time.monotonic_ns()  # before the write, as in _command: the answer may be parsed before it returns
            self._send_msg(
                m.MAVLink_param_request_read_message(target[0], target[1], name.encode(), -1) if set_to is None else
                m.MAVLink_param_set_message(target[0], target[1], name.encode(), float(set_to), param_type))
            with self._lock:
                if self._lock.wait_for(lambda: self._params.get(name, (0, -1))[1] >= sent_ns, self.cfg.command_timeout_s):
                    return float(self._params[name][0])
        raise RobotError(f"{self.name}: no PARAM_VALUE for {name} after {self.cfg.command_retries} tries; "
                         "is this an ArduCopter with GUIDED_NOGPS?")

    def _check_guided_params(self) -> None:
        """GUID_OPTIONS bit 3 (thrust as thrust) and GUID_TIMEOUT <= guided_timeout_s, set or refused."""
        _, m = _mavlink()
        cfg = self.cfg
        options = int(self._param("GUID_OPTIONS"))
        timeout = self._param("GUID_TIMEOUT")
        wrong = []
        if not options & GUID_OPTIONS_THRUST_AS_THRUST:
            wrong.append((f"GUID_OPTIONS {options} lacks bit 3 (thrust as thrust: without it the thrust is read "
                          "as a climb rate)", "GUID_OPTIONS", options | GUID_OPTIONS_THRUST_AS_THRUST,
                          m.MAV_PARAM_TYPE_INT32))
        if not timeout <= cfg.guided_timeout_s + 1e-6:
            wrong.append((f"GUID_TIMEOUT {timeout:g} s exceeds guided_timeout_s {cfg.guided_timeout_s:g}",
                          "GUID_TIMEOUT", cfg.guided_timeout_s, m.MAV_PARAM_TYPE_REAL32))
        if wrong and not cfg.write_params:
            raise RobotError(f"{self.name}: {'; '.join(w[0] for w in wrong)}: set them on the vehicle, or "
                             "write_params true")
        for why, name, value, ptype in wrong:
            got = self._param(name, value, ptype)
            if abs(got - value) > 1e-6:
                raise RobotError(f"{self.name}: {name} set to {value:g} but the vehicle kept {got:g} ({why})")

    # --------------------------------------------------------------------------------- robot api

    def _check_link(self, what: str) -> None:
        self._require_connected(what)
        now = time.monotonic_ns()
        with self._lock:
            if self.link_lost_at_ns is None:
                reason = self._staleness(now)
                if reason:
                    self._declare_lost(now, reason)
            if self.link_lost_at_ns is not None:
                raise RobotLinkLost(f"{self.name}: link lost ({self.link_loss_reason}); setpoints stopped, the "
                                    "vehicle's failsafe has it; reconnect to fly again")

    def read(self) -> RobotState:
        self._check_link("read")
        with self._lock:
            stamp_s, quat, rates = self._att
            pos, vel = self._pos
        return RobotState(stamp_s=stamp_s, pos_w=pos, quat_wxyz=quat, lin_vel_w=vel, ang_vel_b=rates)

    def wait_state(self, after_seq: int, timeout_s: float) -> tuple[int, int]:
        """Block until a state newer than ``after_seq`` arrived; returns (its sequence number, the monotonic
        time its message was received [ns]). RobotError on timeout (the watchdog raises loss in read())."""
        c, end_ns = self.cfg, time.monotonic_ns() + int(timeout_s * 1e9)
        with self._lock:
            while self._state_seq <= after_seq and self.link_lost_at_ns is None:
                now = time.monotonic_ns()
                if self._last_state_ns and self._staleness(now):  # the caller's thread may be the first to see it
                    self._declare_lost(now, self._staleness(now))
                    break
                if now >= end_ns:
                    raise RobotError(f"{self.name}: no new state within {timeout_s:g} s")
                stale_at = self._last_state_ns + int((c.link_loss_deadline_s - c.watchdog_margin_s) * 1e9)
                self._lock.wait(max(min(end_ns, stale_at) - now, 100_000) * 1e-9)
            return self._state_seq, self._state_rx_ns

    def _clip(self, cmd: Command) -> CtbrCommand:
        if isinstance(cmd, RotorCommand):
            raise RobotError(f"{self.name}: rotor-level commands are not streamed over MAVLink (PX4 v1.14+ has no "
                             "SET_ACTUATOR_CONTROL_TARGET input, ArduPilot never had one): deploy a ctbr policy, or "
                             "run the rotor policy onboard (C export)")
        if not isinstance(cmd, CtbrCommand):
            raise TypeError(f"{self.name}: send() takes a CtbrCommand, got {type(cmd).__name__}")
        return CtbrCommand(float(np.clip(cmd.thrust_n, 0.0, self.cfg.max_thrust_n)),
                           np.clip(cmd.body_rates_b, -self._rate_limits, self._rate_limits))

    def send(self, cmd: Command) -> Command:
        """Send a collective thrust and body rates setpoint now and keep streaming it; returns it clipped to
        [0, max_thrust_n] N and +- body_rate_limits_rad_s. ValueError on NaN (the previous setpoint stays),
        RobotLinkLost once the link is lost, RobotError after land() or safe_stop() until arm()."""
        self._require_connected("send")
        check_finite_command(cmd)
        sent = self._clip(cmd)
        self._check_link("send")
        with self._lock:
            if self._stopped_reason is not None:
                raise RobotError(f"{self.name}: send() after {self._stopped_reason}; arm() to fly again")
            self._latest = sent
            if not self._streaming:
                self._streaming, self._stream_since_ns = True, time.monotonic_ns()
        self._transmit_setpoint(sent)
        return sent

    def arm(self) -> None:
        """PX4: stream the latest setpoint (zero thrust until send()) for pre_offboard_stream_s, switch to
        OFFBOARD, arm. ArduPilot: switch to GUIDED_NOGPS, stream, arm. Each step's COMMAND_ACK is checked."""
        self._check_link("arm")
        _, m = _mavlink()
        with self._lock:
            self._stopped_reason = None
        self._start_stream()
        if self.cfg.autopilot == "ardupilot":
            self._set_mode("GUIDED_NOGPS")
        left = self.cfg.pre_offboard_stream_s - (time.monotonic_ns() - self._stream_since_ns) * 1e-9
        if left > 0:
            time.sleep(left)
        self._check_link("arm")
        if self.cfg.autopilot == "px4":
            self._set_mode("OFFBOARD")
        self._command(m.MAV_CMD_COMPONENT_ARM_DISARM, (1, 0, 0, 0, 0, 0, 0), "arm")

    def disarm(self) -> None:
        """Disarm (refused by the vehicle in flight: use safe_stop() for a forced stop)."""
        self._require_connected("disarm")
        _, m = _mavlink()
        self._command(m.MAV_CMD_COMPONENT_ARM_DISARM, (0, 0, 0, 0, 0, 0, 0), "disarm")
        self._stop_flight("disarm()")

    def land(self) -> None:
        """Switch the vehicle to LAND (it descends, and disarms once landed), then stop the setpoints."""
        self._require_connected("land")
        self._set_mode("LAND")
        self._stop_flight("land()")

    def safe_stop(self) -> None:
        """Motors off now: a forced disarm (safe_stop 'disarm') or flight termination ('terminate')."""
        self._require_connected("safe_stop")
        _, m = _mavlink()
        self._stop_flight("safe_stop()")
        if self.cfg.safe_stop == "terminate":
            self._command(m.MAV_CMD_DO_FLIGHTTERMINATION, (1, 0, 0, 0, 0, 0, 0), "flight termination")
        else:
            self._command(m.MAV_CMD_COMPONENT_ARM_DISARM, (0, FORCE_DISARM_MAGIC, 0, 0, 0, 0, 0), "forced disarm")

    def _stop_flight(self, why: str) -> None:
        with self._lock:
            self._streaming, self._stopped_reason = False, why

    def battery_v(self) -> float | None:
        with self._lock:
            return self._battery_v
