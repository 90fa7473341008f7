"""Build a policy's observation vector from named quantities, by the contract's slices (numpy only).

The deploy side (ROS 2 runner, pybullet evaluation, digital twin) calls :func:`build_observation`; the
batched simulator computes the same quantities in torch, and tests/contract/ checks they agree.
A single state (1-D arrays) takes a scalar fast path, since the runner calls this every tick at up to
500 Hz and numpy's per-call overhead on 3-vectors dominates there; batches ([M, n]) are vectorized.
"""

from __future__ import annotations

import numpy as np

from tether.contract import ContractError, PolicyContract

# world-frame quantity -> its body-frame twin in the vocabulary
_TO_BODY = {"lin_vel_b": "lin_vel_w", "pos_err_b": "pos_err_w", "goal_vel_b": "goal_vel_w"}


def quat_wxyz_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix body->world [..., 3, 3] from unit quaternions [..., 4] (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        w, x, y, z = q.tolist()
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def _quantity(name: str, q: dict[str, np.ndarray], cache: dict) -> np.ndarray | None:
    """The named quantity, from the state or derived from it (memoized in ``cache``); None if impossible."""
    if name in q:
        return q[name]
    if name in cache:
        return cache[name]
    value = None
    if name == "pos_err_w" and "goal_w" in q and "pos_w" in q:
        value = np.asarray(q["goal_w"], dtype=np.float64) - np.asarray(q["pos_w"], dtype=np.float64)
    elif name in ("rotmat_bw", "up_b") or name in _TO_BODY:
        if "quat_wxyz" not in q:
            return None
        if "_r" not in cache:
            cache["_r"] = quat_wxyz_to_rotmat(q["quat_wxyz"])
        r = cache["_r"]
        if name == "rotmat_bw":
            value = r.reshape(r.shape[:-2] + (9,))
        elif name == "up_b":
            value = r[..., 2, :]  # R^T e_z
        else:
            v_w = _quantity(_TO_BODY[name], q, cache)
            if v_w is None:
                return None
            v_w = np.asarray(v_w, dtype=np.float64)
            value = v_w @ r if v_w.ndim == 1 else np.einsum("...ji,...j->...i", r, v_w)
    if value is not None:
        cache[name] = value
    return value


def build_observation(contract: PolicyContract, state: dict[str, np.ndarray]) -> np.ndarray:
    """Observation float32 [obs_dim] or [M, obs_dim] laid out by the contract's named slices.

    Raises ContractError naming the missing quantity, or the one with a wrong length, or non-finite.
    """
    cache: dict = {}
    parts = []
    for s in contract.observation:
        v = _quantity(s.name, state, cache)
        if v is None:
            raise ContractError(f"observation needs {s.name!r} [{s.unit}, {s.frame}] which the robot "
                                f"state does not provide (it has {sorted(state)})")
        v = np.asarray(v, dtype=np.float64)
        if v.shape[-1] != s.length:
            raise ContractError(f"{s.name!r} has length {v.shape[-1]}, the contract expects {s.length}")
        parts.append(v * s.scale if s.scale != 1.0 else v)
    obs = np.concatenate(parts, axis=-1)
    if not np.isfinite(obs).all():
        bad = [s.name for s, p in zip(contract.observation, parts) if not np.isfinite(p).all()]
        raise ContractError(f"{bad[0]!r} contains NaN or Inf")
    return obs.astype(np.float32)
