"""The navigate task: collisions, success, free start and goal, curriculum, observation groups, depth,
the privileged ray fan against brute force, the contract's image entry, reproducibility."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sim.camera.config import CameraRandomizationCfg
from sim.camera.depth import DepthCamera
from sim.camera.scene import Scene
from sim.tasks import make_env
from sim.tasks.navigate import NavigateCfg, NavigateEnv, evaluate_fields
from sim.tasks.obstacles import obstacle_distance, ray_fan
from sim.tasks.run_cfg import RunCfg


def _env(n: int = 4, seed: int = 0, **cfg) -> NavigateEnv:
    env = NavigateEnv(NavigateCfg(**cfg), RunCfg(num_envs=n, seed=seed))
    env.reset()
    return env


def _hover(env: NavigateEnv) -> torch.Tensor:
    return env.hover_action.repeat(env.num_envs, 1)


def _clear_field(env: NavigateEnv) -> None:
    env.field.cylinder_valid[:] = False
    env.field.box_valid[:] = False


def test_collision_terminates_as_crash():
    env = _env(2, curriculum_start_level=0)
    _clear_field(env)
    pos = env.state.pos_w[0]
    # a column whose surface is 0.1 m from the vehicle's centre: inside its 0.15 m sphere
    env.field.cylinders[0, 0] = torch.tensor([pos[0] + 0.2, pos[1], 0.0, 4.0, 0.1])
    env.field.cylinder_valid[0, 0] = True
    _, reward, terminated, truncated, info = env.step(_hover(env))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert bool(info["collided"][0]) and bool(info["crashed"][0]) and not bool(info["success"][0])
    assert reward[0] <= env.cfg.rew_crash * env.cfg.control_dt + 1.0  # the crash term dominates
    # the ground is an obstacle too
    env2 = _env(1)
    _clear_field(env2)
    env2.state.pos_w[0, 2] = 0.1
    assert bool(env2.step(_hover(env2))[4]["collided"][0])


def test_success_within_tolerance_of_the_goal():
    env = _env(3)
    _clear_field(env)
    env.state.pos_w[0] = env.goal_w[0] + torch.tensor([0.3, 0.0, 0.0])  # within 0.5 m
    env.state.pos_w[1] = env.goal_w[1] + torch.tensor([0.0, 0.8, 0.0])  # not
    _, reward, terminated, _, info = env.step(_hover(env))
    assert info["success"].tolist() == [True, False, False]
    assert terminated[0] and not terminated[1] and not terminated[2]
    assert reward[0] > reward[1]


def test_start_and_goal_are_free_and_counts_follow_the_curriculum():
    cfg = dict(num_obstacles=(4, 40), curriculum_levels=4)
    env = _env(64, seed=3, curriculum_start_level=4, **cfg)
    counts = env.field.cylinder_valid.sum(1) + env.field.box_valid.sum(1)
    assert int(counts.max()) <= 40 and int(counts.max()) > 20
    assert not (env.field.cylinder_valid & env.field.box_valid).any()  # a slot holds one kind
    for point in (env.start_w, env.goal_w, env.state.pos_w):
        assert float(obstacle_distance(env.field, point).min()) >= env.cfg.keepout_m - env.cfg.init_pos_m * 3 ** 0.5
    assert float(obstacle_distance(env.field, env.start_w).min()) >= env.cfg.keepout_m
    assert float(obstacle_distance(env.field, env.goal_w).min()) >= env.cfg.keepout_m
    low = _env(64, seed=3, curriculum_start_level=0, **cfg)
    low_counts = low.field.cylinder_valid.sum(1) + low.field.box_valid.sum(1)
    assert int(low_counts.max()) <= low.cfg.count_cap(0) < int(counts.max())


def test_curriculum_rises_on_success_only():
    env = _env(8, curriculum_levels=3, curriculum_window=8, curriculum_success=0.75)
    _clear_field(env)
    env.state.pos_w[:] = env.goal_w  # every episode succeeds
    env.step(_hover(env))
    assert env.curriculum_level == 1
    counts = env.field.cylinder_valid.sum(1) + env.field.box_valid.sum(1)  # the new fields: level 1
    assert int(counts.max()) <= env.cfg.count_cap(1)
    env.state.pos_w[:, 2] = 0.05  # every episode crashes on the ground
    env.step(_hover(env))
    assert env.curriculum_level == 1
    env.state.pos_w[:] = env.goal_w  # a failed window does not hold the next one back
    env.step(_hover(env))
    assert env.curriculum_level == 2
    with pytest.raises(ValueError):
        env.set_curriculum_level(4)


def test_groups_shapes_and_dtypes():
    env = _env(3)
    groups = env.reset()
    assert set(groups) == {"policy", "privileged"}
    assert groups["policy"].shape == (3, env.obs_dim) and groups["policy"].dtype == torch.float32
    assert groups["privileged"].shape == (3, env.privileged_dim) and groups["privileged"].dtype == torch.float32
    assert env.image_inputs() == ()
    depth_env = _env(3, render_depth=True)
    groups = depth_env.step(_hover(depth_env))[0]
    k = depth_env.cfg.camera.intrinsics
    assert groups["depth"].shape == (3, 1, k.height, k.width) and groups["depth"].dtype == torch.float32


def test_depth_group_matches_the_camera_on_the_same_state():
    env = _env(4, seed=5, render_depth=True, camera_randomization=CameraRandomizationCfg(), curriculum_start_level=8)
    groups = env.step(_hover(env))[0]
    cam = DepthCamera(env.cfg.camera)
    ref = cam.render(env.field, env.state.pos_w, env.state.quat_wxyz, cam.nominal(4))
    torch.testing.assert_close(groups["depth"][:, 0], ref, equal_nan=True)
    assert torch.isfinite(ref).any()  # obstacles or the ground are in view


def _brute_force_fan(field: Scene, origin: torch.Tensor, yaw: torch.Tensor, rays: int, max_range: float,
                     step_m: float = 2e-3) -> torch.Tensor:
    """Dense samples along each ray, the first inside an obstacle by the analytic distance (independent
    of the fan's ray-shape tests); resolution step_m."""
    n = origin.shape[0]
    ts = torch.arange(0.0, max_range, step_m)
    out = torch.full((n, rays), max_range)
    for e in range(n):
        one = Scene(*(t[e:e + 1].expand(len(ts), *t.shape[1:]) for t in (
            field.ground_z_w, field.spheres, field.sphere_valid, field.cylinders, field.cylinder_valid, field.boxes,
            field.box_valid)))
        for r in range(rays):
            ang = float(yaw[e]) + r * 2 * math.pi / rays
            points = origin[e] + ts[:, None] * torch.tensor([math.cos(ang), math.sin(ang), 0.0])
            inside = (obstacle_distance(one, points) <= 0).nonzero()
            if len(inside):
                out[e, r] = ts[inside[0, 0]]
    return out


def test_privileged_fan_against_brute_force():
    env = _env(6, seed=7, curriculum_start_level=8, num_obstacles=(10, 14), fan_nearest=32)
    fan = env.privileged()
    ref = _brute_force_fan(env.field, env.state.pos_w, env.heading(), env.cfg.fan_rays, env.cfg.fan_range_m)
    assert (ref < env.cfg.fan_range_m).float().mean() > 0.1  # the fan sees obstacles
    torch.testing.assert_close(fan, ref, atol=2.5e-3, rtol=0)
    # ray 0 looks along the heading: a column straight ahead
    _clear_field(env)
    yaw = env.heading()[0]
    ahead = env.state.pos_w[0, :2] + 2.0 * torch.stack([torch.cos(yaw), torch.sin(yaw)])
    env.field.cylinders[0, 0] = torch.tensor([ahead[0], ahead[1], 0.0, 4.0, 0.3])
    env.field.cylinder_valid[0, 0] = True
    assert abs(float(env.privileged()[0, 0]) - 1.7) < 1e-4
    # fewer obstacles tested than in the field: only far ones are missed
    few = ray_fan(env.field, env.state.pos_w, env.heading(), 32, 6.0, nearest=1)
    assert abs(float(few[0, 0]) - 1.7) < 1e-4


def test_image_inputs_from_the_camera_config():
    cfg = NavigateCfg(render_depth=True)
    env = NavigateEnv(cfg, RunCfg(num_envs=1))
    (image,) = env.image_inputs()
    k, cam, rand = cfg.camera.intrinsics, cfg.camera, cfg.camera_randomization
    assert (image.name, image.width, image.height) == ("depth", k.width, k.height)
    assert image.fx_fy_cx_cy_px == (k.fx, k.fy, k.cx, k.cy)
    assert (image.min_range_m, image.max_range_m) == (cam.min_range_m, cam.max_range_m)
    assert image.mount_position_b_m == cam.mount.position_b_m and image.mount_rpy_rad == cam.mount.rpy_rad
    assert (image.pooled_width, image.pooled_height) == cfg.depth_pooled_wh
    # every camera drawn in training passes the deployed check
    params = env.camera.sample(256, torch.Generator().manual_seed(0))
    assert image.intrinsics_tolerance_rel >= max(abs(rand.focal_scale[0] - 1), abs(rand.focal_scale[1] - 1))
    for i in range(256):
        assert image.intrinsics_error(float(params.fx[i]), float(params.fy[i]), float(params.cx[i]),
                                      float(params.cy[i]), k.width, k.height) is None


def test_seeded_envs_reproduce_on_cpu():
    def rollout(seed: int) -> tuple[torch.Tensor, ...]:
        env = make_env("navigate", num_envs=4, seed=seed, device="cpu", curriculum_start_level=4)
        groups = env.reset()
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            groups = env.step((0.3 * torch.randn(4, 4, generator=g) + env.hover_action).clamp(-1, 1))[0]
        return env.field.cylinders, env.field.boxes, groups["policy"], groups["privileged"]

    a, b, c = rollout(0), rollout(0), rollout(1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_evaluate_fields_counts_each_field_once():
    cfg = NavigateCfg(episode_length_s=0.5)
    env_cfg = dataclasses.replace(cfg)
    out = evaluate_fields(lambda groups: torch.zeros(groups["policy"].shape[0], 4) - 1.0, env_cfg, num_obstacles=8,
                          num_fields=6)
    # zero thrust falls: crashes or time-outs, never success
    assert out["success"] == 0.0
    assert abs(out["success"] + out["collision"] + out["crash_other"] + out["timeout"] - 1.0) < 1e-6


def test_teacher_trains_on_policy_and_privileged_groups(tmp_path):
    from policies.checkpoint import load_checkpoint
    from policies.export import model_from_checkpoint
    from policies.ppo import ppo_defaults, train

    env = make_env("navigate", num_envs=8, seed=0)
    ppo = dataclasses.replace(ppo_defaults("navigate"), num_iterations=1, num_steps=4, num_minibatches=1,
                              update_epochs=1)
    ckpt = load_checkpoint(train(env, "navigate", ppo, tmp_path, progress=False), task="navigate")
    assert ckpt["obs_groups"] == {"policy": env.obs_dim, "privileged": env.privileged_dim}
    actions = model_from_checkpoint(ckpt).act_mean(env.reset())
    assert actions.shape == (8, env.cfg.action_dim) and torch.isfinite(actions).all()
