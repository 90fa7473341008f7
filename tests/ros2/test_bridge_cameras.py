"""robot_bridge with a policy that has image inputs: a real robot's camera is its own driver node on the
contract's topics, so the bridge watches them with the runner's checks (image_core.CameraGate) and arms
only while every image input is usable. The core in plain pytest, then the node as a real process with
the test as the camera driver."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from depth_policy import DEPTH_IMAGE, write_depth_hover_policy
from hardware.robot import RobotError
from hardware.safety import SafetyCfg
from hardware.twin import DigitalTwin, TwinConfig
from test_bridge import BridgeProbe
from tether.contract import load_policy_dir
from tether_deploy import qos
from tether_deploy.bridge_core import BridgeCore
from tether_deploy.conversions import command_names, fill_camera_info, fill_depth_image

H, W = DEPTH_IMAGE.height, DEPTH_IMAGE.width


@pytest.fixture(scope="module")
def depth_policy_dir(tmp_path_factory):
    return write_depth_hover_policy(tmp_path_factory.mktemp("depth"), control_rate_hz=50.0)


def image_msg(stamp_s: float, size=(W, H), encoding="32FC1", depth_m: float = 3.0) -> Image:
    m = Image()
    fill_depth_image(m, np.full((size[1], size[0]), depth_m, np.float32), encoding)
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(int(round(stamp_s * 1e9)), 10**9)
    return m


def info_msg(fx_fy_cx_cy=DEPTH_IMAGE.fx_fy_cx_cy_px) -> CameraInfo:
    info = CameraInfo()
    fill_camera_info(info, W, H, *fx_fy_cx_cy)
    return info


def test_core_arms_only_with_a_usable_camera(depth_policy_dir):
    _, contract = load_policy_dir(depth_policy_dir)
    now, stamp_now = [100.0], [5000.0]
    core = BridgeCore(DigitalTwin(TwinConfig()), contract, SafetyCfg(), cmd_timeout_s=0.5, clock=lambda: now[0],
                      stamp_clock=lambda: stamp_now[0])
    core.connect()
    try:
        def refused(match: str) -> None:
            with pytest.raises(RobotError, match=match):
                core.start_arming()
            with pytest.raises(RobotError, match=match):
                core.arm()
            assert not core.armed

        refused("camera 'depth' on 'camera/depth/image_rect_raw': no image received yet")
        core.cameras.offer_image("depth", image_msg(stamp_now[0], size=(32, 24)), now[0])
        refused("32x24 px, the policy takes 64x48")
        core.cameras.offer_image("depth", image_msg(stamp_now[0], encoding="16UC1"), now[0])
        refused("encoding '16UC1', the policy takes '32FC1'")
        core.cameras.offer_image("depth", image_msg(stamp_now[0]), now[0])
        refused("no camera_info received yet")
        fx, fy, cx, cy = DEPTH_IMAGE.fx_fy_cx_cy_px
        core.cameras.offer_camera_info("depth", info_msg((1.3 * fx, fy, cx, cy)))
        refused("camera_info focal lengths")  # beyond the contract's tolerance
        core.cameras.offer_camera_info("depth", info_msg())
        stamp_now[0] += 0.5  # the last image is now 500 ms old
        refused("ms old > max_age_s 100 ms")
        core.cameras.offer_image("depth", image_msg(stamp_now[0] - 0.02), now[0])
        assert "arming" in core.start_arming()  # every check passed: the adapter arms in the background
    finally:
        core.disconnect()


def test_node_refuses_to_arm_until_the_camera_driver_publishes_a_usable_image(launcher, rclpy_context,
                                                                               depth_policy_dir):
    _, contract = load_policy_dir(depth_policy_dir)
    bridge = launcher.start("bridge_node", {"adapter": "twin", "policy_dir": str(depth_policy_dir),
                                            "robot.noise_pos_m": 0.0, "robot.noise_vel_m_s": 0.0})
    probe = BridgeProbe(rclpy_context, command_names(contract.action))
    try:
        image_pub = probe.create_publisher(Image, DEPTH_IMAGE.topic, qos.SENSOR_DATA)
        info_pub = probe.create_publisher(CameraInfo, DEPTH_IMAGE.camera_info_topic, qos.SENSOR_DATA)
        assert probe.spin_until(lambda: len(probe.states) > 5, 60.0), f"no state from the bridge:\n{bridge.output()}"
        assert "arms only with a usable image 64x48 32FC1 on camera/depth/image_rect_raw" in bridge.output()
        reply = probe.arm()
        assert not reply.success and "camera 'depth'" in reply.message and "no image received yet" in reply.message, \
            reply.message
        size = [(32, 24)]

        def camera() -> None:  # the camera driver at 20 Hz, stamped now
            stamp_s = probe.get_clock().now().nanoseconds * 1e-9
            image_pub.publish(image_msg(stamp_s, size=size[0]))
            info_pub.publish(info_msg())

        assert probe.spin_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                                30.0), bridge.output()
        def arm():  # the camera keeps publishing while the service call is in flight (max_age_s 100 ms)
            future = probe.arm_client.call_async(probe._trigger())
            assert probe.spin_until(future.done, 30.0, every=camera, period_s=0.05), bridge.output()[-3000:]
            return future.result()

        probe.spin_for(1.0, every=camera, period_s=0.05)
        reply = arm()
        assert not reply.success and "32x24 px, the policy takes 64x48" in reply.message, reply.message
        assert not (probe.armed and probe.armed[-1])
        size[0] = (W, H)
        probe.spin_for(1.0, every=camera, period_s=0.05)
        reply = arm()
        assert reply.success, reply.message
        assert probe.spin_until(lambda: probe.armed and probe.armed[-1], 20.0, every=camera, period_s=0.05), \
            bridge.output()[-2000:]
    finally:
        probe.close()
