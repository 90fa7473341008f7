"""Robot bridge node: any registered Robot adapter (hardware/adapters.py) behind the twin's ROS interface,
under the safety layer every adapter shares (hardware.safety.SafeRobot).

Publishes state/odom and state/imu (as the twin does: the runner cannot tell them apart) at rate_hz,
state/battery where the adapter measures it, robot/sent (the command the adapter actually sent, after
clipping, as a normalized action), robot/safety and robot/armed (latched). Executes cmd/executed (the
runner's command, mapped by the policy contract's action spec). Services robot/arm, robot/disarm,
robot/land, robot/estop, robot/reset_safety (std_srvs/Trigger). For a policy with image inputs it
subscribes each input's Image and CameraInfo topics (the camera driver's, as the contract names them) and
arms only while every one passes the runner's checks (image_core.CameraGate).

Its parameters are generated: the bridge's own (BridgeParams), ``safety.*`` (SafetyCfg) and ``robot.*``
(the chosen adapter's config dataclass). A lost link is logged, the safe state commanded, and with
exit_on_link_loss (tether deploy) the node ends with status 1.
"""

from __future__ import annotations

import functools
import math
import time

from rclpy.node import Node
from std_msgs.msg import Bool, String

from hardware.robot import RobotError
from tether.contract import ContractError, load_policy_dir
from tether_deploy import interface as itf
from tether_deploy.bridge_core import BridgeCore, make_adapter, verdict_text
from tether_deploy.conversions import command_names, command_values, fill_command, fill_imu, fill_odometry
from tether_deploy.params import BRIDGE_NODE, declare_node_params

DEFAULT_RATE_HZ = 100.0


class BridgeNode(Node):
    def __init__(self, **kwargs):
        super().__init__(BRIDGE_NODE, **kwargs)
        params = declare_node_params(self, BRIDGE_NODE)  # BridgeParams + safety.* + robot.* (the adapter's)
        log = self.get_logger()
        try:
            if not params.adapter:
                raise ContractError("parameter adapter is empty; set it to a registered robot adapter "
                                    "(hardware/adapters.py: twin, crazyflie, px4, ardupilot, arm)")
            if not params.policy_dir:
                raise ContractError("parameter policy_dir is empty; it gives the action spec of cmd/executed")
            _, contract = load_policy_dir(params.policy_dir)
            robot = make_adapter(params.adapter, params.robot)
            self.core = BridgeCore(robot, contract, params.safety, params.cmd_timeout_s, params.auto_arm,
                                   stamp_clock=lambda: self.get_clock().now().nanoseconds * 1e-9)
        except (ContractError, ImportError) as e:
            log.fatal(f"robot_bridge (adapter {params.adapter!r}, policy {params.policy_dir!r}) refused to start: {e}")
            raise SystemExit(2) from None
        self.params = params
        try:
            self.core.connect()
        except RobotError as e:
            log.fatal(f"{params.adapter}: cannot connect: {e}")
            raise SystemExit(1) from None
        rate_hz = params.rate_hz or float(getattr(params.robot, "rate_hz", DEFAULT_RATE_HZ))
        self.period_s = 1.0 / rate_hz
        self._names = command_names(contract.action)

        pub = lambda t: self.create_publisher(t.msg_class, t.name, t.profile)  # noqa: E731
        self._odom_pub, self._imu_pub = pub(itf.STATE_ODOM), pub(itf.STATE_IMU)
        self._battery_pub, self._sent_pub = pub(itf.STATE_BATTERY), pub(itf.ROBOT_SENT)
        self._safety_pub, self._armed_pub = pub(itf.ROBOT_SAFETY), pub(itf.ROBOT_ARMED)
        cmd = itf.BRIDGE.topic(itf.EXECUTED.name)
        self.create_subscription(cmd.msg_class, cmd.name, self._on_command, cmd.profile)
        for name, handler in (("arm", self.core.start_arming), ("disarm", self.core.disarm), ("land", self.core.land),
                              ("estop", self.core.estop), ("reset_safety", self.core.reset_safety)):
            srv = itf.BRIDGE.topic(f"robot/{name}")
            self.create_service(srv.msg_class, srv.name, self._service(name, handler))

        # the policy's cameras are their own driver nodes: watched here as the runner checks them, to arm
        image_t, info_t = itf.DEPTH_IMAGE, itf.DEPTH_CAMERA_INFO  # types and QoS; names from the contract
        for im in contract.images:
            self.create_subscription(image_t.msg_class, im.topic, functools.partial(self._on_image, im.name),
                                     image_t.profile)
            self.create_subscription(info_t.msg_class, im.camera_info_topic,
                                     functools.partial(self._on_camera_info, im.name), info_t.profile)
        self._odom, self._imu = itf.STATE_ODOM.msg_class(), itf.STATE_IMU.msg_class()
        self._sent, self._battery = itf.ROBOT_SENT.msg_class(), itf.STATE_BATTERY.msg_class()
        self._odom.header.frame_id = params.world_frame
        self._odom.child_frame_id = params.body_frame
        self._imu.header.frame_id = params.body_frame
        self._battery_every = max(1, round(rate_hz / params.battery_rate_hz))
        self._ticks = 0
        self._armed_shown: bool | None = None
        self._safety_shown: str | None = None
        self._link_reported = False
        self._publish_status()
        self.create_timer(self.period_s, self._on_timer)
        s = params.safety
        log.info(f"{self.core.inner.name} ({params.adapter}) at {rate_hz:g} Hz under the safety layer: geofence "
                 f"{list(s.geofence_min_w)}..{list(s.geofence_max_w)} m, tilt {s.max_tilt_rad:g} rad, rate "
                 f"{s.max_rate_rad_s:g} rad/s, thrust {s.max_thrust_frac:.0%}; "
                 f"{'arms at the first command' if params.auto_arm else 'waiting for robot/arm'}"
                 + "".join(f"; arms only with a usable image {im.width}x{im.height} {im.encoding} on {im.topic} "
                           f"and camera_info on {im.camera_info_topic} (image {im.name!r})" for im in contract.images))

    # ------------------------------------------------------------------------------------ inputs

    def _on_image(self, name: str, msg) -> None:
        self.core.cameras.offer_image(name, msg, time.monotonic())

    def _on_camera_info(self, name: str, msg) -> None:
        self.core.cameras.offer_camera_info(name, msg)

    def _on_command(self, msg) -> None:
        try:
            sent = self.core.on_command(command_values(msg, self._names))
        except ValueError as e:
            self.get_logger().error(f"command rejected, previous one stays in force: {e}", throttle_duration_sec=1.0)
            return
        except RobotError as e:
            self.get_logger().warn(f"command not sent: {e}", throttle_duration_sec=2.0)
            self._publish_status()
            return
        self._sent.header.stamp = msg.header.stamp
        fill_command(self._sent, self._names, sent, self.params.body_frame)
        self._sent_pub.publish(self._sent)
        self._publish_status()

    def _service(self, name: str, handler):
        def call(request, response):
            try:
                response.message = handler()
                response.success = True
            except RobotError as e:
                response.success, response.message = False, str(e)
            # two call sites: rclpy refuses two severities from one (a refused then a granted robot/arm
            # ended the node with "Logger severity cannot be changed between calls")
            if response.success:
                self.get_logger().info(f"robot/{name}: {response.message}")
            else:
                self.get_logger().warn(f"robot/{name}: {response.message}")
            self._publish_status()
            return response

        return call

    # ------------------------------------------------------------------------------------- ticks

    def _on_timer(self) -> None:
        err = self.core.arming_error()
        if err:
            self.get_logger().error(f"arming failed: {err}; call robot/arm to retry")
        self._publish_status()  # arming finishes in its own thread
        result = self.core.tick()
        if result.verdict_changed:
            v = self.core.verdict
            self.get_logger().error(f"safety: {verdict_text(v)}; commands refused until robot/reset_safety")
            self._publish_status()
        if result.link_lost:
            self._on_link_lost(result.link_lost)
            return
        if result.state is None:
            self.get_logger().warn(f"no state: {result.error}", throttle_duration_sec=2.0)
            return
        s = result.state
        stamp = self.get_clock().now().to_msg()
        self._odom.header.stamp = self._imu.header.stamp = stamp
        fill_odometry(self._odom, s.pos_w, s.quat_wxyz, s.lin_vel_w, s.ang_vel_b)
        self._odom_pub.publish(self._odom)
        fill_imu(self._imu, s.quat_wxyz, s.ang_vel_b, self.core.specific_force_b(s))
        self._imu_pub.publish(self._imu)
        self._ticks += 1
        if self._ticks % self._battery_every == 0:
            volts = self.core.robot.battery_v()
            if volts is not None:
                self._battery.header.stamp = stamp
                self._battery.voltage = float(volts)
                self._battery.percentage = math.nan  # unknown (sensor_msgs/BatteryState convention)
                self._battery.present = True
                self._battery_pub.publish(self._battery)

    def _on_link_lost(self, reason: str) -> None:
        if self._link_reported:
            return
        self._link_reported = True
        self.get_logger().error(f"link lost: {reason}; safe state commanded ({verdict_text(self.core.verdict)})")
        self._publish_status()
        if self.params.exit_on_link_loss:
            raise SystemExit(1)

    def _publish_status(self) -> None:
        text = verdict_text(self.core.verdict)
        if text != self._safety_shown:
            self._safety_shown = text
            self._safety_pub.publish(String(data=text))
        if self.core.armed != self._armed_shown:
            self._armed_shown = self.core.armed
            self._armed_pub.publish(Bool(data=self.core.armed))

    def destroy_node(self) -> None:
        if hasattr(self, "core"):
            self.core.disconnect()
        super().destroy_node()


def main(args=None) -> None:
    from tether_deploy.spin import spin_node

    spin_node(BridgeNode, args)


if __name__ == "__main__":
    main()
