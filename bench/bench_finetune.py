"""Human-in-the-loop fine-tuning on the perturbed twin (a 30 % weaker motor): prints the figures.

  success per round (hold within 5 cm for 10 s with no takeover), intervention rate per round,
  finetune + export + validation seconds, the perturbation estimated from the logs, and the default
  method against HG-DAgger (and RLIF) fine-tuned on the same interventions, each with and without the
  simulator stage (twin validation from the same seeded starts).

Run: .venv/bin/python bench/bench_finetune.py [--policy DIR] [--rounds 3] [--episodes 10] [--backend inproc|ros]
Without --policy it uses tests/fixtures/hover_policy, else trains a hover policy first (~40 s here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parent_policy(work: Path) -> Path:
    fixture = REPO / "tests" / "fixtures" / "hover_policy"
    if (fixture / "policy.onnx").is_file():
        return fixture
    from policies.export import export_policy
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    t0 = time.perf_counter()
    ckpt = train(make_env("hover", num_envs=512), "hover", PPOCfg(num_iterations=80, save_interval=1000),
                 work / "run", progress=False)
    export_policy(ckpt, work / "parent")
    print(f"trained a hover parent in {time.perf_counter() - t0:.0f} s")
    return work / "parent"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--backend", default="inproc", choices=("inproc", "ros"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from policies.hil.finetune import finetune
    from hardware.twin import with_policy_rate_gains
    from policies.hil.loop import LoopCfg, run_correction_loop
    from policies.hil.sim_refine import SimRefineCfg
    from tether.runtime import OnnxPolicy

    work = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    parent = args.policy or parent_policy(work)
    out = args.out or work / "loop"
    cfg = LoopCfg(rounds=args.rounds, episodes_per_round=args.episodes, backend=args.backend)
    rep = run_correction_loop(parent, out, cfg, progress=lambda s: None)
    print(f"\nperturbed twin: {cfg.twin.weak_motor}; {args.episodes} corrected episodes per round ({args.backend})")
    print("round  policy        success  intervention-rate  finetune+export+validation [s]  twin-validation")
    for r in rep["rounds"]:
        ft = r.get("finetune", {})
        val = ft.get("validation", {}).get("child", {}).get("success_rate")
        kept = "" if ft.get("deployed", True) else " (child not deployed: validated worse)"
        print(f"{r['round']:>5}  {r['policy_sha256'][:12]}  {r['success_rate']:7.2f}  {r['intervention_rate']:17.2f}  "
              f"{ft.get('finetune_export_validate_s', float('nan')):30.1f}  "
              f"{'' if val is None else f'child {val:.2f}'}{kept}")
    round0 = [Path(e["bag"]) for e in rep["rounds"][0]["episodes"]]
    est = rep["rounds"][0].get("finetune", {}).get("perturbation")
    if est is not None:
        print(f"\nperturbation estimated from the round-0 logs: rotor gains {[round(g, 3) for g in est['gains']]} "
              f"(true: motor {cfg.twin.weak_motor.index} at {cfg.twin.weak_motor.gain})")
    print(f"\nsame interventions (round 0, {len(round0)} episodes), validation on the true perturbed twin from 20 "
          "seeded starts:")
    twin = with_policy_rate_gains(cfg.twin, OnnxPolicy(parent).contract.action)
    for method in ("hil_serl", "hg_dagger", "rlif"):
        for sim in (SimRefineCfg(), None):
            t0 = time.perf_counter()
            r = finetune(parent, round0, method, work / f"cmp_{method}", validate_twin=twin, force=True,
                         sim_refine=sim, progress=lambda s: None)
            v = r["validation"]
            stage = "logs + sim" if sim is not None else "logs only "
            print(f"  {method:10s} {stage} success {v['parent']['success_rate']:.2f} -> "
                  f"{v['child']['success_rate']:.2f}, median max error {v['child']['max_err_m_median'] * 100:.1f} cm, "
                  f"{time.perf_counter() - t0:.1f} s")
    print(f"\nreport: {out / 'report.json'}, plots: {out / 'report.png'}")


if __name__ == "__main__":
    main()
