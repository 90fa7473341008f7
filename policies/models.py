"""Actor-critic MLP and the running observation normalizer (folded into the exported graph)."""

from __future__ import annotations

import torch
from torch import nn


class EmpiricalNormalization(nn.Module):
    """Running mean / variance (Chan et al. parallel update), applied as (x - mean) / (std + eps)."""

    def __init__(self, dim: int, eps: float = 1e-2, until: int | None = None):
        super().__init__()
        self.eps = eps
        self.until = until  # stop updating after this many samples (None: never stop)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.var.sqrt() + self.eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if self.until is not None and self.count >= self.until:
            return
        n = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        self.count = total


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, act: type[nn.Module] = nn.ELU) -> nn.Sequential:
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, actor_hidden: tuple[int, ...] = (64, 64),
                 critic_hidden: tuple[int, ...] = (64, 64), init_log_std: float = -0.5,
                 action_bias: torch.Tensor | None = None):
        super().__init__()
        self.obs_normalizer = EmpiricalNormalization(obs_dim)
        self.actor = mlp(obs_dim, actor_hidden, action_dim)
        self.critic = mlp(obs_dim, critic_hidden, 1)
        self.log_std = nn.Parameter(torch.full((action_dim,), init_log_std))
        # The actor outputs an offset from the hover action, so an untrained policy already hovers
        # roughly instead of falling: this alone cuts time-to-hover severalfold.
        self.register_buffer("action_bias", action_bias if action_bias is not None else torch.zeros(action_dim))
        with torch.no_grad():
            self.actor[-1].weight.mul_(0.01)
            self.actor[-1].bias.zero_()

    def act_mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.obs_normalizer(obs)) + self.action_bias

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.obs_normalizer(obs)).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.act_mean(obs), self.log_std.exp().expand(obs.shape[0], -1))


class DeployedActor(nn.Module):
    """What gets exported: normalizer + actor mean, clipped to the action bounds."""

    def __init__(self, model: ActorCritic, low: float = -1.0, high: float = 1.0):
        super().__init__()
        self.obs_normalizer = model.obs_normalizer
        self.actor = model.actor
        self.register_buffer("action_bias", model.action_bias.clone())
        self.low, self.high = low, high

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.actor(self.obs_normalizer(obs)) + self.action_bias, self.low, self.high)
