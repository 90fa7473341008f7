"""The batched depth camera (sim/camera): against pybullet's own camera, against geometry worked by hand,
culling on == off bit for bit, randomization, the REP 117/118 special values, file intrinsics, pooling."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb
import pytest
import torch

from calibration.files import CalibrationFile, CameraSection, camera_info_dict, write_calibration, write_yaml
from sim.camera import crosscheck, pybullet_depth, raycast
from sim.camera.crosscheck import yaw_pitch_quat
from sim.camera.config import CameraRandomizationCfg, DepthCameraCfg, MountCfg, PinholeCfg
from sim.camera.depth import DepthCamera, camera_pose_w, for_network, pool_nearest
from sim.camera.scene import from_lists, random_scene, wall

W, H = 64, 48


def field_poses(n: int, g: torch.Generator, extent_m: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bodies at 0.5-2 m anywhere in the field, any heading, pitched +-15 deg."""
    pos = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 2 * extent_m, 0.5 + 1.5 * torch.rand(n, 1, generator=g)], -1)
    yaw = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
    pitch = (torch.rand(n, generator=g) - 0.5) * math.radians(30)
    return pos, yaw_pitch_quat(yaw, pitch)


def free_poses(scene, g: torch.Generator, extent_m: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """field_poses redrawn per env until the body is 0.3 m clear of every primitive's bounding sphere
    (a camera inside an obstacle sees its inside, which a collision would have ended)."""
    pos, quat = field_poses(scene.num_envs, g, extent_m)
    for e in range(scene.num_envs):
        for _ in range(1000):
            clear = all(bool(((c[e] - pos[e]).norm(dim=-1) > r[e] + 0.3)[v[e]].all())
                        for (c, r), v in zip(raycast.bounding_spheres(scene),
                                             (scene.sphere_valid, scene.cylinder_valid, scene.box_valid)))
            if clear:
                break
            p, q = field_poses(1, g, extent_m)
            pos[e], quat[e] = p[0], q[0]
        else:
            raise AssertionError(f"env {e}: no free pose found")
    return pos, quat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pybullet_camera(seed):
    """>= 99 % of the pixels that both cameras see within range agree to 1 % of the depth, on random
    obstacle fields seen from random poses through randomized, off-centre intrinsics and mounts."""
    g = torch.Generator().manual_seed(seed)
    n = 4
    k = PinholeCfg(W, H, fx=38.0, fy=40.0, cx=30.7, cy=24.2)
    cfg = DepthCameraCfg(intrinsics=k, mount=MountCfg((0.05, 0.0, 0.02), (0.0, 0.1, 0.0)), max_range_m=25.0)
    rand = CameraRandomizationCfg(focal_scale=(0.9, 1.1), principal_shift_px=(-2.0, 2.0),
                                  mount_rotation_rad=(-0.1, 0.1))
    scene = random_scene(n, 4, 6, 6, g, extent_m=6.0, fill=0.8)
    pos, quat = free_poses(scene, g, extent_m=6.0)
    check = crosscheck.compare_views(scene, cfg, DepthCamera(cfg, rand).sample(n, g), pos, quat)
    assert (check.compared > 0.3 * W * H).all(), f"too few pixels in range to compare: {check.compared}"
    assert check.worst_view >= 0.99, f"seed {seed}: a view has only {100 * check.worst_view:.2f} % within 1 %"
    # the two cameras see the same things beyond range too (silhouettes aside)
    assert (check.beyond_agree >= 0.98).all()


@pytest.mark.parametrize("num_obstacles", [16, 32])
def test_matches_pybullet_camera_on_navigation_fields(num_obstacles):
    """The bar on the scenes the depth student flies: 20 fields of the `navigate` task's own generator,
    two views each (the start, and a point along the way 0.3 m clear of the obstacles, looking roughly
    toward the goal), the task's camera with its intrinsics and mount draws: >= 99 % of the pixels both
    see in range within 1 % over all views, and in every view. Columns 0.15-0.4 m wide seen from 0.3 m
    on are where pybullet's own cylinder fails (test below)."""
    scene, pos, quat, cfg = crosscheck.navigation_views(20, num_obstacles, 2, seed=num_obstacles)
    cam = DepthCamera(cfg.camera, crosscheck.geometric_randomization(cfg.camera_randomization))
    params = cam.sample(scene.num_envs, torch.Generator().manual_seed(num_obstacles))
    check = crosscheck.compare_views(scene, cfg.camera, params, pos, quat)
    assert check.compared.sum() > 0.3 * check.compared.size * W * H, "too few pixels in range to compare"
    assert check.fraction >= 0.99, f"{100 * check.fraction:.2f} % within 1 % over {check.compared.sum()} pixels"
    assert check.worst_view >= 0.99, f"a view has only {100 * check.worst_view:.2f} % within 1 %"
    assert (check.beyond_agree >= 0.98).all()


def test_native_pybullet_cylinder_is_coarser():
    """Why the reference draws cylinders as a 64-sided prism: pybullet's GEOM_CYLINDER visual is a
    coarse polygon whose depth misses a navigation column seen from 0.6 m by more than 1 %."""
    k = PinholeCfg.from_hfov(W, H, math.radians(87))
    cfg = DepthCameraCfg(intrinsics=k, max_range_m=10.0)
    column = [[1.0, 0.2, 0.0, 3.0, 0.4]]  # x, y, z0, z1, r: its surface 0.6 m ahead
    scene = from_lists([[]], [column], [[]])
    pos, quat = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    params = DepthCamera(cfg).nominal(1)
    for segments, expect_fine in ((64, True), (None, False)):
        check = crosscheck.compare_views(scene, cfg, params, pos, quat, cylinder_segments=segments)
        assert check.compared.sum() > 0.3 * W * H
        assert (check.fraction >= 0.99) == expect_fine, f"segments={segments}: {100 * check.fraction:.1f} % within 1 %"


def test_native_pybullet_sphere_is_coarser():
    """Why the reference draws spheres as an icosphere mesh: pybullet's GEOM_SPHERE visual is a coarse
    hull whose depth misses the analytic sphere by more than 1 % on a large sphere seen close up."""
    k = PinholeCfg.from_hfov(W, H, math.radians(60))
    cam = DepthCamera(DepthCameraCfg(intrinsics=k))
    scene = from_lists([[[3.0, 0.0, 1.0, 1.0]]], [[]], [[]])
    pos, quat = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    params = cam.nominal(1)
    ours = cam.render_raw(scene, pos, quat, params)[0].numpy()
    o_w, rot_wc = camera_pose_w(params, pos, quat)
    on_sphere = ours < 2.5
    for subdivisions, expect_fine in ((4, True), (None, False)):
        client = pb.connect(pb.DIRECT)
        try:
            pybullet_depth.build_scene(client, [[3.0, 0.0, 1.0, 1.0]], [], [], 0.0, sphere_subdivisions=subdivisions)
            ref = pybullet_depth.render_depth(client, k, o_w[0].tolist(), rot_wc[0].numpy())
        finally:
            pb.disconnect(client)
        both = on_sphere & (ref < 2.5)
        frac = float((np.abs(ours[both] - ref[both]) / ref[both] <= 0.01).mean())
        assert (frac >= 0.99) == expect_fine, f"subdivisions={subdivisions}: {100 * frac:.1f} % within 1 %"


def test_geometry_by_hand():
    """Frames and z-depth (not ray length): REP 103 optical frame, URDF mount, each primitive kind."""
    k = PinholeCfg(W, H, 40.0, 40.0, 31.5, 23.5)  # the optical axis between the four centre pixels
    quat = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    centre = (slice(23, 25), slice(31, 33))

    def depth(spheres=(), cylinders=(), boxes=(), mount=MountCfg(), pos=(0.0, 0.0, 1.0)):
        cam = DepthCamera(DepthCameraCfg(intrinsics=k, mount=mount, max_range_m=50.0))
        return cam.render_raw(from_lists([list(spheres)], [list(cylinders)], [list(boxes)]), torch.tensor([pos]),
                              quat, cam.nominal(1))[0]

    # looking straight down (pitch +90 deg): the ground 1 m below, everywhere z-depth 1 m, so the
    # image corners (longer rays) read 1 m too
    down = depth(mount=MountCfg(rpy_rad=(0.0, math.pi / 2, 0.0)))
    torch.testing.assert_close(down, torch.ones(H, W), rtol=1e-5, atol=0)
    # a box face 5 m ahead along body x
    box = depth(boxes=[(5.5, 0.0, 1.0, 0.5, 2.0, 2.0, 0.0)])
    torch.testing.assert_close(box[centre], torch.full((2, 2), 5.0), rtol=1e-5, atol=0)
    # a wall yawed 45 deg through (4, 0): nearest at the centre column, deeper to one side
    w = depth(boxes=[wall(3.0, -1.0, 5.0, 1.0, 3.0, thickness_m=0.02)])
    assert abs(float(w[23:25, 31:33].mean()) - 4.0) < 0.03
    # image right (u up) is body -y: a column to the right appears in the right half only
    ground_only = depth()
    col = depth(cylinders=[(4.0, -1.5, 0.0, 3.0, 0.3)]) != ground_only
    assert col[:, W // 2:].any() and not col[:, :W // 2].any()
    # a sphere centred 4 m ahead, r = 0.5: the centre pixels' rays are 0.5 px off the axis
    sph = depth(spheres=[(4.0, 0.0, 1.0, 0.5)])
    off = 0.5 / 40.0
    a, tc = 1 + 2 * off ** 2, 4.0 / (1 + 2 * off ** 2)
    miss2 = (tc * off) ** 2 * 2 + (tc - 4.0) ** 2
    torch.testing.assert_close(sph[centre], torch.full((2, 2), tc - math.sqrt((0.25 - miss2) / a)), rtol=1e-5, atol=0)
    # camera inside a sphere sees its inside; the image top (v small) is up
    inside = depth(spheres=[(0.0, 0.0, 1.0, 2.0)], pos=(0.0, 0.0, 1.0))
    assert torch.isfinite(inside).all() and float(inside[centre].mean()) == pytest.approx(2.0, rel=1e-3)
    above = depth(boxes=[(5.5, 0.0, 3.5, 0.5, 2.0, 0.5, 0.0)]) != ground_only  # above the line of sight
    assert above[:H // 2].any() and not above[H // 2:].any()


@pytest.mark.parametrize("fill", [1.0, 0.6])
def test_culling_on_equals_off(fill):
    """Per-tile culling changes the work, never the image: bit-identical output, with different counts
    per env, randomized cameras, noise-free."""
    g = torch.Generator().manual_seed(3)
    n = 6
    cfg = DepthCameraCfg(max_range_m=8.0)  # short range: culling by range is exercised too
    cam = DepthCamera(cfg, CameraRandomizationCfg(focal_scale=(0.8, 1.2), mount_rotation_rad=(-0.3, 0.3)))
    scene = random_scene(n, 6, 10, 10, g, extent_m=8.0, fill=fill)
    pos, quat = field_poses(n, g, 8.0)
    params = cam.sample(n, g)
    on, off = cam.render(scene, pos, quat, params, cull=True), cam.render(scene, pos, quat, params, cull=False)
    assert torch.equal(on, off)
    # not vacuous: obstacles are in view, and some pixels are out of range
    assert (on < cfg.max_range_m - 0.5).float().mean() > 0.2 and torch.isposinf(on).any()
    if fill < 1:
        assert len(set(scene.num_primitives.tolist())) > 1


@pytest.mark.parametrize("workers, n", [(2, 7), (3, 9), (4, 5)])
def test_workers_render_the_same_images(workers, n):
    """Envs split into ``workers`` slices on as many threads: bit for bit the one-worker image (eager),
    sensor effects included (the noise and dropouts drawn for all envs are cut with them), uneven
    slices and a batch too small to split (fewer than 2 envs per worker) included."""
    g = torch.Generator().manual_seed(5)
    rand = CameraRandomizationCfg(focal_scale=(0.8, 1.2), depth_noise_rel=0.01, dropout_prob=0.05)
    one, split = DepthCamera(DepthCameraCfg(max_range_m=8.0), rand), DepthCamera(DepthCameraCfg(max_range_m=8.0), rand,
                                                                                   workers=workers)
    scene = random_scene(n, 6, 10, 10, g, extent_m=8.0, fill=0.7)
    pos, quat = field_poses(n, g, 8.0)
    params = one.sample(n, g)
    a = one.render(scene, pos, quat, params, torch.Generator().manual_seed(9))
    b = split.render(scene, pos, quat, params, torch.Generator().manual_seed(9))
    assert torch.equal(a.isnan(), b.isnan()) and a.isnan().any()
    assert torch.equal(a.nan_to_num(), b.nan_to_num())
    assert torch.equal(one.render_raw(scene, pos, quat, params), split.render_raw(scene, pos, quat, params))
    assert (a < 7.5).float().mean() > 0.2  # obstacles in view: not vacuous
    with pytest.raises(ValueError, match="workers"):
        DepthCamera(workers=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_shapes_devices_dtypes(device, dtype):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    g = torch.Generator().manual_seed(4)
    n = 3
    cam = DepthCamera(DepthCameraCfg(), device=device, dtype=dtype)
    scene = random_scene(n, 3, 3, 3, g).to(device, dtype)
    pos, quat = (t.to(device, dtype) for t in field_poses(n, g))
    out = cam.render(scene, pos, quat, cam.nominal(n))
    assert out.shape == (n, H, W) and out.dtype == dtype and out.device.type == device
    ref = DepthCamera(DepthCameraCfg()).render(scene.to("cpu", torch.float32), pos.cpu().float(), quat.cpu().float(),
                                               DepthCamera(DepthCameraCfg()).nominal(n))
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(out.cpu())) or (finite != torch.isfinite(out.cpu())).float().mean() < 1e-3
    both = finite & torch.isfinite(out.cpu())
    torch.testing.assert_close(out.cpu().float()[both], ref[both], rtol=1e-4, atol=1e-5)


def test_special_values_and_noise():
    """REP 117/118: -inf nearer than min range, +inf nothing within max range, NaN only for dropouts;
    range-proportional noise of the configured size; dropouts at the configured rate."""
    g = torch.Generator().manual_seed(5)
    n = 8
    cfg = DepthCameraCfg(min_range_m=0.5, max_range_m=6.0)
    scene = from_lists([[[1.0, 0.0, 1.0, 0.7]]] * n, [[(3.0, 1.0, 0.0, 2.0, 0.3)]] * n, [[]] * n)
    pos = torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    quat = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    clean_cam = DepthCamera(cfg)
    raw = clean_cam.render_raw(scene, pos, quat, clean_cam.nominal(n))
    clean = clean_cam.render(scene, pos, quat, clean_cam.nominal(n))
    assert not torch.isnan(clean).any()
    assert torch.equal(torch.isneginf(clean), raw < 0.5) and torch.isneginf(clean).any()
    assert torch.equal(torch.isposinf(clean), raw > 6.0) and torch.isposinf(clean).any()
    in_range = torch.isfinite(clean)
    assert torch.equal(clean[in_range], raw[in_range])

    noisy_cam = DepthCamera(cfg, CameraRandomizationCfg(depth_noise_rel=0.02, dropout_prob=0.05))
    noisy = noisy_cam.render(scene, pos, quat, noisy_cam.nominal(n), g)
    nan = torch.isnan(noisy)
    assert abs(float(nan.float().mean()) - 0.05) < 0.01
    valid = in_range & ~nan
    rel = (noisy[valid] - raw[valid]) / raw[valid]
    assert abs(float(rel.std()) - 0.02) < 0.002 and abs(float(rel.mean())) < 0.002
    assert torch.equal(torch.isposinf(noisy) | nan, torch.isposinf(clean) | nan)  # noise never changes a class
    assert noisy[valid].min() >= 0.5 and noisy[valid].max() <= 6.0
    finite = for_network(noisy, cfg)
    assert torch.isfinite(finite).all() and finite.max() == 6.0


def test_randomization_changes_what_it_should():
    g = torch.Generator().manual_seed(6)
    n = 4
    cfg = DepthCameraCfg()
    scene = random_scene(n, 4, 6, 6, g)
    pos, quat = field_poses(n, g)
    nominal = DepthCamera(cfg).nominal(n)
    base = DepthCamera(cfg).render(scene, pos, quat, nominal)
    for name, value in (("focal_scale", (0.8, 1.2)), ("principal_shift_px", (-3.0, 3.0)),
                        ("mount_position_m", (-0.1, 0.1)), ("mount_rotation_rad", (-0.2, 0.2))):
        rand = CameraRandomizationCfg(**{name: value})
        cam = DepthCamera(cfg, rand)
        params = cam.sample(n, torch.Generator().manual_seed(7))
        changed = {f.name for f in dataclasses.fields(params)
                   if not torch.allclose(getattr(params, f.name), getattr(nominal, f.name))}
        expect = {"focal_scale": {"fx", "fy"}, "principal_shift_px": {"cx", "cy"},
                  "mount_position_m": {"position_b"}, "mount_rotation_rad": {"rot_bc"}}[name]
        assert changed == expect, f"{name} changed {changed}"
        assert all(len(set(getattr(params, f).reshape(n, -1)[:, 0].tolist())) == n for f in expect)  # per env
        out = cam.render(scene, pos, quat, params)
        assert (out != base).any(dim=(1, 2)).all(), f"{name}: some env's image did not change"
        assert not torch.isnan(out).any()
    # rotation stays a rotation
    rot = params.rot_bc
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(n, 3, 3), atol=1e-5, rtol=0)


def test_intrinsics_from_calibration_and_camera_info(tmp_path):
    """Both file kinds go through calibration/files.py's loader; rescaled with pixel centres kept."""
    K = (400.0, 0.0, 319.5, 0.0, 410.0, 239.5, 0.0, 0.0, 1.0)
    P = (390.0, 0.0, 320.0, 0.0, 0.0, 400.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    section = CameraSection("depth", 640, 480, K, (0.0,) * 5, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), P, rms_px=0.2,
                            intrinsics_sigma_px={"fx": 1.0, "fy": 1.0, "cx": 1.0, "cy": 1.0}, views_used=20,
                            views_rejected=0, coverage=0.9)
    calib = tmp_path / "unit.yaml"
    write_calibration(calib, CalibrationFile("cam-1", "2026-12-01T00:00:00+00:00", "0.1.0", camera=section))
    info = tmp_path / "camera_info.yaml"
    write_yaml(info, camera_info_dict(section))
    for path in (calib, info):
        k = PinholeCfg.from_file(path, W, H)
        assert (k.width, k.height) == (W, H)
        assert k.fx == pytest.approx(390.0 / 10) and k.fy == pytest.approx(400.0 / 10)
        assert k.cx == pytest.approx((320.0 + 0.5) / 10 - 0.5) and k.cy == pytest.approx((240.0 + 0.5) / 10 - 0.5)
    assert PinholeCfg.from_file(info).fx == 390.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: 64\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        PinholeCfg.from_file(bad)


def test_pool_nearest():
    depth = torch.arange(W * H, dtype=torch.float32).reshape(1, H, W) + 1.0
    depth[0, 0, 0] = math.nan
    depth[0, 4:8, 0:4] = math.nan  # a whole block invalid
    pooled = pool_nearest(depth, (12, 16))
    assert pooled.shape == (1, 12, 16)
    assert pooled[0, 0, 0] == depth[0, 0, 1]  # the NaN is ignored
    assert torch.isnan(pooled[0, 1, 0]) and torch.isnan(pooled).sum() == 1
    assert pooled[0, 2, 3] == depth[0, 8, 12]  # the block's nearest is its top-left here


def test_bad_configs():
    with pytest.raises(ValueError, match="tiles"):
        DepthCameraCfg(tile_w=7)
    with pytest.raises(ValueError, match="min_range_m"):
        DepthCameraCfg(min_range_m=5.0, max_range_m=1.0)
    with pytest.raises(ValueError, match="dropout_prob"):
        CameraRandomizationCfg(dropout_prob=1.5)


@pytest.mark.slow
def test_compiled_matches_eager():
    """The compiled fast path (culled) and the compiled unculled path against the eager unculled
    reference: the same depth to float rounding. (Only eager is bit-exact between culling on and off:
    the compiled kernels differ per K specialization in how the C++ compiler contracts FMAs, which moves
    grazing rays by an ulp.) Called again with new poses it compiles nothing new."""
    g = torch.Generator().manual_seed(8)
    n = 16
    cfg = DepthCameraCfg()
    scene = random_scene(n, 4, 8, 8, g, fill=0.8)
    pos, quat = free_poses(scene, g)
    compiled, eager = DepthCamera(cfg, compile=True), DepthCamera(cfg)
    params = eager.nominal(n)
    ref = eager.render(scene, pos, quat, params, cull=False)
    for cull in (True, False):
        out = compiled.render(scene, pos, quat, params, cull=cull)
        assert (torch.isfinite(out) == torch.isfinite(ref)).float().mean() > 0.999
        both = torch.isfinite(out) & torch.isfinite(ref)
        assert both.float().mean() > 0.3
        torch.testing.assert_close(out[both], ref[both], rtol=1e-4, atol=0)
    # later control steps: other poses, other bucket sizes, the same graphs (the first calls may add the
    # graph of a bucket kind not seen yet)
    for _ in range(3):
        compiled.render(scene, *free_poses(scene, g), params)
    pos2, quat2 = free_poses(scene, g)
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = compiled.render(scene, pos2, quat2, params)
    ref = eager.render(scene, pos2, quat2, params, cull=False)
    both = torch.isfinite(out) & torch.isfinite(ref)
    torch.testing.assert_close(out[both], ref[both], rtol=1e-4, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_culling_is_conservative(seed):
    """Every (tile, primitive) pair with a pixel whose ray hits the primitive within range is in the
    visibility mask, primitive by primitive (occlusion cannot hide a wrong cull here), from poses
    anywhere, the camera near or inside obstacles included, with randomized intrinsics and mounts;
    and the mask is not vacuous (most pairs are culled)."""
    g = torch.Generator().manual_seed(20 + seed)
    n = 12
    cfg = DepthCameraCfg(max_range_m=12.0)
    cam = DepthCamera(cfg, CameraRandomizationCfg(focal_scale=(0.7, 1.3), principal_shift_px=(-4.0, 4.0),
                                                  mount_rotation_rad=(-0.4, 0.4)))
    scene = random_scene(n, 6, 10, 10, g, extent_m=4.0, fill=0.9)
    pos, quat = field_poses(n, g, 4.0)
    params = cam.sample(n, g)
    o_w, rot_wc = camera_pose_w(params, pos, quat)
    rot9 = rot_wc.reshape(-1, 9)
    bounds, keep = raycast.screen_bounds(scene, o_w, rot_wc, params.fx, params.fy, params.cx, params.cy,
                                         cfg.max_range_m)
    mask = raycast.tile_visible(bounds, keep, cam._tile_lo_u, cam._tile_lo_v, cfg.tile_w, cfg.tile_h)  # [E, T, M]
    packs = (raycast.pack_spheres(scene.spheres, scene.sphere_valid, o_w),
             raycast.pack_cylinders(scene.cylinders, scene.cylinder_valid, o_w),
             raycast.pack_boxes(scene.boxes, scene.box_valid, o_w))
    t = cam._u.shape[0]
    rows = torch.arange(n * t)
    row_env, row_tile = rows // t, rows % t
    rays = raycast.row_rays(cam._u, cam._v, params.fx, params.fy, params.cx, params.cy, rot9, row_env, row_tile)
    offset, hit_pairs = 0, 0
    for kind, packed in zip(raycast.KERNELS, packs):
        for j in range(packed.shape[1] - 1):
            hit = raycast.rows_depth(kind, *rays, packed, row_env, torch.full((1, n * t), j))  # [E*T, P]
            seen = (hit <= cfg.max_range_m).any(-1).reshape(n, t)
            hit_pairs += int(seen.sum())
            missed = seen & ~mask[..., offset + j]
            assert not missed.any(), f"{kind} {j}: hit but culled in {int(missed.sum())} tiles"
        offset += packed.shape[1] - 1
    assert hit_pairs > 50  # not vacuous
    assert float(mask.float().mean()) < 0.25
