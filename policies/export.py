"""Export a policy to ``policy.onnx`` (normalization in the graph) + ``policy.json`` (its contract).

Two entries, one path:

- :func:`export_policy` (``tether export``): a PPO checkpoint's deterministic actor. A checkpoint whose
  model reads "privileged" (a teacher) is refused: distill it into a student first.
- :func:`export_module`: any torch module, e.g. a distilled depth student (policies/distill.py)::

      export_module(actor, out_dir, task="navigate", env=env, normalization={...}, provenance={...})

  ``actor(obs, *images)`` takes the state vector obs float32 [B, env.obs_dim] (the "policy" group, laid
  out by ``env.slices``) then one tensor per image input of ``env.image_inputs()`` in that order, each
  [B, 1, H, W] raw depth in metres with REP 117 specials (its preprocessing is in the module:
  policies.models.DepthPreprocess), and returns actions [B, action_dim] clipped to the action bounds.
  The ONNX graph has one named input per contract input (``contract.input_names``: "obs", then each
  image by its name), a dynamic batch axis, and is parity-checked in onnxruntime against the module.
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from policies.checkpoint import checkpoint_critic_groups, checkpoint_groups, load_checkpoint, task_config_hash
from policies.models import ActorCritic, DeployedActor
from sim.quadrotor.presets import GRAVITY
from sim.randomization import latency_step_range
from tether.config import config_to_dict
from tether.contract import (ControllerSpec, FramesSpec, ImageInput, LatencySpec, PolicyContract, VehicleSpec,
                             save_contract, sha256_file)
from tether.errors import UserError
from tether.runtime import OnnxPolicy

OPSET = 17
PARITY_TOL = 1e-5
"""max |onnxruntime - torch| an export accepts [normalized action units]"""
PRIVILEGED_REFUSAL = ("a teacher with privileged inputs cannot be deployed; distill it into a student first "
                      "(tether distill)")


def _source_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def contract_sections(cfg) -> dict:
    """The contract's 2.0 sections (vehicle, latency, controller, frames) from a quadrotor task config,
    stating what sim/tasks/quadrotor_env.py and sim/randomization.py do (tests/contract checks each
    claim against the environment). The vehicle is every field of the preset and of the randomization
    config, so a parameter or range added there is written without an edit here."""
    lat_lo, lat_hi = latency_step_range(cfg.randomization, cfg.control_dt)
    loop_hz = cfg.control_rate_hz * cfg.substeps  # the rate loop and the motor model run every substep
    if cfg.action_space == "ctbr":
        controller = ControllerSpec(type="rate_p_gyro_ff", loop_rate_hz=loop_hz, rate_kp=tuple(cfg.rate_kp),
                                    inertia_kg_m2=tuple(cfg.vehicle.inertia_kg_m2),
                                    feedforward=("gyroscopic: w_b x (J w_b)",))
    else:
        controller = ControllerSpec(type="direct", loop_rate_hz=loop_hz)
    return dict(vehicle=VehicleSpec.from_preset(cfg.vehicle, cfg.randomization, gravity_m_s2=GRAVITY),
                latency=LatencySpec(min_steps=lat_lo, max_steps=lat_hi, step_s=cfg.control_dt),
                # the env fills prev_actions and the delay queue with its hover action at every reset
                frames=FramesSpec(initial_action_history="hover", hold="zero_order"),
                controller=controller)


def env_from_checkpoint(ckpt: dict, num_envs: int = 1, **overrides):
    """Rebuild the training environment (same resolved config) from a checkpoint."""
    from sim.tasks import make_env, task_cfg_from_dict

    # old checkpoints' task_cfg holds run settings (device, num_envs, ...): task_cfg_from_dict drops them
    cfg = task_cfg_from_dict(ckpt["task"], ckpt["task_cfg"], where=f"checkpoint task_cfg ({ckpt['task']})")
    return make_env(ckpt["task"], cfg, **{"num_envs": num_envs, "device": "cpu", "physics": "eager", **overrides})


def model_from_checkpoint(ckpt: dict) -> ActorCritic:
    ppo, groups, critic = ckpt["ppo_cfg"], checkpoint_groups(ckpt), checkpoint_critic_groups(ckpt) or {}
    model = ActorCritic(sum(groups.values()), ckpt["action_dim"], tuple(ppo["actor_hidden"]),
                        tuple(ppo["critic_hidden"]), groups=tuple(groups), critic_groups=tuple(critic) or None,
                        critic_obs_dim=sum(critic.values()) or None)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def deployable_groups(groups, what: str) -> None:
    """UserError unless ``groups`` (the vector groups a model reads) is the deployable state alone."""
    groups = tuple(groups)
    if "privileged" in groups:
        raise UserError(PRIVILEGED_REFUSAL)
    if groups != ("policy",):
        raise UserError(f"{what} reads observation groups {list(groups)}; a deployed policy's state input is the "
                        f"'policy' group alone (the contract's observation): train with ppo.actor_groups "
                        f"['policy'], or distill it into a student")


def normalization_section(normalizer) -> dict:
    """The contract's ``normalization`` of an EmpiricalNormalization folded into the graph."""
    return {"in_graph": True, "formula": "(obs - mean) / (std + eps)", "eps": normalizer.eps,
            "mean": normalizer.mean.tolist(), "std": normalizer.var.sqrt().tolist()}


def export_policy(checkpoint: str | Path, out_dir: str | Path, parent: dict | None = None,
                  recorded_obs: np.ndarray | None = None, overwrite: bool = True) -> tuple[Path, PolicyContract, float]:
    """Write policy.onnx + policy.json into ``out_dir``; returns (dir, contract, max parity error).

    Parity: the ONNX in onnxruntime against the torch actor on random observations and on
    observations recorded from the environment (``recorded_obs``, or a short rollout of our own).
    Raises if the difference exceeds 1e-5. Files are written to a temporary name and renamed, so a
    failed export never leaves a half-written policy where a runner may load it. A checkpoint whose
    model reads other groups than "policy" (a privileged teacher) is refused (UserError).
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") == "dagger_student":  # a depth student (tether distill): its own model and inputs
        from policies.distill import export_student

        return export_student(checkpoint, out_dir, overwrite=overwrite)
    deployable_groups(checkpoint_groups(ckpt), f"checkpoint {checkpoint}")
    env = env_from_checkpoint(ckpt, num_envs=256)
    model = model_from_checkpoint(ckpt)
    actor = DeployedActor(model).eval()
    if recorded_obs is None:
        _check_out_dir(Path(out_dir), overwrite)  # before the rollout: a refused folder costs nothing
        recorded_obs = _record_observations(env, actor)
    provenance = {
        "config_hash": ckpt["config_hash"], "checkpoint": str(Path(checkpoint).resolve()),
        "run_id": ckpt.get("run_id"), "iteration": ckpt["iteration"], "train_time_s": ckpt["train_time_s"],
        "parent": parent,
        # how it was trained (device, envs per process, processes), for information: never read back
        "run_cfg": ckpt.get("run_cfg"), "world_size": ckpt.get("world_size", 1),
    }
    return export_module(actor, out_dir, task=ckpt["task"], env=env,
                         normalization=normalization_section(model.obs_normalizer), provenance=provenance,
                         test_obs=recorded_obs, overwrite=overwrite, images=())  # a PPO actor reads state only


def env_image_inputs(env) -> tuple[ImageInput, ...]:
    """The contract's image inputs of an env (``env.image_inputs()``; none for a flat-vector task)."""
    return tuple(env.image_inputs()) if callable(getattr(env, "image_inputs", None)) else ()


def export_module(actor: nn.Module, out_dir: str | Path, *, task: str, env, normalization: dict,
                  provenance: dict, test_obs: np.ndarray | None = None,
                  test_images: dict[str, np.ndarray] | None = None, overwrite: bool = True,
                  n_random: int = 512, images: tuple[ImageInput, ...] | None = None) -> tuple[Path, PolicyContract, float]:
    """Export ``actor`` (see the module docstring: ``actor(obs, *images) -> clipped actions``) to
    ``out_dir``/policy.onnx + policy.json; returns (dir, contract, max parity error).

    task: the registered task name; env: an env of it (its config, ``slices``, ``action_spec()`` and
    ``image_inputs()`` make the contract); normalization: the contract's normalization section (what
    the graph does to obs, e.g. :func:`normalization_section`); provenance: what made the policy
    (``config_hash`` defaults to the env's task config hash; onnx_sha256, opset, created, source_revision,
    preset, task_cfg are filled in). Parity in onnxruntime on ``n_random`` random states and images
    (NaN, +-inf pixels included) plus ``test_obs`` / ``test_images`` (random images where not given) must
    be within 1e-5. A module reading "privileged" (its ``groups``) is refused. The files are written
    and checked in a temporary folder, then renamed into ``out_dir``. images: the image inputs the
    actor takes (default: all of ``env.image_inputs()``; () for a state-only actor on an env with a camera).
    """
    deployable_groups(getattr(actor, "groups", ("policy",)), f"model {type(actor).__name__}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    images = env_image_inputs(env) if images is None else tuple(images)
    obs_dim = sum(s.length for s in env.slices)
    actor = actor.eval()
    examples = (torch.zeros(1, obs_dim),) + tuple(torch.zeros(1, *im.shape) for im in images)
    try:
        with torch.no_grad():
            probe = actor(*examples)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"export_module: {type(actor).__name__} must take (obs [B, {obs_dim}]"
                         + "".join(f", {im.name} [B, {', '.join(map(str, im.shape))}]" for im in images)
                         + f") as the contract's inputs; calling it so failed: {' '.join(str(e).split())[:200]}") from e
    if tuple(probe.shape) != (1, env.cfg.action_dim):
        raise ValueError(f"export_module: {type(actor).__name__} returns {list(probe.shape)}, the contract's action "
                         f"is [B, {env.cfg.action_dim}]")

    sections = contract_sections(env.cfg)
    meta = {"config_hash": task_config_hash(env.cfg), "preset": env.cfg.vehicle.name,
            "task_cfg": config_to_dict(env.cfg), **provenance}
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        tmp = Path(tmp)
        names = ["obs"] + [im.name for im in images]
        torch.onnx.export(actor, examples, str(tmp / "policy.onnx"), input_names=names, output_names=["actions"],
                          dynamic_axes={n: {0: "batch"} for n in names + ["actions"]}, opset_version=OPSET,
                          dynamo=False)
        contract = PolicyContract(
            task=task, control_rate_hz=env.cfg.control_rate_hz, action_latency_s=sections["latency"].mean_s,
            **sections, observation=env.slices, action=env.action_spec(), images=images,
            normalization=normalization,
            provenance={**meta, "onnx_sha256": sha256_file(tmp / "policy.onnx"), "opset": OPSET,
                        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "source_revision": _source_revision()})
        save_contract(contract, tmp / "policy.json")

        obs, feeds = _parity_inputs(obs_dim, images, n_random, test_obs, test_images)
        with torch.no_grad():
            expected = actor(torch.from_numpy(obs), *(torch.from_numpy(feeds[im.name]) for im in images)).numpy()
        got = OnnxPolicy(tmp)(obs, images=feeds if images else None)
        max_err = float(np.abs(got - expected).max())
        if not max_err <= PARITY_TOL:
            raise RuntimeError(f"ONNX parity check failed: max |onnx - torch| = {max_err:.3g} > {PARITY_TOL:g}")
        # the graph first, the contract naming its hash last: a runner never sees a contract without its graph
        os.replace(tmp / "policy.onnx", out_dir / "policy.onnx")
        os.replace(tmp / "policy.json", out_dir / "policy.json")
    return out_dir, contract, max_err


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder for policy.onnx + policy.json")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace the policy in it")


def random_depth(image: ImageInput, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 1, H, W] float32 depth as a camera publishes it: in range, with REP 117 specials scattered
    (+inf 10 %, -inf 5 %, NaN 20 %) and the first pooling block of every image wholly NaN."""
    x = rng.uniform(image.min_range_m, image.max_range_m, size=(n, *image.shape)).astype(np.float32)
    u = rng.uniform(size=x.shape)
    x[u < 0.1] = math.inf
    x[(u >= 0.1) & (u < 0.15)] = -math.inf
    x[u > 0.8] = math.nan
    x[..., :image.height // image.pooled_height, :image.width // image.pooled_width] = math.nan
    return x


def _parity_inputs(obs_dim: int, images: tuple[ImageInput, ...], n_random: int, test_obs, test_images):
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(n_random, obs_dim)).astype(np.float32) * 2.0]
    feeds = {im.name: [random_depth(im, n_random, rng)] for im in images}
    if test_obs is not None and len(test_obs):
        obs.append(np.asarray(test_obs, dtype=np.float32))
        for im in images:
            given = (test_images or {}).get(im.name)
            feeds[im.name].append(np.asarray(given, dtype=np.float32) if given is not None
                                  else random_depth(im, len(test_obs), rng))
    return np.concatenate(obs), {k: np.concatenate(v) for k, v in feeds.items()}


def _record_observations(env, actor, steps: int = 50) -> np.ndarray:
    obs = env.reset()["policy"]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            out.append(obs.numpy().copy())
            obs = env.step(actor(obs))[0]["policy"]
    return np.concatenate(out)
