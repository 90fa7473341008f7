"""Task registry: an explicit dict, no import-time side effects beyond defining it."""

from __future__ import annotations

import dataclasses

from sim.tasks.hover import HoverCfg, HoverEnv, RecoverCfg, RobustHoverCfg, RobustHoverEnv, RobustHoverPx4Cfg
from sim.tasks.hover_rotor import RobustHoverRotorCfg, RobustHoverRotorEnv
from sim.tasks.navigate import NavigateCfg, NavigateEnv
from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg
from sim.tasks.run_cfg import LEGACY_RUN_KEYS, RunCfg, run_defaults, split_run_keys
from sim.tasks.trajectory import TrajectoryCfg, TrajectoryEnv
from sim.tasks.waypoint import WaypointCfg, WaypointEnv

TASKS: dict[str, tuple[type[QuadrotorTaskCfg], type[QuadrotorEnv]]] = {
    "hover": (HoverCfg, HoverEnv),
    "recover": (RecoverCfg, HoverEnv),
    "hover_robust": (RobustHoverCfg, RobustHoverEnv),
    "hover_robust_px4": (RobustHoverPx4Cfg, RobustHoverEnv),
    "hover_robust_rotor": (RobustHoverRotorCfg, RobustHoverRotorEnv),
    "waypoint": (WaypointCfg, WaypointEnv),
    "trajectory": (TrajectoryCfg, TrajectoryEnv),
    "navigate": (NavigateCfg, NavigateEnv),
}


def task_name_of(cfg: QuadrotorTaskCfg) -> str:
    """The registered name of the task whose config class ``cfg`` is (hover and recover share an env)."""
    for name, (cfg_cls, _) in TASKS.items():
        if type(cfg) is cfg_cls:
            return name
    raise KeyError(f"no task registered for {type(cfg).__name__}")


def make_env(task: str, cfg: QuadrotorTaskCfg | None = None, run: RunCfg | None = None,
             **overrides) -> QuadrotorEnv:
    """The env of ``task``: its config (default: the task's own), run settings (default:
    ``run_defaults(task)``), and keyword overrides of either: run keys (num_envs, device, seed, physics,
    threads; ``compile=True`` as physics 'compiled') go to the run, every other key to the task config.

    ``physics='fused'`` (or 'auto' on a task the fused step covers) gives a
    :class:`sim.tasks.fused_env.FusedQuadrotorEnv`: same interface and model, one compiled kernel."""
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    cfg_cls, env_cls = TASKS[task]
    cfg = cfg if cfg is not None else cfg_cls()
    if not isinstance(cfg, cfg_cls):
        raise TypeError(f"task {task!r} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    task_over, run_over = split_run_keys(overrides)
    cfg = dataclasses.replace(cfg, **task_over) if task_over else cfg
    run = run if run is not None else run_defaults(task)
    run = dataclasses.replace(run, **run_over) if run_over else run
    from sim.tasks.fused_env import FusedQuadrotorEnv, fused_unsupported

    reason = fused_unsupported(env_cls, cfg)
    if run.physics == "fused" and reason is not None:
        raise ValueError(f"physics 'fused' does not cover task {task!r}: {reason}; use physics 'eager' or 'auto'")
    if run.physics in ("fused", "auto") and reason is None:
        return FusedQuadrotorEnv(cfg, run, env_cls)
    if run.physics == "auto":
        run = dataclasses.replace(run, physics="eager")
    return env_cls(cfg, run)


def task_cfg_from_dict(task: str, d: dict, where: str = "task config") -> QuadrotorTaskCfg:
    """The task config of ``task`` from a dict (a checkpoint's or contract's ``task_cfg``).

    Files written before issue 13 hold run settings in their task config (num_envs, device, seed,
    compile): they are dropped here, so the file loads; a run's settings come from the run, never from
    the policy (a policy trained on CUDA evaluates on a CPU)."""
    from tether.config import config_from_dict

    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    cfg_cls, _ = TASKS[task]
    task_keys = {k: v for k, v in d.items() if k not in LEGACY_RUN_KEYS}
    return config_from_dict(cfg_cls, task_keys, where=where)
