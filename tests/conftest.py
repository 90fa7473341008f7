"""Session-wide test setup: repo root importable, one torch thread, and one small trained hover policy
(checkpoints + exported policy.onnx/policy.json) shared by every test that needs one."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# Markers (registered in pyproject.toml). `make test` (CI) runs everything; `make test-fast` leaves out
# `ros` (real node processes over DDS) and `slow` (trains a policy, or runs for many seconds) for a quick
# development loop. Files are marked here by where they live and what they use, so a new test in
# tests/ros2 cannot forget its marker; a test marks itself `slow` explicitly when it is.
_ROS_PATHS = ("tests/ros2/", "tests/hil/test_hil_ros.py", "tests/test_deploy.py", "tests/bad_inputs/test_operate.py")
_SLOW_FIXTURES = {"trained_hover"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(REPO_ROOT).as_posix()
        if any(rel.startswith(p) for p in _ROS_PATHS):
            item.add_marker(pytest.mark.ros)
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny batches on a shared 2-core machine: one intra-op thread is several times faster than the
    # default pool, which fights the other processes for the cores.
    try:
        import torch
    except ImportError:  # the ROS 2 / calibration tests may run where torch is absent
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The budget is the smallest that reliably learns to hold a hover (no crash in training episodes and
# none in the 2 s closed-loop flights of tests/contract/): 512 envs x 30 iterations x 16 steps, seed 0,
# about 15 s here. Checkpoints every 10 iterations give tests/policies/test_ppo.py a learning curve.
TRAIN_NUM_ENVS = 512
TRAIN_ITERATIONS = 30
TRAIN_SAVE_INTERVAL = 10
TRAIN_SEED = 0


@dataclasses.dataclass(frozen=True)
class TrainedPolicy:
    task: str
    run_dir: Path
    checkpoints: tuple[Path, ...]  # model_*.pt, oldest first
    checkpoint: Path  # the last one, which was exported
    policy_dir: Path  # policy.onnx + policy.json
    parity_err: float  # max |onnx - torch| reported by export_policy
    ppo_cfg: object
    env_cfg: object


@pytest.fixture(scope="session")
def trained_hover(tmp_path_factory) -> TrainedPolicy:
    import torch

    from policies.export import export_policy
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained_hover")
    env = make_env("hover", num_envs=TRAIN_NUM_ENVS, seed=TRAIN_SEED)
    ppo_cfg = PPOCfg(num_iterations=TRAIN_ITERATIONS, save_interval=TRAIN_SAVE_INTERVAL, seed=TRAIN_SEED)
    last = train(env, "hover", ppo_cfg, root / "run", progress=False)
    assert last is not None and last.is_file(), f"train() returned {last!r}, not a checkpoint file"
    policy_dir, _contract, parity_err = export_policy(last, root / "policy")
    return TrainedPolicy(task="hover", run_dir=root / "run",
                         checkpoints=tuple(sorted((root / "run").glob("model_*.pt"))), checkpoint=last,
                         policy_dir=Path(policy_dir), parity_err=parity_err, ppo_cfg=ppo_cfg, env_cfg=env.cfg)
