"""Navigate: fly from a start to a goal 6-10 m away through a random obstacle field, without touching it.

Each env has its own world: the start near the origin, the goal in a random direction, an obstacle
field (columns, boxes, walls: :mod:`sim.tasks.obstacles`) between them, its density on a curriculum.
Success: within ``success_tol_m`` of the goal (episode ends); a collision (the vehicle's sphere
touching an obstacle or the ground, analytic distance), leaving the corridor around the line or
climbing above the ceiling ends the episode as a crash.

Observation groups (issue 11 spec):
- ``policy``: the deployable state vector (``env.slices``): goal error, gravity direction, velocities
  and past actions in the body frame, what a real robot has from its odometry and goal;
- ``privileged``: a level ray fan of ``fan_rays`` distances to the obstacles [m] (analytic, from the
  body's heading, counter-clockwise): the teacher's sight; never exported;
- ``depth``: [N, 1, H, W] raw z-depth [m] with REP 117 specials from a forward
  :class:`sim.camera.depth.DepthCamera`, only with ``render_depth`` (the student's input).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from sim.camera.config import CameraRandomizationCfg, DepthCameraCfg, MountCfg
from sim.math import quat_mul, quat_to_rotmat
from sim.tasks import obstacles
from sim.tasks.obstacles import ObstacleFieldCfg
from sim.tasks.quadrotor_env import QuadrotorEnv, QuadrotorTaskCfg
from tether.contract import ImageInput
from tether.observation import integrate_pos_err


def _navigate_camera() -> DepthCameraCfg:
    return DepthCameraCfg(max_range_m=10.0, mount=MountCfg(position_b_m=(0.03, 0.0, 0.01)))


def _navigate_camera_randomization() -> CameraRandomizationCfg:
    return CameraRandomizationCfg(focal_scale=(0.95, 1.05), principal_shift_px=(-1.5, 1.5),
                                  mount_position_m=(-0.005, 0.005), mount_rotation_rad=(-0.03, 0.03),
                                  depth_noise_rel=0.02, dropout_prob=0.01)


@dataclasses.dataclass(frozen=True)
class NavigateCfg(QuadrotorTaskCfg, ObstacleFieldCfg):
    episode_length_s: float = 10.0
    """time limit [s]"""
    init_pos_m: float = 0.1
    """max start offset from the nominal start along each axis [m]"""
    init_tilt_rad: float = math.radians(10.0)
    """max start tilt [rad]"""
    init_yaw_rad: float = math.radians(30.0)
    """max start heading away from the goal direction [rad]"""
    init_lin_vel_m_s: float = 0.2
    """max start speed along each axis [m/s]"""
    init_ang_vel_rad_s: float = 0.3
    """max start body rate along each axis [rad/s]"""
    goal_distance_m: tuple[float, float] = (6.0, 10.0)
    """horizontal start-goal distance range [m]"""
    flight_height_m: tuple[float, float] = (1.0, 2.0)
    """height range of the start and of the goal, drawn apart [m]"""
    ceiling_m: float = 3.0
    """out of bounds above this height (obstacles are taller: none can be flown over) [m]"""
    corridor_margin_m: float = 1.0
    """out of bounds beyond field_half_width_m + this from the start-goal line, or this far behind the
    start or past the goal along it [m]"""
    vehicle_radius_m: float = 0.15
    """radius of the sphere that must not touch an obstacle or the ground [m]"""
    max_distance_m: float = 15.0
    """out of bounds beyond this distance from the goal [m]"""
    success_tol_m: float = 0.5
    """success within this distance of the goal [m]"""
    # rewards [1/s] (times the control period, QuadrotorTaskCfg's convention)
    rew_alive: float = 0.0
    rew_position: float = 0.0
    rew_position_fine: float = 0.0
    rew_lin_vel: float = 0.0
    rew_progress: float = 1.0
    """per metre of approach to the goal [1/m]: the term is this times the approach speed [1/s]"""
    rew_obstacle: float = -4.0
    """at contact; falls quadratically to 0 at obstacle_margin_m of clearance [1/s]"""
    obstacle_margin_m: float = 0.5
    """clearance (surface distance minus vehicle radius) where the proximity penalty starts [m]"""
    rew_heading: float = -0.5
    """times 1 - cos(heading error to the goal direction): keeps the forward camera looking ahead [1/s]"""
    rew_speed: float = -1.0
    """per m/s of speed above max_speed_m_s [s/m / s]"""
    max_speed_m_s: float = 3.0
    """speed above which rew_speed applies [m/s]"""
    rew_crash: float = -500.0
    rew_success: float = 500.0
    # privileged sight (teacher only)
    fan_rays: int = 32
    """rays of the privileged level ray fan, evenly over 360 deg [1]"""
    fan_range_m: float = 6.0
    """the fan's distances are clipped here [m]"""
    fan_nearest: int = 8
    """the fan tests only this many obstacles, the nearest (cost; exact up to that many) [1]"""
    # depth camera (student)
    render_depth: bool = False
    """render the 'depth' group every step (the teacher trains without)"""
    camera: DepthCameraCfg = dataclasses.field(default_factory=_navigate_camera)
    """forward depth camera: intrinsics, mount, range"""
    camera_randomization: CameraRandomizationCfg = dataclasses.field(default_factory=_navigate_camera_randomization)
    """per-episode camera draws and per-frame sensor effects"""
    depth_pooled_wh: tuple[int, int] = (16, 12)
    """nearest-depth pooling the network applies in its graph (width, height) [px]"""
    depth_invalid_m: float = 10.0
    """what a pooled block with no valid pixel reads in the graph; a real camera's no-return (0 in
    16UC1) is mostly open space, so the far range [m]"""
    depth_encoding: str = "32FC1"
    """REP 118 encoding the robot's camera publishes"""
    depth_topic: str = "camera/depth/image_rect_raw"
    """sensor_msgs/Image topic of the depth camera"""
    depth_info_topic: str = "camera/depth/camera_info"
    """sensor_msgs/CameraInfo topic of the depth camera"""
    depth_max_age_s: float = 0.1
    """an older image is unusable at a tick [s]"""

    def __post_init__(self):
        QuadrotorTaskCfg.__post_init__(self)
        ObstacleFieldCfg.__post_init__(self)
        lo, hi = self.goal_distance_m
        if not 2 * self.keepout_m < lo <= hi:
            raise ValueError(f"goal_distance_m must be 2 keepout_m ({2 * self.keepout_m} m) < low <= high, got "
                             f"{list(self.goal_distance_m)}")
        zlo, zhi = self.flight_height_m
        if not self.vehicle_radius_m < zlo <= zhi < self.ceiling_m <= self.obstacle_height_m:
            raise ValueError(f"need vehicle_radius_m < flight_height_m low <= high < ceiling_m <= obstacle_height_m, "
                             f"got {self.vehicle_radius_m}, {list(self.flight_height_m)}, {self.ceiling_m}, "
                             f"{self.obstacle_height_m}")
        if self.fan_rays < 1 or self.fan_nearest < 1 or not self.fan_range_m > 0 or not self.obstacle_margin_m > 0:
            raise ValueError("fan_rays and fan_nearest must be >= 1, fan_range_m and obstacle_margin_m > 0")
        if self.vehicle_radius_m <= 0 or self.vehicle_radius_m >= self.keepout_m:
            raise ValueError(f"vehicle_radius_m must be in (0, keepout_m), got {self.vehicle_radius_m}")


def _yaw_quat(yaw: torch.Tensor) -> torch.Tensor:
    """[n] yaw about world z [rad] -> [n, 4] wxyz"""
    z = torch.zeros_like(yaw)
    return torch.stack([torch.cos(0.5 * yaw), z, z, torch.sin(0.5 * yaw)], -1)


class NavigateEnv(QuadrotorEnv):
    cfg: NavigateCfg
    success_metric = "reach"

    def __init__(self, cfg: NavigateCfg, run=None):
        super().__init__(cfg, run)
        n, dev = self.num_envs, self.device
        self.start_w = torch.zeros(n, 3, device=dev)
        self.field = obstacles.empty_field(n, cfg.num_obstacles[1], dev)
        self.field.ground_z_w.fill_(cfg.ground_z_m)
        self.curriculum_level = cfg.curriculum_start_level
        self._level_episodes = 0  # finished at the current level, and of those successes
        self._level_successes = 0
        self.episode_level = torch.zeros(n, dtype=torch.long, device=dev)
        # physics 'compiled' compiles the fan too (several times faster at 1k envs, ~1 min to compile)
        self._ray_fan = torch.compile(obstacles.ray_fan, dynamic=False) if self.run.physics == "compiled" \
            else obstacles.ray_fan
        self.camera = None
        if cfg.render_depth:
            from sim.camera.depth import DepthCamera

            # the run's CPU threads render slices of the envs side by side (DepthCamera's workers)
            self.camera = DepthCamera(cfg.camera, cfg.camera_randomization, dev, compile=self.run.physics == "compiled",
                                      workers=self.run.threads or 1)
            self.camera_params = self.camera.sample(n, self.gen)

    @property
    def privileged_dim(self) -> int:
        return self.cfg.fan_rays

    # ---------------------------------------------------------------- curriculum

    def set_curriculum_level(self, level: int) -> None:
        """Fields drawn from now on use ``level`` (0 .. cfg.curriculum_levels)."""
        if not 0 <= level <= self.cfg.curriculum_levels:
            raise ValueError(f"curriculum level {level} out of range [0, {self.cfg.curriculum_levels}]")
        self.curriculum_level = level
        self._level_episodes = self._level_successes = 0

    def _update_curriculum(self, done_ids: torch.Tensor, success: torch.Tensor) -> None:
        c = self.cfg
        at_level = self.episode_level[done_ids] == self.curriculum_level
        self._level_episodes += int(at_level.sum())
        self._level_successes += int((success[done_ids] & at_level).sum())
        if self._level_episodes < c.curriculum_window:
            return
        passed = self._level_successes >= c.curriculum_success * self._level_episodes
        if c.curriculum_auto and passed and self.curriculum_level < c.curriculum_levels:
            self.set_curriculum_level(self.curriculum_level + 1)
        else:  # judge the next window afresh (early failures at a level do not hold it back for ever)
            self._level_episodes = self._level_successes = 0

    # ---------------------------------------------------------------- task hooks

    def _sample_goal(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Draws the start too (into self.start_w): the goal at a random heading and distance."""
        c, n, g, dev = self.cfg, len(env_ids), self.gen, self.device

        def uni(rng: tuple[float, float]) -> torch.Tensor:
            return rng[0] + (rng[1] - rng[0]) * torch.rand(n, generator=g, device=dev)

        heading = uni((-math.pi, math.pi))
        dist = uni(c.goal_distance_m)
        self.start_w[env_ids] = torch.stack([torch.zeros(n, device=dev), torch.zeros(n, device=dev),
                                             uni(c.flight_height_m)], -1)
        return torch.stack([dist * torch.cos(heading), dist * torch.sin(heading), uni(c.flight_height_m)], -1)

    def _reset_envs(self, env_ids: torch.Tensor) -> None:
        if len(env_ids) == 0:
            return
        super()._reset_envs(env_ids)  # goal (and start), vehicle draws, state around the goal
        c, s, dev = self.cfg, self.state, self.device
        goal = self.goal_w[env_ids]
        s.pos_w[env_ids] = self.start_w[env_ids] + (s.pos_w[env_ids] - goal)  # the start offset, at the start
        to_goal = goal - self.start_w[env_ids]
        yaw = torch.atan2(to_goal[:, 1], to_goal[:, 0])
        s.quat_wxyz[env_ids] = quat_mul(_yaw_quat(yaw), s.quat_wxyz[env_ids])  # heading is relative to the goal
        self.pos_err_int_w[env_ids] = integrate_pos_err(torch.zeros(len(env_ids), 3, device=dev),
                                                        goal - s.pos_w[env_ids], c.control_dt, torch.clamp)
        counts = obstacles.sample_counts(c, self.curriculum_level, len(env_ids), self.gen, dev)
        obstacles.place_obstacles(c, self.field, env_ids, counts, self.start_w[env_ids], goal, self.gen)
        self.episode_level[env_ids] = self.curriculum_level
        if self.camera is not None:
            fresh = self.camera.sample(len(env_ids), self.gen)
            for f in dataclasses.fields(fresh):
                getattr(self.camera_params, f.name)[env_ids] = getattr(fresh, f.name)

    def start_centre_w(self) -> torch.Tensor:
        return self.start_w.clone()

    # ---------------------------------------------------------------- observation

    def heading(self) -> torch.Tensor:
        """[N] yaw of the body's x axis about world z [rad]"""
        r = quat_to_rotmat(self.state.quat_wxyz)
        return torch.atan2(r[:, 1, 0], r[:, 0, 0])

    def privileged(self) -> torch.Tensor:
        """[N, fan_rays] the level ray fan from the vehicle [m] (obstacles.ray_fan)."""
        c = self.cfg
        return self._ray_fan(self.field, self.state.pos_w, self.heading(), c.fan_rays, c.fan_range_m, c.fan_nearest)

    def render_depth(self) -> torch.Tensor:
        """[N, 1, H, W] the forward camera's depth [m] of the current state (REP 117 specials)."""
        if self.camera is None:
            raise RuntimeError("this env does not render depth: make it with render_depth=True")
        s = self.state
        return self.camera.render(self.field, s.pos_w, s.quat_wxyz, self.camera_params, self.gen).unsqueeze(1)

    def observe(self) -> dict[str, torch.Tensor]:
        groups = super().observe()
        groups["privileged"] = self.privileged()
        if self.camera is not None:
            groups["depth"] = self.render_depth()
        return groups

    def depth_image_input(self) -> ImageInput:
        """The contract entry of the depth group, all from the camera config."""
        c, cam, rand = self.cfg, self.cfg.camera, self.cfg.camera_randomization
        k = cam.intrinsics
        shift = max(abs(x) for x in rand.principal_shift_px)
        tol = max(abs(rand.focal_scale[0] - 1.0), abs(rand.focal_scale[1] - 1.0), shift / k.width, shift / k.height)
        return ImageInput(name="depth", quantity="depth_c", width=k.width, height=k.height, encoding=c.depth_encoding,
                          topic=c.depth_topic, camera_info_topic=c.depth_info_topic,
                          fx_fy_cx_cy_px=(k.fx, k.fy, k.cx, k.cy), intrinsics_tolerance_rel=tol,
                          mount_position_b_m=cam.mount.position_b_m, mount_rpy_rad=cam.mount.rpy_rad,
                          min_range_m=cam.min_range_m, max_range_m=cam.max_range_m, pooling="nearest",
                          pooled_width=c.depth_pooled_wh[0], pooled_height=c.depth_pooled_wh[1],
                          invalid_m=c.depth_invalid_m, max_age_s=c.depth_max_age_s)

    def image_inputs(self) -> tuple[ImageInput, ...]:
        """The contract entries of the env's image groups: the depth camera's when it renders."""
        return (self.depth_image_input(),) if self.camera is not None else ()

    # ---------------------------------------------------------------- step

    def _line_coords(self, pos_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u along the start-goal line from the start, v to its left, the line's length) [N] [m]"""
        along = self.goal_w[:, :2] - self.start_w[:, :2]
        length = along.norm(dim=-1).clamp_min(1e-6)
        e_u = along / length[:, None]
        rel = pos_w[:, :2] - self.start_w[:, :2]
        return (rel * e_u).sum(-1), e_u[:, 0] * rel[:, 1] - e_u[:, 1] * rel[:, 0], length

    def out_of_bounds(self, pos_w: torch.Tensor) -> torch.Tensor:
        """[N] bool: outside the start-goal corridor, above the ceiling or beyond the distance limit (the
        episode ends as a crash; policies.nav_eval judges other simulators' flights by this too)."""
        c = self.cfg
        u, v, length = self._line_coords(pos_w)
        dist = (self.goal_w - pos_w).norm(dim=-1)
        return ((v.abs() > c.field_half_width_m + c.corridor_margin_m) | (u < -c.corridor_margin_m) |
                (u > length + c.corridor_margin_m) | (pos_w[:, 2] > c.ceiling_m) | (dist > c.max_distance_m))

    def step(self, actions: torch.Tensor):
        c = self.cfg
        if actions.shape != (self.num_envs, c.action_dim):
            raise ValueError(f"actions must be shaped {(self.num_envs, c.action_dim)}, got {tuple(actions.shape)}")
        prev_dist = (self.goal_w - self.state.pos_w).norm(dim=-1)
        actions, last_action = self.advance(actions)
        self.episode_step += 1
        s = self.state
        to_goal = self.goal_w - s.pos_w
        dist = to_goal.norm(dim=-1)
        r = quat_to_rotmat(s.quat_wxyz)
        speed = s.lin_vel_w.norm(dim=-1)
        clearance = obstacles.obstacle_distance(self.field, s.pos_w) - c.vehicle_radius_m
        collided = (clearance < 0) | (s.pos_w[:, 2] < c.ground_z_m + c.vehicle_radius_m)
        out = self.out_of_bounds(s.pos_w)
        nonfinite = ~torch.isfinite(s.pos_w).all(-1) | ~torch.isfinite(s.quat_wxyz).all(-1)
        crashed = collided | out | nonfinite
        success = (dist < c.success_tol_m) & ~crashed
        terminated = crashed | success
        truncated = (self.episode_step >= c.max_episode_steps) & ~terminated

        horiz = to_goal[:, :2].norm(dim=-1)
        cos_heading = (r[:, 0, 0] * to_goal[:, 0] + r[:, 1, 0] * to_goal[:, 1]) / \
            (r[:, :2, 0].norm(dim=-1) * horiz).clamp_min(1e-6)
        terms = {
            "progress": c.rew_progress * (prev_dist - dist) / c.control_dt,
            "obstacle": c.rew_obstacle * (1.0 - clearance.clamp_min(0) / c.obstacle_margin_m).clamp_min(0).square(),
            "heading": c.rew_heading * (1.0 - cos_heading) * horiz.clamp_max(1.0),  # no heading at the goal
            "speed": c.rew_speed * (speed - c.max_speed_m_s).clamp_min(0),
            "upright": c.rew_upright * (1.0 - r[:, 2, 2]),
            "ang_vel": c.rew_ang_vel * s.ang_vel_b.norm(dim=-1),
            "action_rate": c.rew_action_rate * (actions - last_action).square().sum(-1),
            "alive": c.rew_alive * torch.ones_like(dist),
            # the base task's position and velocity terms (off by default here: progress replaces them)
            "position": c.rew_position * dist,
            "position_fine": c.rew_position_fine * torch.exp(-dist / c.position_fine_scale_m),
            "lin_vel": c.rew_lin_vel * speed,
            "crash": c.rew_crash * crashed.float(),
            "success": c.rew_success * success.float(),
        }
        terms = {k: torch.nan_to_num(v * c.control_dt) for k, v in terms.items()}
        rewards = torch.where(nonfinite, c.rew_crash * c.control_dt, sum(terms.values()))
        for k, val in terms.items():
            self.episode_sums[k] = self.episode_sums.get(k, torch.zeros_like(val)) + val

        done = terminated | truncated
        info: dict = {"time_outs": truncated, "crashed": crashed, "collided": collided & ~success, "success": success,
                      "pos_err_m": dist, "episode_count": done.sum()}
        done_ids = done.nonzero(as_tuple=False).squeeze(-1)
        if len(done_ids) > 0:
            ep = {f"reward/{k}": val[done_ids].mean() for k, val in self.episode_sums.items()}
            ep["episode/length_s"] = self.episode_step[done_ids].float().mean() * c.control_dt
            ep["episode/final_pos_err_m"] = dist[done_ids].mean()
            ep["episode/crash_rate"] = crashed[done_ids].float().mean()
            ep["episode/collision_rate"] = collided[done_ids].float().mean()
            ep["episode/success_rate"] = success[done_ids].float().mean()
            ep["curriculum/level"] = torch.tensor(float(self.curriculum_level), device=self.device)
            ep["curriculum/obstacles"] = (self.field.cylinder_valid[done_ids].sum(-1) +
                                          self.field.box_valid[done_ids].sum(-1)).float().mean()
            info["episode"] = ep
            for val in self.episode_sums.values():
                val[done_ids] = 0.0
            self._update_curriculum(done_ids, success)
            self._reset_envs(done_ids)
        return self.observe(), rewards, terminated, truncated, info


def evaluate_fields(policy, cfg: NavigateCfg, num_obstacles: int, num_fields: int = 100, seed: int = 1000,
                    device: str = "cpu") -> dict[str, float]:
    """One episode on each of ``num_fields`` fields of exactly ``num_obstacles`` obstacles (drawn from
    ``seed``: use one the policy never trained on), run in parallel; ``policy(groups) -> actions [N, A]``
    maps the observation groups (the depth group too when cfg.render_depth) to actions.

    Returns success / collision / out-of-bounds-or-other-crash / time-out rates and the mean time to
    the goal of the successes [s]."""
    from sim.tasks.run_cfg import RunCfg

    cfg = dataclasses.replace(cfg, num_obstacles=(num_obstacles, num_obstacles), curriculum_levels=0,
                              curriculum_start_level=0, curriculum_auto=False)
    env = NavigateEnv(cfg, RunCfg(num_envs=num_fields, device=device, seed=seed))
    groups = env.reset()
    # 0 running, 1 success, 2 collision, 3 other crash (out of bounds), 4 time-out
    outcome = torch.zeros(num_fields, dtype=torch.long, device=env.device)
    time_s = torch.zeros(num_fields, device=env.device)
    with torch.no_grad():
        for step in range(cfg.max_episode_steps):
            groups, _, terminated, truncated, info = env.step(policy(groups))
            first = outcome == 0
            code = torch.where(info["success"], 1, torch.where(info["collided"], 2, torch.where(
                info["crashed"], 3, torch.where(truncated, 4, 0))))
            ended = first & (code > 0)
            time_s = torch.where(ended, torch.full_like(time_s, (step + 1) * cfg.control_dt), time_s)
            outcome = torch.where(ended, code, outcome)
            if bool((outcome > 0).all()):
                break
    outcome = torch.where(outcome == 0, 4, outcome)
    rate = {name: float((outcome == i).float().mean()) for i, name in
            ((1, "success"), (2, "collision"), (3, "crash_other"), (4, "timeout"))}
    ok = outcome == 1
    rate["time_to_goal_s"] = float(time_s[ok].mean()) if bool(ok.any()) else math.nan
    return rate
