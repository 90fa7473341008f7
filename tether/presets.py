"""Quadrotor presets: nominal physical parameters, each with its source (torch-free: the robot side and
the simulator read the same vehicles; sim.quadrotor.presets re-exports them).

Rotor order is the vehicle's own motor numbering (it differs between the Crazyflie, PX4 and
ArduPilot); the exported contract carries the layout so the deploy side never guesses.
``spin`` is +1 for a rotor spinning counter-clockwise seen from above (angular velocity along +z_b);
its reaction torque on the body is -spin * km * rpm^2 about z_b.
"""

from __future__ import annotations

import dataclasses
import math


def check_rotor_gain(gain, n_rotors: int, where: str) -> None:
    """A per-rotor thrust gain is None (all nominal) or one value in (0, 2] per rotor."""
    if gain is not None and (len(gain) != n_rotors or not all(0 < g <= 2 for g in gain)):
        raise ValueError(f"{where} needs one value in (0, 2] per rotor ({n_rotors}), got {gain!r}")


@dataclasses.dataclass(frozen=True)
class QuadrotorPreset:
    name: str
    mass_kg: float
    """total mass [kg]"""
    inertia_kg_m2: tuple[float, float, float]
    """principal moments of inertia about body x, y, z [kg m^2]"""
    rotor_pos_b: tuple[tuple[float, float, float], ...]
    """rotor hub positions in the body frame (x forward, y left, z up) [m], in motor order"""
    rotor_spin: tuple[int, ...]
    """+1 counter-clockwise seen from above, -1 clockwise, in motor order"""
    kf_n_per_rpm2: float
    """thrust coefficient: thrust [N] = kf * rpm^2"""
    km_nm_per_rpm2: float
    """torque coefficient: reaction torque [N m] = km * rpm^2"""
    max_rpm: float
    """rotor speed at full command [rpm]"""
    tau_up_s: float
    """first-order motor time constant when speeding up [s]"""
    tau_down_s: float
    """first-order motor time constant when slowing down [s]"""
    drag_n_s_per_m: tuple[float, float, float]
    """linear drag coefficients along body x, y, z: F_b = -drag * v_b [N s/m]"""
    source: str
    rotor_gain: tuple[float, ...] | None = None
    """this unit's thrust and reaction-torque multiplier per rotor, in motor order (a worn motor or a
    chipped propeller: < 1), e.g. identified from flight logs; None: every rotor nominal"""

    def __post_init__(self):
        if len(self.rotor_pos_b) != len(self.rotor_spin):
            raise ValueError(f"{self.name}: {len(self.rotor_pos_b)} rotor positions, "
                             f"{len(self.rotor_spin)} spin directions")
        check_rotor_gain(self.rotor_gain, len(self.rotor_spin), f"{self.name}: rotor_gain")
        if self.mass_kg <= 0 or self.kf_n_per_rpm2 <= 0 or self.max_rpm <= 0:
            raise ValueError(f"{self.name}: mass, kf and max_rpm must be positive")

    @property
    def max_thrust_n(self) -> float:
        """sum of all rotors' thrust at full command [N]"""
        return len(self.rotor_spin) * self.kf_n_per_rpm2 * self.max_rpm ** 2

    @property
    def thrust_to_weight(self) -> float:
        return self.max_thrust_n / (self.mass_kg * GRAVITY)

    @property
    def hover_rpm(self) -> float:
        return math.sqrt(self.mass_kg * GRAVITY / (len(self.rotor_spin) * self.kf_n_per_rpm2))


GRAVITY = 9.81
"""[m/s^2], along -z_w"""

_CF_ARM = 0.0397 / math.sqrt(2.0)  # 39.7 mm from the centre to each motor, motors at +-45 deg

CRAZYFLIE_2X = QuadrotorPreset(
    name="crazyflie2x",
    mass_kg=0.027,
    inertia_kg_m2=(1.4e-5, 1.4e-5, 2.17e-5),
    # Bitcraze motor numbering: M1 front-right CW, M2 back-right CCW, M3 back-left CW, M4 front-left CCW.
    rotor_pos_b=((_CF_ARM, -_CF_ARM, 0.0), (-_CF_ARM, -_CF_ARM, 0.0),
                 (-_CF_ARM, _CF_ARM, 0.0), (_CF_ARM, _CF_ARM, 0.0)),
    rotor_spin=(-1, 1, -1, 1),
    kf_n_per_rpm2=3.16e-10,
    km_nm_per_rpm2=7.94e-12,
    max_rpm=21702.0,
    # Not published by Bitcraze; public presets range 0.01-0.15 s. These are assumptions to be
    # replaced by `tether calibrate quadrotor`; the randomization spans them by a factor of 2.
    tau_up_s=0.03,
    tau_down_s=0.06,
    # gym-pybullet-drones cf2x.urdf rotor-speed-proportional drag (xy 9.1785e-7, z 10.311e-7 per rpm)
    # evaluated at the hover rotor speed of all four rotors.
    drag_n_s_per_m=(0.053, 0.053, 0.060),
    source=("mass, arm, inertia, kf, km, max rpm: J. Foerster, 'System Identification of the Crazyflie "
            "2.0 Nano Quadrocopter', ETH Zurich BSc thesis 2015, as used by gym-pybullet-drones cf2x.urdf; "
            "Bitcraze thrust-stand data imply kf ~2.4e-10, covered by the randomization range"),
)

_RADS_TO_RPM = 60.0 / (2.0 * math.pi)
_IRIS_KF_RAD = 5.84e-6  # N / (rad/s)^2, PX4 SITL gazebo iris.sdf motorConstant
_IRIS_MASS_SCALE = 1.0 / 1.5  # iris is 1.5 kg; this preset is a 1 kg vehicle with the same geometry

PX4_1KG = QuadrotorPreset(
    name="px4_1kg",
    mass_kg=1.0,
    inertia_kg_m2=(0.029125 * _IRIS_MASS_SCALE, 0.029125 * _IRIS_MASS_SCALE, 0.055225 * _IRIS_MASS_SCALE),
    # PX4 "Quadrotor X" numbering: 1 front-right CCW, 2 back-left CCW, 3 front-left CW, 4 back-right CW.
    rotor_pos_b=((0.13, -0.22, 0.0), (-0.13, 0.22, 0.0), (0.13, 0.22, 0.0), (-0.13, -0.22, 0.0)),
    rotor_spin=(1, 1, -1, -1),
    kf_n_per_rpm2=_IRIS_KF_RAD / _RADS_TO_RPM ** 2,
    km_nm_per_rpm2=0.06 * _IRIS_KF_RAD / _RADS_TO_RPM ** 2,  # momentConstant 0.06 m
    max_rpm=1100.0 * _RADS_TO_RPM,
    tau_up_s=0.0125,
    tau_down_s=0.025,
    # rotorDragCoefficient 8.06428e-5 per (rad/s)(m/s) at the 1 kg hover speed of 4 rotors; z assumed.
    drag_n_s_per_m=(0.21, 0.21, 0.10),
    source=("PX4-Autopilot SITL gazebo models/iris/iris.sdf (geometry, motorConstant, momentConstant, "
            "timeConstantUp/Down, maxRotVelocity, rotorDragCoefficient); mass set to 1.0 kg and inertia "
            "scaled by 1/1.5 from iris"),
)

PRESETS: dict[str, QuadrotorPreset] = {p.name: p for p in (CRAZYFLIE_2X, PX4_1KG)}
