"""Does identification pay? A "true" Crazyflie that differs from the published preset (weaker thrust
coefficient as Bitcraze's thrust stand suggests, a heavier battery, slower motors) flies 60 s with
sensor noise; `tether calibrate quadrotor` identifies it; one hover policy is trained on the identified
vehicle (randomization = identified +- k sigma), one on the published preset (default randomization);
both fly the true vehicle in pybullet from the same 100 randomized starts.

Rotor-level actions, so that the thrust coefficient matters (a CTBR policy hands thrust to the
firmware's own mapping). Writes artifacts/bench/calibrated_policy.json and prints a table.

    python bench/bench_calibrated_policy.py [--iterations 120]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from calibration.flightlog import log_from_columns, write_csv  # noqa: E402
from calibration.synthetic import FlightCfg, simulate_flight_log  # noqa: E402
from policies.evaluation import AcceptanceCfg, sample_starts  # noqa: E402
from policies.export import export_policy  # noqa: E402
from policies.ppo import PPOCfg, train  # noqa: E402
from sim.pybullet_ref.evaluate import bootstrap_ci, fly, hover_metrics  # noqa: E402
from sim.quadrotor.presets import CRAZYFLIE_2X  # noqa: E402
from sim.tasks import HoverCfg, make_env  # noqa: E402
from tether_app.cli import _calibrated, main as tether_main  # noqa: E402
from tether.runtime import OnnxPolicy  # noqa: E402

TRUE_VEHICLE = dataclasses.replace(
    CRAZYFLIE_2X, name="crazyflie2x", mass_kg=0.0297, kf_n_per_rpm2=0.80 * CRAZYFLIE_2X.kf_n_per_rpm2,
    km_nm_per_rpm2=1.1 * CRAZYFLIE_2X.km_nm_per_rpm2, tau_up_s=0.05, tau_down_s=0.09,
    source="bench: a unit that differs from the published preset")


def fly_true_vehicle(policy_dir: Path, cfg, acceptance: AcceptanceCfg) -> dict:
    policy = OnnxPolicy(policy_dir)
    goal = torch.tensor(cfg.goal_w).double().numpy()
    starts = sample_starts(acceptance, goal)
    goal_m = goal[None].repeat(acceptance.num_starts, 0)
    result = fly(policy, policy.contract, TRUE_VEHICLE, starts, goal_m, acceptance.duration_s, substeps=cfg.substeps)
    met = hover_metrics(result, acceptance.tol_m, acceptance.reach_within_s)
    rate, lo, hi = bootstrap_ci(met["success"].astype(float))
    return {"successes": int(met["success"].sum()), "success_rate": rate, "ci95": [lo, hi],
            "steady_state_err_m_median": float(torch.tensor(met["steady_state_err_m"]).nanmedian()),
            "crashes": int(result["crashed"].sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--num-envs", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="artifacts/bench/calibrated_policy.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    acceptance = AcceptanceCfg()
    report = {"true_vehicle": dataclasses.asdict(TRUE_VEHICLE)}
    with tempfile.TemporaryDirectory(prefix="tether-calib-bench-") as tmp:
        tmp = Path(tmp)
        print("[1/4] 60 s of simulated flight of the true vehicle, with sensor noise")
        log = simulate_flight_log(TRUE_VEHICLE, seconds=60.0, seed=args.seed, cfg=FlightCfg(segments=6),
                                  controller_preset=CRAZYFLIE_2X)
        write_csv(tmp / "flight.csv", log_from_columns(log, where="simulated flight"))
        print("[2/4] tether calibrate quadrotor")
        tether_main(["calibrate", "quadrotor", "--log", str(tmp / "flight.csv"), "--preset", "crazyflie2x",
                     "--mass", str(TRUE_VEHICLE.mass_kg), "--unit-id", "cf-bench-01", "--out", str(tmp / "unit.yaml")])
        base = HoverCfg(action_space="rotor")
        variants = {"identified": _calibrated(base, str(tmp / "unit.yaml"), 2.0), "published_preset": base}
        for i, (name, cfg) in enumerate(variants.items()):
            print(f"[3/4] training on the {name} vehicle ({args.iterations} iterations)")
            v = cfg.vehicle
            ckpt = train(make_env("hover", cfg, num_envs=args.num_envs, seed=args.seed), "hover", PPOCfg(num_iterations=args.iterations, seed=args.seed,
                                                                  save_interval=args.iterations), tmp / name)
            policy_dir, _, _ = export_policy(ckpt, tmp / f"{name}_policy")
            print(f"[4/4] flying the {name} policy on the true vehicle in pybullet")
            report[name] = {"trained_kf_n_per_rpm2": v.kf_n_per_rpm2, "trained_mass_kg": v.mass_kg,
                            "trained_tau_up_s": v.tau_up_s, "trained_tau_down_s": v.tau_down_s,
                            **fly_true_vehicle(policy_dir, cfg, acceptance)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\n| trained on | kf [N/rpm^2] | tau_up [s] | success on the true vehicle | 95% CI | steady-state error |")
    print("|---|---|---|---|---|---|")
    print(f"| (true vehicle) | {TRUE_VEHICLE.kf_n_per_rpm2:.3g} | {TRUE_VEHICLE.tau_up_s:.3f} | | | |")
    for name in ("identified", "published_preset"):
        r = report[name]
        print(f"| {name} | {r['trained_kf_n_per_rpm2']:.3g} | {r['trained_tau_up_s']:.3f} | {r['successes']}/100 | "
              f"{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f} | {100 * r['steady_state_err_m_median']:.1f} cm |")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
