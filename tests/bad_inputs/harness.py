"""Run one bad ``tether`` command as a user would (a real process, no terminal, stdin closed) and check
the front-door promise: a non-zero exit, exactly one ``error:`` line naming the problem, no traceback,
and every file that existed before byte-identical afterwards (nothing created in the watched folders
either, unless the case says so).

Each area keeps its cases in ``tests/bad_inputs/test_<area>.py`` as a list of :class:`BadInput`;
``pytest tests/bad_inputs --collect-only -q`` counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class BadInput:
    id: str
    """pytest id: what is wrong, e.g. 'train-nan-learning-rate'"""
    argv: tuple[str, ...] | Callable[[Path], list[str]]
    """arguments after ``tether``; a callable gets the case's scratch folder (after ``setup``)"""
    words: tuple[str, ...] = ()
    """each must appear (case-insensitive) in the error line"""
    setup: Callable[[Path], None] | None = None
    """prepares files in the scratch folder before the command runs"""
    exit_code: int | None = None
    """the exact status expected; None = any non-zero"""
    timeout_s: float = 120.0
    """a bad input must be refused quickly; a command that starts real work instead times out"""
    env: dict[str, str] | None = None
    """extra environment variables"""


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> digest)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_tether(argv: list[str], cwd: Path, timeout_s: float = 120.0,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tether_app.cli", *argv], cwd=cwd, env=full_env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)


def check_bad_input(case: BadInput, scratch: Path) -> str:
    """Run the case in ``scratch`` (its own folder, the command's working directory); return the error line."""
    scratch.mkdir(parents=True, exist_ok=True)
    if case.setup is not None:
        case.setup(scratch)
    argv = list(case.argv(scratch) if callable(case.argv) else case.argv)
    before = snapshot(scratch)
    proc = run_tether(argv, scratch, case.timeout_s, case.env)
    after = snapshot(scratch)
    shown = f"tether {' '.join(argv)}\n--- exit {proc.returncode}\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout}"
    assert proc.returncode != 0, f"a bad input exited 0:\n{shown}"
    if case.exit_code is not None:
        assert proc.returncode == case.exit_code, f"expected exit {case.exit_code}:\n{shown}"
    assert "Traceback" not in proc.stderr + proc.stdout, f"a bad input ended in a traceback:\n{shown}"
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line on stderr:\n{shown}"
    line = errors[0]
    for w in case.words:
        assert w.lower() in line.lower(), f"the error line should mention {w!r}:\n{shown}"
    changed = sorted(k for k in before if after.get(k) != before[k])
    created = sorted(set(after) - set(before))
    assert not changed, f"files changed by a refused command: {changed}\n{shown}"
    assert not created, f"files created by a refused command: {created}\n{shown}"
    return line
