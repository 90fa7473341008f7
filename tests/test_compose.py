"""docker-compose.yml cannot be started here (no Docker engine): check that it is complete and that
every service's command is a valid `tether` invocation of this version of the CLI."""

import shlex
from pathlib import Path

import yaml

from tether.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _tether_commands(command) -> list[list[str]]:
    if isinstance(command, list):
        return [command] if command[0] == "tether" else []
    text = command.split('"', 1)[1].rsplit('"', 1)[0] if command.startswith("bash -c") else command
    return [shlex.split(part) for part in text.split("&&") if part.strip().startswith("tether")]


def test_compose_services_build_the_image_and_run_valid_tether_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"train", "twin-stack", "robot-stack"} <= set(services)
    parser = build_parser()
    checked = 0
    for name, svc in services.items():
        build = svc.get("build", {})
        assert (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).is_file(), name
        for argv in _tether_commands(svc["command"]):
            argv = [a.replace("${TETHER_ROBOT:-twin}", "twin") for a in argv]
            args = parser.parse_args(argv[1:])  # SystemExit (a failed test) on a stale option
            assert callable(args.func)
            checked += 1
    assert checked >= 4
    for svc in ("twin-stack", "robot-stack"):
        assert services[svc]["network_mode"] == "host", "DDS needs the host network"
        assert services[svc]["stop_signal"] == "SIGINT", "the launcher shuts nodes down cleanly on SIGINT"
