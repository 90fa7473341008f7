"""A batch of primitive scenes, one per env, as padded tensors with validity masks (world frame, ENU).

Primitive kinds (each padded to the largest count in the batch; a False in ``*_valid`` is padding):
- ground: the plane z = ``ground_z_w`` (one per env);
- spheres ``[E, Ms, 4]``: centre x, y, z, radius [m];
- cylinders ``[E, Mc, 5]``: vertical columns: axis x, y, bottom z, top z, radius [m];
- boxes ``[E, Mb, 7]``: centre x, y, z, half extents along the box's own x, y, z, yaw about world z
  [m, m, m, m, m, m, rad]; an axis-aligned box has yaw 0, a wall is a thin box (:func:`wall`).
"""

from __future__ import annotations

import dataclasses
import math

import torch

SPHERE_FIELDS = ("x_w", "y_w", "z_w", "radius")
CYLINDER_FIELDS = ("x_w", "y_w", "z_min_w", "z_max_w", "radius")
BOX_FIELDS = ("x_w", "y_w", "z_w", "half_x", "half_y", "half_z", "yaw")


@dataclasses.dataclass(frozen=True)
class Scene:
    ground_z_w: torch.Tensor
    """[E] height of the ground plane [m]"""
    spheres: torch.Tensor
    """[E, Ms, 4] in SPHERE_FIELDS order [m]"""
    sphere_valid: torch.Tensor
    """[E, Ms] bool"""
    cylinders: torch.Tensor
    """[E, Mc, 5] in CYLINDER_FIELDS order [m]"""
    cylinder_valid: torch.Tensor
    """[E, Mc] bool"""
    boxes: torch.Tensor
    """[E, Mb, 7] in BOX_FIELDS order [m, rad]"""
    box_valid: torch.Tensor
    """[E, Mb] bool"""

    def __post_init__(self):
        e = self.ground_z_w.shape[0]
        for name, mask, width in (("spheres", "sphere_valid", 4), ("cylinders", "cylinder_valid", 5),
                                  ("boxes", "box_valid", 7)):
            t, v = getattr(self, name), getattr(self, mask)
            if t.dim() != 3 or t.shape[0] != e or t.shape[2] != width or v.shape != t.shape[:2]:
                raise ValueError(f"Scene.{name}: expected [{e}, M, {width}] with a [{e}, M] mask, got "
                                 f"{tuple(t.shape)} and {tuple(v.shape)}")

    @property
    def num_envs(self) -> int:
        return self.ground_z_w.shape[0]

    @property
    def num_primitives(self) -> torch.Tensor:
        """[E] valid primitives per env, the ground not counted"""
        return self.sphere_valid.sum(1) + self.cylinder_valid.sum(1) + self.box_valid.sum(1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Scene":
        def conv(t: torch.Tensor, is_mask: bool) -> torch.Tensor:
            return t.to(device=device) if is_mask else t.to(device=device, dtype=dtype or t.dtype)
        return Scene(**{f.name: conv(getattr(self, f.name), f.name.endswith("_valid"))
                        for f in dataclasses.fields(self)})


def wall(x0: float, y0: float, x1: float, y1: float, height_m: float, thickness_m: float = 0.1,
         z0: float = 0.0) -> tuple[float, ...]:
    """The box row (BOX_FIELDS) of a wall standing on z0 from (x0, y0) to (x1, y1) [m]."""
    length = math.hypot(x1 - x0, y1 - y0)
    return (0.5 * (x0 + x1), 0.5 * (y0 + y1), z0 + 0.5 * height_m, 0.5 * length, 0.5 * thickness_m,
            0.5 * height_m, math.atan2(y1 - y0, x1 - x0))


def from_lists(spheres: list[list], cylinders: list[list], boxes: list[list], ground_z_w: list[float] | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Scene:
    """A Scene from per-env lists of primitive rows (counts may differ between envs; padded here)."""
    n = len(spheres)
    if not len(cylinders) == len(boxes) == n:
        raise ValueError(f"from_lists: {n} sphere lists, {len(cylinders)} cylinder lists, {len(boxes)} box lists")

    def pad(rows: list[list], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = max([len(r) for r in rows] + [0])
        t = torch.zeros(n, m, width, dtype=dtype)
        v = torch.zeros(n, m, dtype=torch.bool)
        for i, r in enumerate(rows):
            if r:
                t[i, :len(r)] = torch.tensor(r, dtype=dtype).reshape(len(r), width)
                v[i, :len(r)] = True
        return t.to(device), v.to(device)

    s, sv = pad(spheres, 4)
    c, cv = pad(cylinders, 5)
    b, bv = pad(boxes, 7)
    g = torch.zeros(n, dtype=dtype) if ground_z_w is None else torch.tensor(ground_z_w, dtype=dtype)
    return Scene(g.to(device), s, sv, c, cv, b, bv)


def random_scene(num_envs: int, n_spheres: int, n_cylinders: int, n_boxes: int, generator: torch.Generator,
                 extent_m: float = 10.0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 fill: float = 1.0) -> Scene:
    """Random obstacle fields in [-extent, extent]^2 standing on z = 0: spheres floating, columns from
    the ground to 1-4 m, yawed boxes on the ground, one box in five a wall. ``fill`` < 1 leaves each
    primitive out with probability 1 - fill (different counts per env). For tests and benchmarks."""
    e, g = num_envs, generator

    def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)

    xy = lambda m: u(e, m, 2, lo=-extent_m, hi=extent_m)  # noqa: E731
    spheres = torch.cat([xy(n_spheres), u(e, n_spheres, 1, lo=0.3, hi=3.0), u(e, n_spheres, 1, lo=0.2, hi=1.0)], -1)
    cylinders = torch.cat([xy(n_cylinders), torch.zeros(e, n_cylinders, 1, dtype=dtype),
                           u(e, n_cylinders, 1, lo=1.0, hi=4.0), u(e, n_cylinders, 1, lo=0.1, hi=0.5)], -1)
    half = u(e, n_boxes, 3, lo=0.2, hi=1.0)
    is_wall = u(e, n_boxes) < 0.2
    half[..., 0] = torch.where(is_wall, u(e, n_boxes, lo=1.0, hi=3.0), half[..., 0])
    half[..., 1] = torch.where(is_wall, torch.full_like(half[..., 1], 0.05), half[..., 1])
    boxes = torch.cat([xy(n_boxes), half[..., 2:3], half, u(e, n_boxes, 1, lo=-math.pi, hi=math.pi)], -1)
    keep = lambda m: u(e, m) < fill  # noqa: E731
    return Scene(torch.zeros(e, dtype=dtype), spheres, keep(n_spheres), cylinders, keep(n_cylinders), boxes,
                 keep(n_boxes)).to(device)
