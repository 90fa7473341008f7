"""Recover-and-hover: start up to init_pos_m away, any attitude up to init_tilt_rad, moving; reach the
goal and hold it. No success termination: holding until the time limit is the task."""

from __future__ import annotations

import dataclasses
import math

import torch

from sim.quadrotor.presets import GRAVITY
from sim.randomization import CRAZYFLIE_CLASS, PX4_CLASS, RandomizationCfg
from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg


@dataclasses.dataclass(frozen=True)
class HoverCfg(QuadrotorTaskCfg):
    pass


@dataclasses.dataclass(frozen=True)
class RecoverCfg(QuadrotorTaskCfg):
    """The hard variant: up to 1 m away, any attitude (upside down included), random velocities."""

    init_pos_m: float = 1.0
    init_tilt_rad: float = math.pi
    init_lin_vel_m_s: float = 1.0
    init_ang_vel_rad_s: float = 3.0
    episode_length_s: float = 6.0


class HoverEnv(QuadrotorEnv):
    pass


@dataclasses.dataclass(frozen=True)
class RobustHoverCfg(QuadrotorTaskCfg):
    """Hover any vehicle of a class (issue 10): trained across CRAZYFLIE_CLASS, it observes the integral of
    its position error (integral action: no steady offset on a vehicle whose hover thrust it cannot know)
    and a longer action history (latency, motor lag). Its checkpoints swing from one save to the next, so
    `tether train` keeps the one that holds the most held-out class vehicles (policies.select)."""

    randomization: RandomizationCfg = CRAZYFLIE_CLASS
    substeps: int = 10
    """physics substeps per control step: 500 Hz at 50 Hz, so the rate loop can run at 100-500 Hz"""
    action_history: int = 3
    init_tilt_rad: float = math.radians(70.0)
    init_lin_vel_m_s: float = 1.0
    init_ang_vel_rad_s: float = 2.0
    episode_length_s: float = 6.0


@dataclasses.dataclass(frozen=True)
class RobustHoverPx4Cfg(RobustHoverCfg):
    """The same for PX4-class 1 kg quadrotors (PX4_CLASS)."""

    preset: str = "px4_1kg"
    randomization: RandomizationCfg = PX4_CLASS


class RobustHoverEnv(HoverEnv):
    """Observation groups: ``policy`` (the contract's observation) and ``privileged``: the drawn vehicle,
    for an asymmetric critic only (``ppo.critic_groups``); never the actor's, so never exported."""

    observation_names = ("pos_err_b", "pos_err_int_b", "up_b", "lin_vel_b", "ang_vel_b", "prev_actions")
    privileged_names = ("mass_ratio", "inertia_ratio", "thrust_to_weight",
                        "hover_action", "tau_up_10ms", "tau_down_10ms", "yaw_torque_ratio", "drag_ratio",
                        "latency_steps", "rate_period_ms")
    """the columns of the privileged group, each of order 1: mass, inertia, thrust-to-weight, the collective
    thrust action that hovers this vehicle (normalized by the nominal maximum, as the action is), motor time
    constants up / down [10 ms], km / kf and drag as ratios to the preset's (drag 0: none), action delay
    [control steps], rate-loop period [ms]"""

    @property
    def privileged_dim(self) -> int:
        return len(self.privileged_names)

    def privileged(self) -> torch.Tensor:
        """[N, privileged_dim] the drawn vehicle of every env (:attr:`privileged_names`), noise-free."""
        p, v = self.params, self.cfg.vehicle
        weight = p.mass * GRAVITY  # [N, 1]
        max_thrust = len(v.rotor_spin) * p.kf * p.max_rpm.square() * p.rotor_gain.mean(-1, keepdim=True)
        nominal_drag = torch.tensor(v.drag_n_s_per_m, device=self.device).abs().clamp_min(1e-12)
        div = self.rate_div if self.rate_div is not None else torch.ones_like(p.mass, dtype=torch.long)
        inertia = (p.inertia / torch.tensor(v.inertia_kg_m2, device=self.device)).mean(-1, keepdim=True)
        cols = [p.mass / v.mass_kg, inertia,
                max_thrust / weight, 2.0 * weight / v.max_thrust_n - 1.0, p.tau_up / 0.01, p.tau_down / 0.01,
                (p.km / p.kf) / (v.km_nm_per_rpm2 / v.kf_n_per_rpm2),
                (p.drag.abs() / nominal_drag).mean(-1, keepdim=True),
                self.latency_steps.to(p.mass.dtype).unsqueeze(-1), div.to(p.mass.dtype) * 1000.0 / self.cfg.physics_hz]
        return torch.cat(cols, dim=-1)

    def observe(self) -> dict[str, torch.Tensor]:
        groups = super().observe()
        groups["privileged"] = self.privileged()
        return groups
