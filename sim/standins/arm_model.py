"""The stand-in arm's joint dynamics (numpy only; sim/standins/arm_node.py puts it on ROS 2).

A first-order tracking model of a ros2_control arm with ideal joint controllers: each joint's position
(position commands) or velocity (velocity and twist commands) follows its command with time constant
``tau_s``; a twist is turned into joint velocities by the damped least squares of
hardware.arm_kinematics, as MoveIt Servo does, and lapses after ``twist_timeout_s`` (Servo's
incoming_command_timeout). Forward commands hold until the next one, as ros2_control's forward
command controllers do. No limits: the stand-in executes what it is sent, so a test sees exactly what
an adapter let through.
"""

from __future__ import annotations

import math

import numpy as np

from hardware.arm_kinematics import DhChain, twist_to_joint_velocity

MODES = ("hold", "position", "velocity", "twist")


class TrackingArm:
    def __init__(self, joint_names, q0, tau_s: float = 0.05, chain: DhChain | None = None,
                 twist_timeout_s: float = 0.1):
        self.names = tuple(joint_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.q = np.array(q0, dtype=np.float64)
        if self.q.shape != (len(self.names),):
            raise ValueError(f"{len(self.q)} initial positions for {len(self.names)} joints")
        if not tau_s > 0:
            raise ValueError(f"tau_s must be positive [s], got {tau_s}")
        self.qd = np.zeros_like(self.q)
        self.tau_s, self.chain, self.twist_timeout_s = float(tau_s), chain, float(twist_timeout_s)
        self.mode = "hold"
        self.q_target = self.q.copy()
        self.v_target = np.zeros_like(self.q)
        self.twist = np.zeros(6)
        self.twist_time_s = -math.inf
        self.commands = 0

    def _values(self, values, what: str) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != self.q.shape or not np.all(np.isfinite(v)):
            raise ValueError(f"{what}: {len(v)} values for {len(self.names)} joints, or not finite")
        return v

    def trajectory(self, names, positions) -> None:
        """A (single-point) trajectory: its last point's positions, mapped by joint name."""
        if sorted(names) != sorted(self.names) or len(positions) != len(names):
            raise ValueError(f"trajectory joints {list(names)} are not {list(self.names)}")
        target = np.empty_like(self.q)
        for name, p in zip(names, positions):
            target[self.index[name]] = p
        self.q_target, self.mode = self._values(target, "trajectory"), "position"
        self.commands += 1

    def forward_position(self, values) -> None:
        self.q_target, self.mode = self._values(values, "forward position"), "position"
        self.commands += 1

    def forward_velocity(self, values) -> None:
        self.v_target, self.mode = self._values(values, "forward velocity"), "velocity"
        self.commands += 1

    def servo_twist(self, lin, ang, now_s: float) -> None:
        if self.chain is None:
            raise ValueError("twist commands need the arm's DH chain")
        self.twist = np.concatenate([np.asarray(lin, dtype=np.float64), np.asarray(ang, dtype=np.float64)])
        self.twist_time_s, self.mode = now_s, "twist"
        self.commands += 1

    def step(self, dt: float, now_s: float) -> None:
        k = 1.0 - math.exp(-dt / self.tau_s)  # exact first-order step over dt
        if self.mode in ("hold", "position"):
            target = self.q_target
            q_new = self.q + (target - self.q) * k
            self.qd = (q_new - self.q) / dt
            self.q = q_new
            return
        if self.mode == "velocity":
            v_cmd = self.v_target
        elif now_s - self.twist_time_s <= self.twist_timeout_s:
            v_cmd = twist_to_joint_velocity(self.chain, self.q, self.twist[:3], self.twist[3:])
        else:
            v_cmd = np.zeros_like(self.q)
        self.qd = self.qd + (v_cmd - self.qd) * k
        self.q = self.q + self.qd * dt
