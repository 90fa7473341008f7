"""Synthetic data with known ground truth: board images, hand-eye stations, flight logs.

Board images are rendered by ray casting: every (supersampled) output pixel is undistorted with the
true K and distortion (iterated to 1e-12 px), its ray is intersected with the board plane, and the
board texture is sampled there; then blur, uneven lighting and noise. Corner positions thus follow
``cv2.projectPoints`` of the board corners, distortion included (chessboard corners are found within
0.05 px RMS of them at the default blur and noise).

Flight logs come from the batched torch model in ``sim.quadrotor.dynamics`` (``simulate_flight_log``).
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from calibration.boards import BoardCfg, board_texture, object_points
from calibration.handeye import inv_T, make_T


@dataclasses.dataclass(frozen=True)
class CameraModel:
    width: int = 640
    """image width [px]"""
    height: int = 480
    """image height [px]"""
    fx: float = 610.0
    """focal length along x [px]"""
    fy: float = 606.0
    """focal length along y [px]"""
    cx: float = 323.5
    """principal point x [px]"""
    cy: float = 236.0
    """principal point y [px]"""
    dist: tuple[float, float, float, float, float] = (-0.26, 0.085, 0.0009, -0.0006, 0.0)
    """plumb_bob distortion (k1, k2, p1, p2, k3) [1]"""

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.array(self.dist, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class RenderCfg:
    supersample: int = 2
    """rendered pixels per output pixel along each axis, averaged (anti-aliasing) [1]"""
    px_per_square: int = 64
    """board texture resolution [px per square]"""
    blur_sigma_px: float = 0.8
    """optical blur, Gaussian std [px]"""
    noise_sigma: float = 2.0
    """additive Gaussian sensor noise std [grey levels]"""
    light_min: float = 0.45
    """darkest relative illumination of the uneven lighting field (1 = full) [1]"""
    ambient: float = 12.0
    """black level added everywhere [grey levels]"""


@dataclasses.dataclass(frozen=True)
class PoseSamplingCfg:
    distance_m: tuple[float, float] = (0.32, 0.6)
    """camera to board-centre distance range [m]"""
    max_tilt_deg: float = 40.0
    """largest angle between the board normal and the optical axis [deg]"""
    max_roll_deg: float = 25.0
    """largest in-plane rotation of the board [deg]"""
    margin_px: float = 8.0
    """the outer square grid stays this far inside the image [px]"""


@functools.lru_cache(maxsize=4)
def _ray_map(camera: CameraModel, supersample: int) -> np.ndarray:
    """[H*s, W*s, 2] normalized undistorted image coordinates of every supersampled pixel centre."""
    s = supersample
    u = (np.arange(camera.width * s) + 0.5) / s - 0.5
    v = (np.arange(camera.height * s) + 0.5) / s - 0.5
    uu, vv = np.meshgrid(u, v)
    pts = np.stack([uu.ravel(), vv.ravel()], axis=-1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-12)  # converges to 1e-12 px
    und = cv2.undistortPointsIter(pts, camera.K, camera.dist_coeffs, None, None, crit)
    return und.reshape(camera.height * s, camera.width * s, 2).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _texture(board: BoardCfg, px_per_square: int) -> tuple[np.ndarray, float]:
    tex, origin = board_texture(board, px_per_square)
    return tex.astype(np.float32), origin


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """Smooth random field in [0, 1] of the given shape."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    f = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    f = f - f.min()
    return f / max(float(f.max()), 1e-6)


def render_board(camera: CameraModel, board: BoardCfg, rvec: np.ndarray, tvec: np.ndarray,
                 rng: np.random.Generator, render: RenderCfg = RenderCfg()) -> np.ndarray:
    """Grey uint8 image [H, W] of the board at pose (rvec, tvec): board frame -> camera frame [rad, m]."""
    s = render.supersample
    rays = _ray_map(camera, s)
    rot, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    t = np.asarray(tvec, np.float64).reshape(3)
    n = rot[:, 2]
    # ray (x, y, 1) meets the board plane n.(p - t) = 0 at depth lam; board (X, Y) = R[:, :2]^T (p - t)
    lam = float(n @ t) / (rays[..., 0] * n[0] + rays[..., 1] * n[1] + n[2])
    px_per_m = render.px_per_square / board.square_m
    tex, origin = _texture(board, render.px_per_square)
    maps = []
    for axis in range(2):
        r = rot[:, axis]
        coord = (rays[..., 0] * r[0] + rays[..., 1] * r[1] + r[2]) * lam - float(r @ t)
        maps.append(np.where(lam > 0, origin + coord * px_per_m - 0.5, -1e6).astype(np.float32))
    board_img = cv2.remap(tex, maps[0], maps[1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha = cv2.remap(np.ones_like(tex), maps[0], maps[1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    background = 60.0 + 110.0 * _smooth_field(alpha.shape, rng, cells=6)
    hi = alpha * board_img + (1.0 - alpha) * background
    img = cv2.resize(hi, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    light = render.light_min + (1.0 - render.light_min) * _smooth_field(img.shape, rng, cells=3)
    img = img * light + render.ambient
    if render.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), render.blur_sigma_px)
    img = img + rng.normal(0.0, render.noise_sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _rot_about(axis: np.ndarray, angle: float) -> np.ndarray:
    rot, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)
    return rot


def sample_board_poses(camera: CameraModel, board: BoardCfg, n: int, rng: np.random.Generator,
                       cfg: PoseSamplingCfg = PoseSamplingCfg()) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` board poses (rvec, tvec) with the whole square grid in view, spread over the image."""
    w, h = board.size_m
    outline = np.array([[0, 0, 0], [w, 0, 0], [w, h, 0], [0, h, 0]], np.float64)
    centre_b = np.array([w / 2, h / 2, 0.0])
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(200 * n):
        if len(poses) == n:
            break
        target = np.array([rng.uniform(0, camera.width), rng.uniform(0, camera.height)])
        ray = cv2.undistortPoints(target.reshape(1, 1, 2), camera.K, camera.dist_coeffs).reshape(2)
        centre_c = rng.uniform(*cfg.distance_m) * np.array([ray[0], ray[1], 1.0]) / np.linalg.norm([*ray, 1.0])
        # board faces the camera: board z (into the board) along +z_c, then tilt and in-plane roll
        roll = _rot_about(np.array([0.0, 0.0, 1.0]), np.deg2rad(rng.uniform(-cfg.max_roll_deg, cfg.max_roll_deg)))
        tilt_axis = np.array([*rng.normal(size=2), 0.0])
        tilt = _rot_about(tilt_axis, np.deg2rad(cfg.max_tilt_deg) * np.sqrt(rng.uniform()))
        rot = tilt @ roll
        tvec = centre_c - rot @ centre_b
        rvec, _ = cv2.Rodrigues(rot)
        if np.any((outline @ rot.T + tvec)[:, 2] <= 0.05):
            continue
        px, _ = cv2.projectPoints(outline, rvec, tvec, camera.K, camera.dist_coeffs)
        px = px.reshape(-1, 2)
        m = cfg.margin_px
        if np.all((px[:, 0] > m) & (px[:, 0] < camera.width - 1 - m) & (px[:, 1] > m) & (px[:, 1] < camera.height - 1 - m)):
            poses.append((rvec.ravel(), tvec))
    if len(poses) < n:
        raise ValueError(f"could not place {n} boards in view; board {w:.2f}x{h:.2f} m too large for the "
                         f"distance range {cfg.distance_m} m")
    return poses


def true_corners(camera: CameraModel, board: BoardCfg, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """[n_corners, 2] exact projections of the board's inner corners [px]."""
    px, _ = cv2.projectPoints(object_points(board), rvec, tvec, camera.K, camera.dist_coeffs)
    return px.reshape(-1, 2)


def render_views(camera: CameraModel, board: BoardCfg, n: int, seed: int = 0,
                 render: RenderCfg = RenderCfg(),
                 poses: PoseSamplingCfg = PoseSamplingCfg()) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """``n`` rendered views and their true poses (rvec, tvec)."""
    rng = np.random.default_rng(seed)
    sampled = sample_board_poses(camera, board, n, rng, poses)
    images = [render_board(camera, board, rvec, tvec, rng, render) for rvec, tvec in sampled]
    return images, sampled


# --- hand-eye stations ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HandEyeNoiseCfg:
    robot_translation_m: float = 0.0003
    """std of the robot's reported flange position error per axis [m]"""
    robot_rotation_deg: float = 0.03
    """std of the robot's reported flange rotation error per axis [deg]"""
    pixel_sigma: float = 0.2
    """std of the detected board corners, which the board poses are computed from by PnP [px]"""


@dataclasses.dataclass(frozen=True)
class HandEyeDataset:
    mode: str
    X: np.ndarray
    """[4, 4] ground truth: T_gripper_camera (eye_in_hand) or T_base_camera (eye_to_hand)"""
    C: np.ndarray
    """[4, 4] ground truth: T_base_target (eye_in_hand) or T_gripper_target (eye_to_hand)"""
    T_base_gripper: list[np.ndarray]
    """noisy robot poses, as a robot controller reports them"""
    T_camera_target: list[np.ndarray]
    """board poses from PnP on noisy corners"""
    board_poses: list[tuple[np.ndarray, np.ndarray]]
    """exact (rvec, tvec) board -> camera, for rendering images of the stations"""


def _random_T(rng: np.random.Generator, max_angle_rad: float, translation_m: np.ndarray) -> np.ndarray:
    axis = rng.normal(size=3)
    rot, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * rng.uniform(0.3, 1.0) * max_angle_rad)
    return make_T(rot, translation_m)


def synthetic_hand_eye(camera: CameraModel, board: BoardCfg, n: int, mode: str = "eye_in_hand", seed: int = 0,
                       noise: HandEyeNoiseCfg = HandEyeNoiseCfg(),
                       poses: PoseSamplingCfg = PoseSamplingCfg()) -> HandEyeDataset:
    """``n`` stations with known X and C; robot poses and PnP board poses carry noise."""
    rng = np.random.default_rng(seed)
    if mode == "eye_in_hand":
        X = _random_T(rng, np.pi, rng.uniform(-0.08, 0.08, 3))
        C = _random_T(rng, np.pi, np.array([0.6, 0.1, 0.05]))
    else:
        X = _random_T(rng, np.pi, np.array([0.8, -0.3, 0.9]))
        C = _random_T(rng, np.pi, rng.uniform(-0.08, 0.08, 3))
    board_poses = sample_board_poses(camera, board, n, rng, poses)
    obj = object_points(board)
    T_base_gripper, T_camera_target = [], []
    for rvec, tvec in board_poses:
        T_ct = make_T(cv2.Rodrigues(rvec)[0], tvec)
        if mode == "eye_in_hand":
            T_bg = C @ inv_T(T_ct) @ inv_T(X)  # C = T_bg X T_ct
        else:
            T_bg = X @ T_ct @ inv_T(C)  # C = T_bg^-1 X T_ct
        jitter = make_T(cv2.Rodrigues(np.deg2rad(rng.normal(0.0, noise.robot_rotation_deg, 3)))[0],
                        rng.normal(0.0, noise.robot_translation_m, 3))
        T_base_gripper.append(T_bg @ jitter)
        px, _ = cv2.projectPoints(obj, rvec, tvec, camera.K, camera.dist_coeffs)
        px = px.reshape(-1, 2) + rng.normal(0.0, noise.pixel_sigma, (len(obj), 2))
        _, r_est, t_est = cv2.solvePnP(obj, px, camera.K, camera.dist_coeffs, rvec.copy(), tvec.copy(),
                                       useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        T_camera_target.append(make_T(cv2.Rodrigues(r_est)[0], t_est))
    return HandEyeDataset(mode, X, C, T_base_gripper, T_camera_target, board_poses)


# --- flight logs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SensorNoiseCfg:
    pos_m: float = 0.002
    """position noise std [m] (motion capture)"""
    vel_m_s: float = 0.01
    """linear velocity noise std [m/s]"""
    att_rad: float = 0.005
    """attitude noise: std of a random rotation angle per axis [rad]"""
    ang_vel_rad_s: float = 0.02
    """gyro noise std [rad/s]"""


@dataclasses.dataclass(frozen=True)
class FlightCfg:
    dt_s: float = 0.005
    """control and logging period [s]"""
    substeps: int = 5
    """physics substeps per control period [1]"""
    excitation: float = 0.08
    """amplitude of the random binary rotor-command perturbation, fraction of max rpm [1]"""
    yaw_excitation: float = 0.05
    """amplitude of an extra random binary perturbation along the yaw-torque direction (rotors of one spin
    up, the others down), since yaw reacts weakly to per-rotor noise on large vehicles [1]"""
    hold_s: tuple[float, float] = (0.02, 0.25)
    """range of the perturbation's random hold time [s]"""
    waypoint_amp_m: tuple[float, float, float] = (0.8, 0.8, 0.4)
    """amplitude of the multisine position reference per world axis [m]"""
    yaw_amp_rad: float = 0.8
    """amplitude of the multisine yaw reference [rad]"""
    pos_gains: tuple[float, float] = (6.0, 4.0)
    """position loop (kp [1/s^2], kd [1/s])"""
    att_gain: float = 8.0
    """attitude error to body-rate gain [1/s]"""
    rate_gains: tuple[float, float, float] = (25.0, 25.0, 12.0)
    """body-rate loop gains, roll/pitch/yaw [1/s]"""
    segments: int = 1
    """number of independent flights the duration is split into, simulated side by side as one batch
    (faster on a CPU); they are concatenated with a time gap, as a log with dropouts would be [1]"""
    gap_s: float = 1.0
    """time gap between concatenated segments [s]"""


def _multisine(t: np.ndarray, amp: float, freqs_hz: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of sines with total amplitude ``amp`` and its time derivative."""
    w = 2.0 * np.pi * freqs_hz
    a = amp / len(freqs_hz)
    x = a * np.sin(np.outer(t, w) + phases).sum(-1)
    dx = a * (w * np.cos(np.outer(t, w) + phases)).sum(-1)
    return x, dx


def _random_binary(n: int, dt: float, hold_s: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """[n] +-1 sequence switching after random hold times."""
    out = np.empty(n)
    k, sign = 0, 1.0
    while k < n:
        hold = max(1, int(round(rng.uniform(*hold_s) / dt)))
        out[k:k + hold] = sign
        sign = -sign if rng.uniform() < 0.7 else sign
        k += hold
    return out


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _noisy_quat(q: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """[N, 4] quaternions rotated by a random small rotation of std ``std`` per axis [rad]."""
    rotvec = rng.normal(0.0, std, q.shape[:-1] + (3,))
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = rotvec / np.maximum(angle, 1e-12)
    out = _quat_mul(q, np.concatenate([np.cos(angle / 2), axis * np.sin(angle / 2)], axis=-1))
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _references(n: int, cfg: FlightCfg, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multisine position [n, 3], velocity [n, 3] and yaw [n] references for one segment."""
    t = np.arange(n) * cfg.dt_s
    pos, vel = np.zeros((n, 3)), np.zeros((n, 3))
    for axis in range(3):
        pos[:, axis], vel[:, axis] = _multisine(t, cfg.waypoint_amp_m[axis], rng.uniform(0.05, 0.4, 3),
                                                rng.uniform(0, 2 * np.pi, 3))
    pos[:, 2] += 1.5
    yaw, _ = _multisine(t, cfg.yaw_amp_rad, rng.uniform(0.05, 0.3, 3), rng.uniform(0, 2 * np.pi, 3))
    return pos, vel, yaw


def simulate_flight_log(preset, seconds: float = 60.0, noise: SensorNoiseCfg = SensorNoiseCfg(), seed: int = 0,
                        cfg: FlightCfg = FlightCfg(), controller_preset=None) -> dict[str, np.ndarray]:
    """Fly the batched torch quadrotor model (``sim.quadrotor.dynamics``) of ``preset`` for ``seconds``.

    A position -> attitude -> body-rate cascade built on the nominal ``controller_preset`` (default:
    ``preset``; a real firmware does not know the true parameters) tracks a multisine reference, and a
    random binary perturbation on every rotor command excites the motor lags and the yaw torque. The
    controller sees the noisy measurements. Returns the log as CSV columns (see calibration.flightlog).
    """
    import torch  # the simulator; only this function needs it

    from calibration.flightlog import FlightLog, rotmat_wxyz
    from sim.quadrotor.dynamics import QuadState, ctbr_to_rotor_cmd, make_rate_controller, nominal_params, step
    from sim.quadrotor.presets import GRAVITY

    rng = np.random.default_rng(seed)
    nominal = controller_preset or preset
    n_seg, n_rotors = cfg.segments, len(preset.rotor_spin)
    n = int(round(seconds / cfg.segments / cfg.dt_s)) + 1  # samples per segment
    refs = [_references(n, cfg, rng) for _ in range(n_seg)]
    ref_pos = np.stack([r[0] for r in refs], axis=1)  # [n, S, 3]
    ref_vel = np.stack([r[1] for r in refs], axis=1)
    ref_yaw = np.stack([r[2] for r in refs], axis=1)  # [n, S]
    perturb = cfg.excitation * np.stack(
        [_random_binary(n, cfg.dt_s, cfg.hold_s, rng) for _ in range(n_seg * n_rotors)], axis=1).reshape(n, n_seg, n_rotors)
    yaw_dir = -np.asarray(preset.rotor_spin, np.float64)  # reaction torque is -spin * km * rpm^2
    perturb += cfg.yaw_excitation * np.stack([_random_binary(n, cfg.dt_s, cfg.hold_s, rng) for _ in range(n_seg)],
                                             axis=1)[..., None] * yaw_dir

    params = nominal_params(preset, n_seg)
    ctrl = make_rate_controller(nominal, cfg.rate_gains)
    hover_rpm = preset.hover_rpm
    state = QuadState(torch.tensor([[0.0, 0.0, 1.5]]).repeat(n_seg, 1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n_seg, 1),
                      torch.zeros(n_seg, 3), torch.zeros(n_seg, 3), torch.full((n_seg, n_rotors), hover_rpm))
    kp, kd = cfg.pos_gains
    log = {k: np.zeros((n, n_seg, w)) for k, w in (("u", n_rotors), ("pos", 3), ("quat", 4), ("vel", 3), ("omega", 3))}
    gravity = np.array([0.0, 0.0, GRAVITY])
    with torch.no_grad():
        for k in range(n):
            pos = state.pos_w.numpy().astype(np.float64) + rng.normal(0.0, noise.pos_m, (n_seg, 3))
            quat = _noisy_quat(state.quat_wxyz.numpy().astype(np.float64), noise.att_rad, rng)
            vel = state.lin_vel_w.numpy().astype(np.float64) + rng.normal(0.0, noise.vel_m_s, (n_seg, 3))
            omega = state.ang_vel_b.numpy().astype(np.float64) + rng.normal(0.0, noise.ang_vel_rad_s, (n_seg, 3))
            acc_des = kp * (ref_pos[k] - pos) + kd * (ref_vel[k] - vel) + gravity  # [S, 3]
            rot = rotmat_wxyz(quat)
            z_des = acc_des / np.linalg.norm(acc_des, axis=-1, keepdims=True)
            x_c = np.stack([np.cos(ref_yaw[k]), np.sin(ref_yaw[k]), np.zeros(n_seg)], axis=-1)
            y_des = np.cross(z_des, x_c)
            y_des /= np.linalg.norm(y_des, axis=-1, keepdims=True)
            rot_des = np.stack([np.cross(y_des, z_des), y_des, z_des], axis=-1)
            # attitude error e_R = vee(R_des^T R - R^T R_des) / 2 (Lee et al. 2010)
            err = 0.5 * (np.swapaxes(rot_des, 1, 2) @ rot - np.swapaxes(rot, 1, 2) @ rot_des)
            rates_des = -cfg.att_gain * np.stack([err[:, 2, 1], err[:, 0, 2], err[:, 1, 0]], axis=-1)
            thrust = nominal.mass_kg * np.einsum("si,si->s", acc_des, rot[:, :, 2])
            u = ctbr_to_rotor_cmd(torch.tensor(thrust[:, None], dtype=torch.float32),
                                  torch.tensor(rates_des, dtype=torch.float32),
                                  torch.tensor(omega, dtype=torch.float32), ctrl).numpy()
            u = np.clip(u + perturb[k], 0.0, 1.0)
            for key, val in (("u", u), ("pos", pos), ("quat", quat), ("vel", vel), ("omega", omega)):
                log[key][k] = val
            state = step(state, torch.tensor(u, dtype=torch.float32), params, cfg.dt_s, cfg.substeps)
    seg_t = np.arange(n) * cfg.dt_s
    t = np.concatenate([seg_t + s * (seg_t[-1] + cfg.gap_s) for s in range(n_seg)])

    def cat(key: str) -> np.ndarray:
        return np.concatenate([log[key][:, s] for s in range(n_seg)], axis=0)

    return FlightLog(t, cat("u"), cat("pos"), cat("quat"), cat("vel"), cat("omega")).columns()
