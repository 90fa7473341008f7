"""The robot bridge's logic, without rclpy: any Robot adapter under SafeRobot, driven by ticks and
commands (bridge_node.py is the ROS shell around it; plain pytest covers this module).

One tick (:meth:`BridgeCore.tick`): advance the adapter when it is simulated (it drives no clock of its
own: the twin), apply the command timeout, read the state through the safety layer. One command
(:meth:`BridgeCore.on_command`): the runner's normalized action -> a Robot command by the contract's
action spec -> SafeRobot.send (clipped) -> the normalized action actually sent.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from hardware.robot import (Command, CtbrCommand, Robot, RobotError, RobotLinkLost, RobotState, RotorCommand,
                            check_vehicle)
from hardware.safety import LAND, OK, STOP, SafeRobot, SafetyCfg, Verdict
from tether.actions import ActionMap
from tether.contract import ActionSpec, ContractError, PolicyContract
from tether.observation import quat_wxyz_to_rotmat
from tether_deploy.actuation import ActionToCommand
from tether_deploy.image_core import CameraGate

GRAVITY_W = np.array([0.0, 0.0, -9.81])


def make_adapter(adapter: str, cfg) -> Robot:
    """The registered adapter ``adapter`` built from its config instance (hardware/adapters.py)."""
    from hardware.adapters import adapter_classes

    cls, _ = adapter_classes(adapter)
    return cls(cfg)


def simulated(robot: Robot) -> bool:
    """An adapter whose caller drives time (``advance()``, ``sim_time_s``: the twin) instead of a vehicle
    running on its own clock."""
    return callable(getattr(robot, "advance", None)) and hasattr(robot, "sim_time_s")


@dataclasses.dataclass
class TickResult:
    """What one tick produced."""

    state: RobotState | None
    """the state read (None: the link is lost)"""
    verdict_changed: bool
    """the safety layer latched a new verdict this tick"""
    link_lost: str = ""
    """why the link is lost ('' while it is up)"""
    error: str = ""
    """why no state could be read this tick while the link is up (e.g. none has arrived yet)"""


class BridgeCore:
    """A connected adapter under the shared safety layer, mapping normalized actions to its commands."""

    def __init__(self, robot: Robot, contract: PolicyContract, safety: SafetyCfg, cmd_timeout_s: float,
                 auto_arm: bool = False, clock=time.monotonic, stamp_clock=time.time):
        """``robot``: the adapter, not yet connected; the contract's vehicle and action space are checked
        against it first (ContractError). ``stamp_clock``: the clock camera images are stamped on [s] (the
        node's); the contract's image inputs must be usable to arm (:attr:`cameras`)."""
        if robot.vehicle is None:  # an arm: no contract action type maps to joint commands yet
            raise ContractError(f"the {robot.name} adapter is not a quadrotor (it takes "
                                f"{', '.join(sorted(robot.command_schema))}); the bridge maps only the contract's "
                                f"{contract.action.type} actions of a quadrotor policy")
        check_vehicle(contract, robot.vehicle, f"the {robot.name} adapter")
        self.spec: ActionSpec = contract.action
        self.inner = robot
        self.sim = simulated(robot)
        # A simulated adapter's stamps follow its own clock, paused until the first command: staleness is
        # measured on that clock so a paused twin is not stale; a real vehicle's on the host's.
        safety_clock = (lambda: robot.sim_time_s) if self.sim else clock
        self.robot = SafeRobot(robot, safety, clock=safety_clock)
        layout = robot.vehicle
        self.to_command = ActionToCommand(self.spec, layout.rotor_pos_b or None, layout.rotor_spin or None)
        self._map = ActionMap(self.spec)
        self.cmd_timeout_s = cmd_timeout_s
        self.auto_arm = auto_arm
        self._clock = clock
        self.started = False
        """a command has arrived (a simulated adapter's physics run from then on)"""
        self.armed = False
        self._last_cmd_s = 0.0
        self._reported = Verdict(OK)
        self._prev_vel_w: np.ndarray | None = None
        self._prev_stamp_s: float | None = None
        self.link_lost = ""
        self._arming: threading.Thread | None = None
        self._arm_error = ""
        self._auto_arm_tried = False
        self.cameras = CameraGate(contract.images)
        """the policy's image inputs as the runner checks them; the node feeds them from the camera topics"""
        self._stamp_clock = stamp_clock

    # ---------------------------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        self.robot.connect()

    def disconnect(self) -> None:
        self.robot.disconnect()

    @property
    def verdict(self) -> Verdict:
        return self.robot.verdict

    # ------------------------------------------------------------------------------------ commands

    def sent_action(self, cmd: Command) -> np.ndarray:
        """The normalized action [A] of a command the adapter sent (the inverse of to_command)."""
        if isinstance(cmd, CtbrCommand):
            return np.asarray(self._map.from_ctbr(cmd.thrust_n, cmd.body_rates_b), dtype=np.float64)
        if isinstance(cmd, RotorCommand):
            frac = np.empty(self.spec.dim)
            frac[self.to_command.perm] = cmd.rotor_cmd  # robot motor j is policy output perm[j]
            return np.asarray(self._map.from_rotor_fraction(frac), dtype=np.float64)
        raise TypeError(f"cannot map a {type(cmd).__name__} back to the contract's action")

    def on_command(self, action) -> np.ndarray:
        """Send the normalized ``action``; returns the normalized action actually sent (clipped by the
        safety layer and the adapter). Raises ValueError (malformed: the previous command stays) or
        RobotError (not armed, latched after a verdict, the adapter refused) with the reason."""
        cmd = self.to_command(action)
        if not self.armed:
            if self.arming:
                raise RobotError("arming in progress: commands are dropped until armed")
            if not self.auto_arm or self._auto_arm_tried:
                raise RobotError("not armed: commands are dropped until robot/arm" +
                                 ("" if self.auto_arm else " (or auto_arm)"))
            self._auto_arm_tried = True  # once: a refusal is logged and robot/arm retries
            raise RobotError(f"auto_arm: {self.start_arming()}")
        sent = self.robot.send(cmd)
        self._last_cmd_s = self._clock()
        self.started = True
        return self.sent_action(sent)

    # ------------------------------------------------------------------------------------- ticks

    def tick(self) -> TickResult:
        """One period: advance a simulated adapter, the command timeout, a read through the safety layer."""
        if self.link_lost:
            return TickResult(None, False, self.link_lost)
        if self.started and not self.robot.latched and self._clock() - self._last_cmd_s > self.cmd_timeout_s:
            self.robot.latch(Verdict(LAND, f"no command for {self.cmd_timeout_s:g} s (cmd_timeout_s)"))
        if self.sim and self.started:
            self.inner.advance()
        try:
            state = self.robot.read()
        except RobotLinkLost as e:
            self.link_lost = str(e) or "link lost"
            self.armed = False
            return TickResult(None, self._new_verdict(), self.link_lost)
        except RobotError as e:  # no state yet: the adapter's watchdog turns a lasting silence into a loss
            return TickResult(None, self._new_verdict(), error=str(e))
        return TickResult(state, self._new_verdict())

    def _new_verdict(self) -> bool:
        changed = self.robot.verdict != self._reported
        self._reported = self.robot.verdict
        return changed

    def specific_force_b(self, state: RobotState) -> np.ndarray:
        """Accelerometer reading (specific force a - g in the body frame) from successive velocities;
        zero until two states with different stamps have been seen [m/s^2]."""
        acc_w = np.zeros(3)
        if self._prev_vel_w is not None and self._prev_stamp_s is not None and state.stamp_s > self._prev_stamp_s:
            acc_w = (state.lin_vel_w - self._prev_vel_w) / (state.stamp_s - self._prev_stamp_s)
        if self._prev_stamp_s is None or state.stamp_s != self._prev_stamp_s:
            self._prev_vel_w, self._prev_stamp_s = state.lin_vel_w, state.stamp_s
        return quat_wxyz_to_rotmat(state.quat_wxyz).T @ (acc_w - GRAVITY_W)

    # ---------------------------------------------------------------------------------- services

    def arm(self) -> str:
        """Arm now, after the arming checks; RobotError (the failures) otherwise. Returns a one-line
        status. Blocks for the adapter's own sequence (PX4: about 1 s of setpoints before OFFBOARD)."""
        self.check_cameras()
        self.robot.arm()
        self.armed = True
        return f"armed {self.inner.name}"

    @property
    def arming(self) -> bool:
        """an arming sequence started by start_arming is still running"""
        return self._arming is not None and self._arming.is_alive()

    def start_arming(self) -> str:
        """Check the arming conditions now (RobotError naming the failures) and run the adapter's arming
        sequence in a thread, so a node keeps publishing state meanwhile; its outcome is ``armed`` and
        :meth:`arming_error`."""
        if self.armed:
            return f"{self.inner.name} is already armed"
        if self.arming:
            raise RobotError("arming already in progress")
        self.check_cameras()
        self.robot.check_arming()
        self._arm_error = ""
        self._arming = threading.Thread(target=self._arm_worker, name="arming", daemon=True)
        self._arming.start()
        return f"arming checks passed; {self.inner.name} is arming (robot/armed turns true when armed)"

    def check_cameras(self) -> None:
        """RobotError naming the first image input of the contract that is unusable now (no image or
        camera_info yet, wrong encoding, size or intrinsics, stale): the runner could not fly on it."""
        problem = self.cameras.problem(self._clock(), self._stamp_clock())
        if problem is not None:
            raise RobotError(f"arming refused: {problem} (the policy cannot see; fix the camera driver)")

    def _arm_worker(self) -> None:
        try:
            self.arm()
        except RobotError as e:
            self._arm_error = str(e) or type(e).__name__

    def arming_error(self) -> str:
        """Why the last start_arming failed ('' if it did not, or was reported already)."""
        err, self._arm_error = self._arm_error, ""
        return err

    def disarm(self) -> str:
        self.robot.disarm()
        self.armed = False
        return f"disarmed {self.inner.name}"

    def land(self) -> str:
        self.robot.latch(Verdict(LAND, "land requested (robot/land)"))
        return f"landing: {self.robot.verdict.reason}"

    def estop(self) -> str:
        self.robot.latch(Verdict(STOP, "emergency stop (robot/estop)"))
        self.armed = False
        return f"stopped: {self.robot.verdict.reason}"

    def reset_safety(self) -> str:
        """Clear the latch (the operator has seen the vehicle is safe); disarmed afterwards."""
        if self.link_lost:
            raise RobotError(f"the link is lost ({self.link_lost}): restart the bridge")
        self.robot.reset()
        self.armed = False
        self.started = False
        self._auto_arm_tried = False
        return "safety latch cleared; arm again to fly"


def verdict_text(v: Verdict) -> str:
    """robot/safety's text: 'ok', 'land: <reason>' or 'stop: <reason>'."""
    return v.action if v.ok else f"{v.action}: {v.reason}"

