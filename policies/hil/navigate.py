"""The correction loop on task `navigate` (issue 11 item 5): the operator takes over near obstacles, the
depth student learns from what the operator flew, with the images it saw.

  * :class:`NavOperator`: the scripted operator of navigation. It sees the world as a pilot does (the
    analytic distance to the nearest obstacle, now and where the vehicle will be ``lookahead_s`` on), takes
    over after its reaction time when either clearance is under ``takeover_clearance_m``, flies away from
    the obstacle and on toward the goal with the hover operator's controller and gamepad
    (tether_deploy.operator_core.ScriptedOperator.sticks, teleop_map.StickMapper: the sticks a person's
    gamepad would send, mapped as the runner maps them), and hands back once clear for ``handback_hold_s``.
  * :func:`fly_corrected_fields`: the exported student flies obstacle fields in Tether's simulator
    (policies.nav_eval.fly, its judgement) with the operator between policy and vehicle; each field is
    one intervention log in the recorder's layout (policies.hil.flight._Log: odometry, policy, human and
    executed commands, the intervention flag, the goal, the active policy, and the depth image on the
    contract's topic in its encoding).
  * :func:`finetune_student`: the logs (policies.hil.dataset.load_logs, tick_images) -> a child student by
    the logs-only learner's behaviour cloning (policies.hil.algorithms, ``hg_dagger``: the operator's
    actions on the steps it flew, the parent's own actions on the rest), exported with the same contract
    (policies.export.export_module: inputs, image input, normalization), provenance naming the parent.

The arbitration is the runner's rule (the operator's command while the deadman is held, else the
policy's), applied in the flight loop: the runner node is not in this loop (Tether's simulator is
batched over fields; tether_deploy's runner ticks one vehicle).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from policies.hil.algorithms import FinetuneCfg, finetune_actor
from policies.hil.buffers import Transitions
from policies.hil.dataset import LogError, load_log, tick_images
from tether.contract import ContractError
from tether.runtime import OnnxPolicy
from tether_deploy.operator_core import OperatorCfg, ScriptedOperator


@dataclasses.dataclass(frozen=True)
class NavOperatorCfg:
    """Measured on 8 fields of 12 obstacles (seed 5) with a blind parent (tests/hil/test_navigate_hil.py):
    at these defaults the operator comes too late on 3 of 8 fields (they still collide), and its child
    collides on 2 of the 7 fields it stepped in on against the parent's 5; at 0.6 m / 0.8 s / 1.0 m /
    1.2 m / 0.4 no field collides under the operator (interventions 0.12-0.97 of the ticks), but its child
    collides as often as the parent (5 of 8), keeping only more clearance (0.17 against 0.09 m)."""

    takeover_clearance_m: float = 0.35
    """clearance (distance to the nearest obstacle surface minus the vehicle radius) under which the
    operator takes over, now or at the lookahead [m]"""
    lookahead_s: float = 0.4
    """the operator also judges where the vehicle will be this far ahead at its velocity [s]"""
    reaction_s: float = 0.1
    """the danger must last this long before the operator is on the sticks [s]"""
    handback_clearance_m: float = 0.6
    """clearance, now and at the lookahead, above which the operator may hand back [m]"""
    handback_hold_s: float = 0.4
    """how long it must hold before handing back [s]"""
    escape_m: float = 0.8
    """the operator flies toward a point this far away from the obstacle and on toward the goal [m]"""
    goal_share: float = 0.6
    """weight of the goal direction against the direction away from the obstacle [1]"""
    flying: OperatorCfg = OperatorCfg(ki_pos=0.0, ki_tilt=0.0, kp_pos=3.0, kd_pos=2.0)
    """the hover operator's controller and gamepad (its gains: a point that moves with the vehicle is a
    velocity command; no integrals, there is no trim to learn between obstacles)"""

    def __post_init__(self):
        if not 0 < self.takeover_clearance_m < self.handback_clearance_m:
            raise ValueError("need 0 < takeover_clearance_m < handback_clearance_m [m]")
        if min(self.lookahead_s, self.reaction_s, self.handback_hold_s) < 0 or self.escape_m <= 0:
            raise ValueError("lookahead_s, reaction_s, handback_hold_s must be >= 0 [s] and escape_m > 0 [m]")


class NavOperator:
    """``step(t_s, pos_w, quat_wxyz, lin_vel_w, goal_w, clearance_m, away_w)`` -> (axes, buttons) of one
    gamepad sample; clearance_m is (now, at the lookahead) [m], away_w the unit horizontal direction in
    which the clearance grows fastest (world)."""

    def __init__(self, cfg: NavOperatorCfg = NavOperatorCfg()):
        self.cfg = cfg
        self.pilot = ScriptedOperator(dataclasses.replace(cfg.flying, takeover_m=2e-9, reaction_s=0.0,
                                                          handback_m=1e-9, handback_speed_m_s=1e-9))
        self.engaged, self.takeovers = False, 0
        self._since: float | None = None

    def reset_episode(self) -> None:
        self.engaged, self._since = False, None
        self.pilot.reset_episode()

    def _supervise(self, t: float, clearance: float) -> None:
        c = self.cfg
        trigger = clearance < c.takeover_clearance_m if not self.engaged else clearance > c.handback_clearance_m
        if not trigger:
            self._since = None
            return
        self._since = t if self._since is None else self._since
        if t - self._since >= (c.handback_hold_s if self.engaged else c.reaction_s):
            self.engaged, self._since = not self.engaged, None
            if self.engaged:
                self.takeovers += 1
                self.pilot.reset_episode()

    def step(self, t_s, pos_w, quat_wxyz, lin_vel_w, goal_w, clearance_m, away_w) -> tuple[list[float], list[int]]:
        c, f = self.cfg, self.cfg.flying
        self._supervise(t_s, float(min(clearance_m)))
        if not self.engaged:
            return [0.0] * f.num_axes, [0] * f.num_buttons
        pos = np.asarray(pos_w, dtype=np.float64)
        to_goal = np.asarray(goal_w, dtype=np.float64)[:2] - pos[:2]
        to_goal /= max(np.linalg.norm(to_goal), 1e-6)
        d = (1 - c.goal_share) * np.asarray(away_w, dtype=np.float64)[:2] + c.goal_share * to_goal
        d /= max(np.linalg.norm(d), 1e-6)
        target = np.array([*(pos[:2] + c.escape_m * d), goal_w[2]])
        axes, buttons = self.pilot.step(t_s, pos, quat_wxyz, lin_vel_w, target)
        # the hover pilot holds heading 0; here the camera must look where the vehicle flies
        w, x, y, z = np.asarray(quat_wxyz, dtype=np.float64)
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        err = np.arctan2(np.sin(np.arctan2(d[1], d[0]) - yaw), np.cos(np.arctan2(d[1], d[0]) - yaw))
        stick = float(np.clip(f.k_yaw * err / f.full_stick_rate_rad_s[2], -1.0, 1.0))
        axes[f.joy.axis_yaw] = -stick if f.joy.invert_yaw else stick
        return axes, buttons


def _clearance(env, field, pos_w: np.ndarray, vel_w: np.ndarray, lookahead_s: float):
    """(clearance now [N], at the lookahead [N], unit horizontal direction away from the nearest obstacle
    [N, 2]) [m]: obstacles (sim.tasks.obstacles.obstacle_distance) and the ground, minus the vehicle radius."""
    from sim.tasks import obstacles

    ground = field.ground_z_w.double().numpy()
    p = torch.as_tensor(np.nan_to_num(pos_w), dtype=torch.float32).requires_grad_(True)
    d = obstacles.obstacle_distance(field, p)
    (grad,) = torch.autograd.grad(torch.where(torch.isfinite(d), d, 0.0).sum(), p)
    ahead = obstacles.obstacle_distance(field, p.detach() + lookahead_s * torch.as_tensor(vel_w, dtype=torch.float32))
    r = env.cfg.vehicle_radius_m
    g = grad[:, :2].double().numpy()
    away = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
    return (np.minimum(d.detach().double().numpy(), pos_w[:, 2] - ground) - r,
            np.minimum(ahead.double().numpy(), pos_w[:, 2] + lookahead_s * vel_w[:, 2] - ground) - r, away)


def fly_corrected_fields(policy_dir: str | Path, num_fields: int, num_obstacles: int, out_dir: str | Path | None,
                         operator_cfg: NavOperatorCfg | None = NavOperatorCfg(), seed: int = 0,
                         t0_ns: int = 1_700_000_000 * 10**9) -> dict:
    """Fly the exported depth policy in ``policy_dir`` over ``num_fields`` fields of ``num_obstacles``
    (policies.nav_eval's generator, seeded ``seed``), the operator watching (None: the policy alone). With
    ``out_dir``, field i is logged to out_dir/field<i>. Returns nav_eval.fly's flight (outcome, time_s,
    min_clearance_m, ...) plus intervention_rate [N] (share of ticks under the operator) and takeovers [N]."""
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Bool, String

    from policies.hil.flight import _Log
    from policies.hil.loop import _operator_cfg
    from policies.nav_eval import TetherSim, _policy_image, _take, draw_fields, fly
    from policies.evaluation import task_cfg_from_contract
    from tether_deploy.conversions import command_names, fill_odometry, fill_point_stamped
    from tether_deploy.teleop_map import StickMapper
    from nav_msgs.msg import Odometry

    policy = OnnxPolicy(policy_dir)
    contract = policy.contract
    image = _policy_image(contract)
    env, field = draw_fields(task_cfg_from_contract(policy_dir), num_fields, num_obstacles, seed)
    sim = TetherSim(env, field, image)
    names = command_names(contract.action)
    dt = env.cfg.control_dt
    mapper = StickMapper(contract.action, (operator_cfg or NavOperatorCfg()).flying.joy)
    ops = None
    if operator_cfg is not None:  # full stick = the rates the runner maps it to, by the contract
        rates = _operator_cfg(contract, operator_cfg.flying.joy).full_stick_rate_rad_s
        operator_cfg = dataclasses.replace(operator_cfg, flying=dataclasses.replace(operator_cfg.flying,
                                                                                    full_stick_rate_rad_s=rates))
        ops = [NavOperator(operator_cfg) for _ in range(num_fields)]
    logs = [_Log(Path(out_dir) / f"field{i:02d}", contract.images) for i in range(num_fields)] if out_dir else None
    ticks, under = np.zeros(num_fields, dtype=int), np.zeros(num_fields, dtype=int)
    goal_w = env.goal_w.double().numpy()
    sha = contract.provenance["onnx_sha256"]
    if logs is not None:
        for i, log in enumerate(logs):
            log.write("active", t0_ns, String(data=f"active {sha} {Path(policy_dir).resolve()}"))
            g = log.msg["point"]()
            fill_point_stamped(g, goal_w[i])
            log.write("goal", t0_ns, g)
    odom = Odometry()
    odom.header.frame_id, odom.child_frame_id = "world", "base_link"

    def correct(k, ids, q, depth, actions):
        t = k * dt
        t_ns = t0_ns + int(round(t * 1e9))
        executed = actions.copy()
        if ops is not None:
            now, ahead, away = _clearance(env, _take(field, ids), q["pos_w"], q["lin_vel_w"], operator_cfg.lookahead_s)
        for j, i in enumerate(ids):
            human, flag = None, False
            if ops is not None:
                axes, buttons = ops[i].step(t, q["pos_w"][j], q["quat_wxyz"][j], q["lin_vel_w"][j], goal_w[i],
                                            (now[j], ahead[j]), away[j])
                human, deadman, _ = mapper(axes, buttons)
                flag = bool(deadman)
                if flag:
                    executed[j] = human
            ticks[i] += 1
            under[i] += flag
            if logs is None:
                continue
            log = logs[i]
            fill_odometry(odom, q["pos_w"][j], q["quat_wxyz"][j], q["lin_vel_w"][j], q["ang_vel_b"][j])
            odom.header.stamp.sec, odom.header.stamp.nanosec = divmod(t_ns, 10**9)
            log.write("odom", t_ns, odom)
            log.image(image.name, t_ns, depth[j])
            if ops is not None:
                log.write("joy", t_ns + 500, Joy(axes=axes, buttons=buttons))
            log.command("policy", t_ns + 1000, actions[j], names)
            if flag:
                log.command("human", t_ns + 1000, human, names)
            log.command("executed", t_ns + 1000, executed[j], names)
            log.write("flag", t_ns + 1000, Bool(data=flag))
        return executed

    try:
        flight = fly(sim, env, policy, image, correct=correct)
    finally:
        for log in logs or []:
            log.close()
    flight["intervention_rate"] = under / np.maximum(ticks, 1)
    flight["takeovers"] = np.array([o.takeovers for o in ops]) if ops is not None else np.zeros(num_fields, int)
    return flight


# ------------------------------------------------------------------------------------- learning


class _FlatStudent(nn.Module):
    """A DepthStudent seen by the logs-only learner as one flat input: [state, preprocessed image]. Its
    ``actor`` is the whole trainable student (encoder and MLP); the state normalizer stays frozen."""

    def __init__(self, student, pre_shape: tuple[int, ...]):
        super().__init__()
        self.actor, self.pre_shape = student, pre_shape
        self.obs_normalizer = student.obs_normalizer
        self.obs_dim = student.obs_normalizer.mean.shape[-1]

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor.act_pre(x[:, :self.obs_dim], x[:, self.obs_dim:].reshape(-1, *self.pre_shape))


def _student_of(policy_dir: Path, policy: OnnxPolicy):
    """The parent's DepthStudent from the checkpoint its provenance names, checked against its ONNX graph."""
    from policies.checkpoint import load_checkpoint
    from policies.distill import DeployedStudent, student_from_checkpoint

    ckpt_path = policy.contract.provenance.get("checkpoint")
    if ckpt_path and not Path(ckpt_path).is_absolute():
        ckpt_path = str(Path(policy_dir) / ckpt_path)  # a policy folder that carries its checkpoint
    if not ckpt_path or not Path(ckpt_path).is_file():
        raise ContractError(f"{policy_dir}: its provenance names no checkpoint file ({ckpt_path!r}); the image student "
                            "is fine-tuned from its checkpoint (export it with `tether export`)")
    ckpt = load_checkpoint(ckpt_path)
    student = student_from_checkpoint(ckpt)
    im = policy.contract.images[0]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, policy.contract.obs_dim)).astype(np.float32)
    img = rng.uniform(0.2, im.max_range_m, size=(64, *im.shape)).astype(np.float32)
    with torch.no_grad():
        mine = DeployedStudent(student)(torch.from_numpy(obs), torch.from_numpy(img)).numpy()
    err = float(np.abs(mine - policy(obs, {im.name: img})).max())
    if err > 1e-4:
        raise ContractError(f"{policy_dir}: the checkpoint {ckpt_path} differs from policy.onnx by {err:.2g}")
    return ckpt, student


def load_image_steps(logs: list[Path], policy: OnnxPolicy, accepted: set[str]):
    """(StepLog of every log, images [N, 1, H, W] m of the contract's image input at each tick)."""
    from policies.hil.dataset import StepLog

    im = policy.contract.images[0]
    parts, images = [], []
    for log in logs:
        step = load_log(log, policy.contract, accepted, policy=None)
        img, age = tick_images(log, im, step.t_s)
        ok = age <= im.max_age_s  # the runner flew only on a fresh image
        parts.append(step.select(ok))
        images.append(img[ok])
    return StepLog.concat(parts), np.concatenate(images)


def finetune_student(parent_dir: str | Path, logs: list[str | Path], out_dir: str | Path,
                     cfg: FinetuneCfg = FinetuneCfg(method="hg_dagger", critic_warmup_steps=0, updates=600,
                                                    batch_size=256, anchor_weight=0.3),
                     force: bool = False) -> dict:
    """The depth student in ``parent_dir`` fine-tuned on the corrected flights ``logs``; exported into
    ``out_dir`` with the parent's contract. Returns a report (steps, human steps, replay match, losses)."""
    from policies.distill import DeployedStudent
    from policies.export import env_from_checkpoint, export_module, normalization_section
    from policies.hil.finetune import _mcap_sha, lineage

    t0 = time.perf_counter()
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass force=True to replace it")
    policy = OnnxPolicy(parent_dir)
    contract = policy.contract
    if len(contract.images) != 1:
        raise ContractError(f"{parent_dir}: finetune_student takes a policy with one image input, this one has "
                            f"{len(contract.images)}")
    ckpt, student = _student_of(parent_dir, policy)
    im = contract.images[0]
    steps, images = load_image_steps([Path(p) for p in logs], policy, set(lineage(contract)))
    obs = steps.observations(contract)
    flew = np.isfinite(steps.policy_action).all(1)
    replay = float(np.mean(np.abs(policy(obs[flew], {im.name: images[flew]}) - steps.policy_action[flew]).max(1) < 1e-3))
    if replay < 0.75:
        raise LogError(f"the logged observations and images reproduce only {replay:.0%} of the parent's actions")
    with torch.no_grad():
        pre = student.preprocess(torch.from_numpy(images))
    flat = torch.cat([torch.from_numpy(obs), pre.reshape(len(pre), -1)], dim=1)
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    data = Transitions(obs=flat, actions=f(steps.executed), rewards=torch.zeros(len(flat)), next_obs=flat,
                       dones=torch.zeros(len(flat)), human=f(steps.human_controlled), sim=torch.zeros(len(flat)))
    child, losses = finetune_actor(_FlatStudent(student, tuple(pre.shape[1:])), data, cfg,
                                   f(steps.policy_action))
    child_student = child.actor.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    payload = copy.copy(ckpt)
    payload["model"] = child_student.state_dict()
    payload["finetune"] = {"parent": str(parent_dir.resolve()), "method": cfg.method}
    ckpt_path = out_dir / "checkpoint.pt"
    prov = {"config_hash": ckpt["config_hash"], "checkpoint": str(ckpt_path.resolve()), "method": cfg.method,
            "iteration": ckpt["iteration"], "train_time_s": ckpt["train_time_s"],
            "parent": {"onnx_sha256": contract.provenance["onnx_sha256"], "policy_dir": str(parent_dir.resolve()),
                       "lineage": lineage(contract), "method": cfg.method,
                       "logs": [{"path": str(Path(p).resolve()), "mcap_sha256": _mcap_sha(Path(p))} for p in logs],
                       "steps": len(steps), "human_steps": int(steps.human_controlled.sum()), "replay_match": replay}}
    env = env_from_checkpoint(ckpt, num_envs=4)
    _, child_contract, parity = export_module(DeployedStudent(child_student), out_dir, task=contract.task, env=env,
                                              normalization=normalization_section(child_student.obs_normalizer),
                                              provenance=prov, test_obs=obs[:256],
                                              test_images={im.name: images[:256]}, overwrite=True)
    torch.save(payload, ckpt_path)
    if child_contract.images != contract.images or child_contract.observation != contract.observation:
        raise ContractError("the child's contract differs from its parent's (inputs or image input)")
    return {"steps": len(steps), "human_steps": int(steps.human_controlled.sum()), "replay_match": replay,
            "onnx_parity": parity, "losses": losses, "child_sha256": child_contract.provenance["onnx_sha256"],
            "time_s": time.perf_counter() - t0}
