"""Checkpoints: weights + optimizer + the resolved configs they were trained with, written atomically.

A checkpoint records the observation groups its model reads and their widths (``obs_groups``, in the
order they are concatenated); one written before observation groups read the "policy" group alone.

A run folder holds ``run.json`` naming its run id, and every checkpoint carries the id of the run that
wrote it, so that the latest checkpoint of a folder is never one left behind by an older run there.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch

from tether.config import config_hash, config_to_dict

CHECKPOINT_FORMAT = 1
RUN_FILE = "run.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to another task / shape; the message says which."""


def save_checkpoint(path: str | Path, *, model, optimizer, task: str, env, ppo_cfg, iteration: int,
                    global_step: int, train_time_s: float, learning_rate: float,
                    logs: dict[str, float] | None = None, run_id: str | None = None, world_size: int = 1,
                    obs_groups: dict[str, int] | None = None, critic_groups: dict[str, int] | None = None) -> Path:
    """world_size: processes of a data-parallel run (each with ``env.run.num_envs`` envs).
    obs_groups: {group: width} the model (its actor, what is exported) reads, in order (default: the
    "policy" group, env.obs_dim). critic_groups: {group: width} an asymmetric critic reads instead (None:
    the critic reads obs_groups; the key is then not written)."""
    path = Path(path)
    obs_groups = dict(obs_groups) if obs_groups is not None else {"policy": env.obs_dim}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "run_id": run_id,
        "task": task,
        "task_cfg": config_to_dict(env.cfg),
        "ppo_cfg": config_to_dict(ppo_cfg),
        # the task alone (issue 13): the same task trained on another machine, device or env count has
        # the same hash; the run settings are recorded beside it
        "config_hash": task_config_hash(env.cfg),
        "run_cfg": config_to_dict(env.run),
        "world_size": world_size,
        "obs_dim": env.obs_dim,
        "obs_groups": obs_groups,
        "action_dim": env.cfg.action_dim,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "global_step": global_step,
        "train_time_s": train_time_s,
        "learning_rate": learning_rate,
        "logs": logs or {},
    }
    if critic_groups is not None:
        payload["critic_groups"] = dict(critic_groups)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind
    return path


def task_config_hash(task_cfg) -> str:
    """The config hash of a policy: its task config alone (no run settings, no PPO settings)."""
    return config_hash(config_to_dict(task_cfg))


def checkpoint_groups(ckpt: dict[str, Any]) -> dict[str, int]:
    """{group: width} a checkpoint's model reads, in order; a checkpoint older than observation groups
    read the "policy" group (its ``obs_dim``) alone."""
    return dict(ckpt.get("obs_groups") or {"policy": ckpt["obs_dim"]})


def checkpoint_critic_groups(ckpt: dict[str, Any]) -> dict[str, int] | None:
    """{group: width} an asymmetric critic of the checkpoint reads, in order; None: it reads what the actor reads."""
    groups = ckpt.get("critic_groups")
    return dict(groups) if groups else None


def load_checkpoint(path: str | Path, task: str | None = None, obs_dim: int | None = None,
                    action_dim: int | None = None, action_space: str | None = None,
                    obs_groups: dict[str, int] | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against what is given (task, "policy" width obs_dim, action
    width, action space, the {group: width} obs_groups its model must read in that order)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # on the CPU whatever device wrote it: the caller moves weights to its own device
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises pickle, zip and runtime errors for corrupt files
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise CheckpointError(f"{path}: cannot be read as a Tether checkpoint ({reason[:200]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a Tether checkpoint (format {CHECKPOINT_FORMAT} expected)")
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"{path}: checkpoint is from task {ckpt['task']!r}, not {task!r}")
    trained_space = ckpt.get("task_cfg", {}).get("action_space")
    if action_space is not None and trained_space != action_space:
        raise CheckpointError(f"{path}: checkpoint was trained with action_space {trained_space!r}, not "
                              f"{action_space!r}; a resumed run keeps its action space")
    if obs_dim is not None and ckpt["obs_dim"] != obs_dim:
        raise CheckpointError(f"{path}: observation width {ckpt['obs_dim']} != environment's {obs_dim}")
    if obs_groups is not None and list(checkpoint_groups(ckpt).items()) != list(dict(obs_groups).items()):
        raise CheckpointError(f"{path}: its model reads observation groups {_groups_text(checkpoint_groups(ckpt))}, "
                              f"this run {_groups_text(obs_groups)}; resume with the ppo.actor_groups it was "
                              f"trained with, on an env giving those widths")
    if action_dim is not None and ckpt["action_dim"] != action_dim:
        raise CheckpointError(f"{path}: action width {ckpt['action_dim']} != environment's {action_dim}")
    return ckpt


def _groups_text(groups: dict[str, int]) -> str:
    return "[" + ", ".join(f"{g} ({w})" for g, w in groups.items()) + "]"


# ------------------------------------------------------------------------------------ run folders


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def write_run_file(run_dir: str | Path, run_id: str, task: str, resumed_from: str | Path | None = None) -> Path:
    """``run.json``: the id every checkpoint of this folder's run carries."""
    path = Path(run_dir) / RUN_FILE
    info = {"run_id": run_id, "task": task,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "resumed_from": None if resumed_from is None else str(Path(resumed_from).resolve())}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_run_id(run_dir: str | Path) -> str | None:
    """The run id named in ``run_dir/run.json``; None for a folder without one (written before run ids)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run_id = json.loads(path.read_text()).get("run_id")
    except (ValueError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable run file ({e}); it names the run whose checkpoints count") from e
    if not isinstance(run_id, str) or not run_id:
        raise CheckpointError(f"{path}: no run_id in the run file")
    return run_id


def checkpoints_in(run_dir: str | Path) -> list[Path]:
    """model_<iteration>.pt files of a folder, by iteration (oldest first)."""
    def iteration(p: Path) -> int:
        m = re.fullmatch(r"model_(\d+)\.pt", p.name)
        return int(m.group(1)) if m else -1

    return sorted((p for p in Path(run_dir).glob("model_*.pt") if iteration(p) >= 0), key=iteration)


def latest_checkpoint(run_dir: str | Path, skipped: list[Path] | None = None) -> Path:
    """The highest-iteration checkpoint of the run named in ``run_dir/run.json``.

    Checkpoints of another run in the same folder (a stale, higher-numbered one left by an older run)
    are passed over and appended to ``skipped``; a folder without ``run.json`` takes the highest one.
    """
    run_dir = Path(run_dir)
    ckpts = checkpoints_in(run_dir)
    if not ckpts:
        raise CheckpointError(f"no checkpoint (model_*.pt) in {run_dir}")
    run_id = read_run_id(run_dir)
    if run_id is None:
        return ckpts[-1]
    for path in reversed(ckpts):
        if load_checkpoint(path).get("run_id") == run_id:
            return path
        if skipped is not None:
            skipped.append(path)
    raise CheckpointError(f"no checkpoint of run {run_id} (named in {run_dir / RUN_FILE}) in {run_dir}; the "
                          f"{len(ckpts)} model_*.pt there belong to another run: give one of them explicitly")
