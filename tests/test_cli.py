"""`tether` command line: mistakes in user input end with one clear line naming what is wrong, before
any work (or any file) is done."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tether_app.cli import main
from tether.errors import EXIT_ACCEPTANCE

REPO_ROOT = Path(__file__).resolve().parents[1]


# If a check is missing, `tether train` would go on and train a default run (4096 envs x 150
# iterations, many minutes): every train invocation here is capped so that a regression fails fast.
CAP = ["--num-envs", "2", "--iterations", "1"]


@pytest.fixture
def fails_with(capsys):
    """Run `tether argv` in-process; it must fail (non-zero status) with exactly one `error:` line on
    stderr (not status 0, not a traceback). Returns that line."""
    def run(argv: list[str]) -> str:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors, and `raise SystemExit("error: ...")` of other stages
            code = e.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
        err = capsys.readouterr().err
        assert code not in (0, None), f"expected a failure, got exit status {code!r}"
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, f"expected one error line on stderr, got:\n{err}"
        return lines[0]
    return run


@pytest.mark.parametrize("argv,words", [
    (["--set", "mass_kgs=1.0"], ["mass_kgs", "unknown"]),
    (["--set", "ppo.lr=0.1"], ["lr", "unknown"]),
    (["--set", "randomization={mass_scal: [0.9, 1.1]}"], ["mass_scal"]),
    (["--set", "substeps=four"], ["substeps", "int"]),
    (["--set", "init_tilt_rad"], ["key=value"]),
])
def test_train_rejects_unknown_or_mistyped_keys(tmp_path, argv, words, fails_with):
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
def test_train_rejects_values_in_the_wrong_unit(tmp_path, argv, words, fails_with):
    run_dir = tmp_path / "run"
    msg = fails_with(["train", "hover", *CAP, "--run-dir", str(run_dir), *argv])
    for w in words:
        assert w in msg, f"{msg!r} should mention {w!r}"
    assert not run_dir.exists()


def test_train_rejects_unknown_task(tmp_path, fails_with):
    msg = fails_with(["train", "hoover", *CAP, "--run-dir", str(tmp_path / "run")])
    assert "hoover" in msg and "hover" in msg.replace("'hoover'", "")


def test_export_of_a_missing_checkpoint(tmp_path, fails_with):
    missing = tmp_path / "no_such_run" / "model_00010.pt"
    out = tmp_path / "out"
    msg = fails_with(["export", str(missing), "--out", str(out)])
    assert str(missing) in msg and "does not exist" in msg
    assert not out.exists(), "a failed export must not leave an output directory behind"

    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    msg = fails_with(["export", str(empty_run), "--out", str(out)])
    assert str(empty_run) in msg and "model_*.pt" in msg


def test_errors_reach_the_shell_as_one_line_and_status_2(tmp_path):
    """As a real process: exit status 2 (a user error), the message on stderr, no traceback."""
    missing = tmp_path / "missing.pt"
    proc = subprocess.run([sys.executable, "-m", "tether_app.cli", "export", str(missing), "--out", str(tmp_path / "o")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "pybullet build time" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {missing} does not exist; "), proc.stderr


def test_finetune_rejects_a_negative_simulator_stage(tmp_path, fails_with):
    out = tmp_path / "child"
    msg = fails_with(["finetune", "--policy", str(REPO_ROOT / "tests" / "fixtures" / "hover_policy"),
                      "--logs", str(tmp_path / "none"), "--out", str(out), "--sim-iterations", "-1"])
    assert "--sim-iterations" in msg and not out.exists()


# ----------------------------------------------------------------------- nothing replaced silently

FIXTURE_POLICY = REPO_ROOT / "tests" / "fixtures" / "hover_policy"
TINY = ["--num-envs", "2", "--set", "ppo.save_interval=1"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_refuses_a_used_run_folder_and_force_leaves_nothing_of_the_old_run(tmp_path, fails_with, capsys):
    run = tmp_path / "run"
    assert main(["train", "hover", *TINY, "--iterations", "3", "--run-dir", str(run)]) == 0
    assert [p.name for p in sorted(run.glob("model_*.pt"))] == ["model_00001.pt", "model_00002.pt", "model_00003.pt"]
    before = tree(run)
    msg = fails_with(["train", "hover", *TINY, "--iterations", "1", "--run-dir", str(run)])
    assert "--resume" in msg and "--force" in msg and str(run) in msg
    assert tree(run) == before, "a refused train changed its run folder"

    old_id = json.loads((run / "run.json").read_text())["run_id"]
    assert main(["train", "hover", *TINY, "--iterations", "1", "--run-dir", str(run), "--force"]) == 0
    assert [p.name for p in run.glob("model_*.pt")] == ["model_00001.pt"], "checkpoints of the old run stayed"
    assert len(list((run / "tb").iterdir())) == 1, "two TensorBoard histories in one run folder"
    new_id = json.loads((run / "run.json").read_text())["run_id"]
    assert new_id != old_id and torch.load(run / "model_00001.pt", weights_only=True)["run_id"] == new_id


def test_resume_takes_a_run_folder_and_continues_its_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "hover", *TINY, "--iterations", "2", "--run-dir", str(run)]) == 0
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert main(["train", "hover", *TINY, "--iterations", "3", "--resume", str(run)]) == 0
    last = torch.load(run / "model_00003.pt", weights_only=True)
    assert last["iteration"] == 3 and last["run_id"] == run_id
    assert last["global_step"] == 3 * 2 * 16, "the resumed run did not continue from iteration 2"


def test_export_takes_the_latest_checkpoint_of_the_folder_s_own_run(tmp_path, fails_with, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    assert main(["train", "hover", *TINY, "--iterations", "4", "--run-dir", str(old)]) == 0
    assert main(["train", "hover", *TINY, "--iterations", "2", "--run-dir", str(new)]) == 0
    # what an older run leaves behind: a higher-numbered checkpoint of another run in the folder
    shutil.copy(old / "model_00004.pt", new / "model_00009.pt")
    capsys.readouterr()
    out = tmp_path / "policy"
    assert main(["export", str(new), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"checkpoint: {new / 'model_00002.pt'} (iteration 2, run " in said and "model_00009.pt" in said
    contract = json.loads((out / "policy.json").read_text())
    assert contract["provenance"]["iteration"] == 2
    assert contract["provenance"]["run_id"] == json.loads((new / "run.json").read_text())["run_id"]

    before = tree(out)
    msg = fails_with(["export", str(old), "--out", str(out)])
    assert "--force" in msg and tree(out) == before
    assert main(["export", str(old), "--out", str(out), "--force"]) == 0
    assert json.loads((out / "policy.json").read_text())["provenance"]["iteration"] == 4


# ------------------------------------------------------------------------------------ eval, demo

def test_eval_writes_report_and_plot_honours_starts_and_seed(tmp_path, fails_with):
    out = tmp_path / "eval"
    assert main(["eval", "--policy", str(FIXTURE_POLICY), "--starts", "3", "--seed", "7", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "eval.png").stat().st_size > 10_000
    pb = report["policies"][0]["pybullet"]
    assert report["task"] == "hover" and report["acceptance"]["num_starts"] == 3 and report["acceptance"]["seed"] == 7
    assert pb["num_starts"] == 3 and len(pb["per_start"]["success"]) == 3 and report["passed"] is True

    before = tree(out)
    msg = fails_with(["eval", "--policy", str(FIXTURE_POLICY), "--starts", "3", "--out", str(out)])
    assert "--force" in msg and tree(out) == before
    assert main(["eval", "--policy", str(FIXTURE_POLICY), "--starts", "4", "--seed", "8", "--out", str(out),
                 "--force"]) == 0
    again = json.loads((out / "report.json").read_text())["policies"][0]["pybullet"]
    assert len(again["per_start"]["success"]) == 4
    assert again["per_start"]["settle_time_s"][:3] != pb["per_start"]["settle_time_s"], "--seed changed nothing"


def test_eval_exits_3_when_its_acceptance_fails(tmp_path, capsys):
    run, policy, out = tmp_path / "run", tmp_path / "policy", tmp_path / "eval"
    assert main(["train", "hover", "--num-envs", "2", "--iterations", "1", "--run-dir", str(run)]) == 0
    assert main(["export", str(run), "--out", str(policy)]) == 0
    capsys.readouterr()
    assert main(["eval", "--policy", str(policy), "--starts", "3", "--out", str(out)]) == EXIT_ACCEPTANCE
    said = capsys.readouterr().out
    assert "FAIL" in said and json.loads((out / "report.json").read_text())["passed"] is False


def test_each_demo_gets_a_fresh_folder_and_latest_points_to_the_last(tmp_path):
    from tether_app.cli import _fresh_demo_dir

    first, second = _fresh_demo_dir(tmp_path), _fresh_demo_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert (tmp_path / "latest").resolve() == second.resolve()


def test_help_shows_every_option_with_its_default():
    from tether_app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("train", "export", "eval", "demo", "finetune"):
        for action in sub.choices[name]._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"`tether {name}` option {action.option_strings or action.dest} has no help"
    proc = subprocess.run([sys.executable, "-m", "tether_app.cli", "train", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "(default: 0)" in text and "(default: 1)" in text, proc.stdout
