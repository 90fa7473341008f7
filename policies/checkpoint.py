"""Checkpoints: weights + optimizer + the resolved configs they were trained with, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tether.config import config_hash, config_to_dict

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to another task / shape; the message says which."""


def save_checkpoint(path: str | Path, *, model, optimizer, task: str, env, ppo_cfg, iteration: int,
                    global_step: int, train_time_s: float, learning_rate: float,
                    logs: dict[str, float] | None = None) -> Path:
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "task_cfg": config_to_dict(env.cfg),
        "ppo_cfg": config_to_dict(ppo_cfg),
        "config_hash": config_hash({"task": config_to_dict(env.cfg), "ppo": config_to_dict(ppo_cfg)}),
        "obs_dim": env.obs_dim,
        "action_dim": env.cfg.action_dim,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "global_step": global_step,
        "train_time_s": train_time_s,
        "learning_rate": learning_rate,
        "logs": logs or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind
    return path


def load_checkpoint(path: str | Path, task: str | None = None, obs_dim: int | None = None,
                    action_dim: int | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises pickle, zip and runtime errors for corrupt files
        raise CheckpointError(f"{path}: cannot be read as a Tether checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a Tether checkpoint (format {CHECKPOINT_FORMAT} expected)")
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"{path}: checkpoint is from task {ckpt['task']!r}, not {task!r}")
    if obs_dim is not None and ckpt["obs_dim"] != obs_dim:
        raise CheckpointError(f"{path}: observation width {ckpt['obs_dim']} != environment's {obs_dim}")
    if action_dim is not None and ckpt["action_dim"] != action_dim:
        raise CheckpointError(f"{path}: action width {ckpt['action_dim']} != environment's {action_dim}")
    return ckpt


def latest_checkpoint(run_dir: str | Path) -> Path:
    ckpts = sorted(Path(run_dir).glob("model_*.pt"))
    if not ckpts:
        raise CheckpointError(f"no checkpoint (model_*.pt) in {run_dir}")
    return ckpts[-1]
