"""Simulator throughput: env-steps/s against the number of envs, for four implementations of one step.

One env-step is one control step (all its substeps) of one env. Every implementation runs the same
model: motor lag, per-env randomized parameters (sample_params with the task's default ranges), the
default control rate, substeps and action space of QuadrotorTaskCfg, an external-force input (as the
env passes it), starts tilted and spinning as at an env reset, a hover command held.

  eager           dynamics.step, eager
  compiled        torch.compile(dynamics.step, dynamic=False), as RunCfg(physics="compiled") does
  fused_eager     sim.quadrotor.fused, eager
  fused_compiled  sim.quadrotor.fused.compiled_rollout: one inductor kernel per step, state in place

Figures are wall-clock medians over repeats, with the best repeat and the rate per CPU-second of this
process (less sensitive to other load on a shared machine; with 2 threads it counts OpenMP spin-waits
too). Ratios are against eager in the same run, same device, threads and batch. The 1-min load average
is recorded with each row. A compiled kernel is checked against eager dynamics.step before it is timed.
Never pass/fail.

    python bench/bench_sim_throughput.py            # 4k..1M envs, 1 and 2 threads, cold/warm compile
    python bench/bench_sim_throughput.py --quick    # 4k and 64k envs, 1 thread
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.math import quat_mul, random_quat_within  # noqa: E402
from sim.quadrotor import dynamics, fused  # noqa: E402
from sim.randomization import sample_params  # noqa: E402
from sim.tasks.quadrotor_env import QuadrotorTaskCfg  # noqa: E402

IMPLS = ("eager", "compiled", "fused_eager", "fused_compiled")
FULL_SIZES = (4096, 16384, 65536, 262144, 1048576)
QUICK_SIZES = (4096, 65536)


@dataclasses.dataclass
class Setup:
    cfg: QuadrotorTaskCfg
    device: torch.device
    num_envs: int
    params: dynamics.QuadParams
    state: dynamics.QuadState
    ext_force_w: torch.Tensor  # [N, 3] N
    rotor_cmd: torch.Tensor | None  # [N, R] in [0, 1]
    ctbr: dynamics.CtbrSetpoint | None
    spec: fused.FusedSpec

    @property
    def command_rows(self) -> torch.Tensor:
        """[1, A, N] fused command"""
        c = (fused.pack_command(self.rotor_cmd) if self.ctbr is None
             else fused.pack_command(thrust_n=self.ctbr.thrust_n, rates_b=self.ctbr.rates_b))
        return c.unsqueeze(0)


def make_setup(cfg: QuadrotorTaskCfg, num_envs: int, device: torch.device, seed: int = 0) -> Setup:
    """Randomized vehicles, env-reset-like starts (tilt, heading, velocity, body rate), hover command."""
    v, n = cfg.vehicle, num_envs
    g = torch.Generator(device=device).manual_seed(seed)
    p = sample_params(v, cfg.randomization, n, g, device)

    def sym(scale: float, dim: int = 3) -> torch.Tensor:
        return (2.0 * torch.rand(n, dim, generator=g, device=device) - 1.0) * scale

    yaw = sym(cfg.init_yaw_rad, 1)
    yaw_q = torch.cat([torch.cos(0.5 * yaw), torch.zeros(n, 2, device=device), torch.sin(0.5 * yaw)], dim=-1)
    s = dynamics.hover_state(n, v, device)._replace(
        pos_w=torch.tensor(cfg.goal_w, device=device) + sym(cfg.init_pos_m),
        quat_wxyz=quat_mul(yaw_q, random_quat_within(n, cfg.init_tilt_rad, g, device)),
        lin_vel_w=sym(cfg.init_lin_vel_m_s), ang_vel_b=sym(cfg.init_ang_vel_rad_s))
    ext = torch.zeros(n, 3, device=device)
    if cfg.action_space == "rotor":
        rotor_cmd = torch.full((n, len(v.rotor_spin)), v.hover_rpm / v.max_rpm, device=device)
        ctbr, ctrl = None, None
    else:
        ctrl = dynamics.make_rate_controller(v, cfg.rate_kp, device)
        thrust = torch.full((n, 1), v.mass_kg * 9.81, device=device)
        ctbr, rotor_cmd = dynamics.CtbrSetpoint(thrust, torch.zeros(n, 3, device=device), ctrl), None
    spec = fused.FusedSpec.from_params(p, cfg.control_dt, cfg.substeps, ctrl)
    return Setup(cfg, device, n, p, s, ext, rotor_cmd, ctbr, spec)


def fresh_function(fn):
    """A copy of ``fn`` with its own code object, so torch.compile keeps one graph per (batch, threads)
    instead of counting recompiles on one code object (it falls back to eager after the limit)."""
    return type(fn)(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


_COMPILED_STEP: dict[tuple, object] = {}


def compiled_dynamics_step(su: Setup):
    """torch.compile(dynamics.step), one per (device, threads, batch): inductor bakes in the thread count."""
    key = (str(su.device), torch.get_num_threads(), su.num_envs)
    if key not in _COMPILED_STEP:
        _COMPILED_STEP[key] = torch.compile(fresh_function(dynamics.step), dynamic=False)
    return _COMPILED_STEP[key]


def make_stepper(impl: str, su: Setup):
    """(advance one control step, read the state back as a QuadState), each in the impl's own layout."""
    c = su.cfg
    if impl in ("eager", "compiled"):
        physics = dynamics.step if impl == "eager" else compiled_dynamics_step(su)
        box = [su.state]

        def run():
            box[0] = physics(box[0], su.rotor_cmd, su.params, c.control_dt, c.substeps, su.ext_force_w, su.ctbr)
        return run, lambda: box[0]
    params, cmds, ext = fused.pack_params(su.params, su.spec), su.command_rows, su.ext_force_w.T.contiguous()
    state = fused.pack_state(su.state)
    if impl == "fused_eager":
        def run():
            fused.rollout_(su.spec, state, params, cmds, ext)
    else:
        kernel = fused.compiled_rollout(su.spec, 1, su.num_envs, with_ext_force=True, device=su.device)

        def run():
            kernel(state, params, cmds, ext)
    return run, lambda: fused.unpack_state(state)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_against_eager(impl: str, su: Setup, steps: int = 2) -> dict:
    """Max |difference| to eager dynamics.step after a few steps from the same start."""
    run, get = make_stepper(impl, su)
    ref = su.state
    c = su.cfg
    for _ in range(steps):
        run()
        ref = dynamics.step(ref, su.rotor_cmd, su.params, c.control_dt, c.substeps, su.ext_force_w, su.ctbr)
    out = get()
    return {"pos_m": float((out.pos_w - ref.pos_w).abs().max()),
            "quat": float((out.quat_wxyz - ref.quat_wxyz).abs().max()),
            "ang_vel_rad_s": float((out.ang_vel_b - ref.ang_vel_b).abs().max())}


def measure(impl: str, su: Setup, repeats: int, min_time_s: float) -> dict:
    run, _ = make_stepper(impl, su)
    t0 = time.perf_counter()
    run()
    sync(su.device)
    first_call_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    sync(su.device)
    per_call = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, int(min_time_s / per_call))
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            run()
        sync(su.device)
        wall.append(su.num_envs * calls / (time.perf_counter() - w0))
        cpu.append(su.num_envs * calls / max(time.process_time() - c0, 1e-9))
    return {"env_steps_per_s_median": statistics.median(wall), "env_steps_per_s_best": max(wall),
            "env_steps_per_s_per_cpu_s": statistics.median(cpu), "first_call_s": first_call_s,
            "calls_per_repeat": calls, "repeats": repeats}


def fused_bytes_per_env_step(spec: fused.FusedSpec) -> int:
    """Memory traffic of the compiled kernel per env-step: state read + written, params, command, force."""
    s, p = len(fused.state_rows(spec.n_rotors)), len(fused.param_rows(spec.n_rotors))
    return 4 * (2 * s + p + spec.command_dim + 3)


def compile_times(cfg: QuadrotorTaskCfg, num_envs: int) -> dict:
    """First-call time of fused_compiled and compiled with an empty inductor cache (cold), then again
    in a new process with the cache it left (warm), each in a child process of this script."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="tether-inductor-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            cmd = [sys.executable, __file__, "--_first-call", str(num_envs), "--action-space", cfg.action_space]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    return {"num_envs": num_envs, "threads": 1, **out}


def first_call_child(cfg: QuadrotorTaskCfg, num_envs: int) -> None:
    torch.set_num_threads(1)
    su = make_setup(cfg, num_envs, torch.device("cpu"))
    times = {}
    for impl in ("fused_compiled", "compiled"):
        run, _ = make_stepper(impl, su)
        t0 = time.perf_counter()
        run()
        times[f"{impl}_first_call_s"] = time.perf_counter() - t0
    print(json.dumps(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4k and 64k envs, 1 thread, no cold-compile run")
    ap.add_argument("--num-envs", type=int, nargs="+", help=f"default {FULL_SIZES} ({QUICK_SIZES} with --quick)")
    ap.add_argument("--threads", type=int, nargs="+", help="CPU thread counts (default 1 2; 1 with --quick)")
    ap.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--action-space", choices=("rotor", "ctbr"), default=QuadrotorTaskCfg.action_space,
                    help="default: QuadrotorTaskCfg's")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per repeat")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--no-compile-times", action="store_true", help="skip the cold/warm compile-time children")
    ap.add_argument("--out", default="artifacts/bench/sim_throughput.json")
    ap.add_argument("--_first-call", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = QuadrotorTaskCfg(action_space=args.action_space)
    if args._first_call:
        first_call_child(cfg, args._first_call)
        return 0
    sizes = args.num_envs or (QUICK_SIZES if args.quick else FULL_SIZES)
    threads = args.threads or ([1] if args.quick else [1, 2])
    repeats, min_time = (3, 0.2) if args.quick else (args.repeats, args.min_time)
    targets = [(torch.device("cpu"), t) for t in threads]
    if torch.cuda.is_available() and not args.no_cuda:
        targets.append((torch.device("cuda"), torch.get_num_threads()))

    from tqdm import tqdm

    combos = [(d, t, n, impl) for d, t in targets for n in sizes for impl in args.impl]
    rows = []
    bar = tqdm(combos, desc="sim throughput", unit="run", file=sys.stderr)
    for device, nthreads, n, impl in bar:
        bar.set_postfix_str(f"{device.type} {nthreads}t {n} {impl}")
        torch.set_num_threads(nthreads)
        su = make_setup(cfg, n, device)
        row = {"device": device.type, "threads": nthreads, "num_envs": n, "impl": impl,
               "load_avg_1m_before": os.getloadavg()[0]}
        row.update(measure(impl, su, repeats, min_time))  # its first call compiles
        if impl in ("compiled", "fused_compiled"):
            row["check_vs_eager_after_2_steps"] = check_against_eager(impl, su)
        row["load_avg_1m_after"] = os.getloadavg()[0]
        if impl == "fused_compiled":
            row["bytes_per_env_step"] = fused_bytes_per_env_step(su.spec)
            row["memory_gb_per_s"] = row["env_steps_per_s_median"] * row["bytes_per_env_step"] / 1e9
        rows.append(row)
    bar.close()
    for row in rows:
        base = next((r for r in rows if r["impl"] == "eager" and all(
            r[k] == row[k] for k in ("device", "threads", "num_envs"))), None)
        row["speedup_vs_eager"] = row["env_steps_per_s_median"] / base["env_steps_per_s_median"] if base else None

    compile_info = None
    if not args.quick and not args.no_compile_times:
        print("compile time, cold and warm inductor cache (child processes) ...", file=sys.stderr)
        compile_info = compile_times(cfg, 65536)

    summary = {
        "what": "env-steps/s of one control step; motor lag, per-env randomized params, external force",
        "task_cfg": {"preset": cfg.preset, "action_space": cfg.action_space, "control_rate_hz": cfg.control_rate_hz,
                     "substeps": cfg.substeps, "randomization": dataclasses.asdict(cfg.randomization)},
        "machine": {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine(), "cpu_count": os.cpu_count(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "inductor_options_fused": fused.INDUCTOR_OPTIONS,
        "results": rows, "compile_times": compile_info,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))

    print(f"\n{cfg.preset}, {cfg.action_space}, {cfg.control_rate_hz:g} Hz x {cfg.substeps} substeps; "
          f"M env-steps/s (wall median / best / per CPU-second); x = vs eager, same row group")
    print("| device | thr | envs | impl | median | best | per cpu-s | x eager | first call [s] | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        x = f"{r['speedup_vs_eager']:.1f}" if r["speedup_vs_eager"] else "-"
        print(f"| {r['device']} | {r['threads']} | {r['num_envs']} | {r['impl']} | "
              f"{r['env_steps_per_s_median'] / 1e6:.2f} | {r['env_steps_per_s_best'] / 1e6:.2f} | "
              f"{r['env_steps_per_s_per_cpu_s'] / 1e6:.2f} | {x} | {r['first_call_s']:.1f} | "
              f"{r['load_avg_1m_before']:.1f} |")
    best = max((r for r in rows if r["impl"] == "fused_compiled"), key=lambda r: r["env_steps_per_s_median"],
               default=None)
    if best:
        print(f"best fused_compiled: {best['env_steps_per_s_median'] / 1e6:.1f} M env-steps/s "
              f"({best['device']}, {best['threads']} thread(s), {best['num_envs']} envs), "
              f"{best['memory_gb_per_s']:.1f} GB/s of state/param traffic; check vs eager "
              f"{best['check_vs_eager_after_2_steps']}")
    if compile_info:
        print(f"compile, {compile_info['num_envs']} envs: cold {compile_info['cold']}, warm {compile_info['warm']}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
