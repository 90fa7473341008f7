"""Teacher-student distillation with DAgger (Ross et al. 2011, "A Reduction of Imitation Learning and
Structured Prediction to No-Regret Online Learning"): a privileged state-based teacher (PPO, reading the
"policy" and "privileged" groups) labels every state the student visits; the student (the "policy"
state group + the "depth" image) learns the teacher's mean action by regression.

Why DAgger and not behaviour cloning: a student trained on the teacher's own trajectories meets states
the teacher never visits as soon as it errs (compounding error, quadratic in the horizon); DAgger rolls
out the mixture ``teacher with probability beta, else student`` with beta decaying to 0, so the dataset
holds the states the student itself reaches, each labelled by the teacher.

Reads like the PPO loop (policies/ppo.py): one function, top to bottom: rollout (label + aggregate),
supervised update, logging, evaluation, checkpoint. The dataset is a ring buffer on the env's device
holding the state vector, the image AFTER the encoder's parameter-free preprocessing (pooled,
normalized: 16x12 instead of 64x48 raw pixels, 16x less memory, bit-identical input to the trainable
layers) and the teacher's label.

The student is recurrent-free: a GRU would need its state declared in the contract's
``recurrent_state`` and carried by the runner (not built yet); see the README's distillation section.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from policies.checkpoint import CHECKPOINT_FORMAT, new_run_id, task_config_hash, write_run_file
from policies.models import DepthEncoder, EmpiricalNormalization, mlp
from tether.config import config_to_dict
from tether.contract import ImageInput

STUDENT_KIND = "dagger_student"
"""the ``kind`` of a student checkpoint (a PPO checkpoint has none)"""
STUDENT_GROUPS = ("policy",)
"""the vector groups the student reads: the deployable state alone, never "privileged\""""

Groups = dict[str, torch.Tensor]
Teacher = Callable[[Groups], torch.Tensor]
"""observation groups -> the teacher's mean action [N, A] (it reads whatever groups it needs)"""


@dataclasses.dataclass(frozen=True)
class DistillCfg:
    num_iterations: int = 150
    """DAgger iterations (rollout, aggregate, update)"""
    num_steps: int = 16
    """rollout length per env per iteration [control steps]"""
    beta0: float = 1.0
    """probability that the teacher's action is executed in the first iteration (per env and step) [1]"""
    beta_decay: float = 0.9
    """beta of iteration i = beta0 * beta_decay**i; the student acts with probability 1 - beta [1]"""
    beta_min: float = 0.0
    """beta never falls below this [1]"""
    buffer_size: int = 200_000
    """samples the aggregated dataset holds (the oldest are replaced): 1.4 kB each at 16x12 pooled [1]"""
    batch_size: int = 1024
    """samples per gradient step"""
    updates_per_iteration: int = 16
    """gradient steps after each rollout"""
    learning_rate: float = 5e-4
    """Adam step size"""
    max_grad_norm: float = 1.0
    """global gradient norm clip [1]"""
    latent_dim: int = 64
    """depth encoder output width"""
    hidden: tuple[int, ...] = (256, 128)
    """hidden widths of the MLP on [normalized state, depth latent]"""
    eval_interval: int = 25
    """iterations between evaluations of the student alone (0: none)"""
    save_interval: int = 25
    """iterations between checkpoints"""
    seed: int = 0
    """torch seed of the run (weights, the beta draws, minibatches)"""

    def __post_init__(self):
        for name in ("num_iterations", "num_steps", "buffer_size", "batch_size", "updates_per_iteration",
                     "latent_dim", "save_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_interval < 0:
            raise ValueError(f"eval_interval must be >= 0 (0: no evaluation), got {self.eval_interval}")
        for name in ("beta0", "beta_decay", "beta_min"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not (math.isfinite(self.learning_rate) and 0.0 < self.learning_rate <= 1.0):
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not self.hidden or any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of widths >= 1, got {list(self.hidden)}")

    def beta(self, iteration: int) -> float:
        """probability that the teacher acts in ``iteration`` (0-based)"""
        return max(self.beta_min, self.beta0 * self.beta_decay ** iteration)


# ------------------------------------------------------------------------------------ models


class DepthStudent(nn.Module):
    """[normalized "policy" state, DepthEncoder(depth)] -> MLP -> mean action (offset from ``action_bias``,
    the hover action, as ActorCritic's actor). The encoder's preprocessing (tether.contract.ImageInput:
    specials, nearest pooling, / max_range_m) is in the graph, so the exported model takes the image as
    the camera publishes it."""

    def __init__(self, obs_dim: int, action_dim: int, image: ImageInput, latent_dim: int = 64,
                 hidden: tuple[int, ...] = (256, 128), action_bias: torch.Tensor | None = None):
        super().__init__()
        self.image_name = image.name
        self.obs_normalizer = EmpiricalNormalization(obs_dim)
        self.encoder = DepthEncoder(image, latent_dim)
        self.actor = mlp(obs_dim + latent_dim, hidden, action_dim)
        self.register_buffer("action_bias", action_bias if action_bias is not None else torch.zeros(action_dim))
        with torch.no_grad():  # start at the bias (hover), as the PPO actor does
            self.actor[-1].weight.mul_(0.01)
            self.actor[-1].bias.zero_()

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """The encoder's parameter-free in-graph steps: raw [B, 1, H, W] m -> what its layers take."""
        return self.encoder.preprocess(image)

    def act_pre(self, obs: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """Mean action from the state [B, obs_dim] and a preprocessed image (:meth:`preprocess`)."""
        z = self.encoder.encode(pre)
        return self.actor(torch.cat([self.obs_normalizer(obs), z], dim=-1)) + self.action_bias

    def act_mean(self, obs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.act_pre(obs, self.preprocess(image))


class DeployedStudent(nn.Module):
    """What gets exported: (obs, image) -> the student's mean action clipped to the action bounds."""

    def __init__(self, student: DepthStudent, low: float = -1.0, high: float = 1.0):
        super().__init__()
        self.student = student
        self.groups = STUDENT_GROUPS  # export refuses a module reading "privileged": this one never does
        self.low, self.high = low, high

    def forward(self, obs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.student.act_mean(obs, image), self.low, self.high)


class CheckpointTeacher(nn.Module):
    """A PPO checkpoint's deterministic actor on the groups it was trained with (its ``obs_groups``, e.g.
    "policy" + "privileged"), clipped to the action bounds: the label is the action the teacher flies."""

    def __init__(self, ckpt: dict):
        super().__init__()
        from policies.export import model_from_checkpoint

        self.model = model_from_checkpoint(ckpt)
        self.model.requires_grad_(False)
        self.groups = self.model.groups

    def forward(self, groups: Groups) -> torch.Tensor:
        return torch.clamp(self.model.act_mean(groups), -1.0, 1.0)


# ------------------------------------------------------------------------------------ dataset


class Dataset:
    """The aggregated DAgger dataset: a ring buffer of (state, preprocessed image, teacher action) on one
    device, at most ``capacity`` samples (the oldest are replaced first)."""

    def __init__(self, capacity: int, obs_dim: int, image_shape: tuple[int, ...], action_dim: int,
                 device: torch.device):
        self.capacity = capacity
        self.obs = torch.zeros(capacity, obs_dim, device=device)  # [M, obs]
        self.image = torch.zeros(capacity, *image_shape, device=device)  # [M, C, h, w]
        self.action = torch.zeros(capacity, action_dim, device=device)  # [M, A]
        self.size, self.head, self.added = 0, 0, 0

    def add(self, obs: torch.Tensor, image: torch.Tensor, action: torch.Tensor) -> None:
        n = obs.shape[0]
        if n > self.capacity:  # only the newest capacity samples would survive anyway
            obs, image, action, n = obs[-self.capacity:], image[-self.capacity:], action[-self.capacity:], self.capacity
        idx = (self.head + torch.arange(n, device=self.obs.device)) % self.capacity
        self.obs[idx], self.image[idx], self.action[idx] = obs, image, action
        self.head = (self.head + n) % self.capacity
        self.size = min(self.capacity, self.size + n)
        self.added += n

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        idx = torch.randint(0, self.size, (batch_size,), device=self.obs.device, generator=generator)
        return self.obs[idx], self.image[idx], self.action[idx]


# ------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(student: DepthStudent, env, max_steps: int | None = None) -> dict[str, float]:
    """The student alone, deterministic, one episode per env from ``env``'s reset: the fractions of
    episodes that end in success, in a crash, or at the time limit (``info["success"]``,
    ``info["crashed"]``, ``info["time_outs"]``), and the mean episode length [s]."""
    n, dev = env.num_envs, env.device
    max_steps = max_steps if max_steps is not None else env.cfg.max_episode_steps + 1
    obs = env.reset()
    outcome = torch.full((n,), -1, dtype=torch.long, device=dev)  # -1 running, 0 success, 1 crash, 2 time out
    length = torch.zeros(n, device=dev)
    for step in range(max_steps):
        action = student.act_mean(obs["policy"], obs[student.image_name]).clamp(-1.0, 1.0)
        obs, _, _, truncated, info = env.step(action)
        first = outcome < 0
        ended = torch.where(info["success"], 0, torch.where(info["crashed"], 1, torch.where(truncated, 2, -1)))
        newly = first & (ended >= 0)
        outcome[newly] = ended[newly]
        length[newly] = (step + 1) * env.cfg.control_dt
        if bool((outcome >= 0).all()):
            break
    done = outcome >= 0
    return {"success_rate": float((outcome == 0).float().mean()), "crash_rate": float((outcome == 1).float().mean()),
            "timeout_rate": float((outcome == 2).float().mean()),
            "episode_length_s": float(length[done].mean()) if bool(done.any()) else float("nan")}


# ------------------------------------------------------------------------------------ checkpoints


def save_student(path: str | Path, *, student: DepthStudent, optimizer, task: str, env, image: ImageInput,
                 cfg: DistillCfg, teacher_info: dict, iteration: int, env_steps: int, train_time_s: float,
                 logs: dict, run_id: str, force: bool = False) -> Path:
    """Write a student checkpoint atomically (temporary name, then rename); an existing file is replaced
    only with ``force``. It is a Tether checkpoint (policies.checkpoint: format, task, configs, run id)
    with ``kind`` = STUDENT_KIND and what rebuilds the student (its image input, DistillCfg)."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to replace it")
    payload = {
        "format": CHECKPOINT_FORMAT, "kind": STUDENT_KIND, "run_id": run_id, "task": task,
        "task_cfg": config_to_dict(env.cfg), "config_hash": task_config_hash(env.cfg), "run_cfg": config_to_dict(env.run),
        "distill_cfg": config_to_dict(cfg), "obs_groups": {"policy": env.obs_dim}, "image": dataclasses.asdict(image),
        "obs_dim": env.obs_dim, "action_dim": env.cfg.action_dim, "teacher": teacher_info,
        "model": student.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
        "global_step": env_steps, "train_time_s": train_time_s, "logs": logs,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint
    return path


def student_from_checkpoint(ckpt: dict) -> DepthStudent:
    """Rebuild a student (eval mode, on the CPU) from a loaded student checkpoint."""
    from tether.config import config_from_dict

    if ckpt.get("kind") != STUDENT_KIND:
        raise ValueError(f"not a distilled student checkpoint (kind {ckpt.get('kind')!r}, expected {STUDENT_KIND!r})")
    cfg = ckpt["distill_cfg"]
    image = config_from_dict(ImageInput, ckpt["image"], where="student checkpoint image")
    student = DepthStudent(ckpt["obs_dim"], ckpt["action_dim"], image, cfg["latent_dim"], tuple(cfg["hidden"]))
    student.load_state_dict(ckpt["model"])
    return student.eval()


# ------------------------------------------------------------------------------------ DAgger


def distill(env, teacher: Teacher, task: str, cfg: DistillCfg, out_dir: str | Path, *, eval_env=None,
            teacher_info: dict | None = None, progress: bool = True, writer=None, force: bool = False,
            on_iteration: Callable[[int, dict], None] | None = None) -> Path:
    """DAgger on ``env`` (rendering its image group) with ``teacher`` labelling; checkpoints
    ``model_<iteration>.pt`` go to ``out_dir`` (an existing one is replaced only with ``force``); returns
    the last checkpoint's path.

    eval_env: an env of the same task (other seed: unseen fields) on which the student alone is judged
    every ``cfg.eval_interval`` iterations (:func:`evaluate`), logged as ``eval/*``; its time is not in
    ``train_time_s`` (nor is checkpoint I/O), so time-to-skill reads off the checkpoints as for PPO. on_iteration(i, logs)
    is called after each iteration (benchmarks record curves with it).
    """
    from tqdm import tqdm

    images = env.image_inputs()
    if len(images) != 1:
        raise ValueError(f"the student takes one image input; env {task!r} declares {[im.name for im in images]}")
    image = images[0]
    out_dir = Path(out_dir)
    planned = [out_dir / f"model_{i:05d}.pt" for i in range(1, cfg.num_iterations + 1)
               if i % cfg.save_interval == 0 or i == cfg.num_iterations]
    taken = [p.name for p in planned if p.exists()]
    if taken and not force:  # refused before any work: a finished run's checkpoints are never lost
        raise FileExistsError(f"{out_dir} holds {', '.join(taken[:3])} already; pass force=True (--force) to "
                              f"replace them, or another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    write_run_file(out_dir, run_id, task)
    device, num_envs, act_dim = env.device, env.num_envs, env.cfg.action_dim
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    student = DepthStudent(env.obs_dim, act_dim, image, cfg.latent_dim, cfg.hidden,
                           action_bias=env.hover_action.clone()).to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.learning_rate)
    obs = env.reset()
    pre_shape = tuple(student.preprocess(obs[image.name][:1]).shape[1:])
    data = Dataset(cfg.buffer_size, env.obs_dim, pre_shape, act_dim, device)

    env_steps, train_time_s, last = 0, 0.0, None
    bar = tqdm(range(cfg.num_iterations), desc=f"distill {task}", disable=not progress, unit="it")
    for iteration in bar:
        t0 = time.perf_counter()
        beta = cfg.beta(iteration)
        # ---- rollout: the mixture acts, the teacher labels every visited state
        ep_success = ep_crash = ep_count = torch.zeros((), device=device)
        label_err = torch.zeros((), device=device)
        with torch.no_grad():
            for _ in range(cfg.num_steps):
                state = obs["policy"]
                student.obs_normalizer.update(state)
                pre = student.preprocess(obs[image.name])
                target = teacher(obs)  # [N, A]
                own = student.act_pre(state, pre).clamp(-1.0, 1.0)
                data.add(state, pre, target)
                label_err += (own - target).square().mean() / cfg.num_steps
                teacher_acts = torch.rand(num_envs, 1, device=device, generator=gen) < beta
                obs, _, terminated, truncated, info = env.step(torch.where(teacher_acts, target, own))
                done = terminated | truncated
                ep_count = ep_count + done.sum()
                ep_success = ep_success + (info["success"] & done).sum()
                ep_crash = ep_crash + (info["crashed"] & done).sum()
        env_steps += num_envs * cfg.num_steps
        rollout_s = time.perf_counter() - t0

        # ---- supervised update on the aggregate
        for _ in range(cfg.updates_per_iteration):
            b_obs, b_pre, b_action = data.sample(min(cfg.batch_size, data.size), gen)
            loss = (student.act_pre(b_obs, b_pre) - b_action).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        iteration_s = time.perf_counter() - t0
        train_time_s += iteration_s

        # ---- logging
        n_ep = float(ep_count)
        logs = {"losses/imitation": loss.item(), "rollout/student_mse": label_err.item(), "charts/beta": beta,
                "charts/dataset_size": float(data.size), "charts/env_steps_per_s": num_envs * cfg.num_steps / iteration_s,
                "charts/rollout_s": rollout_s, "charts/update_s": iteration_s - rollout_s,
                "charts/env_steps": float(env_steps), "charts/train_time_s": train_time_s}
        if n_ep > 0:
            logs["rollout/success_rate"] = float(ep_success) / n_ep
            logs["rollout/crash_rate"] = float(ep_crash) / n_ep
        if hasattr(env, "curriculum_level"):
            logs["curriculum/level"] = float(env.curriculum_level)
        if eval_env is not None and cfg.eval_interval and ((iteration + 1) % cfg.eval_interval == 0
                                                           or iteration + 1 == cfg.num_iterations):
            if hasattr(env, "curriculum_level"):  # judged at the density it trains at now
                eval_env.set_curriculum_level(env.curriculum_level)
            logs.update({f"eval/{k}": v for k, v in evaluate(student, eval_env).items()})
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(k, v, env_steps)
        bar.set_postfix({"loss": f"{logs['losses/imitation']:.4f}", "beta": f"{beta:.2f}",
                         "succ": f"{logs.get('eval/success_rate', logs.get('rollout/success_rate', float('nan'))):.2f}"})
        if on_iteration is not None:
            on_iteration(iteration, logs)

        if (iteration + 1) % cfg.save_interval == 0 or iteration + 1 == cfg.num_iterations:
            last = save_student(out_dir / f"model_{iteration + 1:05d}.pt", student=student, optimizer=optimizer,
                                task=task, env=env, image=image, cfg=cfg, teacher_info=teacher_info or {},
                                iteration=iteration + 1, env_steps=env_steps, train_time_s=train_time_s,
                                logs=logs, run_id=run_id, force=force)
    bar.close()
    return last


# ------------------------------------------------------------------------------------ export


def export_student(checkpoint: str | Path, out_dir: str | Path, env=None, overwrite: bool = False,
                   record_steps: int = 20):
    """policy.onnx (inputs "obs" and the image by name, normalization and depth preprocessing in the
    graph) + policy.json (contract 2.1 with the image input) from a student checkpoint, through
    policies.export.export_module (parity in onnxruntime on random inputs with REP 117 specials and on
    ``record_steps`` steps the student flies in ``env``: default the checkpoint's own task, rendering).
    Returns (dir, contract, max parity error)."""
    from policies.checkpoint import load_checkpoint
    from policies.export import env_from_checkpoint, export_module, normalization_section

    ckpt = load_checkpoint(checkpoint)
    student = student_from_checkpoint(ckpt)
    if env is None:
        env = env_from_checkpoint(ckpt, num_envs=32)
    images = tuple(env.image_inputs())
    if [dataclasses.asdict(im) for im in images] != [ckpt["image"]]:
        raise ValueError(f"{checkpoint}: the env's image inputs {[im.name for im in images]} are not the one the "
                         f"student was trained on ({ckpt['image']['name']!r}, {ckpt['image']['width']}x"
                         f"{ckpt['image']['height']})")
    actor = DeployedStudent(student).eval()
    obs, rec_obs, rec_img = env.reset(), [], []
    with torch.no_grad():
        for _ in range(record_steps):
            rec_obs.append(obs["policy"].cpu().numpy().copy())
            rec_img.append(obs[student.image_name].cpu().numpy().copy())
            obs = env.step(actor(obs["policy"], obs[student.image_name]))[0]
    provenance = {"config_hash": ckpt["config_hash"], "checkpoint": str(Path(checkpoint).resolve()),
                  "run_id": ckpt.get("run_id"), "iteration": ckpt["iteration"], "train_time_s": ckpt["train_time_s"],
                  "distilled_from": ckpt.get("teacher"), "method": "dagger", "run_cfg": ckpt.get("run_cfg"),
                  "parent": None}
    return export_module(actor, out_dir, task=ckpt["task"], env=env,
                         normalization=normalization_section(student.obs_normalizer), provenance=provenance,
                         test_obs=np.concatenate(rec_obs), test_images={student.image_name: np.concatenate(rec_img)},
                         overwrite=overwrite)
