"""Task registry: an explicit dict, no import-time side effects beyond defining it."""

from __future__ import annotations

import dataclasses

from sim.tasks.hover import HoverCfg, HoverEnv, RecoverCfg, RobustHoverCfg, RobustHoverEnv, RobustHoverPx4Cfg
from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg
from sim.tasks.trajectory import TrajectoryCfg, TrajectoryEnv
from sim.tasks.waypoint import WaypointCfg, WaypointEnv

TASKS: dict[str, tuple[type[QuadrotorTaskCfg], type[QuadrotorEnv]]] = {
    "hover": (HoverCfg, HoverEnv),
    "recover": (RecoverCfg, HoverEnv),
    "hover_robust": (RobustHoverCfg, RobustHoverEnv),
    "hover_robust_px4": (RobustHoverPx4Cfg, RobustHoverEnv),
    "waypoint": (WaypointCfg, WaypointEnv),
    "trajectory": (TrajectoryCfg, TrajectoryEnv),
}


def task_name_of(cfg: QuadrotorTaskCfg) -> str:
    """The registered name of the task whose config class ``cfg`` is (hover and recover share an env)."""
    for name, (cfg_cls, _) in TASKS.items():
        if type(cfg) is cfg_cls:
            return name
    raise KeyError(f"no task registered for {type(cfg).__name__}")


def make_env(task: str, cfg: QuadrotorTaskCfg | None = None, **overrides) -> QuadrotorEnv:
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    cfg_cls, env_cls = TASKS[task]
    cfg = cfg if cfg is not None else cfg_cls()
    if not isinstance(cfg, cfg_cls):
        raise TypeError(f"task {task!r} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    return env_cls(dataclasses.replace(cfg, **overrides) if overrides else cfg)



