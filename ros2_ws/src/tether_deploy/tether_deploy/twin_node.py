"""Digital twin node: hardware.twin.DigitalTwin behind the same ROS interface as a robot adapter.

Publishes state/odom (nav_msgs/Odometry, pose in ``world``, twist in ``base_link``) and state/imu
(sensor_msgs/Imu) at the robot's rate, and executes cmd/executed (normalized actions, mapped to motor
commands by the policy contract's action spec). Latency, sensor noise and disturbances (wind gust,
payload offset, weakened motor) are parameters, so there are situations a person must correct.

Like a flight controller in offboard mode: it sits still ("on the stand", physics paused) until the
first command that spins a motor, and if commands stop for cmd_timeout_s it cuts the motors (safe_stop).
Never on a robot. With release_on_runner_flying it also waits for the runner's mode (runner/mode) to say
the runner flies. A motors-off command does not start it: a runner still recovering from a long state
loss sends its safe command (motors off) for the few ticks before its policy flies, and a vehicle
released with its motors stopped drops and spins its rotors down (seen in the correction loop: the
first episode after each finetune started with 30 ms of motors off and failed).

With a policy that has image inputs (contract 2.1) the twin is also its camera: each input is rendered
by pybullet's own renderer in the twin's world (its obstacles and ground) from the contract's mount and
intrinsics, and published as sensor_msgs/Image (the contract's encoding and topic) with a CameraInfo at
camera_rate_hz, stamped with the node clock when the state was rendered, in camera_frame.
"""

from __future__ import annotations

import time

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Imu

from std_msgs.msg import String

from hardware.robot import CtbrCommand, check_vehicle
from hardware.twin import DigitalTwin, twin_vehicle, with_policy_rate_gains
from tether.contract import ContractError, load_policy_dir
from tether.observation import quat_wxyz_to_rotmat
from tether_deploy import interface as itf
from tether_deploy import qos
from tether_deploy.actuation import ActionToCommand
from tether_deploy.arbitration import FLYING_SOURCES
from tether_deploy.conversions import (command_names, command_values, fill_camera_info, fill_depth_image, fill_imu,
                                       fill_odometry)
from tether_deploy.params import declare_node_params
from tether_deploy.spin import spin_node

GRAVITY_W = np.array([0.0, 0.0, -9.81])


class TwinNode(Node):
    def __init__(self, **kwargs):
        super().__init__("twin", **kwargs)
        params = declare_node_params(self, "twin")  # every parameter, from params.py (TwinParams)
        try:
            if not params.policy_dir:
                raise ContractError("parameter policy_dir is empty; it gives the action spec of cmd/executed")
            _, contract = load_policy_dir(params.policy_dir)
            # The same check tether deploy makes before starting anything: right vehicle, right commands.
            check_vehicle(contract, twin_vehicle(params), "the twin")
        except ContractError as e:
            self.get_logger().fatal(f"policy {params.policy_dir!r} refused: {e}")
            raise SystemExit(2) from None
        self.params = params
        # A CTBR policy was trained against the sim's rate controller: the twin's firmware uses its gains.
        self.cfg = with_policy_rate_gains(params.twin_config(), contract.action)
        gust, payload, weak = self.cfg.wind_gust, self.cfg.payload, self.cfg.weak_motor
        self.twin = DigitalTwin(self.cfg)
        self.to_command = ActionToCommand(contract.action, self.twin.preset.rotor_pos_b, self.twin.preset.rotor_spin)
        self.twin.connect()
        self.cmd_timeout_s = params.cmd_timeout_s
        self.world_frame, self.body_frame = params.world_frame, params.body_frame
        self._crash_pub = self.create_publisher(String, qos.TWIN_CRASHED, qos.LATCHED)
        self._crash_reported = False

        self._odom_pub = self.create_publisher(Odometry, qos.STATE_ODOM, qos.SENSOR_DATA)
        self._imu_pub = self.create_publisher(Imu, qos.STATE_IMU, qos.SENSOR_DATA)
        # No requested DDS deadline here: a subscriber requesting one does not match a publisher that
        # offers none (a test tool, a bag replay); cmd_timeout_s below is the failsafe.
        cmd = itf.TWIN.topic(itf.EXECUTED.name)
        self.create_subscription(cmd.msg_class, cmd.name, self._on_command, cmd.profile)
        mode = itf.TWIN.topic(itf.RUNNER_MODE.name)
        self._release_on_flying = params.release_on_runner_flying
        self._runner_flying = False
        self.create_subscription(mode.msg_class, mode.name, self._on_runner_mode, mode.profile)
        self._cmd_names = command_names(contract.action)
        self._started = False
        self._stopped = False
        self._last_cmd_s = 0.0
        self._prev_vel_w: np.ndarray | None = None
        self._odom, self._imu = Odometry(), Imu()
        self._odom.header.frame_id = self.world_frame
        self._odom.child_frame_id = self.body_frame
        self._imu.header.frame_id = self.body_frame
        self.create_timer(self.cfg.dt_s, self._on_timer)
        self._cameras = []  # (image input, image publisher, camera_info publisher, Image, CameraInfo)
        if contract.images and params.camera_rate_hz > 0:
            image_t, info_t = itf.DEPTH_IMAGE, itf.DEPTH_CAMERA_INFO  # types and QoS; names from the contract
            for im in contract.images:
                info = info_t.msg_class()
                fill_camera_info(info, im.width, im.height, *im.fx_fy_cx_cy_px, frame_id=params.camera_frame)
                self._cameras.append((im, self.create_publisher(image_t.msg_class, im.topic, image_t.profile),
                                      self.create_publisher(info_t.msg_class, im.camera_info_topic, info_t.profile),
                                      image_t.msg_class(), info))
            self.create_timer(1.0 / params.camera_rate_hz, self._on_camera_timer)
        world = self.cfg.obstacles
        cams = "".join(f", camera {im.name!r} {im.width}x{im.height} {im.encoding} on {im.topic} at "
                       f"{params.camera_rate_hz:g} Hz" for im, *_ in self._cameras)
        self.get_logger().info(
            f"twin {self.twin.name} at {self.cfg.rate_hz:g} Hz, latency {self.cfg.latency_s * 1e3:.0f} ms, "
            f"gust {gust}, payload {payload}, weak motor {weak}, obstacles {world}{cams}; waiting for the first command")

    def _on_command(self, msg) -> None:
        """A sensor_msgs/JointState command: its names must be the contract's outputs, in order."""
        try:
            cmd = self.to_command(command_values(msg, self._cmd_names))
            if not self._started and (_motors_off(cmd) or (self._release_on_flying and not self._runner_flying)):
                return  # on the stand: stays there
            self.twin.send(cmd)
        except ValueError as e:
            self.get_logger().error(f"command rejected, previous one stays in force: {e}",
                                    throttle_duration_sec=1.0)
            return
        self._last_cmd_s = time.monotonic()
        if not self._started:
            self._started = True
            self.get_logger().info("first command: physics running")
        if self._stopped:
            self._stopped = False
            self.get_logger().warn("commands are back after a command timeout")

    def _on_runner_mode(self, msg) -> None:
        self._runner_flying = msg.data in FLYING_SOURCES

    def _on_timer(self) -> None:
        if self._started:
            if not self._stopped and time.monotonic() - self._last_cmd_s > self.cmd_timeout_s:
                self._stopped = True
                self.twin.safe_stop()
                self.get_logger().error(f"no command for {self.cmd_timeout_s} s: motors off (offboard-loss failsafe)")
            self.twin.advance()
            if self.twin.crash is not None and not self._crash_reported:
                self._report_crash()
            if 0 < self.params.flight_s <= self.twin.sim_time_s + 1e-9:
                self.get_logger().info(f"flight of {self.twin.sim_time_s:.2f} s done (flight_s): exiting")
                raise SystemExit(0)
        s = self.twin.read()
        stamp = self.get_clock().now().to_msg()
        self._odom.header.stamp = stamp
        fill_odometry(self._odom, s.pos_w, s.quat_wxyz, s.lin_vel_w, s.ang_vel_b)
        self._odom_pub.publish(self._odom)
        acc_w = np.zeros(3) if self._prev_vel_w is None or not self._started else \
            (s.lin_vel_w - self._prev_vel_w) / self.cfg.dt_s
        self._prev_vel_w = s.lin_vel_w
        specific_force_b = quat_wxyz_to_rotmat(s.quat_wxyz).T @ (acc_w - GRAVITY_W)
        self._imu.header.stamp = stamp
        fill_imu(self._imu, s.quat_wxyz, s.ang_vel_b, specific_force_b)
        self._imu_pub.publish(self._imu)

    def _on_camera_timer(self) -> None:
        """Render and publish every image input (pybullet's TinyRenderer, the true pose now)."""
        for im, image_pub, info_pub, msg, info in self._cameras:
            stamp = self.get_clock().now().to_msg()
            fill_depth_image(msg, self.twin.render_depth(im), im.encoding, self.params.camera_frame)
            msg.header.stamp = info.header.stamp = stamp
            image_pub.publish(msg)
            info_pub.publish(info)

    def _report_crash(self) -> None:
        """Once per crash: the log, the latched twin/crashed topic (the recorder keeps it), and with
        exit_on_crash the node ends (status 1) after crash_exit_delay_s, so tether deploy fails."""
        self._crash_reported = True
        reason = self.twin.crash.describe()
        self._crash_pub.publish(String(data=reason))
        self.get_logger().error(f"crashed: {reason}; motors stopped")
        if self.params.exit_on_crash:
            self._exit_timer = self.create_timer(self.params.crash_exit_delay_s, self._exit_after_crash)

    def _exit_after_crash(self) -> None:
        raise SystemExit(1)

    def destroy_node(self) -> None:
        if hasattr(self, "twin"):
            self.twin.disconnect()
        super().destroy_node()


def _motors_off(cmd) -> bool:
    """True for a command that spins no motor: zero collective thrust (CTBR) or every rotor at zero."""
    if isinstance(cmd, CtbrCommand):
        return cmd.thrust_n <= 0.0
    return bool(np.all(np.asarray(cmd.rotor_cmd) <= 0.0))


def main(args=None) -> None:
    spin_node(TwinNode, args)


if __name__ == "__main__":
    main()
