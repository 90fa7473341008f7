"""Human-in-the-loop correction on each twin disturbance: prints the figures, with the seed and the load.

For each disturbance (a steady wind of 10 % of the weight, a payload of 20 % of the mass 2 cm off
centre, a motor at 60 %, wind plus a motor at 70 %), the correction loop (policies.hil.loop, in-process
backend, the scripted operator) flies round 0 with the parent, fine-tunes on its corrected episodes,
and flies round 1 with the child:
  success per round (hold within 5 cm for 10 s with no takeover), intervention rate (share of steps
  under the operator), longest success streak, episodes and time to 90 % success, the success finetune
  predicted for the child on the twin it built from the logs (or "cannot predict") against the
  measured one, the disturbance identified from the logs, finetune + export + validation seconds
  (wall, and this process's CPU: the machine is shared).

Run: .venv/bin/python bench/bench_finetune.py [--policy DIR] [--episodes 10] [--seed 0 1 2] [--only wind ...]
Without --policy it uses tests/fixtures/hover_policy. Writes a JSON summary with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from hardware.twin import Payload, TwinConfig, WeakMotor, WindGust
from sim.quadrotor.presets import GRAVITY, PRESETS

REPO = Path(__file__).resolve().parents[1]
MASS = PRESETS["crazyflie2x"].mass_kg
WEIGHT = MASS * GRAVITY
DISTURBANCES = {
    "wind": TwinConfig(wind_gust=WindGust(0.0, 1e9, (0.1 * WEIGHT * 0.6, 0.1 * WEIGHT * 0.8, 0.0))),
    "payload": TwinConfig(payload=Payload(mass_kg=0.2 * MASS, pos_b=(0.0141, -0.0141, 0.0))),
    "weak_motor": TwinConfig(weak_motor=WeakMotor(index=2, gain=0.6)),
    "wind_weak_motor": TwinConfig(wind_gust=WindGust(0.0, 1e9, (-0.1 * WEIGHT, 0.0, 0.0)),
                                  weak_motor=WeakMotor(index=1, gain=0.7)),
}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", type=Path, default=REPO / "tests" / "fixtures" / "hover_policy")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="one loop per seed and disturbance")
    ap.add_argument("--only", nargs="+", choices=list(DISTURBANCES), default=list(DISTURBANCES))
    ap.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from policies.hil.identify import DisturbanceEstimate
    from policies.hil.loop import LoopCfg, run_correction_loop

    work = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; parent {args.policy}")
    rows = []
    for name, seed in [(n, k) for n in args.only for k in args.seed]:
        cfg = LoopCfg(rounds=args.rounds, episodes_per_round=args.episodes, twin=DISTURBANCES[name], seed=seed)
        before = load()
        t0 = time.perf_counter()
        rep = run_correction_loop(args.policy, work / f"{name}_seed{seed}", cfg, progress=lambda s: None)
        wall = time.perf_counter() - t0
        after = load()
        print(f"\n== {name}: {DISTURBANCES[name]}\n   seed {seed}; {args.episodes} corrected episodes per round; "
              f"loop {wall:.0f} s; {before} at the start, {after} at the end")
        print("   round  success  predicted        intervention-rate  streak  finetune+export+validation [s]")
        for r in rep["rounds"]:
            ft = r.get("finetune") or {}
            pred = {"parent": "-", "cannot predict": "cannot predict"}.get(
                r["prediction_status"], f"{r['predicted_success']:.2f}" if r["predicted_success"] is not None else "-")
            secs = "" if not ft else f"{ft['finetune_export_validate_s']:.1f} wall, " \
                                     f"{ft['finetune_export_validate_cpu_s']:.1f} CPU"
            print(f"   {r['round']:>5}  {r['success_rate']:7.2f}  {pred:>15}  {r['intervention_rate']:17.2f}  "
                  f"{r['success_streak']:6d}  {secs}")
            est = ft.get("perturbation")
            if est:
                d = DisturbanceEstimate(**{k: est[k] for k in est if k in DisturbanceEstimate.__dataclass_fields__})
                print(f"          identified: {d.describe()}; explains {d.explained_total:.0%}, unexplained "
                      f"{d.unexplained_share:.0%}; gate: {ft.get('gate')}")
            if ft.get("timings_s"):
                sim = ft.get("sim_refine") or {}
                print("          wall seconds by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in ft["timings_s"].items())
                      + (f"; simulator blocks {sim['blocks']}" if "blocks" in sim else ""))
                print("          CPU seconds by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                               ft.get("timings_cpu_s", {}).items()))
        s = rep["summary"]
        print(f"   to 90 % success: {s['episodes_to_target']} episodes, "
              f"{'-' if s['time_to_target_s'] is None else round(s['time_to_target_s'])} s (flight + finetune); "
              f"report {work / f'{name}_seed{seed}' / 'report.json'}")
        rows.append({"disturbance": name, "twin": str(DISTURBANCES[name]), "seed": seed, "load_start": before,
                     "load_end": after, "loop_s": wall, "summary": s,
                     "rounds": [{k: r.get(k) for k in ("round", "success_rate", "intervention_rate", "success_streak",
                                                       "prediction_status", "predicted_success", "prediction_error")} |
                                {"finetune_s": (r.get("finetune") or {}).get("finetune_export_validate_s"),
                                 "finetune_stages_s": (r.get("finetune") or {}).get("timings_s"),
                                 "finetune_stages_cpu_s": (r.get("finetune") or {}).get("timings_cpu_s"),
                                 "finetune_cpu_s": (r.get("finetune") or {}).get("finetune_export_validate_cpu_s")}
                                for r in rep["rounds"]]})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2, default=float) + "\n")
        print(f"\nsummary: {args.out}")


if __name__ == "__main__":
    main()
