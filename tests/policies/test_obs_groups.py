"""Observation groups end to end (issue 11): PPO reads the groups ppo.actor_groups names, its checkpoints
record them and refuse to resume with others, checkpoints written before groups still load; the depth
preprocessing in the graph is the camera's pooling; an image policy exports one named ONNX input per
contract input and runs the same in onnxruntime, NaN and inf pixels included; a teacher reading
privileged inputs is refused at export."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from policies.checkpoint import CheckpointError, checkpoint_groups, load_checkpoint
from policies.export import model_from_checkpoint
from policies.ppo import PPOCfg, train
from sim.tasks import HoverCfg, HoverEnv, run_defaults

SMALL = dict(num_steps=8, num_minibatches=2, update_epochs=2, save_interval=1)
EXTRA_DIM = 3


class ExtraGroupEnv(HoverEnv):
    """hover plus one more vector group, "extra": the world-frame velocity (a stand-in for privileged
    state; noise-free, so a teacher-like input)."""

    extra_dim = EXTRA_DIM

    def observe(self) -> dict[str, torch.Tensor]:
        obs = super().observe()
        obs["extra"] = self.quantities()["lin_vel_w"].clone()
        return obs


def extra_env(num_envs: int = 16, seed: int = 0) -> ExtraGroupEnv:
    return ExtraGroupEnv(HoverCfg(), dataclasses.replace(run_defaults("hover"), num_envs=num_envs, seed=seed,
                                                         physics="eager"))


def test_ppo_reads_the_groups_it_names_and_records_them(tmp_path):
    env = extra_env()
    cfg = PPOCfg(num_iterations=2, actor_groups=("policy", "extra"), **SMALL)
    ckpt = load_checkpoint(train(env, "hover", cfg, tmp_path / "run", progress=False))
    assert list(checkpoint_groups(ckpt).items()) == [("policy", env.obs_dim), ("extra", EXTRA_DIM)]
    assert ckpt["obs_dim"] == env.obs_dim  # the deployable "policy" width, as before groups
    model = model_from_checkpoint(ckpt)
    assert model.groups == ("policy", "extra")
    assert model.actor[0].in_features == env.obs_dim + EXTRA_DIM
    # the one normalizer saw both groups: the extra columns' statistics moved off their initial (0, 1)
    n = model.obs_normalizer
    assert int(n.count) == 2 * cfg.num_steps * env.num_envs
    assert not torch.allclose(n.var[env.obs_dim:], torch.ones(EXTRA_DIM))

    # the model reads the extra group: changing it changes the action; a tensor alone is refused
    obs = env.reset()
    with torch.no_grad():
        a = model.act_mean(obs)
        b = model.act_mean({**obs, "extra": obs["extra"] + 1.0})
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="needs a dict"):
        model.act_mean(obs["policy"])
    # the MLP input is the groups side by side, in the order named
    assert torch.equal(model.flat(obs)[:, env.obs_dim:], obs["extra"])


def test_resume_with_other_groups_is_refused_before_training(tmp_path):
    cfg = PPOCfg(num_iterations=1, actor_groups=("policy", "extra"), **SMALL)
    first = train(extra_env(), "hover", cfg, tmp_path / "run", progress=False)
    for groups in (("policy",), ("extra", "policy")):
        other = dataclasses.replace(cfg, num_iterations=2, actor_groups=groups)
        with pytest.raises(CheckpointError, match="observation groups") as e:
            train(extra_env(), "hover", other, tmp_path / f"bad_{len(groups)}", resume=first, progress=False)
        assert "extra (3)" in str(e.value) and "ppo.actor_groups" in str(e.value)
        assert not list((tmp_path / f"bad_{len(groups)}").glob("model_*.pt"))
    # the same groups resume
    again = train(extra_env(), "hover", dataclasses.replace(cfg, num_iterations=2), tmp_path / "run",
                  resume=first, progress=False)
    assert load_checkpoint(again)["iteration"] == 2


def test_unknown_or_image_group_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"no group\(s\) \['privileged'\]"):
        train(extra_env(), "hover", PPOCfg(num_iterations=1, actor_groups=("policy", "privileged"), **SMALL),
              tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="distinct"):
        PPOCfg(actor_groups=("policy", "policy"))


def test_checkpoint_without_groups_reads_the_policy_group(tmp_path):
    """A checkpoint written before observation groups (the same format, no obs_groups) is a "policy"-only
    model: it loads, rebuilds, and resumes with the default actor_groups."""
    from policies.models import ActorCritic

    cfg = PPOCfg(num_iterations=1, **SMALL)
    env = extra_env()  # its extra group is simply not read
    path = train(env, "hover", cfg, tmp_path / "run", progress=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["obs_groups"] == {"policy": env.obs_dim}
    del ckpt["obs_groups"], ckpt["ppo_cfg"]["actor_groups"]  # what an old checkpoint holds
    old = tmp_path / "old" / "model_00001.pt"
    old.parent.mkdir()
    torch.save(ckpt, old)

    assert checkpoint_groups(load_checkpoint(old)) == {"policy": env.obs_dim}
    model = model_from_checkpoint(load_checkpoint(old))
    assert model.groups == ("policy",)
    obs = env.reset()
    with torch.no_grad():  # a tensor (the "policy" group) and the dict give the same action
        torch.testing.assert_close(model.act_mean(obs["policy"]), model.act_mean(obs))
    assert set(model.state_dict()) == set(ActorCritic(env.obs_dim, env.cfg.action_dim).state_dict())
    again = train(extra_env(), "hover", dataclasses.replace(cfg, num_iterations=2), tmp_path / "old",
                  resume=old, progress=False)
    assert load_checkpoint(again)["iteration"] == 2
    with pytest.raises(CheckpointError, match="observation groups"):
        train(extra_env(), "hover", dataclasses.replace(cfg, num_iterations=2, actor_groups=("policy", "extra")),
              tmp_path / "old2", resume=old, progress=False)


# ------------------------------------------------------------------------------------ depth images

DEPTH = dict(name="depth", quantity="depth_c", width=64, height=48, encoding="32FC1",
             topic="camera/depth/image_rect_raw", camera_info_topic="camera/depth/camera_info",
             fx_fy_cx_cy_px=(32.0, 32.0, 31.5, 23.5), intrinsics_tolerance_rel=0.05,
             mount_position_b_m=(0.03, 0.0, 0.01), mount_rpy_rad=(0.0, 0.1, 0.0), min_range_m=0.1,
             max_range_m=10.0, pooling="nearest", pooled_width=16, pooled_height=12, invalid_m=0.0, max_age_s=0.1)


def depth_image(image, batch: int, seed: int = 0) -> torch.Tensor:
    """Random raw depth [B, 1, H, W] in range, with REP 117 specials (+inf, -inf, NaN) scattered and one
    block wholly NaN, one wholly +inf, one wholly -inf, one mixed NaN / +inf (each block 4x4 here)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = image.min_range_m, image.max_range_m
    x = lo + (hi - lo) * torch.rand(batch, 1, image.height, image.width, generator=g)
    u = torch.rand(x.shape, generator=g)
    x[u < 0.1] = math.inf
    x[(u >= 0.1) & (u < 0.15)] = -math.inf
    x[u > 0.8] = math.nan
    kh, kw = image.height // image.pooled_height, image.width // image.pooled_width
    x[..., :kh, :kw] = math.nan
    x[..., kh:2 * kh, :kw] = math.inf
    x[..., 2 * kh:3 * kh, :kw] = -math.inf
    x[..., 3 * kh:4 * kh, :kw] = math.nan
    x[..., 3 * kh, 0] = math.inf
    return x


def camera_reference(image, x: torch.Tensor) -> torch.Tensor:
    """The same steps from sim.camera's functions: specials to range, pool_nearest, NaN -> invalid, / max."""
    from sim.camera.config import DepthCameraCfg
    from sim.camera.depth import for_network, pool_nearest

    cam = DepthCameraCfg(min_range_m=image.min_range_m, max_range_m=image.max_range_m)
    ranged = for_network(x[:, 0], cam, invalid_m=math.nan)  # +-inf to the range limits, NaN kept
    pooled = pool_nearest(ranged, (image.pooled_height, image.pooled_width))
    return (for_network(pooled, cam, invalid_m=image.invalid_m) / image.max_range_m)[:, None]


@pytest.mark.parametrize("invalid_m", [0.0, 10.0])
def test_depth_preprocess_is_the_camera_pooling(invalid_m):
    from policies.models import DepthPreprocess
    from tether.contract import ImageInput

    image = ImageInput(**{**DEPTH, "invalid_m": invalid_m})
    x = depth_image(image, 32)
    got = DepthPreprocess(image)(x)
    assert got.shape == (32, 1, image.pooled_height, image.pooled_width)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, camera_reference(image, x), rtol=0, atol=0)
    # the special blocks read what ImageInput states
    assert torch.all(got[:, 0, 0, 0] == invalid_m / image.max_range_m)
    assert torch.all(got[:, 0, 1, 0] == 1.0)
    assert torch.all(got[:, 0, 2, 0] == image.min_range_m / image.max_range_m)
    assert torch.all(got[:, 0, 3, 0] == 1.0)  # NaN ignored: the one +inf pixel is the block's depth
    with pytest.raises(ValueError, match=r"expected \[B, 1, 48, 64\]"):
        DepthPreprocess(image)(x[..., :32])


# ------------------------------------------------------------------------------------ multi-input export


class CameraHoverEnv(HoverEnv):
    """hover whose contract also declares a depth image input (the export reads env.image_inputs())."""

    def image_inputs(self):
        from tether.contract import ImageInput

        return (ImageInput(**DEPTH),)


class ImagePolicy(torch.nn.Module):
    """A stand-in depth student: normalized state + DepthEncoder latent -> MLP, clipped."""

    def __init__(self, obs_dim: int, action_dim: int, image):
        super().__init__()
        from policies.models import DepthEncoder, EmpiricalNormalization, mlp

        self.obs_normalizer = EmpiricalNormalization(obs_dim)
        with torch.no_grad():  # statistics other than (0, 1): the normalization must be in the graph
            self.obs_normalizer.mean.uniform_(-1.0, 1.0)
            self.obs_normalizer.var.uniform_(0.5, 4.0)
        self.encoder = DepthEncoder(image, latent_dim=16)
        self.actor = mlp(obs_dim + 16, (32,), action_dim)

    def forward(self, obs: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        z = self.encoder(depth)
        return torch.clamp(self.actor(torch.cat([self.obs_normalizer(obs), z], -1)), -1.0, 1.0)


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    from policies.export import export_module, normalization_section

    torch.manual_seed(0)
    env = CameraHoverEnv(HoverCfg(), dataclasses.replace(run_defaults("hover"), num_envs=2, physics="eager"))
    image = env.image_inputs()[0]
    actor = ImagePolicy(env.obs_dim, env.cfg.action_dim, image).eval()
    out, contract, err = export_module(actor, tmp_path_factory.mktemp("img") / "policy", task="hover", env=env,
                                       normalization=normalization_section(actor.obs_normalizer),
                                       provenance={"note": "test"})
    return env, actor, out, contract, err


def test_image_policy_exports_one_named_input_per_contract_input(image_export):
    import numpy as np
    import onnx

    from tether.contract import IMAGES_CONTRACT_VERSION, load_contract
    from tether.runtime import OnnxPolicy

    env, actor, out, contract, err = image_export
    assert 0.0 <= err <= 1e-5
    on_disk = load_contract(out / "policy.json")
    assert on_disk.version == IMAGES_CONTRACT_VERSION and on_disk.input_names == ("obs", "depth")
    assert on_disk.images == env.image_inputs() and on_disk.obs_dim == env.obs_dim
    graph = onnx.load(str(out / "policy.onnx")).graph
    assert [i.name for i in graph.input] == ["obs", "depth"]
    assert {"IsNaN", "IsInf", "Where", "MaxPool", "Sub", "Div"} <= {n.op_type for n in graph.node}
    assert graph.input[1].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch axis

    # independent parity on fresh inputs, NaN / +-inf pixels and whole special blocks included
    policy = OnnxPolicy(out)
    depth = depth_image(on_disk.images[0], 200, seed=5).numpy()
    obs = (np.random.default_rng(5).normal(size=(200, env.obs_dim)) * 2.0).astype(np.float32)
    with torch.no_grad():
        expected = actor(torch.from_numpy(obs), torch.from_numpy(depth)).numpy()
    got = policy(obs, images={"depth": depth})
    assert np.isfinite(got).all()
    assert float(np.abs(got - expected).max()) <= 1e-5
    assert (np.abs(expected) < 0.999).mean() > 0.5, "parity must be tested where outputs are not all clipped"
    np.testing.assert_allclose(policy(obs[0], images={"depth": depth[0]}), got[0], atol=1e-6)
    # the image matters: another image, another action
    assert np.abs(policy(obs, images={"depth": depth[::-1].copy()}) - got).max() > 1e-4


def test_privileged_teacher_is_refused_at_export(tmp_path):
    from policies.export import PRIVILEGED_REFUSAL, export_module, export_policy
    from policies.models import ActorCritic, DeployedActor
    from tether.errors import UserError

    env = extra_env(num_envs=2)
    teacher = ActorCritic(env.obs_dim + EXTRA_DIM, env.cfg.action_dim, groups=("policy", "privileged"))
    with pytest.raises(UserError) as e:
        export_module(DeployedActor(teacher), tmp_path / "t", task="hover", env=env, normalization={},
                      provenance={})
    assert str(e.value) == PRIVILEGED_REFUSAL and "\n" not in str(e.value)
    assert not (tmp_path / "t").exists(), "a refused export writes nothing"

    # a checkpoint of a model reading other groups than the state is refused by name as well
    ckpt = train(extra_env(), "hover", PPOCfg(num_iterations=1, actor_groups=("policy", "extra"), **SMALL),
                 tmp_path / "run", progress=False)
    with pytest.raises(UserError, match=r"\['policy', 'extra'\]"):
        export_policy(ckpt, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_onboard_c_export_refuses_an_image_policy(image_export, tmp_path):
    from policies.export_c import export_c
    from tether.errors import UserError

    _env, _actor, out, _contract, _err = image_export
    with pytest.raises(UserError, match=r"image input\(s\) \['depth'\]") as e:
        export_c(out, tmp_path / "onboard")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "onboard").exists()


def test_export_names_an_actor_that_does_not_take_the_contract_inputs(tmp_path):
    from policies.export import export_module
    from policies.models import ActorCritic, DeployedActor

    env = CameraHoverEnv(HoverCfg(), dataclasses.replace(run_defaults("hover"), num_envs=2, physics="eager"))
    state_only = DeployedActor(ActorCritic(env.obs_dim, env.cfg.action_dim))
    with pytest.raises(ValueError, match=r"must take \(obs \[B, \d+\], depth \[B, 1, 48, 64\]\)"):
        export_module(state_only, tmp_path / "a", task="hover", env=env, normalization={}, provenance={})
    assert not any((tmp_path / "a").glob("policy.*"))
    # a state-only actor on an env with a camera exports without image inputs when told so
    _, contract, err = export_module(state_only, tmp_path / "b", task="hover", env=env, normalization={},
                                     provenance={}, images=())
    assert contract.input_names == ("obs",) and err <= 1e-5


def test_asymmetric_critic_reads_its_groups_and_exports_the_actor_alone(tmp_path):
    """ppo.critic_groups: the critic reads ("policy", "extra") through its own normalizer; the actor, the
    checkpoint's obs_groups and the export read "policy" alone."""
    from policies.export import export_policy
    from tether.runtime import OnnxPolicy

    env = extra_env()
    cfg = PPOCfg(num_iterations=2, critic_groups=("policy", "extra"), **SMALL)
    path = train(env, "hover", cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(path)
    assert checkpoint_groups(ckpt) == {"policy": env.obs_dim}
    assert ckpt["critic_groups"] == {"policy": env.obs_dim, "extra": EXTRA_DIM}
    model = model_from_checkpoint(ckpt)
    assert model.asymmetric and model.actor[0].in_features == env.obs_dim
    assert model.critic[0].in_features == env.obs_dim + EXTRA_DIM
    assert int(model.critic_normalizer.count) == int(model.obs_normalizer.count) == 2 * cfg.num_steps * env.num_envs
    obs = env.reset()
    with torch.no_grad():
        moved = {**obs, "extra": obs["extra"] + 1.0}
        assert torch.equal(model.act_mean(obs), model.act_mean(moved))  # the actor never sees it
        assert not torch.allclose(model.value(obs), model.value(moved))  # the critic does
    out, contract, err = export_policy(path, tmp_path / "export")
    assert contract.obs_dim == env.obs_dim and err < 1e-5
    actions = OnnxPolicy(out)(obs["policy"][:4].numpy())
    assert actions.shape == (4, env.cfg.action_dim)
    # a symmetric model keeps the state dict of every model before critic groups
    assert "critic_normalizer.mean" in model.state_dict()
    assert not any(k.startswith("critic_normalizer") for k in model_from_checkpoint(
        load_checkpoint(train(env, "hover", PPOCfg(num_iterations=1, **SMALL), tmp_path / "sym",
                              progress=False))).state_dict())
    with pytest.raises(ValueError, match="critic_groups"):
        PPOCfg(critic_groups=("policy", "policy"))
