"""Batched rotation helpers on tensors shaped [..., 4] (w, x, y, z) and [..., 3]. Pure functions."""

from __future__ import annotations

import torch


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [..., 3, 3] body->world from quaternions [..., 4]."""
    w, x, y, z = q.unbind(-1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate body-frame vectors v [..., 3] into the world frame."""
    qv = q[..., 1:]
    t = 2.0 * torch.cross(qv, v, dim=-1)
    return v + q[..., :1] * t + torch.cross(qv, t, dim=-1)


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate world-frame vectors v [..., 3] into the body frame."""
    qv = -q[..., 1:]
    t = 2.0 * torch.cross(qv, v, dim=-1)
    return v + q[..., :1] * t + torch.cross(qv, t, dim=-1)


def quat_from_axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    half = 0.5 * angle.unsqueeze(-1)
    return torch.cat([torch.cos(half), axis * torch.sin(half)], dim=-1)


def quat_integrate(q: torch.Tensor, ang_vel_b: torch.Tensor, dt: float) -> torch.Tensor:
    """q <- q * exp(ang_vel_b * dt / 2), renormalized. Exact for constant body rate over dt."""
    theta = ang_vel_b.norm(dim=-1, keepdim=True) * dt
    half = 0.5 * theta
    # sin(x)/x is smooth at 0; its 2nd-order Taylor expansion avoids the 0/0.
    sinc = torch.where(theta > 1e-6, torch.sin(half) / theta.clamp_min(1e-12), 0.5 - theta * theta / 48.0)
    dq = torch.cat([torch.cos(half), ang_vel_b * dt * sinc], dim=-1)
    q = quat_mul(q, dq)
    return q / q.norm(dim=-1, keepdim=True)


def random_quat_within(n: int, max_angle: torch.Tensor | float, generator: torch.Generator | None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform random axis, tilt angle uniform in [0, max_angle] [rad]; shape [n, 4]."""
    axis = torch.randn(n, 3, generator=generator, device=device)
    angle = torch.rand(n, generator=generator, device=device) * max_angle
    return quat_from_axis_angle(axis, angle)
