"""Numpy port of the CTBR rate controller of ``sim.quadrotor.dynamics`` and the contract's action mapping.

Same math as the torch version (tests/sim/test_pybullet_crosscheck.py checks they agree): rate
P-control plus gyroscopic feed-forward on the nominal vehicle, then a least-squares mixer from
(collective thrust, body torque) to rotor thrusts, then rotor speed fractions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim.quadrotor.presets import QuadrotorPreset
from tether.contract import ActionSpec


@dataclasses.dataclass(frozen=True)
class RateController:
    """Collective-thrust + body-rate controller on the nominal vehicle (the firmware's inner loop)."""

    kp: np.ndarray
    """[3] rate-error gain per body axis [1/s]"""
    inertia: np.ndarray
    """[3] nominal principal moments of inertia [kg m^2]"""
    mixer_pinv: np.ndarray
    """[R, 4] maps (thrust [N], tau_x, tau_y, tau_z [N m]) to rotor thrusts [N]"""
    kf: float
    """nominal thrust coefficient [N / rpm^2]"""
    max_rpm: float
    """rotor speed at full command [rpm]"""


def make_rate_controller(preset: QuadrotorPreset, kp: tuple[float, float, float] | np.ndarray) -> RateController:
    """Rate controller for ``preset`` with rate gains kp [1/s] about body x, y, z."""
    kp = np.asarray(kp, dtype=np.float64)
    if kp.shape != (3,) or not np.all(np.isfinite(kp)) or np.any(kp <= 0):
        raise ValueError(f"rate kp must be three positive gains [1/s], got {kp!r}")
    pos = np.asarray(preset.rotor_pos_b, dtype=np.float64)
    spin = np.asarray(preset.rotor_spin, dtype=np.float64)
    ratio = preset.km_nm_per_rpm2 / preset.kf_n_per_rpm2
    alloc = np.stack([np.ones_like(spin), pos[:, 1], -pos[:, 0], -spin * ratio])  # [4, R]
    return RateController(kp=kp, inertia=np.asarray(preset.inertia_kg_m2, dtype=np.float64),
                          mixer_pinv=np.linalg.pinv(alloc), kf=preset.kf_n_per_rpm2, max_rpm=preset.max_rpm)


def ctbr_to_rotor_cmd(thrust_n: np.ndarray, rates_des_b: np.ndarray, ang_vel_b: np.ndarray,
                      ctrl: RateController) -> np.ndarray:
    """Collective thrust [M, 1] or [M] N and desired body rates [M, 3] rad/s, measured body rates
    [M, 3] rad/s -> rotor commands [M, R] in [0, 1] (fraction of max rpm)."""
    thrust_n = np.asarray(thrust_n, dtype=np.float64)
    if thrust_n.ndim == np.ndim(rates_des_b) - 1:
        thrust_n = thrust_n[..., None]
    ang_vel_b = np.asarray(ang_vel_b, dtype=np.float64)
    torque = ctrl.inertia * ctrl.kp * (np.asarray(rates_des_b) - ang_vel_b) + np.cross(
        ang_vel_b, ctrl.inertia * ang_vel_b)
    wrench = np.concatenate([thrust_n, torque], axis=-1)  # [M, 4]
    f = np.maximum(wrench @ ctrl.mixer_pinv.T, 0.0)
    return np.clip(np.sqrt(f / ctrl.kf) / ctrl.max_rpm, 0.0, 1.0)


def check_action_spec(action_spec: ActionSpec, preset: QuadrotorPreset) -> None:
    """Raise ValueError unless a rotor-level policy's rotor layout is the preset's, in the same order.

    Motor numbering differs between vehicles: flying a policy with a permuted layout flips it.
    """
    if action_spec.type != "rotor":
        return
    pos = np.asarray([r.pos_b for r in action_spec.rotors], dtype=np.float64)
    spin = [r.spin for r in action_spec.rotors]
    if pos.shape != np.shape(preset.rotor_pos_b) or not np.allclose(pos, preset.rotor_pos_b, atol=1e-4) \
            or spin != list(preset.rotor_spin):
        raise ValueError(f"the policy's rotor layout (pos_b {pos.tolist()}, spin {spin}) is not the layout of "
                         f"{preset.name} (pos_b {list(preset.rotor_pos_b)}, spin {list(preset.rotor_spin)})")


def actions_to_rotor_cmd(action_spec: ActionSpec, actions: np.ndarray, ang_vel_b: np.ndarray,
                         rate_ctrl: RateController | None = None) -> np.ndarray:
    """Normalized policy actions [M, A] in [low, high] -> rotor commands [M, R] in [0, 1].

    rotor: command = (a + 1) / 2 (fraction of max rpm). ctbr: thrust [N] = (a0 + 1) / 2 * max_thrust_n,
    body rates [rad/s] = a[1:4] * body_rate_limits_rad_s, then ``rate_ctrl`` with the measured body rates
    ang_vel_b [M, 3] rad/s. Actions are clipped to [low, high] first.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape[-1] != action_spec.dim:
        raise ValueError(f"actions have width {actions.shape[-1]}, the action spec has dim {action_spec.dim}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions contain NaN or Inf")
    a = np.clip(actions, action_spec.low, action_spec.high)
    if action_spec.type == "rotor":
        return np.clip((a + 1.0) / 2.0, 0.0, 1.0)
    if rate_ctrl is None:
        raise ValueError("a ctbr action spec needs a rate controller (make_rate_controller(preset, rate_kp))")
    thrust_n = (a[..., :1] + 1.0) / 2.0 * action_spec.max_thrust_n
    rates_des_b = a[..., 1:4] * np.asarray(action_spec.body_rate_limits_rad_s, dtype=np.float64)
    return ctbr_to_rotor_cmd(thrust_n, rates_des_b, ang_vel_b, rate_ctrl)
