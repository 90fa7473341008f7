"""The navigation evaluation (policies/nav_eval.py) and the rollout video (policies/video.py): the same
fields in both simulators, collisions seen by both, the judgement as NavigateEnv's, the two cameras on the
same field and pose, report.json and the video file. Tiny: a few fields, short flights."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pybullet as pb
import pytest
import torch

from policies import nav_eval
from policies.video import FRAME_SIZE, Rollout, frame_indices, main as video_main, write_video
from tether.contract import load_contract

sys.path.insert(0, str(Path(__file__).parent))
from nav_policy import write_scripted_nav_policy  # noqa: E402


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """The scripted depth policy, on a short navigate task (goals 3-4 m away, 4 s)."""
    return write_scripted_nav_policy(tmp_path_factory.mktemp("nav_policy"), goal_distance_m=(3.0, 4.0),
                                     episode_length_s=4.0)


def _setup(policy_dir: Path, num_fields: int, num_obstacles: int, seed: int = 0):
    from policies.evaluation import task_cfg_from_contract

    contract = load_contract(policy_dir / "policy.json")
    env, field = nav_eval.draw_fields(task_cfg_from_contract(policy_dir), num_fields, num_obstacles, seed)
    return contract, contract.images[0], env, field


def test_fields_identical_in_both_simulators_and_unseen(policy_dir):
    contract, image, env, field = _setup(policy_dir, 2, 8)
    assert env.run.seed == nav_eval.NAV_EVAL_SEED_BASE  # not a training run's seed
    again = nav_eval.draw_fields(env.cfg, 2, 8, 0)[1]
    other = nav_eval.draw_fields(env.cfg, 2, 8, 1)[1]
    assert torch.equal(field.cylinders, again.cylinders) and torch.equal(field.boxes, again.boxes)
    assert not torch.equal(field.cylinders, other.cylinders)
    counts = field.cylinder_valid.sum(1) + field.box_valid.sum(1)
    assert counts.tolist() == [8, 8], "every evaluation field holds exactly the asked obstacle count"
    bullet = nav_eval.PybulletSim(env, field, contract, image)
    try:
        for i in range(2):
            rows = nav_eval.field_rows(field, i)
            c = bullet.clients[i]
            bodies = bullet.bodies[i][1:]  # [0] is the ground
            assert len(bodies) == len(rows["cylinders"]) + len(rows["boxes"]) == 8
            for b, row in zip(bodies, rows["cylinders"] + rows["boxes"]):
                pos, orn = pb.getBasePositionAndOrientation(b, physicsClientId=c)
                shape = pb.getCollisionShapeData(b, -1, physicsClientId=c)[0]
                if len(row) == 5:  # x, y, z0, z1, r: a cylinder of height z1 - z0, radius r
                    assert shape[2] == pb.GEOM_CYLINDER
                    np.testing.assert_allclose(pos, (row[0], row[1], 0.5 * (row[2] + row[3])), atol=1e-6)
                    np.testing.assert_allclose(shape[3][:2], (row[3] - row[2], row[4]), atol=1e-6)
                else:  # x, y, z, hx, hy, hz, yaw
                    assert shape[2] == pb.GEOM_BOX
                    np.testing.assert_allclose(pos, row[:3], atol=1e-6)
                    np.testing.assert_allclose(shape[3], 2 * np.asarray(row[3:6]), atol=1e-6)
                    yaw = pb.getEulerFromQuaternion(orn)[2]
                    assert abs(math.remainder(yaw - row[6], 2 * math.pi)) < 1e-5
            np.testing.assert_allclose(bullet.state()["pos_w"][i], env.state.pos_w[i].double().numpy(), atol=1e-6)
    finally:
        bullet.close()


def test_collisions_seen_in_both_simulators(policy_dir):
    """Beside a column, half a vehicle radius into it, 1.5 radii clear of it, on the ground, at the goal."""
    contract, image, env, field = _setup(policy_dir, 4, 8)
    r = env.cfg.vehicle_radius_m
    probes = None
    for i in range(4):  # a column with nothing else within reach of the probes beside it
        for x, y, _, _, radius in nav_eval.field_rows(field, i)["cylinders"]:
            p = torch.tensor([[x + radius + 1.5 * r, y, 1.5]] * 4, dtype=torch.float32)
            if not bool(nav_eval.collided_analytic(env, field, p)[i]):
                probes = i, {"touching": (x + radius + 0.5 * r, y, 1.5), "clear": tuple(p[0].tolist())}
                break
        if probes is not None:
            break
    assert probes is not None, "no free column in these fields"
    i, at = probes
    goal = env.goal_w[i].double().numpy()  # the goal is kept free of obstacles by keepout_m
    at.update(ground=(goal[0], goal[1], 0.5 * r), free=tuple(goal))
    bullet, tether = nav_eval.PybulletSim(env, field, contract, image), nav_eval.TetherSim(env, field, image)
    try:
        for name, p in at.items():
            pos = env.goal_w.double().numpy().copy()  # every other field at its free goal
            pos[i] = p
            want = np.zeros(4, dtype=bool)
            want[i] = name in ("touching", "ground")
            assert tether.collided(pos).tolist() == want.tolist(), name
            assert bullet.collided(pos).tolist() == want.tolist(), name
    finally:
        bullet.close()


def test_judgement_is_navigate_envs(policy_dir):
    """judge() on the state a step reaches gives the outcome NavigateEnv.step reports for it."""
    _, _, env, field = _setup(policy_dir, 6, 8)
    c, s = env.cfg, env.state
    goal, start = env.goal_w.clone(), env.start_w.clone()
    rows = nav_eval.field_rows(field, 1)
    col = rows["cylinders"][0] if rows["cylinders"] else rows["boxes"][0]
    s.pos_w[0] = goal[0] + torch.tensor([0.2, 0.0, 0.0])  # at the goal: success
    s.pos_w[1] = torch.tensor([col[0], col[1], 1.5])  # inside an obstacle: collision
    s.pos_w[2] = torch.tensor([start[2, 0], start[2, 1], c.ceiling_m + 0.3])  # above the ceiling
    s.pos_w[3] = start[3] - 3.0 * (goal[3] - start[3]) / (goal[3] - start[3]).norm()  # behind the start
    s.pos_w[4] = torch.tensor([start[4, 0], start[4, 1], 0.05])  # on the ground: collision
    # env 5 flies from its start: nothing happens in one step
    saved = (env.state, env.action_queue.clone(), env.prev_actions.clone(), env.pos_err_int_w.clone(),
             env.episode_step.clone())
    actions = env.hover_action.repeat(env.num_envs, 1)
    with torch.no_grad():
        env.advance(actions)
    codes = nav_eval.judge(env, env.state.pos_w, env.state.quat_wxyz,
                           nav_eval.collided_analytic(env, field, env.state.pos_w))
    env.state = type(env.state)(*(t.clone() for t in saved[0]))
    env.action_queue, env.prev_actions, env.pos_err_int_w, env.episode_step = saved[1:]
    _, _, _, _, info = env.step(actions)
    assert codes.tolist() == [1, 2, 3, 3, 2, 0]
    assert info["success"].tolist() == (codes == 1).tolist()
    assert info["collided"].tolist() == (codes == 2).tolist()
    assert info["crashed"].tolist() == ((codes == 2) | (codes == 3)).tolist()


def test_pybullet_depth_matches_tether_depth(policy_dir):
    """The same field and pose through both cameras, at the contract's camera: the pixels both see in
    range agree to 1 % (>= 99 %, issue 11's bar; pybullet's columns are 64-sided prisms since
    TinyRenderer's own GEOM_CYLINDER polygon read 98.4 % here, tests/sim/test_depth_camera.py)."""
    contract, image, env, field = _setup(policy_dir, 3, 16, seed=2)
    g = torch.Generator().manual_seed(0)
    yaw = (torch.rand(3, generator=g) - 0.5) * 2.0  # turned +-1 rad from the start heading
    q = env.state.quat_wxyz
    turn = torch.stack([torch.cos(yaw / 2), torch.zeros(3), torch.zeros(3), torch.sin(yaw / 2)], -1)
    from sim.math import quat_mul

    env.state.quat_wxyz[:] = quat_mul(turn, q)
    bullet, tether = nav_eval.PybulletSim(env, field, contract, image), nav_eval.TetherSim(env, field, image)
    try:
        ids = np.arange(3)
        ours, ref = tether.depth(ids), bullet.depth(ids)
    finally:
        bullet.close()
    assert ours.shape == ref.shape == (3, image.height, image.width)
    both = np.isfinite(ours) & np.isfinite(ref)
    assert both.mean() > 0.3, "too few pixels in range to compare"
    rel = np.abs(ours[both] - ref[both]) / ref[both]
    assert float((rel <= 0.01).mean()) >= 0.99
    assert float((np.isposinf(ours) == np.isposinf(ref)).mean()) >= 0.98


def test_evaluation_report_plot_and_video(policy_dir, tmp_path):
    out = tmp_path / "eval"
    report = nav_eval.evaluate_navigation(policy_dir, num_fields=2, num_obstacles=(4,), sim="both", out=out, videos=1,
                                          progress=False)
    on_disk = json.loads((out / "report.json").read_text())
    limit = load_contract(policy_dir / "policy.json").provenance["task_cfg"]["episode_length_s"]
    assert on_disk["field_generator_seed"] == nav_eval.NAV_EVAL_SEED_BASE
    assert len(on_disk["fields"]["4"]) == 2 and all(len(f["cylinders"]) + len(f["boxes"]) == 4
                                                     for f in on_disk["fields"]["4"])
    for sim in ("tether", "pybullet"):
        r = on_disk["results"][sim]["4"]
        assert r["successes"] + r["collisions"] + r["out_of_bounds"] + r["timeouts"] == 2
        assert r["success_rate"] == pytest.approx(r["successes"] / 2)
        assert r["bar"] is None and r["passed"] is None  # no bar at 4 obstacles
        for f in r["per_field"]:
            assert f["outcome"] in nav_eval.OUTCOMES
            if f["outcome"] == "success":
                assert f["final_dist_m"] < 0.5 and f["time_s"] < limit
            if f["outcome"] == "timeout":
                assert f["time_s"] == pytest.approx(limit) and f["final_dist_m"] >= 0.5
            if f["outcome"] == "collision":
                assert f["min_clearance_m"] < 0.01  # pybullet's geometry and the analytic one agree to ~mm
            else:
                assert f["min_clearance_m"] > -1e-3
    assert 0.0 <= on_disk["agreement"]["4"] <= 1.0
    assert cv2.imread(str(out / "eval_navigate.png")) is not None
    assert len(report["videos"]) == 2
    for v in report["videos"]:
        cap = cv2.VideoCapture(v["path"])
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        ticks = len(Rollout.load(v["rollout"]).t_s)
        assert len(frames) == v["frames"] == len(frame_indices(ticks, 2))
        assert frames[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
        sim = "tether" if "tether" in Path(v["path"]).name else "pybullet"
        rate = load_contract(policy_dir / "policy.json").control_rate_hz
        assert ticks == round(on_disk["results"][sim]["4"]["per_field"][0]["time_s"] * rate) + 1  # with t = 0


def _tiny_rollout(t: int = 25) -> Rollout:
    g = np.random.default_rng(0)
    depth = np.full((t, 48, 64), np.inf, np.float32)
    depth[:, 20:, :] = np.linspace(1.0, 5.0, t)[:, None, None]
    depth[:, 0, 0], depth[:, 0, 1] = np.nan, -np.inf
    pos = np.stack([np.linspace(0, 3, t), 0.1 * g.normal(size=t), np.full(t, 1.5)], -1)
    return Rollout(t_s=np.arange(t) * 0.02, pos_w=pos, quat_wxyz=np.tile([1.0, 0, 0, 0], (t, 1)), depth_m=depth,
                   pooled=np.full((t, 12, 16), 0.5, np.float32), start_w=pos[0], goal_w=np.array([4.0, 0.0, 1.5]),
                   spheres=np.zeros((0, 4)), cylinders=np.array([[2.0, 1.0, 0.0, 4.0, 0.3]]),
                   boxes=np.array([[2.0, -1.0, 2.0, 0.4, 0.2, 2.0, 0.5]]), hfov_rad=math.pi / 2, camera_yaw_b_rad=0.0,
                   min_range_m=0.1, max_range_m=10.0, goal_tol_m=0.5, outcome="timeout", title="test")


def test_video_on_its_own(tmp_path):
    r = _tiny_rollout()
    info = write_video(r, tmp_path / "a.mp4", stride=5)
    cap = cv2.VideoCapture(info["path"])
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape
    assert n == info["frames"] == len(range(0, 25, 5)) + 1  # every fifth tick, and the last (24 is not one)
    assert shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    gif = write_video(r, tmp_path / "a.gif", stride=3)
    from PIL import Image

    with Image.open(gif["path"]) as im:
        assert im.n_frames == gif["frames"] == len(range(0, 25, 3)) and im.size == FRAME_SIZE  # 24 is one
    with pytest.raises(FileExistsError):
        write_video(r, tmp_path / "a.mp4")
    npz = r.save(tmp_path / "r.npz")
    assert video_main([str(npz), "--out", str(tmp_path / "b.mp4")]) == 0
    assert video_main([str(npz), "--out", str(tmp_path / "b.mp4")]) == 2  # refuses to overwrite
    assert Rollout.load(npz).outcome == "timeout"
    # the frame shows what happened: the path's pixels change between the first and the last frame
    from policies.video import render_frame

    assert not np.array_equal(render_frame(r, 0), render_frame(r, 24))


def test_refuses_a_policy_that_is_not_a_depth_navigator(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "ros2"))
    from depth_policy import write_depth_hover_policy

    d = write_depth_hover_policy(tmp_path / "hover_depth")
    with pytest.raises(ValueError, match="navigate"):
        nav_eval.evaluate_navigation(d, num_fields=1, num_obstacles=(4,))
    assert dataclasses.is_dataclass(nav_eval.camera_cfg(load_contract(d / "policy.json").images[0]))


def test_tether_eval_routes_a_navigate_policy(policy_dir, tmp_path, capsys):
    from tether_app.cli import main

    out = tmp_path / "cli"
    assert main(["eval", "--policy", str(policy_dir), "--sweep", "--out", str(out)]) == 2
    assert main(["eval", "--policy", str(policy_dir), "--fields", "2", "--video", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (out / "report.json").exists()
    rc = main(["eval", "--policy", str(policy_dir), "--sim", "tether", "--fields", "1", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert rc == (0 if report["passed"] else 3)
    assert report["sims"] == ["tether"] and report["num_obstacles"] == [16, 32]
    assert main(["eval", "--policy", str(policy_dir), "--sim", "tether", "--fields", "1", "--out", str(out)]) == 2
