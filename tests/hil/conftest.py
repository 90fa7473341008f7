"""Fixtures for the human-in-the-loop tests: a hover parent policy and corrected-flight logs.

The parent is the committed tests/fixtures/hover_policy when present, else a hover policy trained here
(PPO, 512 envs, 80 iterations: ~40 s on 2 shared cores). Logs are written by policies.hil.flight (the
runner, operator and twin logic in one process, the recorder's BagWriter), except in test_hil_ros.py,
which records with the real recorder node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
for p in (str(REPO), str(REPO / "ros2_ws" / "src" / "tether_deploy"), str(REPO / "tests" / "ros2")):
    if p not in sys.path:
        sys.path.insert(0, p)

HOVER_FIXTURE = REPO / "tests" / "fixtures" / "hover_policy"


@pytest.fixture(scope="session")
def hover_parent(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    if (HOVER_FIXTURE / "policy.onnx").is_file():
        return HOVER_FIXTURE
    from policies.export import export_policy
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    work = tmp_path_factory.mktemp("hover_parent")
    ckpt = train(make_env("hover", num_envs=512), "hover", PPOCfg(num_iterations=80, save_interval=1000),
                 work / "run", progress=False)
    export_policy(ckpt, work / "policy")
    return work / "policy"


@pytest.fixture(scope="session")
def perturbed_twin(hover_parent):
    from hardware.twin import TwinConfig, WeakMotor
    from hardware.twin import with_policy_rate_gains
    from tether.contract import load_policy_dir

    _, contract = load_policy_dir(hover_parent)
    return with_policy_rate_gains(TwinConfig(weak_motor=WeakMotor(index=2, gain=0.7)), contract.action)


@pytest.fixture(scope="session")
def corrected_logs(hover_parent, perturbed_twin, tmp_path_factory) -> list[Path]:
    """Four corrected 11 s episodes of the parent on the weak-motor twin (seeded)."""
    from policies.hil.flight import EpisodeCfg, episode_starts, fly_corrected_episode
    from policies.hil.loop import _operator_cfg
    from tether.runtime import OnnxPolicy
    from tether_deploy.operator_core import ScriptedOperator

    policy = OnnxPolicy(hover_parent)
    operator = ScriptedOperator(_operator_cfg(policy.contract))
    out = tmp_path_factory.mktemp("logs")
    bags = []
    for k, start in enumerate(episode_starts(4, EpisodeCfg(), seed=7)):
        bag = out / f"episode{k}"
        fly_corrected_episode(policy, str(hover_parent), perturbed_twin, operator, start, EpisodeCfg(), bag)
        bags.append(bag)
    return bags
