"""`tether estop | policy | lifecycle | status` as a user runs them (real processes, no ros2 CLI) against the
runner and the twin as real node processes on this module's ROS domain."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from tether.contract import load_contract

TIMEOUT = "15"  # generous: the tests share 2 cores with node processes


def tether(env: dict, *argv: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tether_app.cli", *argv], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout_s)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == (0 if proc.returncode == 0 else 1), f"exit {proc.returncode}\n{proc.stderr}"
    return proc


def status(env: dict) -> dict:
    proc = tether(env, "status", "--json", "--timeout", TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def status_until(env: dict, pred, tries: int = 10) -> dict:
    for _ in range(tries):
        s = status(env)
        if pred(s):
            return s
        time.sleep(0.5)
    raise AssertionError(f"status never matched: {s}")


def _twin(launcher, policy_dir):
    c = load_contract(policy_dir / "policy.json")
    return launcher.start("twin_node", {"policy_dir": str(policy_dir), "rate_hz": c.control_rate_hz})


def test_lifecycle_estop_and_status(launcher, linear_policy_dir):
    env = launcher.env
    sha = load_contract(linear_policy_dir / "policy.json").provenance["onnx_sha256"]
    _twin(launcher, linear_policy_dir)
    runner = launcher.start("runner_node", {"policy_dir": str(linear_policy_dir), "autostart": False,
                                            "max_state_age_periods": 10.0, "diagnostics_rate_hz": 5.0})

    got = tether(env, "lifecycle", "get", "--timeout", TIMEOUT)
    assert (got.returncode, got.stdout.strip()) == (0, "policy_runner: unconfigured"), got.stderr
    # an unconfigured runner has no e-stop service yet: the error says so, not "nothing running"
    r = tether(env, "estop", "reset", "--timeout", "6")
    assert r.returncode == 1 and "unconfigured" in r.stderr and "tether lifecycle configure" in r.stderr, r.stderr
    r = tether(env, "policy", "load", str(linear_policy_dir), "--timeout", "6")
    assert r.returncode == 1 and "unconfigured" in r.stderr and "did not appear" in r.stderr, r.stderr
    r = tether(env, "lifecycle", "activate", "--timeout", TIMEOUT)
    assert r.returncode == 2 and "not possible" in r.stderr and "configure" in r.stderr, r.stderr

    r = tether(env, "lifecycle", "configure", "--timeout", TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "policy_runner: unconfigured -> inactive"), r.stderr
    s = status(env)
    assert s["lifecycle"] == "inactive" and s["active_policy"].startswith(f"active {sha}"), s
    # inactive: the e-stop latches all the same, though no tick (mode) can confirm it
    r = tether(env, "estop", "trigger", "--timeout", TIMEOUT)
    assert r.returncode == 0 and "not ticking" in r.stdout, r.stdout + r.stderr
    r = tether(env, "estop", "reset", "--timeout", TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "policy_runner: e-stop reset"), r.stderr
    r = tether(env, "lifecycle", "activate", "--timeout", TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "policy_runner: inactive -> active"), r.stderr
    s = status_until(env, lambda s: s["mode"] == "policy" and s["diagnostics"] is not None)
    assert s["diagnostics"]["level"] == "OK" and s["diagnostics"]["values"]["estop_latched"] == "False", s
    text = tether(env, "status", "--timeout", TIMEOUT)
    assert text.returncode == 0 and "policy_runner (domain" in text.stdout and "mode:          policy" in text.stdout

    r = tether(env, "estop", "trigger", "--timeout", TIMEOUT)
    assert r.returncode == 0 and "e-stop latched" in r.stdout and "runner mode: estop" in r.stdout, r.stderr
    s = status_until(env, lambda s: s["diagnostics"]["values"]["estop_latched"] == "True")
    assert s["mode"].startswith("estop"), s
    time.sleep(1.0)
    assert status(env)["mode"].startswith("estop"), "the e-stop did not stay latched"
    r = tether(env, "estop", "reset", "--timeout", TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "policy_runner: e-stop reset"), r.stderr
    s = status_until(env, lambda s: not s["mode"].startswith("estop"))
    assert s["diagnostics"]["values"]["estop_latched"] == "False", s
    r = tether(env, "estop", "reset", "--timeout", TIMEOUT)
    assert (r.returncode, r.stdout.strip()) == (0, "policy_runner: e-stop was not latched"), r.stderr

    for transition, change in (("deactivate", "active -> inactive"), ("cleanup", "inactive -> unconfigured"),
                               ("shutdown", "unconfigured -> finalized")):
        r = tether(env, "lifecycle", transition, "--timeout", TIMEOUT)
        assert (r.returncode, r.stdout.strip()) == (0, f"policy_runner: {change}"), (transition, r.stderr)
    r = tether(env, "lifecycle", "configure", "--timeout", TIMEOUT)
    assert r.returncode == 2 and "finalized" in r.stderr, r.stderr
    assert runner.p.poll() is None, "the runner died under the CLI:\n" + runner.output()


def test_policy_load_good_and_refused(launcher, linear_policy_dir, tmp_path):
    from linear_policy import write_linear_hover_policy

    env = launcher.env
    _twin(launcher, linear_policy_dir)
    launcher.start("runner_node", {"policy_dir": str(linear_policy_dir), "autostart": True,
                                   "max_state_age_periods": 10.0})
    status_until(env, lambda s: s["mode"] == "policy", tries=30)

    good = write_linear_hover_policy(tmp_path / "good", bias_offset=0.01)
    good_sha = load_contract(good / "policy.json").provenance["onnx_sha256"]
    r = tether(env, "policy", "load", str(good), "--timeout", TIMEOUT)
    assert r.returncode == 0 and good_sha[:12] in r.stdout, r.stderr
    assert status(env)["active_policy"] == f"active {good_sha} {good}"

    # loadable here, refused by the runner: another control rate than the running policy's
    other_rate = write_linear_hover_policy(tmp_path / "rate", control_rate_hz=50.0)
    r = tether(env, "policy", "load", str(other_rate), "--timeout", TIMEOUT)
    assert r.returncode == 1 and "refused" in r.stderr and "control_rate_hz" in r.stderr, r.stderr
    assert f"keeps running {good_sha[:12]}" in r.stderr, r.stderr
    s = status(env)
    assert s["active_policy"].startswith("rejected") and s["mode"] == "policy", s

    # the same folder again: the verdict is the new one, not the latched old status
    r = tether(env, "policy", "load", str(good), "--timeout", TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert status(env)["active_policy"] == f"active {good_sha} {good}"


def test_configure_refusal_names_the_cause(launcher, linear_policy_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(linear_policy_dir, bad)
    (bad / "policy.json").write_text((bad / "policy.json").read_text().replace('"version": "1.0"', '"version": "7.0"'))
    launcher.start("runner_node", {"policy_dir": str(bad), "autostart": False})
    r = tether(launcher.env, "lifecycle", "configure", "--timeout", TIMEOUT)
    assert r.returncode == 1 and "failed to configure" in r.stderr and "contract version" in r.stderr, r.stderr
    got = tether(launcher.env, "lifecycle", "get", "--timeout", TIMEOUT)
    assert got.stdout.strip() == "policy_runner: unconfigured"


def test_the_command_line_loads_without_rclpy():
    """`tether --help` and every parser are built without importing rclpy (it loads when a command runs)."""
    code = ("import sys, tether_app.cli; tether_app.cli.build_parser(); "
            "assert 'rclpy' not in sys.modules and 'tether_deploy.qos' not in sys.modules, 'rclpy imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
