"""Data-parallel PPO on CPU with gloo and two processes (issue 13), each test under a hard timeout: the
ranks stay bit-identical, a batch split over two ranks gives the one-process gradient and normalizer
statistics, a rank that dies ends the job with one error line, and a run resumes with another number
of ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from policies import distributed as ddp
from policies.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
HARD_TIMEOUT_S = 300  # each launch; a hang (a collective waiting for a dead peer) fails the test, never blocks it
TRAIN = [sys.executable, "-m", "tether_app.cli", "train", "hover", "--num-envs", "16", "--physics", "eager",
         "--set", "ppo.num_steps=8", "--set", "ppo.num_minibatches=2", "--set", "ppo.update_epochs=1",
         "--set", "ppo.save_interval=1"]


def _workers(mode: str, out: Path) -> list[dict]:
    status, why = _with_timeout(lambda: ddp.launch_local([str(WORKER), mode, str(out)], 2))
    assert status == 0, why
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _with_timeout(fn):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=HARD_TIMEOUT_S)


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TETHER_DIST_TIMEOUT_S": "60"}
    return subprocess.run(TRAIN + args, capture_output=True, text=True, timeout=HARD_TIMEOUT_S, env=env, **kw)


def test_backend_is_chosen_by_device():
    assert ddp.backend_for("cpu") == "gloo" and ddp.backend_for("cuda:1") == "nccl"
    assert ddp.rank_device("cuda", 3) == "cuda:3" and ddp.rank_device("cpu", 3) == "cpu"
    assert ddp.rank_seed(7, 0) == 7 and ddp.rank_seed(7, 1) != 7


def test_split_batch_gives_the_full_batch_gradient_and_statistics(tmp_path):
    for r in _workers("merge", tmp_path):
        assert r["backend"] == "gloo" and r["world_size"] == 2
        assert r["grad_scale"] > 1e-3  # not vacuous: there is a gradient to compare
        assert r["grad_err"] <= 1e-6 * max(1.0, r["grad_scale"]), r
        assert r["norm_err"] < 1e-4 and r["count"] == r["count_one"] == 64, r
        assert r["sync_error"] is not None and "diverged" in r["sync_error"], r  # one ulp on rank 1 is seen
        # statistics summed in the gradients' all_reduce; the already averaged gradients averaged again stay put
        assert r["extra"] == [3.0, 1.0] and r["grad_err_after_extra"] <= 1e-6 * max(1.0, r["grad_scale"]), r
        assert r["minibatch_sums_shape"] == [3, 3] and r["minibatch_sums_err"] < 1e-4, r


def test_ranks_stay_bit_identical_through_training(tmp_path):
    """train() compares every rank's weights with rank 0's, bit for bit, at every checkpoint (3 here)."""
    ranks = _workers("train", tmp_path)
    assert all(r["in_sync_checks"] == 3 for r in ranks)
    # per iteration: one normalizer gather per rollout step, one all_reduce per minibatch step (gradients
    # with the KL and clip sums), one for the advantage statistics of the whole update (was 2 per minibatch)
    for r in ranks:
        per_iteration = r["num_steps"] + r["minibatch_steps"] + 1
        assert r["collectives"]["all_gather of observation statistics"] == 3 * r["num_steps"], r
        assert r["collectives"]["all_gather of observation statistics"] + r["collectives"]["all_reduce"] \
            == 3 * per_iteration, r
    ckpt = load_checkpoint(ranks[0]["checkpoint"])
    assert ckpt["iteration"] == 3 and ckpt["world_size"] == 2
    assert ckpt["global_step"] == 3 * 2 * 16 * 8  # iterations x ranks x envs x steps
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model_00001.pt", "model_00002.pt",
                                                                     "model_00003.pt", "run.json"]


def test_resume_with_another_number_of_ranks(tmp_path):
    run = tmp_path / "run"
    first = _cli(["--nproc", "2", "--iterations", "2", "--run-dir", str(run)])
    assert first.returncode == 0, first.stderr[-2000:]
    assert load_checkpoint(run / "model_00002.pt")["world_size"] == 2
    one = _cli(["--resume", str(run), "--iterations", "3"])
    assert one.returncode == 0, one.stderr[-2000:]
    again = _cli(["--resume", str(run), "--iterations", "4", "--nproc", "2"])
    assert again.returncode == 0, again.stderr[-2000:]
    c3, c4 = load_checkpoint(run / "model_00003.pt"), load_checkpoint(run / "model_00004.pt")
    assert (c3["world_size"], c4["world_size"]) == (1, 2)
    assert c4["global_step"] == c3["global_step"] + 2 * 16 * 8 and c4["run_id"] == c3["run_id"]


def test_a_rank_that_dies_ends_the_job_with_one_error_line(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "TETHER_DIST_TIMEOUT_S": "60"}
    launcher = subprocess.Popen(TRAIN + ["--nproc", "2", "--iterations", "100000", "--run-dir", str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + HARD_TIMEOUT_S
        while not (run / "model_00001.pt").exists():
            assert launcher.poll() is None, launcher.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint from the two ranks"
            time.sleep(0.2)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[1]), signal.SIGKILL)  # rank 1
        killed_at = time.monotonic()
        _, stderr = launcher.communicate(timeout=HARD_TIMEOUT_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors and "rank 1 of 2 stopped (killed by SIGKILL)" in errors[-1] and "--resume" in errors[-1], stderr[-2000:]
    assert "Traceback" not in stderr
    # rank 0 was stopped too, and the run resumes from its last checkpoint on one rank
    assert not Path(f"/proc/{children[0]}").exists() or "zombie" in Path(f"/proc/{children[0]}/status").read_text()
    print(f"job ended {time.monotonic() - killed_at:.1f} s after the kill")
    last = max(int(p.stem.split("_")[1]) for p in run.glob("model_*.pt"))
    resumed = _cli(["--resume", str(run), "--iterations", str(last + 1)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run / f"model_{last + 1:05d}.pt")["iteration"] == last + 1
