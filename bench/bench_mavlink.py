"""MAVLink adapter figures against the stand-in vehicle in its own process (real pymavlink, real UDP):

  1. state in -> command out: from the adapter's receiver parsing a state message (ATTITUDE_QUATERNION or
     LOCAL_POSITION_NED) to SET_ATTITUDE_TARGET written to the socket, with a hover controller and the
     contract's action mapping (tether.actions) in between, while the vehicle flies in OFFBOARD;
     The adapter's own work alone (bytes of a state message -> parse -> RobotState -> send() -> bytes of a
     SET_ATTITUDE_TARGET, one thread, no controller, no socket) is timed apart, for what the machine adds;
  2. link loss -> safe: the stand-in goes silent (SIGUSR1; its socket stays open) and the time from its last
     packet to the adapter having stopped its setpoints and latched RobotLinkLost is compared with
     link_loss_deadline_s, over --trials trials (a fresh connect each).

Prints figures, never pass/fail:
    python bench/bench_mavlink.py                 # 20 s of flight, 100 trials
    python bench/bench_mavlink.py --quick         # 5 s, 20 trials
    python bench/bench_mavlink.py --png out.png   # and both distributions as a picture
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hardware.mavlink import ArduPilotCfg, MavlinkVehicle, Px4Cfg  # noqa: E402
from hardware.robot import CtbrCommand, RobotLinkLost  # noqa: E402
from sim.quadrotor.presets import PRESETS  # noqa: E402
from sim.standins.mavlink_vehicle import position_hold_ctbr  # noqa: E402
from tether.actions import ActionMap  # noqa: E402
from tether.contract import ActionSpec  # noqa: E402

PRESET = PRESETS["px4_1kg"]
CFGS = {"px4": Px4Cfg, "ardupilot": ArduPilotCfg}
FLAVOUR = ["px4"]  # set once by main(): which autopilot the stand-in and the adapter are
GOAL_W = np.array([0.0, 0.0, 1.0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_standin(port: int, flavour: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    # 5 Hz heartbeats only shorten each trial's connect(); loss is detected on the 100 Hz state stream
    proc = subprocess.Popen([sys.executable, "-m", "sim.standins.mavlink_vehicle", "--connection",
                             f"udpout:127.0.0.1:{port}", "--heartbeat-rate-hz", "5", "--flavour", flavour],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("mavlink stand-in"):
        raise RuntimeError(f"the stand-in did not start: {line!r}")
    return proc


def toggle_silence(proc: subprocess.Popen) -> int:
    """SIGUSR1 the stand-in; returns the monotonic time of its last packet before the toggle [ns]."""
    proc.send_signal(signal.SIGUSR1)
    line = proc.stdout.readline().split()
    return int(line[3])


def vehicle_cfg(port: int, **kw):
    return CFGS[FLAVOUR[0]](connection=f"udpin:127.0.0.1:{port}", vehicle_name=PRESET.name, mass_kg=PRESET.mass_kg,
                  max_thrust_n=PRESET.max_thrust_n, **kw)


def control_step(v: MavlinkVehicle, amap: ActionMap) -> None:
    state = v.read()
    thrust_n, rates = amap.to_ctbr(amap.from_ctbr(*position_hold_ctbr(state, GOAL_W, PRESET.mass_kg)))
    v.send(CtbrCommand(thrust_n, rates))


def bench_latency(port: int, seconds: float) -> dict[str, np.ndarray]:
    v = MavlinkVehicle(vehicle_cfg(port))
    amap = ActionMap(ActionSpec(type="ctbr", dim=4, max_thrust_n=PRESET.max_thrust_n,
                                body_rate_limits_rad_s=v.cfg.body_rate_limits_rad_s))
    v.connect()
    v.arm()
    handoff, total, own, seq = [], [], [], 0
    try:
        end = time.monotonic() + seconds + 3.0
        warmup_end = time.monotonic() + 3.0  # the climb to the goal is not measured
        with tqdm(total=int(seconds), desc="flight", unit="s", disable=None) as bar:
            while time.monotonic() < end:
                seq, rx_ns = v.wait_state(seq, 1.0)
                woke_ns = time.monotonic_ns()
                state = v.read()
                read_ns = time.monotonic_ns()
                thrust_n, rates = amap.to_ctbr(amap.from_ctbr(*position_hold_ctbr(state, GOAL_W, PRESET.mass_kg)))
                ctrl_ns = time.monotonic_ns()
                v.send(CtbrCommand(thrust_n, rates))
                out_ns = time.monotonic_ns()
                if time.monotonic() > warmup_end:
                    handoff.append(woke_ns - rx_ns)
                    total.append(out_ns - rx_ns)
                    own.append((out_ns - rx_ns) - (ctrl_ns - read_ns))
                done_s = min(int(seconds), max(0, int(time.monotonic() - warmup_end)))
                if done_s > bar.n:
                    bar.update(done_s - bar.n)
        pos = v.read().pos_w
    finally:
        v.land()
        v.disconnect()
    return {"total_ms": np.array(total) * 1e-6, "handoff_ms": np.array(handoff) * 1e-6,
            "adapter_ms": np.array(own) * 1e-6, "final_pos": pos}


class _NullLink:
    """A link that drops what it is given (the adapter's own work, without the socket)."""

    def write(self, buf) -> None:
        pass

    def close(self) -> None:
        pass


def bench_adapter_alone(n: int) -> np.ndarray:
    """[n] ms: a state message's bytes parsed into the adapter's state, read(), send() encoded, one thread."""
    from pymavlink.dialects.v20 import ardupilotmega as m

    v = MavlinkVehicle(vehicle_cfg(0, heartbeat_timeout_s=1e9))  # never connected: its link is a _NullLink
    v._conn, v._target = _NullLink(), (1, 1)
    v._mav = m.MAVLink(v._conn, srcSystem=1, srcComponent=191)
    vehicle = m.MAVLink(None, srcSystem=1, srcComponent=1)
    att = m.MAVLink_attitude_quaternion_message(0, 1.0, 0.0, 0.0, 0.0, 0.01, 0.02, 0.03, [0, 0, 0, 0]).pack(vehicle)
    pos = m.MAVLink_local_position_ned_message(0, 0.1, 0.2, -1.0, 0.0, 0.0, 0.0).pack(vehicle)
    cmd = CtbrCommand(PRESET.mass_kg * 9.81, (0.1, -0.1, 0.05))
    out = np.empty(n)
    for i in range(n):
        t0 = time.monotonic_ns()
        for msg in v._mav.parse_buffer(att if i % 2 else pos):
            v._handle(msg, t0)
        if v._att is not None and v._pos is not None:
            v.read()
            v.send(cmd)
        out[i] = (time.monotonic_ns() - t0) * 1e-6
    return out[2:]


def link_loss_trial(proc: subprocess.Popen, port: int, deadline_s: float, amap_cache: dict):
    """One trial: connect, stream, go silent; returns (last packet -> loss latched [s], last packet -> read()
    raised in the control loop [s], last packet -> last setpoint sent [s], no setpoint after the latch);
    -inf times for a loss declared before the vehicle went silent (a false alarm: its stream stalled)."""
    v = MavlinkVehicle(vehicle_cfg(port, link_loss_deadline_s=deadline_s, land_on_link_return=False))
    amap = amap_cache.setdefault("amap", ActionMap(ActionSpec(type="ctbr", dim=4, max_thrust_n=PRESET.max_thrust_n,
                                                              body_rate_limits_rad_s=v.cfg.body_rate_limits_rad_s)))
    v.connect()
    last_tx_ns = None
    try:
        seq, silent_at = 0, time.monotonic() + 0.3
        while True:
            try:
                seq, _ = v.wait_state(seq, 2.0)
                control_step(v, amap)  # disarmed: the setpoints stream, the motors stay off
            except RobotLinkLost:
                raised_ns = time.monotonic_ns()
                if last_tx_ns is None:
                    return -np.inf, -np.inf, -np.inf, False
                break
            if last_tx_ns is None and time.monotonic() > silent_at:
                last_tx_ns = toggle_silence(proc)
        stopped = v.last_setpoint_tx_ns <= v.link_lost_at_ns
        return ((v.link_lost_at_ns - last_tx_ns) * 1e-9, (raised_ns - last_tx_ns) * 1e-9,
                (v.last_setpoint_tx_ns - last_tx_ns) * 1e-9, stopped)
    finally:
        if last_tx_ns is not None:
            toggle_silence(proc)
        v.disconnect()


def plot(path: Path, latency_ms: np.ndarray, loss_s: np.ndarray, deadline_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.hist(latency_ms, bins=80, log=True)
    a.axvline(np.percentile(latency_ms, 99), color="k", ls="--", label="p99")
    a.set(xlabel="state in -> SET_ATTITUDE_TARGET out [ms]", ylabel="states", title="MAVLink adapter latency")
    a.legend()
    b.hist(loss_s * 1e3, bins=30)
    b.axvline(deadline_s * 1e3, color="r", label="link_loss_deadline_s")
    b.set(xlabel="vehicle's last packet -> stream stopped [ms]", ylabel="trials", title=f"{len(loss_s)} link losses")
    b.legend()
    fig.text(0.01, 0.01, f"{platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured flight for the latency [s]")
    ap.add_argument("--trials", type=int, default=100, help="link-loss trials")
    ap.add_argument("--deadline", type=float, default=0.1, help="link_loss_deadline_s of the trials [s]")
    ap.add_argument("--quick", action="store_true", help="5 s, 20 trials")
    ap.add_argument("--flavour", choices=sorted(CFGS), default="px4", help="the autopilot (adapter and stand-in)")
    ap.add_argument("--png", type=Path, help="write both distributions to this PNG")
    ap.add_argument("--switch-interval", type=float, default=sys.getswitchinterval(),
                    help="this process's sys.setswitchinterval [s] (Python's 0.005 by default; a smaller one "
                         "shortens the GIL hand-off from the receiver thread)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --png")
    args = ap.parse_args()
    if args.png is not None and args.png.exists() and not args.force:
        sys.exit(f"error: {args.png} exists; choose another --png path or pass --force")
    seconds, trials = (5.0, 20) if args.quick else (args.seconds, args.trials)
    sys.setswitchinterval(args.switch_interval)
    FLAVOUR[0] = args.flavour
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; load before "
          f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min); Python "
          f"{platform.python_version()}, switch interval {sys.getswitchinterval() * 1e3:g} ms; {args.flavour}")
    port = free_port()
    proc = start_standin(port, args.flavour)
    try:
        lat = bench_latency(port, seconds)
        t, h, a = lat["total_ms"], lat["handoff_ms"], lat["adapter_ms"]
        print(f"state in -> command out ({len(t)} states, {seconds:g} s flown by setpoints, hover at "
              f"{np.round(lat['final_pos'], 3).tolist()} m): p50 {np.percentile(t, 50):.3f} ms, p99 "
              f"{np.percentile(t, 99):.3f} ms, max {t.max():.3f} ms; of it receiver -> control thread p50 "
              f"{np.percentile(h, 50):.3f} ms, p99 {np.percentile(h, 99):.3f} ms; the adapter's own share (all but the "
              f"controller) p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms")
        alone = bench_adapter_alone(20000)
        print(f"the adapter's own work alone (one thread, 20000 messages): p50 {np.percentile(alone, 50) * 1e3:.0f} us, "
              f"p99 {np.percentile(alone, 99) * 1e3:.0f} us, max {alone.max():.3f} ms")
        latched, raised, last_sp, stopped, cache = [], [], [], 0, {}
        for _ in tqdm(range(trials), desc="link-loss trials", disable=None):
            a, b, c, ok = link_loss_trial(proc, port, args.deadline, cache)
            latched.append(a)
            raised.append(b)
            last_sp.append(c)
            stopped += ok
        latched, raised, last_sp = np.array(latched), np.array(raised), np.array(last_sp)
        false_alarms = int(np.sum(np.isinf(latched)))
        latched, raised, last_sp = (x[np.isfinite(x)] for x in (latched, raised, last_sp))
        within = int(np.sum(latched <= args.deadline))
        print(f"link loss -> safe (deadline {args.deadline * 1e3:.0f} ms): stream stopped and RobotLinkLost latched "
              f"within the deadline in {within} of {trials} trials (median {np.median(latched) * 1e3:.1f} ms, max "
              f"{latched.max() * 1e3:.1f} ms after the vehicle's last packet); no setpoint after the loss in "
              f"{stopped} of {trials}; the control loop saw RobotLinkLost after median "
              f"{np.median(raised) * 1e3:.1f} ms, max {raised.max() * 1e3:.1f} ms; false alarms (loss declared while "
              f"the vehicle was sending) {false_alarms}; the last setpoint left at most {last_sp.max() * 1e3:.1f} ms "
              f"after the vehicle's last packet ({int(np.sum(last_sp <= args.deadline))} of {len(last_sp)} within "
              f"the deadline)")
        if args.png is not None:
            plot(args.png, t, latched, args.deadline)
            print(f"wrote {args.png}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"load after {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
