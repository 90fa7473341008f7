"""Every compiling module of sim/ points inductor at the persistent kernel cache before its first compile
(sim.kernel_cache), and a folder the user chose is kept. Each case runs in a fresh process: inductor fixes
its folder at first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "helper": "from sim.kernel_cache import use_kernel_cache; use_kernel_cache()",
    "depth camera": "from sim.camera.depth import DepthCamera; DepthCamera(compile=True)",
    "fused kernel": ("from sim.quadrotor import fused; from sim.tasks import make_env; "
                     "e = make_env('hover', num_envs=2, physics='eager'); "
                     "fused.compiled_rollout(fused.FusedSpec.from_params(e.params, e.cfg.control_dt, e.cfg.substeps, "
                     "e.rate_ctrl), 1, 2)"),
}


def _cache_dir_after(code: str, home: Path, preset: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["HOME"] = str(home)
    if preset is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = preset
    out = subprocess.run([sys.executable, "-c", f"{code}; import os; print(os.environ.get('TORCHINDUCTOR_CACHE_DIR'))"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiling_modules_use_the_persistent_cache(case, tmp_path):
    assert _cache_dir_after(CASES[case], tmp_path, None) == str(tmp_path / ".cache" / "tether" / "inductor")


def test_a_folder_the_user_set_is_kept(tmp_path):
    assert _cache_dir_after(CASES["helper"], tmp_path, str(tmp_path / "mine")) == str(tmp_path / "mine")


GIL_PROBE = """
import threading, time, torch
from sim.kernel_cache import release_gil_in_cpu_kernels
assert release_gil_in_cpu_kernels() and release_gil_in_cpu_kernels()  # in effect, and idempotent
torch.set_num_threads(1)
def work(x):  # one long C++ loop: no Python runs inside it
    for _ in range(150):
        x = torch.sin(x) * 1.0001 + 0.5
    return x
f = torch.compile(work)
x = torch.rand(4_000_000)
torch.testing.assert_close(f(x), work(x))
counts, stop = [0], threading.Event()
def spin():
    while not stop.is_set():
        counts[0] += 1
t = threading.Thread(target=spin); t.start()
time.sleep(0.05)
n0, t0 = counts[0], time.perf_counter()
f(x)
dt, during = time.perf_counter() - t0, counts[0] - n0
stop.set(); t.join()
print(during, dt)
"""


def test_compiled_cpu_kernels_run_without_the_gil(tmp_path):
    """After release_gil_in_cpu_kernels, inductor's rewritten kernel entry still compiles and computes
    the same, and Python in another thread runs while a compiled kernel does: a thread that only counts
    advances during the kernel's call (with the GIL held it would stall for the whole loop but for the
    interpreter's 5 ms switch interval)."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    out = subprocess.run([sys.executable, "-c", GIL_PROBE], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    during, seconds = out.stdout.split()[-2:]
    # measured: released, ~12 M counts per second of the call; held, ~60 k in all (the wrapper's Python
    # around the kernel), whatever the kernel's length
    assert float(seconds) > 0.2 and int(during) > 1_000_000 * float(seconds), out.stdout
