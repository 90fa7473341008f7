"""Recover-and-hover: start up to init_pos_m away, any attitude up to init_tilt_rad, moving; reach the
goal and hold it. No success termination: holding until the time limit is the task."""

from __future__ import annotations

import dataclasses
import math

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
    observation_names = ("pos_err_b", "pos_err_int_b", "up_b", "lin_vel_b", "ang_vel_b", "prev_actions")
