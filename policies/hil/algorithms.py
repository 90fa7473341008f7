"""Fine-tuning a deployed actor from corrected flights: an off-policy actor-critic, RLIF, HG-DAgger.

All start from the deployed actor (the parent's ONNX weights, normalizer folded in and kept frozen).
  * ``hil_serl`` (default): TD3+BC (Fujimoto & Gu, NeurIPS 2021) with HIL-SERL routing and RLPD's
    50/50 sampling: twin critics learn Q of the hover reward on the online buffer (every logged step),
    the actor climbs Q (normalized by the batch's mean |Q|) and imitates the human on the demo half.
    The deployed policy is deterministic, so the critic is first fit to it alone (policy evaluation)
    before the actor moves: a randomly initialised critic would otherwise drag a good actor anywhere.
  * ``rlif``: the same learner, rewarded only by takeovers (rlif.rlif_rewards), no demo imitation.
  * ``hg_dagger`` (Kelly et al., ICRA 2019), the baseline: behaviour cloning on the takeover segments'
    human labels, aggregated with the policy's own data (its logged actions on autonomous steps).
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from policies.hil.buffers import Transitions, route_hil_serl
from policies.hil.dataset import StepLog
from policies.hil.rlif import hover_rewards, rlif_rewards
from policies.models import ActorCritic
from tether.contract import PolicyContract

METHODS = ("hil_serl", "rlif", "hg_dagger")


@dataclasses.dataclass(frozen=True)
class FinetuneCfg:
    method: str = "hil_serl"
    """hil_serl | rlif | hg_dagger"""
    critic_warmup_steps: int = 500
    """critic updates on the fixed deployed actor before the actor moves [updates]"""
    updates: int = 1000
    """actor-critic (or behaviour cloning) updates after the warm-up [updates]"""
    batch_size: int = 256
    """transitions per update (half demo, half online)"""
    gamma: float = 0.97
    """discount per control step (0.97 at 50 Hz: a horizon of about 0.7 s)"""
    tau: float = 0.01
    """Polyak rate of the target networks [1/update]"""
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    alpha: float = 0.02
    """TD3+BC: weight of the normalized Q term against imitation (Fujimoto & Gu use 2.5 with actions
    spanning [-1, 1]; corrections here are a few hundredths, so imitation needs a larger share)"""
    policy_delay: int = 2
    """critic updates per actor update"""
    target_noise: float = 0.05
    """std of the target-policy smoothing noise [normalized action]"""
    target_noise_clip: float = 0.1
    critic_hidden: tuple[int, ...] = (64, 64)
    anchor_weight: float = 0.1
    """hg_dagger: weight of the policy's own actions on autonomous steps (the aggregated data)"""
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.updates < 1 or self.batch_size < 2 or self.critic_warmup_steps < 0:
            raise ValueError("updates >= 1, batch_size >= 2 and critic_warmup_steps >= 0 are required")
        if not 0 < self.gamma < 1 or not 0 < self.tau <= 1:
            raise ValueError("gamma must be in (0, 1) and tau in (0, 1]")


# ------------------------------------------------------------------------------- parent actor


def actor_from_onnx(onnx_path, contract: PolicyContract, eps: float = 1e-2) -> ActorCritic:
    """The ActorCritic whose DeployedActor exports to this ONNX graph (policies.export layout): the
    initializers by name, the normalizer's std from the folded divisor. Parity is checked by the caller."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    divs = [n for n in model.graph.node if n.op_type == "Div"]
    linear = sorted((k for k in init if k.startswith("actor.") and k.endswith(".weight")),
                    key=lambda k: int(k.split(".")[1]))
    if "obs_normalizer.mean" not in init or len(divs) != 1 or divs[0].input[1] not in init or not linear:
        raise ValueError(f"{onnx_path}: not an actor exported by policies.export (normalizer + MLP); "
                         "finetuning needs that layout")
    hidden = tuple(int(init[k].shape[0]) for k in linear[:-1])
    ac = ActorCritic(contract.obs_dim, contract.action.dim, actor_hidden=hidden,
                     action_bias=torch.as_tensor(init["action_bias"].copy(), dtype=torch.float32))
    state = ac.state_dict()
    for k, v in init.items():
        if k in state:
            state[k] = torch.as_tensor(v.copy(), dtype=torch.float32)
    std = torch.as_tensor(init[divs[0].input[1]].copy(), dtype=torch.float32) - eps
    state["obs_normalizer.var"] = std.clamp_min(0.0).square()
    state["obs_normalizer.count"] = torch.tensor(10**9)
    ac.load_state_dict(state)
    return ac.eval()


# ---------------------------------------------------------------------------------- transitions


def build_transitions(step: StepLog, contract: PolicyContract, reward: str = "task") -> Transitions:
    """(s, a, r, s') within each episode; the last step of an episode has no successor and is dropped.
    reward: 'task' (hover terms on s') or 'rlif' (takeover penalty)."""
    obs = step.observations(contract)
    dt = 1.0 / contract.control_rate_hz
    nxt = np.arange(1, len(step) + 1)
    valid = np.zeros(len(step), dtype=bool)
    valid[:-1] = step.episode[1:] == step.episode[:-1]
    nxt = np.minimum(nxt, len(step) - 1)
    if reward == "rlif":
        r = rlif_rewards(step.intervention, step.episode)
    else:
        err = step.pos_err_m()
        q = step.quat_wxyz
        up_z = 1 - 2 * (q[:, 1] ** 2 + q[:, 2] ** 2)
        change = step.executed - step.prev_executed[:, -1]
        r = hover_rewards(err[nxt], up_z[nxt], np.linalg.norm(step.lin_vel_w, axis=1)[nxt], change, dt)
    human = step.human_controlled.astype(np.float32)
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    t = Transitions(obs=f(obs), actions=f(step.executed), rewards=f(r), next_obs=f(obs[nxt]),
                    dones=torch.zeros(len(step)), human=f(human), sim=f(step.source == "sim"))
    return t.index(torch.as_tensor(valid))


# ------------------------------------------------------------------------------------ learners


def _layernorm_mlp(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """RLPD's critic: LayerNorm after every hidden layer keeps Q from extrapolating off the data."""
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 1))


class TwinQ(nn.Module):
    def __init__(self, normalizer: nn.Module, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.normalizer = normalizer
        self.q1 = _layernorm_mlp(obs_dim + act_dim, hidden)
        self.q2 = _layernorm_mlp(obs_dim + act_dim, hidden)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.normalizer(obs).clamp(-10.0, 10.0), act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def _act(model: ActorCritic, obs: torch.Tensor) -> torch.Tensor:
    return model.act_mean(obs).clamp(-1.0, 1.0)


def finetune_actor(parent: ActorCritic, data: Transitions, cfg: FinetuneCfg,
                   policy_actions: torch.Tensor | None = None) -> tuple[ActorCritic, dict[str, float]]:
    """A fine-tuned copy of ``parent`` (the parent is not modified) and the last losses.

    policy_actions: [N] the parent's logged actions for ``data`` (hg_dagger's aggregated own data).
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    actor = copy.deepcopy(parent).train()
    for p in actor.obs_normalizer.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    if cfg.method == "hg_dagger":
        return _behaviour_cloning(actor, data, cfg, policy_actions, gen, t0)

    critic = TwinQ(actor.obs_normalizer, data.obs.shape[1], data.actions.shape[1], cfg.critic_hidden)
    critic_target = copy.deepcopy(critic)
    actor_target = copy.deepcopy(actor)
    critic_params = [p for n, p in critic.named_parameters() if not n.startswith("normalizer")]
    q_opt = torch.optim.Adam(critic_params, lr=cfg.critic_lr, foreach=True)
    pi_opt = torch.optim.Adam(actor.actor.parameters(), lr=cfg.actor_lr, foreach=True)
    demo, online = route_hil_serl(data)
    use_demo = cfg.method == "hil_serl"
    logs: dict[str, float] = {}
    sample = _symmetric_sampler(data, demo if use_demo else type(demo)(), online, cfg.batch_size, gen)
    nets = [(list(net.parameters()), list(tgt.parameters())) for net, tgt in ((critic, critic_target),
                                                                              (actor, actor_target))]
    for it in range(cfg.critic_warmup_steps + cfg.updates):
        b, is_demo = sample()
        with torch.no_grad():
            noise = (torch.randn(b.actions.shape, generator=gen) * cfg.target_noise).clamp(
                -cfg.target_noise_clip, cfg.target_noise_clip)
            next_a = (_act(actor_target, b.next_obs) + noise).clamp(-1.0, 1.0)
            tq1, tq2 = critic_target(b.next_obs, next_a)
            target = b.rewards + cfg.gamma * (1.0 - b.dones) * torch.min(tq1, tq2)
        q1, q2 = critic(b.obs, b.actions)
        q_loss = (q1 - target).square().mean() + (q2 - target).square().mean()
        q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        q_opt.step()
        warm = it < cfg.critic_warmup_steps
        if not warm and it % cfg.policy_delay == 0:
            pi = _act(actor, b.obs)
            q_pi = critic(b.obs, pi)[0]
            lam = cfg.alpha / q_pi.abs().mean().detach().clamp_min(1e-6)
            pg_loss = -lam * q_pi.mean()
            bc_loss = (pi[is_demo] - b.actions[is_demo]).square().sum(-1).mean() if is_demo.any() \
                else torch.zeros(())
            pi_loss = pg_loss + bc_loss
            pi_opt.zero_grad(set_to_none=True)
            pi_loss.backward()
            nn.utils.clip_grad_norm_(actor.actor.parameters(), 1.0)
            pi_opt.step()
            logs.update({"losses/policy_q": pg_loss.item(), "losses/bc": bc_loss.item()})
        with torch.no_grad():
            for params, targets in nets:
                torch._foreach_lerp_(targets, params, cfg.tau)
        logs["losses/q"] = q_loss.item()
    logs["time/update_s"] = time.perf_counter() - t0
    logs["data/demo"], logs["data/online"] = float(len(demo)), float(len(online))
    return actor.eval(), logs


def _symmetric_sampler(data: Transitions, demo, online, batch_size: int, gen: torch.Generator):
    """policies.hil.buffers.sample_symmetric on buffers routed from ``data`` (route_hil_serl), drawing the
    same rows with the same generator calls, as one gather per column the learner reads (obs, actions,
    rewards, next_obs, dones) instead of an index and a concatenation per column and buffer."""
    if online.data is not data:
        raise ValueError("the online buffer must hold the transitions themselves (route_hil_serl)")
    human_rows = torch.nonzero(data.human > 0.5).squeeze(-1) if len(demo) else None
    if human_rows is not None and len(human_rows) != len(demo):
        raise ValueError("the demo buffer must hold the human-labelled transitions (route_hil_serl)")
    half = batch_size // 2
    is_demo = torch.arange(batch_size) < half if len(demo) else torch.zeros(batch_size, dtype=torch.bool)
    cols = (data.obs, data.actions, data.rewards, data.next_obs, data.dones)

    def sample():
        if human_rows is None:
            rows = torch.randint(len(data), (batch_size,), generator=gen)
        else:
            rows = torch.cat([human_rows[torch.randint(len(human_rows), (half,), generator=gen)],
                              torch.randint(len(data), (batch_size - half,), generator=gen)])
        obs, actions, rewards, next_obs, dones = (c[rows] for c in cols)
        return Transitions(obs, actions, rewards, next_obs, dones, None, None), is_demo
    return sample


def _behaviour_cloning(actor: ActorCritic, data: Transitions, cfg: FinetuneCfg, policy_actions, gen,
                       t0: float) -> tuple[ActorCritic, dict[str, float]]:
    human = data.human > 0.5
    if not human.any():
        raise ValueError("hg_dagger needs human-labelled steps (takeover segments); the logs have none")
    own = ~human & torch.isfinite(policy_actions).all(-1) if policy_actions is not None else torch.zeros_like(human)
    h_obs, h_act = data.obs[human], data.actions[human]
    o_obs, o_act = data.obs[own], (policy_actions[own] if own.any() else None)
    opt = torch.optim.Adam(actor.actor.parameters(), lr=cfg.actor_lr)
    for _ in range(cfg.critic_warmup_steps + cfg.updates):
        i = torch.randint(len(h_obs), (cfg.batch_size,), generator=gen)
        loss = (_act(actor, h_obs[i]) - h_act[i]).square().sum(-1).mean()
        if o_act is not None:
            j = torch.randint(len(o_obs), (cfg.batch_size,), generator=gen)
            loss = loss + cfg.anchor_weight * (_act(actor, o_obs[j]) - o_act[j]).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return actor.eval(), {"losses/bc": loss.item(), "time/update_s": time.perf_counter() - t0,
                          "data/demo": float(human.sum()), "data/online": float(own.sum())}


def logged_policy_actions(step: StepLog) -> torch.Tensor:
    """The policy's own (logged) actions aligned with build_transitions' rows."""
    valid = np.zeros(len(step), dtype=bool)
    valid[:-1] = step.episode[1:] == step.episode[:-1]
    return torch.as_tensor(step.policy_action[valid], dtype=torch.float32)
