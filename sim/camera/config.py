"""Depth camera configuration: intrinsics (pinhole or a calibration file), mount, range, randomization.

Frames (REP 103 / REP 105):
- body: FLU (x forward, y left, z up), as the rest of sim/;
- ``camera_link``: the camera housing, FLU like the body; the mount gives its pose in the body frame
  (``position_b_m`` and URDF-style ``rpy_rad``: R = Rz(yaw) Ry(pitch) Rx(roll); pitch > 0 tilts the
  camera DOWN, because +y is left);
- camera optical frame (``_c``): z forward, x right, y down, fixed to ``camera_link`` by
  :data:`R_LINK_OPTICAL`. Pixel (u, v) (u right, v down, integer at the pixel centre as in OpenCV and
  ROS camera_info) looks along ((u - cx) / fx, (v - cy) / fy, 1) in the optical frame.

Depth is z-depth along the optical axis in metres (REP 118 32FC1), not the length of the ray.
Special values follow REP 117 / REP 118 (:class:`DepthCameraCfg`): +inf no return within ``max_range_m``,
-inf a return nearer than ``min_range_m``, NaN an invalid pixel (a dropout). Nothing else is non-finite.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml

from calibration.files import CameraSection, load_calibration, parse_camera_info

R_LINK_OPTICAL = ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))
"""rotation of the optical frame in camera_link (columns: optical x, y, z in FLU): z_c = x_link
(forward), x_c = -y_link (right), y_c = -z_link (down)"""

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class PinholeCfg:
    """An ideal pinhole camera (no distortion), in the pixel convention of OpenCV / ROS camera_info."""

    width: int
    """image width [px]"""
    height: int
    """image height [px]"""
    fx: float
    """focal length along u [px]"""
    fy: float
    """focal length along v [px]"""
    cx: float
    """principal point u, pixel centres at integers [px]"""
    cy: float
    """principal point v [px]"""

    def __post_init__(self):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"PinholeCfg: image size must be >= 1 px, got {self.width}x{self.height}")
        for name in ("fx", "fy", "cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"PinholeCfg.{name}: must be finite, got {getattr(self, name)}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"PinholeCfg: focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_rad: float) -> "PinholeCfg":
        """Square pixels, principal point at the image centre, horizontal field of view ``hfov_rad``."""
        if not 0.0 < hfov_rad < math.pi:
            raise ValueError(f"hfov_rad must be in (0, pi), got {hfov_rad}")
        f = 0.5 * width / math.tan(0.5 * hfov_rad)
        return cls(width, height, f, f, 0.5 * (width - 1), 0.5 * (height - 1))

    @classmethod
    def from_camera_section(cls, cam: CameraSection, width: int | None = None,
                            height: int | None = None) -> "PinholeCfg":
        """Intrinsics of the rectified image (camera_info P, the image a ROS pipeline hands on after
        rectification; distortion is not simulated), rescaled to ``width`` x ``height`` when given."""
        fx, cx, fy, cy = cam.P[0], cam.P[2], cam.P[5], cam.P[6]
        w = cam.image_width if width is None else width
        h = cam.image_height if height is None else height
        sx, sy = w / cam.image_width, h / cam.image_height
        # pixel centres at integers: the image edge -0.5 maps to -0.5
        return cls(w, h, fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)

    @classmethod
    def from_file(cls, path: str | Path, width: int | None = None, height: int | None = None) -> "PinholeCfg":
        """From a Tether calibration file (its ``camera`` section) or a bare ROS camera_info YAML."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"camera file {path} does not exist")
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "schema_version" in data:
            cam = load_calibration(path).camera
            if cam is None:
                raise ValueError(f"{path}: the calibration file has no camera section")
            return cls.from_camera_section(cam, width, height)
        try:
            w0, h0, name, K, dist, R, P = parse_camera_info(data, path="camera_info")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        section = CameraSection(name, w0, h0, K, dist, R, P, rms_px=0.0, intrinsics_sigma_px={},
                                views_used=0, views_rejected=0, coverage=0.0)
        return cls.from_camera_section(section, width, height)


@dataclasses.dataclass(frozen=True)
class MountCfg:
    """Pose of camera_link in the body frame (module docstring: frames)."""

    position_b_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """camera centre in the body frame (FLU) [m]"""
    rpy_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """roll, pitch, yaw of camera_link in the body frame, URDF convention; pitch > 0 looks down [rad]"""


@dataclasses.dataclass(frozen=True)
class DepthCameraCfg:
    intrinsics: PinholeCfg = PinholeCfg.from_hfov(64, 48, math.radians(90.0))
    """nominal intrinsics and image size [px]"""
    mount: MountCfg = MountCfg()
    """nominal mount in the body frame"""
    min_range_m: float = 0.1
    """nearer returns read -inf (REP 117: too close to quantify) [m]"""
    max_range_m: float = 20.0
    """no return up to here reads +inf (REP 117: nothing in range) [m]"""
    tile_w: int = 8
    """culling tile width; must divide the image width [px]"""
    tile_h: int = 8
    """culling tile height; must divide the image height [px]"""

    def __post_init__(self):
        if not 0.0 <= self.min_range_m < self.max_range_m or not math.isfinite(self.max_range_m):
            raise ValueError(f"DepthCameraCfg: need 0 <= min_range_m < max_range_m < inf, got "
                             f"{self.min_range_m}, {self.max_range_m}")
        w, h = self.intrinsics.width, self.intrinsics.height
        if self.tile_w < 1 or self.tile_h < 1 or w % self.tile_w or h % self.tile_h:
            raise ValueError(f"DepthCameraCfg: tiles {self.tile_w}x{self.tile_h} must divide the image {w}x{h}")

    @property
    def tiles(self) -> tuple[int, int]:
        """(rows, columns) of culling tiles"""
        return self.intrinsics.height // self.tile_h, self.intrinsics.width // self.tile_w


@dataclasses.dataclass(frozen=True)
class CameraRandomizationCfg:
    """Per-env draws, uniform in [low, high] unless said otherwise; (1, 1) / 0 switch a term off."""

    focal_scale: Range = (1.0, 1.0)
    """multiplies fx and fy, drawn apart [1]"""
    principal_shift_px: Range = (0.0, 0.0)
    """added to cx and cy, drawn apart [px]"""
    mount_position_m: Range = (0.0, 0.0)
    """added to each axis of the mount position [m]"""
    mount_rotation_rad: Range = (0.0, 0.0)
    """added to each of the mount's roll, pitch, yaw [rad]"""
    depth_noise_rel: float = 0.0
    """std of the Gaussian depth noise as a fraction of the depth (sigma = this * z) [1]"""
    dropout_prob: float = 0.0
    """probability that a pixel is invalid (NaN) in a frame [1]"""

    def __post_init__(self):
        for name in ("focal_scale", "principal_shift_px", "mount_position_m", "mount_rotation_rad"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"CameraRandomizationCfg.{name}: need finite low <= high, got {(lo, hi)}")
        if self.focal_scale[0] <= 0:
            raise ValueError(f"CameraRandomizationCfg.focal_scale: must be > 0, got {self.focal_scale}")
        if not 0.0 <= self.depth_noise_rel < 1.0:
            raise ValueError(f"CameraRandomizationCfg.depth_noise_rel: must be in [0, 1), got {self.depth_noise_rel}")
        if not 0.0 <= self.dropout_prob <= 1.0:
            raise ValueError(f"CameraRandomizationCfg.dropout_prob: must be in [0, 1], got {self.dropout_prob}")
