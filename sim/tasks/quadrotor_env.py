"""Shared batched quadrotor environment; tasks (hover, waypoint, trajectory) differ only in goals,
start distributions, reward scales and success. Isaac Lab direct-env shape: a Cfg dataclass and an Env.

API (Isaac Gym / rsl_rl shape): ``reset() -> obs``, ``step(actions) -> (obs, rewards, terminated,
truncated, info)`` on tensors shaped [num_envs, ...] on ``run.device`` (:class:`RunCfg`). Envs reset automatically; the
returned obs of a finished env is the first obs of its next episode. ``terminated`` is crash, out of
bounds or success; ``truncated`` is the time limit only.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from sim.math import quat_mul, quat_to_rotmat, random_quat_within
from sim.quadrotor import dynamics
from sim.quadrotor.presets import PRESETS, QuadrotorPreset
from sim.tasks.run_cfg import RunCfg
from sim.randomization import (RandomizationCfg, latency_step_range, sample_latency_steps, sample_params,
                               sample_rate_divisors)
from tether.contract import ActionSpec, ObsSlice, Rotor, make_slices
from tether.observation import integrate_pos_err


@dataclasses.dataclass(frozen=True)
class QuadrotorTaskCfg:
    # sim (env count, device, seed and physics implementation are run settings: sim.tasks.run_cfg.RunCfg)
    control_rate_hz: float = 50.0
    """policy rate [Hz]; 50 Hz learns ~3x faster than 100 Hz in wall-clock here (a longer horizon per
    step at the same discount) and is within what PX4 offboard and the Crazyflie commander accept"""
    substeps: int = 4
    """physics substeps per control step; the CTBR rate controller runs every substep (200 Hz at 50 Hz)"""
    episode_length_s: float = 5.0
    """time limit [s]; reaching it is truncation, never termination"""
    # robot
    preset: str = "crazyflie2x"
    """name in sim.quadrotor.presets.PRESETS"""
    vehicle_params: QuadrotorPreset | None = None
    """a calibrated vehicle (calibration.to_sim) that replaces the named preset; kept in the config so
    checkpoints and exports carry the exact parameters trained with"""
    action_space: str = "ctbr"
    """'rotor': normalized rotor commands; 'ctbr': collective thrust + body rates via a rate controller"""
    action_history: int = 2
    """number of past actions in the observation (motor lag makes them necessary)"""
    body_rate_limits_rad_s: tuple[float, float, float] = (12.0, 12.0, 6.0)
    """CTBR body-rate command at |action| = 1 [rad/s]"""
    rate_kp: tuple[float, float, float] = (25.0, 25.0, 12.0)
    """CTBR rate-controller proportional gain per body axis [1/s]"""
    randomization: RandomizationCfg = dataclasses.field(default_factory=RandomizationCfg)
    """domain randomization ranges"""
    # initial state
    init_pos_m: float = 0.5
    """max start offset from the goal along each axis [m]"""
    init_tilt_rad: float = math.radians(30.0)
    """max start tilt [rad] (pi: any attitude, upside down included)"""
    init_yaw_rad: float = math.pi
    """max start heading [rad], applied on top of the tilt (pi: any heading)"""
    init_lin_vel_m_s: float = 0.5
    """max start speed along each axis [m/s]"""
    init_ang_vel_rad_s: float = 1.0
    """max start body rate along each axis [rad/s]"""
    # goal and termination
    goal_w: tuple[float, float, float] = (0.0, 0.0, 1.5)
    """nominal goal / trajectory centre in the world frame [m]"""
    max_distance_m: float = 2.5
    """out of bounds beyond this distance from the goal [m]"""
    ground_z_m: float = 0.0
    """crash below this height [m]"""
    success_tol_m: float = 0.05
    """position tolerance for success [m]"""
    # reward scales [1/s]: each term is multiplied by the control period, as in legged_gym and Isaac Lab,
    # so returns stay O(1) at any control rate (PPO's clipped value loss assumes that). The alive bonus outweighs the worst in-bounds position cost, so
    # that crashing early is never better than flying badly (negative per-step rewards teach suicide).
    rew_alive: float = 3.0
    rew_position: float = -1.0
    rew_position_fine: float = 2.0
    rew_upright: float = -0.5
    rew_lin_vel: float = -0.1
    rew_ang_vel: float = -0.02
    rew_action_rate: float = -0.05
    rew_crash: float = -300.0
    rew_success: float = 0.0
    """one-off terms (crash, success) are scaled by the control period too: -300 [1/s] is -3 per crash at 100 Hz"""
    position_fine_scale_m: float = 0.05
    """length scale of the exp(-|e|/scale) fine position term [m]"""

    def __post_init__(self):
        if self.vehicle_params is None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} unknown; known: {sorted(PRESETS)}")
        if self.action_space not in ("rotor", "ctbr"):
            raise ValueError(f"action_space must be 'rotor' or 'ctbr', got {self.action_space!r}")
        if not 1.0 <= self.control_rate_hz <= 2000.0:
            raise ValueError(f"control_rate_hz {self.control_rate_hz} out of range [1, 2000] Hz")
        if self.episode_length_s * self.control_rate_hz < 1:
            raise ValueError(f"episode_length_s {self.episode_length_s} s is shorter than one control step "
                             f"(1 / {self.control_rate_hz} Hz)")
        if self.substeps < 1 or self.action_history < 1:
            raise ValueError("substeps and action_history must be >= 1")
        if not 0.0 <= self.init_tilt_rad <= math.pi + 1e-9:
            raise ValueError(f"init_tilt_rad {self.init_tilt_rad} out of range [0, pi] rad")
        for name in ("init_pos_m", "init_yaw_rad", "init_lin_vel_m_s", "init_ang_vel_rad_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 0 (a start range)")
        # divisors and bounds: 0 would give infinite rewards or an episode that ends before it starts
        for name in ("position_fine_scale_m", "success_tol_m", "max_distance_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)} must be > 0 [m]")
        if not self.success_tol_m < self.max_distance_m:
            raise ValueError(f"success_tol_m {self.success_tol_m} m must be below max_distance_m "
                             f"{self.max_distance_m} m")
        for name in ("body_rate_limits_rad_s", "rate_kp"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} {list(getattr(self, name))} must be three positive values")

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def physics_hz(self) -> float:
        """physics substep rate [Hz]: the fastest the CTBR rate loop can run"""
        return self.control_rate_hz * self.substeps

    @property
    def max_episode_steps(self) -> int:
        return int(round(self.episode_length_s * self.control_rate_hz))

    @property
    def vehicle(self) -> QuadrotorPreset:
        return self.vehicle_params if self.vehicle_params is not None else PRESETS[self.preset]

    @property
    def action_dim(self) -> int:
        return len(self.vehicle.rotor_spin) if self.action_space == "rotor" else 4


class QuadrotorEnv:
    """Batched quadrotor with a goal. Subclasses override the goal / start / success hooks only."""

    # Observation layout by name from the shared vocabulary. Everything is in the body frame with the
    # projected gravity direction (up_b) instead of the full attitude: the task is invariant to heading,
    # so the policy need not learn every heading separately (several-fold faster hover learning here).
    observation_names: tuple[str, ...] = ("pos_err_b", "up_b", "lin_vel_b", "ang_vel_b", "prev_actions")
    # How an evaluation judges an episode of this task (policies.evaluation): "hold" (reach the goal and
    # stay within tolerance to the end), "reach" (the task's own success condition, first time it holds)
    # or "track" (RMS error to a moving reference).
    success_metric: str = "hold"

    def __init__(self, cfg: QuadrotorTaskCfg, run: RunCfg | None = None):
        self.cfg = cfg
        self.run = run = run if run is not None else RunCfg()
        self.device = torch.device(run.device)
        self.num_envs = n = run.num_envs
        # created on the env's device from the run's seed: a checkpoint carries no generator state, so a
        # run resumed or evaluated on another device draws from a generator of that device
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(run.seed)
        v = cfg.vehicle
        self.params = sample_params(v, cfg.randomization, n, self.gen, self.device)
        self.state = dynamics.hover_state(n, v, self.device)
        self.rate_ctrl = dynamics.make_rate_controller(v, cfg.rate_kp, self.device)
        self.hover_action = self._hover_action().to(self.device)  # [A]
        self.body_rate_limits = torch.tensor(cfg.body_rate_limits_rad_s, device=self.device)  # [3] rad/s
        max_delay = latency_step_range(cfg.randomization, cfg.control_dt)[1]
        self.latency_steps = sample_latency_steps(cfg.randomization, n, cfg.control_dt, self.gen, self.device)
        self.rate_div = sample_rate_divisors(cfg.randomization, n, cfg.physics_hz, self.gen, self.device)
        self.action_queue = self.hover_action.repeat(n, max_delay + 1, 1)  # [N, D+1, A], newest last
        self.prev_actions = self.hover_action.repeat(n, cfg.action_history, 1)  # [N, H, A], oldest first
        self.goal_w = torch.tensor(cfg.goal_w, device=self.device).repeat(n, 1)  # [N, 3]
        self.goal_vel_w = torch.zeros(n, 3, device=self.device)
        self.episode_step = torch.zeros(n, dtype=torch.long, device=self.device)
        self.ext_force_w = torch.zeros(n, 3, device=self.device)
        self.pos_err_int_w = torch.zeros(n, 3, device=self.device)  # [N, 3] m s, see _integrate_pos_err
        self.episode_sums: dict[str, torch.Tensor] = {}
        self.slices: tuple[ObsSlice, ...] = make_slices([(name, self._quantity_length(name))
                                                        for name in self.observation_names])
        self.obs_dim = sum(s.length for s in self.slices)
        self._physics = torch.compile(dynamics.step, dynamic=False) if run.physics == "compiled" else dynamics.step

    # ---------------------------------------------------------------- task hooks (subclasses)

    def _sample_goal(self, env_ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.cfg.goal_w, device=self.device).repeat(len(env_ids), 1)

    def _update_goal(self) -> None:
        """Called every step before rewards; trajectory tasks move the goal here."""

    def _success(self, pos_err: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        """Episode-ending success [N] bool; hover has none (it must hold until the time limit)."""
        return torch.zeros_like(speed, dtype=torch.bool)

    def _extra_reward_terms(self, actions: torch.Tensor, last_action: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task reward terms of its own, {name: [N] per second} (scaled by the control period and logged
        with the shared ones), on the state after the step; none by default."""
        return {}

    def goal_at(self, t_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(goal_w [N, 3] m, goal_vel_w [N, 3] m/s) of each env's current episode at episode time t_s,
        without changing the env: an evaluation in another simulator feeds the same goals."""
        return self.goal_w.clone(), torch.zeros_like(self.goal_w)

    def start_centre_w(self) -> torch.Tensor:
        """[N, 3] m: where the episode's starts are centred (the goal at t = 0, unless a task says otherwise)."""
        return self.goal_at(0.0)[0]

    # ---------------------------------------------------------------- spec

    def _quantity_length(self, name: str) -> int:
        if name == "prev_actions":
            return self.cfg.action_history * self.cfg.action_dim
        return {"rotmat_bw": 9, "quat_wxyz": 4}.get(name, 3)

    def _hover_action(self) -> torch.Tensor:
        v = self.cfg.vehicle
        if self.cfg.action_space == "rotor":
            return torch.full((len(v.rotor_spin),), 2.0 * v.hover_rpm / v.max_rpm - 1.0)
        return torch.tensor([2.0 * v.mass_kg * 9.81 / v.max_thrust_n - 1.0, 0.0, 0.0, 0.0])

    def action_spec(self) -> ActionSpec:
        v, c = self.cfg.vehicle, self.cfg
        common = dict(dim=c.action_dim, hover_action=tuple(float(x) for x in self.hover_action.cpu()),
                      rotors=tuple(Rotor(tuple(p), s) for p, s in zip(v.rotor_pos_b, v.rotor_spin)),
                      max_rpm=v.max_rpm, kf_n_per_rpm2=v.kf_n_per_rpm2, km_nm_per_rpm2=v.km_nm_per_rpm2)
        if c.action_space == "rotor":
            return ActionSpec(type="rotor", **common)
        return ActionSpec(type="ctbr", max_thrust_n=v.max_thrust_n,
                          body_rate_limits_rad_s=c.body_rate_limits_rad_s, rate_kp=c.rate_kp, **common)

    # ---------------------------------------------------------------- core

    def quantities(self) -> dict[str, torch.Tensor]:
        """Named vocabulary quantities of the current state (noise-free)."""
        s = self.state
        r = quat_to_rotmat(s.quat_wxyz)  # [N, 3, 3]

        def to_body(v_w: torch.Tensor) -> torch.Tensor:
            return torch.einsum("nji,nj->ni", r, v_w)

        pos_err_w = self.goal_w - s.pos_w
        return {
            "pos_w": s.pos_w, "goal_w": self.goal_w, "pos_err_w": pos_err_w, "pos_err_b": to_body(pos_err_w),
            "goal_vel_w": self.goal_vel_w, "goal_vel_b": to_body(self.goal_vel_w), "quat_wxyz": s.quat_wxyz,
            "rotmat_bw": r.reshape(-1, 9), "up_b": r[:, 2, :], "lin_vel_w": s.lin_vel_w,
            "lin_vel_b": to_body(s.lin_vel_w), "ang_vel_b": s.ang_vel_b,
            "prev_actions": self.prev_actions.reshape(self.num_envs, -1),
            "pos_err_int_b": to_body(self.pos_err_int_w),
        }

    def observe(self) -> dict[str, torch.Tensor]:
        q = self.quantities()
        r = self.cfg.randomization
        noise = {"pos_err_w": r.obs_noise_pos_m, "pos_err_b": r.obs_noise_pos_m, "pos_w": r.obs_noise_pos_m,
                 "lin_vel_w": r.obs_noise_vel_m_s, "lin_vel_b": r.obs_noise_vel_m_s, "rotmat_bw": r.obs_noise_rot,
                 "up_b": r.obs_noise_rot, "ang_vel_b": r.obs_noise_ang_vel_rad_s}
        parts = []
        for s in self.slices:
            x = q[s.name]
            std = noise.get(s.name, 0.0)
            if std > 0.0:
                x = x + std * torch.randn(x.shape, generator=self.gen, device=self.device)
            parts.append(x * s.scale if s.scale != 1.0 else x)
        return {"policy": torch.cat(parts, dim=-1)}

    def reset(self) -> dict[str, torch.Tensor]:
        self._reset_envs(torch.arange(self.num_envs, device=self.device))
        return self.observe()

    def _reset_envs(self, env_ids: torch.Tensor) -> None:
        c, n, g, dev = self.cfg, len(env_ids), self.gen, self.device
        if n == 0:
            return

        def sym(scale: float, dim: int = 3) -> torch.Tensor:
            return (2.0 * torch.rand(n, dim, generator=g, device=dev) - 1.0) * scale

        fresh = sample_params(c.vehicle, c.randomization, n, g, dev)
        for field, value in zip(self.params._fields, fresh):
            tensor = getattr(self.params, field)
            if tensor.dim() >= 1 and tensor.shape[0] == self.num_envs and field not in ("rotor_pos_b", "rotor_spin"):
                tensor[env_ids] = value
        self.goal_w[env_ids] = self._sample_goal(env_ids)
        s = self.state
        s.pos_w[env_ids] = self.goal_w[env_ids] + sym(c.init_pos_m)
        yaw = sym(c.init_yaw_rad, 1)
        yaw_q = torch.cat([torch.cos(0.5 * yaw), torch.zeros(n, 2, device=dev), torch.sin(0.5 * yaw)], dim=-1)
        s.quat_wxyz[env_ids] = quat_mul(yaw_q, random_quat_within(n, c.init_tilt_rad, g, dev))
        s.lin_vel_w[env_ids] = sym(c.init_lin_vel_m_s)
        s.ang_vel_b[env_ids] = sym(c.init_ang_vel_rad_s)
        s.rotor_rpm[env_ids] = (c.vehicle.hover_rpm * torch.ones(n, s.rotor_rpm.shape[1], device=dev))
        self.latency_steps[env_ids] = sample_latency_steps(c.randomization, n, c.control_dt, g, dev)
        if self.rate_div is not None:
            self.rate_div[env_ids] = sample_rate_divisors(c.randomization, n, c.physics_hz, g, dev)
        self.action_queue[env_ids] = self.hover_action
        self.prev_actions[env_ids] = self.hover_action
        self.episode_step[env_ids] = 0
        self.ext_force_w[env_ids] = 0.0
        # the first observation of an episode already holds its first tick's error (see _integrate_pos_err)
        self.pos_err_int_w[env_ids] = integrate_pos_err(torch.zeros(n, 3, device=dev),
                                                        self.goal_w[env_ids] - s.pos_w[env_ids], c.control_dt,
                                                        torch.clamp)

    def restart_pos_err_int(self) -> None:
        """Start every env's position-error integral afresh from its current state (an evaluation that
        places the vehicles itself calls this, as a reset does)."""
        self.pos_err_int_w = integrate_pos_err(torch.zeros_like(self.goal_w), self.goal_w - self.state.pos_w,
                                               self.cfg.control_dt, torch.clamp)

    def _integrate_pos_err(self) -> None:
        """One tick of tether.observation.integrate_pos_err (the error clipped to a band, the sum bounded:
        anti-windup), over the episode's control ticks up to the current one, as the deploy side's
        PositionErrorIntegral computes it. Not in place: advance() stays differentiable."""
        self.pos_err_int_w = integrate_pos_err(self.pos_err_int_w, self.goal_w - self.state.pos_w, self.cfg.control_dt,
                                               torch.clamp)

    def _apply_actions(self, actions: torch.Tensor):
        """Queue the new actions; return the delayed ones as (rotor commands in [0, 1], None) or
        (None, CTBR setpoint)."""
        self.action_queue = torch.cat([self.action_queue[:, 1:], actions.unsqueeze(1)], dim=1)
        depth = self.action_queue.shape[1]
        idx = (depth - 1 - self.latency_steps).clamp_min(0)
        applied = self.action_queue[torch.arange(self.num_envs, device=self.device), idx]
        return self.action_to_command(applied)

    def action_to_command(self, actions: torch.Tensor):
        """Normalized actions [N, A] in [-1, 1] -> (rotor commands [N, R] in [0, 1], None) or (None, CTBR
        setpoint): what the vehicle is sent, with no queueing (physics.step takes either)."""
        if self.cfg.action_space == "rotor":
            return 0.5 * (actions + 1.0), None
        thrust = 0.5 * (actions[:, :1] + 1.0) * self.cfg.vehicle.max_thrust_n
        rates = actions[:, 1:] * self.body_rate_limits
        return None, dynamics.CtbrSetpoint(thrust, rates, self.rate_ctrl, self.rate_div)

    def advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transition alone: actions (clamped to [-1, 1]) through the latency queue and the physics,
        then the action history and the position-error integral move on. No rewards, resets or in-place updates, so it is differentiable
        end to end (analytic policy gradients through the simulator). Returns (the clamped actions, the
        previous action)."""
        c = self.cfg
        actions = actions.clamp(-1.0, 1.0)
        rotor_cmd, ctbr = self._apply_actions(actions)
        self.state = dynamics.QuadState(*self._physics(self.state, rotor_cmd, self.params, c.control_dt, c.substeps,
                                                       self.ext_force_w, ctbr))
        last_action = self.prev_actions[:, -1]
        self.prev_actions = torch.cat([self.prev_actions[:, 1:], actions.unsqueeze(1)], dim=1)
        self._integrate_pos_err()
        return actions, last_action

    def step(self, actions: torch.Tensor):
        c = self.cfg
        if actions.shape != (self.num_envs, c.action_dim):
            raise ValueError(f"actions must be shaped {(self.num_envs, c.action_dim)}, got {tuple(actions.shape)}")
        actions, last_action = self.advance(actions)
        self.episode_step += 1
        self._update_goal()

        s = self.state
        pos_err = (self.goal_w - s.pos_w).norm(dim=-1)
        speed = (s.lin_vel_w - self.goal_vel_w).norm(dim=-1)
        up_z = quat_to_rotmat(s.quat_wxyz)[:, 2, 2]
        nonfinite = ~torch.isfinite(s.pos_w).all(-1) | ~torch.isfinite(s.quat_wxyz).all(-1)
        crashed = (s.pos_w[:, 2] < c.ground_z_m) | (pos_err > c.max_distance_m) | nonfinite
        success = self._success(pos_err, speed) & ~crashed
        terminated = crashed | success
        truncated = (self.episode_step >= c.max_episode_steps) & ~terminated

        terms = {
            "alive": c.rew_alive * torch.ones_like(pos_err),
            "position": c.rew_position * pos_err,
            "position_fine": c.rew_position_fine * torch.exp(-pos_err / c.position_fine_scale_m),
            "upright": c.rew_upright * (1.0 - up_z),
            "lin_vel": c.rew_lin_vel * speed,
            "ang_vel": c.rew_ang_vel * s.ang_vel_b.norm(dim=-1),
            "action_rate": c.rew_action_rate * (actions - last_action).square().sum(-1),
            "crash": c.rew_crash * crashed.float(),
            "success": c.rew_success * success.float(),
            **self._extra_reward_terms(actions, last_action),
        }
        terms = {k: v * c.control_dt for k, v in terms.items()}
        rewards = torch.nan_to_num(sum(terms.values()), nan=c.rew_crash * c.control_dt)
        for k, v in terms.items():
            self.episode_sums[k] = self.episode_sums.get(k, torch.zeros_like(v)) + torch.nan_to_num(v)

        done = terminated | truncated
        # episode_count: how many episodes the means of info["episode"] are over (PPO weights them by it)
        info: dict = {"time_outs": truncated, "crashed": crashed, "success": success,
                      "pos_err_m": pos_err, "episode_count": done.sum()}
        done_ids = done.nonzero(as_tuple=False).squeeze(-1)
        if len(done_ids) > 0:
            info["episode"] = {f"reward/{k}": v[done_ids].mean() for k, v in self.episode_sums.items()}
            info["episode"]["episode/length_s"] = self.episode_step[done_ids].float().mean() * c.control_dt
            info["episode"]["episode/final_pos_err_m"] = pos_err[done_ids].mean()
            info["episode"]["episode/crash_rate"] = crashed[done_ids].float().mean()
            for v in self.episode_sums.values():
                v[done_ids] = 0.0
            self._reset_envs(done_ids)
        return self.observe(), rewards, terminated, truncated, info
