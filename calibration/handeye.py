"""Hand-eye calibration, eye-in-hand and eye-to-hand, with several solvers compared.

Poses are 4x4 homogeneous matrices named ``T_a_b``: the pose of frame b in frame a (it maps points
from b to a). Inputs per station i: the robot's ``T_base_gripper[i]`` (flange in base, from the robot
controller) and the board pose ``T_camera_target[i]`` (from PnP on a board detection).

    eye_in_hand  (camera on the gripper):  T_base_gripper[i]   X T_camera_target[i] = C,
                 X = T_gripper_camera, C = T_base_target (board fixed in the world)
    eye_to_hand  (camera fixed, board on the gripper):
                 T_base_gripper[i]^-1 X T_camera_target[i] = C,
                 X = T_base_camera, C = T_gripper_target

OpenCV's AX = XB solvers (``cv2.calibrateHandEye``: TSAI, PARK, HORAUD, ANDREFF, DANIILIDIS) and its
AX = ZB solvers (``cv2.calibrateRobotWorldHandEye``: SHAH, LI) all run; their spread is reported as a
sanity figure. The result is a joint nonlinear least-squares refinement of X and C over all stations,
started from the solver that is most consistent with the data.

A result is refused (:func:`check_bounds`) when the closed chain does not close (RMS residual above
10 mm or 2 deg) or the solvers disagree (spread above 50 mm or 5 deg): ``HandEyeBounds`` says why
these numbers. Refusals are nearly always a wrong mode, quaternions in another order than stated, or
a duplicated pose row; :func:`diagnose` re-solves under those readings and says which one closes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from calibration.boards import CalibrationError

MODES = ("eye_in_hand", "eye_to_hand")
HAND_EYE_METHODS = {
    "TSAI": cv2.CALIB_HAND_EYE_TSAI,
    "PARK": cv2.CALIB_HAND_EYE_PARK,
    "HORAUD": cv2.CALIB_HAND_EYE_HORAUD,
    "ANDREFF": cv2.CALIB_HAND_EYE_ANDREFF,
    "DANIILIDIS": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
ROBOT_WORLD_METHODS = {
    "SHAH": cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH,
    "LI": cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI,
}


@dataclasses.dataclass(frozen=True)
class HandEyeCfg:
    mode: str = "eye_in_hand"
    """'eye_in_hand' (camera on the gripper) or 'eye_to_hand' (camera fixed, board on the gripper)"""
    min_stations: int = 5
    """fewest robot stations [1]"""
    min_rotation_deg: float = 15.0
    """the largest rotation between any two stations must exceed this, else X is not observable [deg]"""
    rot_weight_m: float = 0.5
    """length that one radian of rotation residual counts as in the refinement, about the camera-board
    distance (a rotation error there moves the board by this lever arm) [m/rad]"""
    refine: bool = True
    """refine X and C jointly by nonlinear least squares over all stations"""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"hand-eye mode must be one of {MODES}, got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class HandEyeBounds:
    """Largest chain residual and solver spread of a result that is written.

    Measured on synthetic stations (calibration.synthetic, 8-19 stations, both modes): a good set-up
    (robot 0.3 mm / 0.03 deg, corners 0.2 px) gives residuals <= 0.8 mm / 0.2 deg and spreads <= 4.3 mm;
    a poor one (robot 2 mm / 0.2 deg, corners 0.5 px) <= 5.2 mm / 0.5 deg and <= 22 mm / 0.6 deg. A wrong
    mode, xyzw quaternions read as wxyz, or one duplicated pose row gives residuals >= 15 mm / 8 deg and
    spreads >= 390 mm. The bounds sit between, with a factor of about 2 to either side."""

    max_residual_m: float = 0.010
    """largest RMS translation error of the closed chain [m]"""
    max_residual_deg: float = 2.0
    """largest RMS rotation error of the closed chain [deg]"""
    max_spread_m: float = 0.05
    """largest distance between any solver's camera position and the result [m]"""
    max_spread_deg: float = 5.0
    """largest angle between any solver's camera rotation and the result [deg]"""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"hand-eye bound {f.name} must be a positive number, got {v}")


@dataclasses.dataclass(frozen=True)
class HandEyeResult:
    mode: str
    X: np.ndarray
    """[4, 4] eye_in_hand: T_gripper_camera; eye_to_hand: T_base_camera"""
    C: np.ndarray
    """[4, 4] eye_in_hand: T_base_target; eye_to_hand: T_gripper_target"""
    methods: dict[str, np.ndarray]
    """[4, 4] X from every solver, by method name"""
    spread_translation_m: float
    """largest distance between any solver's translation and the result [m]"""
    spread_rotation_deg: float
    """largest angle between any solver's rotation and the result [deg]"""
    residual_translation_m: float
    """RMS translation error of the closed chain over the stations [m]"""
    residual_rotation_deg: float
    """RMS rotation error of the closed chain over the stations [deg]"""
    n_stations: int

    @property
    def parent_frame(self) -> str:
        return "gripper" if self.mode == "eye_in_hand" else "base"


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).ravel()
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def quat_wxyz_from_R(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix."""
    rvec, _ = cv2.Rodrigues(np.asarray(R, np.float64))
    angle = float(np.linalg.norm(rvec))
    axis = rvec.ravel() / angle if angle > 1e-12 else np.array([1.0, 0.0, 0.0])
    return np.concatenate([[math.cos(angle / 2)], axis * math.sin(angle / 2)])


def R_from_quat_wxyz(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _chain_A(T_base_gripper: Sequence[np.ndarray], mode: str) -> list[np.ndarray]:
    return [T if mode == "eye_in_hand" else inv_T(T) for T in T_base_gripper]


def _solve_C(A: Sequence[np.ndarray], X: np.ndarray, B: Sequence[np.ndarray]) -> np.ndarray:
    """Best constant C = A_i X B_i: chordal mean of the rotations, mean of the translations."""
    chain = [a @ X @ b for a, b in zip(A, B)]
    u, _, vt = np.linalg.svd(sum(c[:3, :3] for c in chain))
    R = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return make_T(R, np.mean([c[:3, 3] for c in chain], axis=0))


def _chain_errors(A, X, B, C) -> tuple[np.ndarray, np.ndarray]:
    """Per station: translation error [m] and rotation error [rad] of C^-1 A_i X B_i."""
    C_inv = inv_T(C)
    t_err, r_err = [], []
    for a, b in zip(A, B):
        E = C_inv @ a @ X @ b
        t_err.append(np.linalg.norm(E[:3, 3]))
        r_err.append(math.radians(rotation_angle_deg(E[:3, :3])))
    return np.array(t_err), np.array(r_err)


def _refine(A, B, X0: np.ndarray, C0: np.ndarray, rot_weight_m: float) -> tuple[np.ndarray, np.ndarray]:
    def unpack(x):
        X = make_T(cv2.Rodrigues(x[0:3])[0], x[3:6])
        C = make_T(cv2.Rodrigues(x[6:9])[0], x[9:12])
        return X, C

    def residual(x):
        X, C = unpack(x)
        C_inv = inv_T(C)
        out = []
        for a, b in zip(A, B):
            E = C_inv @ a @ X @ b
            out.append(np.concatenate([cv2.Rodrigues(E[:3, :3])[0].ravel() * rot_weight_m, E[:3, 3]]))
        return np.concatenate(out)

    x0 = np.concatenate([cv2.Rodrigues(X0[:3, :3])[0].ravel(), X0[:3, 3],
                         cv2.Rodrigues(C0[:3, :3])[0].ravel(), C0[:3, 3]])
    from scipy import optimize  # lazy: `tether --help` builds this parser and should not load scipy

    sol = optimize.least_squares(residual, x0, method="lm", xtol=1e-12, ftol=1e-12)
    return unpack(sol.x)


def _check_stations(T_base_gripper: Sequence[np.ndarray], T_camera_target: Sequence[np.ndarray],
                    cfg: HandEyeCfg) -> None:
    n = len(T_base_gripper)
    if n != len(T_camera_target):
        raise CalibrationError(f"{n} robot poses but {len(T_camera_target)} board poses; they must pair up")
    if n < cfg.min_stations:
        raise CalibrationError(f"only {n} station(s) with both a robot pose and a board detection; need at "
                               f"least {cfg.min_stations} (use 10-20, rotating the wrist about different axes)")
    for name, poses in (("robot", T_base_gripper), ("board", T_camera_target)):
        for i, T in enumerate(poses):
            if T.shape != (4, 4) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4):
                raise CalibrationError(f"{name} pose {i} is not a rigid transform")
    R0 = T_base_gripper[0][:3, :3]
    spread = max(rotation_angle_deg(R0.T @ T[:3, :3]) for T in T_base_gripper)
    if spread < cfg.min_rotation_deg:
        raise CalibrationError(f"the gripper rotates by at most {spread:.1f} deg between stations; need at least "
                               f"{cfg.min_rotation_deg} deg about two or more axes for the rotation to be observable")


def calibrate_hand_eye(T_base_gripper: Sequence[np.ndarray], T_camera_target: Sequence[np.ndarray],
                       cfg: HandEyeCfg = HandEyeCfg()) -> HandEyeResult:
    """Solve X (and the board pose C) from paired robot and board poses; see the module doc."""
    _check_stations(T_base_gripper, T_camera_target, cfg)
    A = _chain_A(T_base_gripper, cfg.mode)
    B = [np.asarray(T, np.float64) for T in T_camera_target]
    R_A, t_A = [a[:3, :3] for a in A], [a[:3, 3] for a in A]
    R_B, t_B = [b[:3, :3] for b in B], [b[:3, 3] for b in B]
    A_inv = [inv_T(a) for a in A]
    methods: dict[str, np.ndarray] = {}
    for name, flag in HAND_EYE_METHODS.items():
        try:
            methods[name] = make_T(*cv2.calibrateHandEye(R_A, t_A, R_B, t_B, method=flag))
        except cv2.error:
            continue  # a solver that gives up on these stations is left out of the comparison
    for name, flag in ROBOT_WORLD_METHODS.items():
        try:
            _, _, R_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(
                R_B, t_B, [a[:3, :3] for a in A_inv], [a[:3, 3] for a in A_inv], method=flag)
        except cv2.error:
            continue
        methods[name] = inv_T(make_T(R_g2c, t_g2c))
    methods = {k: v for k, v in methods.items() if np.all(np.isfinite(v))}
    if not methods:
        raise CalibrationError("every hand-eye solver failed; the stations are degenerate (too little rotation)")

    def cost(X):
        t_err, r_err = _chain_errors(A, X, B, _solve_C(A, X, B))
        return float(np.sum(t_err ** 2) + np.sum((cfg.rot_weight_m * r_err) ** 2))

    best = min(methods, key=lambda k: cost(methods[k]))
    X = methods[best]
    C = _solve_C(A, X, B)
    if cfg.refine:
        X, C = _refine(A, B, X, C, cfg.rot_weight_m)
    t_err, r_err = _chain_errors(A, X, B, C)
    spread_t = max(float(np.linalg.norm(M[:3, 3] - X[:3, 3])) for M in methods.values())
    spread_r = max(rotation_angle_deg(M[:3, :3].T @ X[:3, :3]) for M in methods.values())
    return HandEyeResult(mode=cfg.mode, X=X, C=C, methods=methods, spread_translation_m=spread_t,
                         spread_rotation_deg=spread_r, residual_translation_m=float(np.sqrt(np.mean(t_err ** 2))),
                         residual_rotation_deg=math.degrees(float(np.sqrt(np.mean(r_err ** 2)))),
                         n_stations=len(A))


def exceeded_bounds(res: HandEyeResult, bounds: HandEyeBounds = HandEyeBounds()) -> list[str]:
    """What of ``res`` is outside ``bounds``, in words (empty: the result may be written)."""
    out = []
    if res.residual_translation_m > bounds.max_residual_m:
        out.append(f"chain residual {1e3 * res.residual_translation_m:.1f} mm > {1e3 * bounds.max_residual_m:g} mm")
    if res.residual_rotation_deg > bounds.max_residual_deg:
        out.append(f"chain residual {res.residual_rotation_deg:.2f} deg > {bounds.max_residual_deg:g} deg")
    if res.spread_translation_m > bounds.max_spread_m:
        out.append(f"solver spread {1e3 * res.spread_translation_m:.1f} mm > {1e3 * bounds.max_spread_m:g} mm")
    if res.spread_rotation_deg > bounds.max_spread_deg:
        out.append(f"solver spread {res.spread_rotation_deg:.2f} deg > {bounds.max_spread_deg:g} deg")
    return out


def diagnose(alternatives: dict[str, tuple[Sequence[np.ndarray], str]], T_camera_target: Sequence[np.ndarray],
             bounds: HandEyeBounds = HandEyeBounds()) -> list[tuple[str, HandEyeResult]]:
    """Re-solve under other readings of the input, {label: (T_base_gripper, mode)}; returns the readings
    whose result is within ``bounds``, best chain residual first."""
    passing = []
    for label, (T_bg, mode) in alternatives.items():
        try:
            res = calibrate_hand_eye(T_bg, T_camera_target, HandEyeCfg(mode=mode))
        except CalibrationError:
            continue
        if not exceeded_bounds(res, bounds):
            passing.append((label, res))
    return sorted(passing, key=lambda x: x[1].residual_translation_m)
