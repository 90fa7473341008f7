"""Go-to-waypoint (goal-conditioned): a random goal per episode, reached when within tolerance and
slow; reaching it terminates the episode with success."""

from __future__ import annotations

import dataclasses

import torch

from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg


@dataclasses.dataclass(frozen=True)
class WaypointCfg(QuadrotorTaskCfg):
    goal_box_m: tuple[float, float, float] = (1.0, 1.0, 0.5)
    """goals are sampled uniformly within +- this box around goal_w [m]"""
    success_speed_m_s: float = 0.1
    """max speed at the goal for success [m/s]"""
    init_pos_m: float = 0.0
    """starts at the box centre (the goal offset provides the distance)"""
    rew_success: float = 1000.0


class WaypointEnv(QuadrotorEnv):
    cfg: WaypointCfg
    success_metric = "reach"

    def _sample_goal(self, env_ids: torch.Tensor) -> torch.Tensor:
        box = torch.tensor(self.cfg.goal_box_m, device=self.device)
        centre = torch.tensor(self.cfg.goal_w, device=self.device)
        return centre + (2.0 * torch.rand(len(env_ids), 3, generator=self.gen, device=self.device) - 1.0) * box

    def _reset_envs(self, env_ids: torch.Tensor) -> None:
        super()._reset_envs(env_ids)
        # start near the box centre, not near the goal
        offset = torch.tensor(self.cfg.goal_w, device=self.device) - self.goal_w[env_ids]
        self.state.pos_w[env_ids] += offset

    def start_centre_w(self) -> torch.Tensor:
        return torch.tensor(self.cfg.goal_w, device=self.device).repeat(self.num_envs, 1)

    def _success(self, pos_err: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        return (pos_err < self.cfg.success_tol_m) & (speed < self.cfg.success_speed_m_s)
