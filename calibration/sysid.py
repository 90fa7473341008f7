"""Quadrotor system identification from a flight log: thrust and torque coefficients, motor time
constants, drag, each with a standard deviation.

Model (the one ``sim.quadrotor.dynamics`` integrates): rotor speed r follows the command c = u * max_rpm
through a first-order lag with tau_up when speeding up and tau_down when slowing down; thrust kf r^2
along z_b at each hub; reaction torque -spin km r^2; body-frame linear drag -D v_b; gravity.
Rotor speeds are not measured: they are reconstructed from the logged commands for a candidate
(tau_up, tau_down), which makes everything else linear:

    (v[k+1] - v[k]) / dt - g       = kf/m  * R e_z sum_i s_i  -  sum_j (D_j/m) R e_j e_j^T R^T v
    (w[k+1] - w[k]) / dt + gyro    = (kf/Ixx * sum_i y_i s_i,  kf/Iyy * -sum_i x_i s_i,  km/Izz * -sum_i spin_i s_i)

with s_i the exact mean of r_i^2 over the sample interval. Differencing noisy velocities amplifies the
noise; both sides are passed through the same zero-phase low-pass filter (linear and time-invariant,
so the equation still holds exactly) before least squares. The lags are found by variable projection
(the linear parameters are solved in closed form inside the residual), and the covariance of all
parameters is the sandwich (Newey-West) estimate, since filtered residuals are correlated in time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize, signal

from calibration.boards import CalibrationError
from calibration.flightlog import FlightLog, rotmat_wxyz
from sim.quadrotor.presets import GRAVITY, QuadrotorPreset

LINEAR_NAMES = ("kf_per_mass", "drag_x_per_mass", "drag_y_per_mass", "drag_z_per_mass",
                "kf_per_ixx", "kf_per_iyy", "km_per_izz")
"""order of the parameters solved in closed form (see module doc)"""
LAG_NAMES = ("tau_up_s", "tau_down_s")
EQUATIONS = ("acc_w_x", "acc_w_y", "acc_w_z", "ang_acc_b_x", "ang_acc_b_y", "ang_acc_b_z")
"""rows of the regression per sample: world linear acceleration, body angular acceleration"""
LIN, ANG = slice(0, 3), slice(3, 6)
"""the linear and angular rows of EQUATIONS"""


@dataclasses.dataclass(frozen=True)
class SysIdCfg:
    mass_kg: float | None = None
    """vehicle mass if weighed [kg]; None: thrust and drag are reported per kg of mass"""
    inertia_kg_m2: tuple[float, float, float] | None = None
    """principal inertia (CAD or preset) [kg m^2]; needed to turn km/Izz into km. None: report km/Izz
    (the small gyroscopic term then uses the preset's inertia)"""
    lowpass_hz: float = 12.0
    """cut-off of the zero-phase Butterworth filter applied to both sides of the equations [Hz]"""
    filter_order: int = 2
    """Butterworth order (applied forward and backward) [1]"""
    tau_bounds_s: tuple[float, float] = (0.002, 0.5)
    """search range for both motor time constants [s]"""
    min_duration_s: float = 10.0
    """shorter logs are refused [s]"""
    settle_s: float = 0.5
    """ignored at the start of every segment, while the rotor speeds reconstructed from an unknown initial
    speed converge (errors decay as exp(-t / tau)) [s]"""
    max_gap_factor: float = 1.5
    """a time step longer than this multiple of the median step splits the log into segments [1]"""
    model_substeps: int | None = None
    """None: continuous-time physics (a real vehicle). S: the log comes from a simulator integrating with
    semi-implicit Euler and S substeps per sample, modelled exactly (sim-to-sim checks) [1]"""
    hac_lags: int | None = None
    """Newey-West bandwidth [samples]; None: 4 / (lowpass_hz * dt)"""


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float
    sigma: float
    """one standard deviation, same unit as value"""
    unit: str


@dataclasses.dataclass(frozen=True)
class SysIdResult:
    params: dict[str, Estimate]
    """identified parameters by calibration-file name (see calibration.files.QUADROTOR_PARAMS)"""
    residuals: dict[str, float]
    """RMS of the filtered equation errors and the signal they explain"""
    duration_s: float
    """flight time used [s]"""
    samples: int


# --- motor model ---------------------------------------------------------------------------------------


def rotor_speed_sq_mean(cmd_rpm: np.ndarray, dt: np.ndarray, tau_up: float, tau_down: float,
                        starts: np.ndarray, substeps: int | None = None) -> np.ndarray:
    """Exact mean of rpm^2 over each sample interval [N-1, R] for commands held over it (zero-order hold).

    cmd_rpm: [N, R] commanded rotor speeds; dt: [N-1] interval lengths [s]; starts: indices where a
    segment begins (the rotors start there at their commanded speed). Over one interval
    r(s) = c + (r0 - c) exp(-s / tau), tau by the sign of c - r0, so mean r^2 has a closed form.
    substeps: None for the time average (continuous physics); S for the average over the S substep ends
    that a semi-implicit Euler integrator with S substeps per sample uses (to identify a simulator).
    """
    n, n_rotors = cmd_rpm.shape
    r0 = np.empty((n - 1, n_rotors))
    bounds = np.concatenate([starts, [n - 1]]).astype(int)
    a_up = np.exp(-dt / tau_up).tolist()
    a_down = np.exp(-dt / tau_down).tolist()
    for i in range(n_rotors):
        cmd = cmd_rpm[:, i].tolist()
        col = [0.0] * (n - 1)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            r = cmd[a]
            for k in range(a, b):  # sequential; plain floats are ~20x faster than numpy on scalars
                c = cmd[k]
                col[k] = r
                r = c + (r - c) * (a_up[k] if c > r else a_down[k])
        r0[:, i] = col
    c = cmd_rpm[:-1]
    tau = np.where(c > r0, tau_up, tau_down)
    x = dt[:, None] / tau
    if substeps is None:  # mean over the interval of exp(-s/tau) and exp(-2s/tau)
        e1 = -np.expm1(-x) / x
        e2 = -np.expm1(-2.0 * x) / (2.0 * x)
    else:  # mean over the substep ends j h, j = 1..S (semi-implicit Euler), geometric series
        q1, q2 = np.exp(-x / substeps), np.exp(-2.0 * x / substeps)
        e1 = q1 * -np.expm1(-x) / (-np.expm1(-x / substeps)) / substeps
        e2 = q2 * -np.expm1(-2.0 * x) / (-np.expm1(-2.0 * x / substeps)) / substeps
    d = r0 - c
    return c * c + 2.0 * c * d * e1 + d * d * e2


# --- regression ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Everything that does not depend on the lags, per interval k (between samples k and k+1)."""

    cmd_rpm: np.ndarray  # [N, R]
    dt: np.ndarray  # [N-1] s
    starts: np.ndarray  # segment start sample indices
    y_f: np.ndarray  # [M, 6] filtered measured accelerations minus known terms (lin world, ang body)
    thrust_dir_w: np.ndarray  # [N-1, 3] R e_z at mid-interval
    drag_f: np.ndarray  # [M, 3 (world axis), 3 (body axis j)] filtered -R e_j e_j^T R^T v at mid-interval
    arm: np.ndarray  # [3, R] torque arm per rotor for x (y_i), y (-x_i), z (-spin_i)
    segments: list[tuple[int, int]]  # [start, end) interval ranges without gaps
    sos: np.ndarray  # low-pass filter, second-order sections
    substeps: int | None  # see SysIdCfg.model_substeps


def _build_problem(log: FlightLog, geometry: QuadrotorPreset, cfg: SysIdCfg) -> _Problem:
    if log.u.shape[1] != len(geometry.rotor_spin):
        raise CalibrationError(f"flight log has {log.u.shape[1]} rotor commands, the vehicle has "
                               f"{len(geometry.rotor_spin)} rotors")
    dt = np.diff(log.t)
    step = float(np.median(dt))
    gap = dt > cfg.max_gap_factor * step
    starts = np.concatenate([[0], np.nonzero(gap)[0] + 1])
    edges = np.concatenate([starts, [len(log.t)]])
    segments = [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:]) if b - a > 1]
    flight_s = float(dt[~gap].sum())
    if flight_s < cfg.min_duration_s:
        raise CalibrationError(f"flight log covers {flight_s:.1f} s of flight; need at least {cfg.min_duration_s} s "
                               "(about 60 s of excited flight gives 5% accuracy)")
    if not np.all((log.u >= 0.0) & (log.u <= 1.0)):
        raise CalibrationError("rotor commands must be fractions of max rpm in [0, 1]")
    q = log.quat_wxyz / np.linalg.norm(log.quat_wxyz, axis=1, keepdims=True)
    q_next = np.where((np.sum(q[1:] * q[:-1], axis=1) < 0)[:, None], -q[1:], q[1:])
    # Attitude and velocity that act over an interval: its midpoint for continuous physics; for a
    # semi-implicit Euler simulator the substep starts (t_k + j h, j = 0..S-1), centred at (S-1)/(2S).
    frac = 0.5 if cfg.model_substeps is None else (cfg.model_substeps - 1) / (2.0 * cfg.model_substeps)
    q_mid = (1.0 - frac) * q[:-1] + frac * q_next
    rot = rotmat_wxyz(q_mid / np.linalg.norm(q_mid, axis=1, keepdims=True))  # [N-1, 3, 3]
    v_mid = (1.0 - frac) * log.lin_vel_w[:-1] + frac * log.lin_vel_w[1:]
    w_mid = (1.0 - frac) * log.ang_vel_b[:-1] + frac * log.ang_vel_b[1:]
    v_b = np.einsum("kji,kj->ki", rot, v_mid)  # R^T v
    drag_w = -np.einsum("kij,kj->kij", rot, v_b)  # column j: -R e_j (e_j . v_b)
    inertia = np.asarray(cfg.inertia_kg_m2 or geometry.inertia_kg_m2, np.float64)
    gyro = np.cross(w_mid, inertia * w_mid) / inertia
    y_lin = np.diff(log.lin_vel_w, axis=0) / dt[:, None] - np.array([0.0, 0.0, -GRAVITY])
    y_ang = np.diff(log.ang_vel_b, axis=0) / dt[:, None] + gyro
    pos = np.asarray(geometry.rotor_pos_b, np.float64)
    spin = np.asarray(geometry.rotor_spin, np.float64)
    nyquist = 0.5 / step
    if not 0 < cfg.lowpass_hz < nyquist:
        raise CalibrationError(f"lowpass_hz {cfg.lowpass_hz} must be below the log's Nyquist rate {nyquist:.1f} Hz")
    sos = signal.butter(cfg.filter_order, cfg.lowpass_hz / nyquist, output="sos")
    settle = int(math.ceil(cfg.settle_s / step))
    padlen = 3 * (2 * sos.shape[0] + 1)  # sosfiltfilt's edge padding needs a longer stretch than this
    segments = [(a + settle, b) for a, b in segments if b - a - settle > padlen]
    if not segments:
        raise CalibrationError(f"no stretch of the log is longer than {cfg.settle_s} s plus the filter length "
                               "without a time gap")
    usable_s = float(sum(dt[a:b].sum() for a, b in segments))
    if usable_s < cfg.min_duration_s:
        raise CalibrationError(f"only {usable_s:.1f} s of the {flight_s:.1f} s of flight lie in stretches without a "
                               f"time gap ({len(starts) - 1} gaps longer than {cfg.max_gap_factor} x the median step), "
                               f"after {cfg.settle_s} s of settling each; need at least {cfg.min_duration_s} s")
    common = dict(cmd_rpm=log.u * geometry.max_rpm, dt=dt, starts=starts,
                  thrust_dir_w=rot[:, :, 2], arm=np.stack([pos[:, 1], -pos[:, 0], -spin]), segments=segments,
                  sos=sos, substeps=cfg.model_substeps)
    unfiltered = _Problem(y_f=np.zeros(0), drag_f=np.zeros(0), **common)
    return _Problem(y_f=_filter(unfiltered, np.concatenate([y_lin, y_ang], axis=1)),
                    drag_f=_filter(unfiltered, drag_w), **common)


def _filter(p: _Problem, x: np.ndarray) -> np.ndarray:
    """Zero-phase low-pass along time per segment; drops intervals across gaps. [N-1, ...] -> [M, ...]"""
    parts = []
    for a, b in p.segments:
        seg = x[a:b]
        parts.append(signal.sosfiltfilt(p.sos, seg, axis=0))
    return np.concatenate(parts, axis=0)


def _design(p: _Problem, tau_up: float, tau_down: float) -> tuple[np.ndarray, np.ndarray]:
    """Filtered regressors [M, 6, 7] and targets [M, 6] for the given lags."""
    s = rotor_speed_sq_mean(p.cmd_rpm, p.dt, tau_up, tau_down, p.starts, p.substeps)  # [N-1, R]
    thrust_w = p.thrust_dir_w * s.sum(axis=1, keepdims=True)  # [N-1, 3] per unit kf/m
    torque_b = s @ p.arm.T  # [N-1, 3] per unit kf/Ixx, kf/Iyy, km/Izz
    thrust, torque = np.split(_filter(p, np.concatenate([thrust_w, torque_b], axis=1)), 2, axis=1)
    col = {name: i for i, name in enumerate(LINEAR_NAMES)}
    phi = np.zeros((len(thrust), len(EQUATIONS), len(LINEAR_NAMES)))
    phi[:, LIN, col["kf_per_mass"]] = thrust
    for j, axis in enumerate("xyz"):
        phi[:, LIN, col[f"drag_{axis}_per_mass"]] = p.drag_f[:, :, j]
    for j, name in enumerate(("kf_per_ixx", "kf_per_iyy", "km_per_izz")):
        phi[:, ANG.start + j, col[name]] = torque[:, j]
    return phi, p.y_f


def _solve_linear(phi: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = (phi * weights[None, :, None]).reshape(-1, phi.shape[2])
    b = (y * weights[None, :]).reshape(-1)
    # columns differ by orders of magnitude (rpm^2 vs m/s): scale them before solving
    scale = np.linalg.norm(a, axis=0)
    if np.any(scale == 0):
        missing = [LINEAR_NAMES[i] for i in np.nonzero(scale == 0)[0]]
        raise CalibrationError(f"the log does not excite {missing}: fly with varying rotor commands and velocity")
    theta_scaled, *_ = np.linalg.lstsq(a / scale, b, rcond=None)
    theta = theta_scaled / scale
    return theta, (b - a @ theta).reshape(y.shape)


def _lag_residual(log_tau: np.ndarray, p: _Problem, weights: np.ndarray) -> np.ndarray:
    phi, y = _design(p, math.exp(log_tau[0]), math.exp(log_tau[1]))
    _, res = _solve_linear(phi, y, weights)
    return res.ravel()


def _newey_west(scores: np.ndarray, lags: int) -> np.ndarray:
    """Long-run covariance of per-time-step score vectors [M, P] with Bartlett weights."""
    s = scores - scores.mean(axis=0)
    cov = s.T @ s
    for lag in range(1, lags + 1):
        gamma = s[lag:].T @ s[:-lag]
        cov += (1.0 - lag / (lags + 1.0)) * (gamma + gamma.T)
    return cov


# --- estimation ----------------------------------------------------------------------------------------


def _group_weights(res: np.ndarray) -> np.ndarray:
    """1 / RMS residual per equation, so that m/s^2 and rad/s^2 rows count by their noise."""
    return 1.0 / np.maximum(np.sqrt(np.mean(res * res, axis=0)), 1e-12)


def _fit_lags(p: _Problem, x0: np.ndarray, bounds: np.ndarray, weights: np.ndarray, scan: bool) -> np.ndarray:
    start = x0
    if scan:  # a coarse scan along tau_down = 2 tau_up guards against a far-off starting guess
        grid = np.linspace(bounds[0], bounds[1] - math.log(2.0), 7)
        cands = [x0] + [np.array([g, g + math.log(2.0)]) for g in grid]
        costs = [float(np.sum(_lag_residual(c, p, weights) ** 2)) for c in cands]
        start = cands[int(np.argmin(costs))]
    sol = optimize.least_squares(_lag_residual, start, bounds=(np.full(2, bounds[0]), np.full(2, bounds[1])),
                                 args=(p, weights), diff_step=1e-4, x_scale=0.1, xtol=1e-6, ftol=1e-10)
    return sol.x


def _covariance(p: _Problem, log_tau: np.ndarray, theta: np.ndarray, weights: np.ndarray,
                lags: int) -> np.ndarray:
    """Sandwich covariance of (theta [7], log tau_up, log tau_down)."""
    phi, y = _design(p, *np.exp(log_tau))
    w = weights[None, :]
    res = (y - phi @ theta) * w  # [M, 6]
    jac = [-(phi * w[..., None])]  # d res / d theta: [M, 6, 7]
    for i in range(2):
        h = 1e-4
        up, down = log_tau.copy(), log_tau.copy()
        up[i] += h
        down[i] -= h
        phi_up, _ = _design(p, *np.exp(up))
        phi_down, _ = _design(p, *np.exp(down))
        jac.append((-(phi_up - phi_down) @ theta / (2 * h) * w)[..., None])
    jac = np.concatenate(jac, axis=2)  # [M, 6, 9]
    scores = np.einsum("mep,me->mp", jac, res)
    j2 = jac.reshape(-1, jac.shape[2])
    scale = np.linalg.norm(j2, axis=0)
    h_inv = np.linalg.pinv((j2 / scale).T @ (j2 / scale)) / np.outer(scale, scale)
    return h_inv @ _newey_west(scores, lags) @ h_inv


def _derived(value_fn, x: np.ndarray, cov: np.ndarray, unit: str) -> Estimate:
    """Delta-method estimate of value_fn(x)."""
    v = float(value_fn(x))
    grad = np.zeros(len(x))
    for i in range(len(x)):
        h = 1e-6 * max(abs(x[i]), 1e-30)
        xp = x.copy()
        xp[i] += h
        grad[i] = (value_fn(xp) - v) / h
    return Estimate(v, float(math.sqrt(max(grad @ cov @ grad, 0.0))), unit)


def identify_quadrotor(log: FlightLog, geometry: QuadrotorPreset, cfg: SysIdCfg = SysIdCfg()) -> SysIdResult:
    """Identify thrust/torque coefficients, motor lags and drag from a flight log.

    ``geometry`` supplies what is measured with a ruler or a datasheet and not identified: rotor
    positions and spin directions, max rpm (the command scale), and the inertia unless cfg gives one.
    """
    p = _build_problem(log, geometry, cfg)
    lo, hi = (math.log(b) for b in cfg.tau_bounds_s)
    bounds = np.array([lo, hi])
    x0 = np.clip(np.log([geometry.tau_up_s, geometry.tau_down_s]), lo, hi)
    weights = np.ones(6)
    for first in (True, False):  # fit, re-weight by per-equation noise, fit again
        phi, y = _design(p, *np.exp(x0))
        _, res = _solve_linear(phi, y, weights)
        weights = weights * _group_weights(res.reshape(y.shape))
        x0 = _fit_lags(p, x0, bounds, weights, scan=first)
    phi, y = _design(p, *np.exp(x0))
    theta, res_w = _solve_linear(phi, y, weights)
    step = float(np.median(p.dt))
    lags = cfg.hac_lags or max(1, int(round(4.0 / (cfg.lowpass_hz * step))))
    cov = _covariance(p, x0, theta, weights, lags)
    x = np.concatenate([theta, x0])
    idx = {name: i for i, name in enumerate(LINEAR_NAMES + LAG_NAMES)}
    params: dict[str, Estimate] = {
        "tau_up_s": _derived(lambda v: math.exp(v[idx["tau_up_s"]]), x, cov, "s"),
        "tau_down_s": _derived(lambda v: math.exp(v[idx["tau_down_s"]]), x, cov, "s"),
    }
    m = cfg.mass_kg
    axes = ("x", "y", "z")
    if m is not None:
        params["mass_kg"] = Estimate(float(m), 0.0, "kg")
        params["kf_n_per_rpm2"] = _derived(lambda v: m * v[idx["kf_per_mass"]], x, cov, "N/rpm^2")
        for a in axes:
            params[f"drag_{a}_n_s_per_m"] = _derived(lambda v, a=a: m * v[idx[f"drag_{a}_per_mass"]], x, cov, "N s/m")
        for a in ("x", "y"):
            params[f"i{a}{a}_kg_m2"] = _derived(lambda v, a=a: m * v[idx["kf_per_mass"]] / v[idx[f"kf_per_i{a}{a}"]],
                                               x, cov, "kg m^2")
    else:
        params["kf_per_kg"] = _derived(lambda v: v[idx["kf_per_mass"]], x, cov, "N/(kg rpm^2)")
        for a in axes:
            params[f"drag_{a}_per_kg"] = _derived(lambda v, a=a: v[idx[f"drag_{a}_per_mass"]], x, cov, "N s/(m kg)")
    if cfg.inertia_kg_m2 is not None:
        izz = float(cfg.inertia_kg_m2[2])
        params["km_nm_per_rpm2"] = _derived(lambda v: izz * v[idx["km_per_izz"]], x, cov, "N m/rpm^2")
    else:
        params["km_per_izz"] = _derived(lambda v: v[idx["km_per_izz"]], x, cov, "N m/(kg m^2 rpm^2)")
    res = res_w / weights[None, :]

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x ** 2)))

    residuals = {
        "accel_residual_rms_m_s2": rms(res[:, LIN]),
        "accel_signal_rms_m_s2": rms(y[:, LIN] - y[:, LIN].mean(0)),
        "ang_accel_residual_rms_rad_s2": rms(res[:, ANG]),
        "ang_accel_signal_rms_rad_s2": rms(y[:, ANG] - y[:, ANG].mean(0)),
    }
    flight_s = float(sum(p.dt[a:b].sum() for a, b in p.segments))
    return SysIdResult(params, residuals, flight_s, len(log.t))
