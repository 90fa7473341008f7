"""MAVLink's frames, modes and thrust, converted to Tether's: pure functions, numpy only.

MAVLink (PX4 and ArduPilot alike) states attitude and body rates in the FRD body frame (x forward, y
right, z down) and positions and velocities in the local NED world frame (x north, y east, z down);
the quaternion of ATTITUDE_QUATERNION rotates FRD body vectors into NED. Tether states FLU body and ENU
world axes (tether.contract). Both changes of axes are 180 degree rotations:
    ENU <- NED: swap x and y, negate z (about (1, 1, 0) / sqrt(2));   FLU <- FRD: negate y and z (about x).
So q_enu_flu = q(ENU <- NED) * q_ned_frd * q(FRD <- FLU), and vectors map by the matrices below (each its
own inverse).

Modes: PX4 packs its mode in HEARTBEAT.custom_mode as main mode << 16 | sub mode << 24 (px4_custom_mode.h)
and takes it in MAV_CMD_DO_SET_MODE as param2 = main mode, param3 = sub mode; ArduCopter's custom_mode is
its mode number (ArduCopter/mode.h) and DO_SET_MODE takes it as param2.

Thrust: SET_ATTITUDE_TARGET.thrust is collective thrust normalized to [0, 1] of the vehicle's maximum.
PX4 (with THR_MDL_FAC matching the motors) and ArduPilot (GUID_OPTIONS thrust-as-thrust, MOT_THST_EXPO
matching) linearize it to thrust, so thrust [N] = normalized * max_thrust_n of the vehicle flown.
"""

from __future__ import annotations

import numpy as np

ENU_FROM_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
"""[3, 3] world vector NED -> ENU (its own inverse)"""
FLU_FROM_FRD = np.diag([1.0, -1.0, -1.0])
"""[3, 3] body vector FRD -> FLU (its own inverse)"""
_Q_ENU_FROM_NED = np.array([0.0, np.sqrt(0.5), np.sqrt(0.5), 0.0])
_Q_FRD_FROM_FLU = np.array([0.0, 1.0, 0.0, 0.0])


def quat_mul(a, b) -> np.ndarray:
    """Hamilton product of two wxyz quaternions [4]."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def _unit_positive(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q  # one sign for one rotation: w >= 0


def quat_enu_flu_from_ned_frd(q_ned_frd) -> np.ndarray:
    """[4] wxyz body FRD -> world NED (MAVLink) => [4] wxyz body FLU -> world ENU (Tether), w >= 0."""
    return _unit_positive(quat_mul(quat_mul(_Q_ENU_FROM_NED, np.asarray(q_ned_frd, dtype=np.float64)),
                                   _Q_FRD_FROM_FLU))


def quat_ned_frd_from_enu_flu(q_enu_flu) -> np.ndarray:
    """[4] wxyz body FLU -> world ENU => [4] wxyz body FRD -> world NED (the inverse map; both axis changes
    are their own inverses)."""
    return _unit_positive(quat_mul(quat_mul(_Q_ENU_FROM_NED, np.asarray(q_enu_flu, dtype=np.float64)),
                                   _Q_FRD_FROM_FLU))


def enu_from_ned(v_ned) -> np.ndarray:
    """[3] world vector NED -> ENU (also ENU -> NED)."""
    return ENU_FROM_NED @ np.asarray(v_ned, dtype=np.float64)


def flu_from_frd(v_frd) -> np.ndarray:
    """[3] body vector FRD -> FLU (also FLU -> FRD)."""
    return FLU_FROM_FRD @ np.asarray(v_frd, dtype=np.float64)


# ----------------------------------------------------------------------------------------- thrust


def normalized_thrust(thrust_n: float, max_thrust_n: float) -> float:
    """Collective thrust [N] -> SET_ATTITUDE_TARGET.thrust in [0, 1] (not clipped here)."""
    return float(thrust_n) / float(max_thrust_n)


def thrust_newtons(normalized: float, max_thrust_n: float) -> float:
    """SET_ATTITUDE_TARGET.thrust [0, 1] -> collective thrust [N]."""
    return float(normalized) * float(max_thrust_n)


# ------------------------------------------------------------------------------------------ modes

PX4_MAIN_MODES = {"MANUAL": 1, "ALTCTL": 2, "POSCTL": 3, "AUTO": 4, "ACRO": 5, "OFFBOARD": 6, "STABILIZED": 7}
"""PX4_CUSTOM_MAIN_MODE_* (src/modules/commander/px4_custom_mode.h)"""
PX4_AUTO_SUB_MODES = {"READY": 1, "TAKEOFF": 2, "LOITER": 3, "MISSION": 4, "RTL": 5, "LAND": 6}
"""PX4_CUSTOM_SUB_MODE_AUTO_* (LOITER is what QGroundControl shows as Hold)"""
PX4_MODES = {"MANUAL": (1, 0), "ALTCTL": (2, 0), "POSCTL": (3, 0), "ACRO": (5, 0), "OFFBOARD": (6, 0),
             "STABILIZED": (7, 0), "HOLD": (4, 3), "TAKEOFF": (4, 2), "MISSION": (4, 4), "RTL": (4, 5),
             "LAND": (4, 6)}
"""Tether's PX4 mode names -> (main mode, sub mode)"""

ARDUCOPTER_MODES = {"STABILIZE": 0, "ACRO": 1, "ALT_HOLD": 2, "AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6,
                    "LAND": 9, "POSHOLD": 16, "BRAKE": 17, "GUIDED_NOGPS": 20}
"""ArduCopter mode numbers (ArduCopter/mode.h, enum class Mode::Number)"""


def px4_custom_mode(name: str) -> int:
    """PX4 mode name (a key of PX4_MODES) -> HEARTBEAT.custom_mode."""
    main, sub = PX4_MODES[name]
    return (main << 16) | (sub << 24)


def px4_mode_name(custom_mode: int) -> str:
    """HEARTBEAT.custom_mode of a PX4 vehicle -> mode name ('PX4:<main>.<sub>' when unknown)."""
    main, sub = (custom_mode >> 16) & 0xFF, (custom_mode >> 24) & 0xFF
    for name, (m, s) in PX4_MODES.items():
        if m == main and (s == sub or m != PX4_MAIN_MODES["AUTO"]):
            return name
    return f"PX4:{main}.{sub}"


def arducopter_mode_name(custom_mode: int) -> str:
    """HEARTBEAT.custom_mode of an ArduCopter -> mode name ('COPTER:<n>' when unknown)."""
    for name, number in ARDUCOPTER_MODES.items():
        if number == custom_mode:
            return name
    return f"COPTER:{custom_mode}"
