"""Fused batched quadrotor step: the model of :mod:`sim.quadrotor.dynamics`, written for inductor.

Same model, term for term: rotor first-order lag (exact discretization, tau_up / tau_down by the sign of
the error), thrust kf*gain*rpm^2 along +z_b, reaction torque -spin*km*gain*rpm^2, linear body drag,
gravity, optional external world force, semi-implicit Euler (velocities, then positions with the new
velocity), Euler's rotation equation by the explicit midpoint rule (``dynamics.euler_rate_step``),
exact quaternion exponential, ``substeps`` per control step, and in CTBR mode the rate controller and
mixer every substep. A change to ``dynamics.step`` must be mirrored here: tests/sim/test_fused.py
compares the two.

What differs is only the layout, so that ``torch.compile`` emits one vectorized pointwise loop:
- structure of arrays: the state is a tuple of S ``[N]`` tensors (:data:`FusedState`, rows named by
  :func:`state_rows`), the per-env parameters one ``[P, N]`` tensor (rows named by :func:`param_rows`);
- everything shared by all envs (rotor layout, spin, rate-controller gains, mixer, dt) is a Python
  float in a hashable :class:`FusedSpec`, so it folds into the kernel as a constant;
- rotor sums, cross products and the mixer are unrolled into scalar expressions (no cat / stack /
  cross / matmul in the hot loop);
- per-env constants of the step (motor-lag factors 1 - exp(-h/tau), kf*gain, 1/mass, inertia ratios)
  are computed once per randomization (:func:`pack_params`) instead of once per substep; products are
  regrouped where that saves work (e.g. w x (J w) / J as (jz - jy) / jx * wy wz): results differ at
  rounding level only;
- :func:`rollout_` updates the state rows in place: the compiled kernel then reads and writes the
  caller's buffers and allocates nothing (a fresh [S, N] output per call at 1 M envs is a 68 MB mmap
  whose page faults halved throughput here); it can run several control steps per call.

Not modelled here: a rate loop slower than the physics (``dynamics.CtbrSetpoint.rate_div``, the vehicle
classes' ``rate_loop_hz``); the fused kernel runs the rate loop every substep.

Use :func:`compiled_rollout` for the compiled kernel (one compile per spec, step count and batch
shape; inductor's on-disk cache makes a re-run fast). Eager calls of :func:`step` / :func:`rollout` are
the same model but slow (hundreds of tiny ops); they are what the tests check against ``dynamics.step``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from sim.kernel_cache import use_kernel_cache
from sim.quadrotor.dynamics import QuadParams, QuadState, RateController
from sim.quadrotor.presets import GRAVITY

FusedState = tuple[torch.Tensor, ...]
"""S row tensors shaped [N], in :func:`state_rows` order, each with its own storage"""


def state_rows(n_rotors: int) -> tuple[str, ...]:
    """Row names of :data:`FusedState` (units as in :class:`QuadState`)."""
    return ("pos_x_w", "pos_y_w", "pos_z_w", "quat_w", "quat_x", "quat_y", "quat_z",
            "lin_vel_x_w", "lin_vel_y_w", "lin_vel_z_w", "ang_vel_x_b", "ang_vel_y_b", "ang_vel_z_b",
            *(f"rotor_rpm_{i}" for i in range(n_rotors)))


def param_rows(n_rotors: int) -> tuple[str, ...]:
    """Row names of the ``[P, N]`` per-env constants of a step (:func:`pack_params`)."""
    return ("max_rpm", "lag_up", "lag_down", *(f"kf_gain_{i}" for i in range(n_rotors)), "km_over_kf",
            "neg_inv_mass", "inv_inertia_x", "inv_inertia_y", "inv_inertia_z", "gyro_x", "gyro_y", "gyro_z",
            "drag_x", "drag_y", "drag_z")


@dataclasses.dataclass(frozen=True)
class CtbrConsts:
    """The nominal rate controller of :class:`RateController` as plain floats (shared by all envs)."""

    kp: tuple[float, float, float]
    """rate-error gain per body axis [1/s]"""
    inertia: tuple[float, float, float]
    """nominal principal inertia [kg m^2]"""
    mixer_pinv: tuple[tuple[float, float, float, float], ...]
    """[R][4] maps (thrust [N], tau_x, tau_y, tau_z [N m]) to rotor thrusts [N]"""
    kf: float
    """nominal thrust coefficient [N / rpm^2]"""
    max_rpm: float
    """nominal rotor speed at full command [rpm]"""

    @classmethod
    def from_controller(cls, ctrl: RateController) -> "CtbrConsts":
        return cls(kp=tuple(float(x) for x in ctrl.kp.cpu()), inertia=tuple(float(x) for x in ctrl.inertia.cpu()),
                   mixer_pinv=tuple(tuple(float(x) for x in row) for row in ctrl.mixer_pinv.cpu()),
                   kf=float(ctrl.kf), max_rpm=float(ctrl.max_rpm))


@dataclasses.dataclass(frozen=True)
class FusedSpec:
    """Everything of a step that is the same for all envs; hashable, it keys the compile cache."""

    dt: float
    """control period [s]"""
    substeps: int
    """physics substeps per control step"""
    rotor_pos_b: tuple[tuple[float, float, float], ...]
    """rotor hub positions in the body frame [m], motor order"""
    rotor_spin: tuple[float, ...]
    """+1 CCW seen from above, -1 CW, motor order"""
    ctbr: CtbrConsts | None = None
    """None: commands are normalized rotor commands [R, N] in [0, 1]; else CTBR setpoints
    [4, N] = (collective thrust [N], body rates x, y, z [rad/s]) tracked every substep"""

    def __post_init__(self):
        if self.dt <= 0 or self.substeps < 1:
            raise ValueError(f"dt must be > 0 and substeps >= 1, got dt={self.dt}, substeps={self.substeps}")
        if len(self.rotor_pos_b) != len(self.rotor_spin):
            raise ValueError(f"{len(self.rotor_pos_b)} rotor positions, {len(self.rotor_spin)} spin directions")
        if self.ctbr is not None and len(self.ctbr.mixer_pinv) != len(self.rotor_spin):
            raise ValueError(f"mixer has {len(self.ctbr.mixer_pinv)} rows for {len(self.rotor_spin)} rotors")

    @classmethod
    def from_params(cls, p: QuadParams, dt: float, substeps: int, ctrl: RateController | None = None) -> "FusedSpec":
        return cls(dt=float(dt), substeps=int(substeps),
                   rotor_pos_b=tuple(tuple(float(x) for x in row) for row in p.rotor_pos_b.cpu()),
                   rotor_spin=tuple(float(s) for s in p.rotor_spin.cpu()),
                   ctbr=None if ctrl is None else CtbrConsts.from_controller(ctrl))

    @property
    def n_rotors(self) -> int:
        return len(self.rotor_spin)

    @property
    def command_dim(self) -> int:
        return 4 if self.ctbr is not None else self.n_rotors


# ------------------------------------------------------------------ conversion

def pack_state(s: QuadState) -> FusedState:
    """QuadState ([N, k] fields) -> :data:`FusedState` (contiguous rows, one storage each)."""
    return tuple(row.contiguous() for t in s for row in t.T)


def unpack_state(x: FusedState) -> QuadState:
    """:data:`FusedState` -> QuadState with [N, k] fields (copies)."""
    cols = torch.stack(tuple(x), dim=-1)  # [N, S]
    pos, quat, vel, omega, rpm = torch.split(cols, [3, 4, 3, 3, len(x) - 13], dim=-1)
    return QuadState(*(t.contiguous() for t in (pos, quat, vel, omega, rpm)))


def pack_params(p: QuadParams, spec: FusedSpec, check_layout: bool = True) -> torch.Tensor:
    """Per-env QuadParams -> the ``[P, N]`` per-env constants of a step (:func:`param_rows`).

    Computed once per (re)randomization rather than in every step: the motor-lag factors
    1 - exp(-h / tau) of the substep h, kf * rotor gain, km / kf, -1 / mass, 1 / inertia and the inertia
    ratios of the gyroscopic term, (jz - jy) / jx etc. The rotor layout is in ``spec``.

    check_layout: compare the params' rotor layout with the spec's (reads it back to the host: a training
    env that repacks the same vehicle class every few steps checks once, at construction)."""
    if check_layout:
        layout = FusedSpec.from_params(p, spec.dt, spec.substeps)
        if (layout.rotor_spin, layout.rotor_pos_b) != (spec.rotor_spin, spec.rotor_pos_b):
            raise ValueError("params' rotor layout (rotor_pos_b, rotor_spin) differs from the spec's")
    h = spec.dt / spec.substeps
    jx, jy, jz = p.inertia.unbind(-1)
    rows = [p.max_rpm[:, 0], 1.0 - torch.exp(-h / p.tau_up[:, 0]), 1.0 - torch.exp(-h / p.tau_down[:, 0]),
            *(p.kf * p.rotor_gain).unbind(-1), (p.km / p.kf)[:, 0], -1.0 / p.mass[:, 0],
            1.0 / jx, 1.0 / jy, 1.0 / jz, (jz - jy) / jx, (jx - jz) / jy, (jy - jx) / jz, *p.drag.unbind(-1)]
    return torch.stack(rows, dim=0).contiguous()


def pack_command(rotor_cmd: torch.Tensor | None = None, thrust_n: torch.Tensor | None = None,
                 rates_b: torch.Tensor | None = None) -> torch.Tensor:
    """Rotor commands [N, R] in [0, 1], or a CTBR setpoint (thrust [N, 1] N, rates [N, 3] rad/s) -> ``[A, N]``."""
    if rotor_cmd is not None:
        return rotor_cmd.T.contiguous()
    if thrust_n is None or rates_b is None:
        raise ValueError("pass rotor_cmd, or both thrust_n and rates_b")
    return torch.cat([thrust_n, rates_b], dim=-1).T.contiguous()


# ------------------------------------------------------------------ the model, one scalar per row

def _rotate(qw, qx, qy, qz, vx, vy, vz):
    """quat_rotate unrolled: v + w t + qv x t with t = 2 qv x v (body -> world)."""
    tx = 2.0 * (qy * vz - qz * vy)
    ty = 2.0 * (qz * vx - qx * vz)
    tz = 2.0 * (qx * vy - qy * vx)
    return vx + qw * tx + (qy * tz - qz * ty), vy + qw * ty + (qz * tx - qx * tz), vz + qw * tz + (qx * ty - qy * tx)


def _rotate_inverse(qw, qx, qy, qz, vx, vy, vz):
    """quat_rotate_inverse unrolled: the same with qv negated (world -> body), signs folded."""
    tx = 2.0 * (qz * vy - qy * vz)
    ty = 2.0 * (qx * vz - qz * vx)
    tz = 2.0 * (qy * vx - qx * vy)
    return vx + qw * tx + (qz * ty - qy * tz), vy + qw * ty + (qx * tz - qz * tx), vz + qw * tz + (qy * tx - qx * ty)


def _weighted_sum(terms: list, coefs) -> torch.Tensor:
    """sum_i coefs[i] * terms[i] for constant coefficients, one multiply per distinct |coef|
    (an X quadrotor's arms are symmetric: sum_i y_i f_i = y (-f0 - f1 + f2 + f3))."""
    groups: dict[float, tuple[list, list]] = {}
    for t, c in zip(terms, coefs):
        if float(c) != 0.0:
            groups.setdefault(abs(float(c)), ([], []))[0 if c > 0 else 1].append(t)
    total = None
    for mag, (plus, minus) in groups.items():
        sign = 1.0
        if not plus:
            plus, minus, sign = minus, [], -1.0
        g = plus[0]
        for t in plus[1:]:
            g = g + t
        for t in minus:
            g = g - t
        g = g if sign * mag == 1.0 else g * (sign * mag)
        total = g if total is None else total + g
    return total if total is not None else torch.zeros_like(terms[0])


def _add(x: torch.Tensor, c) -> torch.Tensor:
    return x if isinstance(c, float) and c == 0.0 else x + c


def _ctbr_rotor_cmd(c: CtbrConsts, thrust_n, rdx, rdy, rdz, wx, wy, wz) -> list:
    """ctbr_to_rotor_cmd unrolled: rate P-control + gyroscopic feed-forward, mixer, thrust -> command."""
    jx, jy, jz = c.inertia
    kx, ky, kz = c.kp
    # torque = J kp (rate_des - w) + w x (J w); with constant J, (w x J w)_x = (jz - jy) wy wz, ...
    tx = (jx * kx) * (rdx - wx) + (jz - jy) * (wy * wz)
    ty = (jy * ky) * (rdy - wy) + (jx - jz) * (wz * wx)
    tz = (jz * kz) * (rdz - wz) + (jy - jx) * (wx * wy)
    scale = 1.0 / (math.sqrt(c.kf) * c.max_rpm)  # sqrt(f / kf) / max_rpm = sqrt(f) * scale
    out = []
    for m0, m1, m2, m3 in c.mixer_pinv:
        # relu is clamp_min(0) with NaN kept but without IEEE maximum's extra NaN test; sqrt(f) >= 0,
        # so only the upper clamp of dynamics' clamp(0, 1) can act
        f = torch.relu(m0 * thrust_n + m1 * tx + m2 * ty + m3 * tz)
        out.append((torch.sqrt(f) * scale).clamp_max(1.0))
    return out


def _step_rows(spec: FusedSpec, x: list, k: dict, cmd: list) -> list:
    """One control step on lists of [N] tensors. ``k`` holds the per-env constants of :func:`_consts`."""
    h = spec.dt / spec.substeps
    n_rot = spec.n_rotors
    px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz = x[:13]
    rpm = list(x[13:])
    if spec.ctbr is None:
        rpm_cmd_fixed = [c.clamp(0.0, 1.0) * k["max_rpm"] for c in cmd]
    for _ in range(spec.substeps):
        if spec.ctbr is None:
            rpm_cmd = rpm_cmd_fixed
        else:
            # already clamped to [0, 1]: dynamics.step's second clamp is the identity
            rpm_cmd = [c * k["max_rpm"] for c in _ctbr_rotor_cmd(spec.ctbr, *cmd, wx, wy, wz)]
        # motor_lag: exact first-order step, time constant chosen by the sign of the error
        rpm = [r + (rc - r) * torch.where(rc > r, k["lag_up"], k["lag_down"]) for r, rc in zip(rpm, rpm_cmd)]
        # rotor_wrench: thrust along z_b, roll/pitch torque from the arms, reaction torque -spin km rpm^2
        rpm2 = [r * r for r in rpm]
        f = [kfg * r2 for kfg, r2 in zip(k["kf_gain"], rpm2)]
        thrust = _weighted_sum(f, [1.0] * n_rot)
        tau_x = _weighted_sum(f, [pos[1] for pos in spec.rotor_pos_b])
        tau_y = _weighted_sum(f, [-pos[0] for pos in spec.rotor_pos_b])
        # km gain rpm^2 = (km / kf) f: one multiply instead of one per rotor
        tau_z = _weighted_sum(f, [-s for s in spec.rotor_spin]) * k["km_over_kf"]
        # body drag and thrust, rotated to the world: acc = R (-D R^T v + T z_b) / m + g + f_ext / m,
        # written as -(R (D R^T v - T z_b)) / m so the negation folds into the constant -1/m
        bx, by, bz = _rotate_inverse(qw, qx, qy, qz, vx, vy, vz)
        fx, fy, fz = _rotate(qw, qx, qy, qz, k["drag_x"] * bx, k["drag_y"] * by, k["drag_z"] * bz - thrust)
        ax = _add(fx * k["neg_inv_mass"], k["acc_x"])
        ay = _add(fy * k["neg_inv_mass"], k["acc_y"])
        az = _add(fz * k["neg_inv_mass"], k["acc_z"])
        # euler_rate_step: J w' = tau - w x (J w) (principal axes) by the explicit midpoint rule;
        # (w x J w)_x / jx = (jz - jy) / jx * wy wz with the inertia ratios precomputed per env
        ax_t, ay_t, az_t = tau_x * k["inv_inertia_x"], tau_y * k["inv_inertia_y"], tau_z * k["inv_inertia_z"]
        mx = wx + (0.5 * h) * (ax_t - k["gyro_x"] * (wy * wz))
        my = wy + (0.5 * h) * (ay_t - k["gyro_y"] * (wz * wx))
        mz = wz + (0.5 * h) * (az_t - k["gyro_z"] * (wx * wy))
        awx = ax_t - k["gyro_x"] * (my * mz)
        awy = ay_t - k["gyro_y"] * (mz * mx)
        awz = az_t - k["gyro_z"] * (mx * my)
        # semi-implicit Euler: velocities first, positions with the new velocity
        vx, vy, vz = vx + ax * h, vy + ay * h, vz + az * h
        wx, wy, wz = wx + awx * h, wy + awy * h, wz + awz * h
        px, py, pz = px + vx * h, py + vy * h, pz + vz * h
        # quat_integrate: q <- q * exp(w h / 2), renormalized
        theta = torch.sqrt(wx * wx + wy * wy + wz * wz) * h
        half = 0.5 * theta
        # sin(x)/x is smooth at 0; its 2nd-order Taylor expansion avoids the 0/0 (a where selects, so the
        # 0/0 of the branch not taken never reaches the result; no clamp needed)
        sinc = torch.where(theta > 1e-6, torch.sin(half) / theta, 0.5 - theta * theta / 48.0)
        dw, s = torch.cos(half), sinc * h
        dx, dy, dz = wx * s, wy * s, wz * s
        nw = qw * dw - qx * dx - qy * dy - qz * dz
        nx = qw * dx + qx * dw + qy * dz - qz * dy
        ny = qw * dy - qx * dz + qy * dw + qz * dx
        nz = qw * dz + qx * dy - qy * dx + qz * dw
        inv_norm = 1.0 / torch.sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
        qw, qx, qy, qz = nw * inv_norm, nx * inv_norm, ny * inv_norm, nz * inv_norm
    return [px, py, pz, qw, qx, qy, qz, vx, vy, vz, wx, wy, wz, *rpm]


def _consts(spec: FusedSpec, p, ext_force_w: torch.Tensor | None) -> dict:
    """Named rows of the per-env constants (``p``: [P, N], or its P rows), plus gravity and the external
    force as an acceleration."""
    k = dict(zip(param_rows(spec.n_rotors), p.unbind(0) if isinstance(p, torch.Tensor) else p))
    k["kf_gain"] = [k[f"kf_gain_{i}"] for i in range(spec.n_rotors)]
    if ext_force_w is None:
        k["acc_x"], k["acc_y"], k["acc_z"] = 0.0, 0.0, -GRAVITY
    else:
        ex, ey, ez = ext_force_w.unbind(0)
        k["acc_x"], k["acc_y"] = -(ex * k["neg_inv_mass"]), -(ey * k["neg_inv_mass"])
        k["acc_z"] = -(ez * k["neg_inv_mass"]) - GRAVITY
    return k


def rollout(spec: FusedSpec, state: FusedState, params: torch.Tensor, commands: torch.Tensor,
            ext_force_w: torch.Tensor | None = None) -> FusedState:
    """Run ``K`` control steps; returns the new state (the input is left unchanged).

    state: :data:`FusedState`, S rows [N]; params: [P, N] (:func:`param_rows`);
    commands: [K, A, N], the command held during step k: rotor commands in [0, 1] ([R, N]) or CTBR
    setpoints ([4, N]: collective thrust [N], body rates x, y, z [rad/s]), as ``spec.ctbr`` says;
    ext_force_w: optional [3, N] external world force [N], held for all K steps.
    """
    if len(state) != len(state_rows(spec.n_rotors)):
        raise ValueError(f"state has {len(state)} rows, the spec needs {len(state_rows(spec.n_rotors))}")
    if commands.dim() != 3 or commands.shape[1] != spec.command_dim:
        raise ValueError(f"commands must be shaped [K, {spec.command_dim}, N], got {tuple(commands.shape)}")
    k = _consts(spec, params, ext_force_w)
    x = list(state)
    for cmd in commands.unbind(0):
        x = _step_rows(spec, x, k, list(cmd.unbind(0)))
    return tuple(x)


def rollout_(spec: FusedSpec, state: FusedState, params: torch.Tensor, commands: torch.Tensor,
             ext_force_w: torch.Tensor | None = None) -> None:
    """:func:`rollout` writing the new state into ``state``'s row tensors."""
    for dst, src in zip(state, rollout(spec, state, params, commands, ext_force_w)):
        dst.copy_(src)


def step(spec: FusedSpec, state: FusedState, params: torch.Tensor, command: torch.Tensor,
         ext_force_w: torch.Tensor | None = None) -> FusedState:
    """One control step with ``command`` [A, N]; see :func:`rollout`."""
    return rollout(spec, state, params, command.unsqueeze(0), ext_force_w)


# ------------------------------------------------------------------ compiled kernels

# max_fusion_size: inductor stops fusing at 64 nodes by default, which split one step into two loops
# with ~20 intermediate rows stored to memory; the whole step is pointwise, so fuse all of it.
# fp contraction lets the C++ compiler emit FMAs (~8% faster here; rounding-level differences only).
INDUCTOR_OPTIONS = {"max_fusion_size": 1 << 20, "cpp.enable_floating_point_contract_flag": "fast"}
_COMPILED: dict[tuple, Callable] = {}


def compiled_rollout(spec: FusedSpec, k_steps: int, num_envs: int, with_ext_force: bool = False,
                     device: torch.device | str = "cpu") -> Callable[..., None]:
    """Compiled :func:`rollout_`: ``fn(state, params, commands[, ext_force_w])`` updates ``state`` in place,
    for exactly ``k_steps`` steps and ``num_envs`` envs (float32).

    Compiled on first call (``torch.compile``, ``dynamic=False``: tens of seconds cold, seconds from
    inductor's on-disk cache) and cached per (spec, K, N, device, thread count: inductor's CPU kernels
    bake in ``torch.get_num_threads()``). The compile time grows with K (~30 s cold per step here), so
    one step per call is the natural choice: the state then goes through memory between calls, ~240 bytes
    per env-step, a fraction of the bandwidth at the rates reached on CPU. Each call costs ~0.1 ms of
    Python and guard overhead, which is what limits small batches.
    """
    key = (spec, int(k_steps), int(num_envs), bool(with_ext_force), str(torch.device(device)),
           torch.get_num_threads())
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = _fresh_compiled(spec, with_ext_force)
    return fn


def _fresh_compiled(spec: FusedSpec, with_ext_force: bool) -> Callable[..., None]:
    use_kernel_cache()
    if with_ext_force:
        def fn(state, params, commands, ext_force_w):
            rollout_(spec, state, params, commands, ext_force_w)
    else:
        def fn(state, params, commands):
            rollout_(spec, state, params, commands, None)
    return torch.compile(fresh_function(fn, f"fused_rollout_{len(_COMPILED)}"), dynamic=False, fullgraph=True,
                         options=INDUCTOR_OPTIONS)


def fresh_function(fn: Callable, name: str) -> Callable:
    """``fn`` with a copy of its code object, to hand to torch.compile once per cache key.

    Dynamo caches graphs on the code object of the function it is handed and falls back to eager after
    ``recompile_limit`` guard failures on one code object; a copy per cache key gives every key (spec,
    step count, env count, task config) its own graph instead of a chain of recompiles."""
    return type(fn)(fn.__code__.replace(), fn.__globals__, name, fn.__defaults__, fn.__closure__)

