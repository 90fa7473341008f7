"""``finetune(parent_policy_dir, logs, method, out_dir)``: corrected flights -> a child policy, exported.

1. load and verify the parent (policy.onnx + policy.json), rebuild its actor from the ONNX weights and
   check parity against onnxruntime;
2. read every log (policies.hil.dataset): required topics, not truncated, recorded with the parent or
   one of its ancestors, observations that replay the logged policy actions;
3. identify the disturbance behind the interventions from the logs (policies.hil.identify: rotor gains,
   a steady external force, added mass and where it sits, chosen by BIC), with what it leaves
   unexplained; when it cannot predict the logged flight the report says so ("cannot predict") and
   neither the simulator stage nor a twin validation uses it;
4. fine-tune (policies.hil.algorithms) on the logs, then continue in the simulator with the identified
   disturbance (policies.hil.sim_refine; sim and robot data labelled and counted apart), and export
   through policies.export (ONNX parity check included) into a temporary directory beside ``out_dir``;
   provenance names the parent (sha256, directory), its lineage, the method, each log (path and the
   MCAP's sha256) and the identified disturbance; optionally validate parent and child on the twin
   (pybullet) from the same seeded starts: on a given twin configuration, or on the nominal twin with
   the identified disturbance (no knowledge of the true one needed): the child's success there is the
   prediction of its next round;
5. only then move the result into ``out_dir`` (refused if it exists and is not empty, unless force).
Any error leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policies.evaluation import task_cfg_from_contract
from policies.hil.algorithms import (FinetuneCfg, actor_from_onnx, build_transitions, finetune_actor,
                                     logged_policy_actions)
from policies.hil.dataset import LogError, load_logs, replay_match
from policies.hil.flight import EpisodeCfg
from policies.hil.identify import GROUPS, estimate_disturbance
from policies.hil.sim_refine import SimRefineCfg, refine_in_sim
from policies.models import DeployedActor
from tether.config import config_to_dict
from tether.contract import ContractError, sha256_file
from tether.runtime import OnnxPolicy

PREDICTION_MARGIN = 0.25
"""the twin predicts real success only as well as its hold errors clear the tolerance: success is also
counted at tolerance x (1 -+ this), and a band wider than MAX_PREDICTION_BAND means 'cannot predict'"""
MAX_PREDICTION_BAND = 0.3
START_HEADING_MARGIN_RAD = 0.1
"""with a steady force, the simulator stage starts within this of the logged flights' start headings [rad]"""
MIN_REPLAY_MATCH = 0.75
"""fraction of the parent's logged actions the rebuilt observations must reproduce"""


def lineage(contract) -> list[str]:
    """sha256 of this policy and of every ancestor named in the provenance chain, newest first."""
    out = [contract.provenance["onnx_sha256"]]
    parent = contract.provenance.get("parent") or {}
    out += list(parent.get("lineage", []))
    return out


def _mcap_sha(log: Path) -> str:
    files = [log] if log.is_file() else sorted(log.glob("*.mcap"))
    return sha256_file(files[0]) if files else ""


def _checkpoint_payload(model, parent_contract, cfg: FinetuneCfg, logs: dict) -> dict:
    """A policies.checkpoint-format dict for policies.export (task config from the parent's provenance)."""
    prov = parent_contract.provenance
    if "task_cfg" not in prov:
        raise ContractError("the parent's provenance has no task_cfg: it was not exported by `tether export`, "
                            "so the child cannot be exported with the same task configuration")
    hidden = [m.out_features for m in model.actor if isinstance(m, torch.nn.Linear)][:-1]
    return {"format": 1, "task": parent_contract.task, "task_cfg": prov["task_cfg"],
            "ppo_cfg": {"actor_hidden": hidden, "critic_hidden": [64, 64], "finetune": config_to_dict(cfg)},
            "config_hash": prov["config_hash"], "obs_dim": parent_contract.obs_dim,
            "action_dim": parent_contract.action.dim, "model": model.state_dict(), "optimizer": {},
            "iteration": int(prov.get("iteration", 0)), "global_step": 0,
            "train_time_s": float(prov.get("train_time_s", 0.0)), "learning_rate": cfg.actor_lr, "logs": logs}


def finetune(parent_policy_dir: str | Path, logs: list[str | Path], method: str = "hil_serl",
             out_dir: str | Path = "artifacts/finetuned", cfg: FinetuneCfg | None = None,
             goal_w=(0.0, 0.0, 1.0), force: bool = False, validate_twin=None, validate_starts: int = 20,
             validate_estimated: bool = False, sim_refine: SimRefineCfg | None = SimRefineCfg(),
             progress=print, identify_groups: tuple[str, ...] = GROUPS) -> dict:
    """Fine-tune the deployed policy in ``parent_policy_dir`` on the intervention ``logs``; returns a report.

    validate_twin: a hardware.twin.TwinConfig to validate parent and child on (None: skip).
    validate_estimated: validate on ``validate_twin`` (or the default twin) with its disturbances
        replaced by the disturbance identified from the logs; skipped (report ``validation`` None) when
        that model cannot predict the logged flight (report ``prediction``: status and why).
    sim_refine: continue in the simulator with the identified disturbance (None: logs only); skipped
        when the model cannot predict the flight.
    identify_groups: the disturbance groups identification may use (policies.hil.identify.GROUPS).
    """
    t0 = time.perf_counter()
    watch = _Stopwatch(t0)
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --force to replace it")
    cfg = dataclasses.replace(cfg or FinetuneCfg(), method=method)
    parent_dir = Path(parent_policy_dir)
    parent_policy = OnnxPolicy(parent_dir)
    contract = parent_policy.contract
    parent_model = actor_from_onnx(parent_policy.onnx_path, contract)
    probe = np.random.default_rng(0).normal(size=(256, contract.obs_dim)).astype(np.float32)
    with torch.no_grad():
        parity = float(np.abs(DeployedActor(parent_model)(torch.from_numpy(probe)).numpy() - parent_policy(probe)).max())
    if parity > 1e-4:
        raise ContractError(f"{parent_dir}: the actor rebuilt from the ONNX weights differs from onnxruntime by "
                            f"{parity:.2g}; cannot fine-tune this graph")

    log_paths = [Path(p) for p in logs]
    accepted = set(lineage(contract))
    steps = load_logs(log_paths, contract, accepted, goal_w, parent_policy)
    match = replay_match(steps, parent_policy)
    if np.isfinite(match) and match < MIN_REPLAY_MATCH:
        raise LogError(f"observations rebuilt from the logs reproduce only {match:.0%} of the parent's logged "
                       f"actions (need {MIN_REPLAY_MATCH:.0%}): is goal_w {list(goal_w)} the runner's goal?")
    watch.lap("read_logs")
    progress(f"finetune: {len(steps)} steps from {len(log_paths)} log(s), {int(steps.human_controlled.sum())} "
             f"human-controlled, {len(set(steps.episode.tolist()))} episodes; replay match {match:.3f}")

    task_cfg = task_cfg_from_contract(parent_dir)
    estimate, why = None, ""
    try:
        estimate = estimate_disturbance(steps.select(steps.source == "robot"), task_cfg, groups=identify_groups)
        progress(f"finetune: identified from the logs: {estimate.describe()} (the model BIC chooses among "
                 f"{len(estimate.candidates) - 1} fitted; it explains {estimate.explained_total:.0%} of the nominal "
                 "model's prediction error)")
        why = estimate.why
        if not estimate.predictable:
            progress(f"finetune: CANNOT PREDICT: {why}. No simulator stage and no twin validation from this "
                     "estimate; the child learns from the corrections alone")
    except ValueError as e:  # too little flight to identify: fine-tuning does not need it
        why = f"no disturbance estimate: {e}"
        progress(f"finetune: {why}")
    predictable = estimate is not None and estimate.predictable
    watch.lap("identify")
    prediction = {"status": "predicted" if predictable else "cannot predict", "why": why, "predicted_success": None,
                  "validated_on": None}
    if validate_estimated:
        from hardware.twin import TwinConfig

        if predictable:
            validate_twin = dataclasses.replace(validate_twin or TwinConfig(),
                                                **estimate.twin_disturbances(task_cfg.vehicle))
            prediction["validated_on"] = "the twin with the disturbance identified from the logs"
        else:
            validate_twin = None  # a twin the logs contradict would validate nothing
    elif validate_twin is not None:
        prediction.update(status="predicted", validated_on="the twin configuration given (not from the logs)")

    data = build_transitions(steps, contract, reward="rlif" if method == "rlif" else "task")
    child_model, train_logs = finetune_actor(parent_model, data, cfg, logged_policy_actions(steps))
    watch.lap("logs_only")
    sim_report, child_val = None, None
    tol = EpisodeCfg().tol_m
    if sim_refine is not None and predictable:
        def holds(val: dict) -> bool:
            return val["success_rate"] >= sim_refine.skip_at_success and \
                val["max_err_m_median"] <= sim_refine.skip_at_err_share * tol

        def check(model) -> dict | None:
            watch.lap("sim_stage")
            val = None if validate_twin is None else \
                _validate(_torch_policy(model), contract, validate_twin, validate_starts, goal_w)
            watch.lap("validation")
            return val

        child_val = check(child_model)
        if child_val is not None and holds(child_val):
            sim_report = {"skipped": f"the logs-only child validates {child_val['success_rate']:.2f} >= "
                                     f"{sim_refine.skip_at_success:g} on the twin, median largest error "
                                     f"{child_val['max_err_m_median'] * 100:.1f} cm <= "
                                     f"{sim_refine.skip_at_err_share * tol * 100:.1f} cm"}
            progress(f"finetune: no simulator stage: {sim_report['skipped']}")
        else:
            blocks = []
            stage_cfg = sim_refine
            if "force" in estimate.model:
                headings = _start_heading_range(steps.select(steps.source == "robot"), START_HEADING_MARGIN_RAD)
                stage_cfg = dataclasses.replace(sim_refine, **dict(sim_refine.with_force), init_yaw_rad=headings)
            for b in range(sim_refine.max_blocks if validate_twin is not None else 1):
                child_model, rep_b = refine_in_sim(child_model, task_cfg, estimate.gains, data.obs[data.sim < 0.5],
                                                   dataclasses.replace(stage_cfg, seed=stage_cfg.seed + b, iterations=(
                                                   stage_cfg.iterations if b == 0 else stage_cfg.later_iterations)),
                                                   disturbance=estimate)
                blocks.append(rep_b)
                child_val = check(child_model)
                progress(f"finetune: simulator stage {b + 1}: {rep_b['sim_env_steps']:,} sim steps with the identified "
                         f"disturbance (hover cost {rep_b['cost_first']:.2f} -> {rep_b['cost_last']:.2f}), anchored on "
                         f"{rep_b['robot_anchor_steps']:,} robot steps, {rep_b['time_s']:.1f} s"
                         + ("" if child_val is None else f"; child validates {child_val['success_rate']:.2f}"))
                if child_val is None or holds(child_val):
                    break
            sim_report = {**blocks[0], "blocks": len(blocks), "cost_last": blocks[-1]["cost_last"],
                          "sim_env_steps": sum(x["sim_env_steps"] for x in blocks),
                          "time_s": sum(x["time_s"] for x in blocks)}
    elif sim_refine is not None and not predictable:
        progress("finetune: no simulator stage (the identified model cannot predict the flight)")
    t_train = time.perf_counter() - t0
    estimated = None if estimate is None else estimate.to_dict()

    from policies.export import export_policy

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        ckpt = work / "checkpoint.pt"
        torch.save(_checkpoint_payload(child_model, contract, cfg, train_logs), ckpt)
        provenance_parent = {
            "onnx_sha256": contract.provenance["onnx_sha256"], "policy_dir": str(parent_dir.resolve()),
            "lineage": lineage(contract), "method": method, "finetune_cfg": config_to_dict(cfg),
            "goal_w": list(goal_w), "replay_match": match,
            "logs": [{"path": str(p.resolve()), "mcap_sha256": _mcap_sha(p)} for p in log_paths],
            "steps": len(steps), "human_steps": int(steps.human_controlled.sum()),
            "perturbation": estimated, "prediction": prediction, "sim_refine": sim_report}
        export_dir = work / "policy"
        _, child_contract, parity_err = export_policy(ckpt, export_dir, parent=provenance_parent,
                                                      recorded_obs=data.obs[:512].numpy())
        shutil.move(str(ckpt), export_dir / "checkpoint.pt")
        watch.lap("export")
        report = {"method": method, "parent_sha256": contract.provenance["onnx_sha256"],
                  "child_sha256": child_contract.provenance["onnx_sha256"], "steps": len(steps),
                  "human_steps": int(steps.human_controlled.sum()), "replay_match": match,
                  "onnx_parity": parity_err, "train_s": t_train, "train": train_logs,
                  "perturbation": estimated, "prediction": prediction, "sim_refine": sim_report}
        if validate_twin is not None:
            report["validation_twin"] = dataclasses.asdict(validate_twin)
            report["validation"] = {
                "parent": validate_on_twin(parent_dir, validate_twin, validate_starts, goal_w),
                "child": child_val or validate_on_twin(export_dir, validate_twin, validate_starts, goal_w)}
            child = report["validation"]["child"]
            lo, hi = child["success_band"]
            if hi - lo > MAX_PREDICTION_BAND:
                prediction.update(status="cannot predict", why=(
                    f"the child's hold errors sit at the tolerance on the twin (median largest error "
                    f"{child['max_err_m_median'] * 100:.1f} cm of {EpisodeCfg().tol_m * 100:g}): its success there is "
                    f"{lo:.2f} at {1 - PREDICTION_MARGIN:.0%} of the tolerance and {hi:.2f} at "
                    f"{1 + PREDICTION_MARGIN:.0%}, too close to call for real flights"))
                progress(f"finetune: CANNOT PREDICT the child's success: {prediction['why']}")
            else:
                prediction["predicted_success"] = child["success_rate"]
            progress(f"finetune: twin validation ({prediction['validated_on']}) success parent "
                     f"{report['validation']['parent']['success_rate']:.2f} -> child "
                     f"{report['validation']['child']['success_rate']:.2f}")
        elif validate_estimated:
            report["validation"] = None
            progress("finetune: no twin validation: the identified model cannot predict the flight, so a success "
                     "rate on a twin built from it would mean nothing; only new flights can measure the child")
        watch.lap("validation")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(str(export_dir), out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["out_dir"] = str(out_dir)
    report["total_s"] = time.perf_counter() - t0
    report["timings_s"] = watch.laps
    report["timings_cpu_s"] = watch.cpu_laps
    progress(f"finetune: {method} child {report['child_sha256'][:12]} -> {out_dir} in {report['total_s']:.1f} s")
    return report


class _Stopwatch:
    """Seconds per stage: lap(name) adds the wall time since the previous lap to laps[name] and this
    process's CPU time to cpu_laps[name] (the figure that holds on a shared machine)."""

    def __init__(self, t0: float):
        self.last, self.laps = t0, {}
        self.last_cpu, self.cpu_laps = time.process_time(), {}

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.cpu_laps[name] = self.cpu_laps.get(name, 0.0) + cpu - self.last_cpu
        self.last, self.last_cpu = now, cpu


def _start_heading_range(steps, margin_rad: float) -> float:
    """Half-width of the start headings the simulator stage draws [rad]: the largest |yaw| the logged
    episodes start from, plus ``margin_rad``, at most pi."""
    first = np.r_[True, steps.episode[1:] != steps.episode[:-1]]
    q = steps.quat_wxyz[first]
    yaw = np.arctan2(2 * (q[:, 0] * q[:, 3] + q[:, 1] * q[:, 2]), 1 - 2 * (q[:, 2] ** 2 + q[:, 3] ** 2))
    return float(min(np.pi, np.abs(yaw).max(initial=0.0) + margin_rad))


def validate_on_twin(policy_dir: str | Path, twin_cfg, num_starts: int = 20, goal_w=(0.0, 0.0, 1.0),
                     seed: int = 4242) -> dict:
    """Hover success on the twin's physics (pybullet, its perturbation) from seeded starts near the goal:
    within the hold tolerance through the hold window (policies.hil.flight.EpisodeCfg)."""
    policy = OnnxPolicy(policy_dir)
    return _validate(policy, policy.contract, twin_cfg, num_starts, goal_w, seed)


def _torch_policy(model):
    """obs [M, obs] float32 -> actions [M, A] of an (unexported) actor, as onnxruntime would run it."""
    deployed = DeployedActor(model).eval()

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return deployed(torch.as_tensor(np.asarray(obs, dtype=np.float32))).numpy()
    return act


def _validate(policy, contract, twin_cfg, num_starts: int, goal_w, seed: int = 4242) -> dict:
    from hardware.twin import physics_overrides, with_policy_rate_gains
    from policies.hil.flight import EpisodeCfg, episode_starts
    from sim.pybullet_ref.evaluate import fly
    from sim.quadrotor.presets import PRESETS

    twin_cfg = with_policy_rate_gains(twin_cfg, contract.action)  # the firmware this policy expects
    ep = EpisodeCfg(goal_w=tuple(goal_w))
    starts = episode_starts(num_starts, ep, seed)
    gust = twin_cfg.wind_gust
    ext = None
    if gust is not None and not gust.off:
        if gust.start_s > 0 or gust.start_s + gust.duration_s < ep.duration_s:
            raise ValueError(f"validate_on_twin flies a steady wind only (from 0 s through the {ep.duration_s:g} s "
                             f"episode); the twin's gust blows from {gust.start_s:g} s for {gust.duration_s:g} s")
        ext = np.asarray(gust.force_w, dtype=np.float64)
    ov = physics_overrides(twin_cfg)
    ov = dataclasses.replace(ov, **{f.name: np.repeat(np.asarray(getattr(ov, f.name)), num_starts, axis=0)
                                    for f in dataclasses.fields(ov)
                                    if getattr(ov, f.name) is not None and np.ndim(getattr(ov, f.name)) == 2})
    init = {"pos_w": np.array([s["pos_w"] for s in starts]), "lin_vel_w": np.array([s["lin_vel_w"] for s in starts]),
            "quat_wxyz": np.tile([1.0, 0.0, 0.0, 0.0], (num_starts, 1)), "ang_vel_b": np.zeros((num_starts, 3))}
    r = fly(policy, contract, PRESETS[twin_cfg.preset], init, np.tile(goal_w, (num_starts, 1)),
            ep.duration_s, overrides=ov, latency_steps=int(round(twin_cfg.latency_s * contract.control_rate_hz)),
            ext_force_w=ext)
    hold = r["t_s"] >= ep.settle_s
    max_err = r["pos_err"][hold].max(axis=0)
    held, takeover_m = _held_err(r["pos_err"], contract.control_rate_hz)
    success = (max_err < ep.tol_m) & ~r["crashed"] & (held <= takeover_m)
    # the band widens the hold tolerance only: the operator's takeover threshold is its rule, not an estimate
    band = [float(((max_err < f * ep.tol_m) & ~r["crashed"] & (held <= takeover_m)).mean())
            for f in (1 - PREDICTION_MARGIN, 1 + PREDICTION_MARGIN)]
    return {"success_rate": float(success.mean()), "num_starts": num_starts,
            "max_err_m_median": float(np.median(max_err)), "crashes": int(r["crashed"].sum()),
            "takeovers": int((held > takeover_m).sum()), "success_band": band}


def _held_err(pos_err: np.ndarray, rate_hz: float) -> tuple[np.ndarray, float]:
    """([M] the largest error each flight holds for the operator's reaction time, settling included [m],
    the operator's takeover_m [m]): the operator (tether_deploy.operator_core.ScriptedOperator, a person
    alike) takes over once the error stays above takeover_m that long, which ends the episode's success
    even in the settle window. pos_err: [T, M] m."""
    from tether_deploy.operator_core import OperatorCfg

    k = max(1, int(round(OperatorCfg().reaction_s * rate_hz)))
    if len(pos_err) < k:
        return np.zeros(pos_err.shape[1]), OperatorCfg().takeover_m
    windows = np.lib.stride_tricks.sliding_window_view(pos_err, k, axis=0)  # [T - k + 1, M, k]
    return windows.min(axis=-1).max(axis=0), OperatorCfg().takeover_m
