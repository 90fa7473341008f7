"""Obstacle fields of the `navigate` task: generation, analytic distances and a privileged ray fan.

A field is a :class:`sim.camera.scene.Scene` (one per env, padded to ``max_obstacles`` slots per kind):
slot i is either a vertical column (``Scene.cylinders[:, i]``) or a yawed box / thin wall
(``Scene.boxes[:, i]``), never both; a slot beyond the env's obstacle count is padding (mask False).
Every obstacle stands on the ground and is taller than the flight ceiling, so the vehicle cannot fly
over it and a horizontal ray at the vehicle's height sees it exactly as a 2-D shape.

Obstacles are drawn in the frame of the start-goal line (``u`` along it, ``v`` to its left) and
rotated into the world; a candidate closer than ``keepout_m`` to the start or the goal is redrawn (up
to ``placement_tries`` times, then left out), so start and goal are always free.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from sim.camera.scene import Scene

KINDS = ("column", "box", "wall")


@dataclasses.dataclass(frozen=True)
class ObstacleFieldCfg:
    """The random obstacle field between start and goal (module docstring)."""

    num_obstacles: tuple[int, int] = (4, 40)
    """obstacle count per env at the top curriculum level is drawn uniformly in [low, high]; lower
    levels cap the high end (``curriculum_levels``) [1]"""
    curriculum_levels: int = 8
    """number of curriculum steps from ``num_obstacles[0]`` to ``num_obstacles[1]`` (0: no curriculum,
    always the full range) [1]"""
    curriculum_start_level: int = 0
    """level a new env starts at (``curriculum_levels``: the full range from the start) [1]"""
    curriculum_auto: bool = True
    """raise the level by one when the success rate of a window of ``curriculum_window`` episodes
    finished at the current level reaches ``curriculum_success`` (each window judged afresh)"""
    curriculum_success: float = 0.7
    """success rate that raises the level [1]"""
    curriculum_window: int = 512
    """episodes finished at a level before it may be raised [1]"""
    kind_probs: tuple[float, float, float] = (0.6, 0.25, 0.15)
    """probability of a column, a box, a wall (KINDS order) [1]"""
    column_radius_m: tuple[float, float] = (0.15, 0.4)
    """column radius range [m]"""
    box_half_m: tuple[float, float] = (0.2, 0.5)
    """box half extent range along its own x and y [m]"""
    wall_half_length_m: tuple[float, float] = (0.5, 1.5)
    """wall half length range [m]"""
    wall_half_thickness_m: float = 0.05
    """wall half thickness [m]"""
    obstacle_height_m: float = 4.0
    """height of every obstacle above the ground; above ``ceiling_m`` so none can be flown over [m]"""
    field_margin_m: float = 0.5
    """obstacle centres lie at least this far from the start and goal along the line [m]"""
    field_half_width_m: float = 4.0
    """obstacle centres lie within this lateral distance of the start-goal line [m]"""
    keepout_m: float = 1.0
    """free radius around the start and the goal: obstacle surfaces never come nearer [m]"""
    placement_tries: int = 8
    """redraws of a candidate that violates the keep-out before its slot is left empty [1]"""

    def __post_init__(self):
        lo, hi = self.num_obstacles
        if not 0 <= lo <= hi:
            raise ValueError(f"num_obstacles must be 0 <= low <= high, got {list(self.num_obstacles)}")
        if self.curriculum_levels < 0 or not 0 <= self.curriculum_start_level <= self.curriculum_levels:
            raise ValueError(f"need curriculum_levels >= 0 and 0 <= curriculum_start_level <= curriculum_levels, "
                             f"got {self.curriculum_levels}, {self.curriculum_start_level}")
        if not 0.0 < self.curriculum_success <= 1.0 or self.curriculum_window < 1:
            raise ValueError("curriculum_success must be in (0, 1] and curriculum_window >= 1")
        if min(self.kind_probs) < 0 or not sum(self.kind_probs) > 0:
            raise ValueError(f"kind_probs must be >= 0 with a positive sum, got {list(self.kind_probs)}")
        for name in ("column_radius_m", "box_half_m", "wall_half_length_m"):
            a, b = getattr(self, name)
            if not 0 < a <= b:
                raise ValueError(f"{name} must be 0 < low <= high [m], got {[a, b]}")
        for name in ("wall_half_thickness_m", "obstacle_height_m", "field_half_width_m", "keepout_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 [m], got {getattr(self, name)}")
        if self.field_margin_m < 0 or self.placement_tries < 1:
            raise ValueError("field_margin_m must be >= 0 and placement_tries >= 1")

    def count_cap(self, level: int) -> int:
        """The largest obstacle count drawn at curriculum ``level`` [1]."""
        lo, hi = self.num_obstacles
        if self.curriculum_levels == 0:
            return hi
        return lo + round((hi - lo) * min(level, self.curriculum_levels) / self.curriculum_levels)


def empty_field(num_envs: int, max_obstacles: int, device: torch.device | str = "cpu") -> Scene:
    """A Scene with ``max_obstacles`` padding slots per kind and no obstacle."""
    n, m = num_envs, max_obstacles
    return Scene(torch.zeros(n, device=device), torch.zeros(n, 0, 4, device=device),
                 torch.zeros(n, 0, dtype=torch.bool, device=device), torch.zeros(n, m, 5, device=device),
                 torch.zeros(n, m, dtype=torch.bool, device=device), torch.zeros(n, m, 7, device=device),
                 torch.zeros(n, m, dtype=torch.bool, device=device))


# ---------------------------------------------------------------- analytic distances

def column_distance(p_w: torch.Tensor, cylinders: torch.Tensor) -> torch.Tensor:
    """Euclidean signed distance [N, M] from points p_w [N, 3] to the surface of vertical finite
    cylinders [N, M, 5] (CYLINDER_FIELDS) [m]; negative inside."""
    dx = p_w[:, None, 0] - cylinders[..., 0]
    dy = p_w[:, None, 1] - cylinders[..., 1]
    radial = torch.sqrt(dx * dx + dy * dy) - cylinders[..., 4]
    z_mid, z_half = 0.5 * (cylinders[..., 2] + cylinders[..., 3]), 0.5 * (cylinders[..., 3] - cylinders[..., 2])
    axial = (p_w[:, None, 2] - z_mid).abs() - z_half
    outside = torch.sqrt(radial.clamp_min(0) ** 2 + axial.clamp_min(0) ** 2)
    return outside + torch.maximum(radial, axial).clamp_max(0)


def box_distance(p_w: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Euclidean signed distance [N, M] from points p_w [N, 3] to yawed boxes [N, M, 7] (BOX_FIELDS) [m]."""
    d = p_w[:, None, :] - boxes[..., 0:3]
    c, s = torch.cos(boxes[..., 6]), torch.sin(boxes[..., 6])
    local = torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)
    q = local.abs() - boxes[..., 3:6]
    return q.clamp_min(0).norm(dim=-1) + q.max(-1).values.clamp_max(0)


def obstacle_distance(field: Scene, p_w: torch.Tensor) -> torch.Tensor:
    """[N] distance from p_w [N, 3] to the nearest obstacle surface (ground excluded) [m]; +inf if none."""
    best = torch.full((p_w.shape[0],), math.inf, device=p_w.device)
    for valid, dist in ((field.cylinder_valid, column_distance), (field.box_valid, box_distance)):
        if valid.shape[1]:
            prims = field.cylinders if dist is column_distance else field.boxes
            best = torch.minimum(best, torch.where(valid, dist(p_w, prims), math.inf).amin(-1))
    return best


# ---------------------------------------------------------------- privileged ray fan

def ray_fan(field: Scene, origin_w: torch.Tensor, yaw: torch.Tensor, num_rays: int, max_range_m: float,
            nearest: int | None = None) -> torch.Tensor:
    """Distances [N, R] along R horizontal rays from origin_w [N, 3], ray i at heading yaw + 2 pi i / R
    (counter-clockwise from the body's heading; level, whatever the attitude), to the first obstacle
    surface, clipped to max_range_m [m]. Exact for the vertical prisms of a field: an obstacle counts
    when the origin's height is within its vertical extent. A ray starting inside an obstacle reads 0.

    ``nearest``: test only that many obstacles, the nearest to the origin (surface distance): the cost
    falls with it; exact whenever no more than ``nearest`` obstacles are in the field."""
    n, dev = origin_w.shape[0], origin_w.device
    oz = origin_w[:, 2:3]
    cyl, box = field.cylinders, field.boxes
    # one list of obstacles: (x, y, radius or half_x, half_y, yaw, is_box)
    zeros_c = torch.zeros_like(cyl[..., 0])
    prims = torch.cat([torch.stack([cyl[..., 0], cyl[..., 1], cyl[..., 4], zeros_c, zeros_c, zeros_c], -1),
                       torch.stack([box[..., 0], box[..., 1], box[..., 3], box[..., 4], box[..., 6],
                                    torch.ones_like(box[..., 0])], -1)], 1)  # [N, M, 6]
    valid = torch.cat([field.cylinder_valid & (oz >= cyl[..., 2]) & (oz <= cyl[..., 3]),
                       field.box_valid & ((oz - box[..., 2]).abs() <= box[..., 5])], 1)
    if nearest is not None and nearest < prims.shape[1]:
        key = torch.where(valid, torch.cat([column_distance(origin_w, cyl), box_distance(origin_w, box)], 1), math.inf)
        idx = key.topk(nearest, dim=1, largest=False).indices  # [N, K]
        prims = prims.gather(1, idx[..., None].expand(-1, -1, prims.shape[2]))
        valid = valid.gather(1, idx)
    if prims.shape[1] == 0:
        return torch.full((n, num_rays), max_range_m, device=dev)
    ang = yaw[:, None] + torch.arange(num_rays, device=dev) * (2.0 * math.pi / num_rays)  # [N, R]
    dx, dy = torch.cos(ang)[..., None], torch.sin(ang)[..., None]  # [N, R, 1]
    p = prims[:, None]  # [N, 1, K, 6]
    rx, ry = origin_w[:, 0, None, None] - p[..., 0], origin_w[:, 1, None, None] - p[..., 1]  # [N, 1, K]
    is_box = p[..., 5] > 0.5

    # columns: |o + t d - c| = r
    b = dx * rx + dy * ry  # [N, R, K]
    c = rx * rx + ry * ry - p[..., 2] ** 2
    disc = b * b - c
    t_col = torch.where(c <= 0, torch.zeros_like(b), -b - torch.sqrt(disc.clamp_min(0)))
    col_hit = ~is_box & (disc >= 0) & (t_col >= 0)

    # boxes: slab test in the box frame; a direction parallel to a slab hits only from within it
    cs, sn = torch.cos(p[..., 4]), torch.sin(p[..., 4])
    lx, ly = cs * rx + sn * ry, -sn * rx + cs * ry  # origin in the box frame [N, 1, K]
    ldx, ldy = cs * dx + sn * dy, -sn * dx + cs * dy  # direction in the box frame [N, R, K]
    t_near = torch.zeros_like(ldx)
    t_far = torch.full_like(ldx, math.inf)
    box_hit = is_box.expand_as(ldx)
    for lo, ld, half in ((lx, ldx, p[..., 2]), (ly, ldy, p[..., 3])):
        parallel = ld.abs() < 1e-9
        inv = 1.0 / torch.where(parallel, torch.ones_like(ld), ld)
        t1, t2 = (-half - lo) * inv, (half - lo) * inv
        t_near = torch.where(parallel, t_near, torch.maximum(t_near, torch.minimum(t1, t2)))
        t_far = torch.where(parallel, t_far, torch.minimum(t_far, torch.maximum(t1, t2)))
        box_hit = box_hit & ~(parallel & (lo.abs() > half))
    box_hit = box_hit & (t_near <= t_far)
    t = torch.where(col_hit, t_col, torch.where(box_hit, t_near, math.inf))
    t = torch.where(valid[:, None], t, math.inf)
    return t.amin(-1).clamp_max(max_range_m)


# ---------------------------------------------------------------- generation

def sample_counts(cfg: ObstacleFieldCfg, level: int, n: int, generator: torch.Generator,
                  device: torch.device | str) -> torch.Tensor:
    """[n] obstacle counts at curriculum ``level``: uniform in [num_obstacles[0], count_cap(level)]."""
    lo, hi = cfg.num_obstacles[0], cfg.count_cap(level)
    return torch.randint(lo, hi + 1, (n,), generator=generator, device=device)


def place_obstacles(cfg: ObstacleFieldCfg, field: Scene, env_ids: torch.Tensor, counts: torch.Tensor,
                    start_w: torch.Tensor, goal_w: torch.Tensor, generator: torch.Generator) -> None:
    """Draw new obstacles for envs ``env_ids`` into ``field`` in place: ``counts`` [n] obstacles each
    between start_w and goal_w [n, 3] (module docstring), every one clear of both by keepout_m."""
    n, m, dev = len(env_ids), field.cylinders.shape[1], start_w.device
    if n == 0:
        return
    k = cfg.placement_tries  # every try drawn at once: [n, k, m] candidates, the first clear one kept

    def uni(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, k, m, generator=generator, device=dev)

    along = goal_w[:, :2] - start_w[:, :2]
    length = along.norm(dim=-1).clamp_min(1e-6)[:, None, None]  # [n, 1, 1]
    e_u = along / length[:, 0]  # [n, 2]
    probs = torch.tensor(cfg.kind_probs, device=dev)
    kind = torch.multinomial(probs / probs.sum(), n * k * m, replacement=True, generator=generator).view(n, k, m)
    u = cfg.field_margin_m + (length - 2 * cfg.field_margin_m).clamp_min(0) * uni(0.0, 1.0)
    v = uni(-cfg.field_half_width_m, cfg.field_half_width_m)
    x = start_w[:, 0, None, None] + u * e_u[:, 0, None, None] - v * e_u[:, 1, None, None]
    y = start_w[:, 1, None, None] + u * e_u[:, 1, None, None] + v * e_u[:, 0, None, None]
    is_wall, is_col = kind == 2, kind == 0
    half_x = torch.where(is_wall, uni(*cfg.wall_half_length_m), uni(*cfg.box_half_m))
    half_y = torch.where(is_wall, torch.full_like(half_x, cfg.wall_half_thickness_m), uni(*cfg.box_half_m))
    zeros, h = torch.zeros_like(x), cfg.obstacle_height_m
    cyl = torch.stack([x, y, zeros, zeros + h, uni(*cfg.column_radius_m)], -1).view(n, k * m, 5)
    box = torch.stack([x, y, zeros + 0.5 * h, half_x, half_y, zeros + 0.5 * h, uni(-math.pi, math.pi)],
                      -1).view(n, k * m, 7)
    clear = torch.ones(n, k, m, dtype=torch.bool, device=dev)
    for p in (start_w, goal_w):
        d = torch.where(is_col, column_distance(p, cyl).view(n, k, m), box_distance(p, box).view(n, k, m))
        clear &= d >= cfg.keepout_m
    first = clear.to(torch.uint8).argmax(1)  # [n, m] the first clear try (0 when none: then not placed)
    placed = clear.any(1)

    def pick(t: torch.Tensor) -> torch.Tensor:  # [n, k, m, F] -> [n, m, F] at the first clear try
        return t.gather(1, first[:, None, :, None].expand(-1, 1, -1, t.shape[-1]))[:, 0]

    column = pick(is_col[..., None])[..., 0]
    active = placed & (torch.arange(m, device=dev) < counts[:, None])
    field.cylinders[env_ids] = pick(cyl.view(n, k, m, 5))
    field.boxes[env_ids] = pick(box.view(n, k, m, 7))
    field.cylinder_valid[env_ids] = active & column
    field.box_valid[env_ids] = active & ~column
