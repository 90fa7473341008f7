"""The robot-side install beside today's full install: size on disk and import / start-up time.

Builds the tether-robot wheel (robot/) from a copy of the sources it packs, and installs it into fresh
venvs (no system site-packages; dependencies from the configured package index, as on a robot):

  robot          pip install ./robot                                      rclpy from a system ROS 2
  robot+ros      pip install "./robot[ros-wheels]"                        rclpy from the ros-jazzy-* wheels
  robot image    pip install "./robot[ros-wheels,crazyflie,mavlink]"      what Dockerfile.robot installs

and compares them with today's full install, this checkout's .venv (the tether distribution with its
ros-wheels extra; the dev tools are not counted).

Size: the files of the distribution and of everything it requires, followed through the installed
metadata (requirements, markers and extras evaluated), pip and setuptools left out; counted the same
way in every environment. Also `du` of the whole site-packages folder.
Time: the median over --repeats fresh processes of (a) importing the robot core (contract, runtime,
runner and bridge logic, parameters, deploy launcher), (b) importing the policy runner node (rclpy),
(c) the command line a robot would run, `tether-robot deploy --help` (today: `tether deploy --help`,
whose front door loads the application layer).

    .venv/bin/python bench/bench_robot_install.py [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
CORE = ("tether.contract", "tether.runtime", "tether.observation", "tether.presets", "tether.deploy",
        "tether_deploy.runner_core", "tether_deploy.bridge_core", "tether_deploy.params", "hardware.robot",
        "hardware.safety")
"""the robot core: what the runner and bridge import besides rclpy"""
NODE = ("tether_deploy.runner_node",)
VARIANTS = {"robot": "", "robot+ros": "[ros-wheels]", "robot image": "[ros-wheels,crazyflie,mavlink]"}
NOT_COUNTED = {"pip", "setuptools", "wheel"}

# Run by each environment's own python: the dependency closure of ROOTS and the bytes its files take.
_CLOSURE = r"""
import importlib.metadata as md, json, os, sys
from packaging.requirements import Requirement
roots, not_counted = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
norm = lambda n: n.lower().replace("_", "-").replace(".", "-")
seen = {}
def visit(name, extras):
    key = norm(name)
    if key in seen or key in not_counted:
        return
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return
    seen[key] = dist
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in [*extras, ""]):
            visit(req.name, sorted(req.extras))
for name, extras in roots:
    visit(name, extras)
sizes = {}
for key, dist in seen.items():
    total = 0
    for f in dist.files or []:
        try:
            total += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    sizes[key] = total
print(json.dumps(sizes))
"""

_IMPORT = r"""
import importlib, sys, time
t0 = time.perf_counter()
for m in sys.argv[1].split(","):
    importlib.import_module(m)
print(time.perf_counter() - t0, "torch" in sys.modules)
"""


def closure_bytes(python: Path, roots: list[tuple[str, list[str]]]) -> dict[str, int]:
    proc = subprocess.run([str(python), "-c", _CLOSURE, json.dumps(roots), json.dumps(sorted(NOT_COUNTED))],
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return json.loads(proc.stdout)


def du_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def site_packages(venv: Path) -> Path:
    (sp,) = (venv / "lib").glob("python3*/site-packages")
    return sp


def median_import_s(python: Path, modules: tuple[str, ...], repeats: int) -> tuple[float, bool]:
    times, torch = [], False
    for _ in range(repeats):
        out = subprocess.run([str(python), "-c", _IMPORT, ",".join(modules)], capture_output=True, text=True,
                             check=True, cwd=tempfile.gettempdir()).stdout.split()
        times.append(float(out[0]))
        torch |= out[1] == "True"
    return statistics.median(times), torch


def median_wall_s(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per timing (median)")
    ap.add_argument("--keep", type=Path, default=None, help="build the venvs here and keep them (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_robot_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    try:
        steps = tqdm(total=2 + 2 * len(VARIANTS), desc="robot install bench", unit="step")
        wheel = runpy.run_path(str(ROOT / "robot" / "setup.py"), run_name="robot_setup")["build_wheel_from_copy"](work)
        steps.update()
        envs = {}
        for name, extras in VARIANTS.items():
            venv = work / name.replace(" ", "_").replace("+", "_")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}{extras}"],
                           check=True, capture_output=True)
            envs[name] = (venv, time.perf_counter() - t0, [("tether-robot", [e for e in extras.strip("[]").split(",") if e])])
            steps.update()
        envs["today (full)"] = (VENV, None, [("tether", ["ros-wheels"])])
        steps.update()
        for name, (venv, install_s, roots) in envs.items():
            py = venv / "bin" / "python"
            sizes = closure_bytes(py, roots)
            core_s, core_torch = median_import_s(py, CORE, args.repeats)
            has_ros = subprocess.run([str(py), "-c", "import rclpy"], capture_output=True,
                                     cwd=tempfile.gettempdir()).returncode == 0
            node_s = median_import_s(py, NODE, args.repeats)[0] if has_ros else None
            cli = [str(venv / "bin" / "tether-robot"), "deploy", "--help"] if name != "today (full)" else \
                [str(venv / "bin" / "tether"), "deploy", "--help"]
            cli_s = median_wall_s(cli, args.repeats)
            torch_s = median_import_s(py, ("torch",), args.repeats)[0] if "torch" in sizes else None
            rows.append({"install": name, "deps_mb": sum(sizes.values()) / 1e6, "dists": len(sizes),
                         "site_packages_mb": du_bytes(site_packages(venv)) / 1e6, "has_torch": "torch" in sizes,
                         "largest": sorted(sizes, key=sizes.get, reverse=True)[:4], "install_s": install_s,
                         "core_import_s": core_s, "core_loads_torch": core_torch, "node_import_s": node_s,
                         "cli": f"{Path(cli[0]).name} deploy --help", "cli_s": cli_s,
                         "torch_import_s": torch_s})
            if name != "today (full)":
                steps.update()
        steps.close()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nmachine: {subprocess.run(['uname', '-nm'], capture_output=True, text=True).stdout.strip()}, "
          f"{len(os.sched_getaffinity(0))} cores; load: {uptime}")
    print(f"{'install':<14} {'deps MB':>8} {'dists':>5} {'site-pkgs MB':>12} {'torch':>5} {'pip s':>6} "
          f"{'core import s':>13} {'runner node s':>13} {'CLI --help s':>12}  largest")
    for r in rows:
        node = "-" if r["node_import_s"] is None else f"{r['node_import_s']:.3f}"
        inst = "-" if r["install_s"] is None else f"{r['install_s']:.0f}"
        print(f"{r['install']:<14} {r['deps_mb']:>8.0f} {r['dists']:>5} {r['site_packages_mb']:>12.0f} "
              f"{'yes' if r['has_torch'] else 'no':>5} {inst:>6} {r['core_import_s']:>13.3f} {node:>13} "
              f"{r['cli_s']:>12.3f}  {', '.join(r['largest'])}")
    full = rows[-1]
    if full["torch_import_s"] is not None:
        print(f"(today's install: `import torch` alone takes {full['torch_import_s']:.2f} s; the CLI rows are "
              f"`tether-robot deploy --help` for the robot installs, `tether deploy --help` for today's)")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
