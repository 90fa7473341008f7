"""Normalized policy actions -> a Robot command, by the contract's action spec (no ROS, no torch).

Motor numbering differs between vehicles, so rotor-level actions are matched to the robot's motors by
position in the body frame and spin direction, never by index; a layout that does not match is an error.
"""

from __future__ import annotations

import numpy as np

from hardware.robot import Command, CtbrCommand, RotorCommand
from tether.actions import ActionMap
from tether.contract import ActionSpec, ContractError


def rotor_permutation(spec: ActionSpec, robot_pos_b, robot_spin, tol_m: float = 2e-3) -> np.ndarray:
    """perm [R]: robot motor j is driven by action output perm[j]. Raises ContractError on a mismatch."""
    robot_pos = np.asarray(robot_pos_b, dtype=np.float64)
    robot_spin = [int(s) for s in robot_spin]
    if len(spec.rotors) != len(robot_spin):
        raise ContractError(f"the policy drives {len(spec.rotors)} rotors, the robot has {len(robot_spin)}")
    perm = []
    for j, (p, s) in enumerate(zip(robot_pos, robot_spin)):
        d = [np.linalg.norm(np.asarray(r.pos_b) - p) if r.spin == s else np.inf for r in spec.rotors]
        i = int(np.argmin(d))
        if not d[i] <= tol_m:
            raise ContractError(f"robot motor {j} (pos_b {p.tolist()} m, spin {s:+d}) matches no rotor of the "
                                f"policy's layout {[(list(r.pos_b), r.spin) for r in spec.rotors]}")
        perm.append(i)
    if len(set(perm)) != len(perm):
        raise ContractError(f"the policy's rotor layout maps two outputs onto one robot motor: {perm}")
    return np.asarray(perm)


class ActionToCommand:
    """Callable: normalized action [A] -> RotorCommand (robot motor order) or CtbrCommand, by
    :class:`tether.actions.ActionMap` (the contract's mapping; width checked, NaN refused, clipped)."""

    def __init__(self, spec: ActionSpec, robot_pos_b=None, robot_spin=None):
        self.spec = spec
        if spec.type == "rotor":
            if robot_pos_b is None:
                raise ContractError("a rotor-level policy needs the robot's rotor layout to map its outputs")
            self.perm = rotor_permutation(spec, robot_pos_b, robot_spin)
        self.map = ActionMap(spec)

    def __call__(self, action) -> Command:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.spec.dim,):
            raise ValueError(f"action has shape {a.shape}, the contract's action.dim is {self.spec.dim}")
        if self.spec.type == "rotor":
            # a fraction of the robot's own max rotor speed, as in training (contract controller.rotor_command)
            return RotorCommand(self.map.to_rotor_fraction(a)[self.perm])
        thrust_n, rates = self.map.to_ctbr(a)
        return CtbrCommand(float(thrust_n), rates)
