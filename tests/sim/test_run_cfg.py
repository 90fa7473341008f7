"""Run settings live beside the task config (issue 13): the config hash is the task's alone, old files
whose task config still holds run keys load, and a checkpoint written by one machine's run resumes and
exports on another's settings."""

from __future__ import annotations

import pytest
import torch

from policies.checkpoint import load_checkpoint, task_config_hash
from policies.export import env_from_checkpoint, export_policy
from policies.ppo import PPOCfg, train
from sim.tasks import make_env, task_cfg_from_dict
from sim.tasks.run_cfg import RunCfg, run_defaults, split_run_keys
from tether.config import config_to_dict

TINY = PPOCfg(num_iterations=2, num_steps=4, num_minibatches=2, update_epochs=1, save_interval=1)


def test_make_env_sends_run_keys_to_the_run_and_task_keys_to_the_task():
    env = make_env("hover", num_envs=6, seed=3, device="cpu", action_history=3)
    assert env.run == RunCfg(num_envs=6, seed=3, device="cpu")
    assert env.num_envs == 6 and env.cfg.action_history == 3
    assert not any(hasattr(env.cfg, k) for k in ("num_envs", "device", "seed", "compile"))
    # the old task key compile=True still asks for the compiled eager physics
    assert make_env("hover", num_envs=2, compile=True).run.physics == "compiled"
    assert make_env("hover_robust", physics="eager").num_envs == run_defaults("hover_robust").num_envs == 1024


def test_config_hash_is_the_task_alone():
    a = make_env("hover", num_envs=4, seed=0)
    b = make_env("hover", num_envs=64, seed=9, device="cpu", threads=2)
    assert task_config_hash(a.cfg) == task_config_hash(b.cfg)
    assert task_config_hash(make_env("hover", num_envs=4, action_history=3).cfg) != task_config_hash(a.cfg)


def test_split_run_keys():
    task, run = split_run_keys({"num_envs": 8, "device": "cuda", "compile": True, "goal_w": [0, 0, 1]})
    assert task == {"goal_w": [0, 0, 1]} and run == {"num_envs": 8, "device": "cuda", "physics": "compiled"}
    assert split_run_keys({"compile": False}) == ({}, {})


def test_old_task_cfg_with_run_keys_loads():
    legacy = {**config_to_dict(make_env("hover", num_envs=1).cfg), "num_envs": 4096, "device": "cuda",
              "seed": 7, "compile": True}
    cfg = task_cfg_from_dict("hover", legacy)
    assert config_to_dict(cfg) == config_to_dict(make_env("hover", num_envs=1).cfg)
    with pytest.raises(ValueError, match="unknown key"):  # a truly unknown key is still an error
        task_cfg_from_dict("hover", {**legacy, "num_env": 3})


def test_checkpoint_of_a_cuda_run_resumes_and_exports_on_cpu(tmp_path):
    """A checkpoint as a CUDA run before issue 13 wrote it (device 'cuda' inside its task config): it
    rebuilds a CPU env, resumes training there, and exports; the contract carries the task alone."""
    ckpt_path = train(make_env("hover", num_envs=8, seed=0), "hover", TINY, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["run_cfg"]["num_envs"] == 8 and ckpt["world_size"] == 1
    ckpt["task_cfg"] = {**ckpt["task_cfg"], "device": "cuda", "num_envs": 4096, "seed": 0, "compile": False}
    del ckpt["run_cfg"], ckpt["world_size"]
    legacy = tmp_path / "legacy" / "model_00002.pt"
    legacy.parent.mkdir()
    torch.save(ckpt, legacy)

    env = env_from_checkpoint(load_checkpoint(legacy), num_envs=4)
    assert env.device.type == "cpu" and env.num_envs == 4
    cfg = PPOCfg(**{**TINY.__dict__, "num_iterations": 3})
    resumed = train(env, "hover", cfg, tmp_path / "legacy", resume=legacy, progress=False)
    assert load_checkpoint(resumed)["iteration"] == 3
    _, contract, _ = export_policy(legacy, tmp_path / "policy")
    assert "device" not in contract.provenance["task_cfg"] and "num_envs" not in contract.provenance["task_cfg"]
    assert contract.provenance["world_size"] == 1
