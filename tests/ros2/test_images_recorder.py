"""The recorder logs every image topic the deployed contract declares, not only the default camera topics,
and the log reader returns each image input per tick; real processes over DDS."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from bag_check import read_bag
from depth_policy import DEPTH_IMAGE, write_two_camera_policy
from probe import Probe
from tether.contract import load_policy_dir
from tether_deploy import qos
from tether_deploy.conversions import fill_camera_info, fill_depth_image

H, W = DEPTH_IMAGE.height, DEPTH_IMAGE.width
# a robot's two cameras on its driver's topics: neither is the interface's default camera topic
FRONT = dataclasses.replace(DEPTH_IMAGE, name="front", topic="front/depth/image_rect_raw",
                            camera_info_topic="front/depth/camera_info")
DOWN = dataclasses.replace(DEPTH_IMAGE, name="down", topic="down/depth/image_rect_raw", encoding="16UC1",
                           camera_info_topic="down/depth/camera_info", mount_rpy_rad=(0.0, 1.5707963, 0.0))


@pytest.fixture(scope="module")
def two_camera_dir(tmp_path_factory):
    return write_two_camera_policy(tmp_path_factory.mktemp("two_cameras"), (FRONT, DOWN))


@pytest.fixture
def probe(rclpy_context):
    p = Probe(rclpy_context)
    yield p
    p.close()


def test_recorder_logs_every_image_topic_of_the_contract(launcher, probe, two_camera_dir, tmp_path):
    bag = tmp_path / "bag"
    # topics restricted to the state: the cameras come from the contract alone
    rec = launcher.start("recorder_node", {"output": str(bag), "policy_dir": str(two_camera_dir),
                                           "topics": ["state/odom"]})
    pubs = {im.name: (probe.create_publisher(Image, im.topic, qos.SENSOR_DATA),
                      probe.create_publisher(CameraInfo, im.camera_info_topic, qos.SENSOR_DATA)) for im in (FRONT, DOWN)}
    default_pub = probe.create_publisher(Image, DEPTH_IMAGE.topic, qos.SENSOR_DATA)
    odom_pub = probe.create_publisher(Odometry, "state/odom", qos.SENSOR_DATA)
    everyone = [p for pair in pubs.values() for p in pair] + [odom_pub]
    assert probe.spin_until(lambda: all(p.get_subscription_count() > 0 for p in everyone), 30.0), rec.output()
    assert default_pub.get_subscription_count() == 0  # not asked for: topics holds only state/odom
    depth_m = {"front": lambda k: 1.0 + 0.25 * k, "down": lambda k: 0.5 + 0.125 * k}
    stamps = []
    for k in range(12):
        stamp_ns = probe.get_clock().now().nanoseconds
        stamps.append(stamp_ns)
        for im in (FRONT, DOWN):
            m, info = Image(), CameraInfo()
            fill_depth_image(m, np.full((H, W), depth_m[im.name](k), np.float32), im.encoding)
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            fill_camera_info(info, W, H, *im.fx_fy_cx_cy_px)
            info.header.stamp = m.header.stamp
            pubs[im.name][0].publish(m)
            pubs[im.name][1].publish(info)
        probe.publish_state((0.0, 0.0, 1.0))
        probe.spin_for(0.1)
    assert rec.stop() == 0, rec.output()

    counts = read_bag(bag)  # the mcap and rosbags readers agree on it
    for im in (FRONT, DOWN):
        assert counts["/" + im.topic] > 0 and counts["/" + im.camera_info_topic] > 0, counts
    assert "/" + DEPTH_IMAGE.topic not in counts, counts

    from policies.hil.dataset import contract_images, read_messages

    _, contract = load_policy_dir(two_camera_dir)
    msgs = read_messages(bag)
    ticks_s = (np.asarray(stamps, dtype=np.float64) + 1e6) * 1e-9  # 1 ms after each pair of frames
    per_input = contract_images(bag, contract, ticks_s, msgs)
    assert sorted(per_input) == ["down", "front"]
    for im in (FRONT, DOWN):
        imgs, age = per_input[im.name]
        assert imgs.shape == (len(stamps), 1, H, W)
        seen = np.isfinite(age)
        # best-effort QoS may drop a frame under load: a tick whose frame was dropped sees an older one
        received = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in msgs["/" + im.topic]}
        assert len(received) >= len(stamps) // 2, (im.name, len(received))
        for k, s in enumerate(stamps):
            if s in received:
                assert seen[k] and age[k] == pytest.approx(1e-3, abs=1e-6)
                # 16UC1 carries millimetres: the decoded metres within half a millimetre
                np.testing.assert_allclose(imgs[k, 0], depth_m[im.name](k), atol=5e-4)


def test_recorder_refuses_a_policy_dir_without_a_contract(launcher, tmp_path):
    """Refused before anything is written: exit 2, one error line naming the file, no bag directory."""
    bag = tmp_path / "bag"
    rec = launcher.start("recorder_node", {"output": str(bag), "policy_dir": str(tmp_path / "nowhere")})
    rec.p.wait(60.0)  # it ends by itself
    assert rec.stop() == 2, rec.output()
    errors = [ln for ln in rec.output().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "policy.json" in errors[0], rec.output()
    assert not bag.exists()
