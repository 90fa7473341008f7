"""A PX4-style (or ArduCopter-style) vehicle speaking real MAVLink 2 over UDP, flown by Tether's pybullet
twin in real time: what the MAVLink adapter (hardware.mavlink) connects to in CI.

The vehicle is hardware.twin.DigitalTwin with the px4_1kg preset (sim.quadrotor.presets): in OFFBOARD
(PX4) or GUIDED_NOGPS (ArduPilot) the received SET_ATTITUDE_TARGET body rates and normalized thrust drive
the twin's rate loop; in its own modes (Hold, Land, ArduPilot's guided timeout) a small position
controller (position_hold_ctbr) flies it, as the autopilot's would. The rules modelled, with where they
come from:
  PX4  HEARTBEAT.custom_mode = main << 16 | sub << 24; OFFBOARD is accepted only after a setpoint stream
       above 2 Hz has run offboard_min_stream_s (PX4 user guide: "stream setpoints for about a second
       before switching"; commander answers TEMPORARILY_REJECTED to a mode it cannot enter); arming in
       OFFBOARD needs the stream; disarming in flight needs param2 21196; when the stream stops for
       COM_OF_LOSS_T (offboard_loss_timeout_s) the vehicle falls back to Hold and, failsafe_action_delay_s
       (COM_FAIL_ACT_T) later, lands (COM_OBL_RC_ACT Land); LAND lands and disarms on touch-down.
  APM  HEARTBEAT autopilot ARDUPILOTMEGA, custom_mode the ArduCopter mode number; SET_ATTITUDE_TARGET acts
       only in GUIDED_NOGPS; its thrust is thrust with GUID_OPTIONS bit 3, else a climb rate; GUID_TIMEOUT
       after the last setpoint the vehicle levels and holds its climb rate at zero.
Both answer MAV_CMD_SET_MESSAGE_INTERVAL for ATTITUDE_QUATERNION, LOCAL_POSITION_NED and SYS_STATUS, and
PARAM_REQUEST_READ / PARAM_SET for their few parameters. ``silent`` stops everything it sends (the
socket stays open: the loss a radio link shows) while it keeps listening.

Run beside a test (MavlinkStandin(cfg).start()) or as a process (SIGUSR1 toggles ``silent`` and prints
the monotonic time of the last packet sent before):
    python -m sim.standins.mavlink_vehicle --connection udpout:127.0.0.1:14540 [--flavour ardupilot]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import select
import signal
import threading
import time

import numpy as np

from hardware import mavlink_frames as frames
from hardware.robot import CtbrCommand, RobotState, RotorCommand
from hardware.twin import DigitalTwin, TwinConfig
from sim.quadrotor.presets import GRAVITY, PRESETS
from tether.observation import quat_wxyz_to_rotmat

FLAVOURS = ("px4", "ardupilot")


@dataclasses.dataclass(frozen=True)
class PositionHoldCfg:
    """A cascaded position -> attitude -> body-rate controller for a multirotor with a CTBR inner loop."""

    kp_pos: tuple[float, float, float] = (1.5, 1.5, 4.0)
    """position error gain along world x, y, z [1/s^2]"""
    kd_vel: tuple[float, float, float] = (2.0, 2.0, 3.0)
    """velocity error gain along world x, y, z [1/s]"""
    k_att: float = 6.0
    """tilt error -> body rate gain [1/s]"""
    k_yaw: float = 2.0
    """yaw error -> yaw rate gain [1/s]"""
    max_tilt_rad: float = 0.5
    """largest tilt the controller asks for [rad]"""


def position_hold_ctbr(state: RobotState, goal_w, mass_kg: float, cfg: PositionHoldCfg = PositionHoldCfg(),
                       vel_z_w: float | None = None, hold_xy: bool = True) -> tuple[float, np.ndarray]:
    """(collective thrust [N], body rates FLU [3] rad/s) flying ``state`` to goal_w [3] m (ENU), yaw to 0.

    vel_z_w [m/s]: track this vertical velocity instead of the goal's height (landing, climb-rate hold);
    hold_xy False: no horizontal correction (level attitude, the vehicle drifts)."""
    rot = quat_wxyz_to_rotmat(np.asarray(state.quat_wxyz)[None])[0]
    acc = np.asarray(cfg.kp_pos) * (np.asarray(goal_w, dtype=np.float64) - state.pos_w) \
        - np.asarray(cfg.kd_vel) * state.lin_vel_w
    if vel_z_w is not None:
        acc[2] = cfg.kd_vel[2] * (vel_z_w - state.lin_vel_w[2])
    if not hold_xy:
        acc[:2] = 0.0
    acc[2] = max(acc[2] + GRAVITY, 0.2 * GRAVITY)
    horizontal = np.linalg.norm(acc[:2])
    max_horizontal = math.tan(cfg.max_tilt_rad) * acc[2]
    if horizontal > max_horizontal:
        acc[:2] *= max_horizontal / horizontal
    z_b = rot[:, 2]
    thrust = max(mass_kg * float(acc @ z_b), 0.0)
    tilt_err_b = rot.T @ np.cross(z_b, acc / np.linalg.norm(acc))
    rates = cfg.k_att * tilt_err_b
    rates[2] = -cfg.k_yaw * math.atan2(rot[1, 0], rot[0, 0])
    return thrust, rates


@dataclasses.dataclass(frozen=True)
class StandinCfg:
    # link
    connection: str = "udpout:127.0.0.1:14540"
    """where the companion listens (udpout:HOST:PORT, as PX4 SITL sends to the offboard port 14540)"""
    flavour: str = "px4"
    """autopilot to behave like: px4 or ardupilot"""
    system_id: int = 1
    """the vehicle's MAVLink system id"""
    component_id: int = 1
    """the autopilot's component id (MAV_COMP_ID_AUTOPILOT1)"""
    heartbeat_rate_hz: float = 1.0
    """HEARTBEAT rate [Hz]"""
    # vehicle
    preset: str = "px4_1kg"
    """sim.quadrotor.presets preset the twin flies"""
    rate_hz: float = 100.0
    """physics periods per second, run in real time [Hz]"""
    battery_v: float = 16.2
    """voltage SYS_STATUS reports [V]"""
    # PX4 rules
    offboard_min_stream_s: float = 1.0
    """setpoints must have streamed this long (no gap > 1 / min_stream_rate_hz) before OFFBOARD [s]"""
    min_stream_rate_hz: float = 2.0
    """slowest setpoint stream that counts as one [Hz]"""
    offboard_loss_timeout_s: float = 1.0
    """COM_OF_LOSS_T: no setpoint this long in OFFBOARD -> Hold [s]"""
    failsafe_action_delay_s: float = 5.0
    """COM_FAIL_ACT_T: Hold this long after an offboard loss, then Land [s]"""
    land_speed_m_s: float = 0.7
    """MPC_LAND_SPEED: descent speed in LAND [m/s]"""
    # ArduPilot rules
    guid_options: int = 8
    """GUID_OPTIONS at boot (bit 3: SET_ATTITUDE_TARGET thrust is thrust)"""
    guid_timeout_s: float = 3.0
    """GUID_TIMEOUT at boot: no setpoint this long in GUIDED_NOGPS -> level, climb rate 0 [s]"""
    climb_rate_max_m_s: float = 2.5
    """WPNAV_SPEED_UP / _DN: the climb rate of thrust 1 / 0 when thrust is a climb rate [m/s]"""

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {self.flavour!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if not self.connection.startswith(("udpout:", "udpin:")):
            raise ValueError(f"connection {self.connection!r} must be udpout:HOST:PORT or udpin:HOST:PORT")


@dataclasses.dataclass
class _Setpoint:
    thrust: float = 0.0
    rates_flu: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    rx_s: float = -math.inf
    stream_since_s: float = math.inf


class MavlinkStandin:
    """The vehicle (see the module doc). start() runs it in a thread; stop() ends it."""

    def __init__(self, cfg: StandinCfg = StandinCfg()):
        from pymavlink import mavutil
        from pymavlink.dialects.v20 import ardupilotmega as m

        self.cfg, self._m = cfg, m
        self.preset = PRESETS[cfg.preset]
        self._conn = mavutil.mavlink_connection(cfg.connection, source_system=cfg.system_id,
                                                source_component=cfg.component_id)
        self._mav = m.MAVLink(self._conn, srcSystem=cfg.system_id, srcComponent=cfg.component_id)
        self._mav.robust_parsing = True
        self.twin = DigitalTwin(TwinConfig(preset=cfg.preset, init_pos_w=(0.0, 0.0, 0.0), ground_z_m=0.0,
                                           rate_hz=cfg.rate_hz))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self.armed = False
        self.mode = "HOLD" if cfg.flavour == "px4" else "STABILIZE"
        self.silent = False
        """True: send nothing (the socket stays open), keep listening"""
        self.last_tx_ns = 0
        """monotonic time of the last packet sent [ns]"""
        self.setpoints_received = 0
        self._sp = _Setpoint()
        self._intervals: dict[int, float] = {}
        self._next_due: dict[int, float] = {}
        self._hold_target = np.zeros(3)
        self._failsafe_since: float | None = None
        self._landed_since: float | None = None
        self._guided_timed_out = False
        self._guided_since = -math.inf
        self.companion_heartbeats: list[int] = []
        """MAV_TYPE of each HEARTBEAT heard from the companion, in order"""
        self._events: list[tuple[float, str]] = []
        self.params = {"GUID_OPTIONS": float(cfg.guid_options), "GUID_TIMEOUT": float(cfg.guid_timeout_s),
                       "COM_OF_LOSS_T": float(cfg.offboard_loss_timeout_s)}

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> "MavlinkStandin":
        self.twin.connect()
        self._thread = threading.Thread(target=self.run, name="mavlink-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.twin.disconnect()
        self._conn.close()

    def __enter__(self) -> "MavlinkStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def events(self) -> list[tuple[float, str]]:
        """(monotonic time [s], what happened) in order: 'mode HOLD', 'armed', 'disarmed', 'failsafe ...'"""
        with self._lock:
            return list(self._events)

    def true_state(self) -> RobotState:
        with self._lock:
            return self.twin.true_state()

    def _now(self) -> float:
        return time.monotonic()

    def _event(self, what: str) -> None:
        self._events.append((self._now(), what))

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._event(f"mode {mode}")
        self._hold_target = self.twin.true_state().pos_w.copy()
        self._failsafe_since, self._landed_since, self._guided_timed_out = None, None, False
        self._guided_since = self._now()  # ArduCopter's guided timeout counts from the mode's start too

    def _set_armed(self, armed: bool, why: str = "") -> None:
        if armed != self.armed:
            self.armed = armed
            self._event(("armed" if armed else "disarmed") + (f" ({why})" if why else ""))

    # ------------------------------------------------------------------------------------ loop

    def run(self) -> None:
        dt, next_step = 1.0 / self.cfg.rate_hz, self._now()
        next_heartbeat = next_step
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._conn.fd], [], [], max(0.0, next_step - self._now()))
            except (OSError, ValueError):
                return
            if ready:
                self._drain()
            now = self._now()
            if now < next_step:
                continue
            with self._lock:
                for _ in range(5):  # catch up after a stall, at most 5 periods at once
                    self._control(now)
                    self.twin.advance()
                    next_step += dt
                    if next_step > now:
                        break
                next_step = max(next_step, now)
                self._send_streams(now)
                if now >= next_heartbeat:
                    self._send_heartbeat()
                    next_heartbeat = now + 1.0 / self.cfg.heartbeat_rate_hz

    def _drain(self) -> None:
        while True:
            data = self._conn.recv(4096)
            if not data:
                return
            for msg in self._mav.parse_buffer(data) or ():
                with self._lock:
                    self._handle(msg)

    def _send(self, msg) -> None:
        if self.silent:
            return
        self._mav.send(msg)
        self.last_tx_ns = time.monotonic_ns()

    def go_silent(self, silent: bool = True) -> int:
        """Stop (or resume) sending; returns the monotonic time of the last packet sent before [ns]."""
        with self._lock:
            self.silent = silent
            return self.last_tx_ns

    # ---------------------------------------------------------------------------------- control

    def _offboard_signal(self, now: float) -> bool:
        return now - self._sp.rx_s < self.cfg.offboard_loss_timeout_s

    def _stream_established(self, now: float) -> bool:
        return (now - self._sp.rx_s < 1.0 / self.cfg.min_stream_rate_hz
                and now - self._sp.stream_since_s >= self.cfg.offboard_min_stream_s)

    def _on_ground(self, state: RobotState) -> bool:
        return state.pos_w[2] < 0.05 and abs(state.lin_vel_w[2]) < 0.2

    def _control(self, now: float) -> None:
        """The failsafes, then the command of this period."""
        state = self.twin.true_state()
        c, px4 = self.cfg, self.cfg.flavour == "px4"
        if self.armed and px4 and self.mode == "OFFBOARD" and not self._offboard_signal(now):
            self._set_mode("HOLD")
            self._failsafe_since = now
            self._event("failsafe offboard loss")
        if self._failsafe_since is not None and now - self._failsafe_since > c.failsafe_action_delay_s:
            self._set_mode("LAND")
        if self.armed and not px4 and self.mode == "GUIDED_NOGPS" and not self._guided_timed_out \
                and now - max(self._sp.rx_s, self._guided_since) > self.params["GUID_TIMEOUT"]:
            self._guided_timed_out = True
            self._event("failsafe guided timeout")
        if self.mode == "LAND" and self.armed and self._on_ground(state):
            self._landed_since = self._landed_since if self._landed_since is not None else now
            if now - self._landed_since > 0.5:
                self._set_armed(False, "landed")
        if not self.armed:
            self.twin.send(RotorCommand(np.zeros(self.twin.n_rotors)))
            return
        mass = self.preset.mass_kg
        if (px4 and self.mode == "OFFBOARD") or (not px4 and self.mode == "GUIDED_NOGPS" and not self._guided_timed_out):
            thrust = frames.thrust_newtons(self._sp.thrust, self.preset.max_thrust_n)
            if not px4 and not int(self.params["GUID_OPTIONS"]) & 8:  # thrust is a climb rate
                climb = (self._sp.thrust - 0.5) * 2.0 * c.climb_rate_max_m_s
                thrust, _ = position_hold_ctbr(state, state.pos_w, mass, vel_z_w=climb, hold_xy=False)
            self.twin.send(CtbrCommand(thrust, self._sp.rates_flu))
        elif self.mode == "LAND":
            goal = np.array([self._hold_target[0], self._hold_target[1], 0.0])
            self.twin.send(CtbrCommand(*position_hold_ctbr(state, goal, mass, vel_z_w=-c.land_speed_m_s)))
        elif px4 and self.mode == "HOLD":
            self.twin.send(CtbrCommand(*position_hold_ctbr(state, self._hold_target, mass)))
        else:  # guided timeout, and modes that fly by stick: level, climb rate 0
            self.twin.send(CtbrCommand(*position_hold_ctbr(state, state.pos_w, mass, vel_z_w=0.0, hold_xy=False)))

    # -------------------------------------------------------------------------------- receiving

    def _ack(self, command: int, result: int, text: str = "") -> None:
        m = self._m
        if text:
            self._send(m.MAVLink_statustext_message(m.MAV_SEVERITY_WARNING, text.encode()[:50]))
        self._send(m.MAVLink_command_ack_message(command, result))

    def _handle(self, msg) -> None:
        m, kind = self._m, msg.get_type()
        if kind == "SET_ATTITUDE_TARGET":
            self._on_setpoint(msg)
        elif kind == "HEARTBEAT":
            self.companion_heartbeats.append(msg.type)
        elif kind == "COMMAND_LONG" and msg.target_system in (0, self.cfg.system_id):
            self._on_command(msg)
        elif kind in ("PARAM_REQUEST_READ", "PARAM_SET") and msg.target_system in (0, self.cfg.system_id):
            name = msg.param_id
            if name not in self.params:
                return  # autopilots stay silent about a parameter they do not have
            if kind == "PARAM_SET":
                self.params[name] = float(int(msg.param_value)) if name == "GUID_OPTIONS" else float(msg.param_value)
            ptype = m.MAV_PARAM_TYPE_INT32 if name == "GUID_OPTIONS" else m.MAV_PARAM_TYPE_REAL32
            self._send(m.MAVLink_param_value_message(name.encode(), self.params[name], ptype, len(self.params),
                                                     sorted(self.params).index(name)))

    def _on_setpoint(self, msg) -> None:
        m = self._m
        if msg.target_system != self.cfg.system_id:
            return
        needed = (m.ATTITUDE_TARGET_TYPEMASK_BODY_ROLL_RATE_IGNORE | m.ATTITUDE_TARGET_TYPEMASK_BODY_PITCH_RATE_IGNORE
                  | m.ATTITUDE_TARGET_TYPEMASK_BODY_YAW_RATE_IGNORE | m.ATTITUDE_TARGET_TYPEMASK_THROTTLE_IGNORE)
        if msg.type_mask & needed or not msg.type_mask & m.ATTITUDE_TARGET_TYPEMASK_ATTITUDE_IGNORE:
            return  # this stand-in flies body rates and thrust only
        if self.cfg.flavour == "ardupilot" and self.mode != "GUIDED_NOGPS":
            return  # ArduCopter: "exit if vehicle is not in Guided mode"
        now, sp = self._now(), self._sp
        if now - sp.rx_s > 1.0 / self.cfg.min_stream_rate_hz:
            sp.stream_since_s = now
        sp.thrust = float(np.clip(msg.thrust, 0.0, 1.0))
        sp.rates_flu = frames.flu_from_frd((msg.body_roll_rate, msg.body_pitch_rate, msg.body_yaw_rate))
        sp.rx_s = now
        self._guided_timed_out = False
        self.setpoints_received += 1

    def _on_command(self, msg) -> None:
        m, now, cmd = self._m, self._now(), msg.command
        px4 = self.cfg.flavour == "px4"
        if cmd == m.MAV_CMD_SET_MESSAGE_INTERVAL:
            msg_id, interval_us = int(msg.param1), msg.param2
            if msg_id not in (m.MAVLINK_MSG_ID_ATTITUDE_QUATERNION, m.MAVLINK_MSG_ID_LOCAL_POSITION_NED,
                              m.MAVLINK_MSG_ID_SYS_STATUS):
                return self._ack(cmd, m.MAV_RESULT_UNSUPPORTED)
            if interval_us <= 0:
                self._intervals.pop(msg_id, None)
            else:
                self._intervals[msg_id] = interval_us * 1e-6
                self._next_due[msg_id] = now
            return self._ack(cmd, m.MAV_RESULT_ACCEPTED)
        if cmd == m.MAV_CMD_DO_SET_MODE:
            mode = self._requested_mode(msg)
            if mode is None:
                return self._ack(cmd, m.MAV_RESULT_UNSUPPORTED)
            if px4 and mode == "OFFBOARD" and not self._stream_established(now):
                return self._ack(cmd, m.MAV_RESULT_TEMPORARILY_REJECTED,
                                 "Switching to Offboard is currently not available")
            self._set_mode(mode)
            return self._ack(cmd, m.MAV_RESULT_ACCEPTED)
        if cmd == m.MAV_CMD_COMPONENT_ARM_DISARM:
            if msg.param1 > 0.5:
                if px4 and self.mode == "OFFBOARD" and not self._offboard_signal(now):
                    return self._ack(cmd, m.MAV_RESULT_TEMPORARILY_REJECTED, "Arming denied: offboard signal lost")
                if self.mode == "LAND":
                    return self._ack(cmd, m.MAV_RESULT_FAILED, "Arm: Mode not armable")
                self._set_armed(True)
                self._hold_target = self.twin.true_state().pos_w.copy()
                return self._ack(cmd, m.MAV_RESULT_ACCEPTED)
            if self.armed and not self._on_ground(self.twin.true_state()) and round(msg.param2) != 21196:
                return self._ack(cmd, m.MAV_RESULT_DENIED, "Disarming denied: not landed")
            self._set_armed(False, "forced" if round(msg.param2) == 21196 else "")
            return self._ack(cmd, m.MAV_RESULT_ACCEPTED)
        if cmd == m.MAV_CMD_DO_FLIGHTTERMINATION:
            if msg.param1 > 0.5:
                self._set_armed(False, "flight termination")
                return self._ack(cmd, m.MAV_RESULT_ACCEPTED)
            return self._ack(cmd, m.MAV_RESULT_FAILED)
        self._ack(cmd, m.MAV_RESULT_UNSUPPORTED)

    def _requested_mode(self, msg) -> str | None:
        if self.cfg.flavour == "px4":
            main, sub = int(msg.param2), int(msg.param3)
            for name, (mm, ss) in frames.PX4_MODES.items():
                if mm == main and (ss == sub or mm != frames.PX4_MAIN_MODES["AUTO"]):
                    return name if name in ("OFFBOARD", "HOLD", "LAND", "POSCTL") else None
            return None
        number = int(msg.param2)
        name = frames.arducopter_mode_name(number)
        return name if name in ("GUIDED_NOGPS", "LAND", "STABILIZE", "ALT_HOLD") else None

    # ---------------------------------------------------------------------------------- sending

    def _custom_mode(self) -> int:
        if self.cfg.flavour == "px4":
            return frames.px4_custom_mode(self.mode)
        return frames.ARDUCOPTER_MODES[self.mode]

    def _send_heartbeat(self) -> None:
        m = self._m
        base = m.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (m.MAV_MODE_FLAG_SAFETY_ARMED if self.armed else 0)
        autopilot = m.MAV_AUTOPILOT_PX4 if self.cfg.flavour == "px4" else m.MAV_AUTOPILOT_ARDUPILOTMEGA
        self._send(m.MAVLink_heartbeat_message(m.MAV_TYPE_QUADROTOR, autopilot, base, self._custom_mode(),
                                               m.MAV_STATE_ACTIVE if self.armed else m.MAV_STATE_STANDBY, 3))

    def _send_streams(self, now: float) -> None:
        m = self._m
        boot_ms = int((now - self._t0) * 1e3) & 0xFFFFFFFF
        state = None
        for msg_id, interval in self._intervals.items():
            if now < self._next_due[msg_id]:
                continue
            self._next_due[msg_id] = max(self._next_due[msg_id] + interval, now - interval)
            state = state or self.twin.read()
            if msg_id == m.MAVLINK_MSG_ID_ATTITUDE_QUATERNION:
                q = frames.quat_ned_frd_from_enu_flu(state.quat_wxyz)
                w = frames.flu_from_frd(state.ang_vel_b)
                self._send(m.MAVLink_attitude_quaternion_message(boot_ms, *map(float, q), *map(float, w), [0, 0, 0, 0]))
            elif msg_id == m.MAVLINK_MSG_ID_LOCAL_POSITION_NED:
                p, v = frames.enu_from_ned(state.pos_w), frames.enu_from_ned(state.lin_vel_w)
                self._send(m.MAVLink_local_position_ned_message(boot_ms, *map(float, p), *map(float, v)))
            else:
                self._send(m.MAVLink_sys_status_message(0, 0, 0, 0, int(self.cfg.battery_v * 1e3), -1, -1,
                                                        0, 0, 0, 0, 0, 0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="A PX4- or ArduPilot-style MAVLink 2 vehicle on UDP, flown by "
                                            "Tether's pybullet twin in real time")
    p.add_argument("--connection", default=StandinCfg.connection, help="udpout:HOST:PORT of the companion")
    p.add_argument("--flavour", choices=FLAVOURS, default="px4")
    p.add_argument("--heartbeat-rate-hz", type=float, default=StandinCfg.heartbeat_rate_hz)
    args = p.parse_args(argv)
    standin = MavlinkStandin(StandinCfg(connection=args.connection, flavour=args.flavour,
                                        heartbeat_rate_hz=args.heartbeat_rate_hz))
    done, toggle = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: toggle.set())  # a link loss on demand (bench/bench_mavlink.py)
    standin.start()
    print(f"mavlink stand-in ({args.flavour}) sending to {args.connection}", flush=True)
    while not done.wait(0.01):
        if toggle.is_set():
            toggle.clear()
            last_tx_ns = standin.go_silent(not standin.silent)
            # the monotonic clock is system-wide: the other process compares it with its own
            print(f"silent {int(standin.silent)} last_tx_ns {last_tx_ns}", flush=True)
    standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
