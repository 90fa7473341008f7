"""Build a policy's observation vector from named quantities, by the contract's slices (numpy only).

The deploy side (ROS 2 runner, pybullet evaluation, digital twin) calls :func:`build_observation`; the
batched simulator computes the same quantities in torch, and tests/contract/ checks they agree.
"""

from __future__ import annotations

import numpy as np

from tether.contract import ContractError, PolicyContract


def quat_wxyz_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix body->world [..., 3, 3] from unit quaternions [..., 4] (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def derive_quantities(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add derived vocabulary entries (pos_err_w/_b, rotmat_bw, up_b, lin_vel_b, goal_vel_b) to the raw state.

    ``state`` holds arrays shaped [..., n]; at least pos_w, quat_wxyz, lin_vel_w, ang_vel_b.
    """
    q = dict(state)
    if "goal_w" in q and "pos_w" in q and "pos_err_w" not in q:
        q["pos_err_w"] = np.asarray(q["goal_w"]) - np.asarray(q["pos_w"])
    if "quat_wxyz" in q:
        r = quat_wxyz_to_rotmat(q["quat_wxyz"])
        q.setdefault("rotmat_bw", r.reshape(r.shape[:-2] + (9,)))
        q.setdefault("up_b", r[..., 2, :])  # R^T e_z
        for world, body in (("lin_vel_w", "lin_vel_b"), ("pos_err_w", "pos_err_b"), ("goal_vel_w", "goal_vel_b")):
            if world in q and body not in q:
                q[body] = np.einsum("...ji,...j->...i", r, np.asarray(q[world]))
    return q


def build_observation(contract: PolicyContract, state: dict[str, np.ndarray]) -> np.ndarray:
    """Observation float32 [..., obs_dim] laid out by the contract's named slices.

    Raises ContractError naming the missing quantity, or the one with a wrong length, or non-finite.
    """
    q = derive_quantities(state)
    parts = []
    for s in contract.observation:
        if s.name not in q:
            raise ContractError(f"observation needs {s.name!r} [{s.unit}, {s.frame}] which the robot "
                                f"state does not provide (it has {sorted(q)})")
        v = np.asarray(q[s.name], dtype=np.float64)
        if v.shape[-1] != s.length:
            raise ContractError(f"{s.name!r} has length {v.shape[-1]}, the contract expects {s.length}")
        if not np.all(np.isfinite(v)):
            raise ContractError(f"{s.name!r} contains NaN or Inf")
        parts.append(v * s.scale)
    return np.concatenate(parts, axis=-1).astype(np.float32)
