"""Batched analytic ray casting of z-depth against primitive scenes (:mod:`sim.camera.scene`).

Every pixel's ray starts at the camera centre and runs along d = R_wc ((u - cx) / fx, (v - cy) / fy, 1);
with that unnormalized direction the ray parameter t of a hit IS its z-depth, so no division by the
ray length is needed and the output is what a depth camera (REP 118) reports.

Layout, so that inductor emits a few compute-bound loops: pixels are ordered tile-major,
``[E, T, P]`` (T tiles of P pixels); each primitive kind is a reduction ``min over K`` of a
pointwise ray-primitive intersection on ``[R, K, P]`` (R rows = (env, tile) pairs). ``K`` is the list of primitives a tile may
see: with culling, only those whose screen bounds (:func:`screen_bounds`) meet the tile (conservative, so
nothing visible is dropped), tiles bucketed by that count (:func:`cull_plan`); without culling, every
primitive. Both run the same per-pair arithmetic, so in eager mode culling on and off give the same
image bit for bit (the min is exact whatever the order); compiled, each K specialization may contract
FMAs differently, which moves a grazing ray by an ulp.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from sim.camera.scene import Scene

INF = math.inf
_TINY = 1e-12  # keeps 1/d finite for a ray parallel to a slab or a vertical ray in a cylinder


def tile_pixels(width: int, height: int, tile_w: int, tile_h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) [T, P] float pixel coordinates in tile-major order (tiles row by row, pixels row by row)."""
    rows, cols = height // tile_h, width // tile_w
    v = torch.arange(height).reshape(rows, 1, tile_h, 1).expand(rows, cols, tile_h, tile_w)
    u = torch.arange(width).reshape(1, cols, 1, tile_w).expand(rows, cols, tile_h, tile_w)
    return u.reshape(rows * cols, -1).float(), v.reshape(rows * cols, -1).float()


def untile(x: torch.Tensor, width: int, height: int, tile_w: int, tile_h: int) -> torch.Tensor:
    """[E, T, P] tile-major -> [E, H, W]."""
    rows, cols = height // tile_h, width // tile_w
    e = x.shape[0]
    return x.reshape(e, rows, cols, tile_h, tile_w).permute(0, 1, 3, 2, 4).reshape(e, height, width)


# ------------------------------------------------------------------ per-primitive constants, camera-relative
# Each packs the per-primitive numbers its intersection needs, relative to the camera centre o_w [E, 3],
# plus a padding row (valid = 0) at index M that compacted index lists point to when a tile's list is short.

def _append_pad(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p, p.new_zeros(p.shape[0], 1, p.shape[2])], dim=1)


def pack_spheres(s: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor) -> torch.Tensor:
    """[E, Ms+1, 5]: centre - o (3), r^2, valid"""
    c = s[..., :3] - o_w[:, None]
    return _append_pad(torch.cat([c, s[..., 3:4] ** 2, valid[..., None].to(s.dtype)], -1))


def pack_cylinders(c: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor) -> torch.Tensor:
    """[E, Mc+1, 6]: axis xy - o (2), z_min - oz, z_max - oz, r^2, valid"""
    xy = c[..., :2] - o_w[:, None, :2]
    z = c[..., 2:4] - o_w[:, None, 2:3]
    return _append_pad(torch.cat([xy, z, c[..., 4:5] ** 2, valid[..., None].to(c.dtype)], -1))


def pack_boxes(b: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor) -> torch.Tensor:
    """[E, Mb+1, 9]: camera centre in the box frame (3), half extents (3), cos yaw, sin yaw, valid"""
    cos, sin = torch.cos(b[..., 6]), torch.sin(b[..., 6])
    rel = o_w[:, None] - b[..., :3]
    ox = cos * rel[..., 0] + sin * rel[..., 1]
    oy = -sin * rel[..., 0] + cos * rel[..., 1]
    return _append_pad(torch.stack([ox, oy, rel[..., 2], b[..., 3], b[..., 4], b[..., 5], cos, sin,
                                    valid.to(b.dtype)], -1))


def bounding_spheres(scene: Scene) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per kind (spheres, cylinders, boxes): (centre_w [E, M, 3], radius [E, M]) enclosing each primitive."""
    s, c, b = scene.spheres, scene.cylinders, scene.boxes
    half_h = 0.5 * (c[..., 3] - c[..., 2])
    c_centre = torch.stack([c[..., 0], c[..., 1], 0.5 * (c[..., 2] + c[..., 3])], -1)
    return ((s[..., :3], s[..., 3]), (c_centre, torch.sqrt(c[..., 4] ** 2 + half_h ** 2)),
            (b[..., :3], b[..., 3:6].norm(dim=-1)))


# ------------------------------------------------------------------ intersections: min over K
# Each takes ray components shaped [R, 1, P] and primitive columns [R, K, 1] (broadcast to [R, K, P])
# and returns the nearest positive hit per ray [R, P] (inf: none).

def sphere_depth(dx, dy, dz, inv_dz, cols: list[torch.Tensor]) -> torch.Tensor:
    """Spheres, solved about the ray's closest approach t_c = (d . c) / (d . d): the squared miss
    distance |t_c d - c|^2 against r^2 is well conditioned, where b^2 - a (|c|^2 - r^2) loses digits
    to cancellation for small, distant spheres (1e-4 relative error seen in float32)."""
    cx, cy, cz, r2, valid = cols
    inv_a = 1.0 / (dx * dx + dy * dy + dz * dz)
    tc = (dx * cx + dy * cy + dz * cz) * inv_a
    px, py, pz = tc * dx - cx, tc * dy - cy, tc * dz - cz
    gap = r2 - (px * px + py * py + pz * pz)  # >= 0: the ray meets the sphere
    half = torch.sqrt(gap.clamp_min(0.0) * inv_a)
    t = torch.where(tc > half, tc - half, tc + half)  # the near root, or the far one from inside
    hit = (gap >= 0) & (tc + half > 0) & (valid > 0)
    return torch.where(hit, t, INF).amin(-2)


def cylinder_depth(dx, dy, dz, inv_dz, cols: list[torch.Tensor]) -> torch.Tensor:
    """Vertical cylinders: the ray's interval inside the infinite column (about its closest approach in
    xy, as for spheres) intersected with its interval between the caps."""
    cx, cy, z0, z1, r2, valid = cols
    inv_a = 1.0 / (dx * dx + dy * dy).clamp_min(_TINY)
    tc = (dx * cx + dy * cy) * inv_a
    px, py = tc * dx - cx, tc * dy - cy
    gap = r2 - (px * px + py * py)
    half = torch.sqrt(gap.clamp_min(0.0) * inv_a)
    tz0, tz1 = z0 * inv_dz, z1 * inv_dz
    t_near = torch.maximum(tc - half, torch.minimum(tz0, tz1))
    t_far = torch.minimum(tc + half, torch.maximum(tz0, tz1))
    hit = (gap >= 0) & (t_near <= t_far) & (t_far > 0) & (valid > 0)
    return torch.where(hit, torch.where(t_near > 0, t_near, t_far), INF).amin(-2)


def box_depth(dx, dy, dz, inv_dz, cols: list[torch.Tensor]) -> torch.Tensor:
    """Yawed boxes: the slab test in the box frame."""
    ox, oy, oz, hx, hy, hz, cos, sin, valid = cols
    bx = cos * dx + sin * dy
    by = cos * dy - sin * dx
    inv_x = 1.0 / torch.where(bx >= 0, bx.clamp_min(_TINY), bx.clamp_max(-_TINY))
    inv_y = 1.0 / torch.where(by >= 0, by.clamp_min(_TINY), by.clamp_max(-_TINY))
    tx0, tx1 = (-hx - ox) * inv_x, (hx - ox) * inv_x
    ty0, ty1 = (-hy - oy) * inv_y, (hy - oy) * inv_y
    tz0, tz1 = (-hz - oz) * inv_dz, (hz - oz) * inv_dz
    t_near = torch.maximum(torch.maximum(torch.minimum(tx0, tx1), torch.minimum(ty0, ty1)), torch.minimum(tz0, tz1))
    t_far = torch.minimum(torch.minimum(torch.maximum(tx0, tx1), torch.maximum(ty0, ty1)), torch.maximum(tz0, tz1))
    hit = (t_near <= t_far) & (t_far > 0) & (valid > 0)
    return torch.where(hit, torch.where(t_near > 0, t_near, t_far), INF).amin(-2)


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "spheres": sphere_depth, "cylinders": cylinder_depth, "boxes": box_depth}
"""the intersection of each primitive kind, keyed by its Scene field"""


def ray_components(u: torch.Tensor, v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
                   cy: torch.Tensor, rot_wc: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(dx, dy, dz, 1/dz) world-axes rays of pixels u, v [R, P] of cameras fx.. [R, 1], R_wc [R, 9]."""
    xn = (u - cx) / fx  # optical x / z
    yn = (v - cy) / fy
    d = [rot_wc[:, 3 * i:3 * i + 1] * xn + rot_wc[:, 3 * i + 1:3 * i + 2] * yn + rot_wc[:, 3 * i + 2:3 * i + 3]
         for i in range(3)]
    dz = torch.where(d[2] >= 0, d[2].clamp_min(_TINY), d[2].clamp_max(-_TINY))
    return d[0], d[1], d[2], 1.0 / dz


def row_rays(u: torch.Tensor, v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
             rot_wc: torch.Tensor, row_env: torch.Tensor, row_tile: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(dx, dy, dz, 1/dz) [R, P] of the pixels u, v [T, P] of (env, tile) rows; fx.. [E], rot_wc [E, 9]."""
    e = row_env[:, None]
    return ray_components(u[row_tile], v[row_tile], fx[e], fy[e], cx[e], cy[e], rot_wc[row_env])


def rows_depth(kind: str, dx: torch.Tensor, dy: torch.Tensor, dz: torch.Tensor, inv_dz: torch.Tensor,
               packed: torch.Tensor, row_env: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Nearest hit [R, P] of primitive kind ``kind`` for R (env, tile) rows with rays [R, P] (row_rays).

    packed [E, M+1, F] (pack_*); row_env [R]; idx [K, R]: the primitives each row tests (M: the padding
    row). idx is laid out K-major on purpose: inductor then vectorizes along the pixels and loops over K
    innermost, where an R-major list made it vectorize along K with gathered loads (~10x slower). The rays
    come in as tensors, not expressions: inlined into the K loop, their expression trees multiplied
    through every reuse and the compile did not finish in 5 minutes."""
    cols = packed[row_env[None, :], idx].permute(1, 0, 2)  # [R, K, F]
    return KERNELS[kind](dx[:, None], dy[:, None], dz[:, None], inv_dz[:, None], list(cols[..., None].unbind(-2)))


def ground_depth(u: torch.Tensor, v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
                 cy: torch.Tensor, rot_wc: torch.Tensor, ground_rel: torch.Tensor) -> torch.Tensor:
    """Hit [E, T, P] of the plane z = ground for pixels u, v [T, P], cameras fx.. [E], R_wc [E, 9] row-major
    (ground_rel [E] = ground z - camera z)."""
    xn = (u - cx[:, None, None]) / fx[:, None, None]
    yn = (v - cy[:, None, None]) / fy[:, None, None]
    r = rot_wc[:, None, None]
    dz = r[..., 6] * xn + r[..., 7] * yn + r[..., 8]
    t = ground_rel[:, None, None] / torch.where(dz >= 0, dz.clamp_min(_TINY), dz.clamp_max(-_TINY))
    return torch.where(t > 0, t, INF)


# ------------------------------------------------------------------ culling

def corners_w(scene: Scene) -> torch.Tensor:
    """[E, Mc + Mb, 8, 3] the corners of a box around each cylinder (its square prism) and each box
    (its own corners), cylinders first: their convex hull holds the primitive."""
    signs = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=scene.boxes.dtype,
                         device=scene.boxes.device) * 2 - 1  # [8, 3] of +-1
    sx, sy, sz = signs.unbind(-1)
    c, b = scene.cylinders[..., None, :], scene.boxes[..., None, :]
    cyl = torch.stack([c[..., 0] + sx * c[..., 4], c[..., 1] + sy * c[..., 4],
                       torch.where(sz > 0, c[..., 3], c[..., 2])], -1)
    lx, ly = sx * b[..., 3], sy * b[..., 4]
    cos, sin = torch.cos(b[..., 6]), torch.sin(b[..., 6])
    box = torch.stack([b[..., 0] + cos * lx - sin * ly, b[..., 1] + sin * lx + cos * ly, b[..., 2] + sz * b[..., 5]], -1)
    return torch.cat([cyl, box], 1)


def screen_bounds(scene: Scene, o_w: torch.Tensor, rot_wc: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor,
                  cx: torch.Tensor, cy: torch.Tensor, max_range_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each primitive can appear: (u_lo, u_hi, v_lo, v_hi) [4, E, M] pixel coordinates that
    bound the pixel centres whose rays may hit it, and [E, M] bool: valid, not wholly behind the
    camera and not wholly beyond max_range_m (anything there reads +inf anyway). M: all kinds, spheres, cylinders, boxes.

    Conservative by construction, tight where it can be: per image axis, the tangents of the bounding
    sphere (seen in the x-z plane it is a disk; rays reaching it lie within asin(r / rho) of its
    direction), intersected for cylinders and boxes with the range of their corners' projections when
    all corners are in front (the hull projects into it); unbounded when the camera is inside. A pixel
    (u, v) sees an optical-frame point (X, Y, Z) exactly when u = cx + fx X / Z, the same ray the
    kernels trace; the bounds are widened by 0.01 px (and 1e-5 relative) for rounding."""
    spheres = bounding_spheres(scene)
    centre = torch.cat([c for c, _ in spheres], 1) - o_w[:, None]
    radius = torch.cat([r for _, r in spheres], 1) * (1.0 + 1e-4) + 1e-6
    x, y, z = (sum(rot_wc[:, j, i, None] * centre[..., j] for j in range(3)) for i in range(3))  # optical [E, M]

    def tangents(a: torch.Tensor, f: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # seen in the (a, z) plane the sphere is a disk; the rays that reach it (z > 0) have directions
        # within alpha = asin(r / rho) of the centre's direction theta; their slopes a/z map to pixels
        # through c + f a/z. Without trigonometry (it was most of this function's time): with
        # s = sqrt(rho^2 - r^2) the tangent directions theta -+ alpha are (a s -+ z r, z s +- a r), so the
        # slopes are tan(theta -+ alpha) = (a s -+ z r) / (z s +- a r), and a direction is in front
        # (within +-90 deg of the optical axis) when its z component is > 0
        rho2 = a * a + z * z
        inside = rho2 <= radius * radius  # the camera is inside the disk: every direction
        s = torch.sqrt((rho2 - radius * radius).clamp_min(0.0))
        lo_z, hi_z = z * s + a * radius, z * s - a * radius
        lo = torch.where(inside | (lo_z <= 0), -INF, c[:, None] + f[:, None] * (a * s - z * radius) / lo_z.clamp_min(_TINY))
        hi = torch.where(inside | (hi_z <= 0), INF, c[:, None] + f[:, None] * (a * s + z * radius) / hi_z.clamp_min(_TINY))
        seen = inside | (z + radius > 0)  # some point of the disk, so some ray to it, is in front
        return lo, hi, seen

    (u_lo, u_hi, seen_u), (v_lo, v_hi, seen_v) = tangents(x, fx, cx), tangents(y, fy, cy)
    near = z - radius
    ms = scene.spheres.shape[1]
    if scene.cylinders.shape[1] + scene.boxes.shape[1]:
        # R_wc^T (corner - o) [E, Mc+Mb, 8, 3] as products and sums, not einsum: that one is an extern bmm
        # of E tiny matrices outside the fused graph (36 % of screen_bounds on a CPU, same numbers)
        d = corners_w(scene) - o_w[:, None, None]
        p = torch.stack([sum(rot_wc[:, None, None, j, i] * d[..., j] for j in range(3)) for i in range(3)], -1)
        pz = p[..., 2]
        ahead = (pz.amin(-1) > 1e-3)[..., None]
        pu = cx[:, None, None] + fx[:, None, None] * p[..., 0] / torch.where(pz > 1e-3, pz, 1.0)
        pv = cy[:, None, None] + fy[:, None, None] * p[..., 1] / torch.where(pz > 1e-3, pz, 1.0)
        pad = torch.full_like(u_lo[:, :ms], -INF), torch.full_like(u_lo[:, :ms], INF)

        def hull(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lo = torch.where(ahead[..., 0], q.amin(-1), -INF)
            hi = torch.where(ahead[..., 0], q.amax(-1), INF)
            return torch.cat([pad[0], lo], 1), torch.cat([pad[1], hi], 1)

        (hu_lo, hu_hi), (hv_lo, hv_hi) = hull(pu), hull(pv)
        u_lo, u_hi = torch.maximum(u_lo, hu_lo), torch.minimum(u_hi, hu_hi)
        v_lo, v_hi = torch.maximum(v_lo, hv_lo), torch.minimum(v_hi, hv_hi)
        near = torch.maximum(near, torch.cat([torch.full_like(near[:, :ms], -INF), pz.amin(-1)], 1))
    valid = torch.cat([scene.sphere_valid, scene.cylinder_valid, scene.box_valid], 1)
    widen = lambda b, sign: b + sign * (0.01 + 1e-5 * b.abs())  # noqa: E731  (0.01 px and rounding)
    bounds = torch.stack([widen(u_lo, -1.0), widen(u_hi, 1.0), widen(v_lo, -1.0), widen(v_hi, 1.0)])
    return bounds, valid & (near <= max_range_m) & seen_u & seen_v


def tile_visible(bounds: torch.Tensor, keep: torch.Tensor, tile_lo_u: torch.Tensor, tile_lo_v: torch.Tensor,
                 tile_w: int, tile_h: int) -> torch.Tensor:
    """[E, T, M] bool: some pixel centre of tile t (first pixel (tile_lo_u, tile_lo_v) [T]) lies within
    a kept primitive's screen bounds (:func:`screen_bounds`)."""
    u_lo, u_hi, v_lo, v_hi = (b[:, None] for b in bounds)
    lu, lv = tile_lo_u[None, :, None], tile_lo_v[None, :, None]
    return (lu <= u_hi) & (lu + (tile_w - 1) >= u_lo) & (lv <= v_hi) & (lv + (tile_h - 1) >= v_lo) & keep[:, None]


def bucket_ks(m: int) -> list[int]:
    """The list lengths K of the work buckets for m primitives of a kind: 1, 2, 4, ... and m last."""
    ks, k = [], 1
    while ks[-1:] != [m] and m > 0:
        ks.append(min(k, m))
        k *= 2
    return ks


class CullPlan(NamedTuple):
    """One primitive kind's work, (env, tile) rows sorted by bucket (:func:`cull_plan`); all static shapes,
    so that it is built inside one compiled graph with no host sync. Bucket 0 (rows that see nothing of
    this kind) comes first; bucket j >= 1 holds rows seeing more than K_(j-1) and at most K_j =
    bucket_ks(m)[j - 1] primitives."""

    row_env: torch.Tensor
    """[E*T] long: env of each sorted row"""
    row_tile: torch.Tensor
    """[E*T] long: tile of each sorted row"""
    lists: torch.Tensor
    """[M+1, E*T] int32: column r holds sorted row r's visible primitives first, then the padding row M
    (K-major: a bucket's list is lists[:K, lo:hi], see :func:`rows_depth`)"""
    position: torch.Tensor
    """[E*T] long: where each row (e * T + t) went in the sorted order"""
    sizes: torch.Tensor
    """[1 + len(bucket_ks(M))] long: rows per bucket"""


def cull_plan(mask: torch.Tensor) -> CullPlan:
    """Sort the (env, tile) rows of mask [E, T, M] by how many primitives they may see into buckets of
    K = 1, 2, 4, ... (the last K = M), so that the work is about the visible count, at most twice it,
    not the longest list in the batch. Static shapes, written for one inductor graph: the prefix counts
    unrolled over M, a counting sort of the rows (stable), the lists scattered K-major straight into the
    sorted order. The only host sync is reading sizes."""
    e, t, m = mask.shape
    rows = e * t
    flat = mask.reshape(rows, m).to(torch.int32)
    seen = [flat[:, 0]] if m else [flat.new_zeros(rows)]
    for j in range(1, m):
        seen.append(seen[-1] + flat[:, j])  # primitives visible up to and including j
    counts = seen[-1]
    ks = bucket_ks(m)
    bucket = torch.zeros_like(counts)
    for lower in [0] + ks[:-1]:
        bucket += (counts > lower).to(torch.int32)
    position, below, sizes = torch.zeros_like(counts), counts.new_zeros(()), []
    for j in range(len(ks) + 1):
        rank = (bucket == j).to(torch.int32).cumsum(0, dtype=torch.int32)
        position = torch.where(bucket == j, rank - 1 + below, position)
        sizes.append(rank[-1])
        below = below + rank[-1]
    position = position.long()
    # each row's env and tile scattered to its sorted place (dividing the sorted row numbers instead was a
    # vectorized int64 division, lane by lane; here it is a division by a constant in the scatter's loop)
    row = torch.arange(rows, device=mask.device)
    row_env, row_tile = (torch.empty_like(position).scatter(0, position, x) for x in (row // t, row % t))
    # int32 lists: half the bytes to fill and scatter of int64 ones
    lists = torch.full(((m + 1) * rows + 1,), m, dtype=torch.int32, device=mask.device)  # + a scratch entry
    if m:
        target = torch.where(flat > 0, (torch.stack(seen, -1) - 1).long() * rows + position[:, None], (m + 1) * rows)
        lists = lists.scatter(0, target.reshape(-1), torch.arange(m, device=mask.device, dtype=torch.int32)
                              .expand(rows, m).reshape(-1))
    return CullPlan(row_env, row_tile, lists[:-1].view(m + 1, rows), position, torch.stack(sizes).long())


def place_hits(depth: torch.Tensor, hits: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """depth [E*T, P] lowered by one kind's hits [2 + V, P]: two rows of +inf, then the V rows that
    see something (the last V of the sorted order) in that order; position [E*T] (CullPlan.position)."""
    first = position.shape[0] - (hits.shape[0] - 2)  # sorted position of the first row that sees something
    src = torch.where(position >= first, position - first + 2, 0)
    return torch.minimum(depth, hits[src])


def all_rows(num_rows: int, m: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every row tests every primitive: the unculled work list (same kernel, same numbers)."""
    if m == 0:
        return []
    rows = torch.arange(num_rows, device=device)
    return [(rows, torch.arange(m, device=device)[:, None].expand(m, num_rows).contiguous())]
