"""The GPU figures of issue 13 in one short run: simulator throughput, training-env throughput, PPO
throughput (with its env / update split), time-to-hover, and parity of the device against the CPU.

Runs on any device, so it is tested on a CPU (``--device cpu``) and run as is whenever a GPU is lent:

    python bench/bench_gpu.py --device cuda                     # the full set, ~5 min on one GPU
    python bench/bench_gpu.py --device cpu --quick              # a CPU smoke run of every section
    python bench/bench_gpu.py --device cuda --only sim env      # a subset

Sections (figures are medians over repeats; never pass/fail):
  sim     the fused physics kernel alone (sim.quadrotor.fused.compiled_rollout), env-steps/s by env count
  env     the training env's step (physics, observation, reward, dones, resets): eager vs fused
  ppo     PPO end to end on the fused env: env-steps/s, and the rollout vs update split
  hover   time-to-hover (bench/time_to_hover.py's rule) over --seeds: train on the device, judge on the CPU
  parity  the fused env on the device against the same env on the CPU, from the same state, same actions

Writes JSON (--out) with the machine, the device name and the 1-min load average of each row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.ppo import PPOCfg, train  # noqa: E402
from sim.quadrotor import fused  # noqa: E402
from sim.quadrotor.dynamics import hover_state  # noqa: E402
from sim.randomization import RandomizationCfg, sample_params  # noqa: E402
from sim.tasks import make_env  # noqa: E402
from sim.tasks.fused_env import FusedQuadrotorEnv  # noqa: E402
from sim.tasks.hover import HoverCfg, HoverEnv  # noqa: E402


def load() -> float:
    return os.getloadavg()[0]


def wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_S: list[float] = []  # CPU seconds of this process per call, of the last timed(): less sensitive to other load


def timed(fn, device: torch.device, repeats: int, calls: int) -> float:
    """Median wall seconds per call over ``repeats`` runs of ``calls`` calls."""
    fn()
    wait(device)
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        wait(device)
        times.append((time.perf_counter() - t) / calls)
        cpu.append((time.process_time() - c) / calls)
    CPU_S[:] = [statistics.median(cpu)]
    return statistics.median(times)


def bench_sim(device, sizes, repeats) -> list[dict]:
    cfg = HoverCfg()
    rows = []
    for n in sizes:
        gen = torch.Generator(device=device).manual_seed(0)
        params = sample_params(cfg.vehicle, cfg.randomization, n, gen, device)
        env = make_env("hover", num_envs=1, physics="eager")  # the rate controller of the task
        spec = fused.FusedSpec.from_params(params, cfg.control_dt, cfg.substeps, env.rate_ctrl)
        p = fused.pack_params(params, spec)
        x = tuple(r.clone() for r in fused.pack_state(hover_state(n, cfg.vehicle, device)))
        hover = env.hover_action.to(device)
        thrust = 0.5 * (hover[0] + 1.0) * cfg.vehicle.max_thrust_n
        cmd = torch.zeros(1, 4, n, device=device)
        cmd[0, 0] = thrust
        fn = fused.compiled_rollout(spec, 1, n, device=device)
        s = timed(lambda: fn(x, p, cmd), device, repeats, 20)
        rows.append({"num_envs": n, "env_steps_per_s": n / s, "load_1min": load()})
        print(f"  sim    {n:>9d} envs  {n / s / 1e6:9.2f} M env-steps/s  (load {load():.2f})", flush=True)
    return rows


def bench_env(device, sizes, repeats, eager: bool) -> list[dict]:
    """Eager and fused envs built side by side and timed interleaved (eager, fused, eager, ...), so both
    see the same load; medians over ``repeats`` rounds, wall and CPU seconds of this process."""
    rows = []
    for n in sizes:
        row = {"num_envs": n}
        kinds = ("eager", "fused") if eager else ("fused",)
        envs, steps, wall, cpu = {}, {}, {k: [] for k in kinds}, {k: [] for k in kinds}
        for physics in kinds:
            env = envs[physics] = make_env("hover", num_envs=n, device=str(device), seed=0, physics=physics)
            env.reset()
            gen = torch.Generator(device=device).manual_seed(1)
            actions = env.hover_action + 0.2 * torch.randn(n, env.cfg.action_dim, generator=gen, device=device)
            steps[physics] = (lambda e, a: lambda: e.step(a))(env, actions)
            steps[physics]()  # compiles (or loads the kernels) outside the timing
        for _ in range(repeats):
            for physics in kinds:
                s = timed(steps[physics], device, 1, 5 if physics == "eager" else 50)
                wall[physics].append(s)
                cpu[physics].append(CPU_S[0])
        for physics in kinds:
            s, c = statistics.median(wall[physics]), statistics.median(cpu[physics])
            row[f"{physics}_env_steps_per_s"] = n / s
            row[f"{physics}_env_steps_per_cpu_s"] = n / c
            print(f"  env    {n:>9d} envs  {physics:5s} {n / s / 1e6:9.3f} M env-steps/s, {n / c / 1e6:9.3f} M "
                  f"per CPU-second ({c * 1e3:.2f} CPU-ms per step, median of {repeats} interleaved rounds; "
                  f"load {load():.2f})", flush=True)
        if eager:
            row["fused_over_eager"] = row["fused_env_steps_per_s"] / row["eager_env_steps_per_s"]
            row["fused_over_eager_per_cpu_s"] = row["fused_env_steps_per_cpu_s"] / row["eager_env_steps_per_cpu_s"]
            print(f"  env    fused / eager: {row['fused_over_eager']:.1f}x wall, "
                  f"{row['fused_over_eager_per_cpu_s']:.1f}x per CPU-second", flush=True)
        row["load_1min"] = load()
        rows.append(row)
    return rows


def bench_ppo(device, num_envs, iterations) -> dict:
    env = make_env("hover", num_envs=num_envs, device=str(device), seed=0, physics="fused")
    cfg = PPOCfg(num_iterations=iterations, save_interval=iterations)
    logs = []

    class Writer:  # the per-iteration logs train() writes, kept to read the split
        def add_scalar(self, key, value, step):
            if key in ("charts/rollout_s", "charts/update_s"):
                logs.append((key, value, step))

    with tempfile.TemporaryDirectory(prefix="tether-bench-ppo-") as tmp:
        t = time.perf_counter()
        train(env, "hover", cfg, Path(tmp) / "run", progress=False, writer=Writer())
        wall = time.perf_counter() - t
    first = min(step for _, _, step in logs)  # the first iteration compiles: left out
    rollout = sum(v for k, v, step in logs if k == "charts/rollout_s" and step != first)
    update = sum(v for k, v, step in logs if k == "charts/update_s" and step != first)
    steps = (iterations - 1) * num_envs * cfg.num_steps
    out = {"num_envs": num_envs, "iterations": iterations, "env_steps_per_s": steps / (rollout + update),
           "rollout_s_per_iteration": rollout / (iterations - 1), "update_s_per_iteration": update / (iterations - 1),
           "wall_s_incl_compile": wall, "load_1min": load()}
    print(f"  ppo    {num_envs:>9d} envs  {out['env_steps_per_s'] / 1e6:9.3f} M env-steps/s end to end; per "
          f"iteration rollout {out['rollout_s_per_iteration'] * 1e3:.1f} ms, update "
          f"{out['update_s_per_iteration'] * 1e3:.1f} ms  (load {load():.2f})", flush=True)
    return out


def bench_hover(device, seeds, num_envs, iterations) -> dict:
    from bench.time_to_hover import run_seed
    from policies.evaluation import AcceptanceCfg

    args = argparse.Namespace(num_envs=num_envs, iterations=iterations, save_interval=5, min_iteration=10,
                              physics="fused", device=str(device), compile=False)
    with tempfile.TemporaryDirectory(prefix="tether-bench-tth-") as tmp:
        results = [run_seed("hover", s, args, AcceptanceCfg(), Path(tmp)) for s in seeds]
    times = [r["time_to_pass_s"] for r in results if r["passed"]]
    out = {"seeds": results, "median_time_to_pass_s": statistics.median(times) if times else None,
           "all_seeds_pass": len(times) == len(results), "load_1min": load()}
    print(f"  hover  median time-to-hover {out['median_time_to_pass_s']} s over {len(seeds)} seeds "
          f"(all pass: {out['all_seeds_pass']})", flush=True)
    return out


def bench_parity(device, num_envs, steps) -> dict:
    """The fused env on ``device`` and on the CPU, from the CPU env's state, stepped with the same actions
    in a long episode (no resets: the two devices' generators draw different starts)."""
    rand = dataclasses.replace(RandomizationCfg(), obs_noise_pos_m=0.0, obs_noise_vel_m_s=0.0, obs_noise_rot=0.0,
                               obs_noise_ang_vel_rad_s=0.0)
    cfg = dataclasses.replace(HoverCfg(), randomization=rand, episode_length_s=1e6, max_distance_m=1e6,
                              ground_z_m=-1e6)
    cpu = make_env("hover", cfg, num_envs=num_envs, seed=3, physics="fused")
    dev = FusedQuadrotorEnv(cfg, dataclasses.replace(cpu.run, device=str(device)), HoverEnv)
    cpu.reset()
    dev.reset()
    # the CPU env's whole buffer (state, vehicles, goals, queues, ...), in the device env's block layout
    dev.buf = dev._to_blocks(cpu._rows(cpu.buf, slice(None)).to(device))
    gen = torch.Generator().manual_seed(0)
    worst_obs = worst_rew = 0.0
    for _ in range(steps):
        actions = cpu.hover_action + 0.2 * torch.randn(num_envs, cfg.action_dim, generator=gen)
        obs_c, rew_c = cpu.step(actions)[:2]
        obs_d, rew_d = dev.step(actions.to(device))[:2]
        worst_obs = max(worst_obs, float((obs_c["policy"] - obs_d["policy"].cpu()).abs().max()))
        worst_rew = max(worst_rew, float((rew_c - rew_d.cpu()).abs().max()))
    out = {"num_envs": num_envs, "steps": steps, "max_abs_obs_diff": worst_obs, "max_abs_reward_diff": worst_rew}
    print(f"  parity {num_envs:>9d} envs x {steps} steps: max |obs diff| {worst_obs:.2e}, max |reward diff| "
          f"{worst_rew:.2e} ({device} vs cpu)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", nargs="+", choices=("sim", "env", "ppo", "hover", "parity"),
                    default=["sim", "env", "ppo", "hover", "parity"])
    ap.add_argument("--quick", action="store_true", help="small sizes and one seed (a smoke run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="artifacts/bench/bench_gpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {os.cpu_count()} cores, {args.threads} thread(s)"
    print(f"bench_gpu on {name}, torch {torch.__version__} (load {load():.2f})", flush=True)
    if args.quick:
        sim_sizes, env_sizes, ppo_envs, seeds, iters = [4096], [4096], 1024, args.seeds[:1], 30
    elif gpu:
        sim_sizes, env_sizes, ppo_envs, seeds, iters = [4096, 65536, 1 << 20, 1 << 22], [4096, 65536, 1 << 20], \
            65536, args.seeds, 60
    else:
        sim_sizes, env_sizes, ppo_envs, seeds, iters = [4096, 65536], [4096], 1024, args.seeds, 60
    report = {"device": str(device), "device_name": name, "torch": torch.__version__, "threads": args.threads}
    if "sim" in args.only:
        report["sim"] = bench_sim(device, sim_sizes, 3)
    if "env" in args.only:
        report["env"] = bench_env(device, env_sizes, 7, eager=True)
    if "ppo" in args.only:
        report["ppo"] = bench_ppo(device, ppo_envs, 6 if args.quick else 20)
    if "hover" in args.only:
        report["hover"] = bench_hover(device, seeds, 1024, iters)
    if "parity" in args.only:
        report["parity"] = bench_parity(device, 256, 20 if args.quick else 100)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
