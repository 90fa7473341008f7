"""The ROS 2 arm adapter (hardware/arm.py) against the stand-in arm (sim/standins/arm_node.py, a real node
process over DDS on loopback). Prints figures, never pass/fail:
  * state in -> command out inside the adapter: read() (the newest JointState, mapped by name, forward
    kinematics) + send() (joint and workspace limits, the message published), per output mode;
  * link loss -> safe command: the stand-in is frozen (SIGSTOP: sockets open, nothing sent, the
    silent-link case) and the adapter's watchdog must send the safe command; the figure is how long the
    JointState stream had been silent when it went out, against state_deadline_s. Each trial then
    thaws the arm (SIGCONT) and reconnects (a lost link stays lost until a reconnect).

    python bench/bench_arm.py                 # 500 ticks per mode, 20 link-loss trials
    python bench/bench_arm.py --trials 100
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=500, help="read + send per output mode, at 100 Hz")
    ap.add_argument("--trials", type=int, default=20, help="link-loss trials")
    ap.add_argument("--domain-id", type=int, default=60 + os.getpid() % 30)
    args = ap.parse_args()
    os.environ.update(ROS_DOMAIN_ID=str(args.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")

    from tqdm import tqdm

    from hardware.arm import ArmCfg, EndEffectorTwist, JointPositionCommand, JointVelocityCommand, Ros2Arm
    from hardware.robot import RobotLinkLost

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    standin = subprocess.Popen([sys.executable, "-m", "sim.standins.arm_node", "--ros-args", "-p", "shuffle:=true"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commands = {"trajectory": JointPositionCommand([0.2, 0.5, 0.4]), "forward_position": JointPositionCommand([0.2, 0.5, 0.4]),
                "forward_velocity": JointVelocityCommand([0.05, -0.05, 0.0]),
                "servo_twist": EndEffectorTwist([0.01, 0.0, 0.0], [0.0, 0.0, 0.0])}
    tick_us: dict[str, np.ndarray] = {}
    silent_s: list[float] = []
    cfg = ArmCfg(connect_timeout_s=60.0)
    try:
        for mode, cmd in commands.items():
            arm = Ros2Arm(ArmCfg(output_mode=mode, connect_timeout_s=60.0))
            arm.connect()
            times = []
            try:
                for _ in tqdm(range(args.ticks), desc=mode, leave=False):
                    t0 = time.perf_counter_ns()
                    arm.read()
                    arm.send(cmd)
                    times.append(time.perf_counter_ns() - t0)
                    time.sleep(0.01)
            finally:
                arm.disconnect()
            tick_us[mode] = np.asarray(times) / 1e3
        for _ in tqdm(range(args.trials), desc="link loss", leave=False):
            arm = Ros2Arm(cfg)
            arm.connect()
            try:
                standin.send_signal(signal.SIGSTOP)
                deadline = time.monotonic() + 10.0
                while not arm.link_lost and time.monotonic() < deadline:
                    time.sleep(0.002)
                if not arm.link_lost:
                    raise RuntimeError("the watchdog did not see a frozen arm within 10 s")
                try:
                    arm.read()
                    raise RuntimeError("read() after a lost link did not raise RobotLinkLost")
                except RobotLinkLost:
                    pass
                silent_s.append(arm.silent_for_s)
            finally:
                standin.send_signal(signal.SIGCONT)
                arm.disconnect()
    finally:
        standin.send_signal(signal.SIGCONT)
        standin.terminate()
        standin.wait(10)

    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for mode, t in tick_us.items():
        print(f"{mode:17s} read()+send(): p50 {np.percentile(t, 50):6.0f} us, p99 {np.percentile(t, 99):6.0f} us, "
              f"max {t.max():6.0f} us ({len(t)} ticks)")
    s = np.asarray(silent_s) * 1e3
    within = int(np.sum(s <= cfg.state_deadline_s * 1e3))
    print(f"link loss -> safe command: silent for p50 {np.percentile(s, 50):.0f} ms, max {s.max():.0f} ms over "
          f"{len(s)} trials ({within}/{len(s)} within state_deadline_s {cfg.state_deadline_s * 1e3:.0f} ms; watchdog period "
          f"{1e3 / cfg.watchdog_rate_hz:.0f} ms)")


if __name__ == "__main__":
    main()
