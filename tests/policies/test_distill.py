"""DAgger distillation: the student learns a known teacher that needs the image, the dataset stays
bounded, checkpoints are never overwritten without force, and the exported student runs in onnxruntime
with its image input and matches torch.

The stand-in (test-only): the waypoint task with one wall per env ahead of the start at a random
distance, a "depth" group rendered by sim.camera's DepthCamera, and a "privileged" group holding the
distance to the wall. The scripted teacher's action depends on that distance (and on the state), so a
student without a working image path cannot imitate it: the wall's distance is in no state slice.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from policies.distill import (Dataset, DeployedStudent, DepthStudent, DistillCfg, STUDENT_KIND, distill, evaluate,
                              export_student, save_student, student_from_checkpoint)
from sim.camera.config import DepthCameraCfg, PinholeCfg
from sim.camera.depth import DepthCamera
from sim.camera.scene import Scene
from sim.tasks.run_cfg import RunCfg
from sim.tasks.waypoint import WaypointCfg, WaypointEnv
from tether.contract import ImageInput
from tether.runtime import OnnxPolicy

WALL_RANGE_M = (1.5, 6.0)
CAMERA = DepthCameraCfg(intrinsics=PinholeCfg.from_hfov(32, 24, math.radians(90.0)), max_range_m=10.0)


def image_input(cam: DepthCameraCfg = CAMERA) -> ImageInput:
    k = cam.intrinsics
    return ImageInput(name="depth", quantity="depth_c", width=k.width, height=k.height, encoding="32FC1",
                      topic="camera/depth/image_rect_raw", camera_info_topic="camera/depth/camera_info",
                      fx_fy_cx_cy_px=(k.fx, k.fy, k.cx, k.cy), intrinsics_tolerance_rel=0.05,
                      mount_position_b_m=cam.mount.position_b_m, mount_rpy_rad=cam.mount.rpy_rad,
                      min_range_m=cam.min_range_m, max_range_m=cam.max_range_m, pooling="nearest",
                      pooled_width=k.width // 4, pooled_height=k.height // 4, invalid_m=cam.max_range_m,
                      max_age_s=0.1)


class WallEnv(WaypointEnv):
    """Test stand-in: waypoint + a wall across +x at a per-episode distance, seen by a forward camera."""

    def __init__(self, cfg: WaypointCfg, run: RunCfg):
        super().__init__(cfg, run)
        self.camera = DepthCamera(CAMERA, device=self.device)
        self.cam_params = self.camera.nominal(self.num_envs)
        self.wall_x_w = torch.zeros(self.num_envs, device=self.device)

    def _reset_envs(self, env_ids):
        super()._reset_envs(env_ids)
        lo, hi = WALL_RANGE_M
        u = torch.rand(len(env_ids), generator=self.gen, device=self.device)
        self.wall_x_w[env_ids] = self.state.pos_w[env_ids, 0] + lo + (hi - lo) * u

    def scene(self) -> Scene:
        n, dev = self.num_envs, self.device
        half = torch.tensor([0.05, 20.0, 10.0], device=dev).repeat(n, 1)
        boxes = torch.cat([self.wall_x_w[:, None], torch.zeros(n, 1, device=dev), torch.full((n, 1), 5.0, device=dev),
                           half, torch.zeros(n, 1, device=dev)], -1)[:, None]  # [N, 1, 7]
        empty = torch.zeros(n, 0, 4, device=dev), torch.zeros(n, 0, dtype=torch.bool, device=dev)
        no_cyl = torch.zeros(n, 0, 5, device=dev), torch.zeros(n, 0, dtype=torch.bool, device=dev)
        return Scene(torch.full((n,), -100.0, device=dev), *empty, *no_cyl, boxes,
                     torch.ones(n, 1, dtype=torch.bool, device=dev))

    def observe(self):
        groups = super().observe()
        groups["privileged"] = (self.wall_x_w - self.state.pos_w[:, 0])[:, None]
        groups["depth"] = self.camera.render(self.scene(), self.state.pos_w, self.state.quat_wxyz,
                                             self.cam_params, self.gen)[:, None]
        return groups

    def image_inputs(self):
        return (image_input(),)


def make_wall_env(num_envs: int, seed: int) -> WallEnv:
    cfg = WaypointCfg(init_yaw_rad=0.0, init_tilt_rad=math.radians(5.0), init_lin_vel_m_s=0.1,
                      init_ang_vel_rad_s=0.1, episode_length_s=1.0)
    return WallEnv(cfg, RunCfg(num_envs=num_envs, seed=seed))


class WallTeacher:
    """Scripted teacher: thrust falls with the wall's distance (a privileged input), yaw rate with the
    body-frame velocity (a state slice): a known function of both groups."""

    def __init__(self, env: WallEnv):
        self.hover = env.hover_action
        self.vel = next(s for s in env.slices if s.name == "lin_vel_b")

    def __call__(self, groups):
        dist = groups["privileged"][:, 0]
        vel = groups["policy"][:, self.vel.offset:self.vel.offset + self.vel.length]
        a = self.hover.repeat(dist.shape[0], 1)
        a[:, 0] += 0.3 * torch.tanh(dist - 3.5)
        a[:, 3] += 0.3 * torch.tanh(vel[:, 0] / self.vel.scale)
        return a.clamp(-1.0, 1.0)


def test_student_imitates_teacher_that_needs_the_image(tmp_path):
    """On fresh fields (another seed) the student's action error falls far below the teacher's own
    spread over states, which a student blind to the wall could not reach: about 60 % of that spread
    is the wall term. Calibrated: spread ~0.03, student MSE ~1e-3 after 40 iterations; the bar is 20 %."""
    torch.manual_seed(0)
    env = make_wall_env(16, seed=0)
    teacher = WallTeacher(env)
    cfg = DistillCfg(num_iterations=40, num_steps=8, batch_size=256, updates_per_iteration=16, eval_interval=0,
                     save_interval=20, buffer_size=4096, learning_rate=2e-3, hidden=(64, 64), latent_dim=16)
    curve = []
    last = distill(env, teacher, "wall", cfg, tmp_path / "run", progress=False,
                   on_iteration=lambda i, logs: curve.append(logs["losses/imitation"]))
    early, late = np.mean(curve[:5]), np.mean(curve[-5:])
    assert late < early / 3, f"imitation loss {early:.4g} -> {late:.4g}"

    ckpt = torch.load(last, weights_only=True)
    assert ckpt["kind"] == STUDENT_KIND and ckpt["iteration"] == 40
    student = student_from_checkpoint(ckpt)
    fresh = make_wall_env(64, seed=99)
    obs, labels, preds = fresh.reset(), [], []
    with torch.no_grad():
        for _ in range(10):
            target = teacher(obs)
            labels.append(target)
            preds.append(student.act_mean(obs["policy"], obs["depth"]).clamp(-1, 1))
            obs = fresh.step(target)[0]
    labels, preds = torch.cat(labels), torch.cat(preds)
    spread = (labels - labels.mean(0)).square().mean()
    mse = (preds - labels).square().mean()
    wall_only = labels[:, 0].var() / 4  # the thrust column's share of the per-element spread
    assert wall_only > 0.3 * spread, "the wall term must dominate the teacher's spread, else the test proves little"
    assert mse < 0.2 * spread, f"student MSE {mse:.3g} vs teacher spread {spread:.3g}"


def test_dataset_is_bounded_ring():
    data = Dataset(10, obs_dim=2, image_shape=(1, 2, 2), action_dim=1, device=torch.device("cpu"))
    for i in range(4):
        x = torch.full((4, 2), float(i))
        data.add(x, torch.full((4, 1, 2, 2), float(i)), torch.full((4, 1), float(i)))
    assert data.size == 10 and data.added == 16 and data.obs.shape[0] == 10
    # the oldest six (batches 0 and half of 1) were replaced: batches 1 (two left), 2, 3 remain
    assert sorted(data.obs[:, 0].tolist()) == [1.0] * 2 + [2.0] * 4 + [3.0] * 4
    big = torch.arange(25.0)[:, None].repeat(1, 2)
    data.add(big, torch.zeros(25, 1, 2, 2), torch.zeros(25, 1))
    assert data.size == 10 and sorted(data.obs[:, 0].tolist()) == list(range(15, 25))
    o, im, a = data.sample(7)
    assert o.shape == (7, 2) and im.shape == (7, 1, 2, 2) and a.shape == (7, 1)


def test_checkpoints_never_overwritten_without_force(tmp_path):
    env = make_wall_env(4, seed=0)
    cfg = DistillCfg(num_iterations=2, num_steps=2, batch_size=8, updates_per_iteration=1, save_interval=1,
                     eval_interval=1, hidden=(8,), latent_dim=4)
    out = tmp_path / "run"
    first = distill(env, WallTeacher(env), "wall", cfg, out, progress=False, eval_env=make_wall_env(4, seed=5))
    ckpt = torch.load(first, weights_only=True)
    assert first.name == "model_00002.pt" and (out / "model_00001.pt").is_file()
    assert 0.0 <= ckpt["logs"]["eval/success_rate"] <= 1.0
    before = (out / "model_00001.pt").read_bytes()
    with pytest.raises(FileExistsError, match="model_00001.pt"):
        distill(env, WallTeacher(env), "wall", cfg, out, progress=False)
    assert (out / "model_00001.pt").read_bytes() == before, "a refused run must not touch the checkpoints"
    with pytest.raises(FileExistsError):
        save_student(first, student=student_from_checkpoint(ckpt), optimizer=torch.optim.Adam([torch.zeros(1)]),
                     task="wall", env=env, image=image_input(), cfg=cfg, teacher_info={}, iteration=2,
                     env_steps=0, train_time_s=0.0, logs={}, run_id="x")
    again = distill(env, WallTeacher(env), "wall", cfg, out, progress=False, force=True)
    assert torch.load(again, weights_only=True)["run_id"] != ckpt["run_id"]
    assert not list(out.glob("*.tmp")), "atomic writes leave no temporary file behind"


def test_evaluate_counts_first_episode_outcomes():
    """A student that dives (zero thrust) crashes in every env: evaluate says crash 1.0, success 0.0."""
    env = make_wall_env(8, seed=3)
    student = DepthStudent(env.obs_dim, 4, image_input(), latent_dim=4, hidden=(8,),
                           action_bias=torch.tensor([-1.0, 0.0, 0.0, 0.0]))
    res = evaluate(student, env)
    assert res["crash_rate"] == 1.0 and res["success_rate"] == 0.0
    assert res["episode_length_s"] < env.cfg.episode_length_s


def test_cfg_refuses_bad_values():
    for bad in (dict(beta0=1.5), dict(num_iterations=0), dict(buffer_size=0), dict(learning_rate=float("nan")),
                dict(hidden=())):
        with pytest.raises(ValueError):
            DistillCfg(**bad)
    cfg = DistillCfg(beta0=1.0, beta_decay=0.5, beta_min=0.1)
    assert cfg.beta(0) == 1.0 and cfg.beta(1) == 0.5 and cfg.beta(10) == 0.1


def test_exported_student_runs_in_onnxruntime_with_images(tmp_path):
    """policy.onnx takes "obs" and "depth" (raw metres, REP 117 specials included) and matches torch."""
    env = make_wall_env(4, seed=0)
    cfg = DistillCfg(num_iterations=3, num_steps=4, batch_size=32, updates_per_iteration=4, save_interval=3,
                     eval_interval=0, hidden=(16,), latent_dim=8)
    ckpt_path = distill(env, WallTeacher(env), "wall", cfg, tmp_path / "run", progress=False)
    out, contract, err = export_student(ckpt_path, tmp_path / "policy", env=make_wall_env(8, seed=7))
    assert err <= 1e-5
    assert contract.input_names == ("obs", "depth") and contract.image("depth") == image_input()
    assert contract.provenance["method"] == "dagger"
    policy = OnnxPolicy(out)
    fresh = make_wall_env(16, seed=11)
    obs = fresh.reset()
    depth = obs["depth"].clone()
    depth[:4, :, :6, :6] = float("nan")  # dropouts and specials as a real camera publishes them
    depth[4:8, :, -3:] = float("inf")
    depth[8, 0, 0, 0] = -float("inf")
    student = DeployedStudent(student_from_checkpoint(torch.load(ckpt_path, weights_only=True))).eval()
    with torch.no_grad():
        expected = student(obs["policy"], depth).numpy()
    got = policy(obs["policy"].numpy(), images={"depth": depth.numpy()})
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(expected - expected[0]).max() > 1e-4, "different images must give different actions"
    with pytest.raises(FileExistsError):
        export_student(ckpt_path, out, env=make_wall_env(8, seed=7))


# ------------------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def nav_teacher(tmp_path_factory):
    """A (barely trained) privileged navigate teacher: the CLI's mechanics, not its skill."""
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    run = tmp_path_factory.mktemp("nav_teacher")
    env = make_env("navigate", num_envs=8, seed=0)
    cfg = PPOCfg(actor_groups=("policy", "privileged"), num_iterations=1, num_steps=4, num_minibatches=2,
                 update_epochs=1, save_interval=1, actor_hidden=(16,), critic_hidden=(16,))
    train(env, "navigate", cfg, run, progress=False)
    return run


def tether(*argv: str) -> int:
    from tether.command_line import run
    from tether_app.cli import build_parser

    return run(build_parser(), list(argv))


def test_cli_distills_navigate_teacher_and_exports_student(nav_teacher, tmp_path, capsys):
    out = tmp_path / "student"
    rc = tether("distill", "--teacher", str(nav_teacher), "--out", str(out), "--iterations", "2",
                "--num-envs", "4", "--eval-envs", "2", "--eval-interval", "2")
    assert rc == 0, capsys.readouterr().err
    assert "exported ->" in capsys.readouterr().out
    for name in ("model_00002.pt", "run.json", "distill.json", "distill.png", "policy/policy.onnx", "policy/policy.json"):
        assert (out / name).is_file(), name
    policy = OnnxPolicy(out / "policy")
    assert policy.contract.task == "navigate" and policy.contract.input_names == ("obs", "depth")
    im = policy.contract.image("depth")
    obs = np.zeros((3, policy.contract.obs_dim), np.float32)
    depth = np.full((3, *im.shape), np.inf, np.float32)  # open space: no return anywhere
    assert np.isfinite(policy(obs, images={"depth": depth})).all()
    # the same --out again: refused with one line, nothing touched; --force replaces it
    before = (out / "model_00002.pt").stat().st_mtime_ns
    rc = tether("distill", "--teacher", str(nav_teacher), "--out", str(out), "--iterations", "1", "--num-envs", "2",
                "--eval-interval", "0")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--force" in err and "Traceback" not in err
    assert (out / "model_00002.pt").stat().st_mtime_ns == before
    rc = tether("distill", "--teacher", str(nav_teacher), "--out", str(out), "--iterations", "1", "--num-envs", "2",
                "--eval-interval", "0", "--no-export", "--force")
    assert rc == 0, capsys.readouterr().err
    assert (out / "model_00001.pt").is_file() and not (out / "model_00002.pt").exists()
    assert not (out / "policy").exists(), "--force removes what the previous distillation wrote"


def test_cli_refuses_bad_teachers(nav_teacher, tmp_path, capsys):
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    hover = tmp_path / "hover"
    train(make_env("hover", num_envs=4), "hover", PPOCfg(num_iterations=1, num_steps=2, num_minibatches=1,
                                                         update_epochs=1, save_interval=1), hover, progress=False)
    cases = {"does not exist": str(tmp_path / "missing"), "no depth camera": str(hover)}
    for needle, teacher in cases.items():
        rc = tether("distill", "--teacher", teacher, "--out", str(tmp_path / "o"))
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and err.count("\n") == 1, err
    student = tmp_path / "s"
    assert tether("distill", "--teacher", str(nav_teacher), "--out", str(student), "--iterations", "1",
                  "--num-envs", "2", "--eval-interval", "0", "--no-export") == 0
    capsys.readouterr()
    rc = tether("distill", "--teacher", str(student), "--out", str(tmp_path / "o2"))
    err = capsys.readouterr().err
    assert rc == 2 and "is a distilled student" in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists(), "a refused command writes nothing"
