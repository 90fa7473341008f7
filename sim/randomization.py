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
THRUST_TO_WEIGHT_DRAWS = ("uniform", "hover_throttle")


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
    tau_up_s: Range | None = None
    """motor time constant when speeding up [s], absolute, drawn independently of tau_down_s;
    None: the preset's times tau_scale"""
    tau_down_s: Range | None = None
    """motor time constant when slowing down [s], absolute, drawn independently of tau_up_s;
    None: the preset's times tau_scale"""
    drag_off_prob: float = 0.0
    """probability that an env has no linear drag at all (a vehicle class with and without drag) [1]"""
    rate_loop_hz: Range | None = None
    """CTBR rate-loop frequency [Hz]: the rate controller runs every d-th physics substep (restarted at
    every control tick) and holds its rotor commands in between, d drawn uniformly among the whole
    numbers whose rate physics_hz / d lies in the range; None: every substep"""
    thrust_to_weight_draw: str = "uniform"
    """how thrust_to_weight is drawn over its range: 'uniform' in thrust / weight, or 'hover_throttle':
    uniform in weight / thrust (the hover throttle), which draws the weak vehicles, whose thrust margin
    and hover throttle differ most from the nominal, about twice as often at 1.4-3.0"""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "thrust_to_weight_draw":  # a name, checked below
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
                if f.name in ("tau_up_s", "tau_down_s") and lo <= 0:
                    raise ValueError(f"randomization.{f.name}: motor time constants must be > 0 s, got {v!r}")
                if f.name == "rate_loop_hz" and lo <= 0:
                    raise ValueError(f"randomization.rate_loop_hz must be > 0 Hz, got {v!r}")
                if f.name == "latency_s" and hi > 0.5:
                    raise ValueError(f"randomization.latency_s high {hi} s is out of range (> 0.5 s); "
                                     "latency is in seconds, not milliseconds")
            elif not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"randomization.{f.name} must be a non-negative number, got {v!r}")
        if self.thrust_to_weight_draw not in THRUST_TO_WEIGHT_DRAWS:
            raise ValueError(f"randomization.thrust_to_weight_draw must be one of {list(THRUST_TO_WEIGHT_DRAWS)}, "
                             f"got {self.thrust_to_weight_draw!r}")
        if self.drag_off_prob > 1.0:
            raise ValueError(f"randomization.drag_off_prob is a probability in [0, 1], got {self.drag_off_prob}")

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
        if cfg.thrust_to_weight_draw == "hover_throttle":  # the same one draw per env: the stream is unchanged
            lo, hi = cfg.thrust_to_weight
            twr = 1.0 / _uniform((1.0 / hi, 1.0 / lo), n, gen, device)
        else:
            twr = _uniform(cfg.thrust_to_weight, n, gen, device)
        max_rpm = torch.sqrt(twr * mass * GRAVITY / (len(preset.rotor_spin) * kf))
    tau = _uniform(cfg.tau_scale, n, gen, device)
    out = p._replace(
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
    # Drawn after everything above, and only when asked for: a config without these keeps the random
    # stream (and so every figure) of the configs that predate them.
    if cfg.tau_up_s is not None:
        out = out._replace(tau_up=_uniform(cfg.tau_up_s, n, gen, device))
    if cfg.tau_down_s is not None:
        out = out._replace(tau_down=_uniform(cfg.tau_down_s, n, gen, device))
    if cfg.drag_off_prob > 0.0:
        keep = (torch.rand(n, 1, generator=gen, device=device) >= cfg.drag_off_prob).to(out.drag.dtype)
        out = out._replace(drag=out.drag * keep)
    return out


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


def rate_loop_divisors(cfg: RandomizationCfg, physics_hz: float) -> tuple[int, ...]:
    """Whole numbers d of physics substeps per rate-loop tick whose rate physics_hz / d [Hz] lies in
    cfg.rate_loop_hz, in increasing order; (1,) without a range. Raises if none fits."""
    if cfg.rate_loop_hz is None:
        return (1,)
    lo, hi = cfg.rate_loop_hz
    if physics_hz < hi - 1e-6:
        raise ValueError(f"randomization.rate_loop_hz reaches {hi:g} Hz but the physics runs at {physics_hz:g} Hz; "
                         f"raise substeps so the physics runs at least at {hi:g} Hz")
    divs = tuple(d for d in range(1, int(physics_hz // max(lo, 1e-9)) + 2)
                 if lo - 1e-6 <= physics_hz / d <= hi + 1e-6)
    if not divs:
        raise ValueError(f"randomization.rate_loop_hz {list(cfg.rate_loop_hz)} Hz: no whole number of physics "
                         f"substeps at {physics_hz:g} Hz fits; change substeps")
    return divs


def sample_rate_divisors(cfg: RandomizationCfg, n: int, physics_hz: float, gen: torch.Generator | None,
                         device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Physics substeps per rate-loop tick [n, 1] (long), uniform over :func:`rate_loop_divisors`;
    None without a rate-loop range (the rate loop runs every substep, no draw)."""
    if cfg.rate_loop_hz is None:
        return None
    divs = torch.tensor(rate_loop_divisors(cfg, physics_hz), device=device)
    return divs[torch.randint(0, len(divs), (n, 1), generator=gen, device=device)]


# ------------------------------------------------------------------ vehicle classes
#
# A policy that meets a vehicle other than its training preset (another battery, other motors, a
# payload) must fly it: these ranges span a class of vehicles, not one unit (issue 10). Scales multiply
# the preset; motor time constants are absolute and rise and fall are drawn apart (real ESCs brake
# slower than they spin up, e.g. 55 ms up / 249 ms down on a Crazyflie-class simulator).

CRAZYFLIE_CLASS = RandomizationCfg(
    mass_scale=(0.7, 1.3),
    inertia_scale=(0.7, 1.3),
    kf_scale=(0.76, 1.05),
    km_scale=(0.2, 2.0),  # yaw torque per newton of thrust over a 10x range
    tau_scale=(1.0, 1.0),  # replaced by the absolute ranges below
    drag_scale=(0.5, 1.5),
    thrust_to_weight=(1.4, 3.0),
    latency_s=(0.0, 0.03),
    tau_up_s=(0.02, 0.25),
    tau_down_s=(0.02, 0.25),
    drag_off_prob=0.3,
    rate_loop_hz=(100.0, 500.0),
)
"""Crazyflie-class quadrotors: mass and inertia +-30 %, thrust-to-weight 1.4-3.0, motors 20-250 ms up and
down apart, yaw torque coefficient 0.2-2x, drag 0.5-1.5x or none (30 %), latency 0-30 ms, rate loop
100-500 Hz"""

PX4_CLASS = RandomizationCfg(
    mass_scale=(0.7, 1.3),
    inertia_scale=(0.7, 1.3),
    kf_scale=(0.8, 1.2),
    km_scale=(0.3, 3.0),
    tau_scale=(1.0, 1.0),
    drag_scale=(0.5, 1.5),
    thrust_to_weight=(1.6, 3.5),
    latency_s=(0.0, 0.03),
    tau_up_s=(0.01, 0.08),
    tau_down_s=(0.01, 0.12),
    drag_off_prob=0.3,
    rate_loop_hz=(100.0, 500.0),
)
"""PX4-class 1 kg quadrotors: mass and inertia +-30 %, thrust-to-weight 1.6-3.5 (PX4 airframes rarely
fly below 1.6), motors 10-80 ms up and 10-120 ms down apart (larger ESC-driven props, cf. iris 12.5 /
25 ms), yaw torque coefficient over a 10x range, drag on and off, latency 0-30 ms, rate loop 100-500 Hz
(PX4's rate loop runs at 250-1000 Hz; 100 Hz covers slow companion links)"""

RANDOMIZATIONS: dict[str, RandomizationCfg] = {
    "default": RandomizationCfg(),
    "nominal": RandomizationCfg.nominal(),
    "crazyflie_class": CRAZYFLIE_CLASS,
    "px4_class": PX4_CLASS,
}
"""Named randomization configs; ``default`` is what every task trains with unless it says otherwise"""

VEHICLE_CLASSES: dict[str, str] = {"crazyflie2x": "crazyflie_class", "px4_1kg": "px4_class"}
"""preset name -> the name of its vehicle class in RANDOMIZATIONS"""
