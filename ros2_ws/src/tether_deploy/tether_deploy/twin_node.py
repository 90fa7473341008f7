"""Digital twin node: hardware.twin.DigitalTwin behind the same ROS interface as a robot adapter.

Publishes state/odom (nav_msgs/Odometry, pose in ``world``, twist in ``base_link``) and state/imu
(sensor_msgs/Imu) at the robot's rate, and executes cmd/executed (normalized actions, mapped to motor
commands by the policy contract's action spec). Latency, sensor noise and disturbances (wind gust,
payload offset, weakened motor) are parameters, so there are situations a person must correct.

Like a flight controller in offboard mode: it sits still ("on the stand", physics paused) until the
first command, and if commands stop for cmd_timeout_s it cuts the motors (safe_stop). Never on a robot.
"""

from __future__ import annotations

import time

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Imu
from std_msgs.msg import Float32MultiArray

from hardware.twin import DigitalTwin, Payload, TwinConfig, WeakMotor, WindGust, with_policy_rate_gains
from tether.contract import load_policy_dir
from tether.observation import quat_wxyz_to_rotmat
from tether_deploy import qos
from tether_deploy.actuation import ActionToCommand
from tether_deploy.conversions import fill_imu, fill_odometry
from tether_deploy.spin import spin_node

GRAVITY_W = np.array([0.0, 0.0, -9.81])


class TwinNode(Node):
    def __init__(self, **kwargs):
        super().__init__("twin", **kwargs)
        d = TwinConfig()
        self.declare_parameter("policy_dir", "")
        self.declare_parameter("preset", d.preset)
        self.declare_parameter("rate_hz", d.rate_hz)
        self.declare_parameter("substeps", d.substeps)
        self.declare_parameter("latency_s", d.latency_s)
        self.declare_parameter("init_pos_w", list(d.init_pos_w))
        self.declare_parameter("noise_pos_m", d.noise_pos_m)
        self.declare_parameter("noise_vel_m_s", d.noise_vel_m_s)
        self.declare_parameter("noise_att_rad", d.noise_att_rad)
        self.declare_parameter("noise_ang_vel_rad_s", d.noise_ang_vel_rad_s)
        self.declare_parameter("seed", d.seed)
        self.declare_parameter("wind_gust.start_s", 0.0)
        self.declare_parameter("wind_gust.duration_s", 0.0)
        self.declare_parameter("wind_gust.force_w", [0.0, 0.0, 0.0])
        self.declare_parameter("payload.mass_kg", 0.0)
        self.declare_parameter("payload.pos_b", [0.0, 0.0, 0.0])
        self.declare_parameter("weak_motor.index", -1)
        self.declare_parameter("weak_motor.gain", 1.0)
        self.declare_parameter("cmd_timeout_s", 0.5)
        self.declare_parameter("world_frame", "world")
        self.declare_parameter("body_frame", "base_link")

        p = self.get_parameter
        gust = None
        if p("wind_gust.duration_s").value > 0:
            gust = WindGust(float(p("wind_gust.start_s").value), float(p("wind_gust.duration_s").value),
                            tuple(float(x) for x in p("wind_gust.force_w").value))
        payload = None
        if p("payload.mass_kg").value > 0:
            payload = Payload(float(p("payload.mass_kg").value), tuple(float(x) for x in p("payload.pos_b").value))
        weak = None
        if p("weak_motor.index").value >= 0:
            weak = WeakMotor(int(p("weak_motor.index").value), float(p("weak_motor.gain").value))
        policy_dir = p("policy_dir").value
        if not policy_dir:
            raise ValueError("twin: parameter policy_dir is empty; it gives the action spec of cmd/executed")
        _, contract = load_policy_dir(policy_dir)
        # A CTBR policy was trained against the sim's rate controller: the twin's firmware uses its gains.
        self.cfg = with_policy_rate_gains(TwinConfig(
            preset=p("preset").value, rate_hz=float(p("rate_hz").value), substeps=int(p("substeps").value),
            latency_s=float(p("latency_s").value), init_pos_w=tuple(float(x) for x in p("init_pos_w").value),
            noise_pos_m=float(p("noise_pos_m").value), noise_vel_m_s=float(p("noise_vel_m_s").value),
            noise_att_rad=float(p("noise_att_rad").value),
            noise_ang_vel_rad_s=float(p("noise_ang_vel_rad_s").value), seed=int(p("seed").value),
            wind_gust=gust, payload=payload, weak_motor=weak), contract.action)
        self.twin = DigitalTwin(self.cfg)
        self.to_command = ActionToCommand(contract.action, self.twin.preset.rotor_pos_b, self.twin.preset.rotor_spin)
        self.twin.connect()
        self.cmd_timeout_s = float(p("cmd_timeout_s").value)
        self.world_frame, self.body_frame = p("world_frame").value, p("body_frame").value

        self._odom_pub = self.create_publisher(Odometry, qos.STATE_ODOM, qos.SENSOR_DATA)
        self._imu_pub = self.create_publisher(Imu, qos.STATE_IMU, qos.SENSOR_DATA)
        # No requested DDS deadline here: a subscriber requesting one does not match a publisher that
        # offers none (a test tool, a bag replay); cmd_timeout_s below is the failsafe.
        self.create_subscription(Float32MultiArray, qos.EXECUTED_ACTION, self._on_command, qos.COMMAND)
        self._started = False
        self._stopped = False
        self._last_cmd_s = 0.0
        self._prev_vel_w: np.ndarray | None = None
        self._odom, self._imu = Odometry(), Imu()
        self._odom.header.frame_id = self.world_frame
        self._odom.child_frame_id = self.body_frame
        self._imu.header.frame_id = self.body_frame
        self.create_timer(self.cfg.dt_s, self._on_timer)
        self.get_logger().info(
            f"twin {self.twin.name} at {self.cfg.rate_hz:g} Hz, latency {self.cfg.latency_s * 1e3:.0f} ms, "
            f"gust {gust}, payload {payload}, weak motor {weak}; waiting for the first command")

    def _on_command(self, msg: Float32MultiArray) -> None:
        try:
            cmd = self.to_command(msg.data)
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

    def _on_timer(self) -> None:
        if self._started:
            if not self._stopped and time.monotonic() - self._last_cmd_s > self.cmd_timeout_s:
                self._stopped = True
                self.twin.safe_stop()
                self.get_logger().error(f"no command for {self.cmd_timeout_s} s: motors off (offboard-loss failsafe)")
            self.twin.advance()
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

    def destroy_node(self) -> None:
        self.twin.disconnect()
        super().destroy_node()


def main(args=None) -> None:
    spin_node(TwinNode, args)


if __name__ == "__main__":
    main()
