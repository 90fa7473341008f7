"""The batched depth camera: per-env camera draws, rendering, sensor effects, pooling.

    cam = DepthCamera(DepthCameraCfg(), CameraRandomizationCfg(...), device, compile=True)
    params = cam.sample(num_envs, generator)            # per env: intrinsics and mount (redraw per episode)
    depth = cam.render(scene, pos_w, quat_wxyz, params, generator)   # [E, H, W] float32 metres
    obs = pool_nearest(for_network(depth, cam.cfg), (12, 16))

Output convention (REP 118 32FC1, special values as REP 117): z-depth along the optical axis [m];
+inf: no return up to max_range_m; -inf: a return nearer than min_range_m; NaN: a dropout (invalid
pixel). Sensor effects in this order: the true depth is classified against the range limits; in-range
pixels get range-proportional Gaussian noise z (1 + sigma n), clamped to [min_range_m, max_range_m] so
the noise never changes a pixel's class; then dropouts set random pixels to NaN. :func:`for_network`
maps the special values to finite numbers for a network.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F

from sim.camera import raycast
from sim.camera.config import R_LINK_OPTICAL, CameraRandomizationCfg, DepthCameraCfg
from sim.camera.scene import Scene
from sim.math import quat_to_rotmat


@dataclasses.dataclass(frozen=True)
class CameraParams:
    """One camera per env, as drawn for an episode."""

    fx: torch.Tensor
    """[E] focal length along u [px]"""
    fy: torch.Tensor
    """[E] focal length along v [px]"""
    cx: torch.Tensor
    """[E] principal point u [px]"""
    cy: torch.Tensor
    """[E] principal point v [px]"""
    position_b: torch.Tensor
    """[E, 3] camera centre in the body frame [m]"""
    rot_bc: torch.Tensor
    """[E, 3, 3] optical frame in the body frame (columns: optical x, y, z in FLU)"""


def rpy_to_rotmat(rpy: torch.Tensor) -> torch.Tensor:
    """URDF roll-pitch-yaw [..., 3] -> R = Rz(yaw) Ry(pitch) Rx(roll) [..., 3, 3]."""
    cr, cp, cy = torch.cos(rpy).unbind(-1)
    sr, sp, sy = torch.sin(rpy).unbind(-1)
    r = torch.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
                     sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
                     -sp, cp * sr, cp * cr], -1)
    return r.reshape(rpy.shape[:-1] + (3, 3))


def sample_params(cfg: DepthCameraCfg, rand: CameraRandomizationCfg, num_envs: int,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> CameraParams:
    """Per-env intrinsics and mount: the nominal of ``cfg`` randomized by ``rand``."""
    n, k = num_envs, cfg.intrinsics

    def uni(rng: tuple[float, float], *shape: int) -> torch.Tensor:
        u = torch.rand(n, *shape, generator=generator, device=device, dtype=dtype)
        return rng[0] + (rng[1] - rng[0]) * u

    fx = k.fx * uni(rand.focal_scale)
    fy = k.fy * uni(rand.focal_scale)
    cx = k.cx + uni(rand.principal_shift_px)
    cy = k.cy + uni(rand.principal_shift_px)
    pos = torch.tensor(cfg.mount.position_b_m, device=device, dtype=dtype) + uni(rand.mount_position_m, 3)
    rpy = torch.tensor(cfg.mount.rpy_rad, device=device, dtype=dtype) + uni(rand.mount_rotation_rad, 3)
    rot_bc = rpy_to_rotmat(rpy) @ torch.tensor(R_LINK_OPTICAL, device=device, dtype=dtype)
    return CameraParams(fx, fy, cx, cy, pos, rot_bc)


def camera_pose_w(params: CameraParams, pos_w: torch.Tensor, quat_wxyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(camera centre o_w [E, 3], R_wc [E, 3, 3]) of bodies at pos_w [E, 3], quat_wxyz [E, 4] (body -> world)."""
    rot_wb = quat_to_rotmat(quat_wxyz)
    return pos_w + (rot_wb @ params.position_b[..., None])[..., 0], rot_wb @ params.rot_bc


# The intersections must stay one loop nest per kind with the min over K innermost: by default inductor
# stores reused or long intermediates ([E, T, K, P] each, hundreds of MB at 1k envs) and reads them back,
# which made the kernel memory-bound at ~600 frames/s. Raising the realize thresholds keeps every
# intermediate in registers. max_fusion_size: inductor stops fusing at 64 nodes by default; fp
# contraction lets the C++ compiler emit FMAs (as sim/quadrotor/fused.py does).
INDUCTOR_OPTIONS = {"max_fusion_size": 1 << 20, "cpp.enable_floating_point_contract_flag": "fast",
                    "realize_reads_threshold": 1 << 20, "realize_opcount_threshold": 1 << 20,
                    "realize_acc_reads_threshold": 1 << 20}


def _fresh(fn):
    """A copy of ``fn`` with its own code object (dynamo keys its compile cache on the code object)."""
    return type(fn)(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _kind_kernel(kind: str) -> Callable[..., torch.Tensor]:
    def kernel(dx, dy, dz, inv_dz, packed, row_env, idx):
        return raycast.rows_depth(kind, dx, dy, dz, inv_dz, packed, row_env, idx)
    return kernel


class DepthCamera:
    """Renders depth for a batch of envs; holds only the config, pixel grids and compiled kernels."""

    def __init__(self, cfg: DepthCameraCfg = DepthCameraCfg(), rand: CameraRandomizationCfg = CameraRandomizationCfg(),
                 device: torch.device | str = "cpu", compile: bool = False, dtype: torch.dtype = torch.float32):
        self.cfg, self.rand, self.device, self.dtype = cfg, rand, torch.device(device), dtype
        k = cfg.intrinsics
        u, v = raycast.tile_pixels(k.width, k.height, cfg.tile_w, cfg.tile_h)
        self._u, self._v = u.to(self.device, dtype), v.to(self.device, dtype)
        rows, cols = cfg.tiles
        self._tile_lo_u = (torch.arange(cols) * cfg.tile_w).repeat(rows).to(self.device, dtype)  # [T]
        self._tile_lo_v = (torch.arange(rows) * cfg.tile_h).repeat_interleave(cols).to(self.device, dtype)
        self._kernels: dict[str, Callable[..., torch.Tensor]] = {}
        for kind in raycast.KERNELS:
            self._kernels[kind] = _kind_kernel(kind)
        self._ground: Callable[..., torch.Tensor] = raycast.ground_depth
        self._rays: Callable[..., tuple[torch.Tensor, ...]] = raycast.row_rays
        if compile:
            # one code object per compiled function: dynamo counts recompiles per code object
            # (a functools.partial would share torch.compile's wrapper code object across the kinds)
            self._kernels = {kind: torch.compile(_fresh(_kind_kernel(kind)), options=INDUCTOR_OPTIONS)
                             for kind in raycast.KERNELS}
            self._ground = torch.compile(_fresh(raycast.ground_depth), dynamic=False, options=INDUCTOR_OPTIONS)
            self._rays = torch.compile(_fresh(raycast.row_rays), options=INDUCTOR_OPTIONS)

    def sample(self, num_envs: int, generator: torch.Generator | None = None) -> CameraParams:
        return sample_params(self.cfg, self.rand, num_envs, generator, self.device, self.dtype)

    def nominal(self, num_envs: int) -> CameraParams:
        """Every env with the nominal intrinsics and mount (no randomization)."""
        return sample_params(self.cfg, CameraRandomizationCfg(), num_envs, None, self.device, self.dtype)

    def tile_bounds(self, p: CameraParams) -> torch.Tensor:
        """[E, T, 4] (x/z min, x/z max, y/z min, y/z max) of each tile's pixel-centre rays."""
        cfg = self.cfg
        fx, fy, cx, cy = (t[:, None] for t in (p.fx, p.fy, p.cx, p.cy))
        return torch.stack([(self._tile_lo_u - cx) / fx, (self._tile_lo_u + cfg.tile_w - 1 - cx) / fx,
                            (self._tile_lo_v - cy) / fy, (self._tile_lo_v + cfg.tile_h - 1 - cy) / fy], -1)

    def render_raw(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
                   cull: bool = True) -> torch.Tensor:
        """True z-depth [E, H, W] [m], +inf where nothing is hit (no sensor effects). With ``cull``, a
        primitive whose bounding sphere lies wholly beyond max_range_m is not tested, so the raw image
        may read +inf where the unculled one reads a depth beyond the range; :meth:`render` is equal."""
        o_w, rot_wc = camera_pose_w(params, pos_w, quat_wxyz)
        rot9 = rot_wc.reshape(-1, 9).contiguous()
        packs = (raycast.pack_spheres(scene.spheres, scene.sphere_valid, o_w),
                 raycast.pack_cylinders(scene.cylinders, scene.cylinder_valid, o_w),
                 raycast.pack_boxes(scene.boxes, scene.box_valid, o_w))
        e, t = scene.num_envs, self._u.shape[0]
        intr = (params.fx, params.fy, params.cx, params.cy)
        depth = self._ground(self._u, self._v, *intr, rot9, scene.ground_z_w - o_w[:, 2])  # [E, T, P]
        flat = depth.view(e * t, -1)
        masks = (scene.sphere_valid, scene.cylinder_valid, scene.box_valid)
        bounds = self.tile_bounds(params) if cull else None
        for (kind, kernel), packed, (centre, radius), valid in zip(self._kernels.items(), packs,
                                                                   raycast.bounding_spheres(scene), masks):
            if cull:
                lists = raycast.work_lists(raycast.tile_visible(centre, radius, valid, o_w, rot_wc, bounds,
                                                                self.cfg.max_range_m))
            else:
                lists = raycast.all_rows(e * t, valid.shape[1], self.device)
            for rows, idx in lists:
                if rows.numel() == 1:  # one row would be its own compiled shape: test it twice
                    rows, idx = rows.repeat(2), idx.repeat(1, 2)
                row_env, row_tile = rows // t, rows % t
                for x, dim in ((row_env, 0), (row_tile, 0), (idx, 1)) + (((idx, 0),) if idx.shape[0] > 1 else ()):
                    torch._dynamo.maybe_mark_dynamic(x, dim)  # one graph for every bucket size
                rays = self._rays(self._u, self._v, *intr, rot9, row_env, row_tile)
                hit = kernel(*rays, packed, row_env, idx)
                flat[rows] = torch.minimum(flat[rows], hit)
        k = self.cfg.intrinsics
        return raycast.untile(depth, k.width, k.height, self.cfg.tile_w, self.cfg.tile_h)

    def render(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
               generator: torch.Generator | None = None, cull: bool = True) -> torch.Tensor:
        """Measured depth [E, H, W] [m] with range limits, noise and dropouts (module docstring)."""
        raw = self.render_raw(scene, pos_w, quat_wxyz, params, cull)
        return sensor_effects(raw, self.cfg, self.rand, generator)


def sensor_effects(depth: torch.Tensor, cfg: DepthCameraCfg, rand: CameraRandomizationCfg,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Range limits, range-proportional noise and dropouts on true z-depth [E, H, W] (module docstring)."""
    lo, hi = cfg.min_range_m, cfg.max_range_m
    in_range = (depth >= lo) & (depth <= hi)
    out = depth
    if rand.depth_noise_rel > 0:
        n = torch.randn(depth.shape, generator=generator, device=depth.device, dtype=depth.dtype)
        out = torch.where(in_range, (depth * (1.0 + rand.depth_noise_rel * n)).clamp(lo, hi), depth)
    out = torch.where(in_range, out, torch.where(depth < lo, -math.inf, math.inf))
    if rand.dropout_prob > 0:
        drop = torch.rand(depth.shape, generator=generator, device=depth.device) < rand.dropout_prob
        out = out.masked_fill(drop, math.nan)
    return out


def for_network(depth: torch.Tensor, cfg: DepthCameraCfg, invalid_m: float = 0.0) -> torch.Tensor:
    """Finite depth for a network: +inf -> max_range_m, -inf -> min_range_m, NaN -> invalid_m [m]."""
    return torch.nan_to_num(depth, nan=invalid_m, posinf=cfg.max_range_m, neginf=cfg.min_range_m)


def pool_nearest(depth: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """[E, H, W] -> [E, h, w]: the nearest depth in each block (a max-pool of -depth; conservative for
    obstacle avoidance, as DiffPhysDrone's max-pool of inverse depth). NaN pixels are ignored unless a
    whole block is NaN. H and W must be multiples of h and w."""
    h, w = out_hw
    if depth.shape[-2] % h or depth.shape[-1] % w:
        raise ValueError(f"pool_nearest: {tuple(depth.shape[-2:])} is not a multiple of {out_hw}")
    nan = torch.isnan(depth)
    x = -torch.where(nan, math.inf, depth)
    kernel = (depth.shape[-2] // h, depth.shape[-1] // w)
    pooled = -F.max_pool2d(x[:, None], kernel)[:, 0]
    all_nan = F.max_pool2d(nan[:, None].to(depth.dtype), kernel)[:, 0] > 0
    all_nan &= -F.max_pool2d(-nan[:, None].to(depth.dtype), kernel)[:, 0] > 0
    return torch.where(all_nan, math.nan, pooled)


def max_pool(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """[E, H, W] -> [E, h, w] block maximum (e.g. of inverse depth); H, W multiples of h, w."""
    h, w = out_hw
    if x.shape[-2] % h or x.shape[-1] % w:
        raise ValueError(f"max_pool: {tuple(x.shape[-2:])} is not a multiple of {out_hw}")
    return F.max_pool2d(x[:, None], (x.shape[-2] // h, x.shape[-1] // w))[:, 0]
