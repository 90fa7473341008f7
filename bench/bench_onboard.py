"""Cost per call of the onboard C policy (policies/export_c.py, compiled -O2) beside onnxruntime's
per-call latency on the same policy and the same observations. Prints figures, never pass/fail.

The C is timed inside a small C program (clock_gettime CLOCK_MONOTONIC): blocks of one call per
observation (ns/call = block time / calls), and each call timed alone for the distribution (those
include the ~20-30 ns of the clock read). onnxruntime is timed from Python, one observation per call,
as the runner calls it: the raw ``session.run`` and tether.runtime.OnnxPolicy (with its clip).

    python bench/bench_onboard.py                          # the tests' fixture hover policy
    python bench/bench_onboard.py --policy artifacts/.../policy --calls 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "tether_policy.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb");
    long blocks = atol(argv[2]), n, k, b;
    float *obs, act[TETHER_POLICY_ACTION_DIM];
    volatile float sink = 0.0f;
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    n = ftell(f) / (long)(sizeof(float) * TETHER_POLICY_OBS_DIM);
    fseek(f, 0, SEEK_SET);
    obs = malloc(sizeof(float) * TETHER_POLICY_OBS_DIM * n);
    if (fread(obs, sizeof(float) * TETHER_POLICY_OBS_DIM, n, f) != (size_t)n) return 2;
    fclose(f);
    for (b = 0; b < blocks; ++b) {            /* blocks: mean ns per call */
        double t0 = now_ns();
        for (k = 0; k < n; ++k) {
            if (tether_policy_step(obs + k * TETHER_POLICY_OBS_DIM, act) != 0) return 3;
            sink += act[0];
        }
        printf("block %.3f\n", (now_ns() - t0) / n);
    }
    for (k = 0; k < n; ++k) {                 /* each call alone: the distribution */
        double t0 = now_ns();
        tether_policy_step(obs + k * TETHER_POLICY_OBS_DIM, act);
        sink += act[0];
        printf("call %.1f\n", now_ns() - t0);
    }
    free(obs);
    return sink == 12345.0f;
}
"""


def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=str(REPO / "tests" / "fixtures" / "hover_policy"),
                    help="exported policy folder (policy.onnx + policy.json)")
    ap.add_argument("--calls", type=int, default=5000, help="observations (one call each) per block")
    ap.add_argument("--blocks", type=int, default=20, help="timed blocks of the C policy")
    args = ap.parse_args()

    from tqdm import tqdm

    from policies.export_c import compile_shared, export_c, find_compiler, flight_observations, random_observations
    from tether.runtime import OnnxPolicy

    policy = OnnxPolicy(args.policy)
    c = policy.contract
    flight = flight_observations(args.policy, duration_s=2.0, num_drones=4)
    obs = np.concatenate([flight, random_observations(c, max(args.calls - len(flight), 0))])[:args.calls]
    compiler = find_compiler()
    cc_version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp = export_c(args.policy, tmp / "onboard", recorded_obs=flight)
        (tmp / "onboard" / "bench.c").write_text(HARNESS)
        exe = tmp / "bench"
        cmd = [compiler, "-std=c99", "-O2", "-I", str(tmp / "onboard"), "-o", str(exe), str(tmp / "onboard" / "bench.c"),
               str(exp.c_path), "-lm"]
        subprocess.run(cmd, check=True)
        lib = compile_shared(exp.c_path, tmp / "libtp.so", compiler, extra=(f"-I{tmp / 'onboard'}",))
        size, src_size = lib.stat().st_size, exp.c_path.stat().st_size
        obs_file = tmp / "obs.bin"
        obs.astype(np.float32).tofile(obs_file)
        out = subprocess.run([str(exe), str(obs_file), str(args.blocks)], capture_output=True, text=True, check=True).stdout
    blocks = [float(line.split()[1]) for line in out.splitlines() if line.startswith("block")]
    calls = [float(line.split()[1]) for line in out.splitlines() if line.startswith("call")]

    session, name = policy.session, c.input_name
    rows = [o[None] for o in obs]
    raw, wrapped = [], []
    for r in tqdm(rows, desc="onnxruntime", leave=False, disable=None):
        t0 = time.perf_counter_ns()
        session.run(None, {name: r})
        t1 = time.perf_counter_ns()
        policy(r[0])
        wrapped.append(time.perf_counter_ns() - t1)
        raw.append(t1 - t0)

    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"policy: {args.policy} ({c.task}, obs {c.obs_dim}, {c.action.type}x{c.action.dim}); "
          f"C max |C - onnxruntime| = {exp.max_abs_err:.2e} on {exp.n_checked} observations")
    print(f"compiler: {cc_version}, -std=c99 -O2; source {src_size} B, "
          f"shared library {size} B")
    print(f"C tether_policy_step: {np.median(blocks):.0f} ns/call median of {len(blocks)} blocks x {len(obs)} calls "
          f"(best block {min(blocks):.0f}); one call timed alone p50 {_pct(calls, 50):.0f} ns, p99 {_pct(calls, 99):.0f} ns")
    print(f"onnxruntime session.run, 1 observation: p50 {_pct(raw, 50) / 1e3:.1f} us, p99 {_pct(raw, 99) / 1e3:.1f} us")
    print(f"tether.runtime.OnnxPolicy, 1 observation: p50 {_pct(wrapped, 50) / 1e3:.1f} us, "
          f"p99 {_pct(wrapped, 99) / 1e3:.1f} us")
    print(f"ratio of the per-call p50s, onnxruntime session.run / C: {_pct(raw, 50) / _pct(calls, 50):.0f}x")


if __name__ == "__main__":
    main()
