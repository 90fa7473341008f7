"""Forward kinematics of a serial arm from a Denavit-Hartenberg table (numpy only, no URDF, no rclpy).

Standard (distal) DH convention, one row per joint i, from the base frame outwards:
    T_i = Rot_z(theta_i) Trans_z(d_i) Trans_x(a_i) Rot_x(alpha_i)
with theta_i = theta_offset_i + q_i for a revolute joint (q in rad) and d_i = d_offset_i + q_i for a
prismatic one (q in m). The end-effector pose is T_0 T_1 ... T_{N-1} in the arm's base frame.
Used by hardware/arm.py for its workspace limits and by the stand-in arm (sim/standins) for MoveIt
Servo-like twist commands.
"""

from __future__ import annotations

import dataclasses

import numpy as np

JOINT_KINDS = ("revolute", "prismatic")


@dataclasses.dataclass(frozen=True)
class DhChain:
    """A serial chain in standard DH parameters, one entry per joint, base outwards."""

    a_m: tuple[float, ...]
    """link length along x_i [m]"""
    alpha_rad: tuple[float, ...]
    """link twist about x_i [rad]"""
    d_m: tuple[float, ...]
    """link offset along z_{i-1} (added to q for a prismatic joint) [m]"""
    theta_rad: tuple[float, ...]
    """joint angle offset about z_{i-1} (added to q for a revolute joint) [rad]"""
    kinds: tuple[str, ...]
    """'revolute' or 'prismatic' per joint"""

    def __post_init__(self):
        n = len(self.kinds)
        for name in ("a_m", "alpha_rad", "d_m", "theta_rad"):
            values = getattr(self, name)
            if len(values) != n:
                raise ValueError(f"DH {name} has {len(values)} entries for {n} joints")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"DH {name} must be finite, got {list(values)}")
        for k in self.kinds:
            if k not in JOINT_KINDS:
                raise ValueError(f"joint kind {k!r} is not one of {JOINT_KINDS}")

    @property
    def n_joints(self) -> int:
        return len(self.kinds)

    def frames(self, q) -> np.ndarray:
        """[N + 1, 4, 4] the base frame and each joint's distal frame in the base frame at positions q [N]."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n_joints,):
            raise ValueError(f"q has shape {q.shape}, the chain has {self.n_joints} joints")
        out = np.empty((self.n_joints + 1, 4, 4))
        out[0] = np.eye(4)
        for i, kind in enumerate(self.kinds):
            theta = self.theta_rad[i] + (q[i] if kind == "revolute" else 0.0)
            d = self.d_m[i] + (q[i] if kind == "prismatic" else 0.0)
            ct, st = np.cos(theta), np.sin(theta)
            ca, sa = np.cos(self.alpha_rad[i]), np.sin(self.alpha_rad[i])
            link = np.array([[ct, -st * ca, st * sa, self.a_m[i] * ct],
                             [st, ct * ca, -ct * sa, self.a_m[i] * st],
                             [0.0, sa, ca, d],
                             [0.0, 0.0, 0.0, 1.0]])
            out[i + 1] = out[i] @ link
        return out

    def ee_pos_batch(self, q) -> np.ndarray:
        """[B, 3] end-effector positions in the base frame [m] at joint positions q [B, N] (one numpy pass
        for many configurations: the workspace check of a command line)."""
        q = np.asarray(q, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != self.n_joints:
            raise ValueError(f"q has shape {q.shape}, expected [B, {self.n_joints}]")
        revolute = np.array([k == "revolute" for k in self.kinds])
        theta = np.asarray(self.theta_rad) + np.where(revolute, q, 0.0)
        d = np.asarray(self.d_m) + np.where(revolute, 0.0, q)
        ct, st = np.cos(theta), np.sin(theta)
        ca, sa = np.cos(self.alpha_rad), np.sin(self.alpha_rad)
        a = np.asarray(self.a_m)
        link = np.zeros(q.shape + (4, 4))
        link[..., 0, 0], link[..., 0, 1], link[..., 0, 2], link[..., 0, 3] = ct, -st * ca, st * sa, a * ct
        link[..., 1, 0], link[..., 1, 1], link[..., 1, 2], link[..., 1, 3] = st, ct * ca, -ct * sa, a * st
        link[..., 2, 1], link[..., 2, 2], link[..., 2, 3] = sa, ca, d
        link[..., 3, 3] = 1.0
        pose = link[:, 0]
        for i in range(1, self.n_joints):
            pose = pose @ link[:, i]
        return pose[:, :3, 3]

    def ee_pose(self, q) -> np.ndarray:
        """[4, 4] end-effector pose in the base frame."""
        return self.frames(q)[-1]

    def ee_pos(self, q) -> np.ndarray:
        """[3] end-effector position in the base frame [m]."""
        return self.frames(q)[-1, :3, 3]

    def jacobian(self, q) -> np.ndarray:
        """[6, N] geometric Jacobian in the base frame: (linear [m/s], angular [rad/s]) = J @ qdot."""
        f = self.frames(q)
        p_ee = f[-1, :3, 3]
        jac = np.zeros((6, self.n_joints))
        for i, kind in enumerate(self.kinds):
            z, p = f[i, :3, 2], f[i, :3, 3]
            if kind == "revolute":
                jac[:3, i] = np.cross(z, p_ee - p)
                jac[3:, i] = z
            else:
                jac[:3, i] = z
        return jac


def rotmat_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [4] unit quaternion, w first (w >= 0)."""
    m = np.asarray(r, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0.0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def twist_to_joint_velocity(chain: DhChain, q, lin_vel_m_s, ang_vel_rad_s, damping: float = 0.005) -> np.ndarray:
    """Joint velocities [N] that best produce an end-effector twist in the base frame (damped least
    squares, Nakamura and Hanafusa 1986: qdot = J^T (J J^T + lambda^2 I)^-1 v), as MoveIt Servo does
    with its pseudo-inverse; an arm with fewer than 6 joints gets the nearest twist it can make. damping
    lambda [m]: small beside the smallest singular value away from singularities (0.04 for the default arm)."""
    jac = chain.jacobian(q)
    v = np.concatenate([np.asarray(lin_vel_m_s, dtype=np.float64), np.asarray(ang_vel_rad_s, dtype=np.float64)])
    return jac.T @ np.linalg.solve(jac @ jac.T + damping ** 2 * np.eye(6), v)
