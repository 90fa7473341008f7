"""The training env on the fused kernel (issue 13): one compiled call per step for latency queue,
physics, observation, reward, dones and resets, with no host synchronization.

:class:`FusedQuadrotorEnv` has the interface of :class:`sim.tasks.quadrotor_env.QuadrotorEnv` (``reset``,
``step``, ``num_envs``, ``obs_dim``, ``cfg``, ``run``, ``hover_action``, ``slices``, ``action_spec``) and
the same model term for term; only the layout differs:

- the physics is :mod:`sim.quadrotor.fused` (the model on rows of envs); everything the env keeps per env
  (state, vehicle constants, goal, latency queue, past actions, episode sums, latency, episode step) is
  one float32 buffer of rows, in blocks of :data:`BLOCK` envs on a CPU (``[N / B, R, B]``, see
  ``FusedQuadrotorEnv.block``); the observation and reward are written on those rows, and torch.compile
  fuses all of it with the physics into a few vectorized loops (``dynamic=False``: one compile per env
  count and task config); each step returns a fresh buffer;
- resets cannot index a data-dependent set of envs without a host sync (``nonzero``), so every env
  holds a *pending start* (state, vehicle, latency, goal) drawn ahead by the task's own eager reset
  (``QuadrotorEnv._reset_envs``, so every hook and distribution is the eager env's), and an env that
  finishes takes it with a ``where``. The pending starts of all envs are redrawn every
  ``REFRESH_STEPS`` steps: an env that ends two episodes within one refresh interval (a crash within
  0.32 s of its start at 50 Hz, rare after the first iterations) starts both from the same draw, which
  is still a draw of the training distribution;
- the observation noise is drawn eagerly, one ``randn`` per step from the env's generator on its device
  (a generator cannot enter a compiled graph);
- episode statistics are masked means over the envs that finished, with their count
  (``info['episode_count']``), so nothing is read back to the host per step.

Not covered (:func:`fused_unsupported` says which, and ``physics='auto'`` falls back to eager): a rate
loop slower than the physics (``randomization.rate_loop_hz``, the vehicle-class tasks), goals that
move (trajectory) or are drawn per episode with task hooks of their own (waypoint), observations
other than the base set, and an external force input (``ext_force_w``: nothing sets it in training).

Compiled kernels are cached on disk between runs by inductor (FX graph and AOT autograd caches) in
``$TORCHINDUCTOR_CACHE_DIR``, set to ``~/.cache/tether/inductor`` unless the user set it
(:func:`sim.kernel_cache.use_kernel_cache`): the first run of a configuration compiles for tens of
seconds, later runs load the kernels in seconds.
"""

from __future__ import annotations

import dataclasses

import torch

from sim.kernel_cache import use_kernel_cache
from sim.quadrotor import dynamics, fused
from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg
from sim.tasks.run_cfg import RunCfg
from tether.contract import ActionSpec

BLOCK = 16
"""envs per block of the step's layout on a CPU (one AVX-512 vector of float32)"""
REFRESH_STEPS = 16
"""control steps between redraws of every env's pending start"""
BASE_OBSERVATIONS = ("pos_err_b", "up_b", "lin_vel_b", "ang_vel_b", "prev_actions")
REWARD_TERMS = ("alive", "position", "position_fine", "upright", "lin_vel", "ang_vel", "action_rate", "crash",
                "success")


def fused_unsupported(env_cls: type, cfg: QuadrotorTaskCfg) -> str | None:
    """Why the fused training step does not cover this task (None: it does)."""
    from sim.tasks.hover import HoverEnv

    if env_cls is not HoverEnv:
        return f"{env_cls.__name__} has task hooks of its own (goals, starts, observations)"
    if tuple(env_cls.observation_names) != BASE_OBSERVATIONS:
        return f"observations {list(env_cls.observation_names)} are not the base set"
    if cfg.randomization.rate_loop_hz is not None:
        return "a rate loop slower than the physics (randomization.rate_loop_hz) is not in the fused kernel"
    return None


@dataclasses.dataclass(frozen=True)
class _Rows:
    """Row ranges of the env's one buffer ``[R, N]`` (float32, envs last) and of its pending starts."""

    x: slice
    params: slice
    goal: slice
    queue: slice
    """(D+1) x A rows, oldest entry first, each entry's A rows together"""
    prev: slice
    """H x A rows, oldest first"""
    sums: slice
    latency: int
    """delay in control steps, as a float (exact: a few steps)"""
    episode_step: int
    """as a float (exact below 2^24 steps)"""
    pending_latency: int
    """row of the latency in the pending starts (whose first rows are x, params, goal as above)"""

    @classmethod
    def make(cls, n_state: int, n_params: int, queue_rows: int, prev_rows: int) -> "_Rows":
        sizes = {"x": n_state, "params": n_params, "goal": 3, "queue": queue_rows, "prev": prev_rows,
                 "sums": len(REWARD_TERMS)}
        spans, at = {}, 0
        for name, size in sizes.items():
            spans[name], at = slice(at, at + size), at + size
        return cls(**spans, latency=at, episode_step=at + 1, pending_latency=n_state + n_params + 3)

    @property
    def total(self) -> int:
        return self.episode_step + 1


class FusedQuadrotorEnv:
    """The env of ``env_cls`` (a task :func:`fused_unsupported` accepts) on the fused training step."""

    def __init__(self, cfg: QuadrotorTaskCfg, run: RunCfg, env_cls: type[QuadrotorEnv], compiled: bool = True):
        """compiled=False runs the same step function op by op (tests of the logic without a compile)."""
        reason = fused_unsupported(env_cls, cfg)
        if reason is not None:
            raise ValueError(f"the fused training step does not cover this task: {reason}")
        use_kernel_cache()
        self.run = dataclasses.replace(run, physics="fused")
        # The eager env of the task draws the starts: its generator, hooks and distributions are the
        # training distribution; its buffers hold the pending start of every env between redraws.
        self.sampler = env_cls(cfg, dataclasses.replace(run, physics="eager"))
        s = self.sampler
        self.cfg, self.device, self.num_envs, self.gen = cfg, s.device, s.num_envs, s.gen
        self.hover_action, self.slices, self.obs_dim = s.hover_action, s.slices, s.obs_dim
        self.observation_names, self.success_metric = s.observation_names, s.success_metric
        self.spec = fused.FusedSpec.from_params(s.params, cfg.control_dt, cfg.substeps,
                                                s.rate_ctrl if cfg.action_space == "ctbr" else None)
        # one randn per noisy observation column only (the past actions carry none)
        self.noise_cols = sum(sl.length for sl, std in zip(self.slices, _noise_stds(cfg, self.slices)) if std > 0)
        a = cfg.action_dim
        self.rows = _Rows.make(len(fused.state_rows(self.spec.n_rotors)), len(fused.param_rows(self.spec.n_rotors)),
                               s.action_queue.shape[1] * a, cfg.action_history * a)
        self._steps_since_refresh = REFRESH_STEPS
        key = (env_cls, cfg, self.num_envs, str(self.device), torch.get_num_threads())
        if not compiled:
            self._step_fn = _step_function(self)
        elif key in _COMPILED:
            self._step_fn = _COMPILED[key]
        else:
            # one compiled call per step; a fresh code object per key, so that each (task config, env
            # count) gets its own graph rather than a chain of recompiles of one
            self._step_fn = _COMPILED[key] = torch.compile(
                fused.fresh_function(_step_function(self), f"fused_env_step_{len(_COMPILED)}"),
                dynamic=False, fullgraph=True, options=fused.INDUCTOR_OPTIONS)
        # blocks of BLOCK envs, each block's rows together ([N / B, R, B]): the step's loop then reads and
        # writes a few contiguous streams; with [R, N] rows it ran ~200 streams at once (inputs, pending
        # starts, outputs), more than the prefetchers follow, and missed the cache on every row (the
        # step took ~3x its arithmetic at 4096 envs here). A GPU keeps one block ([1, R, N]: coalesced).
        self.block = BLOCK if self.device.type == "cpu" and self.num_envs % BLOCK == 0 else self.num_envs
        self.buf = self._to_blocks(torch.zeros(self.rows.total, self.num_envs, device=self.device))
        self._take_sampler_state()

    # ---------------------------------------------------------------- interface of QuadrotorEnv

    def action_spec(self) -> ActionSpec:
        return self.sampler.action_spec()

    @property
    def state(self) -> dynamics.QuadState:
        """The current state as a QuadState ([N, k] fields; a copy: writing it changes nothing)."""
        return fused.unpack_state(self.x)

    def reset(self) -> dict[str, torch.Tensor]:
        self.sampler.reset()
        self._take_sampler_state()
        self._steps_since_refresh = REFRESH_STEPS
        return {"policy": self._observe_eager()}

    def step(self, actions: torch.Tensor):
        if actions.shape != (self.num_envs, self.cfg.action_dim):
            raise ValueError(f"actions must be shaped {(self.num_envs, self.cfg.action_dim)}, got {tuple(actions.shape)}")
        if self._steps_since_refresh >= REFRESH_STEPS:
            self._draw_pending()
        self._steps_since_refresh += 1
        # actions and observations in blocks: a strided [N, k] read or store in the loop would keep
        # inductor from vectorizing it
        self.buf, obs, rewards, terminated, truncated, crashed, success, pos_err, ep_means, ep_count = \
            self._step_fn(actions.reshape(-1, self.block, actions.shape[1]).transpose(1, 2).contiguous(), self.buf,
                          self.pending, self._draw_noise())
        obs = obs.transpose(1, 2).reshape(self.num_envs, -1)  # [N, obs]
        info = {"time_outs": truncated, "crashed": crashed, "success": success, "pos_err_m": pos_err,
                "episode": dict(zip(_episode_keys(), ep_means.unbind(0))), "episode_count": ep_count}
        return {"policy": obs}, rewards, terminated, truncated, info

    # ---------------------------------------------------------------- views of the buffer

    @property
    def x(self) -> fused.FusedState:
        """The state rows ([N] views of the buffer, :func:`sim.quadrotor.fused.state_rows` order)."""
        return tuple(self._rows(self.buf, self.rows.x).unbind(0))

    @property
    def params(self) -> torch.Tensor:
        """[P, N] per-env constants of the step (:func:`sim.quadrotor.fused.param_rows`; a copy)"""
        return self._rows(self.buf, self.rows.params)

    @property
    def goal_rows(self) -> torch.Tensor:
        """[3, N] goal positions (a copy) [m]"""
        return self._rows(self.buf, self.rows.goal)

    @property
    def goal_w(self) -> torch.Tensor:
        """[N, 3] goal positions (a copy) [m]"""
        return self.goal_rows.T

    @property
    def queue(self) -> torch.Tensor:
        """[D+1, A, N] the latency queue, newest last (a copy)"""
        return self._rows(self.buf, self.rows.queue).view(-1, self.cfg.action_dim, self.num_envs)

    @property
    def prev_rows(self) -> torch.Tensor:
        """[H, A, N] the last H actions, newest last (a copy)"""
        return self._rows(self.buf, self.rows.prev).view(-1, self.cfg.action_dim, self.num_envs)

    @property
    def prev_actions(self) -> torch.Tensor:
        """[N, H, A] the last H actions, newest last (a copy)"""
        return self.prev_rows.permute(2, 0, 1)

    @property
    def latency(self) -> torch.Tensor:
        """[N] each env's action delay [control steps] (a copy)"""
        return self._rows(self.buf, self.rows.latency).long()

    @property
    def episode_step(self) -> torch.Tensor:
        """[N] control steps since each env's episode started (a copy)"""
        return self._rows(self.buf, self.rows.episode_step).long()

    @property
    def episode_sums(self) -> torch.Tensor:
        """[T, N] reward sums of the running episodes, :data:`REWARD_TERMS` order (a copy)"""
        return self._rows(self.buf, self.rows.sums)

    @property
    def pending_params(self) -> torch.Tensor:
        """[P, N] the vehicles of the pending starts (a copy)"""
        return self._rows(self.pending, self.rows.params)

    @property
    def pending_latency(self) -> torch.Tensor:
        """[N] the latencies of the pending starts [control steps] (a copy)"""
        return self._rows(self.pending, self.rows.pending_latency).long()

    def _to_blocks(self, rows: torch.Tensor) -> torch.Tensor:
        """[R, N] rows -> the step's layout [N / B, R, B] (a copy)."""
        return rows.reshape(rows.shape[0], -1, self.block).transpose(0, 1).contiguous()

    def _rows(self, blocks: torch.Tensor, which: slice | int) -> torch.Tensor:
        """Rows ``which`` of a buffer in the step's layout as [k, N] (or [N] for an int; a copy)."""
        part = blocks[:, which]
        if isinstance(which, int):
            return part.reshape(self.num_envs)
        return part.transpose(0, 1).reshape(part.shape[1], self.num_envs)

    # ---------------------------------------------------------------- buffers

    def _take_sampler_state(self) -> None:
        """Current state := the sampler's (after its reset): the first episode of every env."""
        s, n = self.sampler, self.num_envs
        self.buf.copy_(self._to_blocks(torch.cat([
            torch.stack(fused.pack_state(s.state), 0), fused.pack_params(s.params, self.spec), s.goal_w.T,
            s.action_queue.permute(1, 2, 0).reshape(-1, n), s.prev_actions.permute(1, 2, 0).reshape(-1, n),
            torch.zeros(len(REWARD_TERMS), n, device=self.device), s.latency_steps.float().unsqueeze(0),
            torch.zeros(1, n, device=self.device)])))

    def _draw_pending(self) -> None:
        """Every env's next start, drawn by the task's eager reset: rows x, params, goal, latency."""
        s = self.sampler
        s._reset_envs(torch.arange(self.num_envs, device=self.device))
        self.pending = self._to_blocks(torch.cat([torch.stack(fused.pack_state(s.state), 0),
                                                  fused.pack_params(s.params, self.spec, check_layout=False),
                                                  s.goal_w.T, s.latency_steps.float().unsqueeze(0)]))
        self._steps_since_refresh = 0

    def _draw_noise(self) -> torch.Tensor:
        """[N / B, noisy columns, B] standard normal draws (a generator cannot enter a compiled graph)."""
        return torch.randn(self.num_envs // self.block, self.noise_cols, self.block, generator=self.gen,
                           device=self.device)

    def _observe_eager(self) -> torch.Tensor:
        r = self.rows
        rows = self._rows(self.buf, slice(None)).unbind(0)
        noise = self._rows(self._draw_noise(), slice(None))
        return _observation(self.cfg, self.slices, rows[r.x], rows[r.goal], rows[r.prev], noise)


_COMPILED: dict[tuple, object] = {}
"""compiled step functions by (env class, task config, env count, device, threads)"""


def _step_function(env: FusedQuadrotorEnv):
    """The whole step of ``env`` as one function of tensors (what torch.compile fuses):
    ``fn(actions, buf, pending, noise)``, each in the env's block layout ([N / B, rows, B]: actions A rows,
    buf R, pending R', noise k), returns (the next buffer, the observation [N / B, obs, B], then [N]:
    rewards, terminated, truncated, crashed, success, pos_err; the episode means and count). Everything is
    rows [N / B, B]: inductor emits one vectorized loop over the envs for all of it (with [N, 3]-shaped
    buffers it emitted masked 3- and 4-wide loads and stores per env)."""
    c, spec, slices, r = env.cfg, env.spec, env.slices, env.rows
    success_fn = env.sampler._success
    hover = tuple(float(v) for v in env.hover_action.cpu())
    a_dim = c.action_dim
    depth = (r.queue.stop - r.queue.start) // a_dim
    rate_limits = tuple(float(v) for v in c.body_rate_limits_rad_s)
    max_thrust = float(c.vehicle.max_thrust_n)
    dt = c.control_dt

    def step(actions, buf, pending, noise):
        nb, block = buf.shape[0], buf.shape[2]
        # every input row read as [N]: the loop over the envs is then one-dimensional throughout (rows
        # read as [N / B, B] made inductor split it into 2-d and 1-d loops with the rows in between stored)
        rows, pend = [t.reshape(-1) for t in buf.unbind(1)], [t.reshape(-1) for t in pending.unbind(1)]
        x, goal, queue, prev, sums = rows[r.x], rows[r.goal], rows[r.queue], rows[r.prev], rows[r.sums]
        latency, episode_step = rows[r.latency], rows[r.episode_step] + 1.0

        # actions through the latency queue (QuadrotorEnv._apply_actions): newest last, each env reads
        # its own delay, as a sum of masked entries (a gather along the queue would index per env)
        act = [t.reshape(-1) for t in actions.clamp(-1.0, 1.0).unbind(1)]  # A rows
        queue = queue[a_dim:] + act
        age = (depth - 1 - latency).clamp_min(0.0)
        applied = [sum(torch.where(age == k, queue[k * a_dim + i], 0.0) for k in range(depth)) for i in range(a_dim)]
        if c.action_space == "rotor":  # QuadrotorEnv.action_to_command
            command = [0.5 * (u + 1.0) for u in applied]
        else:
            command = [0.5 * (applied[0] + 1.0) * max_thrust, *(u * lim for u, lim in zip(applied[1:], rate_limits))]
        last_action = prev[-a_dim:]
        prev = prev[a_dim:] + act

        # the physics (sim.quadrotor.fused), on the rows
        x = fused._step_rows(spec, list(x), fused._consts(spec, rows[r.params], None), command)

        # dones and rewards (QuadrotorEnv.step)
        px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz = x[:13]
        ex, ey, ez = goal[0] - px, goal[1] - py, goal[2] - pz
        pos_err = torch.sqrt(ex * ex + ey * ey + ez * ez)
        speed = torch.sqrt(vx * vx + vy * vy + vz * vz)  # the base tasks' goals do not move
        up_z = 1.0 - 2.0 * (qx * qx + qy * qy)
        # pointwise, not a reduction over rows: a sum is finite iff every term is (or it overflows, far
        # out of bounds anyway)
        finite = torch.isfinite(px + py + pz + qw + qx + qy + qz)
        crashed = (pz < c.ground_z_m) | (pos_err > c.max_distance_m) | ~finite
        success = success_fn(pos_err, speed) & ~crashed
        terminated = crashed | success
        truncated = (episode_step >= c.max_episode_steps) & ~terminated
        action_rate = sum((u - v).square() for u, v in zip(act, last_action))
        terms = [c.rew_alive * dt * torch.ones_like(pos_err), (c.rew_position * dt) * pos_err,
                 (c.rew_position_fine * dt) * torch.exp(-pos_err / c.position_fine_scale_m),
                 (c.rew_upright * dt) * (1.0 - up_z), (c.rew_lin_vel * dt) * speed,
                 (c.rew_ang_vel * dt) * torch.sqrt(wx * wx + wy * wy + wz * wz),
                 (c.rew_action_rate * dt) * action_rate, (c.rew_crash * dt) * crashed.float(),
                 (c.rew_success * dt) * success.float()]
        rewards = torch.nan_to_num(sum(terms), nan=c.rew_crash * dt)
        sums = [s + torch.nan_to_num(t) for s, t in zip(sums, terms)]

        # episode statistics of the envs that finished: masked means and their count (no host sync), as
        # one matrix-vector product (an extern kernel: a reduction inside the loop made inductor
        # recompute the whole step in every reduction)
        done = terminated | truncated
        stats = torch.stack([v.view(nb, block) for v in (*sums, episode_step * dt, pos_err, crashed.float(),
                                                         torch.ones_like(pos_err))], 1)
        totals = (stats * done.float().view(nb, 1, block)).sum((0, 2))
        count = totals[-1]
        ep_means = totals[:-1] / count.clamp_min(1.0)

        # resets: the finished envs take their pending start
        def take(new, start):
            return [torch.where(done, pend[start + i], v) for i, v in enumerate(new)]

        x = take(x, r.x.start)
        goal = take(goal, r.goal.start)
        queue = [torch.where(done, hover[i % a_dim], v) for i, v in enumerate(queue)]
        prev = [torch.where(done, hover[i % a_dim], v) for i, v in enumerate(prev)]
        sums = [torch.where(done, 0.0, v) for v in sums]
        new = [*x, *take(rows[r.params], r.params.start), *goal, *queue, *prev, *sums,
               torch.where(done, pend[r.pending_latency], latency), torch.where(done, 0.0, episode_step)]
        buf = torch.stack([v.view(nb, block) for v in new], 1)
        obs = _observation_rows(c, slices, x, goal, prev, [t.reshape(-1) for t in noise.unbind(1)])
        obs = torch.stack([v.view(nb, block) for v in obs], 1)
        return buf, obs, rewards, terminated, truncated, crashed, success, pos_err, ep_means, count

    return step


def _episode_keys() -> tuple[str, ...]:
    return (*(f"reward/{t}" for t in REWARD_TERMS), "episode/length_s", "episode/final_pos_err_m",
            "episode/crash_rate")


def _noise_stds(cfg: QuadrotorTaskCfg, slices) -> tuple[float, ...]:
    """Per observation slice, the std of its noise before the slice's scale (0: none) [its unit]."""
    r = cfg.randomization
    std = {"pos_err_b": r.obs_noise_pos_m, "lin_vel_b": r.obs_noise_vel_m_s, "up_b": r.obs_noise_rot,
           "ang_vel_b": r.obs_noise_ang_vel_rad_s}
    return tuple(float(std.get(sl.name, 0.0)) for sl in slices)


def _observation(cfg: QuadrotorTaskCfg, slices, x, goal, prev, noise: torch.Tensor) -> torch.Tensor:
    """QuadrotorEnv.observe on rows, [N, obs] (:func:`_observation_rows`)."""
    return torch.stack(_observation_rows(cfg, slices, x, goal, prev, noise), dim=-1)


def _observation_rows(cfg: QuadrotorTaskCfg, slices, x, goal, prev, noise: torch.Tensor) -> list[torch.Tensor]:
    """QuadrotorEnv.observe on rows: the base observations in the body frame, plus noise; obs [N] rows.

    x: the state rows (>= 13 [N] rows, :func:`sim.quadrotor.fused.state_rows` order); goal: 3 rows [m];
    prev: the H x A rows of the past actions, oldest first; noise: k rows of standard normal draws, one
    per column of the slices :func:`_noise_stds` gives a std."""
    px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz = x[:13]
    rows = {
        "pos_err_b": fused._rotate_inverse(qw, qx, qy, qz, goal[0] - px, goal[1] - py, goal[2] - pz),
        # the third row of the body -> world rotation matrix: gravity's direction seen from the body
        "up_b": (2.0 * (qx * qz - qw * qy), 2.0 * (qy * qz + qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy)),
        "lin_vel_b": fused._rotate_inverse(qw, qx, qy, qz, vx, vy, vz),
        "ang_vel_b": (wx, wy, wz),
        "prev_actions": tuple(prev),  # h-major, as QuadrotorEnv's prev_actions.reshape(N, -1)
    }
    out, col = [], 0
    for sl, std in zip(slices, _noise_stds(cfg, slices)):
        for v in rows[sl.name]:
            v = v * sl.scale if sl.scale != 1.0 else v
            if std > 0:
                v = v + noise[col] * (std * sl.scale)
                col += 1
            out.append(v)
    return out
