"""Data-parallel scaling of `tether train` (issue 13): PPO env-steps/s of N ranks against N x one rank,
each rank with the same number of envs. Scaling efficiency = rate(N ranks) / (N x rate(1 rank)).

The rate is taken between two checkpoints (iteration 2 and the last), from the training time they record,
so the first iterations (compiles, warm-up) are left out. Every row records the 1-min load average before
and after it: on a shared machine the other processes take cores from the ranks, and with N ranks on N
cores nothing is left for them.

The CPU time of all ranks (from /proc, Linux) between checkpoint 2 and checkpoint last-2 gives two figures
the load does not move much: CPU-seconds per env-step (``cpu_us_per_env_step``; the data-parallel overhead
is the rise over one rank: collectives, waiting) and the cores the ranks held (``cores_held`` = CPU-seconds
per wall second): on a machine shared with other work, N ranks get fewer than N cores, which bounds the
wall-clock efficiency whatever the code does (``cpu_efficiency`` is the efficiency per CPU-second).

    python bench/bench_ddp.py                       # 1 and 2 ranks, 1024 envs each, cpu
    python bench/bench_ddp.py --device cuda --nproc 1 2 4 --num-envs 65536
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.checkpoint import load_checkpoint  # noqa: E402


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of process ``root`` and its living descendants (Linux /proc)."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        parent[int(entry)], ticks[int(entry)] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout_s: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def run(nproc: int, args, work: Path) -> dict:
    run_dir = work / f"ranks{nproc}"
    cmd = [sys.executable, "-m", "tether_app.cli", "train", args.task, "--nproc", str(nproc), "--num-envs",
           str(args.num_envs), "--iterations", str(args.iterations), "--device", args.device, "--physics",
           args.physics, "--set", "ppo.save_interval=2", "--run-dir", str(run_dir)]
    load_before = os.getloadavg()[0]
    first, near_last = run_dir / "model_00002.pt", run_dir / f"model_{args.iterations - 2:05d}.pt"
    with open(work / f"ranks{nproc}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _wait_for_file(first, proc)
        cpu_a, wall_a = _tree_cpu_s(proc.pid), time.perf_counter()
        _wait_for_file(near_last, proc)
        cpu_b, wall_b = _tree_cpu_s(proc.pid), time.perf_counter()
        status = proc.wait(timeout=3600)
    if status != 0:
        tail = (work / f"ranks{nproc}.log").read_text().strip().splitlines()[-1:]
        raise SystemExit(f"error: {' '.join(cmd)} failed: {tail}")
    a = load_checkpoint(first)
    b = load_checkpoint(run_dir / f"model_{args.iterations:05d}.pt")
    rate = (b["global_step"] - a["global_step"]) / (b["train_time_s"] - a["train_time_s"])
    steps_ab = load_checkpoint(near_last)["global_step"] - a["global_step"]
    row = {"nproc": nproc, "num_envs_per_rank": args.num_envs, "env_steps_per_s": rate,
           "cpu_us_per_env_step": 1e6 * (cpu_b - cpu_a) / steps_ab,
           "cores_held": (cpu_b - cpu_a) / max(1e-9, wall_b - wall_a),
           "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    print(f"  {nproc} rank(s) x {args.num_envs} envs: {rate / 1e3:8.1f} k env-steps/s, "
          f"{row['cpu_us_per_env_step']:.2f} CPU-us per env-step, {row['cores_held']:.2f} cores held  "
          f"(load {load_before:.2f} -> {row['load_1min_after']:.2f})", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hover")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--num-envs", type=int, default=1024, help="envs per rank")
    ap.add_argument("--iterations", type=int, default=12, help="even; the rate is over iterations 3..last")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--physics", default="auto")
    ap.add_argument("--out", default="artifacts/bench/bench_ddp.json")
    args = ap.parse_args(argv)
    if args.iterations < 6 or args.iterations % 2:
        raise SystemExit("error: --iterations must be even and >= 6 (checkpoints every 2)")
    print(f"bench_ddp: {os.cpu_count()} CPU cores, device {args.device}, task {args.task}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tether-bench-ddp-") as tmp:
        rows = [run(n, args, Path(tmp)) for n in args.nproc]
    one = next((r["env_steps_per_s"] for r in rows if r["nproc"] == 1), None)
    one_cpu = next((r["cpu_us_per_env_step"] for r in rows if r["nproc"] == 1), None)
    one_cores = next((r["cores_held"] for r in rows if r["nproc"] == 1), None)
    for r in rows:
        r["scaling_efficiency"] = None if one is None else r["env_steps_per_s"] / (r["nproc"] * one)
        r["cpu_efficiency"] = None if one is None else one_cpu / r["cpu_us_per_env_step"]
        if one is not None and r["nproc"] > 1:
            print(f"  scaling efficiency at {r['nproc']} ranks: {r['scaling_efficiency']:.2f} wall-clock, "
                  f"{r['cpu_efficiency']:.2f} per CPU-second ({r['cores_held']:.2f} cores held vs "
                  f"{r['nproc']} x {one_cores:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_cores": os.cpu_count(), "device": args.device, "task": args.task,
                               "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
