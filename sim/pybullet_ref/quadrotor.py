"""The quadrotor of ``sim.quadrotor.dynamics`` in pybullet: the reference physics (torch-free).

N drones live in one pybullet world (DIRECT mode, own client, no collisions between them). There is no
ground unless ``ground_z_m`` is given (the digital twin's; evaluation flies without one, as the torch sim).
Bullet integrates the rigid body (semi-implicit Euler, gyroscopic term included); the rotors, motor
lag and drag are ours and identical to the torch model: first-order motor lag with separate rising and
falling time constants, thrust kf*gain*rpm^2 along +z_b at each hub, reaction torque
-spin*km*gain*rpm^2 about z_b, linear body-frame drag F_b = -drag * v_b at the body origin.

Frames and conventions at the boundary:
  * quaternions are w, x, y, z (pybullet's own order is x, y, z, w: converted here and nowhere else);
  * positions and linear velocities are of the *body origin* (the rotor plane centre). Pybullet's base
    frame is the centre of mass, which differs from the origin when ``com_offset_b`` is set;
  * angular velocity is in the body frame (pybullet reports it in the world frame).

The rotor wrench is summed about the centre of mass in numpy and applied as one world-frame force at
the COM plus one world-frame torque per drone and substep: the same physics as one force per hub, with
no dependence on how pybullet interprets LINK_FRAME for a base link (historically inconsistent).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pybullet as pb

from sim.quadrotor.presets import GRAVITY, QuadrotorPreset
from tether.observation import quat_wxyz_to_rotmat

_MAX_COORDINATE_VELOCITY = 1.0e4  # pybullet clamps base velocities to 100 m/s, rad/s by default


def generate_urdf(preset: QuadrotorPreset, path: str | Path | None = None, mass_kg: float | None = None,
                  inertia_kg_m2: tuple[float, float, float] | None = None,
                  com_offset_b: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> str:
    """Write a one-link URDF for ``preset`` and return its path.

    mass_kg [kg] and inertia_kg_m2 (principal moments about the COM, body axes) [kg m^2] default to the
    preset's; com_offset_b [m] is the centre of mass in the body frame (a payload off the centre).
    The collision box only exists because pybullet needs one; collisions are disabled by the world.
    ``path=None`` writes a fresh temporary file.
    """
    # float(): repr of a numpy scalar is 'np.float64(...)', which the URDF parser reads as 0.
    m = float(preset.mass_kg if mass_kg is None else mass_kg)
    ixx, iyy, izz = (float(x) for x in (preset.inertia_kg_m2 if inertia_kg_m2 is None else inertia_kg_m2))
    arm = max(float(np.hypot(x, y)) for x, y, _ in preset.rotor_pos_b)
    cx, cy, cz = (float(x) for x in com_offset_b)
    if m <= 0 or min(ixx, iyy, izz) <= 0:
        raise ValueError(f"URDF needs a positive mass [kg] and inertia [kg m^2], got {m}, {(ixx, iyy, izz)}")
    text = f"""<?xml version="1.0"?>
<robot name="{preset.name}">
  <link name="base_link">
    <inertial>
      <origin xyz="{cx!r} {cy!r} {cz!r}" rpy="0 0 0"/>
      <mass value="{m!r}"/>
      <inertia ixx="{ixx!r}" ixy="0" ixz="0" iyy="{iyy!r}" iyz="0" izz="{izz!r}"/>
    </inertial>
    <collision>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <geometry><box size="{arm!r} {arm!r} {0.2 * arm!r}"/></geometry>
    </collision>
  </link>
</robot>
"""
    if path is None:
        fd, path = tempfile.mkstemp(suffix=".urdf", prefix=f"{preset.name}_")
        with open(fd, "w") as f:
            f.write(text)
    else:
        Path(path).write_text(text)
    return str(path)


@dataclasses.dataclass(frozen=True)
class PhysicsOverrides:
    """Per-drone deviations from the preset, to perturb a twin or evaluate robustness.

    Each field is None (nominal) or an array broadcastable to the shape given.
    """

    mass_scale: np.ndarray | float | None = None
    """[num] multiplies the preset mass [1]"""
    inertia_scale: np.ndarray | float | None = None
    """[num, 3] multiplies the principal moments of inertia [1]"""
    kf_scale: np.ndarray | float | None = None
    """[num] multiplies the thrust coefficient [1]"""
    km_scale: np.ndarray | float | None = None
    """[num] multiplies the reaction-torque coefficient [1]"""
    tau_scale: np.ndarray | float | None = None
    """[num] multiplies both motor time constants [1]"""
    drag_scale: np.ndarray | float | None = None
    """[num, 3] multiplies the linear drag coefficients [1]"""
    rotor_gain: np.ndarray | float | None = None
    """[num, R] thrust and torque multiplier per rotor (1 nominal, 0.7 a weakened motor) [1]"""
    com_offset_b: np.ndarray | None = None
    """[num, 3] centre of mass in the body frame [m] (0 nominal)"""
    max_rpm_scale: np.ndarray | float | None = None
    """[num] multiplies the rotor speed at full command (sets the thrust-to-weight ratio) [1]"""
    tau_up_scale: np.ndarray | float | None = None
    """[num] multiplies the rising motor time constant, on top of tau_scale [1]"""
    tau_down_scale: np.ndarray | float | None = None
    """[num] multiplies the falling motor time constant, on top of tau_scale [1]"""


def _per_drone(value, default: float, shape: tuple[int, ...], name: str) -> np.ndarray:
    if value is None:
        return np.full(shape, default, dtype=np.float64)
    try:
        out = np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    except ValueError as e:
        raise ValueError(f"override {name!r} of shape {np.shape(value)} does not broadcast to {shape}") from e
    if not np.all(np.isfinite(out)):
        raise ValueError(f"override {name!r} contains NaN or Inf")
    return out


def motor_lag(rpm: np.ndarray, rpm_cmd: np.ndarray, tau_up: np.ndarray, tau_down: np.ndarray,
              dt: float) -> np.ndarray:
    """Exact discretization of d(rpm)/dt = (rpm_cmd - rpm) / tau, tau chosen by the sign of the error."""
    tau = np.where(rpm_cmd > rpm, tau_up, tau_down)
    return rpm + (rpm_cmd - rpm) * (1.0 - np.exp(-dt / tau))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b over the last axis [..., 3] (np.cross costs ~10x more on small arrays: axis juggling)."""
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                     a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _rotate_world_to_body(quat_wxyz: np.ndarray, v_w: np.ndarray) -> np.ndarray:
    return np.einsum("nji,nj->ni", quat_wxyz_to_rotmat(quat_wxyz), v_w)


def _xyzw(q_wxyz: np.ndarray) -> list[float]:
    return [float(q_wxyz[1]), float(q_wxyz[2]), float(q_wxyz[3]), float(q_wxyz[0])]


class PybulletQuadrotors:
    """``num`` quadrotors of one preset in one pybullet world, stepped together.

    dt: control period [s] (one :meth:`step`); substeps: physics steps per control period, each
    dt / substeps seconds, with the motor lag and rotor forces updated per substep. ground_z_m: height
    of a static ground plane the drones collide with [m]; None: no ground.
    """

    def __init__(self, preset: QuadrotorPreset, num: int, dt: float, substeps: int = 4,
                 overrides: PhysicsOverrides | None = None, ground_z_m: float | None = None):
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        if not dt > 0 or substeps < 1:
            raise ValueError(f"dt must be > 0 [s] and substeps >= 1, got dt={dt}, substeps={substeps}")
        o = overrides or PhysicsOverrides()
        self.preset, self.num, self.dt, self.substeps = preset, num, float(dt), int(substeps)
        self.h = self.dt / self.substeps
        n_rotors = len(preset.rotor_spin)
        self.mass = preset.mass_kg * _per_drone(o.mass_scale, 1.0, (num,), "mass_scale")  # [num] kg
        self.inertia = np.asarray(preset.inertia_kg_m2) * _per_drone(o.inertia_scale, 1.0, (num, 3),
                                                                      "inertia_scale")  # [num, 3] kg m^2
        self.kf = preset.kf_n_per_rpm2 * _per_drone(o.kf_scale, 1.0, (num,), "kf_scale")[:, None]  # [num, 1]
        self.km = preset.km_nm_per_rpm2 * _per_drone(o.km_scale, 1.0, (num,), "km_scale")[:, None]
        tau = _per_drone(o.tau_scale, 1.0, (num,), "tau_scale")[:, None]
        self.tau_up = preset.tau_up_s * tau * _per_drone(o.tau_up_scale, 1.0, (num,), "tau_up_scale")[:, None]
        self.tau_down = preset.tau_down_s * tau * _per_drone(o.tau_down_scale, 1.0, (num,), "tau_down_scale")[:, None]
        self.drag = np.asarray(preset.drag_n_s_per_m) * _per_drone(o.drag_scale, 1.0, (num, 3), "drag_scale")
        self.rotor_gain = _per_drone(o.rotor_gain, 1.0, (num, n_rotors), "rotor_gain")  # [num, R]
        if preset.rotor_gain is not None:  # the unit's own rotors, times any override
            self.rotor_gain = self.rotor_gain * np.asarray(preset.rotor_gain)
        self.com_b = _per_drone(o.com_offset_b, 0.0, (num, 3), "com_offset_b")  # [num, 3] m
        self.max_rpm = preset.max_rpm * _per_drone(o.max_rpm_scale, 1.0, (num,), "max_rpm_scale")[:, None]
        if np.any(self.mass <= 0) or np.any(self.inertia <= 0) or np.any(self.tau_up <= 0) \
                or np.any(self.tau_down <= 0) or np.any(self.max_rpm <= 0):
            raise ValueError("mass, inertia, motor time constants and max rpm must stay positive after overrides")
        self.rotor_pos_b = np.asarray(preset.rotor_pos_b, dtype=np.float64)  # [R, 3] m
        self.rotor_spin = np.asarray(preset.rotor_spin, dtype=np.float64)  # [R]
        self.rotor_rpm = np.full((num, n_rotors), preset.hover_rpm)  # [num, R] rpm
        self.ground_z_m = None if ground_z_m is None else float(ground_z_m)
        self.ground = -1  # pybullet body id of the ground plane, -1: none

        self._tmp = tempfile.TemporaryDirectory(prefix="tether_pybullet_")
        self.client = pb.connect(pb.DIRECT)
        if self.client < 0:
            self._tmp.cleanup()
            raise RuntimeError("pybullet could not start a DIRECT physics client")
        self.bodies: list[int] = []
        try:
            self._build_world()
        except BaseException:
            self.close()
            raise

    def _build_world(self) -> None:
        pb.setGravity(0.0, 0.0, -GRAVITY, physicsClientId=self.client)
        pb.setPhysicsEngineParameter(fixedTimeStep=self.h, numSubSteps=0, physicsClientId=self.client)
        if self.ground_z_m is not None:
            plane = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=self.client)
            self.ground = pb.createMultiBody(0.0, plane, basePosition=[0.0, 0.0, self.ground_z_m],
                                             physicsClientId=self.client)
            # group 2 collides with the drones (group 1); the drones never collide with each other
            pb.setCollisionFilterGroupMask(self.ground, -1, 2, 1, physicsClientId=self.client)
        urdf_cache: dict[tuple, str] = {}
        for i in range(self.num):
            key = (self.mass[i], *self.inertia[i], *self.com_b[i])
            if key not in urdf_cache:
                path = Path(self._tmp.name) / f"drone_{len(urdf_cache)}.urdf"
                urdf_cache[key] = generate_urdf(self.preset, path, self.mass[i], tuple(self.inertia[i]),
                                                tuple(self.com_b[i]))
            body = pb.loadURDF(urdf_cache[key], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0],
                               flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=self.client)
            # Bullet defaults: 0.04 linear/angular damping, sleeping at rest, 100 m/s and rad/s velocity caps.
            pb.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0,
                              maxJointVelocity=_MAX_COORDINATE_VELOCITY,
                              activationState=pb.ACTIVATION_STATE_DISABLE_SLEEPING, physicsClientId=self.client)
            ground = self.ground_z_m is not None
            pb.setCollisionFilterGroupMask(body, -1, 1 if ground else 0, 2 if ground else 0,
                                           physicsClientId=self.client)
            self.bodies.append(body)
        z3 = np.zeros((self.num, 3))
        self.reset(z3, np.tile([1.0, 0.0, 0.0, 0.0], (self.num, 1)), z3, z3)

    # ------------------------------------------------------------------------------------ state

    def _read_com(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """COM position [num, 3] m, quaternion wxyz [num, 4], COM velocity [num, 3] m/s, world rate [num, 3]."""
        pos, quat, vel, omega = (np.empty((self.num, 3)), np.empty((self.num, 4)), np.empty((self.num, 3)),
                                 np.empty((self.num, 3)))
        for i, body in enumerate(self.bodies):
            p, q = pb.getBasePositionAndOrientation(body, physicsClientId=self.client)
            v, w = pb.getBaseVelocity(body, physicsClientId=self.client)
            pos[i], quat[i], vel[i], omega[i] = p, (q[3], q[0], q[1], q[2]), v, w
        return pos, quat, vel, omega

    def state(self) -> dict[str, np.ndarray]:
        """pos_w [num, 3] m, quat_wxyz [num, 4] body->world, lin_vel_w [num, 3] m/s (body origin),
        ang_vel_b [num, 3] rad/s, rotor_rpm [num, R] rpm. Fresh arrays."""
        pos_com, quat, vel_com, omega_w = self._read_com()
        r_bw = quat_wxyz_to_rotmat(quat)
        com_w = np.einsum("nij,nj->ni", r_bw, self.com_b)
        return {
            "pos_w": pos_com - com_w,
            "quat_wxyz": quat,
            "lin_vel_w": vel_com - _cross(omega_w, com_w),
            "ang_vel_b": _rotate_world_to_body(quat, omega_w),
            "rotor_rpm": self.rotor_rpm.copy(),
        }

    def reset(self, pos_w: np.ndarray, quat_wxyz: np.ndarray, lin_vel_w: np.ndarray, ang_vel_b: np.ndarray,
              rotor_rpm: np.ndarray | None = None, ids: np.ndarray | None = None) -> None:
        """Place drones: body-origin position [n, 3] m, attitude wxyz [n, 4], body-origin velocity [n, 3] m/s,
        body rate [n, 3] rad/s, rotor speeds [n, R] rpm (None: the nominal hover speed).

        ids: which drones (n of them); None: all, n = num.
        """
        ids = np.arange(self.num) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(ids)
        pos_w = np.broadcast_to(np.asarray(pos_w, dtype=np.float64), (n, 3))
        quat = np.broadcast_to(np.asarray(quat_wxyz, dtype=np.float64), (n, 4))
        lin_vel_w = np.broadcast_to(np.asarray(lin_vel_w, dtype=np.float64), (n, 3))
        ang_vel_b = np.broadcast_to(np.asarray(ang_vel_b, dtype=np.float64), (n, 3))
        for name, a in (("pos_w", pos_w), ("quat_wxyz", quat), ("lin_vel_w", lin_vel_w), ("ang_vel_b", ang_vel_b)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"reset: {name} contains NaN or Inf")
        quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
        r_bw = quat_wxyz_to_rotmat(quat)
        com_w = np.einsum("nij,nj->ni", r_bw, self.com_b[ids])
        omega_w = np.einsum("nij,nj->ni", r_bw, ang_vel_b)
        vel_com = lin_vel_w + _cross(omega_w, com_w)
        for j, i in enumerate(ids):
            body = self.bodies[i]
            pb.resetBasePositionAndOrientation(body, (pos_w[j] + com_w[j]).tolist(), _xyzw(quat[j]),
                                               physicsClientId=self.client)
            pb.resetBaseVelocity(body, vel_com[j].tolist(), omega_w[j].tolist(), physicsClientId=self.client)
        rpm = self.preset.hover_rpm if rotor_rpm is None else np.asarray(rotor_rpm, dtype=np.float64)
        self.rotor_rpm[ids] = np.broadcast_to(rpm, (n, self.rotor_rpm.shape[1]))

    def ground_contact(self) -> np.ndarray:
        """[num] bool: the drone touches the ground plane now (all False without a ground)."""
        if self.ground < 0:
            return np.zeros(self.num, dtype=bool)
        return np.array([len(pb.getContactPoints(bodyA=b, bodyB=self.ground, physicsClientId=self.client)) > 0
                         for b in self.bodies])

    # ------------------------------------------------------------------------------------- step

    def _wrench_about_com(self, quat: np.ndarray, vel_com: np.ndarray, omega_w: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Rotor + drag force [num, 3] N and torque about the COM [num, 3] N m, both in the world frame."""
        r_bw = quat_wxyz_to_rotmat(quat)
        rpm2 = self.rotor_rpm ** 2
        f = self.kf * self.rotor_gain * rpm2  # [num, R] N along +z_b at each hub
        lever_b = self.rotor_pos_b[None] - self.com_b[:, None]  # [num, R, 3] hub relative to COM
        torque_b = np.stack([(f * lever_b[..., 1]).sum(-1),
                             -(f * lever_b[..., 0]).sum(-1),
                             -(self.km * self.rotor_gain * rpm2 * self.rotor_spin).sum(-1)], axis=-1)
        origin_rel_w = -np.einsum("nij,nj->ni", r_bw, self.com_b)
        vel_origin_b = np.einsum("nji,nj->ni", r_bw, vel_com + _cross(omega_w, origin_rel_w))
        drag_b = -self.drag * vel_origin_b  # acts at the body origin
        torque_b = torque_b + _cross(-self.com_b, drag_b)
        force_b = drag_b
        force_b[:, 2] += f.sum(-1)
        return np.einsum("nij,nj->ni", r_bw, force_b), np.einsum("nij,nj->ni", r_bw, torque_b)

    def step(self, rotor_cmd: np.ndarray | Callable[[np.ndarray], np.ndarray],
             ext_force_w: np.ndarray | None = None) -> None:
        """Advance one control period dt with rotor_cmd [num, R] in [0, 1] (fraction of max rpm, clipped)
        held; or with a callable ang_vel_b [num, 3] -> rotor_cmd evaluated every substep (an on-board
        rate controller). ext_force_w [num, 3] N is an optional world-frame force at the COM (wind)."""
        ext = None if ext_force_w is None else np.broadcast_to(np.asarray(ext_force_w, np.float64), (self.num, 3))
        for _ in range(self.substeps):
            pos_com, quat, vel_com, omega_w = self._read_com()
            cmd = rotor_cmd(_rotate_world_to_body(quat, omega_w)) if callable(rotor_cmd) else rotor_cmd
            cmd = np.asarray(cmd, dtype=np.float64)
            if cmd.shape != self.rotor_rpm.shape:
                raise ValueError(f"rotor_cmd has shape {cmd.shape}, expected {self.rotor_rpm.shape}")
            if not np.all(np.isfinite(cmd)):
                raise ValueError("rotor_cmd contains NaN or Inf")
            self.rotor_rpm = motor_lag(self.rotor_rpm, np.clip(cmd, 0.0, 1.0) * self.max_rpm, self.tau_up,
                                       self.tau_down, self.h)
            force_w, torque_w = self._wrench_about_com(quat, vel_com, omega_w)
            if ext is not None:
                force_w = force_w + ext
            for i, body in enumerate(self.bodies):
                pb.applyExternalForce(body, -1, force_w[i].tolist(), pos_com[i].tolist(), pb.WORLD_FRAME,
                                      physicsClientId=self.client)
                pb.applyExternalTorque(body, -1, torque_w[i].tolist(), pb.WORLD_FRAME, physicsClientId=self.client)
            pb.stepSimulation(physicsClientId=self.client)

    # ---------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        if self.client >= 0:
            pb.disconnect(physicsClientId=self.client)
            self.client = -1
        self._tmp.cleanup()

    def __enter__(self) -> "PybulletQuadrotors":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
