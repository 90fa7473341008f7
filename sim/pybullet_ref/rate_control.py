"""The CTBR rate controller and the contract's action mapping for the pybullet reference, by preset.

The math is :mod:`tether.actions` (the one implementation the robot side uses too); this module only
builds it from a :class:`QuadrotorPreset` and keeps the call shapes the pybullet evaluation and the
twin use. tests/sim/test_pybullet_crosscheck.py checks it against the torch controller of
``sim.quadrotor.dynamics``.
"""

from __future__ import annotations

import numpy as np

from sim.quadrotor.presets import QuadrotorPreset
from tether import actions as semantics
from tether.actions import RateController  # noqa: F401 (the type callers hold)
from tether.contract import ActionSpec


def make_rate_controller(preset: QuadrotorPreset, kp: tuple[float, float, float] | np.ndarray) -> RateController:
    """Rate controller for ``preset`` (its nominal inertia, layout, kf, km, max rpm) with rate gains kp
    [1/s] about body x, y, z."""
    return RateController.for_vehicle(preset.rotor_pos_b, preset.rotor_spin, preset.kf_n_per_rpm2,
                                      preset.km_nm_per_rpm2, preset.max_rpm, preset.inertia_kg_m2, kp)


def ctbr_to_rotor_cmd(thrust_n: np.ndarray, rates_des_b: np.ndarray, ang_vel_b: np.ndarray,
                      ctrl: RateController) -> np.ndarray:
    """Collective thrust [M, 1] or [M] N and desired body rates [M, 3] rad/s, measured body rates
    [M, 3] rad/s -> rotor commands [M, R] in [0, 1] (fraction of max rpm)."""
    return ctrl.rotor_command(thrust_n, rates_des_b, ang_vel_b)


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
    """Normalized policy actions [M, A] in [low, high] -> rotor commands [M, R] in [0, 1], by
    :class:`tether.actions.ActionMap` (clipped to [low, high] first; NaN refused); ctbr actions go
    through ``rate_ctrl`` with the measured body rates ang_vel_b [M, 3] rad/s."""
    return semantics.actions_to_rotor_cmd(semantics.action_map(action_spec), actions, ang_vel_b, rate_ctrl)
