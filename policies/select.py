"""Checkpoint selection by evaluation (issue 10): a vehicle-class policy's checkpoints swing (the same run
held 5 cm on 91 % of the class at iteration 225 and on 70 % at 300), so the run's last checkpoint is not
its best. After training, every checkpoint of the run is flown in Tether's simulator on held-out vehicles
drawn from the class (the sweep's random draws with a seed of their own, never the bench's), and the best
one is recorded in ``run_dir/best.json``; ``tether export`` and ``tether eval`` of the run folder use it.

Scored by the sweep's judgement (reach ``tol_m`` within ``reach_within_s``, hold to the end, no crash):
first whether the checkpoint holds the nominal vehicle from the hover acceptance's starts (held-out ones:
``nominal_starts`` with this seed, of which ``nominal_required`` must hold; the nominal vehicle is a
member of the class, and a policy that fails `tether eval`'s acceptance on it is not the one to ship while
another passes), then the number of class vehicles held, then the lower median steady error. The flights
run the checkpoint's own deterministic actor (normalizer + mean, clipped), the graph ``tether export``
writes; every checkpoint's class and nominal flights go in one batch.

    python -m policies.select RUN_DIR          # score every checkpoint of the run, write best.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policies.checkpoint import CheckpointError, checkpoints_in, load_checkpoint, read_run_id
from policies.evaluation import AcceptanceCfg, sample_starts
from policies.export import env_from_checkpoint, model_from_checkpoint
from policies.models import DeployedActor
from policies.sweep import SweepCfg, Vehicles, cm, concat, fly_vehicles, random_vehicles, summarize
from sim.quadrotor.dynamics import nominal_params
from sim.pybullet_ref.evaluate import hover_metrics
from tether.errors import EXIT_USAGE

BEST_FILE = "best.json"


@dataclasses.dataclass(frozen=True)
class SelectCfg:
    draws: int = 128
    """held-out vehicles drawn from the class, one start each [1]"""
    seed: int = 7
    """seed of those vehicles and starts; differs from the bench's (2026), which judges the chosen one"""
    min_iteration: int = 0
    """checkpoints before this iteration are not candidates [1]"""
    nominal_starts: int = 100
    """starts on the nominal vehicle, drawn as the hover acceptance draws them (policies.evaluation.AcceptanceCfg)
    but with ``seed``: the acceptance's own starts stay unseen (0: no nominal gate) [1]"""
    nominal_required: float = 0.99
    """share of nominal_starts a checkpoint must hold to pass the gate (the acceptance's 99 of 100) [1]"""

    def __post_init__(self):
        if self.draws < 1:
            raise ValueError(f"select draws must be >= 1, got {self.draws}")
        if self.nominal_starts < 0:
            raise ValueError(f"select nominal_starts must be >= 0, got {self.nominal_starts}")
        if not 0.0 <= self.nominal_required <= 1.0:
            raise ValueError(f"select nominal_required must be in [0, 1], got {self.nominal_required}")
        if self.min_iteration < 0:
            raise ValueError(f"select min_iteration must be >= 0, got {self.min_iteration}")

    def sweep(self) -> SweepCfg:
        return SweepCfg(starts_per_cell=0, random_draws=self.draws, seed=self.seed)

    def nominal(self) -> AcceptanceCfg:
        """the nominal gate's starts and judgement: the hover acceptance with this seed and count (flown for the
        sweep's duration_s, the acceptance's too)"""
        return AcceptanceCfg(num_starts=max(1, self.nominal_starts), seed=self.seed,
                             required_successes=math.ceil(self.nominal_required * self.nominal_starts))


# Tasks whose runs are selected by evaluation after training, by name (an explicit registry, as PPO_DEFAULTS).
SELECTION: dict[str, SelectCfg] = {
    "hover_robust": SelectCfg(),
    "hover_robust_px4": SelectCfg(),
    "hover_robust_rotor": SelectCfg(),
}


class CheckpointPolicy:
    """obs [K * M, obs] numpy -> actions [K * M, A] numpy: K checkpoints' deployed actors (torch), the k-th
    flying rows k * M to (k + 1) * M, so that K checkpoints fly their M vehicles in one batched simulation."""

    def __init__(self, ckpts: list[dict]):
        self.actors = [DeployedActor(model_from_checkpoint(c)).eval() for c in ckpts]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            return torch.cat([a(part) for a, part in zip(self.actors, x.chunk(len(self.actors)))]).numpy()


def score_checkpoints(ckpts: list[dict], cfg: SelectCfg) -> list[dict]:
    """Class success and steady error of each loaded checkpoint (of one task) in Tether's simulator, all
    flown in one batch on the same ``cfg.draws`` class vehicles and starts, then ``cfg.nominal_starts`` on the
    nominal vehicle (the summary's ``nominal``, with ``passed``: the gate of :func:`rank_key`)."""
    task_cfg = env_from_checkpoint(ckpts[0]).cfg
    sweep, acc = cfg.sweep(), cfg.nominal()
    goal = np.asarray(task_cfg.goal_w, dtype=np.float64)
    one, starts = random_vehicles(task_cfg.vehicle, sweep, task_cfg.control_rate_hz), sample_starts(
        sweep.acceptance(cfg.draws), goal)
    n_nom = cfg.nominal_starts
    if n_nom and acc.duration_s != sweep.duration_s:  # one batch flies both for the sweep's duration
        raise ValueError(f"select: the acceptance's duration_s {acc.duration_s} s differs from the sweep's "
                         f"{sweep.duration_s} s; the nominal gate flies in the class batch")
    if n_nom:  # the nominal vehicle: no latency, the rate loop every substep (as the sweep's grid flies it)
        nominal = Vehicles(nominal_params(task_cfg.vehicle, n_nom), np.zeros(n_nom, dtype=np.int64),
                           np.ones(n_nom, dtype=np.int64))
        one = concat(one, nominal)
        nominal_starts = sample_starts(acc, goal)
        starts = {k: np.concatenate([v, nominal_starts[k]]) for k, v in starts.items()}
    vehicles = one
    for _ in ckpts[1:]:
        vehicles = concat(vehicles, one)
    starts = {k: np.concatenate([v] * len(ckpts)) for k, v in starts.items()}
    result = fly_vehicles(CheckpointPolicy(ckpts), task_cfg, vehicles, starts, sweep.duration_s, sweep.physics_hz,
                          ("tether",))["tether"]
    met = hover_metrics(result, sweep.tol_m, sweep.reach_within_s)
    # the nominal starts are judged as the acceptance judges them (both fly the sweep's duration_s)
    met_nom = hover_metrics(result, acc.tol_m, acc.reach_within_s) if n_nom else None
    per = cfg.draws + n_nom
    scores = []
    for k in range(len(ckpts)):
        score = summarize(met, slice(k * per, k * per + cfg.draws), result["crashed"])
        if n_nom:
            nom = summarize(met_nom, slice(k * per + cfg.draws, (k + 1) * per), result["crashed"])
            score["nominal"] = {**nom, "required_successes": acc.required_successes,
                                "passed": nom["successes"] >= acc.required_successes}
        scores.append(score)
    return scores


def score_checkpoint(ckpt: dict, cfg: SelectCfg) -> dict:
    """Class success and steady error of one loaded checkpoint in Tether's simulator."""
    return score_checkpoints([ckpt], cfg)[0]


def rank_key(score: dict) -> tuple:
    """Larger is better: the nominal gate passed (a score without ``nominal`` had no gate), then class
    vehicles held, then a lower median steady error."""
    err = score["steady_err_m_median"]
    return (score.get("nominal", {}).get("passed", True), score["successes"],
            -(err if err is not None else float("inf")))


def select_best(run_dir: str | Path, cfg: SelectCfg | None = None) -> Path:
    """Score every checkpoint of the run named in ``run_dir/run.json``, write ``run_dir/best.json`` and return
    the best checkpoint's path. Checkpoints of another run in the folder are not candidates."""
    cfg = cfg or SelectCfg()
    run_dir = Path(run_dir)
    run_id = read_run_id(run_dir)
    t0 = time.perf_counter()
    chosen = []
    for path in checkpoints_in(run_dir):
        ckpt = load_checkpoint(path)
        if (run_id is None or ckpt.get("run_id") == run_id) and ckpt["iteration"] >= cfg.min_iteration:
            chosen.append((path, ckpt))
    scores = score_checkpoints([c for _, c in chosen], cfg) if chosen else []
    scored = [{"checkpoint": path.name, "iteration": int(ckpt["iteration"]),
               "train_time_s": float(ckpt["train_time_s"]), **s} for (path, ckpt), s in zip(chosen, scores)]
    if not scored:
        raise CheckpointError(f"no checkpoint of run {run_id} from iteration {cfg.min_iteration} on in {run_dir}")
    best = max(reversed(scored), key=rank_key)  # ties: the later checkpoint
    record = {"run_id": run_id, "best": best["checkpoint"], "iteration": best["iteration"],
              "select": dataclasses.asdict(cfg), "select_wall_s": time.perf_counter() - t0,
              "judged_by": "Tether's simulator: the nominal gate, then class draws held (reach tol within "
                           "reach_within_s and hold, no crash), then the median steady error",
              "candidates": scored}
    tmp = run_dir / (BEST_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / BEST_FILE)
    return run_dir / best["checkpoint"]


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``run_dir/best.json`` names, if that file is of the run in ``run.json`` and the checkpoint
    is there; None otherwise (no selection ran, or a later run replaced it)."""
    run_dir = Path(run_dir)
    path = run_dir / BEST_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable ({e}); delete it to use the run's latest checkpoint") from e
    ckpt = run_dir / str(record.get("best", ""))
    if record.get("run_id") != read_run_id(run_dir) or not ckpt.is_file():
        return None
    return ckpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--draws", type=int, default=SelectCfg.draws)
    ap.add_argument("--seed", type=int, default=SelectCfg.seed)
    args = ap.parse_args(argv)
    try:
        cfg = SelectCfg(draws=args.draws, seed=args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        best = select_best(args.run_dir, cfg)
    except (CheckpointError, OSError) as e:
        print(f"error: {e}; give a run folder that `tether train` wrote", file=sys.stderr)
        return EXIT_USAGE
    record = json.loads((Path(args.run_dir) / BEST_FILE).read_text())
    for c in record["candidates"]:
        nom = c.get("nominal")
        gate = "" if nom is None else (f"; nominal vehicle {nom['successes']}/{nom['num_starts']} "
                                       f"({'passes' if nom['passed'] else 'fails'} the gate)")
        print(f"{c['checkpoint']}: {c['successes']}/{c['num_starts']} class vehicles held, steady "
              f"{cm(c['steady_err_m_median'])}{gate}")
    print(f"best: {best} ({record['select_wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
