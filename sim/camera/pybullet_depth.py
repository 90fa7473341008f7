"""The primitive scenes of :mod:`sim.camera.scene` in pybullet, and depth from pybullet's own camera.

numpy + pybullet only (no torch), so the digital twin can use it. Rendering is getCameraImage in the
given client (DIRECT mode) with ER_TINY_RENDERER, with a projection matrix built from the pinhole
intrinsics and its nonlinear depth buffer converted to z-depth along the optical axis [m], the
quantity the ray caster returns.

TinyRenderer draws a GEOM_SPHERE visual as a coarse hull (42 vertices): up to ~3 % of the radius
inside the true sphere, measured as only 95-99 % of sphere pixels within 1 % of the analytic depth
(boxes: 99.9-100 %). So a sphere's visual shape here is a finer icosphere mesh (``sphere_subdivisions``;
its collision shape stays GEOM_SPHERE); ``sphere_subdivisions=None`` keeps pybullet's own sphere.

A GEOM_CYLINDER visual is a polygonal prism in TinyRenderer too: on navigation fields (0.15-0.4 m columns
1-2 m from the camera) up to 1.4 % deeper than the true cylinder, and only 98.4 % of pixels within 1 %
over 20 fields. So a cylinder's visual shape is a prism of ``cylinder_segments`` sides (128: the
polygon's sides lie within r (1 - cos(pi / 128)) = 3e-4 r of the circle; its collision shape stays
GEOM_CYLINDER); ``cylinder_segments=None`` keeps pybullet's own cylinder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pybullet as pb

from sim.camera.config import PinholeCfg

GROUND_HALF_M = 200.0
"""half size of the ground box [m] (a box, not GEOM_PLANE: a finite, exactly triangulated slab)"""
GROUND_THICKNESS_M = 0.02
"""thickness of the ground box below z = ground [m]"""


def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere mesh: vertices [V, 3] on the sphere, triangles [F, 3] wound counter-clockwise seen from
    outside; each subdivision splits every triangle in four (4: 2562 vertices, ~0.1 % radial error)."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.asarray(p, float) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        mid: dict[tuple[int, int], int] = {}

        def midpoint(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in mid:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                mid[key] = len(v) - 1
            return mid[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.asarray(v), np.asarray(faces, dtype=np.int32)


def cylinder_mesh(segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit cylinder (radius 1, z from -0.5 to 0.5) as a prism of ``segments`` sides whose corners lie
    on the circle: vertices [2 segments + 2, 3] (bottom ring, top ring, bottom centre, top centre),
    triangles [4 segments, 3] wound counter-clockwise seen from outside (sides, then both caps)."""
    a = 2.0 * math.pi * np.arange(segments) / segments
    ring = np.stack([np.cos(a), np.sin(a)], -1)
    verts = np.concatenate([np.c_[ring, np.full(segments, -0.5)], np.c_[ring, np.full(segments, 0.5)],
                            [[0.0, 0.0, -0.5], [0.0, 0.0, 0.5]]])
    i = np.arange(segments)
    j = (i + 1) % segments
    bottom, top = 2 * segments, 2 * segments + 1
    tris = np.concatenate([np.stack([i, j, segments + j], -1), np.stack([i, segments + j, segments + i], -1),
                           np.stack([np.full(segments, bottom), j, i], -1),
                           np.stack([np.full(segments, top), segments + i, segments + j], -1)])
    return verts, tris.astype(np.int32)


def build_scene(client: int, spheres: Sequence[Sequence[float]], cylinders: Sequence[Sequence[float]],
                boxes: Sequence[Sequence[float]], ground_z_w: float | None = 0.0,
                sphere_subdivisions: int | None = 4, cylinder_segments: int | None = 64) -> list[int]:
    """Static bodies (collision and visual shapes) for one env's primitive rows (scene.py field order);
    returns their body ids. Spheres and cylinders are seen as fine meshes and touched as pybullet's own
    shapes (the module doc says why)."""
    ids = []
    unit_sphere = icosphere(sphere_subdivisions) if sphere_subdivisions is not None else None
    unit_cylinder = cylinder_mesh(cylinder_segments) if cylinder_segments is not None else None

    def body(shape: int, pos, orn=(0.0, 0.0, 0.0, 1.0), **kw) -> None:
        col = pb.createCollisionShape(shape, physicsClientId=client, **kw)
        if shape == pb.GEOM_SPHERE and unit_sphere is not None:
            verts, tris = unit_sphere
            vis = pb.createVisualShape(pb.GEOM_MESH, vertices=(verts * kw["radius"]).tolist(),
                                       indices=tris.reshape(-1).tolist(), physicsClientId=client)
        elif shape == pb.GEOM_CYLINDER and unit_cylinder is not None:
            verts, tris = unit_cylinder
            scale = np.array([kw["radius"], kw["radius"], kw["height"]])
            vis = pb.createVisualShape(pb.GEOM_MESH, vertices=(verts * scale).tolist(),
                                       indices=tris.reshape(-1).tolist(), physicsClientId=client)
        else:
            vis_kw = {("length" if k == "height" else k): v for k, v in kw.items()}
            vis = pb.createVisualShape(shape, physicsClientId=client, **vis_kw)
        ids.append(pb.createMultiBody(0.0, col, vis, basePosition=pos, baseOrientation=orn, physicsClientId=client))

    if ground_z_w is not None:
        body(pb.GEOM_BOX, (0.0, 0.0, ground_z_w - 0.5 * GROUND_THICKNESS_M),
             halfExtents=(GROUND_HALF_M, GROUND_HALF_M, 0.5 * GROUND_THICKNESS_M))
    for x, y, z, r in spheres:
        body(pb.GEOM_SPHERE, (x, y, z), radius=r)
    for x, y, z0, z1, r in cylinders:
        body(pb.GEOM_CYLINDER, (x, y, 0.5 * (z0 + z1)), radius=r, height=z1 - z0)
    for x, y, z, hx, hy, hz, yaw in boxes:
        body(pb.GEOM_BOX, (x, y, z), (0.0, 0.0, math.sin(0.5 * yaw), math.cos(0.5 * yaw)), halfExtents=(hx, hy, hz))
    return ids


def projection_matrix(k: PinholeCfg, near_m: float, far_m: float) -> list[float]:
    """OpenGL projection (column-major, as pybullet takes it) of pinhole ``k``, with the image row 0 at
    the top and pixel centres where the ray caster puts them (OpenCV: integer pixel coordinates)."""
    w, h = k.width, k.height
    p = np.zeros((4, 4))
    p[0, 0] = 2.0 * k.fx / w
    p[0, 2] = 1.0 - 2.0 * (k.cx + TINY_RENDERER_OFFSET_PX[0]) / w
    p[1, 1] = 2.0 * k.fy / h
    p[1, 2] = 2.0 * (k.cy + TINY_RENDERER_OFFSET_PX[1]) / h - 1.0
    p[2, 2] = -(far_m + near_m) / (far_m - near_m)
    p[2, 3] = -2.0 * far_m * near_m / (far_m - near_m)
    p[3, 2] = -1.0
    return p.T.reshape(-1).tolist()


TINY_RENDERER_OFFSET_PX = (0.0, 1.0)
"""(u, v) offset between OpenCV pixel coordinates and where TinyRenderer samples (it samples integer
window coordinates and flips rows; OpenGL would be (0.5, 0.5)); found by rendering a tilted, rolled
plane, where these match the analytic depth to 1e-6 and every other half-pixel step is off by 1-5 %"""


def view_matrix(o_w: Sequence[float], rot_wc: np.ndarray) -> list[float]:
    """pybullet view matrix of a camera at o_w with optical frame R_wc [3, 3] (z forward, y down)."""
    rot_wc = np.asarray(rot_wc, dtype=float)
    target = np.asarray(o_w, dtype=float) + rot_wc[:, 2]
    return pb.computeViewMatrix(list(map(float, o_w)), target.tolist(), (-rot_wc[:, 1]).tolist())


def render_depth(client: int, k: PinholeCfg, o_w: Sequence[float], rot_wc: np.ndarray, near_m: float = 0.02,
                 far_m: float = 100.0) -> np.ndarray:
    """z-depth [H, W] float32 [m] from pybullet's TinyRenderer; far_m where nothing was drawn."""
    _, _, _, depth_buf, _ = pb.getCameraImage(k.width, k.height, view_matrix(o_w, rot_wc),
                                              projection_matrix(k, near_m, far_m), renderer=pb.ER_TINY_RENDERER,
                                              flags=pb.ER_NO_SEGMENTATION_MASK, physicsClientId=client)
    d = np.asarray(depth_buf, dtype=np.float64).reshape(k.height, k.width)
    # the OpenGL depth buffer is nonlinear in eye depth: d = (1/near - 1/z) / (1/near - 1/far)
    return (far_m * near_m / (far_m - (far_m - near_m) * d)).astype(np.float32)
