"""Trajectory tracking: follow a Lissajous curve (a figure-eight by default) around goal_w.

goal(t) = centre + A * (sin(wx t + phase), sin(wy t), sin(wz t)); the reference velocity is in the
observation (goal_vel_w), so the policy can feed it forward."""

from __future__ import annotations

import dataclasses
import math

import torch

from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg
from sim.tasks.run_cfg import RunCfg


@dataclasses.dataclass(frozen=True)
class TrajectoryCfg(QuadrotorTaskCfg):
    amplitude_m: tuple[float, float, float] = (1.0, 0.5, 0.0)
    """Lissajous amplitude per world axis [m]"""
    frequency_hz: tuple[float, float, float] = (0.2, 0.4, 0.0)
    """Lissajous frequency per world axis [Hz]; (f, 2f, 0) is a figure-eight"""
    init_pos_m: float = 0.1
    episode_length_s: float = 10.0


class TrajectoryEnv(QuadrotorEnv):
    cfg: TrajectoryCfg
    observation_names = ("pos_err_b", "goal_vel_b", "up_b", "lin_vel_b", "ang_vel_b", "prev_actions")
    success_metric = "track"

    def __init__(self, cfg: TrajectoryCfg, run: RunCfg | None = None):
        super().__init__(cfg, run)
        self.phase = torch.zeros(self.num_envs, device=self.device)
        self._update_goal()

    def _reference(self, t: torch.Tensor, phase: torch.Tensor):
        amp = torch.tensor(self.cfg.amplitude_m, device=self.device)
        w = 2.0 * math.pi * torch.tensor(self.cfg.frequency_hz, device=self.device)
        arg = t.unsqueeze(-1) * w + torch.stack([phase, torch.zeros_like(phase), torch.zeros_like(phase)], -1)
        centre = torch.tensor(self.cfg.goal_w, device=self.device)
        return centre + amp * torch.sin(arg), amp * w * torch.cos(arg)

    def _sample_goal(self, env_ids: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "phase"):
            self.phase[env_ids] = 2.0 * math.pi * torch.rand(len(env_ids), generator=self.gen, device=self.device)
            pos, vel = self._reference(torch.zeros(len(env_ids), device=self.device), self.phase[env_ids])
            self.goal_vel_w[env_ids] = vel  # the first observation of the episode sees its own reference
            return pos
        return super()._sample_goal(env_ids)

    def goal_at(self, t_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self._reference(torch.full((self.num_envs,), float(t_s), device=self.device), self.phase)

    def _update_goal(self) -> None:
        t = self.episode_step.float() * self.cfg.control_dt
        self.goal_w, self.goal_vel_w = self._reference(t, self.phase)
