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
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
import torch.nn.functional as F

from sim.camera import raycast
from sim.camera.config import R_LINK_OPTICAL, CameraRandomizationCfg, DepthCameraCfg
from sim.camera.scene import Scene
from sim.kernel_cache import release_gil_in_cpu_kernels, use_kernel_cache
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


def prepare(u: torch.Tensor, v: torch.Tensor, tile_lo_u: torch.Tensor, tile_lo_v: torch.Tensor, scene: Scene,
            pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams, tile_w: int, tile_h: int,
            max_range_m: float):
    """Everything of a culled frame before the intersections, one graph of static shapes: the camera pose,
    the ground's height below the camera [E] (its depth is drawn in :func:`finish`), each kind's packed primitives and work plan (raycast.cull_plan), and
    all bucket sizes in one tensor (the frame's only host sync reads it)."""
    o_w, rot_wc = camera_pose_w(params, pos_w, quat_wxyz)
    rot9 = rot_wc.reshape(-1, 9)
    e = scene.num_envs
    ground_rel = scene.ground_z_w - o_w[:, 2]
    packs = (raycast.pack_spheres(scene.spheres, scene.sphere_valid, o_w),
             raycast.pack_cylinders(scene.cylinders, scene.cylinder_valid, o_w),
             raycast.pack_boxes(scene.boxes, scene.box_valid, o_w))
    bounds, keep = raycast.screen_bounds(scene, o_w, rot_wc, params.fx, params.fy, params.cx, params.cy, max_range_m)
    valid = (scene.sphere_valid, scene.cylinder_valid, scene.box_valid)
    # one visibility test for all kinds (one loop vectorized along all primitives), split after
    # as int32 at once: compiled, a stored bool tensor is converted lane by lane (7x slower at 1k envs)
    mask = raycast.tile_visible(bounds, keep, tile_lo_u, tile_lo_v, tile_w, tile_h).to(torch.int32)
    plans = tuple(raycast.cull_plan(part) for part in mask.split([v.shape[1] for v in valid], -1))
    return rot9, ground_rel, packs, plans, torch.cat([p.sizes for p in plans])


def finish(u: torch.Tensor, v: torch.Tensor, intr: tuple[torch.Tensor, ...], rot9: torch.Tensor,
           ground_rel: torch.Tensor, hits: tuple[torch.Tensor, ...], positions: tuple[torch.Tensor, ...], width: int,
           height: int, tile_w: int, tile_h: int, effects: tuple[float, float, float] | None,
           noise: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor:
    """The nearest of the ground (raycast.ground_depth of pixels u, v [T, P], cameras intr = (fx, fy,
    cx, cy) [E] and R_wc rot9 [E, 9], ground_rel [E]) and each kind's hits (raycast.place_hits) as an
    image, with the sensor effects (range limits, noise, dropouts: :func:`apply_sensor_effects`) when ``effects`` =
    (min_range_m, max_range_m, depth_noise_rel) is given; noise and drop [E, H, W].

    Returns [E, H / tile_h, tile_h, W / tile_w, tile_w], contiguous: the image [E, H, W] by a reshape
    (a view). Computed in that shape, the compiled loops run over contiguous rows of tile_w pixels;
    an [E, H, W] result made inductor emit one scalar loop with an integer division and modulo per
    pixel index, a third of a compiled frame. The ground is drawn here, in the same loop, rather than
    stored per pixel before the intersections and read back."""
    depth = raycast.ground_depth(u, v, *intr, rot9, ground_rel).reshape(rot9.shape[0] * u.shape[0], -1)
    for h, pos in zip(hits, positions):
        depth = raycast.place_hits(depth, h, pos)
    rows, cols = height // tile_h, width // tile_w
    e = depth.shape[0] // (rows * cols)
    image = depth.view(e, rows, cols, tile_h, tile_w).permute(0, 1, 3, 2, 4)
    if effects is not None:
        shape = (e, rows, tile_h, cols, tile_w)
        image = apply_sensor_effects(image, *effects, None if noise is None else noise.view(shape),
                                     None if drop is None else drop.view(shape))
    return image.contiguous()


# The intersections must stay one loop nest per kind with the min over K innermost: by default inductor
# stores reused or long intermediates ([E, T, K, P] each, hundreds of MB at 1k envs) and reads them back,
# which made the kernel memory-bound at ~600 frames/s. Raising the realize thresholds keeps every
# intermediate in registers. max_fusion_size: inductor stops fusing at 64 nodes by default; fp
# contraction lets the C++ compiler emit FMAs (as sim/quadrotor/fused.py does).
INDUCTOR_OPTIONS = {"max_fusion_size": 1 << 20, "cpp.enable_floating_point_contract_flag": "fast",
                    "realize_reads_threshold": 1 << 20, "realize_opcount_threshold": 1 << 20,
                    "realize_acc_reads_threshold": 1 << 20}
FP_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}


def _fresh(fn):
    """A copy of ``fn`` with its own code object (dynamo keys its compile cache on the code object)."""
    return type(fn)(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _kind_kernel(kind: str) -> Callable[..., torch.Tensor]:
    def kernel(dx, dy, dz, inv_dz, packed, row_env, idx):
        return raycast.rows_depth(kind, dx, dy, dz, inv_dz, packed, row_env, idx)
    return kernel


def _env_slice(obj, a: int, b: int):
    """A Scene or CameraParams of envs a..b-1 (every field is a per-env tensor; views, no copy)."""
    return dataclasses.replace(obj, **{f.name: getattr(obj, f.name)[a:b] for f in dataclasses.fields(obj)})


class DepthCamera:
    """Renders depth for a batch of envs; holds only the config, pixel grids and compiled kernels.

    ``workers`` > 1 (CPU): the culled render splits the envs into that many contiguous slices, each drawn
    on its own thread with single-threaded kernels, the compiled ones without the GIL
    (sim.kernel_cache.release_gil_in_cpu_kernels). A frame is ~50 small kernels, too fine for inductor's
    OpenMP loops to spread over cores (2 threads drew no more than 1 here); whole slices on separate cores
    do. Every image is the same as with one worker but for the float rounding of the compiled kernels'
    shapes (eager: bit for bit)."""

    def __init__(self, cfg: DepthCameraCfg = DepthCameraCfg(), rand: CameraRandomizationCfg = CameraRandomizationCfg(),
                 device: torch.device | str = "cpu", compile: bool = False, dtype: torch.dtype = torch.float32,
                 workers: int = 1):
        self.cfg, self.rand, self.device, self.dtype = cfg, rand, torch.device(device), dtype
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers if self.device.type == "cpu" else 1  # a GPU runs one batch
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="depth") if self.workers > 1 else None
        if self._pool is not None and compile and not release_gil_in_cpu_kernels():
            warnings.warn("DepthCamera(workers>1): this torch's compiled kernels hold the GIL, so the workers "
                          "take turns (same images, no speed-up)", stacklevel=2)
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
        self._prepare: Callable[..., tuple] = prepare
        self._finish: Callable[..., torch.Tensor] = finish
        if compile:
            use_kernel_cache()  # ~280 s cold at load 6-8, ~45 s from the cache
            # workers: one OpenMP thread per kernel, the workers are the parallelism
            per_worker = {"cpp.threads": 1} if self._pool is not None else {}
            options, fp_options = {**INDUCTOR_OPTIONS, **per_worker}, {**FP_OPTIONS, **per_worker}
            # one code object per compiled function: dynamo counts recompiles per code object
            # (a functools.partial would share torch.compile's wrapper code object across the kinds)
            self._kernels = {kind: torch.compile(_fresh(_kind_kernel(kind)), options=options)
                             for kind in raycast.KERNELS}
            self._ground = torch.compile(_fresh(raycast.ground_depth), dynamic=False, options=options)
            self._rays = torch.compile(_fresh(raycast.row_rays), options=options)
            # the bookkeeping graphs with inductor's default realize thresholds: inlined, the visibility
            # mask would be recomputed at every read of it
            self._prepare = torch.compile(_fresh(prepare), dynamic=False, fullgraph=True, options=fp_options)
            # finish with the raised thresholds: the gathers of place_hits are inlined into the one loop
            # that writes the image (default thresholds stored the tile-major depth first and read it
            # back); 256-bit vectors, so that a tile row of 8 pixels is whole vectors (512-bit ones
            # were half-filled, loaded and stored through a scratch copy)
            self._finish = torch.compile(_fresh(finish), fullgraph=True,
                                         options={**options, "cpp.simdlen": 256})

    def sample(self, num_envs: int, generator: torch.Generator | None = None) -> CameraParams:
        return sample_params(self.cfg, self.rand, num_envs, generator, self.device, self.dtype)

    def nominal(self, num_envs: int) -> CameraParams:
        """Every env with the nominal intrinsics and mount (no randomization)."""
        return sample_params(self.cfg, CameraRandomizationCfg(), num_envs, None, self.device, self.dtype)

    def render_raw(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
                   cull: bool = True) -> torch.Tensor:
        """True z-depth [E, H, W] [m], +inf where nothing is hit (no sensor effects). With ``cull``, a
        primitive wholly beyond max_range_m is not tested, so the raw image
        may read +inf where the unculled one reads a depth beyond the range; :meth:`render` is equal.
        ``cull=False`` is the reference: every row tests every primitive, one pass per kind."""
        if cull:
            return self._render_culled(scene, pos_w, quat_wxyz, params, None, None, None)
        return self._render_reference(scene, pos_w, quat_wxyz, params)

    def render(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
               generator: torch.Generator | None = None, cull: bool = True) -> torch.Tensor:
        """Measured depth [E, H, W] [m] with range limits, noise and dropouts (module docstring)."""
        if not cull:
            return sensor_effects(self._render_reference(scene, pos_w, quat_wxyz, params), self.cfg, self.rand,
                                  generator)
        k = self.cfg.intrinsics
        noise, drop = draw_sensor_effects((scene.num_envs, k.height, k.width), self.rand, generator, self.device,
                                          self.dtype)
        effects = (self.cfg.min_range_m, self.cfg.max_range_m, self.rand.depth_noise_rel)
        return self._render_culled(scene, pos_w, quat_wxyz, params, effects, noise, drop)

    def _render_culled(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
                       effects: tuple[float, float, float] | None, noise: torch.Tensor | None,
                       drop: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_render_slice` on all envs at once, or on ``workers`` slices of them in parallel."""
        e = scene.num_envs
        if self._pool is None or e < 2 * self.workers:
            return self._render_slice(scene, pos_w, quat_wxyz, params, effects, noise, drop)
        bounds = [e * i // self.workers for i in range(self.workers + 1)]
        parts = [self._pool.submit(self._render_slice, _env_slice(scene, a, b), pos_w[a:b], quat_wxyz[a:b],
                                   _env_slice(params, a, b), effects, None if noise is None else noise[a:b],
                                   None if drop is None else drop[a:b])
                 for a, b in zip(bounds[:-1], bounds[1:])]
        return torch.cat([p.result() for p in parts])

    def _render_slice(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, params: CameraParams,
                      effects: tuple[float, float, float] | None, noise: torch.Tensor | None,
                      drop: torch.Tensor | None) -> torch.Tensor:
        """The fast path: one graph before the intersections (:func:`prepare`), one host sync for the
        bucket sizes, per kind one ray pass and one kernel per non-empty bucket, one graph after
        (:func:`finish`). Every call with the same env and primitive counts reuses the same compiled
        graphs (the bucket sizes are dynamic dimensions)."""
        cfg = self.cfg
        rot9, ground_rel, packs, plans, sizes = self._prepare(self._u, self._v, self._tile_lo_u, self._tile_lo_v,
                                                              scene, pos_w, quat_wxyz, params, cfg.tile_w,
                                                              cfg.tile_h, cfg.max_range_m)
        sizes = sizes.tolist()
        intr = (params.fx, params.fy, params.cx, params.cy)
        hits = []
        for (kind, kernel), packed, plan in zip(self._kernels.items(), packs, plans):
            ks = raycast.bucket_ks(packed.shape[1] - 1)
            kind_sizes, sizes = sizes[:len(ks) + 1], sizes[len(ks) + 1:]
            hits.append(self._kind_hits(kernel, packed, plan, ks, kind_sizes, rot9, intr))
        for h in hits:
            torch._dynamo.maybe_mark_dynamic(h, 0)
        k = cfg.intrinsics
        image = self._finish(self._u, self._v, intr, rot9, ground_rel, tuple(hits), tuple(p.position for p in plans),
                             k.width, k.height, cfg.tile_w, cfg.tile_h, effects, noise, drop)
        return image.view(scene.num_envs, k.height, k.width)

    def _kind_hits(self, kernel: Callable[..., torch.Tensor], packed: torch.Tensor, plan: raycast.CullPlan,
                   ks: list[int], sizes: list[int], rot9: torch.Tensor, intr: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """[2 + V, P]: two rows of +inf, then the nearest hit of this kind for the V sorted rows that
        see any of it (raycast.place_hits). A slice of one row is widened to two (and cut back after):
        a size-1 dimension would be a compiled shape of its own."""
        rows, first = plan.position.shape[0], sizes[0]
        parts = [self._u.new_full((2, self._u.shape[1]), math.inf)]
        if first == rows:
            return parts[0]
        start = max(0, first - 1)  # one row early, so that the rays are never a single row
        env, tile = plan.row_env[start:], plan.row_tile[start:]
        for x in (env, tile):
            torch._dynamo.maybe_mark_dynamic(x, 0)
        rays = self._rays(self._u, self._v, *intr, rot9, env, tile)
        lo = first
        for k, size in zip(ks, sizes[1:]):
            if size == 0:
                continue
            a = lo if size > 1 or lo == 0 else lo - 1
            b = max(lo + size, a + 2)
            idx = plan.lists[:k, a:b].contiguous()
            row_env = plan.row_env[a:b]
            bucket_rays = tuple(r[a - start:b - start] for r in rays)
            for x, dim in ((row_env, 0), (idx, 1)) + (((idx, 0),) if k > 1 else ()) + tuple((r, 0) for r in bucket_rays):
                torch._dynamo.maybe_mark_dynamic(x, dim)  # one graph for every bucket size
            hit = kernel(*bucket_rays, packed, row_env, idx)
            parts.append(hit[lo - a:lo - a + size])
            lo += size
        return torch.cat(parts)

    def _render_reference(self, scene: Scene, pos_w: torch.Tensor, quat_wxyz: torch.Tensor,
                          params: CameraParams) -> torch.Tensor:
        """Raw z-depth [E, H, W], unculled: every (env, tile) row against every primitive of each kind."""
        o_w, rot_wc = camera_pose_w(params, pos_w, quat_wxyz)
        rot9 = rot_wc.reshape(-1, 9).contiguous()
        packs = (raycast.pack_spheres(scene.spheres, scene.sphere_valid, o_w),
                 raycast.pack_cylinders(scene.cylinders, scene.cylinder_valid, o_w),
                 raycast.pack_boxes(scene.boxes, scene.box_valid, o_w))
        e, t = scene.num_envs, self._u.shape[0]
        intr = (params.fx, params.fy, params.cx, params.cy)
        depth = self._ground(self._u, self._v, *intr, rot9, scene.ground_z_w - o_w[:, 2])  # [E, T, P]
        flat = depth.view(e * t, -1)
        for kernel, packed in zip(self._kernels.values(), packs):
            for rows, idx in raycast.all_rows(e * t, packed.shape[1] - 1, self.device):
                row_env, row_tile = rows // t, rows % t
                for x, dim in ((row_env, 0), (row_tile, 0), (idx, 1)) + (((idx, 0),) if idx.shape[0] > 1 else ()):
                    torch._dynamo.maybe_mark_dynamic(x, dim)
                rays = self._rays(self._u, self._v, *intr, rot9, row_env, row_tile)
                flat[rows] = torch.minimum(flat[rows], kernel(*rays, packed, row_env, idx))
        k = self.cfg.intrinsics
        return raycast.untile(depth, k.width, k.height, self.cfg.tile_w, self.cfg.tile_h)


def draw_sensor_effects(shape: tuple[int, ...], rand: CameraRandomizationCfg, generator: torch.Generator | None,
                        device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(standard normal noise draws, dropout mask) for images of ``shape``, None where switched off."""
    noise = drop = None
    if rand.depth_noise_rel > 0:
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if rand.dropout_prob > 0:
        drop = torch.rand(shape, generator=generator, device=device) < rand.dropout_prob
    return noise, drop


def apply_sensor_effects(depth: torch.Tensor, min_range_m: float, max_range_m: float, depth_noise_rel: float,
                         noise: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor:
    """Range limits, range-proportional noise (draws ``noise``) and dropouts (mask ``drop``) on true
    z-depth [E, H, W] (module docstring)."""
    lo, hi = min_range_m, max_range_m
    in_range = (depth >= lo) & (depth <= hi)
    out = depth
    if noise is not None:
        out = torch.where(in_range, (depth * (1.0 + depth_noise_rel * noise)).clamp(lo, hi), depth)
    out = torch.where(in_range, out, torch.where(depth < lo, -math.inf, math.inf))
    if drop is not None:
        out = torch.where(drop, math.nan, out)
    return out


def sensor_effects(depth: torch.Tensor, cfg: DepthCameraCfg, rand: CameraRandomizationCfg,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Range limits, range-proportional noise and dropouts on true z-depth [E, H, W] (module docstring)."""
    noise, drop = draw_sensor_effects(tuple(depth.shape), rand, generator, depth.device, depth.dtype)
    return apply_sensor_effects(depth, cfg.min_range_m, cfg.max_range_m, rand.depth_noise_rel, noise, drop)


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
