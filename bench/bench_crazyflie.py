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
    python bench/bench_crazyflie.py --rt-priority 50   # SCHED_FIFO for the adapter's threads and the peer
"""

from __future__ import annotations

import argparse
import dataclasses
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
from tether_deploy.realtime import make_realtime  # noqa: E402

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
    total, adapter_only, errors, arrivals = [], [], [], []
    try:
        robot.arm()
        stamp, n, t_end = None, 0, time.monotonic() + duration_s
        with tqdm(total=int(duration_s), desc="hover flight", unit="s", disable=None) as bar:
            while time.monotonic() < t_end:
                s = robot.wait_state(stamp, 1.0)
                arrival = robot.state_arrival_s
                arrivals.append(arrival)
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
            "hold_err_m": float(errors[len(errors) // 2:].max()), "gaps": np.diff(arrivals)}


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_event(events_path: Path, kind: str, after: int, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in events(events_path)[after:] if e["event"] == kind]
        if found:
            return found[0]
        time.sleep(0.005)
    raise RuntimeError(f"the peer did not report {kind!r} within {timeout_s} s")


def loss_trials(peer, events_path: Path, cfg: CrazyflieCfg, how: str, n: int) -> dict:
    """n trials: connect, stream setpoints at 50 Hz for 0.3 s, make the peer lose the link, time the
    peer's loss event -> the adapter's latched stop; a trial whose link was called lost before the
    injection (this process stalled past state_timeout_s) is counted apart and repeated."""
    sig = signal.SIGUSR1 if how == "silent" else signal.SIGUSR2
    onset_kind, back_kind = ("silent", "talking") if how == "silent" else ("port_closed", "port_open")
    times, within, undetected, early = [], 0, 0, 0
    bar = tqdm(total=n, desc=f"link loss ({how})", unit="trial", disable=None)
    while len(times) + undetected < n:
        robot = Crazyflie(cfg)
        robot.connect()
        injected_at = None
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.3 and robot.link_lost is None:
                try:
                    robot.send(CtbrCommand(0.05, [0.0, 0.0, 0.0]))
                except RobotLinkLost:
                    break
                time.sleep(0.02)
            if robot.link_lost is not None:
                early += 1
                continue
            injected_at = len(events(events_path))
            peer.send_signal(sig)
            onset = wait_event(events_path, onset_kind, injected_at)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and not any(w.startswith("link lost") for _t, w in robot.safe_stops):
                try:
                    robot.send(CtbrCommand(0.05, [0.0, 0.0, 0.0]))
                except RobotLinkLost:
                    pass
                time.sleep(0.01)
            stops = [t for t, why in robot.safe_stops if why.startswith("link lost")]
            if not stops:
                undetected += 1
            else:
                dt = stops[0] - onset["monotonic_s"]
                times.append(dt)
                within += dt <= cfg.link_loss_deadline_s
            bar.update(1)
        finally:
            robot.disconnect()
            if injected_at is not None:
                after = len(events(events_path))
                peer.send_signal(sig)  # talk again / reopen the port
                wait_event(events_path, back_kind, after)
    bar.close()
    return {"n": n, "within": within, "missed": undetected, "early": early, "times": np.asarray(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="hover flight for the latency [s]")
    ap.add_argument("--trials", type=int, default=100, help="link-loss trials per kind")
    ap.add_argument("--quick", action="store_true", help="5 s flight, 10 trials per kind")
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="SCHED_FIFO priority for this process's threads and the peer (0: normal scheduling)")
    a = ap.parse_args()
    logging.getLogger("cflib").setLevel(logging.CRITICAL)  # each trial's link error is expected here
    if a.quick:
        a.duration, a.trials = 5.0, 10
    tmp = Path(tempfile.mkdtemp(prefix="bench_crazyflie_"))
    events_path = tmp / "peer_events.jsonl"
    contract_kp = tuple(OnnxPolicy(HOVER_POLICY).contract.action.rate_kp)
    peer, uri = start_peer_process(CrazyfliePeerCfg(port=0, events_path=str(events_path), rate_kp=contract_kp))
    print(f"scheduling: {make_realtime(a.rt_priority)}")  # before any adapter thread: they inherit it
    if a.rt_priority > 0:
        os.sched_setscheduler(peer.pid, os.SCHED_FIFO, os.sched_param(a.rt_priority))
    cfg = CrazyflieCfg(uri=uri, toc_cache_dir=str(tmp / "toc"))
    print(f"machine: {machine()}")
    print(f"adapter: state_timeout_s {cfg.state_timeout_s}, watchdog_period_s {cfg.watchdog_period_s}, "
          f"deadline {cfg.link_loss_deadline_s * 1e3:.0f} ms; log blocks every {cfg.log_period_s * 1e3:.0f} ms")
    try:
        f = fly_and_time(uri, dataclasses.replace(cfg, state_timeout_s=0.4), a.duration)
        print(f"\nstate-in -> command-out over {f['ticks']} ticks at 50 Hz (hover held within {f['hold_err_m']:.3f} m "
              "over the second half):")
        for name, x in (("adapter (policy inference excluded)", f["adapter"]), ("whole tick, ONNX policy included", f["total"])):
            print(f"  {name:38s} p50 {pct(x, 50) * 1e3:.3f} ms  p99 {pct(x, 99) * 1e3:.3f} ms  "
                  f"max {x.max() * 1e3:.3f} ms")
        g = f["gaps"]
        print(f"  state arrival gaps (100 Hz log)        p50 {pct(g, 50) * 1e3:.1f} ms  p99 {pct(g, 99) * 1e3:.1f} ms  "
              f"max {g.max() * 1e3:.1f} ms; {int((g > 0.1).sum())} gaps > 100 ms")
        for how in ("silent", "port_closed"):
            r = loss_trials(peer, events_path, cfg, how, a.trials)
            t = r["times"]
            line = (f"link loss ({how:11s}) -> stop latched: {r['within']}/{r['n']} within "
                    f"{cfg.link_loss_deadline_s * 1e3:.0f} ms ({r['missed']} not detected; {r['early']} connections "
                    "called lost before the injection, repeated)")
            if len(t):
                line += f"; p50 {pct(t, 50) * 1e3:.1f} ms  p99 {pct(t, 99) * 1e3:.1f} ms  max {t.max() * 1e3:.1f} ms"
            print(line)
        print(f"machine at the end: {machine()}")
    finally:
        peer.terminate()
        peer.wait(timeout=10)


if __name__ == "__main__":
    main()
