"""The tether-robot distribution: which modules and files of the repository a robot installs, and its
requirements, taken from the root pyproject.toml by name (one place for every version range).

Robot side: every module of tether/, hardware/ and tether_deploy except the twin side (``twin*`` modules,
which need the simulator's pybullet reference) and the twin's parameter files and launch file. The layer
test (tests/test_layers.py) checks the built wheel holds exactly these modules and that none of them
imports torch, sim, policies, calibration or tether_app."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PKG_SRC = ROOT / "ros2_ws" / "src" / "tether_deploy"
# import package -> its folder, relative to this file (setuptools wants relative paths)
PACKAGE_DIRS = {"tether": "../tether", "hardware": "../hardware", "tether_deploy": "../ros2_ws/src/tether_deploy/tether_deploy"}
TWIN_SIDE_PREFIX = "twin"
"""modules (hardware/, tether_deploy/) and parameter/launch files whose name starts with this are the
digital twin's: it needs sim/'s pybullet reference and never runs on a robot"""
APP_OR_TWIN_SIDE: dict[str, str] = {}
"""other modules of these packages that are app or twin side (dotted name -> the reason); left out too"""
ROBOT_REQUIREMENTS = ("numpy", "onnxruntime", "pyyaml", "mcap")
"""the root distribution's requirements the robot side needs (by name; the ranges are the root's)"""
ROBOT_EXTRAS = ("ros-wheels", "crazyflie", "mavlink")
"""the root distribution's extras the robot side offers as they are"""


def is_twin_side(name: str) -> bool:
    return name.startswith(TWIN_SIDE_PREFIX)


def robot_modules(root: Path = ROOT) -> dict[str, Path]:
    """dotted module name -> source file, for every module the robot distribution installs."""
    out = {}
    for pkg, rel in PACKAGE_DIRS.items():
        for f in sorted((root / rel.removeprefix("../")).glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            if not (pkg in ("hardware", "tether_deploy") and is_twin_side(f.stem) or name in APP_OR_TWIN_SIDE):
                out[name] = f
    return out


def _name(requirement: str) -> str:
    for i, c in enumerate(requirement):
        if not (c.isalnum() or c in "-_."):
            return requirement[:i].lower()
    return requirement.lower()


def robot_metadata(root: Path = ROOT) -> dict:
    """version, install_requires and extras_require of tether-robot, from ``root``/pyproject.toml."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    deps = {_name(r): r for r in project["dependencies"]}
    missing = [n for n in ROBOT_REQUIREMENTS if n not in deps]
    if missing:
        raise SystemExit(f"robot/setup.py: the root pyproject.toml has no requirement {missing}")
    extras = project.get("optional-dependencies", {})
    return {"version": project["version"], "install_requires": [deps[n] for n in ROBOT_REQUIREMENTS],
            "extras_require": {e: list(extras[e]) for e in ROBOT_EXTRAS}}


def build_wheel_from_copy(out: Path, python: str = sys.executable) -> Path:
    """Build tether-robot's wheel into ``out``/dist from a copy of what this file reads (the checkout stays
    clean of build/ and egg-info); the tests and bench/bench_robot_install.py use it."""
    import shutil
    import subprocess

    src = out / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for rel in ("robot", *(r.removeprefix("../") for r in PACKAGE_DIRS.values())):
        shutil.copytree(ROOT / rel, src / rel, ignore=ignore, dirs_exist_ok=True)
    for rel in ("pyproject.toml", *(str(PKG_SRC.relative_to(ROOT) / d) for d in ("package.xml", "resource", "config", "launch"))):
        (shutil.copytree if (ROOT / rel).is_dir() else shutil.copy2)(ROOT / rel, src / rel)
    proc = subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(out / "dist"), str(src / "robot")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the tether-robot wheel failed:\n{proc.stdout}{proc.stderr}")
    (wheel,) = (out / "dist").glob("tether_robot-*.whl")
    return wheel


class RobotBuildPy(build_py):
    """build_py without the twin-side modules of hardware/ and tether_deploy/."""

    def find_package_modules(self, package, package_dir):
        keep = robot_modules()
        return [m for m in super().find_package_modules(package, package_dir)
                if (m[0] if m[1] == "__init__" else f"{m[0]}.{m[1]}") in keep]


def _data_files() -> list[tuple[str, list[str]]]:
    """The ROS package's files where colcon puts them (share/tether_deploy/...), so that `tether-robot
    deploy` finds its parameter files and a system ROS finds the package (AMENT_PREFIX_PATH=<venv>)."""

    def rel(paths) -> list[str]:
        return sorted(str(Path("..") / p.relative_to(ROOT)) for p in paths if not is_twin_side(p.name))

    share = "share/tether_deploy"
    return [("share/ament_index/resource_index/packages", rel([PKG_SRC / "resource" / "tether_deploy"])),
            (share, rel([PKG_SRC / "package.xml"])),
            (f"{share}/config", rel(PKG_SRC.glob("config/*.yaml"))),
            (f"{share}/launch", rel(PKG_SRC.glob("launch/*.launch.py")))]


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import robot_metadata from it
    setup(packages=list(PACKAGE_DIRS), package_dir=PACKAGE_DIRS, cmdclass={"build_py": RobotBuildPy},
          data_files=_data_files(), **robot_metadata())
