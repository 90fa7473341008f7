"""Export a checkpoint to ``policy.onnx`` (normalizer folded into the graph) + ``policy.json``."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from policies.checkpoint import checkpoint_groups, load_checkpoint
from policies.models import ActorCritic, DeployedActor
from sim.quadrotor.presets import GRAVITY
from sim.randomization import latency_step_range
from tether.config import config_to_dict
from tether.contract import (ControllerSpec, FramesSpec, LatencySpec, PolicyContract, VehicleSpec, save_contract,
                             sha256_file)
from tether.runtime import OnnxPolicy

OPSET = 17


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
    ppo, groups = ckpt["ppo_cfg"], checkpoint_groups(ckpt)
    model = ActorCritic(sum(groups.values()), ckpt["action_dim"], tuple(ppo["actor_hidden"]),
                        tuple(ppo["critic_hidden"]), groups=tuple(groups))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def export_policy(checkpoint: str | Path, out_dir: str | Path, parent: dict | None = None,
                  recorded_obs: np.ndarray | None = None, overwrite: bool = True) -> tuple[Path, PolicyContract, float]:
    """Write policy.onnx + policy.json into ``out_dir``; returns (dir, contract, max parity error).

    Parity: the ONNX in onnxruntime against the torch actor on random observations and on
    observations recorded from the environment (``recorded_obs``, or a short rollout of our own).
    Raises if the difference exceeds 1e-5. Files are written to a temporary name and renamed, so a
    failed export never leaves a half-written policy where a runner may load it.
    """
    ckpt = load_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder for policy.onnx + policy.json")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace the policy in it")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = env_from_checkpoint(ckpt, num_envs=256)
    model = model_from_checkpoint(ckpt)
    actor = DeployedActor(model).eval()

    tmp_onnx = out_dir / ".policy.onnx.tmp"
    example = torch.zeros(1, ckpt["obs_dim"])
    torch.onnx.export(actor, (example,), str(tmp_onnx), input_names=["obs"], output_names=["actions"],
                      dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=OPSET,
                      dynamo=False)

    if recorded_obs is None:
        recorded_obs = _record_observations(env, actor)
    rng = np.random.default_rng(0)
    random_obs = rng.normal(size=(512, ckpt["obs_dim"])).astype(np.float32) * 2.0
    test_obs = np.concatenate([random_obs, recorded_obs.astype(np.float32)])

    sections = contract_sections(env.cfg)
    contract = PolicyContract(
        task=ckpt["task"], control_rate_hz=env.cfg.control_rate_hz,
        action_latency_s=sections["latency"].mean_s, **sections,
        observation=env.slices, action=env.action_spec(),
        normalization={"in_graph": True, "formula": "(obs - mean) / (std + eps)", "eps": model.obs_normalizer.eps,
                       "mean": model.obs_normalizer.mean.tolist(), "std": model.obs_normalizer.var.sqrt().tolist()},
        provenance={
            "onnx_sha256": sha256_file(tmp_onnx), "opset": OPSET,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config_hash": ckpt["config_hash"], "source_revision": _source_revision(),
            "checkpoint": str(Path(checkpoint).resolve()), "run_id": ckpt.get("run_id"), "iteration": ckpt["iteration"],
            "train_time_s": ckpt["train_time_s"], "preset": env.cfg.vehicle.name,
            "task_cfg": config_to_dict(env.cfg), "parent": parent,
            # how it was trained (device, envs per process, processes), for information: never read back
            "run_cfg": ckpt.get("run_cfg"), "world_size": ckpt.get("world_size", 1),
        })
    os.replace(tmp_onnx, out_dir / "policy.onnx")
    save_contract(contract, out_dir / "policy.json")

    with torch.no_grad():
        expected = actor(torch.from_numpy(test_obs)).numpy()
    got = OnnxPolicy(out_dir)(test_obs)
    max_err = float(np.abs(got - expected).max())
    if max_err > 1e-5:
        raise RuntimeError(f"ONNX parity check failed: max |onnx - torch| = {max_err:.3g} > 1e-5")
    return out_dir, contract, max_err


def _record_observations(env, actor, steps: int = 50) -> np.ndarray:
    obs = env.reset()["policy"]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            out.append(obs.numpy().copy())
            obs = env.step(actor(obs))[0]["policy"]
    return np.concatenate(out)

