"""Clean shutdown every time: each node, SIGINT'd while it works, exits 0 without a traceback.

Real processes (conftest.Launcher). The twin publishes at its rate and the runner ticks on its fallback
timer while this runs, so SIGINT lands at random points of their callbacks; the delays vary so it lands
at different phases of the start as well.
"""

from __future__ import annotations

import time

import pytest


def _wait_for(proc, text: str, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while text not in proc.output():
        assert proc.p.poll() is None, f"{proc.name} exited early ({proc.p.returncode}):\n{proc.output()}"
        assert time.monotonic() < end, f"{proc.name} never logged {text!r}:\n{proc.output()}"
        time.sleep(0.05)


@pytest.mark.parametrize("module", ["twin_node", "runner_node", "recorder_node"])
def test_sigint_always_exits_0_without_traceback(launcher, linear_policy_dir, tmp_path, module):
    ready = {"twin_node": "waiting for the first command", "runner_node": "configured",
             "recorder_node": "recording"}[module]
    for k, extra_s in enumerate((0.0, 0.05, 0.13, 0.31, 0.52, 0.77)):
        params = {"recorder_node": {"output": str(tmp_path / f"bag{k}")}}.get(
            module, {"policy_dir": str(linear_policy_dir), "autostart": True})
        proc = launcher.start(module, params, name=f"{module}#{k}")
        _wait_for(proc, ready)
        time.sleep(extra_s)
        rc = proc.stop(timeout_s=10.0)
        out = proc.output()
        assert rc == 0 and "Traceback" not in out, f"{module} run {k}: exit {rc}\n{out}"
        launcher.procs.remove(proc)


@pytest.mark.parametrize("params, words", [({"policy_dir": ""}, ("policy_dir",)),
                                           ({"policy_dir": "/nonexistent/policy"}, ("/nonexistent/policy",))])
def test_a_node_refusing_its_parameters_says_so_in_one_line(launcher, params, words):
    proc = launcher.start("twin_node", params)
    proc.p.wait(30)
    rc = proc.stop()
    lines = [ln for ln in proc.output().splitlines() if ln.strip()]
    assert rc == 2, proc.output()
    assert "Traceback" not in proc.output()
    # one line saying why: `error: ...` (spin_node) or the node's own FATAL log line (params.py)
    errors = [ln for ln in lines if ln.startswith("error:") or "[FATAL]" in ln]
    assert len(errors) == 1 and all(w in errors[0] for w in words), lines


def test_autostart_failure_ends_the_runner_when_asked(launcher, tmp_path):
    """Under tether deploy a runner whose policy is refused at start must end (status 1) so that the
    launcher fails the run, instead of idling unconfigured while the twin flies with nothing commanding it."""
    bad = tmp_path / "not_a_policy"
    bad.mkdir()
    proc = launcher.start("runner_node", {"policy_dir": str(bad), "autostart": True,
                                          "exit_on_autostart_failure": True})
    proc.p.wait(30)
    rc = proc.stop()
    out = proc.output()
    assert rc == 1, out
    assert "Traceback" not in out
    fatal = [ln for ln in out.splitlines() if "[FATAL]" in ln]
    assert len(fatal) == 1 and "autostart failed" in fatal[0] and str(bad) in fatal[0], out
