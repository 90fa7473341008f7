"""Flight logs for system identification: one in-memory layout, CSV and MCAP (rosbag2) readers.

CSV columns (header row, comma separated, SI units):
``t`` [s], ``u0 .. u{R-1}`` rotor commands as a fraction of max rpm [1], in the vehicle's motor order,
``pos_w_x/y/z`` [m], ``quat_w/x/y/z`` body -> world, ``lin_vel_w_x/y/z`` [m/s] world frame,
``ang_vel_b_x/y/z`` [rad/s] body frame. Row k holds the state measured at ``t[k]`` and the command
applied from ``t[k]`` until ``t[k+1]``.

Bags (what ``tether deploy --record`` writes, or odometry + rotor commands) are read by
``calibration.baglog`` into the same :class:`FlightLog`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from calibration.boards import CalibrationError

TIME = "t"
POS_W = ("pos_w_x", "pos_w_y", "pos_w_z")
QUAT_WXYZ = ("quat_w", "quat_x", "quat_y", "quat_z")
LIN_VEL_W = ("lin_vel_w_x", "lin_vel_w_y", "lin_vel_w_z")
ANG_VEL_B = ("ang_vel_b_x", "ang_vel_b_y", "ang_vel_b_z")


def cmd_columns(n_rotors: int) -> tuple[str, ...]:
    return tuple(f"u{i}" for i in range(n_rotors))


@dataclasses.dataclass(frozen=True)
class FlightLog:
    t: np.ndarray
    """[N] time [s], strictly increasing"""
    u: np.ndarray
    """[N, R] rotor commands, fraction of max rpm [1]"""
    pos_w: np.ndarray
    """[N, 3] position, world frame [m]"""
    quat_wxyz: np.ndarray
    """[N, 4] attitude, body -> world"""
    lin_vel_w: np.ndarray
    """[N, 3] linear velocity, world frame [m/s]"""
    ang_vel_b: np.ndarray
    """[N, 3] angular velocity, body frame [rad/s]"""

    def __post_init__(self):
        n = len(self.t)
        for name, arr, width in (("u", self.u, None), ("pos_w", self.pos_w, 3), ("quat_wxyz", self.quat_wxyz, 4),
                                 ("lin_vel_w", self.lin_vel_w, 3), ("ang_vel_b", self.ang_vel_b, 3)):
            if arr.ndim != 2 or len(arr) != n or (width is not None and arr.shape[1] != width):
                raise CalibrationError(f"flight log field {name}: shape {arr.shape}, expected [{n}, {width or 'R'}]")
            if not np.all(np.isfinite(arr)):
                raise CalibrationError(f"flight log field {name} contains NaN or inf")
        if n < 2 or np.any(np.diff(self.t) <= 0):
            raise CalibrationError("flight log time stamps must be strictly increasing")

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] - self.t[0])

    def slice_time(self, start_s: float | None, end_s: float | None) -> "FlightLog":
        """Rows with start_s <= t - t[0] <= end_s (None: no bound)."""
        rel = self.t - self.t[0]
        keep = np.ones(len(rel), bool)
        if start_s is not None:
            keep &= rel >= start_s
        if end_s is not None:
            keep &= rel <= end_s
        return FlightLog(self.t[keep], self.u[keep], self.pos_w[keep], self.quat_wxyz[keep],
                         self.lin_vel_w[keep], self.ang_vel_b[keep])

    def columns(self) -> dict[str, np.ndarray]:
        out = {TIME: self.t}
        for block, names in ((self.u, cmd_columns(self.u.shape[1])), (self.pos_w, POS_W), (self.quat_wxyz, QUAT_WXYZ),
                             (self.lin_vel_w, LIN_VEL_W), (self.ang_vel_b, ANG_VEL_B)):
            out.update({name: block[:, i] for i, name in enumerate(names)})
        return out


def log_from_columns(cols: dict[str, np.ndarray], where: str = "flight log") -> FlightLog:
    required = (TIME, *POS_W, *QUAT_WXYZ, *LIN_VEL_W, *ANG_VEL_B)
    missing = [c for c in required if c not in cols]
    n_rotors = sum(1 for c in cols if c.startswith("u") and c[1:].isdigit())
    if n_rotors == 0:
        missing.append("u0..u{R-1}")
    if missing:
        raise CalibrationError(f"{where}: missing column(s) {missing}; a flight log has the columns t, u0..u{{R-1}}, "
                               "pos_w_x/y/z, quat_w/x/y/z, lin_vel_w_x/y/z, ang_vel_b_x/y/z")

    def block(names) -> np.ndarray:
        return np.stack([np.asarray(cols[c], np.float64) for c in names], axis=1)

    return FlightLog(np.asarray(cols[TIME], np.float64), block(cmd_columns(n_rotors)), block(POS_W),
                     block(QUAT_WXYZ), block(LIN_VEL_W), block(ANG_VEL_B))


def write_csv(path: str | Path, log: FlightLog) -> None:
    cols = log.columns()
    np.savetxt(path, np.stack(list(cols.values()), axis=1), delimiter=",", header=",".join(cols), comments="",
               fmt="%.9g")


def read_csv(path: str | Path) -> FlightLog:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"flight log {path} does not exist")
    with path.open() as f:
        header = f.readline().strip().split(",")
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as e:
        raise CalibrationError(f"{path}: not a numeric CSV after the header row ({e})") from e
    if data.shape[1] != len(header):
        raise CalibrationError(f"{path}: header has {len(header)} names but rows have {data.shape[1]} values")
    return log_from_columns({name: data[:, i] for i, name in enumerate(header)}, where=str(path))


def rotmat_wxyz(q: np.ndarray) -> np.ndarray:
    """[..., 3, 3] body -> world rotation matrices from unit quaternions [..., 4] (w, x, y, z)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate body vectors v [N, 3] to the world frame by quaternions q [N, 4] (wxyz)."""
    w, qv = q[:, :1], q[:, 1:]
    t = 2.0 * np.cross(qv, v)
    return v + w * t + np.cross(qv, t)
