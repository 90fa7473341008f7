"""The policy runner with a depth policy at 30 Hz: inference time and missed ticks, with the camera in the loop.

The policy is a contract-2.1 depth policy of a student's size (tests/ros2/depth_policy.py
``write_depth_cnn_policy``: the contract's in-graph preprocessing, conv 16-32-64 over the pooled 16x12
image, a 64-D latent, a 2x256 MLP over latent + state; about 160 k parameters) around the linear hover
controller, so it flies. Two measurements, figures only (never pass/fail; the bars are printed beside):
  1. inference: the runner's call (tether.runtime.OnnxPolicy, 1 intra-op thread as the runner loads it)
     on a fresh 64x48 depth image each time, in this process: p50 / p99 / max [ms] (bar: p99 <= 3 ms);
  2. in the loop: the twin (its own process) hovers in an obstacle field and renders depth with
     pybullet's camera at 30 Hz (Image + CameraInfo), the runner (its own process) ticks on state and
     image at the contract's 30 Hz; from the runner's /diagnostics: ticks, missed ticks (bar: <= 0.1 %),
     ticks without a usable image, and state-in -> command-out inside the runner (observation, image
     checks, inference, publish) p50 / p99.
``--rt-priority P`` runs the runner (its realtime_priority parameter) and the inference part of this
process under SCHED_FIFO priority P (needs CAP_SYS_NICE), as a robot would run it on a loaded computer;
the twin, the stand-in for the vehicle and its camera (which are not on a robot's computer), then runs
under SCHED_FIFO P - 1 (``chrt``), so the load starves neither.
``--stress N`` adds N busy-looping processes for the duration (load on top of whatever runs already);
the machine's cores and load average are printed with the figures.

    python bench/bench_depth_runner.py              # 60 s in the loop
    python bench/bench_depth_runner.py --quick      # 15 s
    python bench/bench_depth_runner.py --stress 2   # with 2 extra busy processes
"""

from __future__ import annotations

import argparse
import multiprocessing
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

RATE_HZ = 30.0
COLUMNS = [2.5, 0.8, 0.0, 3.0, 0.25, 3.0, -1.0, 0.0, 3.0, 0.3, 4.0, 0.2, 0.0, 3.0, 0.2]  # x, y, z0, z1, r


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def bench_inference(policy_dir: Path, n: int) -> np.ndarray:
    """[n] seconds per OnnxPolicy call with a new random depth image each time."""
    from tether.runtime import OnnxPolicy

    policy = OnnxPolicy(policy_dir, intra_op_threads=1)
    im = policy.contract.images[0]
    rng = np.random.default_rng(0)
    obs = np.zeros(policy.contract.obs_dim, dtype=np.float32)
    images = rng.uniform(im.min_range_m, im.max_range_m, (64, *im.shape)).astype(np.float32)
    images[:, :, :4] = np.inf  # some sky
    for k in range(50):  # warm up
        policy(obs, {im.name: images[k % 64]})
    out = np.empty(n)
    for k in range(n):
        t0 = time.perf_counter()
        policy(obs, {im.name: images[k % 64]})
        out[k] = time.perf_counter() - t0
    return out


def bench_loop(policy_dir: Path, duration_s: float, domain_id: int, rt_priority: int) -> dict:
    """The runner's /diagnostics values after ``duration_s`` of flight, minus those at its start."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from tether_deploy import qos

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=os.pathsep.join([str(REPO), str(PKG)]), PYTHONUNBUFFERED="1")
    cols = "[" + ",".join(repr(float(x)) for x in COLUMNS) + "]"
    chrt = {"twin_node": ["chrt", "-f", str(rt_priority - 1)] if rt_priority > 1 else []}
    procs = [subprocess.Popen(
        [*chrt.get(module, []), sys.executable, "-m", f"tether_deploy.{module}", "--ros-args",
         *sum((["-p", f"{k}:={v}"] for k, v in params.items()), [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True) for module, params in (
        ("twin_node", {"policy_dir": policy_dir, "rate_hz": RATE_HZ, "camera_rate_hz": RATE_HZ,
                       "obstacles.cylinders": cols}),
        ("runner_node", {"policy_dir": policy_dir, "autostart": "true", "diagnostics_rate_hz": 1.0,
                         "realtime_priority": rt_priority}))]
    os.environ.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("bench_depth_runner", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    diags: list[dict] = []

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name == "tether/policy_runner":
                diags.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, qos.DIAGNOSTICS, on_diag, qos.DIAGNOSTICS_QOS)
    try:
        end = time.monotonic() + 60.0
        while time.monotonic() < end and not (diags and diags[-1].get("mode") == "policy"
                                              and int(diags[-1].get("ticks", 0)) > 2 * RATE_HZ):
            ex.spin_once(timeout_sec=0.1)
        if not diags or diags[-1].get("mode") != "policy":
            raise SystemExit(f"error: the runner never flew the depth policy (last diagnostics {diags[-1:]})")
        start = dict(diags[-1])
        from tqdm import tqdm

        with tqdm(total=int(duration_s), desc="in the loop", unit="s", disable=not sys.stderr.isatty()) as bar:
            t0 = time.monotonic()
            while time.monotonic() - t0 < duration_s:
                ex.spin_once(timeout_sec=0.1)
                bar.n = int(time.monotonic() - t0)
                bar.refresh()
        n = len(diags)
        while len(diags) == n:  # the next report, after the measured span
            ex.spin_once(timeout_sec=0.1)
        end_values = dict(diags[-1])
    finally:
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"start": start, "end": end_values}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds in the loop [s]")
    ap.add_argument("--quick", action="store_true", help="15 s in the loop, 1000 inferences")
    ap.add_argument("--inferences", type=int, default=5000, help="timed inference calls [1]")
    ap.add_argument("--rt-priority", type=int, default=0, help="SCHED_FIFO priority of the runner (0: normal)")
    ap.add_argument("--stress", type=int, default=0, help="extra busy-looping processes during the measurement")
    ap.add_argument("--domain-id", type=int, default=80 + os.getpid() % 10)
    args = ap.parse_args()
    duration = 15.0 if args.quick else args.duration
    n_inf = 1000 if args.quick else args.inferences

    from depth_policy import write_depth_cnn_policy

    policy_dir = write_depth_cnn_policy(Path(tempfile.mkdtemp()) / "policy", control_rate_hz=RATE_HZ)
    stop = multiprocessing.Event()
    stressors = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.stress)]
    for s in stressors:
        s.start()
    try:
        load0 = os.getloadavg()[0]
        policy_sched = os.sched_getscheduler(0), os.sched_getparam(0)
        if args.rt_priority:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt_priority))
        t = bench_inference(policy_dir, n_inf) * 1e3
        os.sched_setscheduler(0, policy_sched[0], policy_sched[1])
        load_inf = os.getloadavg()[0]
        loop = bench_loop(policy_dir, duration, args.domain_id, args.rt_priority)
        load_loop = os.getloadavg()[0]
    finally:
        stop.set()
        for s in stressors:
            s.join(5)
    a, b = loop["start"], loop["end"]

    def delta(key: str) -> int:
        return int(b.get(key, 0)) - int(a.get(key, 0))

    ticks, missed, no_image = delta("ticks"), delta("missed_ticks"), delta("image_unusable_ticks")
    print(f"depth runner bench ({os.cpu_count()} cores, --rt-priority {args.rt_priority}, --stress {args.stress}; "
          f"load average {load0:.2f} before, "
          f"{load_inf:.2f} after the inference part, {load_loop:.2f} after the loop)")
    print(f"  policy: {policy_dir} (DepthEncoder-sized CNN, inputs obs [17] + depth [1, 48, 64])")
    print(f"  inference, {n_inf} calls, 1 thread: p50 {np.percentile(t, 50):.3f} ms, p99 {np.percentile(t, 99):.3f} ms, "
          f"max {t.max():.3f} ms   (bar: p99 <= 3 ms)")
    print(f"  in the loop, {duration:.0f} s at {RATE_HZ:g} Hz, twin camera at {RATE_HZ:g} Hz, {len(COLUMNS) // 5} columns:")
    print(f"    ticks {ticks}, missed {missed} ({100.0 * missed / max(ticks, 1):.3f} %)   (bar: <= 0.1 %)")
    last = b.get("last_image_problem", "") if no_image else "-"
    print(f"    ticks without a usable image {no_image} ({100.0 * no_image / max(ticks, 1):.3f} %); last: {last}")
    print(f"    state -> command inside the runner (last 5000 ticks): p50 {b.get('state_to_command_p50_us', '?')} us, "
          f"p99 {b.get('state_to_command_p99_us', '?')} us; mode at the end: {b.get('mode')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
