"""Domain randomization: ranges from a config file, per-env parameters resampled on reset.

Every range is (low, high), sampled uniformly and independently per env. Scales multiply the preset's
nominal value. The ranges used are written next to every run (``ranges_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from sim.quadrotor.dynamics import QuadParams, nominal_params
from sim.quadrotor.presets import GRAVITY, QuadrotorPreset
from tether.config import config_from_dict, load_yaml_config

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class RandomizationCfg:
    mass_scale: Range = (0.9, 1.1)
    """multiplies the nominal mass [1]"""
    inertia_scale: Range = (0.85, 1.15)
    """multiplies each principal moment of inertia [1]"""
    kf_scale: Range = (0.76, 1.05)
    """multiplies the thrust coefficient [1]; Crazyflie literature spans 2.4e-10..3.16e-10 N/rpm^2"""
    km_scale: Range = (0.8, 1.2)
    """multiplies the torque coefficient [1]"""
    tau_scale: Range = (0.5, 2.0)
    """multiplies both motor time constants [1]"""
    drag_scale: Range = (0.5, 1.5)
    """multiplies the linear drag coefficients [1]"""
    thrust_to_weight: Range | None = (2.0, 2.5)
    """max thrust / weight [1]; sets max rpm per env from the sampled kf and mass. None: keep max rpm"""
    latency_s: Range = (0.0, 0.02)
    """action latency [s], rounded down to whole control steps"""
    obs_noise_pos_m: float = 0.002
    """std of position noise [m]"""
    obs_noise_vel_m_s: float = 0.01
    """std of linear velocity noise [m/s]"""
    obs_noise_rot: float = 0.005
    """std of rotation matrix element noise [1]"""
    obs_noise_ang_vel_rad_s: float = 0.02
    """std of angular velocity noise [rad/s]"""
    rotor_gain_scale: Range = (1.0, 1.0)
    """multiplies each rotor's thrust and reaction torque independently (motor and propeller spread
    around the vehicle's rotor_gain) [1]"""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, tuple):
                if len(v) != 2 or not all(isinstance(x, (int, float)) for x in v):
                    raise ValueError(f"randomization.{f.name} must be a [low, high] pair of numbers, got {v!r}")
                lo, hi = v
                if lo > hi:
                    raise ValueError(f"randomization.{f.name}: low {lo} > high {hi}")
                if lo < 0 or (f.name.endswith("_scale") and lo <= 0):
                    raise ValueError(f"randomization.{f.name}: values must be positive, got {v!r}")
                if f.name == "thrust_to_weight" and lo <= 1.0:
                    raise ValueError(f"randomization.thrust_to_weight low {lo} <= 1: the vehicle cannot hover")
                if f.name == "latency_s" and hi > 0.5:
                    raise ValueError(f"randomization.latency_s high {hi} s is out of range (> 0.5 s); "
                                     "latency is in seconds, not milliseconds")
            elif not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"randomization.{f.name} must be a non-negative number, got {v!r}")

    @classmethod
    def nominal(cls) -> "RandomizationCfg":
        """No randomization at all: every env is the preset, no noise, no latency."""
        one = (1.0, 1.0)
        return cls(one, one, one, one, one, one, None, (0.0, 0.0), 0.0, 0.0, 0.0, 0.0)


def randomization_from_dict(d: dict[str, Any], where: str = "randomization") -> RandomizationCfg:
    return config_from_dict(RandomizationCfg, d, where)


def load_randomization(path: str | Path) -> RandomizationCfg:
    return load_yaml_config(RandomizationCfg, path)


def _uniform(rng: Range, n: int, gen: torch.Generator | None, device) -> torch.Tensor:
    lo, hi = rng
    return lo + (hi - lo) * torch.rand(n, 1, generator=gen, device=device)


def sample_params(preset: QuadrotorPreset, cfg: RandomizationCfg, n: int, gen: torch.Generator | None,
                  device: torch.device | str = "cpu") -> QuadParams:
    """Fresh per-env parameters for ``n`` envs."""
    p = nominal_params(preset, n, device)
    mass = p.mass * _uniform(cfg.mass_scale, n, gen, device)
    kf = p.kf * _uniform(cfg.kf_scale, n, gen, device)
    max_rpm = p.max_rpm
    if cfg.thrust_to_weight is not None:
        twr = _uniform(cfg.thrust_to_weight, n, gen, device)
        max_rpm = torch.sqrt(twr * mass * GRAVITY / (len(preset.rotor_spin) * kf))
    tau = _uniform(cfg.tau_scale, n, gen, device)
    return p._replace(
        mass=mass,
        inertia=p.inertia * _uniform(cfg.inertia_scale, n, gen, device),
        kf=kf,
        km=p.km * _uniform(cfg.km_scale, n, gen, device),
        max_rpm=max_rpm,
        tau_up=p.tau_up * tau,
        tau_down=p.tau_down * tau,
        drag=p.drag * _uniform(cfg.drag_scale, n, gen, device),
        rotor_gain=p.rotor_gain * _uniform_rotors(cfg.rotor_gain_scale, p.rotor_gain.shape, gen, device),
    )


def _uniform_rotors(rng: Range, shape, gen: torch.Generator | None, device) -> torch.Tensor:
    lo, hi = rng
    if lo == hi:  # no draw: keeps the random stream of configs without rotor spread unchanged
        return torch.full(shape, float(lo), device=device)
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def latency_step_range(cfg: RandomizationCfg, control_dt: float) -> tuple[int, int]:
    """Whole control steps of action delay that fit in the latency range [s]: (lowest, highest)."""
    lo = math.ceil(cfg.latency_s[0] / control_dt - 1e-6)
    hi = math.floor(cfg.latency_s[1] / control_dt + 1e-6)
    return lo, max(lo, hi)


def sample_latency_steps(cfg: RandomizationCfg, n: int, control_dt: float, gen: torch.Generator | None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer action delay per env [n] in control steps, uniform over latency_step_range."""
    lo, hi = latency_step_range(cfg, control_dt)
    return torch.randint(lo, hi + 1, (n,), generator=gen, device=device)
