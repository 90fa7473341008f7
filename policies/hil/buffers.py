"""Replay buffers for human-in-the-loop RL: a demonstration/intervention buffer and an online buffer.

HIL-SERL routing (Luo et al., "Precise and Dexterous Robotic Manipulation via Human-in-the-Loop
Reinforcement Learning", 2024): a human-controlled step goes into both buffers, an autonomous step into
the online buffer only. Batches are drawn half from each (RLPD, Ball et al. 2023, symmetric sampling),
so the few human corrections are never drowned by the many autonomous steps.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Transitions:
    """Columns of N transitions (torch, float32)."""

    obs: torch.Tensor  # [N, obs_dim]
    actions: torch.Tensor  # [N, A] the executed action
    rewards: torch.Tensor  # [N]
    next_obs: torch.Tensor  # [N, obs_dim]
    dones: torch.Tensor  # [N] 1 = terminated (crash); time limits are not terminations
    human: torch.Tensor  # [N] 1 = a person was in command
    sim: torch.Tensor  # [N] 1 = simulated, 0 = logged on the robot

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx) -> "Transitions":
        return Transitions(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))

    @staticmethod
    def cat(parts: list["Transitions"]) -> "Transitions":
        return Transitions(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Transitions)))


class ReplayBuffer:
    def __init__(self, data: Transitions | None = None):
        self.data = data

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data)

    def add(self, batch: Transitions) -> None:
        self.data = batch if self.data is None else Transitions.cat([self.data, batch])

    def sample(self, n: int, gen: torch.Generator) -> Transitions:
        if not len(self):
            raise ValueError("cannot sample from an empty buffer")
        return self.data.index(torch.randint(len(self), (n,), generator=gen))


def route_hil_serl(t: Transitions) -> tuple[ReplayBuffer, ReplayBuffer]:
    """(demo buffer, online buffer): human steps into both, autonomous steps into the online buffer only."""
    human = t.human > 0.5
    return ReplayBuffer(t.index(human) if human.any() else None), ReplayBuffer(t)


def sample_symmetric(demo: ReplayBuffer, online: ReplayBuffer, batch_size: int,
                     gen: torch.Generator) -> tuple[Transitions, torch.Tensor]:
    """A batch half from each buffer (all online if there is no demo); returns it and the [B] bool mask
    of the demo half."""
    if not len(demo):
        return online.sample(batch_size, gen), torch.zeros(batch_size, dtype=torch.bool)
    half = batch_size // 2
    batch = Transitions.cat([demo.sample(half, gen), online.sample(batch_size - half, gen)])
    return batch, torch.arange(batch_size) < half
