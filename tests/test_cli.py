"""`tether` command line: mistakes in user input end with one clear line naming what is wrong, before
any work (or any file) is done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


# If a check is missing, `tether train` would go on and train a default run (4096 envs x 150
# iterations, many minutes): every train invocation here is capped so that a regression fails fast.
CAP = ["--num-envs", "2", "--iterations", "1"]


def fails_with(argv: list[str]) -> str:
    """Run `tether argv` in-process; it must exit with an error message (not status 0, not a traceback)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    code = e.value.code
    assert isinstance(code, str), f"expected an error message, got exit status {code!r}"
    assert code.startswith("error:") and "\n" not in code.strip(), code
    return code


@pytest.mark.parametrize("argv,words", [
    (["--set", "mass_kgs=1.0"], ["mass_kgs", "unknown"]),
    (["--set", "ppo.lr=0.1"], ["lr", "unknown"]),
    (["--set", "randomization={mass_scal: [0.9, 1.1]}"], ["mass_scal"]),
    (["--set", "substeps=four"], ["substeps", "int"]),
    (["--set", "init_tilt_rad"], ["key=value"]),
])
def test_train_rejects_unknown_or_mistyped_keys(tmp_path, argv, words):
    run_dir = tmp_path / "run"
    msg = fails_with(["train", "hover", *CAP, "--run-dir", str(run_dir), *argv])
    for w in words:
        assert w in msg, f"{msg!r} should mention {w!r}"
    assert not run_dir.exists(), "a rejected command must not create its run directory"


@pytest.mark.parametrize("argv,words", [
    (["--set", "init_tilt_rad=200"], ["init_tilt_rad", "200", "rad"]),  # degrees by mistake
    (["--set", "randomization={latency_s: [0, 20]}"], ["latency_s", "seconds"]),  # milliseconds by mistake
    (["--set", "control_rate_hz=0.5"], ["control_rate_hz", "Hz"]),
    # a time limit <= 0 makes every step a truncation: training on it is silent garbage
    (["--set", "episode_length_s=-5"], ["episode_length_s"]),
    (["--set", "episode_length_s=0"], ["episode_length_s"]),
])
def test_train_rejects_values_in_the_wrong_unit(tmp_path, argv, words):
    run_dir = tmp_path / "run"
    msg = fails_with(["train", "hover", *CAP, "--run-dir", str(run_dir), *argv])
    for w in words:
        assert w in msg, f"{msg!r} should mention {w!r}"
    assert not run_dir.exists()


def test_train_rejects_unknown_task(tmp_path):
    msg = fails_with(["train", "hoover", *CAP, "--run-dir", str(tmp_path / "run")])
    assert "hoover" in msg and "hover" in msg.replace("'hoover'", "")


def test_export_of_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "no_such_run" / "model_00010.pt"
    out = tmp_path / "out"
    msg = fails_with(["export", str(missing), "--out", str(out)])
    assert str(missing) in msg and "does not exist" in msg
    assert not out.exists(), "a failed export must not leave an output directory behind"

    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    msg = fails_with(["export", str(empty_run), "--out", str(out)])
    assert str(empty_run) in msg and "model_*.pt" in msg


def test_errors_reach_the_shell_as_one_line_and_status_1(tmp_path):
    """As a real process: exit status 1, the message on stderr, no traceback."""
    missing = tmp_path / "missing.pt"
    proc = subprocess.run([sys.executable, "-m", "tether.cli", "export", str(missing), "--out", str(tmp_path / "o")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "pybullet build time" not in line]
    assert lines == [f"error: checkpoint {missing} does not exist"], proc.stderr


def test_finetune_rejects_a_negative_simulator_stage(tmp_path):
    out = tmp_path / "child"
    msg = fails_with(["finetune", "--policy", str(REPO_ROOT / "tests" / "fixtures" / "hover_policy"),
                      "--logs", str(tmp_path / "none"), "--out", str(out), "--sim-iterations", "-1"])
    assert "--sim-iterations" in msg and not out.exists()
