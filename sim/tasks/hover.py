"""Recover-and-hover: start up to init_pos_m away, any attitude up to init_tilt_rad, moving; reach the
goal and hold it. No success termination: holding until the time limit is the task."""

from __future__ import annotations

import dataclasses
import math

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
