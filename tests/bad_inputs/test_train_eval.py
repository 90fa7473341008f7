"""Bad inputs to the training side of the command line (train, export, eval, demo, finetune): each is
refused before any work with one `error:` line naming the problem and the fix, exit status 2, no
traceback, and nothing in the folder changed or created."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.bad_inputs.harness import REPO_ROOT, BadInput, check_bad_input, run_tether

FIXTURE_POLICY = REPO_ROOT / "tests" / "fixtures" / "hover_policy"
_CACHE: dict[str, Path] = {}


def _trained_run() -> Path:
    """One real run folder (2 envs x 1 iteration, a few seconds), trained once and copied per case."""
    if "run" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="tether_bad_inputs_"))
        proc = run_tether(["train", "hover", "--num-envs", "2", "--iterations", "1", "--run-dir", "run"], root)
        assert proc.returncode == 0, proc.stderr
        _CACHE["run"] = root / "run"
    return _CACHE["run"]


def with_run(scratch: Path) -> None:
    shutil.copytree(_trained_run(), scratch / "run")


def with_two_checkpoints(scratch: Path) -> None:
    with_run(scratch)
    shutil.copy(scratch / "run" / "model_00001.pt", scratch / "run" / "model_00002.pt")


def with_foreign_run(scratch: Path) -> None:
    """A run folder whose run.json names another run than its checkpoints carry (only stale ones left)."""
    with_run(scratch)
    (scratch / "run" / "run.json").write_text(json.dumps({"run_id": "0123456789ab", "task": "hover"}))


def with_text_file(name: str, text: str = "hello\n"):
    def setup(scratch: Path) -> None:
        (scratch / name).write_text(text)
    return setup


def with_folder(name: str, file: str = "keep.txt"):
    def setup(scratch: Path) -> None:
        (scratch / name).mkdir()
        (scratch / name / file).write_text("earlier work\n")
    return setup


def with_empty_folder(name: str):
    def setup(scratch: Path) -> None:
        (scratch / name).mkdir()
    return setup


def with_truncated_policy(scratch: Path) -> None:
    shutil.copytree(FIXTURE_POLICY, scratch / "policy")
    onnx = scratch / "policy" / "policy.onnx"
    onnx.write_bytes(onnx.read_bytes()[:500])


def _cuda_argv() -> list[str]:
    """A CUDA device this machine lacks: `cuda` on a CPU build, one past the last GPU where CUDA exists."""
    import torch

    device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    return ["train", "hover", "--num-envs", "2", "--iterations", "1", "--run-dir", "run", "--device", device]


P = str(FIXTURE_POLICY)
TRAIN = ("train", "hover", "--num-envs", "2", "--iterations", "1", "--run-dir", "run")

CASES = [
    # ---- train: config values (finite, in range, the right shape) and 0 as a value
    BadInput("train-nan-learning-rate", (*TRAIN, "--set", "ppo.learning_rate=.nan"), words=("learning_rate", "finite")),
    BadInput("train-nan-episode-length", (*TRAIN, "--set", "episode_length_s=.nan"), words=("episode_length_s",)),
    BadInput("train-nan-word-suggests-yaml", (*TRAIN, "--set", "episode_length_s=nan"), words=("episode_length_s", ".nan")),
    BadInput("train-inf-start-distance", (*TRAIN, "--set", "init_pos_m=.inf"), words=("init_pos_m", "finite")),
    BadInput("train-inf-inside-a-list", (*TRAIN, "--set", "goal_w=[0, 0, -.inf]"), words=("goal_w",)),
    BadInput("train-goal-with-two-values", (*TRAIN, "--set", "goal_w=[0,0]"), words=("goal_w", "3 values")),
    BadInput("train-randomization-range-of-one", (*TRAIN, "--set", "randomization={mass_scale: [0.9]}"),
             words=("mass_scale", "2 values")),
    BadInput("train-negative-learning-rate", (*TRAIN, "--set", "ppo.learning_rate=-0.001"), words=("learning_rate",)),
    BadInput("train-gamma-above-one", (*TRAIN, "--set", "ppo.gamma=1.5"), words=("gamma",)),
    BadInput("train-zero-minibatches", (*TRAIN, "--set", "ppo.num_minibatches=0"), words=("num_minibatches",)),
    BadInput("train-more-minibatches-than-samples", (*TRAIN, "--set", "ppo.num_minibatches=64"),
             words=("num_minibatches", "samples")),
    BadInput("train-empty-network", (*TRAIN, "--set", "ppo.actor_hidden=[]"), words=("actor_hidden",)),
    BadInput("train-zero-fine-position-scale", (*TRAIN, "--set", "position_fine_scale_m=0"),
             words=("position_fine_scale_m", "> 0")),
    BadInput("train-tolerance-beyond-bounds", (*TRAIN, "--set", "success_tol_m=3.0"),
             words=("success_tol_m", "max_distance_m")),
    BadInput("train-negative-start-speed", (*TRAIN, "--set", "init_lin_vel_m_s=-0.5"), words=("init_lin_vel_m_s",)),
    BadInput("train-zero-rate-gain", (*TRAIN, "--set", "rate_kp=[25, 0, 12]"), words=("rate_kp", "positive")),
    BadInput("train-unparseable-set-value", (*TRAIN, "--set", "goal_w=[0, 0,"), words=("--set", "yaml")),
    BadInput("train-zero-iterations", ("train", "hover", "--num-envs", "2", "--iterations", "0", "--run-dir", "run"),
             words=("--iterations", ">= 1")),
    BadInput("train-zero-envs", ("train", "hover", "--num-envs", "0", "--iterations", "1", "--run-dir", "run"),
             words=("--num-envs", ">= 1")),
    BadInput("train-zero-threads", (*TRAIN, "--threads", "0"), words=("--threads",)),
    BadInput("train-nan-calibration-k", (*TRAIN, "--calibration-k", "nan"), words=("--calibration-k",)),
    BadInput("train-unknown-task", ("train", "hoover", "--num-envs", "2", "--iterations", "1"), words=("hoover", "hover")),
    BadInput("train-config-file-missing", (*TRAIN, "--config", "nothere.yaml"), words=("--config", "nothere.yaml")),
    BadInput("train-config-not-a-mapping", (*TRAIN, "--config", "list.yaml"), words=("list.yaml", "mapping"),
             setup=with_text_file("list.yaml", "- 1\n- 2\n")),
    BadInput("train-calibration-missing", (*TRAIN, "--calibration", "unit.yaml"), words=("unit.yaml",)),
    # ---- train: devices
    BadInput("train-cuda-without-cuda", lambda s: _cuda_argv(), words=("cuda", "--device")),
    BadInput("train-unknown-device", (*TRAIN, "--device", "gpu"), words=("gpu", "cpu")),
    # ---- train: nothing replaced silently; --resume takes a run folder of the same task and action space
    BadInput("train-into-a-used-run-folder", TRAIN, words=("run", "--resume", "--force"), setup=with_run),
    BadInput("train-run-dir-is-a-file", ("train", "hover", "--num-envs", "2", "--iterations", "1", "--run-dir", "f.txt"),
             words=("f.txt", "file"), setup=with_text_file("f.txt")),
    BadInput("train-resume-missing-folder", ("train", "hover", "--resume", "gone", "--iterations", "2"),
             words=("--resume", "gone")),
    BadInput("train-resume-of-another-task", ("train", "waypoint", "--num-envs", "2", "--resume", "run", "--iterations",
                                              "2", "--run-dir", "new"), words=("hover", "waypoint"), setup=with_run),
    BadInput("train-resume-changes-action-space", ("train", "hover", "--num-envs", "2", "--resume", "run", "--iterations",
                                                   "2", "--run-dir", "new", "--set", "action_space=rotor"),
             words=("action_space", "rotor", "ctbr"), setup=with_run),
    BadInput("train-resume-changes-network", ("train", "hover", "--num-envs", "2", "--resume", "run", "--iterations", "2",
                                              "--set", "ppo.actor_hidden=[16]"), words=("actor_hidden",), setup=with_run),
    BadInput("train-resume-a-finished-run", ("train", "hover", "--num-envs", "2", "--resume", "run", "--iterations", "1"),
             words=("iteration", "--iterations"), setup=with_run),
    BadInput("train-resume-a-text-file", ("train", "hover", "--num-envs", "2", "--resume", "notes.pt", "--iterations", "2",
                                          "--run-dir", "new"), words=("notes.pt",), setup=with_text_file("notes.pt")),
    BadInput("train-resume-would-overwrite-a-later-checkpoint", ("train", "hover", "--num-envs", "2", "--resume",
                                                                 "run/model_00001.pt", "--iterations", "2"),
             words=("overwrite", "model_00002.pt"), setup=with_two_checkpoints),
    BadInput("train-resume-with-force", ("train", "hover", "--num-envs", "2", "--resume", "run", "--iterations", "3",
                                         "--force"), words=("--force", "--resume"), setup=with_run),
    # ---- export
    BadInput("export-into-a-used-folder", ("export", "run", "--out", "policy"), words=("policy", "--force"),
             setup=lambda s: (with_run(s), with_folder("policy", "policy.json")(s))),
    BadInput("export-out-is-a-file", ("export", "run", "--out", "out.onnx"), words=("out.onnx", "file"),
             setup=lambda s: (with_run(s), with_text_file("out.onnx")(s))),
    BadInput("export-missing-checkpoint", ("export", "run/model_00099.pt", "--out", "policy"),
             words=("model_00099.pt", "does not exist")),
    BadInput("export-missing-run-folder", ("export", "runs/gone", "--out", "policy"), words=("runs/gone",)),
    BadInput("export-run-folder-without-checkpoints", ("export", "empty", "--out", "policy"), words=("model_*.pt",),
             setup=with_empty_folder("empty")),
    BadInput("export-only-checkpoints-of-another-run", ("export", "run", "--out", "policy"),
             words=("another run", "0123456789ab"), setup=with_foreign_run),
    BadInput("export-a-text-file", ("export", "six.pt", "--out", "policy"), words=("six.pt", "checkpoint"),
             setup=with_text_file("six.pt")),
    # ---- eval
    BadInput("eval-missing-policy-folder", ("eval", "--policy", "policies/gone", "--out", "ev"), words=("policies/gone",)),
    BadInput("eval-folder-without-contract", ("eval", "--policy", "empty", "--out", "ev"), words=("policy.json",),
             setup=with_empty_folder("empty")),
    BadInput("eval-truncated-onnx", ("eval", "--policy", "policy", "--out", "ev"), words=("policy.onnx",),
             setup=with_truncated_policy),
    BadInput("eval-zero-starts", ("eval", "--policy", P, "--starts", "0", "--out", "ev"), words=("--starts",)),
    BadInput("eval-negative-starts", ("eval", "--policy", P, "--starts", "-5", "--out", "ev"), words=("--starts",)),
    BadInput("eval-starts-not-a-number", ("eval", "--policy", P, "--starts", "many", "--out", "ev"), words=("--starts",)),
    BadInput("eval-into-a-used-folder", ("eval", "--policy", P, "--out", "ev"), words=("ev", "--force"),
             setup=with_folder("ev", "report.json")),
    BadInput("eval-out-is-a-file", ("eval", "--policy", P, "--out", "ev.json"), words=("ev.json", "file"),
             setup=with_text_file("ev.json")),
    BadInput("eval-unknown-simulator", ("eval", "--policy", P, "--sim", "gazebo", "--out", "ev"), words=("gazebo",)),
    # ---- demo
    BadInput("demo-zero-iterations", ("demo", "--iterations", "0", "--out", "d"), words=("--iterations",)),
    BadInput("demo-zero-envs", ("demo", "--num-envs", "0", "--out", "d"), words=("--num-envs",)),
    BadInput("demo-zero-rounds", ("demo", "--hil-rounds", "0", "--out", "d"), words=("--hil-rounds",)),
    BadInput("demo-zero-episodes", ("demo", "--hil-episodes", "0", "--out", "d"), words=("--hil-episodes",)),
    BadInput("demo-into-a-used-folder", ("demo", "--out", "d"), words=("d", "--force"), setup=with_folder("d")),
    BadInput("demo-out-is-a-file", ("demo", "--out", "d.txt"), words=("d.txt", "file"), setup=with_text_file("d.txt")),
    # ---- finetune
    BadInput("finetune-logs-a-text-file", ("finetune", "--policy", P, "--logs", "log.mcap", "--out", "child"),
             words=("log.mcap", "MCAP"), setup=with_text_file("log.mcap", "hello\n")),
    BadInput("finetune-missing-logs", ("finetune", "--policy", P, "--logs", "bags/gone", "--out", "child"),
             words=("bags/gone",)),
    BadInput("finetune-bag-folder-without-mcap", ("finetune", "--policy", P, "--logs", "bag", "--out", "child"),
             words=("bag", ".mcap"), setup=with_folder("bag", "metadata.yaml")),
    BadInput("finetune-policy-without-contract", ("finetune", "--policy", "empty", "--logs", "bag", "--out", "child"),
             words=("policy.json",), setup=with_empty_folder("empty")),
    BadInput("finetune-into-a-used-folder", ("finetune", "--policy", P, "--logs", "bag", "--out", "child"),
             words=("child", "--force"), setup=with_folder("child")),
    BadInput("finetune-out-is-a-file", ("finetune", "--policy", P, "--logs", "bag", "--out", "child.txt"),
             words=("child.txt",), setup=with_text_file("child.txt")),
    BadInput("finetune-zero-updates", ("finetune", "--policy", P, "--logs", "bag", "--out", "child", "--updates", "0"),
             words=("--updates",)),
    BadInput("finetune-nan-goal", ("finetune", "--policy", P, "--logs", "bag", "--out", "child", "--goal", "nan", "0", "1"),
             words=("--goal",)),
]


# Every one of these is the user's mistake: exit status 2 (tether.errors.EXIT_USAGE), nothing done.
CASES = [c if c.exit_code is not None else dataclasses.replace(c, exit_code=2) for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
