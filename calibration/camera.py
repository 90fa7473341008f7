"""Camera intrinsics and plumb_bob distortion from board views, with per-view outlier rejection.

Pipeline: detect the board in every image (:func:`calibration.boards.detect_board`; unusable views are
rejected with a reason), ``cv2.calibrateCameraExtended`` on the rest, then repeatedly drop the worst
view while its RMS reprojection error is far above the others (``CameraCalibCfg``) and recalibrate.
The result carries per-view errors, what was rejected and why, and a coverage map of where corners
were seen (poor coverage near the image border is the usual cause of a wrong k1/k2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from calibration.boards import (BoardCfg, CalibrationError, Detection, DetectionCfg, Rejection, detect_board,
                                 object_points)
from calibration.files import CameraSection

COVERAGE_GRID = (8, 6)
"""(columns, rows) of the image grid over which coverage is counted"""


@dataclasses.dataclass(frozen=True)
class CameraCalibCfg:
    min_views: int = 8
    """fewest usable views; fewer is an error [1]"""
    fix_k3: bool = True
    """keep k3 = 0 (as ROS camera_calibration does by default); free k3 needs views in the image corners"""
    outlier_factor: float = 3.0
    """a view is an outlier when its RMS error exceeds this multiple of the median view RMS [1]"""
    outlier_floor_px: float = 0.5
    """... and also exceeds this absolute RMS error [px]"""
    max_outlier_fraction: float = 0.3
    """never drop more than this fraction of the usable views as outliers [1]"""
    alpha: float = 0.0
    """free scaling for the rectified projection matrix P (0: only valid pixels, 1: all source pixels)"""


@dataclasses.dataclass(frozen=True)
class CameraCalibration:
    image_size: tuple[int, int]
    """(width, height) [px]"""
    K: np.ndarray
    """[3, 3] camera matrix [px]"""
    dist: np.ndarray
    """[5] plumb_bob (k1, k2, p1, p2, k3) [1]"""
    P: np.ndarray
    """[3, 4] projection matrix of the rectified image (ROS camera_info P) [px]"""
    rms_px: float
    """RMS reprojection error over all corners of the views used [px]"""
    intrinsics_sigma_px: dict[str, float]
    """standard deviation of fx, fy, cx, cy from the calibration's covariance [px]"""
    view_rms_px: dict[str, float]
    """RMS reprojection error per view used [px]"""
    rejected: tuple[Rejection, ...]
    """views not used and why (detection failures and reprojection outliers)"""
    coverage: float
    """fraction of COVERAGE_GRID cells in which at least one corner was seen [1]"""
    n_corners: int
    """total corners used [1]"""

    @property
    def views_used(self) -> list[str]:
        return list(self.view_rms_px)


def detect_views(images: Iterable[tuple[str, np.ndarray]], board: BoardCfg,
                 det: DetectionCfg = DetectionCfg()) -> tuple[list[Detection], list[Rejection]]:
    """Detect the board in every (name, image); returns the usable detections and the rejections."""
    found: list[Detection] = []
    rejected: list[Rejection] = []
    size: tuple[int, int] | None = None
    for name, image in images:
        result = detect_board(image, board, name, det)
        if isinstance(result, Rejection):
            rejected.append(result)
            continue
        if size is not None and result.image_size != size:
            rejected.append(Rejection(name, f"image size {result.image_size} differs from the first view's {size}"))
            continue
        size = result.image_size
        found.append(result)
    return found, rejected


def _calibrate(views: Sequence[Detection], board: BoardCfg, cfg: CameraCalibCfg):
    obj = object_points(board)
    obj_pts = [obj[d.ids].astype(np.float32).reshape(-1, 1, 3) for d in views]
    img_pts = [d.corners_px.astype(np.float32).reshape(-1, 1, 2) for d in views]
    flags = cv2.CALIB_FIX_K3 if cfg.fix_k3 else 0
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, K, dist, _, _, std_intrinsics, _, per_view = cv2.calibrateCameraExtended(
            obj_pts, img_pts, views[0].image_size, None, None, flags=flags, criteria=crit)
    except cv2.error as e:
        raise CalibrationError(f"OpenCV could not calibrate from these {len(views)} views ({e.err}); "
                               "take views with the board tilted in different directions") from e
    return float(rms), K, dist.ravel(), std_intrinsics.ravel(), per_view.ravel()


def calibrate_camera(views: Sequence[Detection], board: BoardCfg, cfg: CameraCalibCfg = CameraCalibCfg(),
                     rejected: Sequence[Rejection] = ()) -> CameraCalibration:
    """Intrinsics and distortion from board detections (all from one camera at one resolution)."""
    views = list(views)
    if len(views) < cfg.min_views:
        listed = f" ({len(rejected)} rejected, listed above)" if rejected else ""
        raise CalibrationError(f"only {len(views)} usable view(s){listed}; need at least {cfg.min_views}: take more "
                               "pictures of the board at different angles and positions",
                               details=[f"rejected {r.name}: {r.reason}" for r in rejected])
    rejected = list(rejected)
    max_drop = int(cfg.max_outlier_fraction * len(views))
    while True:
        rms, K, dist, std, per_view = _calibrate(views, board, cfg)
        worst = int(np.argmax(per_view))
        limit = max(cfg.outlier_factor * float(np.median(per_view)), cfg.outlier_floor_px)
        if per_view[worst] <= limit or max_drop == 0 or len(views) - 1 < cfg.min_views:
            break
        rejected.append(Rejection(views[worst].name, f"reprojection outlier: RMS {per_view[worst]:.2f} px "
                                                     f"> {limit:.2f} px"))
        views.pop(worst)
        max_drop -= 1
    size = views[0].image_size
    new_K, _ = cv2.getOptimalNewCameraMatrix(K, dist, size, cfg.alpha, size)
    P = np.concatenate([new_K, np.zeros((3, 1))], axis=1)
    return CameraCalibration(
        image_size=size, K=K, dist=dist, P=P, rms_px=rms,
        intrinsics_sigma_px={name: float(v) for name, v in zip(("fx", "fy", "cx", "cy"), std[:4])},
        view_rms_px={d.name: float(e) for d, e in zip(views, per_view)},
        rejected=tuple(rejected), coverage=coverage_fraction(views, size),
        n_corners=int(sum(len(d.ids) for d in views)))


def coverage_fraction(views: Sequence[Detection], image_size: tuple[int, int]) -> float:
    """Fraction of the COVERAGE_GRID cells that hold at least one detected corner [1]."""
    cols, rows = COVERAGE_GRID
    w, h = image_size
    hit = np.zeros((rows, cols), bool)
    for d in views:
        c = np.clip((d.corners_px[:, 0] * cols / w).astype(int), 0, cols - 1)
        r = np.clip((d.corners_px[:, 1] * rows / h).astype(int), 0, rows - 1)
        hit[r, c] = True
    return float(hit.mean())


def coverage_image(views: Sequence[Detection], image_size: tuple[int, int]) -> np.ndarray:
    """BGR uint8 image: the detected corners of every view (one colour per view) and the coverage grid,
    cells without any corner shaded red."""
    w, h = image_size
    img = np.full((h, w, 3), 255, np.uint8)
    cols, rows = COVERAGE_GRID
    hit = np.zeros((rows, cols), bool)
    for d in views:
        c = np.clip((d.corners_px[:, 0] * cols / w).astype(int), 0, cols - 1)
        r = np.clip((d.corners_px[:, 1] * rows / h).astype(int), 0, rows - 1)
        hit[r, c] = True
    for r in range(rows):
        for c in range(cols):
            if not hit[r, c]:
                x0, y0 = c * w // cols, r * h // rows
                cv2.rectangle(img, (x0, y0), ((c + 1) * w // cols, (r + 1) * h // rows), (210, 210, 255), -1)
    for c in range(1, cols):
        cv2.line(img, (c * w // cols, 0), (c * w // cols, h - 1), (200, 200, 200), 1)
    for r in range(1, rows):
        cv2.line(img, (0, r * h // rows), (w - 1, r * h // rows), (200, 200, 200), 1)
    for i, d in enumerate(views):
        hue = int(180 * i / max(len(views), 1))
        colour = cv2.cvtColor(np.uint8([[[hue, 220, 200]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        for x, y in d.corners_px:
            cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
    cv2.putText(img, f"{len(views)} views, coverage {100 * coverage_fraction(views, image_size):.0f}%",
                (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_coverage_png(path, views: Sequence[Detection], image_size: tuple[int, int]) -> None:
    if not cv2.imwrite(str(path), coverage_image(views, image_size)):
        raise OSError(f"could not write the coverage image {path}")


def board_pose(detection: Detection, board: BoardCfg, K: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Board pose in the camera frame (R [3, 3], t [3] m) by PnP, and its RMS reprojection error [px]."""
    obj = object_points(board)[detection.ids]
    img = detection.corners_px.reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError(f"{detection.name}: PnP failed for the board")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - detection.corners_px) ** 2, axis=1))))
    R, _ = cv2.Rodrigues(rvec)
    return R, tvec.ravel(), err


def camera_section(calib: CameraCalibration, camera_name: str) -> CameraSection:
    """The calibration-file section (ROS camera_info layout plus figures of merit)."""
    return CameraSection(
        camera_name=camera_name, image_width=calib.image_size[0], image_height=calib.image_size[1],
        K=tuple(float(x) for x in calib.K.ravel()), dist=tuple(float(x) for x in calib.dist.ravel()),
        R=tuple(float(x) for x in np.eye(3).ravel()), P=tuple(float(x) for x in calib.P.ravel()),
        rms_px=calib.rms_px, intrinsics_sigma_px=dict(calib.intrinsics_sigma_px),
        views_used=len(calib.view_rms_px), views_rejected=len(calib.rejected), coverage=calib.coverage)
