"""What the shared safety layer (hardware/safety.py) adds to every adapter's state-in -> command-out path:
SafetyMonitor.check (one state) + SafetyMonitor.clip (one command), and SafeRobot.read + send around the
digital twin beside the twin's own read + send. Prints figures, never pass/fail.

    python bench/bench_safety.py              # 20000 calls each
    python bench/bench_safety.py --calls 100000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "tether_deploy"))

from hardware.robot import CtbrCommand, RobotState  # noqa: E402
from hardware.safety import SafeRobot, SafetyCfg, SafetyMonitor  # noqa: E402


def percentiles_us(samples_ns: list[int]) -> str:
    a = np.asarray(samples_ns) / 1e3
    return f"p50 {np.percentile(a, 50):.1f} us, p99 {np.percentile(a, 99):.1f} us, max {a.max():.1f} us"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    mon = SafetyMonitor(SafetyCfg(battery_low_v=3.5, battery_critical_v=3.2), max_thrust_n=0.6)
    states = [RobotState(i * 0.01, rng.uniform(-1, 1, 3), (1.0, 0.0, 0.0, 0.0), rng.normal(0, 0.1, 3),
                         rng.normal(0, 0.1, 3)) for i in range(args.calls)]
    cmds = [CtbrCommand(float(rng.uniform(0, 1)), rng.normal(0, 5, 3)) for _ in range(args.calls)]
    t_mon = []
    for i in range(args.calls):
        t0 = time.perf_counter_ns()
        mon.check(states[i], 3.9, i * 0.01)
        mon.clip(cmds[i])
        t_mon.append(time.perf_counter_ns() - t0)

    from hardware.twin import DigitalTwin, TwinConfig

    twin = DigitalTwin(TwinConfig())
    safe = SafeRobot(twin)
    twin.connect()
    hover = CtbrCommand(twin.vehicle.mass_kg * 9.81, np.zeros(3))
    t_raw, t_safe = [], []
    for i in range(args.calls // 4):
        if i % 100 == 0:  # back to the start (outside the timing), so the flight stays inside the geofence
            twin.reset()
            safe.reset()
        twin.advance()
        t0 = time.perf_counter_ns()
        twin.read()
        twin.send(hover)
        t1 = time.perf_counter_ns()
        safe.read()
        safe.send(hover)
        t_safe.append(time.perf_counter_ns() - t1)
        t_raw.append(t1 - t0)
    twin.disconnect()

    # robot_bridge's work per command and per tick (bridge_core, no ROS): normalized action -> command ->
    # SafeRobot.send -> the normalized action sent; advance + read through the safety layer
    from tether.contract import load_policy_dir
    from tether_deploy.bridge_core import BridgeCore

    _, contract = load_policy_dir(REPO / "tests" / "fixtures" / "hover_policy")
    core = BridgeCore(DigitalTwin(TwinConfig()), contract, SafetyCfg(), cmd_timeout_s=1e9)
    core.connect()
    core.arm()
    t_cmd, t_tick = [], []
    for i in range(args.calls // 4):
        if i % 100 == 0:
            core.inner.reset()
            core.robot.reset()
            core.armed = True
        t0 = time.perf_counter_ns()
        core.on_command(contract.action.hover_action)
        t1 = time.perf_counter_ns()
        core.tick()
        t_cmd.append(t1 - t0)
        t_tick.append(time.perf_counter_ns() - t1)
    core.disconnect()
    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"SafetyMonitor.check + clip ({args.calls} calls): {percentiles_us(t_mon)}")
    print(f"twin read + send ({len(t_raw)} calls):               {percentiles_us(t_raw)}")
    print(f"SafeRobot(twin) read + send ({len(t_safe)} calls):   {percentiles_us(t_safe)}")
    print(f"bridge core, one command ({len(t_cmd)} calls):        {percentiles_us(t_cmd)}")
    print(f"bridge core, one tick with the twin's physics step:  {percentiles_us(t_tick)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
