"""Data-parallel scaling of `tether train` (issue 13): PPO env-steps/s of N ranks against N x one rank,
each rank with the same number of envs. Scaling efficiency = rate(N ranks) / (N x rate(1 rank)).

The rate is taken between two checkpoints (iteration 2 and the last), from the training time they record,
so the first iterations (compiles, warm-up) are left out. Every row records the 1-min load average before
and after it: on a shared machine the other processes take cores from the ranks, and with N ranks on N
cores nothing is left for them.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.checkpoint import load_checkpoint  # noqa: E402


def run(nproc: int, args, work: Path) -> dict:
    run_dir = work / f"ranks{nproc}"
    cmd = [sys.executable, "-m", "tether_app.cli", "train", args.task, "--nproc", str(nproc), "--num-envs",
           str(args.num_envs), "--iterations", str(args.iterations), "--device", args.device, "--physics",
           args.physics, "--set", "ppo.save_interval=2", "--run-dir", str(run_dir)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    a = load_checkpoint(run_dir / "model_00002.pt")
    b = load_checkpoint(run_dir / f"model_{args.iterations:05d}.pt")
    rate = (b["global_step"] - a["global_step"]) / (b["train_time_s"] - a["train_time_s"])
    row = {"nproc": nproc, "num_envs_per_rank": args.num_envs, "env_steps_per_s": rate,
           "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    print(f"  {nproc} rank(s) x {args.num_envs} envs: {rate / 1e3:8.1f} k env-steps/s  (load {load_before:.2f} -> "
          f"{row['load_1min_after']:.2f})", flush=True)
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
    if args.iterations < 4 or args.iterations % 2:
        raise SystemExit("error: --iterations must be even and >= 4 (checkpoints every 2)")
    print(f"bench_ddp: {os.cpu_count()} CPU cores, device {args.device}, task {args.task}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tether-bench-ddp-") as tmp:
        rows = [run(n, args, Path(tmp)) for n in args.nproc]
    one = next((r["env_steps_per_s"] for r in rows if r["nproc"] == 1), None)
    for r in rows:
        r["scaling_efficiency"] = None if one is None else r["env_steps_per_s"] / (r["nproc"] * one)
        if one is not None and r["nproc"] > 1:
            print(f"  scaling efficiency at {r['nproc']} ranks: {r['scaling_efficiency']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_cores": os.cpu_count(), "device": args.device, "task": args.task,
                               "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
