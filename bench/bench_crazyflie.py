"""The Crazyflie adapter's state-in -> command-out latency and its link-loss-to-safe time, over real UDP
with cflib against the CRTP stand-in (sim/standins/crazyflie_peer.py, its own process).

  * latency: from the moment the adapter's log callback completes a state (cflib's incoming-packet
    thread) to the commander packet handed to the socket, while the ONNX hover policy flies the
    vehicle (tether.runtime + tether.observation, as the runner does) on every other state (50 Hz);
    printed with and without the policy's inference, which runs between the two;
  * link loss: trials where the peer goes silent with its socket open (cflib says nothing) and where
    it closes its port (cflib reports it); each measures the peer's loss event (same monotonic clock)
    -> the adapter's safe_stop, against the configured deadline (state_timeout_s + watchdog_period_s).
Prints figures, never pass/fail.

    python bench/bench_crazyflie.py                 # 20 s of flight, 100 + 100 trials
    python bench/bench_crazyflie.py --quick         # 5 s, 10 + 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "ros2_ws" / "src" / "tether_deploy")]

from hardware.crazyflie import Crazyflie, CrazyflieCfg  # noqa: E402
from hardware.robot import CtbrCommand, RobotLinkLost  # noqa: E402
from sim.standins.crazyflie_peer import CrazyfliePeerCfg, start_peer_process  # noqa: E402
from tether.actions import initial_action  # noqa: E402
from tether.observation import build_observation  # noqa: E402
from tether.runtime import OnnxPolicy  # noqa: E402
from tether_deploy.actuation import ActionToCommand  # noqa: E402

HOVER_POLICY = REPO / "tests" / "fixtures" / "hover_policy"


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x), q))


def fly_and_time(uri: str, cfg: CrazyflieCfg, duration_s: float) -> dict:
    policy = OnnxPolicy(HOVER_POLICY)
    c = policy.contract
    to_command = ActionToCommand(c.action)
    history = np.tile(initial_action(c).astype(np.float32), (c.slice("prev_actions").length // c.action.dim, 1))
    goal = np.array([0.0, 0.0, 0.5])
    robot = Crazyflie(cfg)
    robot.connect()
    total, adapter_only, errors = [], [], []
    try:
        robot.arm()
        stamp, n, t_end = None, 0, time.monotonic() + duration_s
        with tqdm(total=int(duration_s), desc="hover flight", unit="s") as bar:
            while time.monotonic() < t_end:
                s = robot.wait_state(stamp, 1.0)
                arrival = robot.state_arrival_s
                stamp = s.stamp_s
                n += 1
                if n % 2:  # 50 Hz policy on 100 Hz states, ticking on arrival
                    continue
                q = {**s.as_quantities(), "goal_w": goal, "goal_vel_w": np.zeros(3), "prev_actions": history.reshape(-1)}
                infer_start = time.monotonic()
                action = np.asarray(policy(build_observation(c, q)), dtype=np.float32)
                infer_s = time.monotonic() - infer_start
                history[:-1] = history[1:].copy()
                history[-1] = action
                robot.send(to_command(action))
                total.append(robot.last_send_s - arrival)
                adapter_only.append(robot.last_send_s - arrival - infer_s)
                errors.append(float(np.linalg.norm(s.pos_w - goal)))
                bar.n = min(int(duration_s), int(duration_s - (t_end - time.monotonic())))
                bar.refresh()
        robot.safe_stop()
    finally:
        robot.disconnect()
    errors = np.asarray(errors)
    return {"ticks": len(total), "total": np.asarray(total), "adapter": np.asarray(adapter_only),
            "hold_err_m": float(errors[len(errors) // 2:].max())}


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_trials(peer, events_path: Path, cfg: CrazyflieCfg, how: str, n: int) -> dict:
    sig = signal.SIGUSR1 if how == "silent" else signal.SIGUSR2
    onset_kind = "silent" if how == "silent" else "port_closed"
    times, within, hung = [], 0, 0
    for _ in tqdm(range(n), desc=f"link loss ({how})", unit="trial"):
        robot = Crazyflie(cfg)
        robot.connect()
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.3:  # a running control loop at 50 Hz
                robot.send(CtbrCommand(0.05, [0.0, 0.0, 0.0]))
                time.sleep(0.02)
            before = len(events(events_path))
            peer.send_signal(sig)
            deadline = time.monotonic() + 5.0
            while robot.link_lost is None and time.monotonic() < deadline:
                try:
                    robot.send(CtbrCommand(0.05, [0.0, 0.0, 0.0]))
                except RobotLinkLost:
                    pass
                time.sleep(0.02)
            while not any(why.startswith("link lost") for _t, why in robot.safe_stops) and time.monotonic() < deadline:
                time.sleep(0.001)
            onset = [e for e in events(events_path)[before:] if e["event"] == onset_kind]
            stops = [t for t, why in robot.safe_stops if why.startswith("link lost")]
            if not onset or not stops:
                hung += 1
            else:
                dt = stops[0] - onset[0]["monotonic_s"]
                times.append(dt)
                within += dt <= cfg.link_loss_deadline_s
        finally:
            robot.disconnect()
            before = len(events(events_path))
            peer.send_signal(sig)  # talk again / reopen the port
            back = "talking" if how == "silent" else "port_open"
            deadline = time.monotonic() + 10.0
            while not any(e["event"] == back for e in events(events_path)[before:]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the peer did not report {back!r} within 10 s")
                time.sleep(0.005)
    return {"n": n, "within": within, "missed": hung, "times": np.asarray(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="hover flight for the latency [s]")
    ap.add_argument("--trials", type=int, default=100, help="link-loss trials per kind")
    ap.add_argument("--quick", action="store_true", help="5 s flight, 10 trials per kind")
    a = ap.parse_args()
    logging.getLogger("cflib").setLevel(logging.CRITICAL)  # each trial's link error is expected here
    if a.quick:
        a.duration, a.trials = 5.0, 10
    tmp = Path(tempfile.mkdtemp(prefix="bench_crazyflie_"))
    events_path = tmp / "peer_events.jsonl"
    contract_kp = tuple(OnnxPolicy(HOVER_POLICY).contract.action.rate_kp)
    peer, uri = start_peer_process(CrazyfliePeerCfg(port=0, events_path=str(events_path), rate_kp=contract_kp))
    cfg = CrazyflieCfg(uri=uri, toc_cache_dir=str(tmp / "toc"))
    print(f"machine: {machine()}")
    print(f"adapter: state_timeout_s {cfg.state_timeout_s}, watchdog_period_s {cfg.watchdog_period_s}, "
          f"deadline {cfg.link_loss_deadline_s * 1e3:.0f} ms; log blocks every {cfg.log_period_s * 1e3:.0f} ms")
    try:
        f = fly_and_time(uri, cfg, a.duration)
        print(f"\nstate-in -> command-out over {f['ticks']} ticks at 50 Hz (hover held within {f['hold_err_m']:.3f} m "
              "over the second half):")
        for name, x in (("adapter (policy inference excluded)", f["adapter"]), ("whole tick, ONNX policy included", f["total"])):
            print(f"  {name:38s} p50 {pct(x, 50) * 1e3:.3f} ms  p99 {pct(x, 99) * 1e3:.3f} ms  "
                  f"max {x.max() * 1e3:.3f} ms")
        for how in ("silent", "port_closed"):
            r = loss_trials(peer, events_path, cfg, how, a.trials)
            t = r["times"]
            line = (f"link loss ({how:11s}) -> safe_stop: {r['within']}/{r['n']} within {cfg.link_loss_deadline_s * 1e3:.0f} ms"
                    f" ({r['missed']} not detected)")
            if len(t):
                line += f"; p50 {pct(t, 50) * 1e3:.1f} ms  p99 {pct(t, 99) * 1e3:.1f} ms  max {t.max() * 1e3:.1f} ms"
            print(line)
        print(f"machine at the end: {machine()}")
    finally:
        peer.terminate()
        peer.wait(timeout=10)


if __name__ == "__main__":
    main()
