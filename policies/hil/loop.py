"""The correction loop, programmatically: deploy on the perturbed twin, the operator corrects, record,
finetune, redeploy (hot swap), repeat; then a before/after report (JSON + PNG).

Backends:
  ros     the real processes over DDS: policy runner, scripted operator, recorder and twin nodes
          (tether_deploy), in real time; each episode is one recorder bag and a fresh twin process
          (the vehicle's reset), the runner keeps running and receives each new policy by hot swap;
  inproc  the same parts called in one process, faster than real time (policies.hil.flight), with the
          same MCAP logs; for tests and benches.
Round r flies ``episodes_per_round`` episodes with policy r, then fine-tunes policy r on every log so
far (aggregated, DAgger style) into policy r+1.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from hardware.twin import TwinConfig, WeakMotor, with_policy_rate_gains
from policies.hil.algorithms import FinetuneCfg
from policies.hil.dataset import load_log
from policies.hil.finetune import MAX_PREDICTION_BAND, finetune, lineage
from policies.hil.flight import EpisodeCfg, episode_starts, episode_success, fly_corrected_episode
from policies.hil.sim_refine import SimRefineCfg
from tether.actions import ActionMap
from tether.contract import load_policy_dir
from tether.runtime import OnnxPolicy


@dataclasses.dataclass(frozen=True)
class LoopCfg:
    rounds: int = 3
    """deploy-correct-finetune rounds (the last one only flies)"""
    episodes_per_round: int = 10
    """corrected episodes per round"""
    method: str = "hil_serl"
    """hil_serl | rlif | hg_dagger"""
    backend: str = "inproc"
    """ros | inproc"""
    twin: TwinConfig = TwinConfig(weak_motor=WeakMotor(index=2, gain=0.7))
    """the perturbed twin (a 30 % weaker motor 3 by default)"""
    episode: EpisodeCfg = EpisodeCfg()
    finetune: FinetuneCfg = FinetuneCfg()
    sim_refine: SimRefineCfg | None = SimRefineCfg()
    """continue each finetune in the simulator with the disturbance identified from the logs (None: logs only)"""
    validate_starts: int = 20
    """seeded starts of the twin validation after each finetune (0: skip)"""
    validate_on: str = "estimated"
    """estimated: the nominal twin with the disturbance identified from the logs (what a user has);
    true: the perturbed twin itself (privileged, for comparison)"""
    seed: int = 0
    domain_id: int = 42
    """ROS_DOMAIN_ID of the ros backend"""

    def __post_init__(self):
        if self.rounds < 1 or self.episodes_per_round < 1:
            raise ValueError("rounds and episodes_per_round must be >= 1")
        if self.validate_on not in ("estimated", "true"):
            raise ValueError(f"validate_on must be 'estimated' or 'true', got {self.validate_on!r}")
        if self.backend not in ("ros", "inproc"):
            raise ValueError(f"backend must be 'ros' or 'inproc', got {self.backend!r}")


def _operator_cfg(contract, joy=None):
    """The scripted operator for a runner with gamepad mapping ``joy`` (default: the runner's defaults):
    full stick = joy.rate_fraction of the contract's body-rate limits, as the runner maps it."""
    from tether_deploy.operator_core import OperatorCfg
    from tether_deploy.teleop_map import JoyMapping

    joy = joy or JoyMapping()
    # full stick is a normalized rate command of joy.rate_fraction on every axis, in rad/s by the contract
    # (a rotor policy's sticks command torques, not rates: no rate to state)
    lim = ActionMap(contract.action).to_ctbr(np.array([0.0, *([joy.rate_fraction] * 3)]))[1] \
        if contract.action.type == "ctbr" else np.zeros(3)
    return OperatorCfg(full_stick_rate_rad_s=tuple(float(x) for x in lim), joy=joy)


def episode_metrics(bag: Path, policy_dir: Path, ep: EpisodeCfg) -> dict:
    """Success, intervention rate and position error of one logged episode (from its bag)."""
    _, contract = load_policy_dir(policy_dir)
    step = load_log(bag, contract, set(lineage(contract)), ep.goal_w)
    first = int(np.argmax(np.isfinite(step.policy_action).all(1) | step.intervention))
    step = step.select(np.arange(len(step)) >= first)
    t, err = step.t_s - step.t_s[0], step.pos_err_m()
    return {"bag": str(bag), "success": episode_success(t, err, step.intervention, ep),
            "intervention_rate": float(step.intervention.mean()), "takeovers":
                int(np.sum(step.intervention[1:] & ~step.intervention[:-1])),
            "pos_err_m_mean": float(err.mean()), "pos_err_m_max": float(err.max()),
            "t_s": t[::5].round(3).tolist(), "pos_err_m": err[::5].round(4).tolist()}


# ------------------------------------------------------------------------------- ros backend


class _RosStack:
    """runner + operator (whole loop), recorder + twin (per episode) as node processes."""

    def __init__(self, policy_dir: Path, cfg: LoopCfg, log_file: Path):
        from tether.deploy import CONFIG, node_env

        self.cfg, self.config = cfg, CONFIG
        self.env = node_env(cfg.domain_id)
        self.log = open(log_file, "ab")
        self.procs: dict[str, "object"] = {}
        _, contract = load_policy_dir(policy_dir)
        op = _operator_cfg(contract)
        goal = list(cfg.episode.goal_w)
        self._start("policy_runner", "runner_node", ["runner.yaml"],
                    [f"policy_dir:={policy_dir.resolve()}", "autostart:=true", f"goal_w:={goal}",
                     "max_state_age_periods:=10.0"])
        self._start("operator", "operator_node", [],
                    [f"goal_w:={goal}", f"full_stick_rate_rad_s:={list(op.full_stick_rate_rad_s)}",
                     f"takeover_m:={op.takeover_m}", f"reaction_s:={op.reaction_s}", f"handback_m:={op.handback_m}"])

    def _start(self, name: str, module: str, files: list[str], params: list[str]):
        import subprocess
        import sys

        argv = [sys.executable, "-m", f"tether_deploy.{module}", "--ros-args", "-r", f"__node:={name}"]
        for f in files:
            argv += ["--params-file", str(self.config / f)]
        for p in params:
            argv += ["-p", p]
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _stop(self, name: str) -> None:
        import signal
        import subprocess

        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(8.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def fly_episode(self, policy_dir: Path, start: dict, bag: Path) -> None:
        t = self.cfg.twin
        # The episode starts when the runner flies (release_on_runner_flying) and the twin ends itself after its
        # flight (flight_s, sim time) however long start-up took, plus 3 s: the recorder may discover the new
        # twin's topics late (seen: 1.3 s), and the episode is judged from the first tick it logged
        params = [f"policy_dir:={policy_dir.resolve()}", f"init_pos_w:={[float(x) for x in start['pos_w']]}",
                  f"latency_s:={t.latency_s}", f"seed:={t.seed}", "release_on_runner_flying:=true",
                  f"flight_s:={self.cfg.episode.duration_s + 3.0}"]
        if t.weak_motor is not None:
            params += [f"weak_motor.index:={t.weak_motor.index}", f"weak_motor.gain:={t.weak_motor.gain}"]
        if t.payload is not None:
            params += [f"payload.mass_kg:={t.payload.mass_kg}", f"payload.pos_b:={list(t.payload.pos_b)}"]
        if t.wind_gust is not None:
            g = t.wind_gust
            params += [f"wind_gust.start_s:={float(g.start_s)}", f"wind_gust.duration_s:={float(g.duration_s)}",
                       f"wind_gust.force_w:={[float(x) for x in g.force_w]}"]
        self._start("recorder", "recorder_node", ["recorder.yaml"],
                    [f"output:={bag.resolve()}", f"policy_dir:={policy_dir.resolve()}"])  # + its camera topics
        time.sleep(2.0)  # the recorder subscribes before the flight starts
        self._start("twin", "twin_node", ["twin.yaml"], params)
        try:
            self.procs["twin"].wait(self.cfg.episode.duration_s + 60.0)
        except subprocess.TimeoutExpired:
            self._stop("twin")
            self._stop("recorder")
            raise RuntimeError(f"the twin did not fly its {self.cfg.episode.duration_s:g} s episode within a minute "
                               f"(did the runner fly?); see {self.log.name}") from None
        self._stop("twin")
        time.sleep(0.3)
        self._stop("recorder")
        dead = [n for n, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"node(s) {dead} exited during the episode; see {self.log.name}")

    def close(self) -> None:
        for name in list(self.procs)[::-1]:
            self._stop(name)
        self.log.close()


def request_hot_swap(policy_dir: str | Path, domain_id: int | None = None, timeout_s: float = 20.0) -> str:
    """Offer ``policy_dir`` on runner/load_policy; returns the runner's answer on runner/active_policy."""
    import os

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from tether_deploy import qos

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("tether_finetune_swap", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    _, contract = load_policy_dir(policy_dir)
    sha = contract.provenance["onnx_sha256"]
    answers: list[str] = []
    node.create_subscription(String, qos.ACTIVE_POLICY, lambda m: answers.append(m.data), qos.LATCHED)
    pub = node.create_publisher(String, qos.LOAD_POLICY, qos.COMMAND)
    try:
        end = time.monotonic() + timeout_s
        next_offer = time.monotonic() + 1.0  # let discovery match the publisher first
        while time.monotonic() < end:
            if any(a.startswith(f"active {sha}") or (a.startswith("rejected") and str(policy_dir) in a)
                   for a in answers):
                break
            if time.monotonic() >= next_offer:
                pub.publish(String(data=str(Path(policy_dir).resolve())))
                next_offer = time.monotonic() + 3.0
            ex.spin_once(timeout_sec=0.05)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    mine = [a for a in answers if sha in a or str(policy_dir) in a]
    return mine[-1] if mine else f"no answer from a runner within {timeout_s} s"


# --------------------------------------------------------------------------------------- loop


def success_streak(successes: list[bool]) -> int:
    """The longest run of consecutive successful episodes."""
    best = run = 0
    for ok in successes:
        run = run + 1 if ok else 0
        best = max(best, run)
    return best


def summarize(rounds: list[dict], episode_s: float, target: float = 0.9) -> dict:
    """Figures the field reports, over the rounds: episodes and time to ``target`` success (the corrected
    episodes flown, and their flight time plus the fine-tuning time, before the first round at target),
    the final intervention rate and the prediction error of each predicted round."""
    flown, time_s, reached = 0, 0.0, None
    for r in rounds:
        if r["success_rate"] >= target:
            reached = r["round"]
            break
        flown += len(r["episodes"])
        time_s += len(r["episodes"]) * episode_s + (r.get("finetune") or {}).get("finetune_export_validate_s", 0.0)
    errors = [abs(r["predicted_success"] - r["success_rate"]) for r in rounds if r.get("predicted_success") is not None]
    return {"target_success": target, "reached_in_round": reached,
            "episodes_to_target": flown if reached is not None else None,
            "time_to_target_s": time_s if reached is not None else None,
            "final_success": rounds[-1]["success_rate"], "final_intervention_rate": rounds[-1]["intervention_rate"],
            "max_prediction_error": max(errors) if errors else None,
            "rounds_cannot_predict": [r["round"] for r in rounds if r.get("prediction_status") == "cannot predict"]}


def run_correction_loop(parent_dir: str | Path, out_dir: str | Path, cfg: LoopCfg = LoopCfg(),
                        progress=print) -> dict:
    """Rounds of deploy -> correct -> finetune -> redeploy; writes report.json and plots into out_dir.

    Do no harm: a child whose validation on the twin is worse than its parent's stays on the shelf. When
    the identified disturbance cannot predict the flight there is no validation to trust: the child is
    flown unvalidated (the operator still watches), the report says so, and if its next round measures
    worse than its parent's, the parent flies again."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy_dir = Path(parent_dir)
    contract = OnnxPolicy(policy_dir).contract
    twin = with_policy_rate_gains(cfg.twin, contract.action)
    from tether_deploy.operator_core import ScriptedOperator

    operator = ScriptedOperator(_operator_cfg(contract))
    stack = _RosStack(policy_dir, cfg, out / "nodes.log") if cfg.backend == "ros" else None
    logs: list[Path] = []
    rounds = []
    prediction = {"status": "parent", "predicted_success": None}  # what the last finetune said of policy_dir
    previous = None  # (policy_dir, measured success, intervention rate) of the policy before an unvalidated child
    t_loop = time.perf_counter()
    try:
        for r in range(cfg.rounds):
            policy = OnnxPolicy(policy_dir)
            episodes = []
            starts = episode_starts(cfg.episodes_per_round, cfg.episode, cfg.seed * 1000 + r)
            for k, start in enumerate(starts):
                bag = out / f"round{r}" / f"episode{k:02d}"
                if stack is None:
                    fly_corrected_episode(policy, str(policy_dir), twin, operator, start, cfg.episode, bag)
                else:
                    stack.fly_episode(policy_dir, start, bag)
                episodes.append(episode_metrics(bag, policy_dir, cfg.episode))
                logs.append(bag)
            success = float(np.mean([e["success"] for e in episodes]))
            rate = float(np.mean([e["intervention_rate"] for e in episodes]))
            predicted = prediction["predicted_success"]
            row = {"round": r, "policy_dir": str(policy_dir), "policy_sha256": policy.contract.provenance["onnx_sha256"],
                   "success_rate": success, "intervention_rate": rate,
                   "success_streak": success_streak([e["success"] for e in episodes]),
                   "prediction_status": prediction["status"], "predicted_success": predicted,
                   "prediction_error": None if predicted is None else abs(predicted - success),
                   "elapsed_s": time.perf_counter() - t_loop, "episodes": episodes}
            said = {"parent": "", "cannot predict": ", predicted: cannot predict",
                    "predicted": f", predicted {predicted:.2f}" if predicted is not None else ""}[prediction["status"]]
            progress(f"round {r}: policy {row['policy_sha256'][:12]} success {success:.2f}{said}, intervention rate "
                     f"{rate:.2f} (share of steps under the operator) over {len(episodes)} episodes")
            if previous is not None and (success, -rate) < (previous[1], -previous[2]):
                progress(f"round {r}: the unvalidated child measured worse than its parent ({success:.2f} vs "
                         f"{previous[1]:.2f} success); the parent flies again")
                row["reverted_to"] = str(previous[0])
                policy_dir = previous[0]
                logs = logs[:-len(episodes)]  # recorded by the child: not in the parent's lineage
            previous = None
            if r + 1 < cfg.rounds:
                child = out / f"policy_round{r + 1}"
                t0, c0 = time.perf_counter(), time.process_time()
                rep = finetune(policy_dir, logs, cfg.method, child, cfg.finetune, goal_w=cfg.episode.goal_w,
                               force=True, validate_twin=twin if cfg.validate_starts else None,
                               validate_starts=cfg.validate_starts,
                               validate_estimated=cfg.validate_on == "estimated", sim_refine=cfg.sim_refine,
                               progress=progress)
                rep["finetune_export_validate_s"] = time.perf_counter() - t0
                rep["finetune_export_validate_cpu_s"] = time.process_time() - c0  # this process, not the load
                row["finetune"] = rep
                val = rep.get("validation")
                if val is not None:
                    rep["gate"] = "validated" if val["child"]["success_rate"] >= val["parent"]["success_rate"] \
                        else "refused: validates worse"
                elif cfg.validate_starts:
                    rep["gate"] = "unvalidated: cannot predict (next round measures it)"
                else:
                    rep["gate"] = "unvalidated: validation off"
                rep["deployed"] = not rep["gate"].startswith("refused")
                if not rep["deployed"]:  # do no harm: a child that validates worse stays on the shelf
                    progress(f"round {r}: child validates worse than its parent on the twin; keeping the parent")
                    lo, hi = val["parent"]["success_band"]
                    close = hi - lo > MAX_PREDICTION_BAND
                    prediction = {"status": "cannot predict" if close else "predicted",
                                  "predicted_success": None if close else val["parent"]["success_rate"]}
                    rounds.append(row)
                    continue
                if val is None:
                    progress(f"round {r}: deploying the child UNVALIDATED ({rep['gate']}); no improvement is claimed")
                    previous = (policy_dir, success, rate)
                prediction = {"status": rep["prediction"]["status"],
                              "predicted_success": rep["prediction"]["predicted_success"]}
                if stack is not None:
                    status = request_hot_swap(child, cfg.domain_id)
                    progress(f"hot swap: {status}")
                    if not status.startswith("active"):
                        raise RuntimeError(f"the runner refused the child policy {child}: {status}")
                policy_dir = child
            rounds.append(row)
    finally:
        if stack is not None:
            stack.close()
    report = {"cfg": {"rounds": cfg.rounds, "episodes_per_round": cfg.episodes_per_round, "method": cfg.method,
                      "sim_refine": None if cfg.sim_refine is None else dataclasses.asdict(cfg.sim_refine),
                      "validate_on": cfg.validate_on,
                      "backend": cfg.backend, "twin": dataclasses.asdict(cfg.twin),
                      "episode": dataclasses.asdict(cfg.episode)}, "parent": str(parent_dir), "rounds": rounds,
              "summary": summarize(rounds, cfg.episode.duration_s)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    plot_report(report, out / "report.png")
    return report


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    names = [str(r["round"]) for r in rounds]
    fig, ax = plt.subplots(2, 3, figsize=(18, 8))
    a = ax[0, 0]
    a.bar(names, [r["success_rate"] for r in rounds], color="tab:green", label="measured")
    for k, r in enumerate(rounds):
        if r.get("predicted_success") is not None:
            a.plot(k, r["predicted_success"], "kx", ms=12, mew=2, label="predicted" if k == 1 else None)
        elif r.get("prediction_status") == "cannot predict":
            a.text(k, 0.5, "cannot\npredict", ha="center", va="center", color="tab:red")
    a.axhline(0.9, color="k", ls=":", lw=0.8)
    a.set(title="success (hold within 5 cm for 10 s, no takeover)", xlabel="round", ylabel="success rate",
          ylim=(0, 1.05))
    a.legend(loc="lower right")
    a = ax[0, 1]
    a.bar(names, [r["intervention_rate"] for r in rounds], color="tab:orange")
    a.axhline(0.15, color="k", ls=":", lw=0.8)
    a.set(title="intervention rate (share of steps under the operator)", xlabel="round", ylabel="share of steps",
          ylim=(0, 1.02))
    a = ax[0, 2]
    a.bar(names, [r["success_streak"] for r in rounds], color="tab:blue")
    s = report.get("summary", {})
    reached = "not reached" if s.get("reached_in_round") is None else \
        f"{s['episodes_to_target']} episodes, {s['time_to_target_s']:.0f} s (flight + finetune)"
    a.set(title=f"longest success streak; to 90 % success: {reached}", xlabel="round", ylabel="episodes in a row",
          ylim=(0, max(1, max(len(r["episodes"]) for r in rounds))))
    a = ax[1, 0]
    for r in rounds:
        e = r["episodes"][0]
        a.plot(e["t_s"], np.asarray(e["pos_err_m"]) * 100, label=f"round {r['round']}, episode 0")
    a.axhline(5.0, color="k", ls="--", lw=0.8)
    a.set(title="position error", xlabel="t [s]", ylabel="|goal - pos| [cm]")
    a.legend()
    a = ax[1, 1]
    k = 0
    for r in rounds:
        rates = [e["intervention_rate"] for e in r["episodes"]]
        a.plot(range(k, k + len(rates)), rates, "o-", label=f"round {r['round']}")
        k += len(rates)
    a.set(title="intervention rate per episode", xlabel="episode", ylabel="share of steps by the operator",
          ylim=(-0.02, 1.02))
    a.legend()
    a = ax[1, 2]
    a.axis("off")
    lines = ["identified from the logs (BIC):"]
    for r in rounds:
        est = (r.get("finetune") or {}).get("perturbation")
        if est:
            from policies.hil.identify import DisturbanceEstimate

            d = DisturbanceEstimate(**{f: est[f] for f in est if f in DisturbanceEstimate.__dataclass_fields__})
            lines.append(f"logs to round {r['round']}: {d.describe()}")
            lines.append(f"   explains {d.explained_total:.0%}; unexplained by it {d.unexplained_share:.0%}; "
                         f"{'predictable' if d.predictable else 'CANNOT PREDICT'}")
            lines.append(f"   gate: {r['finetune'].get('gate', '')}")
        if r.get("reverted_to"):
            lines.append(f"round {r['round']}: the unvalidated child measured worse; the parent flies again")
    a.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """python -m policies.hil.loop --policy DIR --out DIR [--backend ros]: the full correction demo."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog="python -m policies.hil.loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, type=Path, help="the deployed (parent) policy directory")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--method", default="hil_serl", choices=("hil_serl", "rlif", "hg_dagger"))
    ap.add_argument("--backend", default="ros", choices=("ros", "inproc"))
    ap.add_argument("--domain-id", type=int, default=42)
    ap.add_argument("--no-sim", action="store_true", help="fine-tune on the logs only (no simulator stage)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = LoopCfg(rounds=args.rounds, episodes_per_round=args.episodes, method=args.method, backend=args.backend,
                  finetune=FinetuneCfg(method=args.method), domain_id=args.domain_id,
                  sim_refine=None if args.no_sim else SimRefineCfg())
    run_correction_loop(args.policy, args.out, cfg)
    print(f"report: {args.out / 'report.json'}, plots: {args.out / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
