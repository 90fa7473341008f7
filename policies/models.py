"""Actor-critic MLP, the running observation normalizer (folded into the exported graph), and the
depth-image modules (the in-graph preprocessing of tether.contract.ImageInput and a small CNN encoder).

Observation groups: an env returns a dict of named groups ("policy", "privileged", "depth", ...).
:class:`ActorCritic` reads the vector groups named in ``groups``, concatenated in that order (and
normalized together); it also takes a bare tensor, the "policy" group of a one-group model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
import torch.nn.functional as F

from tether.contract import ImageInput

Obs = torch.Tensor | Mapping[str, torch.Tensor]
"""a model's input: a dict of observation groups, or the one group's tensor of a one-group model"""


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


def concat_groups(obs: Obs, groups: tuple[str, ...]) -> torch.Tensor:
    """The vector groups ``groups`` of ``obs`` side by side [B, sum of widths]; a tensor is the one group."""
    if isinstance(obs, torch.Tensor):
        if len(groups) != 1:
            raise ValueError(f"a model reading groups {list(groups)} needs a dict of them, got one tensor")
        return obs
    missing = [g for g in groups if g not in obs]
    if missing:
        raise KeyError(f"observation has no group(s) {missing} (it has {sorted(obs)}); the model reads {list(groups)}")
    return obs[groups[0]] if len(groups) == 1 else torch.cat([obs[g] for g in groups], dim=-1)


class ActorCritic(nn.Module):
    """Gaussian MLP policy + value MLP on the normalized concatenation of the vector groups ``groups``
    (obs_dim = the sum of their widths; default: the "policy" group alone, as every checkpoint before
    observation groups). ``groups`` is no tensor, so the state dict is the same whatever the groups.

    An asymmetric critic (``critic_groups`` other than ``groups``, e.g. ("policy", "privileged")) reads
    its own groups (``critic_obs_dim`` wide) through a normalizer of its own (``critic_normalizer``); the
    actor, and so the exported graph, still reads ``groups`` alone."""

    def __init__(self, obs_dim: int, action_dim: int, actor_hidden: tuple[int, ...] = (64, 64),
                 critic_hidden: tuple[int, ...] = (64, 64), init_log_std: float = -0.5,
                 action_bias: torch.Tensor | None = None, groups: tuple[str, ...] = ("policy",),
                 critic_groups: tuple[str, ...] | None = None, critic_obs_dim: int | None = None):
        super().__init__()
        self.groups = tuple(groups)
        self.critic_groups = tuple(critic_groups) if critic_groups else self.groups
        self.obs_normalizer = EmpiricalNormalization(obs_dim)
        self.actor = mlp(obs_dim, actor_hidden, action_dim)
        if self.asymmetric:
            if critic_obs_dim is None:
                raise ValueError(f"a critic reading groups {list(self.critic_groups)} needs its critic_obs_dim")
            self.critic_normalizer = EmpiricalNormalization(critic_obs_dim)
            self.critic = mlp(critic_obs_dim, critic_hidden, 1)
        else:  # one normalizer for both: the state dict of every model before asymmetric critics
            self.critic = mlp(obs_dim, critic_hidden, 1)
        self.log_std = nn.Parameter(torch.full((action_dim,), init_log_std))
        # The actor outputs an offset from the hover action, so an untrained policy already hovers
        # roughly instead of falling: this alone cuts time-to-hover severalfold.
        self.register_buffer("action_bias", action_bias if action_bias is not None else torch.zeros(action_dim))
        with torch.no_grad():
            self.actor[-1].weight.mul_(0.01)
            self.actor[-1].bias.zero_()

    @property
    def asymmetric(self) -> bool:
        """whether the critic reads other groups than the actor (then through its own normalizer)"""
        return self.critic_groups != self.groups

    def flat(self, obs: Obs) -> torch.Tensor:
        """The un-normalized MLP input [B, obs_dim]: the groups concatenated (what the normalizer updates on)."""
        return concat_groups(obs, self.groups)

    def critic_flat(self, obs: Obs) -> torch.Tensor:
        """The critic's un-normalized input [B, critic_obs_dim] (what critic_normalizer updates on)."""
        return concat_groups(obs, self.critic_groups)

    def normalizers(self, obs: Obs) -> list[tuple[EmpiricalNormalization, torch.Tensor]]:
        """(normalizer, its un-normalized input) pairs: what a rollout step updates."""
        pairs = [(self.obs_normalizer, self.flat(obs))]
        if self.asymmetric:
            pairs.append((self.critic_normalizer, self.critic_flat(obs)))
        return pairs

    def act_mean(self, obs: Obs) -> torch.Tensor:
        return self.actor(self.obs_normalizer(self.flat(obs))) + self.action_bias

    def value(self, obs: Obs) -> torch.Tensor:
        if self.asymmetric:
            return self.critic(self.critic_normalizer(self.critic_flat(obs))).squeeze(-1)
        return self.critic(self.obs_normalizer(self.flat(obs))).squeeze(-1)

    def distribution(self, obs: Obs) -> torch.distributions.Normal:
        mean = self.act_mean(obs)
        return torch.distributions.Normal(mean, self.log_std.exp().expand(mean.shape[0], -1))


class DeployedActor(nn.Module):
    """What gets exported: normalizer + actor mean, clipped to the action bounds."""

    def __init__(self, model: ActorCritic, low: float = -1.0, high: float = 1.0):
        super().__init__()
        self.groups = model.groups
        self.obs_normalizer = model.obs_normalizer
        self.actor = model.actor
        self.register_buffer("action_bias", model.action_bias.clone())
        self.low, self.high = low, high

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.actor(self.obs_normalizer(obs)) + self.action_bias, self.low, self.high)


# ------------------------------------------------------------------------------------ depth images


class DepthPreprocess(nn.Module):
    """The in-graph steps of an image input (tether.contract.ImageInput's docstring, the one
    implementation trained with and exported): raw depth [B, 1, H, W] in metres with REP 117 specials ->
    +inf -> max_range_m, -inf -> min_range_m, the nearest depth of each block (a max-pool of -depth, NaN
    ignored unless the whole block is NaN) down to [B, 1, pooled_height, pooled_width], a block still NaN
    -> invalid_m, then / max_range_m [1]. No parameters; ONNX opset 17: IsInf, IsNaN, Where, MaxPool."""

    def __init__(self, image: ImageInput):
        super().__init__()
        if image.pooling != "nearest":
            raise ValueError(f"images.{image.name}: pooling {image.pooling!r} is not implemented (only 'nearest')")
        self.name = image.name
        self.in_hw = (image.height, image.width)
        self.out_hw = (image.pooled_height, image.pooled_width)
        self.kernel = (image.height // image.pooled_height, image.width // image.pooled_width)
        self.min_range_m, self.max_range_m, self.invalid_m = image.min_range_m, image.max_range_m, image.invalid_m

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(depth.shape[-3:]) != (1, *self.in_hw):
            raise ValueError(f"image {self.name!r}: expected [B, 1, {self.in_hw[0]}, {self.in_hw[1]}], got "
                             f"{list(depth.shape)}")
        inf = torch.isinf(depth)
        depth = torch.where(inf & (depth > 0), self.max_range_m, torch.where(inf, self.min_range_m, depth))
        nan = torch.isnan(depth)
        # nearest = -max(-depth); a NaN pixel reads -inf there, so it never wins unless the block is all NaN
        neg = torch.where(nan, -math.inf, -depth)
        nearest = -F.max_pool2d(neg, self.kernel)
        valid_any = F.max_pool2d((~nan).to(depth.dtype), self.kernel) > 0
        return torch.where(valid_any, nearest, self.invalid_m) / self.max_range_m


class DepthEncoder(nn.Module):
    """:class:`DepthPreprocess` + a small CNN -> a latent [B, latent_dim]. Sized for a 16x12 pooled
    image (three 3x3 convs, two of stride 2, then one linear layer: 39k weights at latent 64): cheap on a CPU."""

    def __init__(self, image: ImageInput, latent_dim: int = 64, channels: tuple[int, int, int] = (16, 32, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self.preprocess = DepthPreprocess(image)
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ELU(),
            nn.Flatten())
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, 1, *self.preprocess.out_hw)).shape[-1]
        self.head = nn.Sequential(nn.Linear(flat, latent_dim), nn.ELU())
        self.latent_dim = latent_dim

    def encode(self, pre: torch.Tensor) -> torch.Tensor:
        """Latent from a preprocessed image [B, 1, pooled_height, pooled_width]."""
        return self.head(self.cnn(pre))

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.encode(self.preprocess(depth))
