"""A Crazyflie over UDP for CI: the CRTP protocol of the firmware, driven by Tether's pybullet twin.

cflib's UDP driver (``udp://HOST:PORT``, the one CrazySim uses) sends one CRTP packet per datagram: byte
0 the header (port << 4 | channel, bits 2-3 set by cflib), then up to 30 bytes of payload. This peer
answers what cflib needs to connect and fly, as crazyflie-firmware does (file names below are its
src/modules/src/):

- link service (port 15): echo, the "Bitcraze Crazyflie" source string, null packets (0xFF);
- platform (13): protocol version 12 (supervisor port supported; TOC protocol v2);
- log (5): TOC v2 of the variables below, create/append/start/stop/delete/reset of blocks, log data
  (block id, 24-bit ms timestamp, values converted to the requested fetch type) every period;
- param (2): TOC v2, read, write (answered with the value), memory (4): none;
- commander (3): the legacy RPYT setpoint, crtp_commander_rpyt.c: the thrust lock (thrust is ignored
  until a zero-thrust setpoint arrives; locked again when the commander watchdog disabled the
  setpoint), thrust < 1000 -> 0 and capped at 60000, roll/pitch/yaw in rate (0) or angle (1) mode by
  the ``flightmode.stabMode*`` parameters, pitch rate = -gyro.y and the legacy yaw rate inverted
  (controller_pid.c); generic commander (7): the stop setpoint;
- supervisor (9, supervisor.c, crtp_supervisor.c): arming (answered), emergency stop (locks the
  vehicle until restarted), its keepalive (1 s after the last one: emergency stop), the commander
  watchdog: no setpoint for 500 ms -> level out (attitude 0, yaw rate 0, thrust kept), 2 s -> motors
  off; the state bitfield; the legacy emergency stop and keepalive on the localization port (6).

The vehicle is hardware.twin.DigitalTwin stepped in real time at ``rate_hz``; uint16 thrust is a
fraction of the vehicle's maximum collective thrust (a simulator's model; a real Crazyflie's PWM is
not linear in thrust). Run it as a process (``python -m sim.standins.crazyflie_peer --port 0`` prints
``READY udp://127.0.0.1:PORT``): SIGUSR1 toggles a silent link (socket open, nothing sent or
processed), SIGUSR2 toggles a closed port, SIGTERM ends it. With ``--events FILE`` it writes one JSON
line per event (armed, thrust unlocked, watchdog level-out / motors off, emergency stop, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

from hardware.robot import CtbrCommand, RotorCommand
from hardware.twin import DigitalTwin, TwinConfig

# CRTP ports and channels (cflib/crtp/crtpstack.py, firmware crtp.h)
PORT_PARAM, PORT_COMMANDER, PORT_MEM, PORT_LOG, PORT_LOCALIZATION = 2, 3, 4, 5, 6
PORT_GENERIC_COMMANDER, PORT_SUPERVISOR, PORT_PLATFORM, PORT_LINK = 7, 9, 13, 15
CRTP_PROTOCOL_VERSION = 12
MAX_PAYLOAD = 30
LOG_DATA_BYTES = MAX_PAYLOAD - 4  # block id + 24-bit timestamp

# firmware numbers (see the module doc)
MIN_THRUST, MAX_THRUST, THRUST_FULL_SCALE = 1000, 60000, 65535
WDT_LEVEL_OUT_S, WDT_SHUTDOWN_S, ESTOP_WDT_S = 0.5, 2.0, 1.0
RATE, ANGLE = 0, 1
ENOENT, E2BIG, EEXIST, ENOEXEC = 2, 7, 17, 8

# log and param TOC type ids (cflib log.py LogTocElement, param.py ParamTocElement)
LOG_TYPES = {0x01: "<B", 0x02: "<H", 0x03: "<L", 0x04: "<b", 0x05: "<h", 0x06: "<i", 0x07: "<f", 0x08: "<e"}
LOG_FLOAT, LOG_UINT16 = 0x07, 0x02
PARAM_UINT8, PARAM_UINT32, PARAM_FLOAT, PARAM_RO = 0x08, 0x0A, 0x06, 0x40
PARAM_FORMATS = {PARAM_UINT8: "<B", PARAM_UINT32: "<L", PARAM_FLOAT: "<f"}

LOG_TOC = (
    ("stateEstimate", "x"), ("stateEstimate", "y"), ("stateEstimate", "z"),
    ("stateEstimate", "vx"), ("stateEstimate", "vy"), ("stateEstimate", "vz"),
    ("stateEstimate", "qx"), ("stateEstimate", "qy"), ("stateEstimate", "qz"), ("stateEstimate", "qw"),
    ("stateEstimate", "roll"), ("stateEstimate", "pitch"), ("stateEstimate", "yaw"),
    ("gyro", "x"), ("gyro", "y"), ("gyro", "z"),
    ("pm", "vbat"), ("stabilizer", "thrust"), ("supervisor", "info"),
)
"""(group, name) of every log variable, TOC order; all floats except supervisor.info (uint16)"""

PARAM_TOC = (
    ("flightmode", "stabModeRoll", PARAM_UINT8, ANGLE), ("flightmode", "stabModePitch", PARAM_UINT8, ANGLE),
    ("flightmode", "stabModeYaw", PARAM_UINT8, RATE), ("stabilizer", "controller", PARAM_UINT8, 1),
    ("stabilizer", "estimator", PARAM_UINT8, 2), ("commander", "enHighLevel", PARAM_UINT8, 0),
    ("supervisor", "stop", PARAM_UINT8, 0), ("firmware", "revision0", PARAM_UINT32 | PARAM_RO, 0x5E1F0A),
)
"""(group, name, type, default): the firmware's defaults (angle mode for roll and pitch)"""


@dataclasses.dataclass(frozen=True)
class CrazyfliePeerCfg:
    """One simulated Crazyflie behind a UDP port."""

    host: str = "127.0.0.1"
    """address to bind"""
    port: int = 19850
    """UDP port to bind (cflib's first scanned port); 0: any free port, printed at start"""
    preset: str = "crazyflie2x"
    """vehicle preset of the twin (tether.presets)"""
    init_pos_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """where the vehicle stands at start (on the ground at z = 0) [m]"""
    rate_kp: tuple[float, float, float] = (25.0, 25.0, 12.0)
    """the onboard rate loop's gains about x_b, y_b, z_b [1/s] (set to a policy's contract rate_kp)"""
    rate_hz: float = 100.0
    """physics, estimator and log rate; log periods are multiples of 10 ms [Hz]"""
    angle_kp: float = 6.0
    """angle mode and level-out: rate setpoint per angle error [1/s]"""
    vbat_full_v: float = 4.1
    """battery voltage at rest [V]"""
    vbat_sag_v: float = 0.5
    """voltage drop at full thrust (linear in thrust) [V]"""
    events_path: str = ""
    """JSON-lines event log ("": none)"""

    def __post_init__(self):
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0 [Hz], got {self.rate_hz}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")


def _euler_deg(quat_wxyz: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) [deg], ZYX about x_b, y_b, z_b (FLU)."""
    w, x, y, z = quat_wxyz
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return math.degrees(roll), math.degrees(pitch), math.degrees(yaw)


class CrazyfliePeer:
    """The firmware side of one CRTP link, over UDP; :meth:`run` serves until :meth:`stop`."""

    def __init__(self, cfg: CrazyfliePeerCfg):
        self.cfg = cfg
        self.dt_s = 1.0 / cfg.rate_hz
        self.twin = DigitalTwin(TwinConfig(preset=cfg.preset, rate_kp=cfg.rate_kp, init_pos_w=cfg.init_pos_w,
                                           body_rate_limits_rad_s=(35.0, 35.0, 35.0), rate_hz=cfg.rate_hz))
        self.max_thrust_n = self.twin.preset.max_thrust_n
        self._events = open(cfg.events_path, "a", buffering=1) if cfg.events_path else None
        self._sock: socket.socket | None = None
        self.port = cfg.port
        self._client = None
        self._running = False
        self.silent = False
        self.port_closed = False
        self._requests: list[str] = []  # toggles asked for by signal handlers, applied by the loop
        self._t0 = time.monotonic()
        self.params = {(g, n): v for g, n, _t, v in PARAM_TOC}
        self._blocks: dict[int, dict] = {}  # id -> {"vars": [(toc index, fetch type)], "period": ticks, "on": bool}
        self._tick = 0
        # supervisor and commander state
        self.armed = False
        self.locked = False  # after an emergency stop: restart required
        self.thrust_locked = True
        self.setpoint: tuple[float, float, float, int] | None = None  # legacy (roll, pitch, yaw, thrust) fields
        self.setpoint_s: float | None = None  # monotonic time of the latest setpoint
        self.stop_setpoint = False
        self.keepalive_s: float | None = None
        self.wdt_stage = "ok"  # ok | level_out | shutdown
        self.thrust_n = 0.0  # collective thrust commanded this tick [N]
        self._toc_crc = {PORT_LOG: self._crc(LOG_TOC), PORT_PARAM: self._crc([(g, n) for g, n, _t, _v in PARAM_TOC])}

    # ------------------------------------------------------------------------------ plumbing

    @staticmethod
    def _crc(entries) -> int:
        return zlib.crc32(json.dumps(list(entries)).encode())

    def event(self, kind: str, **fields) -> None:
        if self._events is not None:
            self._events.write(json.dumps({"t_s": round(time.monotonic() - self._t0, 4), "wall_s": time.time(),
                                           "monotonic_s": time.monotonic(), "event": kind, **fields}) + "\n")

    def open_port(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.cfg.host, self.port))
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self.port_closed = False

    def close_port(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.port_closed = True

    def toggle_silent(self, *_args) -> None:
        """Silent link on / off (a signal handler may call it: applied by the loop, between packets)."""
        self._requests.append("silent")

    def toggle_port(self, *_args) -> None:
        """Close / reopen the port (as toggle_silent, applied by the loop)."""
        self._requests.append("port")

    def stop(self, *_args) -> None:
        self._running = False

    def _apply_requests(self) -> None:
        while self._requests:
            what = self._requests.pop(0)
            if what == "silent":
                self.silent = not self.silent
                self.event("silent" if self.silent else "talking")
            elif self.port_closed:
                self.open_port()
                self.event("port_open")
            else:
                self.close_port()
                self.event("port_closed")

    def _send(self, port: int, channel: int, payload: bytes) -> None:
        if self._sock is None or self._client is None or self.silent:
            return
        assert len(payload) <= MAX_PAYLOAD, (port, channel, len(payload))
        try:
            self._sock.sendto(bytes([(port << 4) | 0x0C | channel]) + payload, self._client)
        except OSError:  # the client's socket is gone: as a radio, keep flying on the watchdogs
            pass

    # ------------------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Serve packets and step the vehicle in real time until stop()."""
        self.twin.connect()
        self.twin.send(RotorCommand(np.zeros(self.twin.n_rotors)))  # motors off until armed and commanded
        if self._sock is None:
            self.open_port()
        self._running = True
        next_tick = time.monotonic()
        try:
            while self._running:
                self._apply_requests()
                now = time.monotonic()
                wait = max(0.0, next_tick - now)
                if self._sock is not None:
                    readable, _, _ = select.select([self._sock], [], [], wait)
                    if readable:
                        self._drain()
                else:
                    time.sleep(wait)
                now = time.monotonic()
                if now >= next_tick:
                    self._step(now)
                    next_tick += self.dt_s
                    if now - next_tick > 10 * self.dt_s:  # far behind (a loaded machine): resync, say so
                        self.event("overrun", behind_s=round(now - next_tick, 4))
                        next_tick = now + self.dt_s
        finally:
            self.close_port()
            self.twin.disconnect()
            if self._events is not None:
                self._events.close()

    def _drain(self) -> None:
        while self._sock is not None:
            try:
                data, addr = self._sock.recvfrom(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable from a client that went away
                continue
            if self.silent or not data:
                continue
            self._client = addr
            self._handle(data[0], bytes(data[1:]))

    # ------------------------------------------------------------------------------ packets

    def _handle(self, header: int, p: bytes) -> None:
        port, channel = header >> 4, header & 0x03
        if header == 0xFF:  # null packet (scan probe, radio keepalive)
            self._send(0x0F, 3, b"")
        elif port == PORT_LINK:
            if channel == 0:
                self._send(PORT_LINK, 0, p)  # echo (cflib's latency ping)
            elif channel == 1:
                self._send(PORT_LINK, 1, b"Bitcraze Crazyflie")
        elif port == PORT_PLATFORM and channel == 1:
            if p[:1] == b"\x00":
                self._send(PORT_PLATFORM, 1, struct.pack("<Bi", 0, CRTP_PROTOCOL_VERSION))
            elif p[:1] == b"\x01":
                self._send(PORT_PLATFORM, 1, b"\x01tether-peer")
        elif port == PORT_PLATFORM and channel == 0 and p[:1] == b"\x01" and len(p) >= 2:
            self._arm(bool(p[1]))  # legacy arming request
        elif port == PORT_LOG:
            self._handle_log(channel, p)
        elif port == PORT_PARAM:
            self._handle_param(channel, p)
        elif port == PORT_MEM and channel == 0 and p[:1] == b"\x01":
            self._send(PORT_MEM, 0, b"\x01\x00")  # number of memories: none
        elif port == PORT_COMMANDER and channel == 0 and len(p) >= 14:
            self._legacy_setpoint(*struct.unpack("<fffH", p[:14]))
        elif port == PORT_GENERIC_COMMANDER and channel == 0 and p[:1] == b"\x00":
            self.setpoint, self.setpoint_s, self.stop_setpoint = None, time.monotonic(), True
            self.event("stop_setpoint")
        elif port == PORT_SUPERVISOR:
            self._handle_supervisor(channel, p)
        elif port == PORT_LOCALIZATION and channel == 1 and p[:1] in (b"\x03", b"\x04"):
            self._emergency_stop("localization port") if p[:1] == b"\x03" else self._keepalive()

    def _handle_toc(self, port: int, p: bytes, entries) -> bool:
        """TOC channel (0) requests, v1 and v2; True when handled."""
        cmd = p[0]
        if cmd in (1, 3):  # info
            count_fmt = "<B" if cmd == 1 else "<H"
            self._send(port, 0, bytes([cmd]) + struct.pack(count_fmt, len(entries)) + struct.pack("<I", self._toc_crc[port])
                       + bytes([16, 128]))
            return True
        if cmd in (0, 2):  # element
            idx = p[1] if cmd == 0 else struct.unpack("<H", p[1:3])[0]
            if idx >= len(entries):
                return True
            group, name, type_id = entries[idx]
            ident = bytes([idx]) if cmd == 0 else struct.pack("<H", idx)
            self._send(port, 0, bytes([cmd]) + ident + bytes([type_id]) + group.encode() + b"\0" + name.encode() + b"\0")
            return True
        return False

    def _log_toc(self):
        return [(g, n, LOG_UINT16 if (g, n) == ("supervisor", "info") else LOG_FLOAT) for g, n in LOG_TOC]

    def _handle_log(self, channel: int, p: bytes) -> None:
        if not p:
            return
        if channel == 0:
            self._handle_toc(PORT_LOG, p, self._log_toc())
            return
        if channel != 1:
            return
        cmd = p[0]
        if cmd == 5:  # reset
            self._blocks.clear()
            self._send(PORT_LOG, 1, bytes([5, 0, 0]))
            return
        block_id = p[1] if len(p) > 1 else 0
        err = 0
        if cmd in (0, 1, 6, 7):  # create / append, v1 (1-byte ids) and v2 (2-byte ids)
            if cmd in (0, 6) and block_id in self._blocks:
                err = EEXIST
            elif cmd in (1, 7) and block_id not in self._blocks:
                err = ENOENT
            else:
                step = 3 if cmd in (6, 7) else 2
                new = []
                for i in range(2, len(p) - step + 1, step):
                    type_byte = p[i]
                    idx = struct.unpack("<H", p[i + 1:i + 3])[0] if step == 3 else p[i + 1]
                    if idx >= len(LOG_TOC) or (type_byte & 0x0F) not in LOG_TYPES:
                        err = ENOENT
                        break
                    new.append((idx, type_byte & 0x0F))
                old = self._blocks.get(block_id, {"vars": [], "period": 1, "on": False})["vars"] if cmd in (1, 7) else []
                size = sum(struct.calcsize(LOG_TYPES[t]) for _i, t in old + new)
                if not err and size > LOG_DATA_BYTES:
                    err = E2BIG
                if not err:
                    block = self._blocks.setdefault(block_id, {"vars": [], "period": 1, "on": False})
                    block["vars"] = old + new
        elif cmd == 3:  # start (period in 10 ms)
            if block_id not in self._blocks:
                err = ENOENT
            else:
                period_ms = 10 * (p[2] if len(p) > 2 else 1)
                self._blocks[block_id]["period"] = max(1, round(period_ms / 1000.0 * self.cfg.rate_hz))
                self._blocks[block_id]["on"] = True
        elif cmd == 4:  # stop
            err = ENOENT if block_id not in self._blocks else 0
            if not err:
                self._blocks[block_id]["on"] = False
        elif cmd == 2:  # delete
            err = ENOENT if self._blocks.pop(block_id, None) is None else 0
        else:
            err = ENOEXEC
        self._send(PORT_LOG, 1, bytes([cmd, block_id, err]))

    def _handle_param(self, channel: int, p: bytes) -> None:
        if not p:
            return
        if channel == 0:
            self._handle_toc(PORT_PARAM, p, [(g, n, t) for g, n, t, _v in PARAM_TOC])
            return
        if channel not in (1, 2) or len(p) < 2:
            return
        idx = struct.unpack("<H", p[:2])[0]
        if idx >= len(PARAM_TOC):
            if channel == 1:
                self._send(PORT_PARAM, 1, p[:2] + bytes([ENOENT]))
            return
        group, name, type_id, _default = PARAM_TOC[idx]
        fmt = PARAM_FORMATS[type_id & 0x0F]
        if channel == 2:  # write: answered with the value now in force
            if not type_id & PARAM_RO and len(p) >= 2 + struct.calcsize(fmt):
                self.params[(group, name)] = struct.unpack(fmt, p[2:2 + struct.calcsize(fmt)])[0]
                self.event("param", name=f"{group}.{name}", value=self.params[(group, name)])
            self._send(PORT_PARAM, 2, p[:2] + struct.pack(fmt, self.params[(group, name)]))
        else:
            self._send(PORT_PARAM, 1, p[:2] + b"\x00" + struct.pack(fmt, self.params[(group, name)]))

    def _handle_supervisor(self, channel: int, p: bytes) -> None:
        if not p:
            return
        cmd = p[0]
        if channel == 0 and cmd == 0x0C:
            self._send(PORT_SUPERVISOR, 0, bytes([0x8C]) + struct.pack("<H", self.info_bitfield))
        elif channel == 1 and cmd == 0x01 and len(p) >= 2:
            success = self._arm(bool(p[1]))
            self._send(PORT_SUPERVISOR, 1, bytes([0x81, int(success), int(self.armed)]))
        elif channel == 1 and cmd == 0x02:
            self._send(PORT_SUPERVISOR, 1, bytes([0x82, 0, int(not self.locked)]))
        elif channel == 1 and cmd == 0x03:
            self._emergency_stop("supervisor port")
        elif channel == 1 and cmd == 0x04:
            self._keepalive()

    # ------------------------------------------------------------------------------ firmware logic

    @property
    def info_bitfield(self) -> int:
        """supervisor.info: bit 0 can be armed, 1 armed, 3 can fly, 4 flying, 6 locked, 7 crashed"""
        crashed = self.twin.crash is not None
        bits = [not self.locked and not crashed, self.armed, False, self.armed and not self.locked,
                self.thrust_n > 0, False, self.locked, crashed]
        return sum(1 << i for i, b in enumerate(bits) if b)

    def _arm(self, do_arm: bool) -> bool:
        if do_arm and (self.locked or self.twin.crash is not None):
            self.event("arming_refused", locked=self.locked)
            return False
        if self.armed != do_arm:
            self.armed = do_arm
            if not do_arm:
                self.thrust_locked = True
            self.event("armed" if do_arm else "disarmed")
        return True

    def _emergency_stop(self, source: str) -> None:
        if not self.locked:
            self.locked, self.armed = True, False
            self.event("emergency_stop", source=source)

    def _keepalive(self) -> None:
        if self.keepalive_s is None:
            self.event("keepalive_first")
        self.keepalive_s = time.monotonic()

    def _legacy_setpoint(self, roll: float, pitch: float, yaw: float, thrust: int) -> None:
        """crtp_commander_rpyt.c: the thrust lock opens at the first zero-thrust setpoint."""
        if thrust == 0 and self.thrust_locked:
            self.thrust_locked = False
            self.event("thrust_unlocked")
        self.setpoint, self.setpoint_s, self.stop_setpoint = (roll, pitch, yaw, thrust), time.monotonic(), False
        if self.wdt_stage != "ok":
            self.event("setpoints_resumed", after=self.wdt_stage)
            self.wdt_stage = "ok"

    def _watchdogs(self, now: float) -> None:
        if self.keepalive_s is not None and now - self.keepalive_s > ESTOP_WDT_S and not self.locked:
            self._emergency_stop(f"keepalive watchdog ({now - self.keepalive_s:.3f} s)")
        if self.setpoint_s is None:
            return
        age = now - self.setpoint_s
        if age > WDT_SHUTDOWN_S and self.wdt_stage != "shutdown":
            self.wdt_stage = "shutdown"
            self.thrust_locked = True  # the setpoint priority is disabled: crtp_commander_rpyt.c locks thrust
            self.event("watchdog_motors_off", setpoint_age_s=round(age, 4))
        elif WDT_LEVEL_OUT_S < age <= WDT_SHUTDOWN_S and self.wdt_stage == "ok":
            self.wdt_stage = "level_out"
            self.event("watchdog_level_out", setpoint_age_s=round(age, 4))

    def _command(self, state) -> CtbrCommand | None:
        """The rate-loop command of the setpoint in force, None: motors off."""
        if not self.armed or self.locked or self.setpoint is None or self.stop_setpoint or self.twin.crash \
                or self.wdt_stage == "shutdown":
            return None
        roll, pitch, yaw, thrust = self.setpoint
        thrust = 0 if self.thrust_locked or thrust < MIN_THRUST else min(thrust, MAX_THRUST)
        if thrust == 0:
            return None
        roll_now, pitch_now, yaw_now = _euler_deg(state.quat_wxyz)
        k = self.cfg.angle_kp
        if self.wdt_stage == "level_out":  # supervisorOverrideSetpoint: attitude 0, yaw rate 0, thrust kept
            modes, roll, pitch, yaw = (ANGLE, ANGLE, RATE), 0.0, 0.0, 0.0
        else:
            modes = tuple(self.params[("flightmode", n)] for n in ("stabModeRoll", "stabModePitch", "stabModeYaw"))
        # firmware axes: roll = about x_b, pitch = nose up (= -about y_b), legacy yaw input inverted
        rate_roll = roll if modes[0] == RATE else k * (roll - roll_now)
        rate_pitch_fw = pitch if modes[1] == RATE else k * (pitch - (-pitch_now))
        rate_yaw = -yaw if modes[2] == RATE else k * (yaw - yaw_now)
        rates_b = np.radians([rate_roll, -rate_pitch_fw, rate_yaw])
        return CtbrCommand(thrust / THRUST_FULL_SCALE * self.max_thrust_n, rates_b)

    def _step(self, now: float) -> None:
        self._watchdogs(now)
        state = self.twin.true_state()
        cmd = self._command(state)
        self.thrust_n = 0.0 if cmd is None else cmd.thrust_n
        self.twin.send(RotorCommand(np.zeros(self.twin.n_rotors)) if cmd is None else cmd)
        self.twin.advance()
        self._tick += 1
        if any(b["on"] and self._tick % b["period"] == 0 for b in self._blocks.values()):
            self._send_logs(self.twin.true_state())

    def _values(self, state) -> list[float]:
        q = state.quat_wxyz
        roll, pitch, yaw = _euler_deg(q)
        thrust_fraction = self.thrust_n / self.max_thrust_n
        values = {
            ("stateEstimate", "x"): state.pos_w[0], ("stateEstimate", "y"): state.pos_w[1],
            ("stateEstimate", "z"): state.pos_w[2], ("stateEstimate", "vx"): state.lin_vel_w[0],
            ("stateEstimate", "vy"): state.lin_vel_w[1], ("stateEstimate", "vz"): state.lin_vel_w[2],
            ("stateEstimate", "qw"): q[0], ("stateEstimate", "qx"): q[1], ("stateEstimate", "qy"): q[2],
            ("stateEstimate", "qz"): q[3], ("stateEstimate", "roll"): roll,
            ("stateEstimate", "pitch"): -pitch,  # the firmware's legacy stateEstimate.pitch is nose-up positive
            ("stateEstimate", "yaw"): yaw,
            ("gyro", "x"): math.degrees(state.ang_vel_b[0]), ("gyro", "y"): math.degrees(state.ang_vel_b[1]),
            ("gyro", "z"): math.degrees(state.ang_vel_b[2]),
            ("pm", "vbat"): self.cfg.vbat_full_v - self.cfg.vbat_sag_v * thrust_fraction,
            ("stabilizer", "thrust"): self.thrust_n / self.max_thrust_n * THRUST_FULL_SCALE,
            ("supervisor", "info"): self.info_bitfield,
        }
        return [values[k] for k in LOG_TOC]

    def _send_logs(self, state) -> None:
        values = self._values(state)
        stamp_ms = int((time.monotonic() - self._t0) * 1000) & 0xFFFFFF
        ts = struct.pack("<I", stamp_ms)[:3]
        for block_id, b in self._blocks.items():
            if not b["on"] or self._tick % b["period"]:
                continue
            data = b"".join(struct.pack(LOG_TYPES[t], int(values[i]) if LOG_TYPES[t] in ("<B", "<H", "<L", "<b", "<h", "<i")
                                        else float(values[i])) for i, t in b["vars"])
            self._send(PORT_LOG, 2, bytes([block_id]) + ts + data)


# ---------------------------------------------------------------------------------- process


def start_peer_process(cfg: CrazyfliePeerCfg, timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start the peer as a process (``python -m sim.standins.crazyflie_peer``); returns it and its
    cflib URI once it listens. RuntimeError with its output if it does not start."""
    args = [sys.executable, "-m", "sim.standins.crazyflie_peer", "--host", cfg.host, "--port", str(cfg.port),
            "--preset", cfg.preset, "--init-pos", *map(str, cfg.init_pos_w), "--rate-kp", *map(str, cfg.rate_kp),
            "--rate-hz", str(cfg.rate_hz)]
    if cfg.events_path:
        args += ["--events", cfg.events_path]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("READY "):
                return proc, line.split()[1]
        if proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"crazyflie peer did not start within {timeout_s} s: {''.join(lines)[-2000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=CrazyfliePeerCfg.host)
    ap.add_argument("--port", type=int, default=CrazyfliePeerCfg.port)
    ap.add_argument("--preset", default=CrazyfliePeerCfg.preset)
    ap.add_argument("--init-pos", type=float, nargs=3, default=CrazyfliePeerCfg.init_pos_w)
    ap.add_argument("--rate-kp", type=float, nargs=3, default=CrazyfliePeerCfg.rate_kp)
    ap.add_argument("--rate-hz", type=float, default=CrazyfliePeerCfg.rate_hz)
    ap.add_argument("--events", default="")
    a = ap.parse_args(argv)
    peer = CrazyfliePeer(CrazyfliePeerCfg(host=a.host, port=a.port, preset=a.preset, init_pos_w=tuple(a.init_pos),
                                          rate_kp=tuple(a.rate_kp), rate_hz=a.rate_hz, events_path=a.events))
    signal.signal(signal.SIGUSR1, peer.toggle_silent)
    signal.signal(signal.SIGUSR2, peer.toggle_port)
    signal.signal(signal.SIGTERM, peer.stop)
    signal.signal(signal.SIGINT, peer.stop)
    peer.open_port()
    print(f"READY udp://{a.host}:{peer.port}", flush=True)
    peer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
