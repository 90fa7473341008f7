"""The batched ray caster against pybullet's own camera on the same scenes (issue 11's bar: >= 99 % of the
pixels both cameras see in range agree to 1 % of the depth).

:func:`navigation_views` draws views inside the `navigate` task's own obstacle fields (the scenes the
student flies and the twin and the navigation evaluation render in pybullet); :func:`compare_views`
renders each view with :class:`sim.camera.depth.DepthCamera` and with pybullet's TinyRenderer
(:func:`sim.camera.pybullet_depth.render_depth` on the scene :func:`~sim.camera.pybullet_depth.build_scene`
builds) and counts the agreeing pixels. tests/sim/test_depth_camera.py holds it to the bar;
bench/bench_depth_crosscheck.py prints it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb
import torch

from sim.camera import pybullet_depth
from sim.camera.config import CameraRandomizationCfg, DepthCameraCfg
from sim.camera.depth import CameraParams, DepthCamera, camera_pose_w
from sim.camera.scene import Scene

VIEW_CLEARANCE_M = 0.3
"""a view's camera is at least this far from every obstacle [m] (closer, the vehicle would have collided)"""


@dataclasses.dataclass(frozen=True)
class CrossCheck:
    """Per view: how many pixels both cameras see in range, how many of those agree to ``rel_tol``."""

    compared: np.ndarray
    """[V] pixels both cameras see within [min_range_m, max_range_m] [count]"""
    within: np.ndarray
    """[V] of those, pixels whose depths differ by at most rel_tol of pybullet's depth [count]"""
    beyond_agree: np.ndarray
    """[V] fraction of all pixels on which both agree whether the depth is beyond max_range_m [1]"""

    @property
    def fraction(self) -> float:
        """fraction of all compared pixels (every view together) within rel_tol [1]"""
        return float(self.within.sum() / max(int(self.compared.sum()), 1))

    @property
    def worst_view(self) -> float:
        """the lowest per-view fraction within rel_tol [1]"""
        return float((self.within / np.maximum(self.compared, 1)).min())


def _rows(scene: Scene, e: int) -> tuple[list, list, list, float]:
    return (scene.spheres[e][scene.sphere_valid[e]].tolist(), scene.cylinders[e][scene.cylinder_valid[e]].tolist(),
            scene.boxes[e][scene.box_valid[e]].tolist(), float(scene.ground_z_w[e]))


def pybullet_views(scene: Scene, cfg: DepthCameraCfg, params: CameraParams, pos_w: torch.Tensor,
                   quat_wxyz: torch.Tensor, far_m: float = 100.0, **build_kw) -> np.ndarray:
    """[E, H, W] z-depth [m] of each env's view from pybullet's TinyRenderer (one DIRECT client per env,
    the env's own intrinsics from ``params``; ``build_kw`` go to build_scene)."""
    o_w, rot_wc = camera_pose_w(params, pos_w, quat_wxyz)
    out = []
    for e in range(scene.num_envs):
        k = dataclasses.replace(cfg.intrinsics, fx=float(params.fx[e]), fy=float(params.fy[e]), cx=float(params.cx[e]),
                                cy=float(params.cy[e]))
        client = pb.connect(pb.DIRECT)
        if client < 0:
            raise RuntimeError("pybullet could not start a DIRECT client")
        try:
            pybullet_depth.build_scene(client, *_rows(scene, e), **build_kw)
            out.append(pybullet_depth.render_depth(client, k, o_w[e].tolist(), rot_wc[e].double().numpy(), far_m=far_m))
        finally:
            pb.disconnect(client)
    return np.stack(out)


def compare_views(scene: Scene, cfg: DepthCameraCfg, params: CameraParams, pos_w: torch.Tensor,
                  quat_wxyz: torch.Tensor, rel_tol: float = 0.01, **build_kw) -> CrossCheck:
    """Both cameras on every view; no pixel is left out except those either camera sees out of range."""
    with torch.no_grad():
        ours = DepthCamera(cfg).render(scene, pos_w, quat_wxyz, params).numpy()
    ref = pybullet_views(scene, cfg, params, pos_w, quat_wxyz, **build_kw)
    both = np.isfinite(ours) & (ref <= cfg.max_range_m) & (ref >= cfg.min_range_m)
    rel = np.abs(np.where(both, ours, 0.0) - ref) / ref
    within = (both & (rel <= rel_tol)).sum(axis=(1, 2))
    beyond = ((ref > cfg.max_range_m) == np.isposinf(ours)).mean(axis=(1, 2))
    return CrossCheck(compared=both.sum(axis=(1, 2)), within=within, beyond_agree=beyond)


def yaw_pitch_quat(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) of a yaw about world z, then a pitch about the body y axis."""
    cy, sy, cp, sp = torch.cos(yaw / 2), torch.sin(yaw / 2), torch.cos(pitch / 2), torch.sin(pitch / 2)
    return torch.stack([cy * cp, -sy * sp, cy * sp, sy * cp], -1)


def navigation_views(num_fields: int, num_obstacles: int, views_per_field: int, seed: int = 0,
                     max_pitch_rad: float = math.radians(15.0), max_turn_rad: float = 1.0):
    """Views inside ``num_fields`` fields of the `navigate` task (its own reset draws them, exactly
    ``num_obstacles`` each): per field the start, then points along the start-goal line (20-80 % of
    the way, up to 1 m aside, at the task's flight heights) at least VIEW_CLEARANCE_M from every
    obstacle; each looks toward the goal turned by up to ``max_turn_rad`` and pitched up to
    ``max_pitch_rad``. Returns (scene [V rows], pos_w [V, 3], quat_wxyz [V, 4], the task config), view v
    in field v // views_per_field."""
    from sim.tasks import make_env, obstacles
    from sim.tasks.navigate import NavigateCfg

    cfg = dataclasses.replace(NavigateCfg(), num_obstacles=(num_obstacles, num_obstacles), curriculum_levels=0,
                              curriculum_start_level=0, curriculum_auto=False, render_depth=False)
    env = make_env("navigate", cfg, num_envs=num_fields, seed=seed, device="cpu", physics="eager")
    env.reset()
    g = torch.Generator().manual_seed(seed)
    field = env.field
    start, goal = env.start_w, env.goal_w
    rows = torch.arange(num_fields).repeat_interleave(views_per_field)
    pos = start[rows].clone()
    lo_z, hi_z = cfg.flight_height_m
    for v in range(len(rows)):
        if v % views_per_field == 0:
            continue  # the start: the task keeps it clear
        f = rows[v:v + 1]
        one = Scene(**{fl.name: getattr(field, fl.name)[f] for fl in dataclasses.fields(field)})
        line = goal[f, :2] - start[f, :2]
        side = torch.stack([-line[:, 1], line[:, 0]], -1) / line.norm(dim=-1, keepdim=True)
        for _ in range(1000):
            along, aside = 0.2 + 0.6 * torch.rand(1, generator=g), 2.0 * torch.rand(1, generator=g) - 1.0
            z = lo_z + (hi_z - lo_z) * torch.rand(1, generator=g)
            p = torch.cat([start[f, :2] + along * line + aside * side, z[:, None]], -1)
            if bool(obstacles.obstacle_distance(one, p)[0] > VIEW_CLEARANCE_M):
                pos[v] = p[0]
                break
        else:
            raise RuntimeError(f"field {int(f)}: no view {VIEW_CLEARANCE_M} m clear of the obstacles")
    to_goal = goal[rows] - pos
    yaw = torch.atan2(to_goal[:, 1], to_goal[:, 0]) + max_turn_rad * (2.0 * torch.rand(len(rows), generator=g) - 1.0)
    pitch = max_pitch_rad * (2.0 * torch.rand(len(rows), generator=g) - 1.0)
    scene = Scene(**{fl.name: getattr(field, fl.name)[rows] for fl in dataclasses.fields(field)})
    return scene, pos, yaw_pitch_quat(yaw, pitch), cfg


def geometric_randomization(rand: CameraRandomizationCfg) -> CameraRandomizationCfg:
    """``rand``'s intrinsics and mount draws without its sensor effects (noise and dropouts are not
    geometry: pybullet's camera has none)."""
    return dataclasses.replace(rand, depth_noise_rel=0.0, dropout_prob=0.0)
