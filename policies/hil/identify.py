"""The disturbance behind the interventions, identified from the logged flight alone.

Candidate causes, each a group of parameters the training simulator and the twin can both apply:
  * ``rotor_gains``  a thrust (and reaction-torque) multiplier per rotor: a weak motor, a chipped prop;
  * ``force``        a steady external force in the world frame [N]: a steady wind, a tether;
  * ``mass``         added mass [kg] (negative: lighter than modelled);
  * ``com``          a centre-of-mass offset in the body x-y plane [m]: an off-centre payload. Near hover
                     its torque (-r_y T, r_x T) is proportional to the thrust, and so is a differential
                     of rotor gains: the simulator applies it as the equivalent gains (``com_gains``).
A free external torque is not a group of its own: at hover thrust it is the torque of a CoM offset.

Given the logged states and executed commands, the simulator (sim.quadrotor.dynamics, with the
firmware's rate controller for CTBR policies) predicts each short window of flight from its logged start;
every subset of the groups is fitted by damped Gauss-Newton (finite-difference Jacobians, all probes in
one batched rollout), and the model the data support is the one with the lowest BIC (the windows'
steps are correlated, so a window counts once per channel): ten episodes cannot make a ten-parameter
model look better than a three-parameter one by fitting noise. Uncertainties come from a bootstrap over
episodes (the least-squares covariance is optimistic: windows share the vehicle's slow errors).

What the chosen model leaves: a flexible reference fit, an external force and torque constant over each
``segment_s`` of each episode (a slowly varying wrench), shows how much of the nominal residual a model
of the same kind could still explain. When that share is large, or the reference beats the chosen model
on BIC, the logs show something the model does not capture, and ``predictable`` is False: a twin built
from the estimate cannot predict how a policy will fly (policies.hil.finetune says so and does not use it).

Rotor speeds are not logged: each window starts with the motors at the speed the previous command asks
for (steady state), which is why windows are short.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch

from policies.hil.dataset import StepLog
from sim.quadrotor import dynamics
from sim.quadrotor.presets import GRAVITY
from sim.randomization import RandomizationCfg
from tether.actions import allocation_matrix

GROUPS = ("rotor_gains", "force", "mass", "com")
MAX_UNEXPLAINED_SHARE = 0.10
"""share of the nominal residual a slowly varying wrench explains beyond the chosen model, above which the
model is declared unable to predict the flight"""


@dataclasses.dataclass(frozen=True)
class DisturbanceEstimate:
    model: tuple[str, ...]
    """the groups the data support (BIC), e.g. ('force',); () is the nominal vehicle"""
    gains: tuple[float, ...]
    """thrust and reaction-torque multiplier per rotor, motor order (1: as modelled, or not in the model)"""
    gains_sigma: tuple[float, ...]
    force_w: tuple[float, float, float]
    """steady external force, world frame [N]"""
    force_sigma_n: tuple[float, float, float]
    added_mass_kg: float
    """mass beyond the model's [kg]"""
    added_mass_sigma_kg: float
    com_offset_b: tuple[float, float, float]
    """centre-of-mass offset, body frame (z not identifiable at hover: 0) [m]"""
    com_sigma_m: tuple[float, float, float]
    explained: dict
    """group -> share of the nominal residual (sum of squares) it explains within the chosen model (drop
    it and refit: what is lost); groups outside the model: what adding it would explain"""
    explained_total: float
    """share of the nominal residual the chosen model explains"""
    unexplained_share: float
    """share of the nominal residual a slowly varying wrench (per segment) explains beyond the model"""
    predictable: bool
    """the model explains what the logs show well enough to predict flights on a twin built from it"""
    why: str
    """one sentence: why (not) predictable"""
    candidates: list
    """every model fitted: groups, parameters, BIC, residual share left"""
    residual_rms_nominal: float
    """RMS of the whitened prediction error of the nominal model (1 by construction)"""
    residual_rms: float
    """the same with the chosen model"""
    windows: int
    window_steps: int
    episodes: int
    mass_kg: float
    """the model's (nominal) mass [kg], for reading force as a share of the weight"""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def weakest(self) -> tuple[int, float]:
        i = int(np.argmin(self.gains))
        return i, self.gains[i]

    @property
    def sigma(self) -> tuple[float, ...]:
        """standard error of each rotor gain (the rotor-gain estimate's name for it)"""
        return self.gains_sigma

    def describe(self) -> str:
        parts = []
        if "rotor_gains" in self.model:
            parts.append(f"rotor gains {np.round(self.gains, 3).tolist()}")
        if "force" in self.model:
            f = np.asarray(self.force_w)
            parts.append(f"force {np.round(f, 4).tolist()} N ({np.linalg.norm(f) / (self.mass_kg * GRAVITY):.0%} "
                         "of the weight)")
        if "mass" in self.model:
            parts.append(f"added mass {self.added_mass_kg * 1000:.1f} g")
        if "com" in self.model:
            parts.append(f"CoM offset {np.round(np.asarray(self.com_offset_b) * 100, 2).tolist()} cm")
        return ", ".join(parts) or "nominal vehicle (no disturbance the data support)"

    def effective_gains(self, preset) -> np.ndarray:
        """[R] rotor gains with the CoM offset folded in (what the simulator applies)."""
        return np.asarray(self.gains) * (1.0 + com_gains(preset, self.com_offset_b[:2]))

    def twin_disturbances(self, preset) -> dict:
        """hardware.twin.TwinConfig fields that apply this disturbance: rotor_gain, a steady wind_gust
        (the force for the whole flight) and a payload (added mass at the CoM offset; a lighter vehicle
        or an offset without added mass: as equivalent rotor gains)."""
        from hardware.twin_config import Payload, WindGust

        m = preset.mass_kg
        gains = np.asarray(self.gains, dtype=np.float64)
        payload = None
        dm, com = self.added_mass_kg, np.asarray(self.com_offset_b[:2])
        if dm > 0.01 * m:
            pos = np.append(com * (m + dm) / dm, 0.0)
            payload = Payload(mass_kg=float(dm), pos_b=tuple(float(x) for x in pos))
        else:
            gains = gains * (1.0 + com_gains(preset, com)) * (m / (m + dm) if dm < 0 else 1.0)
        wind = None
        if np.any(np.asarray(self.force_w) != 0):
            wind = WindGust(start_s=0.0, duration_s=1e9, force_w=tuple(float(x) for x in self.force_w))
        return {"rotor_gain": tuple(float(g) for g in gains), "wind_gust": wind, "payload": payload,
                "weak_motor": None}


# Backwards-compatible name: the rotor-gain-only model is one of the candidates.
RotorGainEstimate = DisturbanceEstimate


def com_gains(preset, com_xy_b) -> np.ndarray:
    """[R] relative rotor-gain changes whose torque at equal rotor thrusts is a CoM offset's (-r_y T, r_x T)
    with no change of collective thrust or yaw torque."""
    a = allocation_matrix(preset.rotor_pos_b, preset.rotor_spin, preset.km_nm_per_rpm2 / preset.kf_n_per_rpm2)
    n = a.shape[1]
    rx, ry = float(com_xy_b[0]), float(com_xy_b[1])
    return np.linalg.pinv(a) @ np.array([0.0, -n * ry, n * rx, 0.0])


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


class _Predictor:
    """Window predictions of the simulator for rows of physical parameters (one row per candidate)."""

    def __init__(self, step: StepLog, starts: np.ndarray, task_cfg, window: int):
        from sim.tasks import make_env, task_name_of

        self.vehicle = dataclasses.replace(task_cfg.vehicle, rotor_gain=None)
        self.n_rot = len(self.vehicle.rotor_spin)
        self.m, self.window = len(starts), window
        self.dt, self.substeps = task_cfg.control_dt, task_cfg.substeps
        self.env = make_env(task_name_of(task_cfg),
                            dataclasses.replace(task_cfg, randomization=RandomizationCfg.nominal(),
                                                vehicle_params=self.vehicle),
                            num_envs=self.m, physics="eager")
        f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
        idx = starts[None, :] + np.arange(window + 1)[:, None]  # [W+1, M]
        lin_vel, ang_vel = f(step.lin_vel_w[idx]), f(step.ang_vel_b[idx])  # [W+1, M, 3]
        self.actions = f(step.executed[idx[:-1]])  # [W, M, A]
        self.target = torch.cat([lin_vel[1:], ang_vel[1:]], dim=-1)  # [W, M, 6]
        prev = f(step.prev_executed[starts, -1])  # [M, A] the command in force before the window
        start = dynamics.QuadState(f(step.pos_w[starts]), f(step.quat_wxyz[starts]), lin_vel[0], ang_vel[0],
                                   torch.zeros(self.m, self.n_rot))
        cmd, ctbr = self.env.action_to_command(prev)
        if ctbr is not None:
            cmd = dynamics.ctbr_to_rotor_cmd(ctbr.thrust_n, ctbr.rates_b, start.ang_vel_b, ctbr.ctrl)
        self.start = start._replace(rotor_rpm=cmd.clamp(0.0, 1.0) * self.env.params.max_rpm[:1])
        self.com_map = np.stack([com_gains(self.vehicle, e) for e in np.eye(2)], axis=1)  # [R, 2] per metre

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """theta [B, R + 6] (gains, force_w, added mass, com_xy) -> [B, M, W, 6] prediction errors."""
        b, m, r = len(theta), self.m, self.n_rot
        gains = theta[:, :r] * (1.0 + theta[:, r + 4:r + 6] @ self.com_map.T)
        rep = lambda x: x.repeat(b, *([1] * (x.dim() - 1)))  # noqa: E731  [M, ...] -> [B*M, ...]
        col = lambda x: torch.as_tensor(np.repeat(x, m, axis=0), dtype=torch.float32)  # noqa: E731
        p = self.env.params
        params = p._replace(rotor_gain=col(gains), mass=col(self.vehicle.mass_kg + theta[:, r + 3:r + 4]),
                            **{k: getattr(p, k)[:1].expand(b * m, -1) for k in
                               ("inertia", "kf", "km", "max_rpm", "tau_up", "tau_down", "drag")})
        force = col(theta[:, r:r + 3])
        s = dynamics.QuadState(*(rep(x) for x in self.start))
        out = []
        ctrl_env = self.env
        with torch.no_grad():
            for j in range(self.window):
                rotor_cmd, sp = ctrl_env.action_to_command(rep(self.actions[j]))
                if sp is not None:
                    sp = sp._replace(rate_div=None)
                s = dynamics.step(s, rotor_cmd, params, self.dt, self.substeps, force, sp)
                out.append(torch.cat([s.lin_vel_w, s.ang_vel_b], dim=-1))
        pred = torch.stack(out)  # [W, B*M, 6]
        err = (pred - self.target.repeat(1, b, 1)).reshape(self.window, b, m, 6).permute(1, 2, 0, 3)
        return err.double().numpy()


def _fit(predict: _Predictor, dims: list[int], unit: np.ndarray, scale: np.ndarray, iterations: int,
         delta: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped Gauss-Newton over ``dims`` of the parameter vector (normalized by ``unit``); returns
    (theta, whitened residual [M, W, 6] at theta, whitened Jacobian [M*W*6, k] at theta)."""
    n_par = len(unit)
    theta = np.zeros(n_par)
    theta[:predict.n_rot] = 1.0
    lo = np.full(n_par, -np.inf)
    lo[:predict.n_rot] = 0.05
    hi = np.full(n_par, np.inf)
    hi[:predict.n_rot] = 2.0

    def probes(th):
        rows = [th] + [th + delta * unit[d] * np.eye(n_par)[d] for d in dims]
        return np.vstack(rows)

    r = predict(probes(theta)) / scale
    for it in range(iterations + 1):
        r0 = r[0].reshape(-1)
        jac = np.stack([(r[1 + i].reshape(-1) - r0) / delta for i in range(len(dims))], axis=1) if dims else \
            np.zeros((len(r0), 0))
        if it == iterations or not dims:
            break
        jtj = jac.T @ jac
        step_ = np.linalg.solve(jtj + 1e-6 * np.trace(jtj) * np.eye(len(dims)), -jac.T @ r0)
        theta[dims] = np.clip(theta[dims] + step_ * unit[dims], lo[dims], hi[dims])
        r = predict(probes(theta)) / scale
        if np.max(np.abs(step_)) < 1e-3:
            r0 = r[0].reshape(-1)
            jac = np.stack([(r[1 + i].reshape(-1) - r0) / delta for i in range(len(dims))], axis=1)
            break
    return theta, r[0], jac


def _segment_wrench_rss(res: np.ndarray, segment: np.ndarray) -> tuple[float, int]:
    """RSS left after a force and torque constant over each segment (a per-channel ramp j*dt in each
    window's prediction error), and its parameter count."""
    w = res.shape[1]
    ramp = np.arange(1, w + 1, dtype=np.float64)  # the velocity error a constant wrench builds up
    proj = np.einsum("mwc,w->mc", res, ramp)  # [M, 6]
    rss = float(np.sum(res ** 2))
    segs = np.unique(segment)
    for s in segs:
        rss -= float(np.sum(proj[segment == s].sum(0) ** 2) / (np.sum(segment == s) * ramp @ ramp))
    return rss, 6 * len(segs)


def estimate_disturbance(step: StepLog, task_cfg, window: int = 3, max_windows: int = 1200, iterations: int = 6,
                         segment_s: float = 2.0, bootstrap: int = 200, groups: tuple[str, ...] = GROUPS,
                         seed: int = 0) -> DisturbanceEstimate:
    """The disturbance model (a subset of ``groups``) that best explains ``step`` (logged flight) under the
    task's vehicle model, with uncertainties and what it leaves unexplained.

    task_cfg: the policy's training config (policies.evaluation.task_cfg_from_contract): vehicle,
    control rate, substeps, action space and rate-controller gains, i.e. how a logged action moves the
    vehicle. Raises ValueError when the logs hold too few usable windows.
    """
    dt = task_cfg.control_dt
    starts = _windows(step, dt, window, max_windows, seed)
    if len(starts) < 50:
        raise ValueError(f"only {len(starts)} usable {window}-step windows in the logs (need 50): too short, or "
                         "the ticks are not one control period apart")
    predict = _Predictor(step, starts, task_cfg, window)
    r_n, mass = predict.n_rot, predict.vehicle.mass_kg
    index = {"rotor_gains": list(range(r_n)), "force": [r_n, r_n + 1, r_n + 2], "mass": [r_n + 3],
             "com": [r_n + 4, r_n + 5]}
    unit = np.array([0.1] * r_n + [0.05 * mass * GRAVITY] * 3 + [0.1 * mass] + [0.01] * 2)
    theta0 = np.concatenate([np.ones(r_n), np.zeros(6)])
    res0 = predict(theta0[None])[0]
    scale = np.sqrt(np.mean(res0 ** 2, axis=(0, 1))) + 1e-9  # per channel, fixed at the nominal model
    rss0 = float(np.sum((res0 / scale) ** 2))
    n_rows = res0.size
    n_eff = n_rows / window  # a window's steps share its start: one independent error per window and channel

    def bic(rss: float, k: int) -> float:
        return n_eff * np.log(rss / n_rows) + k * np.log(n_eff)

    fits = {}
    for k in range(len(groups) + 1):
        for model in itertools.combinations(groups, k):
            dims = [d for g in model for d in index[g]]
            theta, res, jac = _fit(predict, dims, unit, scale, iterations)
            rss = float(np.sum(res ** 2))
            fits[model] = {"theta": theta, "res": res, "jac": jac, "dims": dims, "rss": rss,
                           "bic": bic(rss, len(dims))}
    best = min(fits, key=lambda mdl: fits[mdl]["bic"])
    fit = fits[best]
    ep = step.episode[starts]
    t_in_ep = step.t_s[starts] - np.array([step.t_s[step.episode == e].min() for e in ep])
    segment = ep * 1000 + np.floor(t_in_ep / segment_s).astype(int)
    rss_flex, k_flex = _segment_wrench_rss(fit["res"], segment)
    bic_flex = bic(rss_flex, len(fit["dims"]) + k_flex)
    unexplained = max(0.0, (fit["rss"] - rss_flex) / rss0)

    # bootstrap over episodes: one linearized refit at the optimum per resample
    theta, dims, jac = fit["theta"], fit["dims"], fit["jac"]
    sigma = np.zeros(len(theta))
    episodes = np.unique(ep)
    if dims:
        rows_ep = np.repeat(ep, window * 6)
        r_flat = fit["res"].reshape(-1)
        rng = np.random.default_rng(seed)
        draws = []
        if len(episodes) >= 3:
            for _ in range(bootstrap):
                pick = rng.choice(episodes, len(episodes), replace=True)
                wgt = np.zeros(len(r_flat))
                for e in pick:
                    wgt += rows_ep == e
                jw = jac * wgt[:, None]
                jtj = jac.T @ jw
                draws.append(np.linalg.solve(jtj + 1e-9 * np.trace(jtj) * np.eye(len(dims)), -jw.T @ r_flat))
            sigma[dims] = np.std(np.asarray(draws), axis=0) * unit[dims]
        else:  # too few episodes to resample: the least-squares covariance (optimistic)
            cov = np.linalg.pinv(jac.T @ jac) * fit["rss"] / max(1, n_eff - len(dims))
            sigma[dims] = np.sqrt(np.diag(cov)) * unit[dims]

    explained = {}
    for g in groups:  # drop a group of the model, or add one it lacks, and refit: the change of the residual
        alt = fits[tuple(x for x in groups if (x in best) != (x == g))]
        explained[g] = float(abs(alt["rss"] - fit["rss"]) / rss0)
    beats = bic_flex < fit["bic"]
    predictable = unexplained <= MAX_UNEXPLAINED_SHARE and not beats
    if predictable:
        why = (f"the model explains {1 - fit['rss'] / rss0:.0%} of the nominal residual; a slowly varying wrench "
               f"would explain only {unexplained:.0%} more")
    else:
        why = (f"the logs show a disturbance the model does not capture: a wrench varying every {segment_s:g} s "
               f"explains {unexplained:.0%} more of the nominal residual than the chosen model "
               f"({'favoured' if beats else 'not favoured'} by BIC); a twin built from it cannot predict the flight")
    th = theta
    return DisturbanceEstimate(
        model=tuple(best), gains=tuple(float(x) for x in th[:r_n]), gains_sigma=tuple(float(x) for x in sigma[:r_n]),
        force_w=tuple(float(x) for x in th[r_n:r_n + 3]), force_sigma_n=tuple(float(x) for x in sigma[r_n:r_n + 3]),
        added_mass_kg=float(th[r_n + 3]), added_mass_sigma_kg=float(sigma[r_n + 3]),
        com_offset_b=(float(th[r_n + 4]), float(th[r_n + 5]), 0.0),
        com_sigma_m=(float(sigma[r_n + 4]), float(sigma[r_n + 5]), 0.0),
        explained=explained, explained_total=float(1 - fit["rss"] / rss0), unexplained_share=float(unexplained),
        predictable=bool(predictable), why=why,
        candidates=[{"model": list(mdl), "bic": f["bic"], "residual_share": f["rss"] / rss0,
                     "params": len(f["dims"])} for mdl, f in sorted(fits.items(), key=lambda kv: kv[1]["bic"])]
        + [{"model": list(best) + [f"wrench per {segment_s:g} s"], "bic": bic_flex, "residual_share": rss_flex / rss0,
            "params": len(fit["dims"]) + k_flex}],
        residual_rms_nominal=float(np.sqrt(rss0 / n_rows)), residual_rms=float(np.sqrt(fit["rss"] / n_rows)),
        windows=len(starts), window_steps=window, episodes=len(episodes), mass_kg=float(mass))


def estimate_rotor_gains(step: StepLog, task_cfg, window: int = 3, max_windows: int = 1500, iterations: int = 8,
                         seed: int = 0) -> DisturbanceEstimate:
    """The rotor-gain-only model (the other groups left out), as before the disturbance model."""
    return estimate_disturbance(step, task_cfg, window, max_windows, iterations, groups=("rotor_gains",),
                                seed=seed)
