"""The layers install apart: the robot side (tether/, hardware/ without the twin, the tether_deploy
package without the twin node) needs no torch, sim/, policies/, calibration/ or tether_app/.

* statically (ast): no robot-side module imports them, at any depth of a function; a robot-side module
  reaches the twin side only inside a function (the ``--robot twin`` path a robot install lacks); every
  other import is the standard library, a robot requirement, ROS 2 or a driver extra;
* for real, in a process where those packages cannot be imported: every robot-side module imports;
* for real, from the robot distribution (robot/, ``slow``): its wheel holds exactly the robot-side
  modules, requires nothing else, and installs into a fresh venv without torch where the modules import,
  ``tether-robot`` runs and the bundled hover policy infers through onnxruntime;
* no library code edits ``sys.path``.
"""

from __future__ import annotations

import ast
import json
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from blocked_imports import BLOCK_PRELUDE

ROOT = Path(__file__).resolve().parents[1]
ROBOT_SETUP = runpy.run_path(str(ROOT / "robot" / "setup.py"), run_name="robot_setup")  # not __main__: no build
PACKAGE_DIRS = {pkg: (ROOT / "robot" / rel).resolve() for pkg, rel in ROBOT_SETUP["PACKAGE_DIRS"].items()}
is_twin_side = ROBOT_SETUP["is_twin_side"]

FORBIDDEN = ("torch", "sim", "policies", "calibration", "tether_app")
"""what a robot never installs: the training stack, the simulator, the application layer"""
APP_OR_TWIN_SIDE: dict[str, str] = ROBOT_SETUP["APP_OR_TWIN_SIDE"]
"""robot-package modules that are nevertheless app or twin side, with the reason (robot/setup.py); the
``twin*`` modules are twin side by name; the robot distribution leaves both out"""
ROBOT_IMPORTS = {"numpy", "onnxruntime", "yaml", "mcap"}  # the import names of ROBOT_REQUIREMENTS
ROS_IMPORTS = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "rpyutils"}
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
DRIVER_IMPORTS = {"cflib": "crazyflie", "pymavlink": "mavlink", "serial": "mavlink"}  # import -> the extra with it
LIBRARY_FOLDERS = ("tether", "tether_app", "sim", "policies", "hardware", "calibration", "ros2_ws/src")
"""library code: no sys.path edits there (tests/ and bench/ are scripts and may)"""


def robot_modules() -> dict[str, Path]:
    """dotted module name -> file, for every robot-side module (robot/setup.py's rule)."""
    return ROBOT_SETUP["robot_modules"]()


def _imports(tree: ast.AST, module: str):
    """(imported dotted name, line, lazy) for every absolute or relative import (``from a import b``: a.b);
    lazy: inside a function."""
    def visit(node, lazy):
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name, child.lineno, lazy
            elif isinstance(child, ast.ImportFrom):  # each name may be a module: package.name
                if child.level:  # relative: resolve against the package
                    base = module.split(".")[: -child.level] if "." in module else [module]
                    base = ".".join(base + ([child.module] if child.module else []))
                else:
                    base = child.module
                for a in child.names:
                    yield f"{base}.{a.name}", child.lineno, lazy
            yield from visit(child, inner)
    yield from visit(tree, False)


def _twin_side(name: str) -> bool:
    parts = name.split(".")
    return (parts[0] in ("hardware", "tether_deploy") and len(parts) > 1 and is_twin_side(parts[1])) \
        or any(name == m or name.startswith(m + ".") for m in APP_OR_TWIN_SIDE)


def test_the_robot_side_is_the_core_the_adapters_and_the_deploy_package():
    mods = robot_modules()
    for must in ("tether.contract", "tether.actions", "tether.observation", "tether.runtime", "tether.presets",
                 "tether.deploy", "tether.operate", "tether.robot_cli", "hardware.robot", "hardware.adapters",
                 "tether_deploy.runner_node", "tether_deploy.recorder_node", "tether_deploy.params"):
        assert must in mods, f"{must} is not on the robot side"
    for twin in ("hardware.twin", "hardware.twin_config", "tether_deploy.twin_node"):
        assert twin not in mods, f"{twin} needs sim/'s pybullet reference: it is twin side"


def test_no_robot_side_module_imports_the_training_stack_the_simulator_or_the_app():
    problems = []
    for name, path in robot_modules().items():
        for imported, line, lazy in _imports(ast.parse(path.read_text(), str(path)), name):
            top = imported.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {name} imports {imported}"
            if top in FORBIDDEN:
                problems.append(f"{where}, which a robot does not install (move the code to the app or twin "
                                f"side, or what it needs into tether/)")
            elif _twin_side(imported):
                if not lazy:
                    problems.append(f"{where} at module level; the twin side needs sim/: import it inside the "
                                    f"function of the --robot twin path")
            elif not (top in sys.stdlib_module_names or top in PACKAGE_DIRS or top in ROBOT_IMPORTS
                      or top in ROS_IMPORTS or top.endswith(ROS_SUFFIXES) or top in DRIVER_IMPORTS):
                problems.append(f"{where}: not the standard library, a robot requirement "
                                f"({sorted(ROBOT_IMPORTS)}), ROS 2 or a driver extra; add it to "
                                f"robot/setup.py's ROBOT_REQUIREMENTS or leave it out of the robot side")
            elif top in DRIVER_IMPORTS and not (lazy or name.startswith("hardware.")):
                problems.append(f"{where} at module level: only its adapter may need the "
                                f"{DRIVER_IMPORTS[top]} extra")
    assert not problems, "\n".join(problems)


def test_the_import_scan_sees_what_it_must_refuse(tmp_path):
    """Not vacuous: the scan finds a forbidden import nested in a function, a relative one, and a twin
    import at module level."""
    src = "import os\nfrom . import twin\ndef f():\n    if True:\n        import torch.nn\n"
    found = list(_imports(ast.parse(src), "hardware.crazyflie"))
    assert ("torch.nn", 5, True) in found and ("hardware.twin", 2, False) in found
    assert _twin_side("hardware.twin") and _twin_side("tether_deploy.twin_node") and not _twin_side("hardware.robot")


# A process in which the forbidden packages cannot be imported: every robot-side module is imported
# behind the blocker, and the blocker is checked to bite.
_BLOCKED_IMPORTS = BLOCK_PRELUDE + r"""
import importlib, json
failed = {}
for mod in sys.argv[2].split(","):
    try:
        importlib.import_module(mod)
    except Exception as e:
        failed[mod] = f"{type(e).__name__}: {e}"
try:
    import torch  # noqa: F401
    bites = False
except ModuleNotFoundError:
    bites = True
loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps({"failed": failed, "bites": bites, "loaded": loaded}))
"""


def _import_in_process(python: str, modules: list[str], forbidden=FORBIDDEN, cwd: Path = ROOT) -> dict:
    proc = subprocess.run([python, "-c", _BLOCKED_IMPORTS, ",".join(forbidden), ",".join(modules)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_robot_side_module_imports_where_torch_sim_policies_calibration_and_the_app_cannot():
    modules = sorted(robot_modules())
    result = _import_in_process(sys.executable, modules)
    assert result["bites"], "the import blocker let torch through: this test would prove nothing"
    assert result["failed"] == {}, "robot-side modules that need a forbidden package:\n" + "\n".join(
        f"  {m}: {e}" for m, e in result["failed"].items())
    assert result["loaded"] == []


def test_the_import_blocker_catches_a_module_that_needs_the_simulator():
    result = _import_in_process(sys.executable, ["hardware.twin", "tether.contract"])
    assert "hardware.twin" in result["failed"] and "sim" in result["failed"]["hardware.twin"]
    assert "tether.contract" not in result["failed"]


def _sys_path_edits(path: Path, root: Path = ROOT) -> list[str]:
    """file:line of every use of sys.path or site.addsitedir (library code has no reason to read it either)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and (node.attr == "addsitedir" or (
                node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys")):
            hits.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(hits, key=lambda h: int(h.rsplit(":", 1)[1]))


def test_no_sys_path_edits_in_library_code():
    hits = [h for folder in LIBRARY_FOLDERS for f in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in f.parts for h in _sys_path_edits(f)]
    assert not hits, ("library code touches sys.path (packages are installed: pyproject's packages.find `where` "
                      "includes ros2_ws/src/tether_deploy; scripts under tests/ and bench/ may): "
                      + ", ".join(hits) + ". policies/hil/ is issue 14's: its engineer removes these there")


def test_the_sys_path_scan_finds_an_edit(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os, sys, site\nos.path.join('a')\nsys.path.insert(0, 'x')\nsite.addsitedir('y')\n")
    assert _sys_path_edits(probe, tmp_path) == ["probe.py:3", "probe.py:4"]


# ------------------------------------------------------------------------- the robot distribution


def _requirement_names(metadata: str) -> tuple[set[str], dict[str, set[str]]]:
    base, extras = set(), {}
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            name = ROBOT_SETUP["_name"](req)
            if "extra ==" in req:
                extras.setdefault(req.split("extra ==")[1].strip().strip("'\""), set()).add(name)
            else:
                base.add(name)
    return base, extras


@pytest.fixture(scope="module")
def robot_wheel(tmp_path_factory) -> Path:
    return ROBOT_SETUP["build_wheel_from_copy"](tmp_path_factory.mktemp("robot_wheel"))


@pytest.mark.slow
def test_the_robot_wheel_holds_the_robot_side_and_requires_no_torch(robot_wheel):
    with zipfile.ZipFile(robot_wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    modules = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names
               if n.endswith(".py") and ".data/" not in n}
    assert modules == set(robot_modules()), (
        f"the wheel and the layer test disagree on the robot side: only in the wheel "
        f"{sorted(modules - set(robot_modules()))}, only in the test {sorted(set(robot_modules()) - modules)}")
    assert not {n.split("/")[0] for n in names} & set(FORBIDDEN)
    base, extras = _requirement_names(metadata)
    assert base == set(ROBOT_SETUP["ROBOT_REQUIREMENTS"]), base
    assert {"ros-wheels", "crazyflie", "mavlink"} <= set(extras)
    assert not (base | set().union(*extras.values())) & {"torch", "pybullet", "opencv-python-headless", "scipy"}
    assert "tether-robot = tether.robot_cli:main" in entry_points
    data = {n.split(".data/data/")[1] for n in names if ".data/data/" in n}
    assert {"share/tether_deploy/config/runner.yaml", "share/tether_deploy/config/recorder.yaml",
            "share/tether_deploy/package.xml"} <= data
    assert not [d for d in data if is_twin_side(Path(d).name)], "the twin's parameter files are twin side"


_ROBOT_SMOKE = r"""
import importlib.util, json, sys
import numpy as np
import tether.deploy
from tether.runtime import OnnxPolicy
policy = OnnxPolicy(sys.argv[1])
obs = np.random.default_rng(0).standard_normal((4, policy.contract.obs_dim)).astype(np.float32)
print(json.dumps({"action": policy(obs).tolist(),
                  "absent": [m for m in ("torch", "sim", "policies", "calibration", "tether_app", "pybullet")
                             if importlib.util.find_spec(m) is None],
                  "config": str(tether.deploy.CONFIG), "config_ok": (tether.deploy.CONFIG / "runner.yaml").is_file()}))
"""


@pytest.mark.slow
def test_the_robot_wheel_installs_into_a_fresh_venv_without_torch_and_flies_the_policy(robot_wheel, tmp_path):
    venv = tmp_path / "robot-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # dependencies from the configured package index, as on a robot
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(robot_wheel)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    installed = {ROBOT_SETUP["_name"](line.split("==")[0]) for line in subprocess.run(
        [str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout.splitlines()}
    assert not installed & {"torch", "pybullet", "scipy", "opencv-python-headless", "tether"}, installed
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr  # every requirement of what is installed is met

    rclpy_free = [m for m, f in robot_modules().items()
                  if not _needs_ros_or_driver(m, f, robot_modules())]
    assert {"tether.runtime", "tether.deploy", "hardware.robot", "tether_deploy.runner_core"} <= set(rclpy_free)
    result = _import_in_process(str(py), rclpy_free, forbidden=(), cwd=tmp_path)  # nothing blocked: not there
    assert result["failed"] == {}, result["failed"]

    hover = ROOT / "tests" / "fixtures" / "hover_policy"
    smoke = subprocess.run([str(py), "-c", _ROBOT_SMOKE, str(hover)], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120)
    assert smoke.returncode == 0, smoke.stderr
    out = json.loads(smoke.stdout.splitlines()[-1])
    assert set(out["absent"]) == {"torch", "sim", "policies", "calibration", "tether_app", "pybullet"}
    from tether.runtime import OnnxPolicy  # the same policy in the full install

    full = OnnxPolicy(hover)
    obs = np.random.default_rng(0).standard_normal((4, full.contract.obs_dim)).astype(np.float32)
    expected = full(obs)
    assert np.abs(expected).max() > 0.01, "a zero action would make the comparison vacuous"
    assert np.array_equal(np.asarray(out["action"], np.float32), expected), (out["action"], expected)
    assert out["config_ok"], f"tether-robot deploy finds no parameter files at {out['config']}"

    cli = subprocess.run([str(venv / "bin" / "tether-robot"), "--help"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "deploy" in cli.stdout and "status" in cli.stdout, cli.stderr
    # what this install lacks is refused before anything starts: the twin, and rclpy (no ros-wheels extra)
    for robot, says in (("twin", "digital twin is not in this install"), ("crazyflie", "needs rclpy")):
        refused = subprocess.run([str(venv / "bin" / "tether-robot"), "deploy", "--robot", robot, "--policy", str(hover),
                                  "--duration", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
        assert refused.returncode == 2 and len(errors) == 1 and says in errors[0], refused.stderr
        assert "Traceback" not in refused.stderr and "started" not in refused.stderr


def _needs_ros_or_driver(name: str, path: Path, modules: dict[str, Path], seen=None) -> bool:
    """Whether importing ``name`` imports rclpy, a message package or a driver, directly or through another
    robot-side module (module-level imports only)."""
    seen = set() if seen is None else seen
    seen.add(name)
    for imported, _, lazy in _imports(ast.parse(path.read_text()), name):
        if lazy:
            continue
        top = imported.split(".")[0]
        if top in ROS_IMPORTS or top.endswith(ROS_SUFFIXES) or top in DRIVER_IMPORTS:
            return True
        for candidate in (imported, imported.rsplit(".", 1)[0]):  # a.b is module b, or a name in module a
            if candidate in modules and candidate not in seen and \
                    _needs_ros_or_driver(candidate, modules[candidate], modules, seen):
                return True
    return False
