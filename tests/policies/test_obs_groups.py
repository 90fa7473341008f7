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
