"""The disturbance behind the interventions, identified from the logged flight alone.

Candidate causes, each a group of parameters the training simulator and the twin can both apply:
  * ``rotor_gains``  a thrust (and reaction-torque) multiplier per rotor: a weak motor, a chipped prop;
  * ``force``        a steady horizontal external force in the world frame [N]: a steady wind, a tether
                     (a vertical one is, at hover, the same as a change of mass or thrust: ``mass``);
  * ``mass``         added mass [kg] at the centre (negative: lighter than modelled);
  * ``com``          where that mass sits, in the body x-y plane [m] (only with ``mass``): an off-centre
                     point payload, as the twin models one. It shifts the centre of mass (CoM) by
                     dm p / (m + dm) (the simulator sees the rotors from there: their torque about the
                     new CoM is exact) and adds its parallel-axis inertia.
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
of the same kind could still explain. When that share is large (over MAX_UNEXPLAINED_SHARE), the logs
show something the model does not capture, and ``predictable`` is False: a twin built
from the estimate cannot predict how a policy will fly (policies.hil.finetune says so and does not use it).

Rotor speeds are not logged: each window starts with the motors at the speed the previous command asks
for (steady state), which is why windows are short.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from policies.hil.dataset import StepLog
from sim.quadrotor import dynamics
from sim.quadrotor.presets import GRAVITY
from sim.randomization import RandomizationCfg

GROUPS = ("rotor_gains", "force", "mass", "com")
CHANNEL_FLOOR = (0.005, 0.05)
"""prediction error of a window below which the logs say nothing: linear velocity [m/s], body rate [rad/s]"""
MIN_GROUP_SHARE = 0.02
"""a group enters the model only if it explains at least this share of the nominal residual"""
MAX_UNEXPLAINED_SHARE = 0.10
"""share of the nominal residual a slowly varying wrench explains beyond the chosen model, above which the
model is declared unable to predict the flight"""


@dataclasses.dataclass(frozen=True)
class DisturbanceEstimate:
    """The disturbance identified from logged flight; a group outside ``model`` keeps its nominal value
    (gains 1, no force, no added mass) and a zero sigma."""

    model: tuple[str, ...]
    """the groups the data support (BIC), e.g. ('force',); () is the nominal vehicle"""
    gains: tuple[float, ...]
    """thrust and reaction-torque multiplier per rotor, motor order (1: as modelled, or not in the model)"""
    gains_sigma: tuple[float, ...]
    """standard error of each gain (bootstrap over episodes) [1]"""
    force_w: tuple[float, float, float]
    """steady external force, world frame, horizontal (z: 0) [N]"""
    force_sigma_n: tuple[float, float, float]
    """standard error of each force component [N]"""
    added_mass_kg: float
    """mass beyond the model's [kg]"""
    added_mass_sigma_kg: float
    """its standard error [kg]"""
    payload_pos_b: tuple[float, float, float]
    """where the added mass sits, body frame (z not identifiable at hover: 0) [m]"""
    payload_pos_sigma_m: tuple[float, float, float]
    """standard error of each coordinate [m]"""
    com_offset_b: tuple[float, float, float]
    """the centre-of-mass offset that follows, dm p / (m + dm) [m]"""
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
    """every model the selection fitted (groups, parameter count, BIC, residual share left), then the
    per-segment wrench reference"""
    residual_rms_nominal: float
    """RMS of the whitened prediction error of the nominal model (1 by construction)"""
    residual_rms: float
    """the same with the chosen model"""
    windows: int
    """prediction windows fitted [1]"""
    window_steps: int
    """control steps predicted per window [1]"""
    episodes: int
    """episodes the windows come from [1]"""
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

    def sim_params(self, preset) -> dict:
        """What the training simulator applies: rotor_gain [R], mass_kg, inertia_kg_m2 [3] (about the new
        CoM), com_offset_b [2] m (the rotors are seen from it) and force_w [3] N."""
        mass, inertia, com = payload_effect(preset, np.array([self.added_mass_kg]), np.array([self.payload_pos_b[:2]]))
        return {"rotor_gain": np.asarray(self.gains, dtype=np.float64), "mass_kg": float(mass[0]),
                "inertia_kg_m2": inertia[0], "com_offset_b": com[0], "force_w": np.asarray(self.force_w, dtype=np.float64)}

    def twin_disturbances(self, preset) -> dict:
        """hardware.twin.TwinConfig fields that apply this disturbance: rotor_gain, a steady wind_gust
        (the force for the whole flight) and a payload (the added mass where it sits; a lighter vehicle:
        the same thrust-to-weight by rotor gains)."""
        from hardware.twin_config import Payload, WindGust

        m = preset.mass_kg
        gains = np.asarray(self.gains, dtype=np.float64)
        payload = None
        dm = self.added_mass_kg
        if dm > 0:
            payload = Payload(mass_kg=float(dm), pos_b=tuple(float(x) for x in self.payload_pos_b))
        elif dm < 0:  # a payload cannot weigh less than nothing: the same thrust-to-weight by gains
            gains = gains * m / (m + dm)
        wind = None
        if np.any(np.asarray(self.force_w) != 0):
            wind = WindGust(start_s=0.0, duration_s=1e9, force_w=tuple(float(x) for x in self.force_w))
        return {"rotor_gain": tuple(float(g) for g in gains), "wind_gust": wind, "payload": payload,
                "weak_motor": None}


# Backwards-compatible name: the rotor-gain-only model is one of the candidates.
RotorGainEstimate = DisturbanceEstimate


def payload_effect(preset, dm: np.ndarray, pos_xy_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A point mass dm [B] kg at pos_xy_b [B, 2] m on the vehicle: (mass [B] kg, principal inertia [B, 3]
    kg m^2 about the new CoM, CoM offset [B, 2] m); hardware.twin.physics_overrides' model."""
    m = preset.mass_kg
    total = m + dm
    pos = np.concatenate([pos_xy_b, np.zeros((len(dm), 1))], axis=1)
    com = dm[:, None] * pos / np.maximum(total, 1e-6)[:, None]
    inertia = np.tile(np.asarray(preset.inertia_kg_m2, dtype=np.float64), (len(dm), 1))
    for mass, r in ((np.full(len(dm), m), -com), (dm, pos - com)):
        inertia = inertia + mass[:, None] * (np.sum(r * r, axis=1, keepdims=True) - r * r)
    return total, np.maximum(inertia, 1e-9), com[:, :2]


def _windows(step: StepLog, dt: float, w: int, max_windows: int, seed: int, burn_in: int = 0) -> np.ndarray:
    """Start indices k with steps k-burn_in..k+w in one episode whose states are one control period apart
    (+-25 %; the simulator predicts one period per step). Judged on the states' stamps, not the tick
    times: a runner can tick on time with a state one robot period older or newer than the last one's
    successor (its state stream faster than its control rate), and a window over such a step predicts
    the wrong stretch of flight."""
    n = len(step)
    if n <= w + burn_in:
        return np.zeros(0, dtype=int)
    # regular[i]: step i -> i + 1 is one period in one episode; a window reads transitions k-burn_in..k+w-1
    regular = (np.diff(step.episode) == 0) & (np.abs(np.diff(step.state_t_s) - dt) <= 0.25 * dt)
    irregular_before = np.concatenate([[0], np.cumsum(~regular)])
    k = np.arange(burn_in, n - w)
    ok = (irregular_before[k + w] == irregular_before[k - burn_in]) & np.isfinite(step.executed[k]).all(1)
    starts = k[ok]
    if len(starts) > max_windows:
        starts = np.sort(np.random.default_rng(seed).choice(starts, max_windows, replace=False))
    return starts


class _Predictor:
    """Window predictions of the simulator for rows of physical parameters (one row per candidate)."""

    def __init__(self, step: StepLog, starts: np.ndarray, task_cfg, window: int, burn_in: int):
        from sim.tasks import make_env, task_name_of

        self.vehicle = dataclasses.replace(task_cfg.vehicle, rotor_gain=None)
        self.n_rot = len(self.vehicle.rotor_spin)
        self.m, self.window, self.burn_in = len(starts), window, burn_in
        self.dt, self.substeps = task_cfg.control_dt, task_cfg.substeps
        self.env = make_env(task_name_of(task_cfg),
                            dataclasses.replace(task_cfg, randomization=RandomizationCfg.nominal(),
                                                vehicle_params=self.vehicle),
                            num_envs=self.m, physics="eager")
        f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
        idx = starts[None, :] + np.arange(-burn_in, window + 1)[:, None]  # [B+W+1, M]
        lin_vel, ang_vel = f(step.lin_vel_w[idx]), f(step.ang_vel_b[idx])  # [B+W+1, M, 3]
        self.pos, self.quat = f(step.pos_w[idx]), f(step.quat_wxyz[idx])
        self.lin_vel, self.ang_vel = lin_vel, ang_vel
        self.actions = f(step.executed[idx[:-1]])  # [B+W, M, A]
        self.target = torch.cat([lin_vel[burn_in + 1:], ang_vel[burn_in + 1:]], dim=-1)  # [W, M, 6]
        prev = f(step.prev_executed[starts - burn_in, -1])  # [M, A] the command in force before the burn-in
        start = dynamics.QuadState(self.pos[0], self.quat[0], lin_vel[0], ang_vel[0], torch.zeros(self.m, self.n_rot))
        cmd, ctbr = self.env.action_to_command(prev)
        if ctbr is not None:
            cmd = dynamics.ctbr_to_rotor_cmd(ctbr.thrust_n, ctbr.rates_b, start.ang_vel_b, ctbr.ctrl)
        self.start = start._replace(rotor_rpm=cmd.clamp(0.0, 1.0) * self.env.params.max_rpm[:1])

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """theta [B, R + 6] (gains, force_w, added mass, its position xy) -> [B, M, W, 6] prediction errors."""
        r = self.n_rot
        mass, inertia, com = payload_effect(self.vehicle, theta[:, r + 3], theta[:, r + 4:r + 6])
        out = np.zeros((len(theta), self.m, self.window, 6))
        # a CoM offset is the rotors seen from the new CoM: their positions shifted by -com (exact, and
        # shared by a batch, so one batch per distinct offset)
        keys = [tuple(c) for c in np.round(com, 12)]
        for key in dict.fromkeys(keys):
            rows = np.array([k == key for k in keys])
            out[rows] = self._rollout(theta[rows, :r], mass[rows], inertia[rows], theta[rows, r:r + 3],
                                      np.asarray(key))
        return out

    def _rollout(self, gains, mass, inertia, force_w, com_xy) -> np.ndarray:
        b, m = len(gains), self.m
        rep = lambda x: x.repeat(b, *([1] * (x.dim() - 1)))  # noqa: E731  [M, ...] -> [B*M, ...]
        col = lambda x: torch.as_tensor(np.repeat(x, m, axis=0), dtype=torch.float32)  # noqa: E731
        p = self.env.params
        shift = torch.as_tensor(np.append(com_xy, 0.0), dtype=torch.float32)
        params = p._replace(rotor_gain=col(gains), mass=col(mass[:, None]), inertia=col(inertia),
                            rotor_pos_b=p.rotor_pos_b - shift,
                            **{k: getattr(p, k)[:1].expand(b * m, -1) for k in
                               ("kf", "km", "max_rpm", "tau_up", "tau_down", "drag")})
        force = col(force_w)
        s = dynamics.QuadState(*(rep(x) for x in self.start))
        out = []
        with torch.no_grad():
            for j in range(self.burn_in + self.window):
                if j <= self.burn_in:  # burn-in: the logged state, the rotor speeds the commands left
                    s = dynamics.QuadState(rep(self.pos[j]), rep(self.quat[j]), rep(self.lin_vel[j]),
                                           rep(self.ang_vel[j]), s.rotor_rpm)
                rotor_cmd, sp = self.env.action_to_command(rep(self.actions[j]))
                if sp is not None:
                    sp = sp._replace(rate_div=None)
                s = dynamics.step(s, rotor_cmd, params, self.dt, self.substeps, force, sp)
                if j >= self.burn_in:
                    out.append(torch.cat([s.lin_vel_w, s.ang_vel_b], dim=-1))
        pred = torch.stack(out)  # [W, B*M, 6]
        err = (pred - self.target.repeat(1, b, 1)).reshape(self.window, b, m, 6).permute(1, 2, 0, 3)
        return err.double().numpy()


def _fit(predict: _Predictor, dims: list[int], unit: np.ndarray, scale: np.ndarray, iterations: int,
         theta: np.ndarray, lo: np.ndarray, hi: np.ndarray, delta: float = 0.2
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt over ``dims`` of the parameter vector ``theta`` (its start; normalized by
    ``unit``, kept in [lo, hi]); a step that does not lower the residual is refused and the damping raised.
    Returns (theta, whitened residual [M, W, 6] at theta, whitened Jacobian [M*W*6, k] there)."""
    n_par = len(unit)
    theta = theta.copy()

    def with_jac(th):
        r = predict(np.vstack([th] + [th + delta * unit[d] * np.eye(n_par)[d] for d in dims])) / scale
        r0 = r[0].reshape(-1)
        jac = np.stack([(r[1 + i].reshape(-1) - r0) / delta for i in range(len(dims))], axis=1) if dims else \
            np.zeros((len(r0), 0))
        return r[0], jac

    res, jac = with_jac(theta)
    rss = float(np.sum(res ** 2))
    lam = 1e-3
    for _ in range(iterations if dims else 0):
        r0 = res.reshape(-1)
        jtj, g = jac.T @ jac, jac.T @ r0
        moved = False
        for _try in range(4):
            step_ = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-9), -g)
            trial = theta.copy()
            trial[dims] = np.clip(theta[dims] + step_ * unit[dims], lo[dims], hi[dims])
            r_trial = predict(trial[None])[0] / scale
            rss_trial = float(np.sum(r_trial ** 2))
            if np.isfinite(rss_trial) and rss_trial < rss:
                theta, lam, moved = trial, lam / 3.0, True
                break
            lam *= 10.0
        if not moved:
            break
        res, jac = with_jac(theta)
        improvement = rss - float(np.sum(res ** 2))
        rss = float(np.sum(res ** 2))
        if improvement < 1e-5 * rss:
            break
    return theta, res, jac


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


def estimate_disturbance(step: StepLog, task_cfg, window: int = 3, max_windows: int = 1000, iterations: int = 8,
                         segment_s: float = 2.0, bootstrap: int = 200, groups: tuple[str, ...] = GROUPS,
                         burn_in: int = 4, select_windows: int = 400, seed: int = 0) -> DisturbanceEstimate:
    """The disturbance model (a subset of ``groups``) that best explains ``step`` (logged flight) under the
    task's vehicle model, with uncertainties and what it leaves unexplained.

    task_cfg: the policy's training config (policies.evaluation.task_cfg_from_contract): vehicle,
    control rate, substeps, action space and rate-controller gains, i.e. how a logged action moves the
    vehicle. Raises ValueError when the logs hold too few usable windows.
    """
    dt = task_cfg.control_dt
    starts = _windows(step, dt, window, max_windows, seed, burn_in)
    if len(starts) < 50:
        raise ValueError(f"only {len(starts)} usable {window}-step windows in the logs (need 50): too short, or "
                         "the ticks are not one control period apart")
    predict = _Predictor(step, starts, task_cfg, window, burn_in)
    pick = np.sort(np.random.default_rng(seed + 1).choice(len(starts), min(len(starts), select_windows), replace=False))
    select = _Predictor(step, starts[pick], task_cfg, window, burn_in)  # model selection on fewer windows
    r_n, mass = predict.n_rot, predict.vehicle.mass_kg
    index = {"rotor_gains": list(range(r_n)), "force": [r_n, r_n + 1], "mass": [r_n + 3],
             "com": [r_n + 4, r_n + 5]}
    unit = np.array([0.1] * r_n + [0.05 * mass * GRAVITY] * 3 + [0.1 * mass] + [0.02] * 2)
    theta0 = np.concatenate([np.ones(r_n), np.zeros(6)])
    lo = np.concatenate([np.full(r_n, 0.05), np.full(3, -mass * GRAVITY), [-0.5 * mass], [-0.2, -0.2]])
    hi = np.concatenate([np.full(r_n, 2.0), np.full(3, mass * GRAVITY), [mass], [0.2, 0.2]])
    res0 = predict(theta0[None])[0]
    # per channel, fixed at the nominal model, and never below the floor of what a window can tell apart
    # (odometry noise and the simulator's own mismatch): a channel the disturbance does not touch must
    # not count as much as one it dominates
    scale = np.maximum(np.sqrt(np.mean(res0 ** 2, axis=(0, 1))), np.repeat(CHANNEL_FLOOR, 3))
    rss0 = float(np.sum((res0 / scale) ** 2))
    n_rows = res0.size

    def bic(rss: float, n_rows: int, k: int) -> float:
        n_eff = n_rows / window  # a window's steps share its start: one independent error per window and channel
        return n_eff * np.log(rss / n_rows) + k * np.log(n_eff)

    def fit_model(pred, model, start):
        dims = [d for g in groups if g in model for d in index[g]]
        theta, res, jac = _fit(pred, dims, unit, scale, iterations, start, lo, hi)
        rss = float(np.sum(res ** 2))
        return {"theta": theta, "res": res, "jac": jac, "dims": dims, "rss": rss, "bic": bic(rss, res.size, len(dims))}

    # greedy forward selection: add the group (or the payload: mass and where it sits) that lowers BIC
    # most, while it explains at least MIN_GROUP_SHARE of the nominal residual (BIC alone admits groups
    # that soak up the simulator's own small, systematic mismatch)
    fits = {(): fit_model(select, (), theta0)}
    rss0_sel = fits[()]["rss"]
    best = ()
    while True:
        steps_ = [(g,) for g in groups if g not in best and g != "com"]
        if "com" in groups and "com" not in best:
            steps_.append(("com",) if "mass" in best else ("mass", "com"))
        trials = {}
        for add in steps_:
            model = tuple(g for g in groups if g in best or g in add)
            start = fits[best]["theta"].copy()
            if "com" in add and "mass" not in best:  # at no mass, its position has no effect to follow
                start[index["mass"]] = 0.1 * mass
            trials[model] = fits[model] = fit_model(select, model, start)
        good = [mdl for mdl, f in trials.items() if f["bic"] < fits[best]["bic"]
                and fits[best]["rss"] - f["rss"] >= MIN_GROUP_SHARE * rss0_sel]
        if not good:
            break
        best = min(good, key=lambda mdl: fits[mdl]["bic"])
    fit = fit_model(predict, best, fits[best]["theta"])  # the chosen model on every window
    ep = step.episode[starts]
    t_in_ep = step.t_s[starts] - np.array([step.t_s[step.episode == e].min() for e in ep])
    segment = ep * 1000 + np.floor(t_in_ep / segment_s).astype(int)
    rss_flex, k_flex = _segment_wrench_rss(fit["res"], segment)
    bic_flex = bic(rss_flex, n_rows, len(fit["dims"]) + k_flex)
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
            cov = np.linalg.pinv(jac.T @ jac) * fit["rss"] / max(1, n_rows / window - len(dims))
            sigma[dims] = np.sqrt(np.diag(cov)) * unit[dims]

    explained = {}
    for g in groups:  # drop a group of the model, or add one it lacks (as fitted in the selection)
        alt = fits.get(tuple(x for x in groups if (x in best) != (x == g)))
        if alt is not None:
            explained[g] = float(abs(alt["rss"] - fits[best]["rss"]) / rss0_sel)
    beats = bic_flex < fit["bic"]
    predictable = unexplained <= MAX_UNEXPLAINED_SHARE  # BIC favours the reference even for a sliver
    if predictable:
        why = (f"the model explains {1 - fit['rss'] / rss0:.0%} of the nominal residual; a slowly varying wrench "
               f"would explain only {unexplained:.0%} more")
    else:
        why = (f"the logs show a disturbance the model does not capture: an external force and torque, constant "
               f"over each {segment_s:g} s, explain {unexplained:.0%} more of the nominal residual than the chosen model "
               f"({'favoured' if beats else 'not favoured'} by BIC); a twin built from it cannot predict the flight")
    th = theta
    return DisturbanceEstimate(
        model=tuple(best), gains=tuple(float(x) for x in th[:r_n]), gains_sigma=tuple(float(x) for x in sigma[:r_n]),
        force_w=tuple(float(x) for x in th[r_n:r_n + 3]), force_sigma_n=tuple(float(x) for x in sigma[r_n:r_n + 3]),
        added_mass_kg=float(th[r_n + 3]), added_mass_sigma_kg=float(sigma[r_n + 3]),
        payload_pos_b=(float(th[r_n + 4]), float(th[r_n + 5]), 0.0),
        payload_pos_sigma_m=(float(sigma[r_n + 4]), float(sigma[r_n + 5]), 0.0),
        com_offset_b=tuple(float(x) for x in np.append(payload_effect(
            predict.vehicle, th[None, r_n + 3], th[None, r_n + 4:r_n + 6])[2][0], 0.0)),
        explained=explained, explained_total=float(1 - fit["rss"] / rss0), unexplained_share=float(unexplained),
        predictable=bool(predictable), why=why,
        candidates=[{"model": list(mdl), "bic": f["bic"], "residual_share": f["rss"] / rss0_sel,
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
