"""Run settings: where and how many, not what. They sit beside a task config, never in it (issue 13).

A task config (``QuadrotorTaskCfg``) says what is simulated and rewarded; its hash identifies the task.
Device, env count, physics implementation, threads and the env seed are settings of one run on one
machine: a policy trained with 4096 envs on CUDA evaluates with 64 envs on a CPU, and its contract's
config hash is the same whichever machine trained it.

Old checkpoints and contracts hold these keys inside their task config (``num_envs``, ``device``,
``seed``, ``compile``); :func:`split_run_keys` takes them out, so those files still load.
"""

from __future__ import annotations

import dataclasses

PHYSICS = ("eager", "compiled", "fused", "auto")


@dataclasses.dataclass(frozen=True)
class RunCfg:
    num_envs: int = 4096
    """number of parallel environments (per process: each rank of a data-parallel run has its own)"""
    device: str = "cpu"
    """torch device of the env's tensors and generator, e.g. 'cpu', 'cuda', 'cuda:1'"""
    seed: int = 0
    """seed of the environment's own random generator"""
    physics: str = "eager"
    """'eager': dynamics.step op by op (small batches, tests); 'compiled': torch.compile of that step;
    'fused': the fused training step (sim.tasks.fused_env: physics, observation, reward, dones and
    resets in one compiled kernel); 'auto': fused where the task supports it, else eager"""
    threads: int | None = None
    """torch intra-op CPU threads the run sets (None: leave the process's setting alone) [1]"""

    def __post_init__(self):
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.physics not in PHYSICS:
            raise ValueError(f"physics must be one of {list(PHYSICS)}, got {self.physics!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunCfg))
LEGACY_RUN_KEYS = ("num_envs", "device", "seed", "compile")
"""keys task configs held before issue 13 (``compile: true`` meant physics 'compiled')"""


def split_run_keys(d: dict) -> tuple[dict, dict]:
    """(task keys, run keys) of a flat dict of overrides or of an old task config dict.

    ``compile`` (a bool, the old task key) becomes ``physics``: 'compiled' when true; false says nothing.
    """
    task = {k: v for k, v in d.items() if k not in RUN_KEYS and k != "compile"}
    run = {k: v for k, v in d.items() if k in RUN_KEYS}
    if d.get("compile") and "physics" not in run:
        run["physics"] = "compiled"
    return task, run


# Tasks whose run settings differ from RunCfg()'s, by name (an explicit registry, as PPO_DEFAULTS):
# the vehicle-class tasks draw from a wide class and learn best with fewer, longer rollouts per update.
RUN_DEFAULTS: dict[str, RunCfg] = {
    "hover_robust": RunCfg(num_envs=1024),
    "hover_robust_px4": RunCfg(num_envs=1024),
    "hover_robust_rotor": RunCfg(num_envs=1024),
    # the ray fan of its privileged inputs costs ~2/3 of a step: 512 envs keep an iteration near 2 s here
    "navigate": RunCfg(num_envs=512),
}


def run_defaults(task: str) -> RunCfg:
    """The run settings ``task`` uses unless told otherwise."""
    return RUN_DEFAULTS.get(task, RunCfg())
