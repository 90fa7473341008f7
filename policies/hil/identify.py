"""The perturbation behind the interventions, estimated from the logs: a thrust gain per rotor.

A weakened motor, a chipped propeller or a payload that loads one arm all show up as rotors that give
less (or more) thrust and reaction torque than the model says. Given the logged states and the executed
commands, the simulator (sim.quadrotor.dynamics, with the firmware's rate controller for CTBR policies)
predicts each short window of flight from its logged start; the gains are the per-rotor multipliers
(``QuadParams.rotor_gain``) that make those predictions match the logged velocities and body rates,
found by damped Gauss-Newton with finite-difference Jacobians (all candidates in one batched rollout).

The estimate sets up the twin that validates a fine-tuned policy (no knowledge of the true
perturbation needed) and goes into the child's provenance. Rotor speeds are not logged: each window
starts with the motors at the speed the previous command asks for (steady state), which is why windows
are short.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from policies.hil.dataset import StepLog
from sim.quadrotor import dynamics
from sim.randomization import RandomizationCfg


@dataclasses.dataclass(frozen=True)
class RotorGainEstimate:
    gains: tuple[float, ...]
    """thrust and reaction-torque multiplier per rotor, motor order (1 = as modelled)"""
    sigma: tuple[float, ...]
    """standard error of each gain (from the fit's residuals; windows overlap in time, so optimistic)"""
    residual_rms_nominal: float
    """RMS of the whitened prediction error with every gain at 1"""
    residual_rms: float
    """the same with the estimated gains (lower: the estimate explains the flight better)"""
    windows: int
    window_steps: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def weakest(self) -> tuple[int, float]:
        i = int(np.argmin(self.gains))
        return i, self.gains[i]


def _windows(step: StepLog, dt: float, w: int, max_windows: int, seed: int) -> np.ndarray:
    """Start indices k with steps k..k+w in one episode, one control period apart (+-50 %)."""
    n = len(step)
    if n <= w:
        return np.zeros(0, dtype=int)
    ok = np.ones(n - w, dtype=bool)
    for j in range(1, w + 1):
        gap = step.t_s[j:n - w + j] - step.t_s[j - 1:n - w + j - 1]
        ok &= (step.episode[j:n - w + j] == step.episode[:n - w]) & (gap > 0.5 * dt) & (gap < 1.5 * dt)
    ok &= np.isfinite(step.executed[:n - w]).all(1)
    starts = np.nonzero(ok)[0]
    if len(starts) > max_windows:
        starts = np.sort(np.random.default_rng(seed).choice(starts, max_windows, replace=False))
    return starts


def estimate_rotor_gains(step: StepLog, task_cfg, window: int = 3, max_windows: int = 1500, iterations: int = 8,
                         delta: float = 0.02, seed: int = 0) -> RotorGainEstimate:
    """Per-rotor gains that best explain ``step`` (logged flight) under the task's vehicle model.

    task_cfg: the policy's training config (policies.evaluation.task_cfg_from_contract): vehicle,
    control rate, substeps, action space and rate-controller gains, i.e. how a logged action moves the
    vehicle. Raises ValueError when the logs hold too few usable windows.
    """
    from sim.tasks import make_env, task_name_of

    dt, substeps = task_cfg.control_dt, task_cfg.substeps
    starts = _windows(step, dt, window, max_windows, seed)
    if len(starts) < 50:
        raise ValueError(f"only {len(starts)} usable {window}-step windows in the logs (need 50): too short, or "
                         "the ticks are not one control period apart")
    vehicle = dataclasses.replace(task_cfg.vehicle, rotor_gain=None)
    n_rot = len(vehicle.rotor_spin)
    m = len(starts)
    blocks = n_rot + 1  # the current gains and one finite-difference probe per rotor
    env = make_env(task_name_of(task_cfg),
                   dataclasses.replace(task_cfg, num_envs=m * blocks, randomization=RandomizationCfg.nominal(),
                                       vehicle_params=vehicle, compile=False))
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    idx = starts[None, :] + np.arange(window + 1)[:, None]  # [W+1, M]
    lin_vel, ang_vel = f(step.lin_vel_w[idx]), f(step.ang_vel_b[idx])  # [W+1, M, 3]
    actions = f(step.executed[idx[:-1]])  # [W, M, A]
    prev = f(step.prev_executed[starts, -1])  # [M, A] the command in force before the window
    target = torch.cat([lin_vel[1:], ang_vel[1:]], dim=-1)  # [W, M, 6]
    rep = lambda x: x.repeat(blocks, *([1] * (x.dim() - 1)))  # noqa: E731  [M, ...] -> [B*M, ...]

    start = dynamics.QuadState(rep(f(step.pos_w[starts])), rep(f(step.quat_wxyz[starts])), rep(lin_vel[0]),
                               rep(ang_vel[0]), torch.zeros(m * blocks, n_rot))
    cmd, ctbr = env.action_to_command(rep(prev))
    if ctbr is not None:
        cmd = dynamics.ctbr_to_rotor_cmd(ctbr.thrust_n, ctbr.rates_b, start.ang_vel_b, ctbr.ctrl)
    start = start._replace(rotor_rpm=cmd.clamp(0.0, 1.0) * env.params.max_rpm)

    def residuals(gains: np.ndarray) -> np.ndarray:
        """[B, M*W*6] prediction errors, one row per candidate gain vector (rows of ``gains``)."""
        g = torch.as_tensor(np.repeat(gains, m, axis=0), dtype=torch.float32)
        params = env.params._replace(rotor_gain=g)
        s, out = start, []
        with torch.no_grad():
            for j in range(window):
                rotor_cmd, sp = env.action_to_command(rep(actions[j]))
                s = dynamics.step(s, rotor_cmd, params, dt, substeps, None, sp)
                out.append(torch.cat([s.lin_vel_w, s.ang_vel_b], dim=-1))
        pred = torch.stack(out)  # [W, B*M, 6]
        err = (pred - target.repeat(1, blocks, 1)).reshape(window, blocks, m, 6).permute(1, 2, 0, 3)
        return err.reshape(blocks, m * window, 6).double().numpy()

    theta = np.ones(n_rot)
    probes = lambda th: np.vstack([th, th + delta * np.eye(n_rot)])  # noqa: E731
    r = residuals(probes(theta))
    scale = np.sqrt(np.mean(r[0] ** 2, axis=0)) + 1e-9  # per channel, fixed at the nominal model
    rms_nominal = float(np.sqrt(np.mean((r[0] / scale) ** 2)))
    for _ in range(iterations):
        rw = (r / scale).reshape(blocks, -1)
        jac = ((rw[1:] - rw[0]) / delta).T  # [K, R]
        lam = 1e-6 * np.trace(jac.T @ jac)
        step_ = np.linalg.solve(jac.T @ jac + lam * np.eye(n_rot), -jac.T @ rw[0])
        theta = np.clip(theta + step_, 0.05, 2.0)
        r = residuals(probes(theta))
        if np.max(np.abs(step_)) < 1e-4:
            break
    rw = (r / scale).reshape(blocks, -1)
    jac = ((rw[1:] - rw[0]) / delta).T
    dof = max(1, rw.shape[1] - n_rot)
    cov = np.linalg.pinv(jac.T @ jac) * float(rw[0] @ rw[0]) / dof
    return RotorGainEstimate(gains=tuple(float(x) for x in theta), sigma=tuple(float(x) for x in np.sqrt(np.diag(cov))),
                             residual_rms_nominal=rms_nominal, residual_rms=float(np.sqrt(np.mean(rw[0] ** 2))),
                             windows=m, window_steps=window)

