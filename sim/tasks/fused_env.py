"""The training env on the fused kernel (issue 13): one compiled step for latency queue, physics,
observation, reward, dones and resets, with no host synchronization.

:class:`FusedQuadrotorEnv` has the interface of :class:`sim.tasks.quadrotor_env.QuadrotorEnv` (``reset``,
``step``, ``num_envs``, ``obs_dim``, ``cfg``, ``run``, ``hover_action``, ``slices``, ``action_spec``) and
the same model term for term; only the layout differs:

- the physics is :mod:`sim.quadrotor.fused` (state as rows ``[S, N]``, per-env constants ``[P, N]``);
  the observation and reward are written on those rows, and torch.compile fuses all of it with the
  physics into a few loops (``dynamic=False``: one compile per env count and task config);
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


class FusedQuadrotorEnv:
    """The env of ``env_cls`` (a task :func:`fused_unsupported` accepts) on the fused training step."""

    def __init__(self, cfg: QuadrotorTaskCfg, run: RunCfg, env_cls: type[QuadrotorEnv], compiled: bool = True):
        """compiled=False runs the same step functions op by op (tests of the logic without a compile)."""
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
        self.noise_std = torch.cat([torch.full((sl.length,), std * sl.scale)
                                    for sl, std in zip(self.slices, _noise_stds(cfg, self.slices))]
                                   ).to(self.device)  # [obs]
        # one randn per noisy observation column only (the past actions carry none)
        self.noise_cols = int((self.noise_std > 0).sum())
        self._steps_since_refresh = REFRESH_STEPS
        # three kernels, not one: in a single graph inductor recomputes the whole physics inside every
        # reduction of the episode statistics (2.7 ms per step at 4096 envs here, against ~0.1 ms for the
        # physics kernel alone); materializing the state between them costs ~70 bytes per env
        compile_ = dict(dynamic=False, fullgraph=True, options=fused.INDUCTOR_OPTIONS)
        if compiled:
            self._pre_fn = torch.compile(self._pre_impl, **compile_)
            self._physics_fn = fused.compiled_rollout(self.spec, 1, self.num_envs, device=self.device)
            self._post_fn = torch.compile(self._post_impl, **compile_)
        else:
            self._pre_fn, self._post_fn = self._pre_impl, self._post_impl
            self._physics_fn = lambda x, p, cmd: fused.rollout_(self.spec, x, p, cmd)
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
        noise = self._draw_noise()
        actions, self.queue, command, last_action, self.prev_rows = self._pre_fn(
            actions, self.queue, self.latency, self.prev_rows)
        self._physics_fn(self.x, self.params, command)  # the state rows, in place
        out = self._post_fn(self.x, self.params, self.latency, self.prev_rows, self.queue, self.goal_rows,
                            self.episode_step, self.episode_sums, self.pending_x, self.pending_params,
                            self.pending_latency, self.pending_goal_rows, actions, last_action, noise)
        (x, self.params, self.queue, self.latency, self.prev_rows, self.goal_rows, self.episode_step,
         self.episode_sums, obs, rewards, terminated, truncated, crashed, success, pos_err, ep_means,
         ep_count) = out
        self.x = tuple(x.unbind(0))
        info = {"time_outs": truncated, "crashed": crashed, "success": success, "pos_err_m": pos_err,
                "episode": dict(zip(_episode_keys(), ep_means.unbind(0))), "episode_count": ep_count}
        return {"policy": obs}, rewards, terminated, truncated, info

    @property
    def goal_w(self) -> torch.Tensor:
        """[N, 3] goal positions (a view of the rows the step keeps) [m]"""
        return self.goal_rows.T

    @property
    def prev_actions(self) -> torch.Tensor:
        """[N, H, A] the last H actions, newest last (a view of the rows the step keeps)"""
        return self.prev_rows.permute(2, 0, 1)

    # ---------------------------------------------------------------- buffers

    def _take_sampler_state(self) -> None:
        """Current state := the sampler's (after its reset): the first episode of every env."""
        s = self.sampler
        # S rows [N], views of one [S, N] tensor, as every later step leaves them (one compile, not two)
        self.x = tuple(torch.stack(fused.pack_state(s.state), 0).unbind(0))
        self.params = fused.pack_params(s.params, self.spec)  # [P, N]
        # rows, envs last, as the state: inductor vectorizes along the envs (with [N, 3]-shaped buffers it
        # emitted masked 3- and 4-wide vector loads and stores per env, ~1 ms of the step at 4096 envs)
        self.queue = s.action_queue.permute(1, 2, 0).contiguous()  # [D+1, A, N]
        self.latency = s.latency_steps.clone()  # [N]
        self.prev_rows = s.prev_actions.permute(1, 2, 0).contiguous()  # [H, A, N]
        self.goal_rows = s.goal_w.T.contiguous()  # [3, N]
        self.episode_step = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.episode_sums = torch.zeros(len(REWARD_TERMS), self.num_envs, device=self.device)  # [T, N]

    def _draw_pending(self) -> None:
        """Every env's next start, drawn by the task's eager reset."""
        s = self.sampler
        s._reset_envs(torch.arange(self.num_envs, device=self.device))
        self.pending_x = torch.stack(fused.pack_state(s.state), 0)
        self.pending_params = fused.pack_params(s.params, self.spec, check_layout=False)
        self.pending_latency = s.latency_steps.clone()
        self.pending_goal_rows = s.goal_w.T.contiguous()  # [3, N]
        self._steps_since_refresh = 0

    def _draw_noise(self) -> torch.Tensor:
        """[N, noisy columns] standard normal draws (a generator cannot enter a compiled graph)."""
        return torch.randn(self.num_envs, self.noise_cols, generator=self.gen, device=self.device)

    def _observe_eager(self) -> torch.Tensor:
        return _observation(self.cfg, self.slices, torch.stack(self.x, 0), self.goal_rows, self.prev_rows,
                            self._draw_noise())

    # ---------------------------------------------------------------- the compiled step

    def _pre_impl(self, actions, queue, latency, prev_rows):
        """Actions [N, A] through the latency queue [D+1, A, N] to the vehicle's command [1, A, N]."""
        c = self.cfg
        actions = actions.clamp(-1.0, 1.0)
        act_rows = actions.T  # [A, N]
        # latency queue (QuadrotorEnv._apply_actions): newest last, each env reads its own delay
        queue = torch.cat([queue[1:], act_rows.unsqueeze(0)], dim=0)
        depth = queue.shape[0]
        # the entry each env reads, as a sum of masked entries (a gather along the queue would index per env)
        age = (depth - 1 - latency).clamp_min(0)  # [N]
        applied = sum(torch.where(age == k, queue[k], 0.0) for k in range(depth))  # [A, N]
        if c.action_space == "rotor":  # QuadrotorEnv.action_to_command
            command = 0.5 * (applied + 1.0)
        else:
            rates = applied[1:] * torch.tensor(c.body_rate_limits_rad_s, device=applied.device).unsqueeze(-1)
            command = torch.cat([0.5 * (applied[:1] + 1.0) * c.vehicle.max_thrust_n, rates], dim=0)
        last_action = prev_rows[-1]  # [A, N]
        prev_rows = torch.cat([prev_rows[1:], act_rows.unsqueeze(0)], dim=0)
        return actions, queue, command.unsqueeze(0).contiguous(), last_action, prev_rows

    def _post_impl(self, rows, params, latency, prev_rows, queue, goal_rows, episode_step, episode_sums,
                   pending_x, pending_params, pending_latency, pending_goal_rows, actions, last_action, noise):
        """Dones, rewards, episode statistics, resets and the next observation, after the physics."""
        c, n = self.cfg, self.num_envs
        x = torch.stack(rows, 0)
        episode_step = episode_step + 1

        # dones and rewards (QuadrotorEnv.step), on the rows
        px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz = x[:13].unbind(0)
        ex, ey, ez = goal_rows[0] - px, goal_rows[1] - py, goal_rows[2] - pz
        pos_err = torch.sqrt(ex * ex + ey * ey + ez * ez)
        speed = torch.sqrt(vx * vx + vy * vy + vz * vz)  # the base tasks' goals do not move
        up_z = 1.0 - 2.0 * (qx * qx + qy * qy)
        # pointwise, not a reduction over rows: a sum is finite iff every term is (or it overflows, far
        # out of bounds anyway)
        finite = torch.isfinite(px + py + pz + qw + qx + qy + qz)
        crashed = (pz < c.ground_z_m) | (pos_err > c.max_distance_m) | ~finite
        success = self.sampler._success(pos_err, speed) & ~crashed
        terminated = crashed | success
        truncated = (episode_step >= c.max_episode_steps) & ~terminated
        terms = torch.stack([
            c.rew_alive * torch.ones_like(pos_err),
            c.rew_position * pos_err,
            c.rew_position_fine * torch.exp(-pos_err / c.position_fine_scale_m),
            c.rew_upright * (1.0 - up_z),
            c.rew_lin_vel * speed,
            c.rew_ang_vel * torch.sqrt(wx * wx + wy * wy + wz * wz),
            c.rew_action_rate * (actions.T - last_action).square().sum(0),
            c.rew_crash * crashed.float(),
            c.rew_success * success.float(),
        ], 0) * c.control_dt  # [T, N]
        rewards = torch.nan_to_num(terms.sum(0), nan=c.rew_crash * c.control_dt)
        episode_sums = episode_sums + torch.nan_to_num(terms)

        # episode statistics of the envs that finished: masked means and their count (no host sync)
        done = terminated | truncated
        w = done.float()
        # one reduction over the envs for all statistics and the count (a reduction per statistic costs
        # a loop each, and each loop recomputes the dones)
        stat_rows = torch.cat([episode_sums, torch.stack([episode_step.float() * c.control_dt, pos_err,
                                                          crashed.float(), torch.ones_like(pos_err)])])
        sums = (stat_rows * w).sum(-1)
        count = sums[-1]
        ep_means = sums[:-1] / count.clamp_min(1.0)

        # resets: the finished envs take their pending start
        d1 = done.unsqueeze(0)
        x = torch.where(d1, pending_x, x)
        params = torch.where(d1, pending_params, params)
        latency = torch.where(done, pending_latency, latency)
        goal_rows = torch.where(d1, pending_goal_rows, goal_rows)
        hover = self.hover_action.view(1, -1, 1)
        queue = torch.where(done.view(1, 1, n), hover, queue)
        prev_rows = torch.where(done.view(1, 1, n), hover, prev_rows)
        episode_step = torch.where(done, torch.zeros_like(episode_step), episode_step)
        episode_sums = torch.where(d1, torch.zeros_like(episode_sums), episode_sums)
        obs = _observation(c, self.slices, x, goal_rows, prev_rows, noise)
        return (x, params, queue, latency, prev_rows, goal_rows, episode_step, episode_sums, obs, rewards,
                terminated, truncated, crashed, success, pos_err, ep_means, count)


def _episode_keys() -> tuple[str, ...]:
    return (*(f"reward/{t}" for t in REWARD_TERMS), "episode/length_s", "episode/final_pos_err_m",
            "episode/crash_rate")


def _noise_stds(cfg: QuadrotorTaskCfg, slices) -> tuple[float, ...]:
    """Per observation slice, the std of its noise before the slice's scale (0: none) [its unit]."""
    r = cfg.randomization
    std = {"pos_err_b": r.obs_noise_pos_m, "lin_vel_b": r.obs_noise_vel_m_s, "up_b": r.obs_noise_rot,
           "ang_vel_b": r.obs_noise_ang_vel_rad_s}
    return tuple(float(std.get(sl.name, 0.0)) for sl in slices)


def _observation(cfg: QuadrotorTaskCfg, slices, x: torch.Tensor, goal_rows: torch.Tensor, prev_rows: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
    """QuadrotorEnv.observe on state rows [N, obs]: the base observations in the body frame, plus noise
    (``noise``: [N, k] standard normal draws, one per column of the slices :func:`_noise_stds` gives a std)."""
    px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz = x[:13].unbind(0)
    rows = {
        "pos_err_b": fused._rotate_inverse(qw, qx, qy, qz, goal_rows[0] - px, goal_rows[1] - py, goal_rows[2] - pz),
        # the third row of the body -> world rotation matrix: gravity's direction seen from the body
        "up_b": (2.0 * (qx * qz - qw * qy), 2.0 * (qy * qz + qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy)),
        "lin_vel_b": fused._rotate_inverse(qw, qx, qy, qz, vx, vy, vz),
        "ang_vel_b": (wx, wy, wz),
        "prev_actions": tuple(prev_rows.reshape(-1, prev_rows.shape[-1]).unbind(0)),  # [H, A, N]: h-major
    }
    parts, col = [], 0
    for sl, std in zip(slices, _noise_stds(cfg, slices)):
        part = torch.stack(rows[sl.name], -1)
        part = part * sl.scale if sl.scale != 1.0 else part
        if std > 0:
            part = part + noise[:, col:col + sl.length] * (std * sl.scale)
            col += sl.length
        parts.append(part)
    return torch.cat(parts, dim=-1)
