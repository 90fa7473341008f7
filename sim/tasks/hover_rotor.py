"""Hover any vehicle of a class with rotor-level commands (issue 10): each output is a fraction of the
flown vehicle's maximum rotor speed (tether.actions), no rate controller in between.

What rotor-level needs beyond the robust CTBR task (:class:`sim.tasks.hover.RobustHoverCfg`):
- yaw damping: the observation is heading-invariant and yaw torque is weak (and spans 10x across the
  class), so nothing stops a spin unless the reward does; a nominal rotor-level policy spun at ~10 rad/s
  even at home. A penalty on the yaw rate stops it;
- thrust margin: at thrust-to-weight 1.4 a vehicle hovers at 85 % of its maximum rotor speed; a rotor
  pinned at a limit leaves no torque to level the vehicle, so commands beyond a margin are penalized;
- no rate loop: the class's rate-loop randomization does not apply, so the physics can run at 200 Hz.
"""

from __future__ import annotations

import dataclasses

import torch

from sim.randomization import CRAZYFLIE_CLASS, RandomizationCfg
from sim.tasks.hover import RobustHoverCfg, RobustHoverEnv

CRAZYFLIE_CLASS_ROTOR = dataclasses.replace(CRAZYFLIE_CLASS, rate_loop_hz=None)
"""the Crazyflie class without its rate loop: rotor commands drive the motors directly"""


@dataclasses.dataclass(frozen=True)
class RobustHoverRotorCfg(RobustHoverCfg):
    """Rotor-level hover of any Crazyflie-class vehicle: the robust task with yaw damping and a thrust
    margin in the reward."""

    action_space: str = "rotor"
    randomization: RandomizationCfg = CRAZYFLIE_CLASS_ROTOR
    substeps: int = 4
    """physics substeps per control step: 200 Hz at 50 Hz (no rate loop to randomize)"""
    action_history: int = 3
    rew_yaw_rate: float = -0.5
    """yaw-rate penalty per rad/s of |omega_z| [1/s per rad/s]; at -0.1 policies still yawed at 0.7-1 rad/s
    at home and orbited the goal 6-10 cm out (body-frame position loop turning with the body), at -0.5
    0.07 rad/s and 1.4 cm"""
    rew_thrust_margin: float = -2.0
    """penalty per unit of rotor command beyond the margin, summed over rotors [1/s]"""
    thrust_margin: float = 0.05
    """commands (fraction of max rpm) below this or above 1 minus this are penalized [1]"""

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.thrust_margin < 0.5:
            raise ValueError(f"thrust_margin {self.thrust_margin} out of range [0, 0.5)")


class RobustHoverRotorEnv(RobustHoverEnv):
    """:class:`RobustHoverEnv` with the rotor-level reward terms of :class:`RobustHoverRotorCfg`."""

    cfg: RobustHoverRotorCfg

    def _extra_reward_terms(self, actions: torch.Tensor, last_action: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        rotor_cmd, ctbr = self.action_to_command(actions)
        # [N, R] fraction of max rpm; a CTBR override: [N, 1] fraction of max collective thrust
        fraction = rotor_cmd if rotor_cmd is not None else ctbr.thrust_n / c.vehicle.max_thrust_n
        beyond = (c.thrust_margin - fraction).clamp_min(0.0) + (fraction - (1.0 - c.thrust_margin)).clamp_min(0.0)
        return {"yaw_rate": c.rew_yaw_rate * self.state.ang_vel_b[:, 2].abs(),
                "thrust_margin": c.rew_thrust_margin * beyond.sum(-1)}
