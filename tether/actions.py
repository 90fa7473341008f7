"""Executable action semantics of a policy contract: normalized outputs <-> physical commands.

The one implementation (numpy, torch-free) of what a contract's action outputs mean, used by the
robot side (runner, teleop, actuation), the digital twin, the pybullet reference, calibration and
the human-in-the-loop code. sim/'s batched torch environment computes the same maps on tensors;
tests/contract checks the two agree.

Meaning (see :class:`tether.contract.ActionSpec`): outputs are normalized to [low, high] = [-1, 1].
  rotor: output i -> fraction of the vehicle's maximum rotor speed (a + 1) / 2, in [0, 1]; rotor
         speed [rpm] = fraction * max_rpm of the vehicle flown (for each randomized training vehicle
         its own max rpm: not an absolute rpm); thrust [N] = kf * rpm^2.
  ctbr:  output 0 -> collective thrust [N] = (a + 1) / 2 * max_thrust_n; outputs 1..3 -> body rates
         [rad/s] = a * body_rate_limits_rad_s, about x_b, y_b, z_b (FLU).

Thrust allocation over a rotor layout: rotor i at pos_b = (x, y, 0) pushing f_i [N] along +z_b with
spin s_i (+1 counter-clockwise seen from above) gives the wrench (collective thrust [N], torque about
x_b, y_b, z_b [N m]) = A @ f with
    A = [[1, ...], [y_i, ...], [-x_i, ...], [-s_i * km / kf, ...]]     (shape [4, R]);
its pseudo-inverse gives the least-squares (for four rotors: exact) rotor thrusts of a desired wrench.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from tether.contract import ActionSpec, ContractError, PolicyContract

GRAVITY_M_S2 = 9.81
"""[m/s^2] along -z_w, the value sim/ trains with (a v2 contract's vehicle.gravity_m_s2 overrides it)"""


# ----------------------------------------------------------------------------------- allocation


def allocation_matrix(rotor_pos_b, rotor_spin, km_over_kf: float) -> np.ndarray:
    """A [4, R]: (collective thrust [N], tau_x, tau_y, tau_z [N m]) = A @ rotor thrusts [N].

    rotor_pos_b [R, 3] hub positions in the body frame (FLU) [m]; rotor_spin [R] +1 counter-clockwise
    seen from above, -1 clockwise; km_over_kf [m]: reaction torque per newton of thrust."""
    pos = np.asarray(rotor_pos_b, dtype=np.float64)
    spin = np.asarray(rotor_spin, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or spin.shape != (pos.shape[0],):
        raise ContractError(f"a rotor layout needs [R, 3] positions and R spins, got {pos.shape} and {spin.shape}")
    if not np.all(np.isin(spin, (-1.0, 1.0))):
        raise ContractError(f"rotor spins must be +1 or -1, got {spin.tolist()}")
    return np.stack([np.ones_like(spin), pos[:, 1], -pos[:, 0], -spin * float(km_over_kf)])


@dataclasses.dataclass(frozen=True, eq=False)
class Mixer:
    """Thrust allocation over one rotor layout (see the module doc)."""

    allocation: np.ndarray
    """A [4, R]: wrench = A @ rotor thrusts"""
    pinv: np.ndarray
    """[R, 4]: least-squares rotor thrusts of a wrench"""

    @classmethod
    def from_layout(cls, rotor_pos_b, rotor_spin, km_over_kf: float) -> "Mixer":
        a = allocation_matrix(rotor_pos_b, rotor_spin, km_over_kf)
        if np.linalg.matrix_rank(a) < 4:
            raise ContractError(f"the rotor layout cannot produce every wrench (allocation rank "
                                f"{np.linalg.matrix_rank(a)} < 4): {np.asarray(rotor_pos_b).tolist()}")
        return cls(a, np.linalg.pinv(a))

    @property
    def n_rotors(self) -> int:
        return self.allocation.shape[1]

    def wrench(self, rotor_thrust_n) -> np.ndarray:
        """Rotor thrusts [..., R] N -> (collective thrust [N], torque_b [N m]) stacked [..., 4]."""
        return np.asarray(rotor_thrust_n, dtype=np.float64) @ self.allocation.T

    def rotor_thrusts(self, thrust_n, torque_b) -> np.ndarray:
        """Collective thrust [...] N and body torque [..., 3] N m -> rotor thrusts [..., R] N (least
        squares, not clipped: a negative entry is a wrench the rotors cannot produce)."""
        thrust_n = np.asarray(thrust_n, dtype=np.float64)
        wrench = np.concatenate([thrust_n[..., None], np.asarray(torque_b, dtype=np.float64)], axis=-1)
        return wrench @ self.pinv.T


def rotor_thrust_n(rpm, kf_n_per_rpm2: float) -> np.ndarray:
    """Rotor speed [rpm] -> thrust [N] = kf * rpm^2."""
    rpm = np.asarray(rpm, dtype=np.float64)
    return kf_n_per_rpm2 * rpm * rpm


def rotor_rpm(thrust_n, kf_n_per_rpm2: float) -> np.ndarray:
    """Rotor thrust [N] -> speed [rpm] = sqrt(thrust / kf); a negative thrust gives 0 rpm."""
    return np.sqrt(np.maximum(np.asarray(thrust_n, dtype=np.float64), 0.0) / kf_n_per_rpm2)


# ----------------------------------------------------------------------------------- action map


class ActionMap:
    """The meaning of a contract's action outputs, executable: normalized <-> physical.

    Every ``to_*`` method checks the width, refuses NaN / Inf and clips to [low, high] first, as the
    training environment clamps; ``from_*`` methods return actions clipped to [low, high] (a command
    beyond the bounds saturates, as it would have in training)."""

    def __init__(self, spec: ActionSpec):
        self.spec = spec
        self.type, self.dim = spec.type, spec.dim
        if spec.type == "ctbr":
            if not spec.max_thrust_n > 0:
                raise ContractError("a ctbr contract needs action.max_thrust_n > 0 [N]")
            if len(spec.body_rate_limits_rad_s) != 3 or not min(spec.body_rate_limits_rad_s) > 0:
                raise ContractError(f"a ctbr contract needs three positive action.body_rate_limits_rad_s, got "
                                    f"{list(spec.body_rate_limits_rad_s)}")
            self.rate_limits_rad_s = np.asarray(spec.body_rate_limits_rad_s, dtype=np.float64)
        self.mixer = None
        if spec.rotors and spec.kf_n_per_rpm2 > 0:
            self.mixer = Mixer.from_layout([r.pos_b for r in spec.rotors], [r.spin for r in spec.rotors],
                                           spec.km_nm_per_rpm2 / spec.kf_n_per_rpm2)

    # ------------------------------------------------------------------ checks

    def clip(self, actions) -> np.ndarray:
        """Actions [..., dim] as float64, clipped to [low, high]; ValueError on a wrong width or NaN."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim == 0 or a.shape[-1] != self.dim:
            raise ValueError(f"actions have shape {a.shape}, the contract's action.dim is {self.dim}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"actions contain NaN or Inf: {a.tolist()}")
        return np.clip(a, self.spec.low, self.spec.high)

    def _need(self, kind: str) -> None:
        if self.type != kind:
            raise ContractError(f"the policy outputs {self.type} actions, not {kind}")

    def _rotor_constants(self, kf, max_rpm) -> tuple[float, float]:
        kf = self.spec.kf_n_per_rpm2 if kf is None else float(kf)
        max_rpm = self.spec.max_rpm if max_rpm is None else float(max_rpm)
        if not (kf > 0 and max_rpm > 0):
            raise ContractError("rotor thrust needs action.kf_n_per_rpm2 > 0 and action.max_rpm > 0")
        return kf, max_rpm

    # ------------------------------------------------------------------ ctbr

    def to_ctbr(self, actions) -> tuple[np.ndarray, np.ndarray]:
        """ctbr actions [..., 4] -> (collective thrust [...] N, body rates [..., 3] rad/s)."""
        self._need("ctbr")
        a = self.clip(actions)
        return (a[..., 0] + 1.0) / 2.0 * self.spec.max_thrust_n, a[..., 1:4] * self.rate_limits_rad_s

    def from_ctbr(self, thrust_n, body_rates_b) -> np.ndarray:
        """Collective thrust [...] N and body rates [..., 3] rad/s -> ctbr actions [..., 4]."""
        self._need("ctbr")
        thrust_n = np.asarray(thrust_n, dtype=np.float64)
        rates = np.asarray(body_rates_b, dtype=np.float64) / self.rate_limits_rad_s
        a = np.concatenate([(2.0 * thrust_n / self.spec.max_thrust_n - 1.0)[..., None], rates], axis=-1)
        return np.clip(a, self.spec.low, self.spec.high)

    # ------------------------------------------------------------------ rotor

    def to_rotor_fraction(self, actions) -> np.ndarray:
        """rotor actions [..., R] -> fraction of the vehicle's max rotor speed [..., R] in [0, 1]."""
        self._need("rotor")
        return np.clip((self.clip(actions) + 1.0) / 2.0, 0.0, 1.0)

    def from_rotor_fraction(self, fraction) -> np.ndarray:
        """Fraction of max rotor speed [..., R] -> rotor actions [..., R]."""
        self._need("rotor")
        return np.clip(2.0 * np.asarray(fraction, dtype=np.float64) - 1.0, self.spec.low, self.spec.high)

    def to_rotor_rpm(self, actions, max_rpm: float | None = None) -> np.ndarray:
        """rotor actions -> rotor speed [rpm] on a vehicle with ``max_rpm`` (default the trained one)."""
        return self.to_rotor_fraction(actions) * self._rotor_constants(None, max_rpm)[1]

    def to_rotor_thrust_n(self, actions, kf_n_per_rpm2: float | None = None,
                          max_rpm: float | None = None) -> np.ndarray:
        """rotor actions -> rotor thrust [N] on a vehicle with kf, max_rpm (default the trained one)."""
        kf, max_rpm = self._rotor_constants(kf_n_per_rpm2, max_rpm)
        return rotor_thrust_n(self.to_rotor_fraction(actions) * max_rpm, kf)

    def from_rotor_thrust_n(self, thrust_n) -> np.ndarray:
        """Rotor thrusts [..., R] N on the trained vehicle -> rotor actions [..., R]."""
        kf, max_rpm = self._rotor_constants(None, None)
        return self.from_rotor_fraction(rotor_rpm(thrust_n, kf) / max_rpm)

    def rotor_action_for_wrench(self, thrust_n, torque_b) -> np.ndarray:
        """rotor actions that produce collective thrust [N] and body torque [N m] on the trained vehicle
        (allocation over the contract's rotor layout; rotor thrusts below zero are clipped to zero)."""
        self._need("rotor")
        if self.mixer is None:
            raise ContractError("a rotor contract needs action.rotors and action.kf_n_per_rpm2 for thrust allocation")
        return self.from_rotor_thrust_n(np.maximum(self.mixer.rotor_thrusts(thrust_n, torque_b), 0.0))

    # ------------------------------------------------------------------ both

    def collective_thrust_n(self, actions) -> np.ndarray:
        """Collective thrust [...] N an action asks of the trained vehicle (ctbr: its first output;
        rotor: the sum of the rotor thrusts)."""
        if self.type == "ctbr":
            return self.to_ctbr(actions)[0]
        return self.to_rotor_thrust_n(actions).sum(-1)

    def hover_action(self, mass_kg: float, gravity_m_s2: float = GRAVITY_M_S2) -> np.ndarray:
        """The action that holds a vehicle of ``mass_kg`` level and still: weight as collective thrust
        and zero body rates (ctbr), or the allocation of a pure thrust over the rotors (rotor)."""
        weight = float(mass_kg) * gravity_m_s2
        if self.type == "ctbr":
            return self.from_ctbr(weight, np.zeros(3))
        return self.rotor_action_for_wrench(weight, np.zeros(3))

    @property
    def hover_thrust_n(self) -> float | None:
        """Collective thrust of the contract's recorded hover action [N]; None if it has none."""
        if len(self.spec.hover_action) != self.dim:
            return None
        return float(self.collective_thrust_n(np.asarray(self.spec.hover_action)))


def initial_action(contract: PolicyContract) -> np.ndarray:
    """[A] what every slot of the action history (and of the delay queue) holds before the first tick:
    the 2.0 ``frames.initial_action_history``; for a 1.0 contract the hover action when recorded, else
    zeros (what training did then)."""
    a = contract.action
    if a.hover_action and len(a.hover_action) != a.dim:
        raise ContractError(f"action.hover_action has {len(a.hover_action)} values for action.dim {a.dim}")
    zeros = contract.frames is not None and contract.frames.initial_action_history == "zeros"
    return np.zeros(a.dim) if zeros or not a.hover_action else np.asarray(a.hover_action, dtype=np.float64)


@functools.lru_cache(maxsize=32)
def action_map(spec: ActionSpec) -> ActionMap:
    """The ActionMap of ``spec``, built once (the allocation's pseudo-inverse is not free, and safe
    behaviours of the runner ask every tick)."""
    return ActionMap(spec)


# --------------------------------------------------------------------------------- rate control


@dataclasses.dataclass(frozen=True, eq=False)
class RateController:
    """The CTBR inner loop training runs, every physics substep, on the NOMINAL vehicle (a firmware
    does not know a randomized vehicle's parameters):

        torque_b = J * kp * (rates_des_b - w_b) + w_b x (J w_b)       (P on rate error + gyroscopic FF)
        f = max(pinv(A) @ [thrust_n, torque_b], 0)                    (least-squares allocation)
        command_i = clip(sqrt(f_i / kf) / max_rpm, 0, 1)               (fraction of max rotor speed)

    J, A, kf and max_rpm are the nominal vehicle's. A vehicle executes command_i as a fraction of its
    OWN max rpm, so on a vehicle with another max thrust the collective thrust scales with it."""

    kp: np.ndarray
    """[3] rate-error gain about x_b, y_b, z_b [1/s]"""
    inertia: np.ndarray
    """[3] nominal principal moments of inertia [kg m^2]"""
    mixer: Mixer
    """allocation over the nominal rotor layout"""
    kf: float
    """nominal thrust coefficient [N / rpm^2]"""
    max_rpm: float
    """nominal rotor speed at full command [rpm]"""

    @classmethod
    def for_vehicle(cls, rotor_pos_b, rotor_spin, kf_n_per_rpm2: float, km_nm_per_rpm2: float, max_rpm: float,
                    inertia_kg_m2: Sequence[float], kp: Sequence[float]) -> "RateController":
        kp = np.asarray(kp, dtype=np.float64)
        if kp.shape != (3,) or not np.all(np.isfinite(kp)) or np.any(kp <= 0):
            raise ValueError(f"rate kp must be three positive gains [1/s], got {kp!r}")
        inertia = np.asarray(inertia_kg_m2, dtype=np.float64)
        if inertia.shape != (3,) or np.any(inertia <= 0):
            raise ValueError(f"inertia must be three positive principal moments [kg m^2], got {inertia!r}")
        if not (kf_n_per_rpm2 > 0 and max_rpm > 0):
            raise ValueError("the rate controller needs kf > 0 and max_rpm > 0")
        return cls(kp, inertia, Mixer.from_layout(rotor_pos_b, rotor_spin, km_nm_per_rpm2 / kf_n_per_rpm2),
                   float(kf_n_per_rpm2), float(max_rpm))

    def rotor_command(self, thrust_n, rates_des_b, ang_vel_b) -> np.ndarray:
        """Collective thrust [M] or [M, 1] N, desired and measured body rates [M, 3] rad/s -> rotor
        commands [M, R] in [0, 1] (fraction of max rotor speed)."""
        thrust_n = np.asarray(thrust_n, dtype=np.float64)
        if thrust_n.ndim == np.ndim(rates_des_b):
            thrust_n = thrust_n[..., 0]
        w = np.asarray(ang_vel_b, dtype=np.float64)
        torque = self.inertia * self.kp * (np.asarray(rates_des_b, dtype=np.float64) - w) + np.cross(w, self.inertia * w)
        f = np.maximum(self.mixer.rotor_thrusts(thrust_n, torque), 0.0)
        return np.clip(np.sqrt(f / self.kf) / self.max_rpm, 0.0, 1.0)


def rate_controller(contract: PolicyContract, inertia_kg_m2: Sequence[float] | None = None,
                    kp: Sequence[float] | None = None) -> RateController:
    """The rate controller a ctbr policy was trained against, from its contract: gains and nominal
    inertia from the v2 ``controller`` section (a 1.0 contract has no inertia: pass the vehicle's),
    layout and thrust model from the action spec. ``kp`` overrides the gains (a robot's own loop)."""
    a = contract.action
    if a.type != "ctbr":
        raise ContractError(f"the policy outputs {a.type} actions; only ctbr actions drive a rate controller")
    ctrl = contract.controller
    if inertia_kg_m2 is None:
        if ctrl is None or not ctrl.inertia_kg_m2:
            raise ContractError(f"policy.json {contract.version} records no controller inertia; pass the "
                                "vehicle's inertia_kg_m2")
        inertia_kg_m2 = ctrl.inertia_kg_m2
    if kp is None:
        kp = ctrl.rate_kp if ctrl is not None and ctrl.rate_kp else a.rate_kp
    return RateController.for_vehicle([r.pos_b for r in a.rotors], [r.spin for r in a.rotors], a.kf_n_per_rpm2,
                                      a.km_nm_per_rpm2, a.max_rpm, inertia_kg_m2, kp)


def actions_to_rotor_cmd(action_map: ActionMap, actions, ang_vel_b=None,
                         rate_ctrl: RateController | None = None) -> np.ndarray:
    """Normalized actions [M, A] -> rotor commands [M, R] in [0, 1] (fraction of max rotor speed): rotor
    actions directly, ctbr actions through ``rate_ctrl`` with the measured body rates ang_vel_b [M, 3]."""
    if action_map.type == "rotor":
        return action_map.to_rotor_fraction(actions)
    if rate_ctrl is None:
        raise ValueError("a ctbr policy needs a rate controller (tether.actions.rate_controller)")
    thrust_n, rates = action_map.to_ctbr(actions)
    return rate_ctrl.rotor_command(thrust_n, rates, ang_vel_b)
