"""Build a policy's observation vector from named quantities, by the contract's slices (numpy only).

The deploy side (ROS 2 runner, pybullet evaluation, digital twin) calls :func:`build_observation`; the
batched simulator computes the same quantities in torch, and tests/contract/ checks they agree. The one
quantity with memory, ``pos_err_int_b``, is derived from ``pos_err_int_w``, which the caller keeps with a
:class:`PositionErrorIntegral` (one per flight) and passes in the state.
A single state (1-D arrays) takes a scalar fast path, since the runner calls this every tick at up to
500 Hz and numpy's per-call overhead on 3-vectors dominates there; batches ([M, n]) are vectorized.
"""

from __future__ import annotations

import numpy as np

from tether.contract import ContractError, PolicyContract

# world-frame quantity -> its body-frame twin in the vocabulary
_TO_BODY = {"lin_vel_b": "lin_vel_w", "pos_err_b": "pos_err_w", "goal_vel_b": "goal_vel_w",
            "pos_err_int_b": "pos_err_int_w"}

POS_ERR_INT_LIMIT_M_S = 0.5
"""bound of each world-frame component of the position-error integral [m s] (the vocabulary's ``pos_err_int_b``)"""
POS_ERR_INT_BAND_M = 0.05
"""each tick integrates the error clipped to +-this, per world component [m]: anti-windup, so that the
approach from far away (tens of cm for a second or two) does not load the integral with an offset it must
then fly off; near the goal, where the steady offset lives, it is a plain integral"""


def integrate_pos_err(value_w, err_w, control_dt: float, clip):
    """One tick of the integral behind ``pos_err_int_b``: clip(I + dt * clip(e, +-band), +-limit), per world
    component; ``clip`` (np.clip or torch.clamp) lets the training simulator run the same formula."""
    return clip(value_w + control_dt * clip(err_w, -POS_ERR_INT_BAND_M, POS_ERR_INT_BAND_M),
                -POS_ERR_INT_LIMIT_M_S, POS_ERR_INT_LIMIT_M_S)


class PositionErrorIntegral:
    """The running integral behind the vocabulary's ``pos_err_int_b`` (the policy's integral action).

    Every control tick, before the observation is built: I_w <- clip(I_w + control_dt * clip(goal_w - pos_w,
    +-POS_ERR_INT_BAND_M), +-POS_ERR_INT_LIMIT_M_S) per world component, starting from zero at the
    episode's (the flight's) first tick, which already adds its own error; ``pos_err_int_b`` is I_w
    rotated into the body frame. The training simulator does exactly this (QuadrotorEnv._integrate_pos_err).
    Works on one state ([3]) or a batch ([M, 3]).
    """

    def __init__(self, control_dt: float):
        if not control_dt > 0:
            raise ValueError(f"control_dt must be > 0 s, got {control_dt}")
        self.control_dt = float(control_dt)
        self.value_w: np.ndarray | None = None  # [3] or [M, 3] m s; None: before the first tick

    def reset(self) -> None:
        self.value_w = None

    def update(self, goal_w: np.ndarray, pos_w: np.ndarray) -> np.ndarray:
        """Add this tick's error; returns the integral in the world frame, ``pos_err_int_w`` [m s] (a copy)."""
        err = np.asarray(goal_w, dtype=np.float64) - np.asarray(pos_w, dtype=np.float64)
        prev = np.zeros_like(err) if self.value_w is None else self.value_w
        self.value_w = integrate_pos_err(prev, err, self.control_dt, np.clip)
        return self.value_w.copy()


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
