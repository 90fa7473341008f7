"""Tether's depth ray caster against pybullet's own camera on navigation fields (issue 11's bar: >= 99 % of
the pixels both see in range within 1 % depth).

Views: sim.camera.crosscheck.navigation_views, i.e. --fields fields of the `navigate` task's own
generator per obstacle count, --views per field (the start, then points along the way 0.3 m clear of
every obstacle, looking toward the goal +-1 rad, pitched +-15 deg), through the task's camera with its
intrinsics and mount draws (no noise, no dropouts). Every pixel both cameras see within the camera's
range is compared; none is left out. pybullet draws the scene that sim.camera.pybullet_depth.build_scene
builds: by default cylinders as a 64-sided prism and spheres as an icosphere; ``--segments native`` is
pybullet's own GEOM_CYLINDER (the 98.4 % before the prism). pybullet's ms per view (scene build + one render) is printed
beside, with the 1-min load average, because the machine is shared. Never pass/fail.

    python bench/bench_depth_crosscheck.py                         # 20 fields x 4 views, 16 and 32 obstacles
    python bench/bench_depth_crosscheck.py --fields 100 --segments native 64 128
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.camera import crosscheck  # noqa: E402
from sim.camera.depth import DepthCamera  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=20, help="fields per obstacle count")
    ap.add_argument("--views", type=int, default=4, help="views per field (the first is the start)")
    ap.add_argument("--obstacles", type=int, nargs="+", default=[16, 32], help="obstacles per field")
    ap.add_argument("--segments", nargs="+", default=["64"], help="cylinder prism sides, or 'native'")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print("obstacles | cylinder | views | pixels compared | within 1 % | worst view | beyond-range agree (min) "
          "| pybullet ms per view (build + render) | load")
    for n in args.obstacles:
        scene, pos, quat, cfg = crosscheck.navigation_views(args.fields, n, args.views, seed=args.seed + n)
        cam = DepthCamera(cfg.camera, crosscheck.geometric_randomization(cfg.camera_randomization))
        params = cam.sample(scene.num_envs, torch.Generator().manual_seed(args.seed + n))
        for seg in args.segments:
            segments = None if seg == "native" else int(seg)
            t0 = time.perf_counter()
            check = crosscheck.compare_views(scene, cfg.camera, params, pos, quat, cylinder_segments=segments)
            # the ray caster's share is ~1 % of this: the time is pybullet's (scene build + one render per view)
            ms = 1e3 * (time.perf_counter() - t0) / scene.num_envs
            print(f"{n} | {seg} | {scene.num_envs} | {int(check.compared.sum())} | {100 * check.fraction:.3f} % | "
                  f"{100 * check.worst_view:.2f} % | {100 * check.beyond_agree.min():.2f} % | {ms:.1f} | "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
