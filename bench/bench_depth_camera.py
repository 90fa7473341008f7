"""Depth camera throughput: frames/s at 64x48 against primitives per env, eager vs compiled, culling on/off.

A frame is one env's 64x48 z-depth image with range limits (sim.camera.DepthCamera.render, no noise).
Scenes: random obstacle fields (sim.camera.scene.random_scene: spheres, columns, yawed boxes and walls
in a 20 m x 20 m square, plus the ground), a camera at 1-2 m height anywhere in the field, any heading,
pitched +-10 deg, 90 deg horizontal field of view, 20 m range: what a navigation task sees. Every
compiled and culled image is checked against eager culled before it is timed (eager culled = unculled
bit for bit, tested; compiled within 1e-4 relative but for grazing rays, at most 0.1 % of pixels).
Eager keeps [rows, K, pixels] intermediates in memory, so it runs only up to --eager-envs.

Figures are wall-clock medians over repeats and frames per CPU-second of this process (all its threads:
what the frames cost, less distorted than wall time when others share the cores), with the 1-min load
average (`uptime`) read beside each row, because the machine is shared. Never pass/fail.

    python bench/bench_depth_camera.py                       # 8 and 32 primitives, 1 and 2 threads
    python bench/bench_depth_camera.py --device cuda --envs 65536
    python bench/bench_depth_camera.py --tile 16x12 --impls compiled --cull on   # coarser culling tiles
    python bench/bench_depth_camera.py --envs 2048 --prims 32 --threads 1 --workers 1 2 --impls compiled --cull on

``--workers N`` renders the envs as N slices on N threads (DepthCamera(workers=N), its kernels single
threaded, the compiled ones without the GIL): the way to 2 cores here, where OpenMP threads inside a
frame's kernels add nothing. The cores a row uses: threads x workers at most.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# OpenMP threads that wait at a barrier by spinning (libgomp's default) take the cores from each other and
# from the other processes on a shared machine: 2 threads at load 6-7 drew 0.8 k frames/s (1 thread 8.6 k),
# sleeping at once (PASSIVE) 9.0 k. libgomp reads it when torch loads it, so before the import; a value set
# outside wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.camera.config import CameraRandomizationCfg, DepthCameraCfg, MountCfg  # noqa: E402
from sim.camera.depth import DepthCamera  # noqa: E402
from sim.camera.scene import random_scene  # noqa: E402


def load_1min() -> float:
    return os.getloadavg()[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(num_envs: int, n_prims: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # a navigation field's mix: mostly columns, then boxes and walls, a few spheres
    n_cyl = n_prims // 2
    n_box = (n_prims - n_cyl) * 2 // 3
    n_sph = n_prims - n_cyl - n_box
    scene = random_scene(num_envs, n_sph, n_cyl, n_box, g, extent_m=10.0).to(device)
    pos = torch.cat([(torch.rand(num_envs, 2, generator=g) - 0.5) * 20.0,
                     1.0 + torch.rand(num_envs, 1, generator=g)], -1).to(device)
    yaw = (torch.rand(num_envs, generator=g) - 0.5) * 2 * math.pi
    pitch = (torch.rand(num_envs, generator=g) - 0.5) * math.radians(20.0)
    # body quaternion (w, x, y, z) = yaw about z then pitch about y
    cy, sy, cp, sp = torch.cos(yaw / 2), torch.sin(yaw / 2), torch.cos(pitch / 2), torch.sin(pitch / 2)
    quat = torch.stack([cy * cp, -sy * sp, cy * sp, sy * cp], -1).to(device)
    return scene, pos, quat


def time_it(fn, device: torch.device, repeats: int, min_s: float = 0.5) -> tuple[list[float], float]:
    """(wall seconds per call, one per repeat; CPU seconds per call of this process, all threads,
    over all repeats)"""
    fn()
    sync(device)
    times = []
    cpu0, calls = time.process_time(), 0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            sync(device)
            if time.perf_counter() - t0 >= min_s / repeats:
                break
        times.append((time.perf_counter() - t0) / n)
        calls += n
    return times, (time.process_time() - cpu0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--envs", type=int, nargs="+", default=[2048])
    ap.add_argument("--prims", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op threads")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="DepthCamera(workers=N): env slices on N threads")
    ap.add_argument("--impls", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    ap.add_argument("--cull", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--eager-envs", type=int, default=256, help="largest batch eager runs at (memory)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per row [s]")
    ap.add_argument("--tile", default="8x8", help="culling tile WxH [px] (must divide 64x48)")
    args = ap.parse_args()
    if min(args.workers) < 1 or min(args.threads) < 1:
        ap.error(f"--threads and --workers must be >= 1, got {args.threads} and {args.workers}")
    device = torch.device(args.device)
    tile_w, tile_h = (int(x) for x in args.tile.split("x"))
    cfg = DepthCameraCfg(mount=MountCfg(position_b_m=(0.05, 0.0, 0.0)), tile_w=tile_w, tile_h=tile_h)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"image {cfg.intrinsics.width}x{cfg.intrinsics.height}, tiles {cfg.tile_w}x{cfg.tile_h}, "
          f"range {cfg.min_range_m}-{cfg.max_range_m} m")
    header = (f"{'envs':>6} {'prims':>5} {'thr':>3} {'wrk':>3} {'impl':>8} {'cull':>4} {'frames/s':>12} {'best':>12} "
              f"{'frames/CPU-s':>12} {'load1':>6}")
    print(f"uptime at start: {os.popen('uptime').read().strip()}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(header)
    print("-" * len(header))
    for threads, workers in ((t, w) for t in args.threads for w in args.workers):
        if device.type == "cpu":
            torch.set_num_threads(threads)
        for n_envs in args.envs:
            # fresh compiled kernels per thread count (inductor's CPU kernels bake it in) and per env count
            # (prepare() compiles a graph per shape, each worker's slice one of its own: a sweep would pass
            # dynamo's limit of 8 per function; from the disk cache, seconds)
            cams = {impl: DepthCamera(cfg, CameraRandomizationCfg(), device, compile=impl == "compiled",
                                      workers=workers) for impl in args.impls}
            for n_prims in args.prims:
                scene, pos, quat = setup(n_envs, n_prims, device)
                params = cams[args.impls[0]].nominal(n_envs)
                ref = DepthCamera(cfg, device=device).render(scene, pos, quat, params, cull=True)
                for impl in args.impls:
                    cam = cams[impl]
                    for cull in args.cull:
                        on = cull == "on"
                        if impl == "eager" and n_envs > args.eager_envs:
                            continue
                        out = cam.render(scene, pos, quat, params, cull=on)
                        close = torch.isclose(out, ref, rtol=1e-4, atol=0.0) | (out == ref)
                        if float((~close).float().mean()) > 1e-3:  # grazing rays may flip by an ulp
                            raise SystemExit(f"error: {impl} cull={cull} differs from eager culled at "
                                             f"{int((~close).sum())} pixels")
                        times, cpu = time_it(lambda: cam.render(scene, pos, quat, params, cull=on), device,
                                             args.repeats, args.seconds)
                        med, best = n_envs / statistics.median(times), n_envs / min(times)
                        print(f"{n_envs:>6} {n_prims:>5} {threads:>3} {workers:>3} {impl:>8} {cull:>4} {med:>12,.0f} "
                              f"{best:>12,.0f} {n_envs / cpu:>12,.0f} {load_1min():>6.2f}", flush=True)


if __name__ == "__main__":
    main()
