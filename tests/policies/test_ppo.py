"""PPO actually learns the hover task, resumes where it stopped, is deterministic, and its checkpoints
refuse to load where they do not belong."""

from __future__ import annotations

import shutil

import pytest
import torch

from policies.checkpoint import CheckpointError, load_checkpoint
from policies.export import env_from_checkpoint, model_from_checkpoint
from policies.models import ActorCritic, DeployedActor
from policies.ppo import PPOCfg, train
from sim.tasks import make_env

SMALL = dict(num_steps=8, num_minibatches=2, update_epochs=2)  # tiny PPO runs for the mechanics tests


def closed_loop(actor, ckpt, steps: int = 150, num_envs: int = 128) -> tuple[float, float]:
    """(crash fraction, mean position error [m] of the survivors) of the deterministic ``actor`` over
    ``steps`` control steps from the training start distribution, on a fixed env seed."""
    env = env_from_checkpoint(ckpt, num_envs=num_envs, seed=1234)
    obs = env.reset()["policy"]
    crashed = torch.zeros(num_envs, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(steps):
            obs, _, _, _, info = env.step(actor(obs))
            obs = obs["policy"]
            crashed |= info["crashed"]
    alive = ~crashed
    return float(crashed.float().mean()), float(info["pos_err_m"][alive].mean()) if alive.any() else float("inf")


def test_ppo_learns_to_hover(trained_hover):
    """Calibrated on seed 0 (deterministic on CPU with one thread): the logged rollout error falls
    1.03 m -> 0.42 m from the first checkpoint (iteration 10) to the last (30), the crash rate of
    finished episodes 1.0 -> 0.0; in a separate deterministic 3 s flight the untrained policy crashes in
    56 % of starts, the trained one in none, with 7x smaller position error. Seeds 1-3 give at least
    1.8x, 1.0 -> 0.0, 55 % -> 0 % and 2.8x, so the thresholds hold with margin."""
    first, last = (load_checkpoint(p, task="hover") for p in (trained_hover.checkpoints[0], trained_hover.checkpoints[-1]))
    assert first["iteration"] == trained_hover.ppo_cfg.save_interval
    assert last["iteration"] == trained_hover.ppo_cfg.num_iterations

    err0, err1 = first["logs"]["rollout/pos_err_m"], last["logs"]["rollout/pos_err_m"]
    assert err1 < err0 / 1.6, f"rollout position error {err0:.3f} m -> {err1:.3f} m"
    # No episode can time out before iteration ~16 (250-step episodes, 16 steps per iteration), so
    # every finished episode at iteration 10 is a crash; by the end none is.
    crash0, crash1 = first["logs"]["episode/crash_rate"], last["logs"]["episode/crash_rate"]
    assert crash0 >= 0.5 and crash1 <= 0.1, f"crash rate {crash0:.2f} -> {crash1:.2f}"
    assert last["logs"]["episode/length_s"] > 0.9 * trained_hover.env_cfg.episode_length_s

    # independently of the training logs: fly the deterministic actor, untrained vs trained
    trained = DeployedActor(model_from_checkpoint(last)).eval()
    untrained = DeployedActor(ActorCritic(last["obs_dim"], last["action_dim"],
                                          action_bias=last["model"]["action_bias"])).eval()
    crash_u, err_u = closed_loop(untrained, last)
    crash_t, err_t = closed_loop(trained, last)
    assert crash_u > 0.3, f"the untrained policy should crash often (got {crash_u:.2f}); the test is too easy"
    assert crash_t <= 0.02, f"trained policy crashed in {crash_t:.0%} of flights"
    assert err_t < 0.5 * err_u, f"position error untrained {err_u:.3f} m, trained {err_t:.3f} m"


def test_same_seed_same_first_iteration(tmp_path):
    def first_iteration(seed: int, name: str):
        env = make_env("hover", num_envs=64, seed=seed)
        ckpt = train(env, "hover", PPOCfg(num_iterations=1, seed=seed, **SMALL), tmp_path / name, progress=False)
        return load_checkpoint(ckpt)

    a, b, c = first_iteration(0, "a"), first_iteration(0, "b"), first_iteration(1, "c")
    loss_keys = [k for k in a["logs"] if k.startswith("losses/")]
    assert {"losses/policy", "losses/value"} <= set(loss_keys)
    for k in loss_keys + ["rollout/pos_err_m"]:
        assert a["logs"][k] == b["logs"][k], f"{k}: {a['logs'][k]} != {b['logs'][k]} with the same seed"
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"weights {name} differ with the same seed"
    assert any(a["logs"][k] != c["logs"][k] for k in loss_keys), "another seed gave identical losses"


def test_resume_continues_iterations_and_optimizer(tmp_path):
    cfg = PPOCfg(num_iterations=2, save_interval=1, seed=0, **SMALL)
    env = make_env("hover", num_envs=32, seed=0)
    ckpt2 = train(env, "hover", cfg, tmp_path / "run", progress=False)
    assert ckpt2.name == "model_00002.pt"
    c2 = load_checkpoint(ckpt2)

    env = make_env("hover", num_envs=32, seed=0)
    cfg4 = PPOCfg(num_iterations=4, save_interval=1, seed=0, **SMALL)
    ckpt4 = train(env, "hover", cfg4, tmp_path / "run", resume=ckpt2, progress=False)
    c3, c4 = load_checkpoint(tmp_path / "run" / "model_00003.pt"), load_checkpoint(ckpt4)
    assert (c3["iteration"], c4["iteration"]) == (3, 4)
    batch = cfg.num_steps * 32
    assert (c2["global_step"], c3["global_step"], c4["global_step"]) == (2 * batch, 3 * batch, 4 * batch)
    assert c2["train_time_s"] < c3["train_time_s"] < c4["train_time_s"]
    cpu = [c["logs"]["charts/train_cpu_s"] for c in (c2, c3, c4)]  # this process's CPU time, carried on
    assert 0 < cpu[0] < cpu[1] < cpu[2]
    # the optimizer state came along: Adam's step count continues from the checkpoint's
    updates_per_iteration = cfg.update_epochs * cfg.num_minibatches
    steps = [next(iter(c["optimizer"]["state"].values()))["step"] for c in (c2, c4)]
    assert [int(s) for s in steps] == [2 * updates_per_iteration, 4 * updates_per_iteration]
    # and so did the observation normalizer (its sample count keeps growing)
    assert int(c4["model"]["obs_normalizer.count"]) == 4 * batch
    assert not torch.equal(c2["model"]["actor.0.weight"], c4["model"]["actor.0.weight"])


def test_resume_of_a_finished_run_returns_its_checkpoint(tmp_path):
    """train() documents that it returns the path of the last checkpoint; resuming a run that already
    reached num_iterations must return that checkpoint (or fail clearly), never None."""
    cfg = PPOCfg(num_iterations=1, save_interval=1, seed=0, **SMALL)
    ckpt = train(make_env("hover", num_envs=16, seed=0), "hover", cfg, tmp_path / "run", progress=False)
    again = train(make_env("hover", num_envs=16, seed=0), "hover", cfg, tmp_path / "run", resume=ckpt,
                  progress=False)
    assert again is not None, "train() returned None when resuming a finished run"
    assert load_checkpoint(again)["iteration"] == cfg.num_iterations


def test_checkpoint_from_another_task_is_refused(trained_hover, tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(trained_hover.checkpoint, task="waypoint")
    assert "'hover'" in str(e.value) and "'waypoint'" in str(e.value)

    # waypoint has the same observation and action widths as hover: only the task name protects it
    env = make_env("waypoint", num_envs=16, seed=0)
    assert env.obs_dim == load_checkpoint(trained_hover.checkpoint)["obs_dim"]
    with pytest.raises(CheckpointError, match="waypoint"):
        train(env, "waypoint", PPOCfg(num_iterations=2, **SMALL), tmp_path / "wp",
              resume=trained_hover.checkpoint, progress=False)
    assert not list((tmp_path / "wp").glob("model_*.pt")), "a refused resume must not train"

    # a shape mismatch is named too: trajectory observes the reference velocity as well
    traj = make_env("trajectory", num_envs=16, seed=0)
    with pytest.raises(CheckpointError, match="observation width"):
        load_checkpoint(trained_hover.checkpoint, obs_dim=traj.obs_dim)


def test_corrupt_checkpoint_is_a_checkpoint_error(trained_hover, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint\xff" * 64)
    truncated = tmp_path / "truncated.pt"
    data = trained_hover.checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path in (garbage, truncated, foreign):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    # the intact copy still loads: the errors above are about the files, not the loader
    intact = tmp_path / "intact.pt"
    shutil.copy(trained_hover.checkpoint, intact)
    assert load_checkpoint(intact, task="hover")["iteration"] == trained_hover.ppo_cfg.num_iterations


def test_init_from_a_deployed_actor_warms_the_critic_up_first(trained_hover, tmp_path):
    """train(init=...) starts from the given actor and frozen normalizer; during the critic warm-up the
    actor does not move while the fresh critic learns; a mismatched init is refused."""
    src = model_from_checkpoint(load_checkpoint(trained_hover.checkpoint))
    hidden = tuple(m.out_features for m in src.actor if isinstance(m, torch.nn.Linear))[:-1]
    cfg = PPOCfg(num_iterations=3, critic_warmup_iterations=3, actor_hidden=hidden, **SMALL)
    ckpt = train(make_env("hover", num_envs=64), "hover", cfg, tmp_path / "warm", progress=False, init=src)
    out = model_from_checkpoint(load_checkpoint(ckpt))
    obs = torch.randn(256, src.actor[0].in_features)
    with torch.no_grad():
        torch.testing.assert_close(out.act_mean(obs), src.act_mean(obs))  # actor and normalizer untouched
    torch.testing.assert_close(out.obs_normalizer.mean, src.obs_normalizer.mean)
    fresh = ActorCritic(src.actor[0].in_features, src.log_std.shape[0], hidden)
    assert any(not torch.equal(a, b) for a, b in zip(out.critic.parameters(), fresh.critic.parameters()))
    with pytest.raises(ValueError, match="init model"):
        train(make_env("hover", num_envs=64, action_history=3), "hover", cfg, tmp_path / "bad", progress=False,
              init=src)


def test_per_action_initial_std_and_a_remainder_minibatch(tmp_path):
    """init_log_std_actions sets each action's initial std (after one iteration: Adam moves it by at most
    about the learning rate per step); a batch num_minibatches does not divide leaves its remainder out
    instead of training on a one-sample minibatch (its advantage std is NaN)."""
    env = make_env("hover", num_envs=5, seed=0)  # 5 x 8 = 40 samples: 3 minibatches of 13, 1 left over
    stds = (-2.0, -1.0, -1.5, -0.5)
    cfg = PPOCfg(num_iterations=1, save_interval=1, seed=0, num_steps=8, num_minibatches=3, update_epochs=1,
                 init_log_std_actions=stds)
    ckpt = load_checkpoint(train(env, "hover", cfg, tmp_path / "run", progress=False))
    log_std = ckpt["model"]["log_std"]
    steps = cfg.update_epochs * cfg.num_minibatches
    assert torch.allclose(log_std, torch.tensor(stds), atol=steps * 1e-2 * 1.01), log_std  # lr <= 1e-2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    with pytest.raises(ValueError, match="init_log_std_actions has 2 values"):
        train(make_env("hover", num_envs=8, seed=0), "hover", PPOCfg(init_log_std_actions=(-1.0, -1.0), **SMALL),
              tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="init_log_std_actions"):
        PPOCfg(init_log_std_actions=(float("nan"),))
