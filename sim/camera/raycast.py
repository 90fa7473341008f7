"""Batched analytic ray casting of z-depth against primitive scenes (:mod:`sim.camera.scene`).

Every pixel's ray starts at the camera centre and runs along d = R_wc ((u - cx) / fx, (v - cy) / fy, 1);
with that unnormalized direction the ray parameter t of a hit IS its z-depth, so no division by the
ray length is needed and the output is what a depth camera (REP 118) reports.

Layout, so that inductor emits a few compute-bound loops: pixels are ordered tile-major,
``[E, T, P]`` (T tiles of P pixels), and each primitive kind is one reduction ``min over K`` of a
pointwise ray-primitive intersection on ``[E, T, K, P]``. ``K`` is the list of primitives a tile may
see: with culling, only those whose bounding sphere meets the tile's frustum (conservative, so
nothing visible is dropped) compacted to the front of an index list of the batch's longest list;
without culling, every primitive. Both run the same kernel on the same numbers, so culling on and off
give the same image bit for bit (the min is exact whatever the order).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from sim.camera.scene import Scene

INF = math.inf
_TINY = 1e-12  # keeps 1/d finite for a ray parallel to a slab or a vertical ray in a cylinder


@dataclasses.dataclass(frozen=True)
class Rays:
    """Per-pixel ray quantities, tile-major ``[E, T, P]``, world axes, origin at the camera."""

    dx: torch.Tensor
    dy: torch.Tensor
    dz: torch.Tensor
    inv_dz: torch.Tensor
    """1 / dz, finite"""


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


def make_rays(u: torch.Tensor, v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
              cy: torch.Tensor, rot_wc: torch.Tensor) -> Rays:
    """Rays for pixels (u, v) [T, P] of cameras with intrinsics [E] and orientation R_wc [E, 3, 3]."""
    xn = (u - cx[:, None, None]) / fx[:, None, None]  # [E, T, P] optical x / z
    yn = (v - cy[:, None, None]) / fy[:, None, None]
    r = rot_wc[:, None, None]  # [E, 1, 1, 3, 3]
    d = [r[..., i, 0] * xn + r[..., i, 1] * yn + r[..., i, 2] for i in range(3)]
    dz = torch.where(d[2] >= 0, d[2].clamp_min(_TINY), d[2].clamp_max(-_TINY))
    return Rays(d[0], d[1], d[2], 1.0 / dz)


# ------------------------------------------------------------------ per-primitive constants, camera-relative
# Each packs the per-primitive numbers its intersection needs, relative to the camera centre o_w [E, 3],
# plus a padding row (valid = 0) at index M that compacted index lists point to when a tile's list is short.

def _append_pad(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p, p.new_zeros(p.shape[0], 1, p.shape[2])], dim=1)


def pack_spheres(s: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor) -> torch.Tensor:
    """[E, Ms+1, 5]: centre - o (3), |c|^2 - r^2, valid"""
    c = s[..., :3] - o_w[:, None]
    cc = (c * c).sum(-1) - s[..., 3] ** 2
    return _append_pad(torch.cat([c, cc[..., None], valid[..., None].to(s.dtype)], -1))


def pack_cylinders(c: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor) -> torch.Tensor:
    """[E, Mc+1, 6]: axis xy - o (2), z_min - oz, z_max - oz, |c_xy|^2 - r^2, valid"""
    xy = c[..., :2] - o_w[:, None, :2]
    z = c[..., 2:4] - o_w[:, None, 2:3]
    cc = (xy * xy).sum(-1) - c[..., 4] ** 2
    return _append_pad(torch.cat([xy, z, cc[..., None], valid[..., None].to(c.dtype)], -1))


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


# ------------------------------------------------------------------ intersections: [E, T, K, P] -> min over K

def _gather(packed: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
    """Columns of packed [E, M+1, F] at idx [E, T, K] -> F tensors [E, T, K, 1]."""
    e, t, k = idx.shape
    rows = torch.gather(packed, 1, idx.reshape(e, t * k, 1).expand(e, t * k, packed.shape[-1]))
    return list(rows.reshape(e, t, k, 1, packed.shape[-1]).unbind(-1))


def _rays4(r: Rays) -> tuple[torch.Tensor, ...]:
    return r.dx[:, :, None], r.dy[:, :, None], r.dz[:, :, None], r.inv_dz[:, :, None]


def sphere_depth(r: Rays, packed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Nearest positive hit [E, T, P] (inf: none) of the spheres idx [E, T, K] of each tile."""
    dx, dy, dz, _ = _rays4(r)
    cx, cy, cz, cc, valid = _gather(packed, idx)
    a = dx * dx + dy * dy + dz * dz
    b = dx * cx + dy * cy + dz * cz
    disc = b * b - a * cc
    s = torch.sqrt(disc.clamp_min(0.0))
    t = (b - torch.where(b > s, s, -s)) / a  # the near root, or the far one from inside
    hit = (disc >= 0) & (b + s > 0) & (valid > 0)
    return torch.where(hit, t, INF).amin(2)


def cylinder_depth(r: Rays, packed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Nearest positive hit [E, T, P] of the vertical cylinders idx [E, T, K]: the ray's interval
    inside the infinite column intersected with its interval between the caps."""
    dx, dy, _, inv_dz = _rays4(r)
    cx, cy, z0, z1, cc, valid = _gather(packed, idx)
    a = (dx * dx + dy * dy).clamp_min(_TINY)
    b = dx * cx + dy * cy
    disc = b * b - a * cc
    s = torch.sqrt(disc.clamp_min(0.0))
    t_in, t_out = (b - s) / a, (b + s) / a
    tz0, tz1 = z0 * inv_dz, z1 * inv_dz
    t_near = torch.maximum(t_in, torch.minimum(tz0, tz1))
    t_far = torch.minimum(t_out, torch.maximum(tz0, tz1))
    hit = (disc >= 0) & (t_near <= t_far) & (t_far > 0) & (valid > 0)
    return torch.where(hit, torch.where(t_near > 0, t_near, t_far), INF).amin(2)


def box_depth(r: Rays, packed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Nearest positive hit [E, T, P] of the yawed boxes idx [E, T, K] (slab test in the box frame)."""
    dx, dy, _, inv_dz = _rays4(r)
    ox, oy, oz, hx, hy, hz, cos, sin, valid = _gather(packed, idx)
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
    return torch.where(hit, torch.where(t_near > 0, t_near, t_far), INF).amin(2)


def ground_depth(r: Rays, ground_rel: torch.Tensor) -> torch.Tensor:
    """Hit [E, T, P] of the plane z = ground (ground_rel [E] = ground z - camera z)."""
    t = ground_rel[:, None, None] * r.inv_dz
    return torch.where(t > 0, t, INF)


KERNELS: dict[str, Callable[[Rays, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spheres": sphere_depth, "cylinders": cylinder_depth, "boxes": box_depth}
"""the intersection of each primitive kind, keyed by its Scene field"""


# ------------------------------------------------------------------ culling

def tile_visible(centre_w: torch.Tensor, radius: torch.Tensor, valid: torch.Tensor, o_w: torch.Tensor,
                 rot_wc: torch.Tensor, bounds: torch.Tensor, max_range_m: float) -> torch.Tensor:
    """[E, T, M] bool: the primitive is valid and its bounding sphere meets the tile's frustum.

    bounds [E, T, 4]: (x/z min, x/z max, y/z min, y/z max) of the tile's pixel-centre rays in the
    optical frame. The test against the four side planes is conservative (a sphere near a frustum edge
    may pass without touching it, never the reverse); a sphere wholly beyond max_range_m is dropped,
    because anything it could hit reads +inf anyway."""
    c = torch.einsum("eji,emj->emi", rot_wc, centre_w - o_w[:, None])  # [E, M, 3] optical frame
    x, y, z = (c[..., i][:, None] for i in range(3))  # [E, 1, M]
    rad = (radius * (1.0 + 1e-4) + 1e-6)[:, None]
    a0, a1, b0, b1 = (bounds[..., i, None] for i in range(4))  # [E, T, 1]
    inside = ((x - a0 * z) >= -rad * torch.sqrt(1 + a0 * a0)) & ((a1 * z - x) >= -rad * torch.sqrt(1 + a1 * a1))
    inside &= ((y - b0 * z) >= -rad * torch.sqrt(1 + b0 * b0)) & ((b1 * z - y) >= -rad * torch.sqrt(1 + b1 * b1))
    return inside & (z - rad <= max_range_m) & valid[:, None]


def compact(mask: torch.Tensor, bucket: int = 4) -> torch.Tensor:
    """Index lists [E, T, K] of the True entries of mask [E, T, M] first, the rest M (the padding row);
    K is the longest list rounded up to a multiple of ``bucket`` (fewer distinct shapes), at most M,
    at least 1 (a list of only the padding row when nothing is visible)."""
    e, t, m = mask.shape
    longest = int(mask.sum(-1).max()) if mask.numel() else 0
    k = max(1, min(m, max(bucket, -(-longest // bucket) * bucket)))
    slot = torch.where(mask, mask.cumsum(-1) - 1, k)  # entries past K go to a scratch column
    idx = torch.full((e, t, k + 1), m, dtype=torch.long, device=mask.device)
    idx.scatter_(-1, slot, torch.arange(m, device=mask.device).expand(e, t, m))
    return idx[..., :k]
