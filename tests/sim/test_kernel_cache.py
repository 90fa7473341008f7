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
