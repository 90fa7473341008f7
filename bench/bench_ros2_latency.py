"""State-message-in -> command-out latency through the policy runner at 500 Hz, and missed ticks.

Starts the runner as its own process (a 500 Hz linear hover policy, tick source 'state'), publishes
nav_msgs/Odometry at 500 Hz from this process over DDS on loopback, and times each cmd/executed against
the latest state sent before it. Prints figures, never pass/fail:
  * end to end (this process publishes -> runner -> this process receives): includes two DDS hops and
    this process's own executor;
  * inside the runner (state callback entry -> command published), from the runner's /diagnostics;
  * missed ticks: from the runner's scheduler (gaps > 1.5 periods) and from the received stream.

    python bench/bench_ros2_latency.py            # 60 s
    python bench/bench_ros2_latency.py --quick    # 10 s
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ros2_ws" / "src" / "tether_deploy"
sys.path[:0] = [str(REPO), str(PKG), str(REPO / "tests" / "ros2")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds [s]")
    ap.add_argument("--quick", action="store_true", help="10 s")
    ap.add_argument("--rate", type=float, default=500.0, help="control and state rate [Hz]")
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="SCHED_FIFO priority for the runner and this state source (0: normal scheduling)")
    ap.add_argument("--domain-id", type=int, default=90 + os.getpid() % 10)
    args = ap.parse_args()
    duration = 10.0 if args.quick else args.duration
    os.environ.update(ROS_DOMAIN_ID=str(args.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")

    from linear_policy import write_linear_hover_policy

    policy = write_linear_hover_policy(Path(tempfile.mkdtemp()) / "policy", control_rate_hz=args.rate)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(PKG)]), PYTHONUNBUFFERED="1")
    runner = subprocess.Popen(
        [sys.executable, "-m", "tether_deploy.runner_node", "--ros-args", "-p", f"policy_dir:={policy}",
         "-p", "autostart:=true", "-p", "diagnostics_rate_hz:=1.0", "-p", f"realtime_priority:={args.rt_priority}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run(args.rate, duration, args.rt_priority)
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(5)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()


def run(rate: float, duration: float, rt_priority: int) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from tether_deploy import qos
    from tether_deploy.conversions import fill_odometry

    rclpy.init()
    node = Node("bench_ros2_latency")
    sent: list[float] = []
    received: list[float] = []
    diag: dict[str, str] = {}
    measuring = [False]

    def on_cmd(_msg) -> None:
        if measuring[0]:
            received.append(time.perf_counter())

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name == "tether/policy_runner":
                diag.update({kv.key: kv.value for kv in st.values})

    pub = node.create_publisher(Odometry, qos.STATE_ODOM, qos.SENSOR_DATA)
    node.create_subscription(JointState, qos.EXECUTED_ACTION, on_cmd, qos.COMMAND)
    node.create_subscription(DiagnosticArray, qos.DIAGNOSTICS, on_diag, qos.DIAGNOSTICS_QOS)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    from tether_deploy.realtime import make_realtime
    print(f"state source: {make_realtime(rt_priority)}")
    msg = Odometry()
    fill_odometry(msg, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    msg.header.frame_id, msg.child_frame_id = "world", "base_link"  # the runner checks both, and the stamp
    period = 1.0 / rate

    def stream(seconds: float, record: bool) -> None:
        t_next = time.perf_counter()
        end = t_next + seconds
        while t_next < end:
            now = time.perf_counter()
            if now >= t_next:
                if record:
                    sent.append(time.perf_counter())
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                t_next += period
            else:
                ex.spin_once(timeout_sec=max(0.0, t_next - now - 50e-6))

    t_ready = time.monotonic()
    while diag.get("mode") != "policy" and time.monotonic() - t_ready < 30:
        stream(0.5, False)
    if diag.get("mode") != "policy":
        raise SystemExit(f"the runner did not start flying: diagnostics {diag}")
    diag_start = dict(diag)
    measuring[0] = True
    stream(duration, True)
    measuring[0] = False
    tail_end = time.monotonic() + 1.5
    while time.monotonic() < tail_end:
        ex.spin_once(timeout_sec=0.05)

    s, r = np.asarray(sent), np.asarray(received)
    idx = np.searchsorted(s, r, side="right") - 1
    lat_ms = (r[idx >= 0] - s[idx[idx >= 0]]) * 1e3
    def missed_in(t: np.ndarray) -> int:
        gaps = np.diff(t)
        return int(np.sum(np.maximum(np.round(gaps[gaps > 1.5 * period] / period) - 1, 0)))

    missed_rx, missed_tx = missed_in(r), missed_in(s)
    if os.environ.get("TETHER_BENCH_GAPS"):
        g = np.diff(r)
        at = np.nonzero(g > 1.5 * period)[0]
        print("gaps (t since start [s], length [ms]):", [(round(float(r[i] - r[0]), 3), round(float(g[i]) * 1e3, 2)) for i in at])
    ticks = int(diag.get("ticks", 0)) - int(diag_start.get("ticks", 0))
    missed = int(diag.get("missed_ticks", 0)) - int(diag_start.get("missed_ticks", 0))
    print(f"bench_ros2_latency: {rate:g} Hz for {duration:g} s, {len(s)} states sent, {len(r)} commands received "
          f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})")
    print(f"  end to end state->command  p50 {np.percentile(lat_ms, 50):.3f} ms  p99 {np.percentile(lat_ms, 99):.3f} ms"
          f"  max {lat_ms.max():.3f} ms")
    print(f"  inside the runner          p50 {float(diag.get('state_to_command_p50_us', 'nan')) / 1e3:.3f} ms  "
          f"p99 {float(diag.get('state_to_command_p99_us', 'nan')) / 1e3:.3f} ms  (last 5000 ticks)")
    print(f"  missed ticks (runner)      {missed} of {ticks} ({100.0 * missed / max(ticks, 1):.3f} %)")
    print(f"  missed ticks (received)    {missed_rx} of {len(r)} ({100.0 * missed_rx / max(len(r), 1):.3f} %)")
    # gaps already in the stream this process sent: the runner can only tick as often as states arrive
    print(f"  gaps in the sent states    {missed_tx} of {len(s)} ({100.0 * missed_tx / max(len(s), 1):.3f} %)")
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
