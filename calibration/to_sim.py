"""Calibration file -> simulator: nominal parameters and randomization ranges for one physical unit.

The identified values replace the preset's nominal values; each multiplicative randomization range
becomes ``1 +- max(k * sigma / value, floor)``, so the simulator randomizes over what the calibration
could not pin down, and never less than a floor per parameter (the unit changes between flights:
battery sag, prop wear, payload). ``thrust_to_weight`` is switched off: it would resample max rpm and
so override the identified thrust coefficient.
"""

from __future__ import annotations

import dataclasses

from calibration.files import CalibrationFile, Param
from sim.quadrotor.presets import QuadrotorPreset
from sim.randomization import RandomizationCfg


@dataclasses.dataclass(frozen=True)
class RangeFloors:
    """Smallest half-width of each randomization range, as a fraction of the nominal value [1]."""

    mass: float = 0.02
    """mass, when it was weighed [1]"""
    inertia: float = 0.05
    """principal moments of inertia [1]"""
    kf: float = 0.02
    """thrust coefficient [1]"""
    km: float = 0.05
    """torque coefficient [1]"""
    tau: float = 0.10
    """motor time constants [1]"""
    drag: float = 0.10
    """linear drag coefficients [1]"""
    max_half_width: float = 0.9
    """cap on any half-width, so every sampled scale stays positive [1]"""


def _half_width(params: list[Param], k: float, floor: float, cap: float) -> float:
    rel = max((k * p.sigma / abs(p.value) if p.value != 0 else cap) for p in params)
    return min(max(rel, floor), cap)


def _scale_range(h: float) -> tuple[float, float]:
    return (1.0 - h, 1.0 + h)


def preset_and_randomization(calib: CalibrationFile, base_preset: QuadrotorPreset, k: float = 2.0,
                             floors: RangeFloors = RangeFloors(),
                             base_randomization: RandomizationCfg = RandomizationCfg()) -> tuple[QuadrotorPreset, RandomizationCfg]:
    """Preset with the unit's identified parameters, and randomization ranges from their uncertainty.

    Parameters identified per kg (mass unknown) are scaled by ``base_preset.mass_kg``; ``km_per_izz``
    by the preset's Izz. Ranges of parameters the file does not hold are taken from
    ``base_randomization``, as are the latency and observation-noise settings.
    """
    q = calib.quadrotor
    if q is None:
        raise ValueError(f"calibration file of unit {calib.unit_id!r} has no quadrotor section")
    if q.base_preset != base_preset.name:
        raise ValueError(f"quadrotor.base_preset: the unit was identified with the geometry of {q.base_preset!r}, "
                         f"not {base_preset.name!r}")
    p = q.params
    mass = p["mass_kg"].value if "mass_kg" in p else base_preset.mass_kg
    per_kg = "kf_n_per_rpm2" not in p
    kf = p["kf_per_kg"].value * mass if per_kg else p["kf_n_per_rpm2"].value
    ixx, iyy, izz = base_preset.inertia_kg_m2
    ixx = p["ixx_kg_m2"].value if "ixx_kg_m2" in p else ixx
    iyy = p["iyy_kg_m2"].value if "iyy_kg_m2" in p else iyy
    changes: dict = dict(
        name=f"{base_preset.name}@{calib.unit_id}", mass_kg=mass, inertia_kg_m2=(ixx, iyy, izz), kf_n_per_rpm2=kf,
        tau_up_s=p["tau_up_s"].value, tau_down_s=p["tau_down_s"].value,
        source=f"calibration file of unit {calib.unit_id} created {calib.created} by tether {calib.tool_version}; "
               f"geometry from preset {base_preset.name}")
    if "km_nm_per_rpm2" in p:
        changes["km_nm_per_rpm2"] = p["km_nm_per_rpm2"].value
    elif "km_per_izz" in p:
        changes["km_nm_per_rpm2"] = p["km_per_izz"].value * izz
    drag_keys = [f"drag_{a}_per_kg" if per_kg else f"drag_{a}_n_s_per_m" for a in "xyz"]
    if all(key in p for key in drag_keys):
        changes["drag_n_s_per_m"] = tuple(max(p[key].value * (mass if per_kg else 1.0), 0.0) for key in drag_keys)
    preset = dataclasses.replace(base_preset, **changes)

    cap = floors.max_half_width
    ranges: dict = {"thrust_to_weight": None}
    groups = {
        "mass_scale": (["mass_kg"], floors.mass),
        "inertia_scale": (["ixx_kg_m2", "iyy_kg_m2"], floors.inertia),
        "kf_scale": (["kf_per_kg" if per_kg else "kf_n_per_rpm2"], floors.kf),
        "km_scale": (["km_nm_per_rpm2" if "km_nm_per_rpm2" in p else "km_per_izz"], floors.km),
        "tau_scale": (["tau_up_s", "tau_down_s"], floors.tau),
        "drag_scale": (drag_keys, floors.drag),
    }
    for field, (names, floor) in groups.items():
        present = [p[n] for n in names if n in p]
        if present:
            ranges[field] = _scale_range(_half_width(present, k, floor, cap))
    return preset, dataclasses.replace(base_randomization, **ranges)
