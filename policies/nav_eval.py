"""Evaluate an exported depth-navigation policy over unseen obstacle fields, in Tether's simulator (its
ray-caster) and in pybullet (its own physics and TinyRenderer camera), from the same fields and starts.

    from policies.nav_eval import evaluate_navigation
    report = evaluate_navigation("artifacts/nav_student", num_fields=100, num_obstacles=(16, 32), sim="both",
                                 out="artifacts/nav_student_eval", videos=1)
    tether eval --policy artifacts/nav_student --sim both --fields 100 --video 1     # the same, from the CLI

What the policy gets is what a robot would give it, from the contract alone (``policy.json``): the state
vector by :func:`tether.observation.build_observation` from named quantities, and the depth image of the
contract's camera (:class:`tether.contract.ImageInput`: size, intrinsics, mount, range) as decoded
metres [1, H, W] with REP 117 specials, fed through :class:`tether.runtime.OnnxPolicy`. The camera is the
nominal one (no randomization, noise or dropouts) in both simulators.

Fields: the `navigate` task's own generator (:mod:`sim.tasks.obstacles`, drawn by
:class:`sim.tasks.navigate.NavigateEnv` at reset: start, goal, obstacle field, start state), with exactly
``n`` obstacles per field and the nominal vehicle. Unseen: training draws its fields from the env
generator seeded with the run's ``--seed`` (data-parallel ranks derive theirs from it); evaluation
draws them from a generator seeded ``NAV_EVAL_SEED_BASE + seed`` (2^32 + seed), a seed no training run
is given (a policy whose provenance records that seed is refused). Both simulators fly the very same
obstacle rows (``sim.camera.pybullet_depth.build_scene`` builds them in pybullet).

Judgement (the same code for both simulators, the rule of ``NavigateEnv.step``): success = within
``success_tol_m`` (0.5 m) of the goal within the time limit (``episode_length_s``) without a collision
first; collision = the vehicle's sphere (``vehicle_radius_m``) touching an obstacle or the ground:
analytic distance in Tether's simulator, pybullet's own collision geometry (``getClosestPoints``) in
pybullet; out of bounds = leaving the corridor, the ceiling or the distance limit; timeout = none of
these by the time limit. The bar (issue 11): >= 90 % success at 16 obstacles, >= 80 % at 32.

Writes ``report.json`` (rates, time to goal, per-field results and the fields themselves),
``eval_navigate.png`` (success per density, example paths on a top view) and, with ``videos``, one
``rollout_<sim>_<n>obs_field<i>.mp4`` (and its ``.npz``, :mod:`policies.video`) per shown field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sim.camera.config import CameraRandomizationCfg, DepthCameraCfg, MountCfg, PinholeCfg
from sim.camera.depth import DepthCamera, camera_pose_w, sensor_effects
from sim.camera.scene import Scene
from tether.actions import action_map, actions_to_rotor_cmd, initial_action, rate_controller
from tether.contract import ImageInput, PolicyContract
from tether.observation import PositionErrorIntegral, build_observation
from tether.runtime import OnnxPolicy

NAV_EVAL_SEED_BASE = 1 << 32
"""evaluation fields come from a generator seeded this + seed; training seeds are run seeds below it"""
BARS = {16: 0.90, 32: 0.80}
"""required success rate by obstacle count (issue 11); other densities are reported without a bar"""
OUTCOMES = ("success", "collision", "out_of_bounds", "timeout")
SIMS = ("tether", "pybullet")
SIM_COLOURS = {"tether": "tab:blue", "pybullet": "tab:orange"}


# ------------------------------------------------------------------------------------- fields


def camera_cfg(image: ImageInput) -> DepthCameraCfg:
    """The nominal camera an image input was trained with: size, intrinsics, mount, range (contract only)."""
    fx, fy, cx, cy = image.fx_fy_cx_cy_px
    return DepthCameraCfg(intrinsics=PinholeCfg(image.width, image.height, fx, fy, cx, cy),
                          mount=MountCfg(tuple(image.mount_position_b_m), tuple(image.mount_rpy_rad)),
                          min_range_m=image.min_range_m, max_range_m=image.max_range_m,
                          tile_w=_divisor(image.width), tile_h=_divisor(image.height))


def _divisor(n: int, at_most: int = 8) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def eval_task_cfg(task_cfg, num_obstacles: int, latency_steps: int = 0):
    """The task config of an evaluation: exactly ``num_obstacles`` per field, no curriculum, the nominal
    vehicle with a fixed latency, no rendering by the env (the policy's camera renders, from its contract)."""
    from sim.randomization import RandomizationCfg

    lat = latency_steps / task_cfg.control_rate_hz
    return dataclasses.replace(task_cfg, num_obstacles=(num_obstacles, num_obstacles), curriculum_levels=0,
                               curriculum_start_level=0, curriculum_auto=False, render_depth=False,
                               randomization=dataclasses.replace(RandomizationCfg.nominal(), latency_s=(lat, lat)))


def draw_fields(task_cfg, num_fields: int, num_obstacles: int, seed: int = 0, latency_steps: int = 0):
    """The evaluation env: ``num_fields`` fields of ``num_obstacles`` obstacles drawn by the task's own
    reset from the generator seeded ``NAV_EVAL_SEED_BASE + seed``. Returns (env, field), the field a
    copy of the env's Scene (the rows both simulators fly)."""
    from sim.tasks import make_env

    cfg = eval_task_cfg(task_cfg, num_obstacles, latency_steps)
    env = make_env("navigate", cfg, num_envs=num_fields, seed=NAV_EVAL_SEED_BASE + seed, device="cpu",
                   physics="eager")
    env.reset()
    field = Scene(**{f.name: getattr(env.field, f.name).clone() for f in dataclasses.fields(env.field)})
    return env, field


def field_rows(field: Scene, i: int) -> dict[str, list[list[float]]]:
    """The primitive rows of field ``i`` (sim.camera.scene field order), as both simulators build them."""
    return {"spheres": field.spheres[i][field.sphere_valid[i]].tolist(),
            "cylinders": field.cylinders[i][field.cylinder_valid[i]].tolist(),
            "boxes": field.boxes[i][field.box_valid[i]].tolist()}


def collided_analytic(env, field: Scene, pos_w: torch.Tensor) -> torch.Tensor:
    """[N] the vehicle's sphere touches an obstacle or the ground (NavigateEnv.step's analytic rule)."""
    from sim.tasks import obstacles

    c = env.cfg
    clearance = obstacles.obstacle_distance(field, pos_w) - c.vehicle_radius_m
    return (clearance < 0) | (pos_w[:, 2] < field.ground_z_w + c.vehicle_radius_m)


def judge(env, pos_w: torch.Tensor, quat_wxyz: torch.Tensor, collided: torch.Tensor) -> torch.Tensor:
    """[N] outcome code of a tick: 0 flying, else 1 + OUTCOMES.index (success, collision, out of bounds),
    by NavigateEnv.step's rule (its start-goal corridor, ceiling and distance limit; success only
    without a crash). ``collided`` comes from the simulator that flew."""
    c = env.cfg
    dist = (env.goal_w - pos_w).norm(dim=-1)
    out = env.out_of_bounds(pos_w)
    nonfinite = ~torch.isfinite(pos_w).all(-1) | ~torch.isfinite(quat_wxyz).all(-1)
    collided = collided & ~nonfinite
    out = (out | nonfinite) & ~collided
    success = (dist < c.success_tol_m) & ~collided & ~out
    return torch.where(success, 1, torch.where(collided, 2, torch.where(out, 3, 0)))


# ------------------------------------------------------------------------------- simulators


def _take(batch, ids: np.ndarray):
    """The rows ``ids`` of a frozen dataclass of per-env tensors (a Scene, CameraParams)."""
    idx = torch.as_tensor(ids, dtype=torch.long)
    return type(batch)(**{f.name: getattr(batch, f.name)[idx] for f in dataclasses.fields(batch)})


class TetherSim:
    """Tether's simulator: the evaluation env's physics (``advance``: latency queue, motors, rate loop)
    and the batched ray-caster at the contract's camera. A field that is done is parked (hovering where
    it ended) so that the batch stays finite."""

    name = "tether"

    def __init__(self, env, field: Scene, image: ImageInput):
        self.env, self.field = env, field
        self.camera = DepthCamera(camera_cfg(image), CameraRandomizationCfg(), "cpu")
        self.params = self.camera.nominal(env.num_envs)
        self.hover = env.hover_action
        s0 = env.state
        self.start = {k: getattr(s0, k).clone() for k in s0._fields}

    def state(self) -> dict[str, np.ndarray]:
        s = self.env.state
        return {k: getattr(s, k).double().numpy() for k in ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b")}

    def depth(self, ids: np.ndarray) -> np.ndarray:
        """[len(ids), H, W] raw depth [m] of fields ``ids`` at their current poses."""
        s, idx = self.env.state, torch.as_tensor(ids, dtype=torch.long)
        with torch.no_grad():
            return self.camera.render(_take(self.field, ids), s.pos_w[idx], s.quat_wxyz[idx],
                                      _take(self.params, ids)).numpy()

    def step(self, actions: np.ndarray, ids: np.ndarray) -> None:
        env = self.env
        full = self.hover.repeat(env.num_envs, 1)
        full[torch.as_tensor(ids, dtype=torch.long)] = torch.as_tensor(actions, dtype=full.dtype)
        parked = np.setdiff1d(np.arange(env.num_envs), ids)
        with torch.no_grad():
            env.advance(full)
        if len(parked):
            s, p = env.state, torch.as_tensor(parked, dtype=torch.long)
            pos = torch.nan_to_num(s.pos_w[p], nan=0.0, posinf=0.0, neginf=0.0)
            s.pos_w[p] = pos
            s.quat_wxyz[p] = torch.tensor([1.0, 0.0, 0.0, 0.0])
            s.lin_vel_w[p] = 0.0
            s.ang_vel_b[p] = 0.0
            s.rotor_rpm[p] = self.start["rotor_rpm"][p]

    def collided(self, pos_w: np.ndarray) -> np.ndarray:
        return collided_analytic(self.env, self.field, torch.as_tensor(pos_w, dtype=torch.float32)).numpy()

    def close(self) -> None:
        pass


class PybulletSim:
    """pybullet: the reference quadrotors of sim.pybullet_ref, one per field, flown together in one
    physics world (no collisions in its physics: the drones never touch each other or anything), and one
    scene world per field holding that field's obstacles and ground (sim.camera.pybullet_depth.build_scene),
    where pybullet's TinyRenderer renders the contract's camera (then the camera's range limits, the
    ray-caster's sensor model) and pybullet's geometry judges collisions (its closest points to a sphere of
    the vehicle's radius). The drones carry no visual shape, so the split changes no image; it keeps each
    render to one field's triangles. The same starts as Tether's simulator; the contract's rate loop
    (tether.actions). A field that is done is parked (hovering where it ended)."""

    name = "pybullet"

    def __init__(self, env, field: Scene, contract: PolicyContract, image: ImageInput, latency_steps: int = 0):
        import pybullet as pb

        from sim.camera import pybullet_depth
        from sim.pybullet_ref.quadrotor import PybulletQuadrotors
        from sim.pybullet_ref.rate_control import check_action_spec

        self.pb, self.render, self.field = pb, pybullet_depth.render_depth, field
        cfg = env.cfg
        check_action_spec(contract.action, cfg.vehicle)
        self.cam = camera_cfg(image)
        self.params = DepthCamera(self.cam, CameraRandomizationCfg(), "cpu").nominal(env.num_envs)
        self.spec, self.map = contract.action, action_map(contract.action)
        self.rate_ctrl = rate_controller(contract) if contract.action.type == "ctbr" else None
        n = env.num_envs
        s = env.state
        self.clients, self.bodies, self.probe = [], [], []
        self.quads = PybulletQuadrotors(cfg.vehicle, n, cfg.control_dt, cfg.substeps)
        try:
            self.quads.reset(*(t.double().numpy() for t in (s.pos_w, s.quat_wxyz, s.lin_vel_w, s.ang_vel_b,
                                                             s.rotor_rpm)))
            for i in range(n):
                c = pb.connect(pb.DIRECT)
                if c < 0:
                    raise RuntimeError("pybullet could not start a DIRECT client for a field's scene")
                self.clients.append(c)
                rows = field_rows(field, i)
                self.bodies.append(pybullet_depth.build_scene(c, rows["spheres"], rows["cylinders"], rows["boxes"],
                                                              float(field.ground_z_w[i])))
                self.probe.append(pb.createCollisionShape(pb.GEOM_SPHERE, radius=cfg.vehicle_radius_m,
                                                          physicsClientId=c))
        except BaseException:
            self.close()
            raise
        self.lat = int(latency_steps)
        self.queue = np.tile(initial_action(contract), (self.lat + 1, n, 1))  # [D+1, N, A], newest last
        self._state = self.quads.state()

    def state(self) -> dict[str, np.ndarray]:
        return {k: self._state[k].copy() for k in ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b")}

    def depth(self, ids: np.ndarray) -> np.ndarray:
        o_w, rot_wc = camera_pose_w(_take(self.params, ids), torch.as_tensor(self._state["pos_w"][ids], dtype=torch.float32),
                                    torch.as_tensor(self._state["quat_wxyz"][ids], dtype=torch.float32))
        z = np.stack([self.render(self.clients[i], self.cam.intrinsics, o_w[j].tolist(), rot_wc[j].double().numpy())
                      for j, i in enumerate(ids)])
        return sensor_effects(torch.from_numpy(z), self.cam, CameraRandomizationCfg()).numpy()

    def step(self, actions: np.ndarray, ids: np.ndarray) -> None:
        self.queue = np.concatenate([self.queue[1:], self.queue[-1:]], axis=0)
        self.queue[-1, ids] = actions
        applied = np.clip(self.queue[0], self.spec.low, self.spec.high)
        self.quads.step(lambda w_b: actions_to_rotor_cmd(self.map, applied, w_b, self.rate_ctrl))
        state = self.quads.state()
        parked = np.setdiff1d(np.arange(self.quads.num), ids)
        if len(parked):
            pos = np.nan_to_num(self._state["pos_w"][parked])
            self.quads.reset(pos, np.tile([1.0, 0.0, 0.0, 0.0], (len(parked), 1)), np.zeros((len(parked), 3)),
                             np.zeros((len(parked), 3)), ids=parked)
            state = self.quads.state()
        self._state = state

    def collided(self, pos_w: np.ndarray) -> np.ndarray:
        pb, hit = self.pb, np.zeros(len(self.clients), dtype=bool)
        for i, c in enumerate(self.clients):
            if not np.all(np.isfinite(pos_w[i])):
                continue
            hit[i] = any(pb.getClosestPoints(bodyA=b, bodyB=-1, distance=0.0, collisionShapeB=self.probe[i],
                                             collisionShapePositionB=pos_w[i].tolist(), physicsClientId=c)
                         for b in self.bodies[i])
        return hit

    def close(self) -> None:
        for c in self.clients:
            self.pb.disconnect(physicsClientId=c)
        self.clients = []
        self.quads.close()


# ------------------------------------------------------------------------------------ flying


def fly(sim, env, policy: OnnxPolicy, image: ImageInput, record_depth: tuple[int, ...] = (),
        progress: str | None = None, correct=None) -> dict:
    """Fly every field of ``sim`` once, in lockstep, until each is judged (or the time limit).

    Returns outcome [N] (OUTCOMES index), time_s [N] (when it ended; the limit for a timeout),
    pos_w [T, N, 3], quat_wxyz [T, N, 4] (a field's samples after its end repeat its last), ticks [N]
    (samples that belong to its flight), min_clearance_m [N] (analytic: the nearest obstacle or ground
    surface minus the vehicle radius, over the flight) and, for the
    fields in ``record_depth``, depth_m {i: [ticks_i, H, W]} (the image fed at each tick, and at the end).
    correct(k, ids, quantities, depth [len(ids), H, W], policy actions) -> executed actions: an operator
    between the policy and the vehicle at tick k (policies.hil.navigate); None: the policy flies."""
    from tqdm import tqdm

    from sim.tasks import obstacles

    contract = policy.contract
    cfg, n, dt = env.cfg, env.num_envs, env.cfg.control_dt
    steps = cfg.max_episode_steps
    names = {s.name for s in contract.observation}
    k_hist = contract.slice("prev_actions").length // contract.action.dim if "prev_actions" in names else 0
    history = np.tile(initial_action(contract), (n, k_hist, 1))
    integral = PositionErrorIntegral(dt) if "pos_err_int_b" in names else None
    goal_w = env.goal_w.double().numpy()
    outcome = np.full(n, -1)
    time_s = np.full(n, steps * dt)
    s = sim.state()
    pos, quat = [s["pos_w"]], [s["quat_wxyz"]]
    ground = sim.field.ground_z_w.double().numpy()

    def surface_distance(p: np.ndarray) -> np.ndarray:  # to the nearest obstacle or the ground [m]
        p = np.nan_to_num(p)
        d = obstacles.obstacle_distance(sim.field, torch.as_tensor(p, dtype=torch.float32)).double().numpy()
        return np.minimum(d, p[:, 2] - ground)

    clearance = surface_distance(s["pos_w"]) - cfg.vehicle_radius_m
    depth_log: dict[int, list[np.ndarray]] = {i: [] for i in record_depth}
    bar = tqdm(total=steps, desc=progress, leave=False, disable=progress is None or not os.isatty(2))
    for k in range(steps):
        ids = np.flatnonzero(outcome < 0)
        if len(ids) == 0:
            break
        q = {key: s[key][ids] for key in ("pos_w", "quat_wxyz", "lin_vel_w", "ang_vel_b")}
        q["goal_w"], q["goal_vel_w"] = goal_w[ids], np.zeros((len(ids), 3))
        if k_hist:
            q["prev_actions"] = history[ids].reshape(len(ids), -1)
        if integral is not None:
            q["pos_err_int_w"] = integral.update(goal_w, s["pos_w"])[ids]
        obs = build_observation(contract, q)
        depth = sim.depth(ids).astype(np.float32)
        for j, i in enumerate(ids):
            if i in depth_log:
                depth_log[i].append(depth[j])
        actions = np.asarray(policy(obs, {image.name: depth[:, None]}), dtype=np.float64)
        if correct is not None:
            actions = np.asarray(correct(k, ids, q, depth, actions), dtype=np.float64)
        if k_hist:
            history[ids] = np.concatenate([history[ids, 1:], actions[:, None]], axis=1)
        sim.step(actions, ids)
        s = sim.state()
        code = judge(env, torch.as_tensor(s["pos_w"], dtype=torch.float32),
                     torch.as_tensor(s["quat_wxyz"], dtype=torch.float32),
                     torch.as_tensor(sim.collided(s["pos_w"]))).numpy()
        running = outcome < 0
        clearance = np.where(running, np.minimum(clearance, surface_distance(s["pos_w"]) - cfg.vehicle_radius_m),
                             clearance)
        ended = running & (code > 0)
        outcome[ended], time_s[ended] = code[ended] - 1, (k + 1) * dt
        pos.append(np.where(running[:, None], s["pos_w"], pos[-1]))
        quat.append(np.where(running[:, None], s["quat_wxyz"], quat[-1]))
        bar.update(1)
    bar.close()
    outcome[outcome < 0] = OUTCOMES.index("timeout")
    ticks = np.round(time_s / dt).astype(int) + 1
    for i in depth_log:  # the image at the final state too, so a video has one frame per sample
        if len(depth_log[i]) < ticks[i]:
            depth_log[i].append(sim.depth(np.array([i]))[0].astype(np.float32))
    return {"outcome": outcome, "time_s": time_s, "pos_w": np.stack(pos), "quat_wxyz": np.stack(quat),
            "ticks": ticks, "min_clearance_m": clearance,
            "depth_m": {i: np.stack(v[:ticks[i]]) for i, v in depth_log.items()}}


def summarize(flight: dict, num_obstacles: int, goal_w: np.ndarray) -> dict:
    """Rates, time to goal and per-field results of one simulator at one density."""
    from sim.pybullet_ref.evaluate import bootstrap_ci

    outcome, n = flight["outcome"], len(flight["outcome"])
    ok = outcome == 0
    rate, lo, hi = bootstrap_ci(ok.astype(float))
    out = {"num_fields": n, "success_rate": rate, "success_ci95": [lo, hi]}
    for k, name in enumerate(OUTCOMES):
        count = int((outcome == k).sum())
        out[{"success": "successes", "collision": "collisions", "out_of_bounds": "out_of_bounds",
             "timeout": "timeouts"}[name]] = count
        if name != "success":
            out[f"{name}_rate"] = count / n
    t = flight["time_s"][ok]
    out["time_to_goal_s_median"] = float(np.median(t)) if t.size else math.nan
    out["time_to_goal_s_mean"] = float(np.mean(t)) if t.size else math.nan
    bar = BARS.get(num_obstacles)
    out["bar"], out["passed"] = bar, (None if bar is None else bool(rate >= bar))
    per = []
    for i in range(n):
        p = flight["pos_w"][:flight["ticks"][i], i]
        per.append({"field": i, "outcome": OUTCOMES[outcome[i]], "time_s": float(flight["time_s"][i]),
                    "final_dist_m": float(np.linalg.norm(goal_w[i] - p[-1])),
                    "path_length_m": float(np.linalg.norm(np.diff(p, axis=0), axis=-1).sum()),
                    "min_clearance_m": float(flight["min_clearance_m"][i])})
    out["per_field"] = per
    return out


# ----------------------------------------------------------------------------------- the whole


def _policy_image(contract: PolicyContract) -> ImageInput:
    depth = [im for im in contract.images if im.quantity == "depth_c"]
    if contract.task != "navigate" or len(depth) != 1 or len(contract.images) != 1:
        raise ValueError(f"the policy is of task {contract.task!r} with image inputs {[im.name for im in contract.images]}; "
                         "the navigation evaluation flies a 'navigate' policy with one depth image input "
                         "(distill the teacher into a depth student first)")
    return depth[0]


def _check_unseen(contract: PolicyContract, seed: int) -> None:
    trained = (contract.provenance.get("run_cfg") or {}).get("seed")
    if trained is not None and int(trained) == NAV_EVAL_SEED_BASE + seed:
        raise ValueError(f"the policy was trained on the generator seed {trained}, which evaluation seed {seed} would "
                         "draw its fields from; give another seed")


def evaluate_navigation(policy_dir: str | Path, num_fields: int = 100, num_obstacles: int | tuple[int, ...] = (16, 32),
                        sim: str = "both", seed: int = 0, out: str | Path | None = None, videos: int = 0,
                        video_stride: int = 2, latency_steps: int = 0, progress: bool = True,
                        threads: int | None = 1) -> dict:
    """Fly the policy in ``policy_dir`` over ``num_fields`` unseen fields per obstacle count, in Tether's
    simulator and / or pybullet (module docstring). With ``out`` (a folder; new files only) writes
    report.json, eval_navigate.png and ``videos`` rollout videos per simulator and density. Returns the
    report (the dict report.json holds). ``threads``: torch intra-op threads while it runs (None: leave
    the process's setting); one is fastest here, the batches are small and a busy machine makes every
    op of a thread pool wait for its slowest thread."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _evaluate(policy_dir, num_fields, num_obstacles, sim, seed, out, videos, video_stride, latency_steps,
                         progress)
    finally:
        torch.set_num_threads(before)


def _evaluate(policy_dir, num_fields, num_obstacles, sim, seed, out, videos, video_stride, latency_steps,
              progress) -> dict:
    from policies.evaluation import task_cfg_from_contract

    sims = SIMS if sim == "both" else (sim,)
    if any(s not in SIMS for s in sims):
        raise ValueError(f"unknown simulator {sim!r}; choose 'tether', 'pybullet' or 'both'")
    densities = (num_obstacles,) if isinstance(num_obstacles, int) else tuple(num_obstacles)
    if num_fields < 1 or not densities or min(densities) < 1 or not 0 <= videos <= num_fields:
        raise ValueError(f"need num_fields >= 1, obstacle counts >= 1 and 0 <= videos <= num_fields, got {num_fields}, "
                         f"{list(densities)}, {videos}")
    policy = OnnxPolicy(policy_dir)
    contract = policy.contract
    image = _policy_image(contract)
    _check_unseen(contract, seed)
    task_cfg = task_cfg_from_contract(policy_dir)
    if max(densities) > task_cfg.num_obstacles[1]:
        task_cfg = dataclasses.replace(task_cfg, num_obstacles=(task_cfg.num_obstacles[0], max(densities)))
    if out is not None:
        taken = [p.name for pattern in ("report.json", "eval_navigate.png", "rollout_*") for p in Path(out).glob(pattern)]
        if taken:
            raise FileExistsError(f"{out} already holds {sorted(taken)[:3]}; give a new or empty folder")
    started = time.time()
    report: dict = {
        "policy": str(policy_dir), "task": contract.task, "sims": list(sims), "num_fields": num_fields,
        "num_obstacles": list(densities), "seed": seed, "field_generator_seed": NAV_EVAL_SEED_BASE + seed,
        "unseen_rule": "fields drawn by NavigateEnv's reset from a generator seeded 2^32 + seed; training seeds "
                       "its env generator with the run's --seed",
        "success_rule": f"within {task_cfg.success_tol_m} m of the goal within {task_cfg.episode_length_s} s without "
                        f"a collision (vehicle sphere {task_cfg.vehicle_radius_m} m) or leaving the corridor",
        "camera": dataclasses.asdict(image), "latency_steps": latency_steps, "bars": {str(k): v for k, v in BARS.items()},
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs), load {os.getloadavg()[0]:.1f} at start",
        "results": {s: {} for s in sims}, "fields": {}, "videos": [],
    }
    flights: dict = {s: {} for s in sims}
    fields: dict = {}
    for n_obs in densities:
        env, field = draw_fields(task_cfg, num_fields, n_obs, seed, latency_steps)
        fields[n_obs] = (env, field)
        goal_w = env.goal_w.double().numpy()
        report["fields"][str(n_obs)] = [{"field": i, "start_w": env.state.pos_w[i].tolist(), "goal_w": goal_w[i].tolist(),
                                         **field_rows(field, i)} for i in range(num_fields)]
        start = {k: getattr(env.state, k).clone() for k in env.state._fields}
        for name in sims:
            _restart(env, start)
            runner = TetherSim(env, field, image) if name == "tether" else PybulletSim(env, field, contract, image,
                                                                                        latency_steps)
            t0 = time.time()
            try:
                flight = fly(runner, env, policy, image, record_depth=tuple(range(videos)),
                             progress=f"{name} {n_obs} obstacles" if progress else None)
            finally:
                runner.close()
            flights[name][n_obs] = flight
            report["results"][name][str(n_obs)] = summarize(flight, n_obs, goal_w) | {
                "wall_s": time.time() - t0, "load_after": os.getloadavg()[0]}
    if len(sims) == 2:
        report["agreement"] = {str(n): float(np.mean(flights["tether"][n]["outcome"] == flights["pybullet"][n]["outcome"]))
                               for n in densities}
    bars = [r["passed"] for by_n in report["results"].values() for r in by_n.values() if r["passed"] is not None]
    report["passed"] = bool(all(bars)) if bars else None
    report["wall_s"] = time.time() - started
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["plot"] = str(plot_navigation(report, flights, fields, out / "eval_navigate.png"))
        for name in sims:
            for n_obs in densities:
                for i in range(videos):
                    report["videos"].append(write_rollout_video(out, name, n_obs, i, flights[name][n_obs],
                                                                fields[n_obs], image, video_stride))
        (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return report


def _restart(env, start: dict) -> None:
    """The env back at its episode start (both simulators fly from the same state)."""
    from sim.quadrotor import dynamics

    env.state = dynamics.QuadState(*(start[k].clone() for k in dynamics.QuadState._fields))
    env.action_queue[:] = env.hover_action
    env.prev_actions[:] = env.hover_action
    env.episode_step[:] = 0
    env.restart_pos_err_int()


def summary_line(report: dict, sim: str, n_obs: int) -> str:
    r = report["results"][sim][str(n_obs)]
    bar = "" if r["bar"] is None else f" (bar {r['bar']:.0%}: {'PASS' if r['passed'] else 'FAIL'})"
    return (f"[{sim}] {n_obs} obstacles: success {r['successes']}/{r['num_fields']} (95% CI {r['success_ci95'][0]:.2f}-"
            f"{r['success_ci95'][1]:.2f}){bar}, collisions {r['collisions']}, out of bounds {r['out_of_bounds']}, "
            f"timeouts {r['timeouts']}, time to goal median {r['time_to_goal_s_median']:.2f} s")


# ------------------------------------------------------------------------------------ pictures


def _rollout(flight: dict, field: Scene, env, i: int, image: ImageInput, sim: str, n_obs: int):
    from policies.models import DepthPreprocess
    from policies.video import Rollout

    t = flight["ticks"][i]
    depth = flight["depth_m"][i]
    with torch.no_grad():
        pooled = DepthPreprocess(image)(torch.from_numpy(depth)[:, None])[:, 0].numpy()
    rows = field_rows(field, i)
    fx = image.fx_fy_cx_cy_px[0]
    return Rollout(
        t_s=np.arange(t) * env.cfg.control_dt, pos_w=flight["pos_w"][:t, i], quat_wxyz=flight["quat_wxyz"][:t, i],
        depth_m=depth, pooled=pooled, start_w=flight["pos_w"][0, i], goal_w=env.goal_w[i].double().numpy(),
        spheres=np.asarray(rows["spheres"]).reshape(-1, 4), cylinders=np.asarray(rows["cylinders"]).reshape(-1, 5),
        boxes=np.asarray(rows["boxes"]).reshape(-1, 7), hfov_rad=2.0 * math.atan(0.5 * image.width / fx),
        camera_yaw_b_rad=image.mount_rpy_rad[2], min_range_m=image.min_range_m, max_range_m=image.max_range_m,
        goal_tol_m=env.cfg.success_tol_m, outcome=OUTCOMES[flight["outcome"][i]],
        title=f"{sim}, {n_obs} obstacles, field {i}")


def write_rollout_video(out: Path, sim: str, n_obs: int, i: int, flight: dict, fields: tuple, image: ImageInput,
                        stride: int) -> dict:
    from policies.video import write_video

    env, field = fields
    r = _rollout(flight, field, env, i, image, sim, n_obs)
    stem = f"rollout_{sim}_{n_obs}obs_field{i}"
    r.save(out / f"{stem}.npz")
    return write_video(r, out / f"{stem}.mp4", stride=stride) | {"rollout": str(out / f"{stem}.npz")}


def plot_navigation(report: dict, flights: dict, fields: dict, path: Path, examples: int = 2) -> Path:
    """Success / collision / out-of-bounds / timeout rates per density and simulator (bars, with the
    success bar and 95 % CI), and the first ``examples`` fields of each density from above with each
    simulator's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Polygon

    sims, densities = report["sims"], report["num_obstacles"]
    examples = min(examples, report["num_fields"])
    fig, axes = plt.subplots(1, 1 + examples * len(densities), figsize=(4.6 * (1 + examples * len(densities)), 4.8),
                             squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / len(sims)
    colours = {"success": "tab:green", "collision": "tab:red", "out_of_bounds": "tab:purple", "timeout": "tab:gray"}
    for j, name in enumerate(sims):
        for d, n_obs in enumerate(densities):
            r = report["results"][name][str(n_obs)]
            x = d + (j - (len(sims) - 1) / 2) * width
            bottom = 0.0
            for outcome in OUTCOMES:
                value = r["success_rate"] if outcome == "success" else r[f"{outcome}_rate"]
                ax.bar(x, value, width * 0.9, bottom=bottom, color=colours[outcome], edgecolor=SIM_COLOURS[name],
                       linewidth=1.5, label=outcome if (j, d) == (0, 0) else None)
                bottom += value
            lo, hi = r["success_ci95"]
            ax.errorbar(x, r["success_rate"], yerr=[[r["success_rate"] - lo], [hi - r["success_rate"]]], color="k",
                        capsize=3)
            ax.text(x, 1.02, name, ha="center", fontsize=7, rotation=90, va="bottom")
            if r["bar"] is not None:
                ax.hlines(r["bar"], x - width / 2, x + width / 2, colors="k", linestyles="--")
    ax.set(xticks=range(len(densities)), xticklabels=[f"{n} obstacles" for n in densities], ylim=(0, 1.25),
           ylabel=f"fraction of {report['num_fields']} fields", title="outcome per density (dashed: bar)")
    ax.legend(fontsize=7, loc="lower right")
    col = 1
    for n_obs in densities:
        env, field = fields[n_obs]
        for i in range(examples):
            ax = axes[0, col]
            col += 1
            rows = field_rows(field, i)
            for x, y, _, _, r in rows["cylinders"]:
                ax.add_patch(Circle((x, y), r, color="0.35"))
            for x, y, _, r in rows["spheres"]:
                ax.add_patch(Circle((x, y), r, color="0.55"))
            for x, y, _, hx, hy, _, yaw in rows["boxes"]:
                c, s = math.cos(yaw), math.sin(yaw)
                ax.add_patch(Polygon([(x + c * a - s * b, y + s * a + c * b) for a, b in
                                      ((hx, hy), (-hx, hy), (-hx, -hy), (hx, -hy))], color="0.3"))
            goal = env.goal_w[i].tolist()
            ax.add_patch(Circle(goal[:2], env.cfg.success_tol_m, fill=False, color="tab:red"))
            for name in sims:
                fl = flights[name][n_obs]
                p = fl["pos_w"][:fl["ticks"][i], i]
                ax.plot(p[:, 0], p[:, 1], color=SIM_COLOURS[name], lw=1.5,
                        label=f"{name}: {OUTCOMES[fl['outcome'][i]]} {fl['time_s'][i]:.1f} s")
            start = flights[sims[0]][n_obs]["pos_w"][0, i]
            ax.plot(start[0], start[1], "o", color="tab:green")
            ax.plot(goal[0], goal[1], "x", color="tab:red")
            ax.set(aspect="equal", title=f"{n_obs} obstacles, field {i} (from above)", xlabel="x [m]", ylabel="y [m]")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{report['policy']}: navigation over {report['num_fields']} unseen fields "
                 f"(generator seed 2^32 + {report['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def cli_eval(policy_dirs: list[str], out: Path, sim: str, num_fields: int | None, seed: int | None, videos: int | None,
             other_flags: dict, prepare_out=None) -> int:
    """`tether eval --policy DIR` for a navigate policy (tether_app/cli.py routes here once it has checked
    the policy folders and --out): prints one line per simulator and density, writes report.json,
    eval_navigate.png and the videos into ``out``; exit 3 when a bar is missed. ``other_flags``: the
    hover-evaluation flags the user gave (refused: they mean nothing here); ``prepare_out()`` runs once the
    arguments are checked (the CLI's --force clean-up of ``out``)."""
    from tether.errors import EXIT_ACCEPTANCE, UserError

    given = [flag for flag, value in other_flags.items() if value]
    if given:
        raise UserError(f"{', '.join(given)} judge hovering; a navigate policy is judged over obstacle fields: "
                        "drop them (use --fields, --seed, --video, --sim)")
    if len(policy_dirs) != 1:
        raise UserError(f"a navigate evaluation takes one --policy folder, got {len(policy_dirs)}; run one per policy")
    num_fields = 100 if num_fields is None else num_fields
    videos = 0 if videos is None else videos
    if num_fields < 1 or not 0 <= videos <= num_fields:
        raise UserError(f"--fields must be >= 1 and --video in 0..--fields, got {num_fields} and {videos}")
    if prepare_out is not None:
        prepare_out()
    try:
        report = evaluate_navigation(policy_dirs[0], num_fields=num_fields, sim=sim, seed=0 if seed is None else seed,
                                     out=out, videos=videos)
    except (ValueError, FileExistsError) as e:
        raise UserError(f"{policy_dirs[0]}: {str(e).splitlines()[0]}") from e
    for name in report["sims"]:
        for n_obs in report["num_obstacles"]:
            print(f"{policy_dirs[0]} {summary_line(report, name, n_obs)}")
    if "agreement" in report:
        print("same outcome in both simulators: " + ", ".join(f"{v:.0%} at {n} obstacles"
                                                             for n, v in report["agreement"].items()))
    print(f"navigation bars (>= 90 % at 16, >= 80 % at 32 obstacles): {'PASS' if report['passed'] else 'FAIL'}")
    videos_line = f"   videos: {', '.join(v['path'] for v in report['videos'])}" if report["videos"] else ""
    print(f"report: {out / 'report.json'}   plot: {report['plot']}{videos_line}")
    return 0 if report["passed"] else EXIT_ACCEPTANCE
