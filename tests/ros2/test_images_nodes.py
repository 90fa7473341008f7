"""Deploy with images, as real processes over DDS: the runner feeds a contract-2.1 depth policy from
sensor_msgs/Image + CameraInfo and refuses a wrong encoding, a wrong size and a stale stamp (safe action,
one log line); the twin renders an obstacle world with pybullet's own camera and the runner flies on it;
the recorder's MCAP holds the images and the log reader returns them per tick."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from depth_policy import DEPTH_IMAGE, write_depth_hover_policy
from probe import Probe
from tether_deploy import qos
from tether.contract import load_policy_dir
from tether_deploy.conversions import depth_msg_to_metres, fill_camera_info, fill_depth_image
from tether_deploy.runner_core import RunnerConfig, open_loop_descent_action

H, W = DEPTH_IMAGE.height, DEPTH_IMAGE.width
RATE_HZ = 50.0


@pytest.fixture(scope="module")
def depth_policy_dir(tmp_path_factory):
    return write_depth_hover_policy(tmp_path_factory.mktemp("depth"), control_rate_hz=RATE_HZ)


class Camera:
    """The test as a depth camera: publishes an image (a constant depth) and its camera_info."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.image_pub = probe.create_publisher(Image, DEPTH_IMAGE.topic, qos.SENSOR_DATA)
        self.info_pub = probe.create_publisher(CameraInfo, DEPTH_IMAGE.camera_info_topic, qos.SENSOR_DATA)
        self.depth_m, self.encoding, self.size, self.stamp_offset_s = 2.0, "32FC1", (W, H), 0.0
        self.info = CameraInfo()
        fill_camera_info(self.info, W, H, *DEPTH_IMAGE.fx_fy_cx_cy_px)

    def publish(self) -> None:
        m = Image()
        w, h = self.size
        fill_depth_image(m, np.full((h, w), self.depth_m, np.float32), self.encoding)
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(
            self.probe.get_clock().now().nanoseconds + int(self.stamp_offset_s * 1e9), 10**9)
        self.image_pub.publish(m)
        self.info.header.stamp = m.header.stamp
        self.info_pub.publish(self.info)


@pytest.fixture
def probe(rclpy_context):
    p = Probe(rclpy_context)
    yield p
    p.close()


def test_the_runner_flies_on_the_image_and_refuses_an_unusable_one(launcher, probe, depth_policy_dir):
    runner = launcher.start("runner_node", {"policy_dir": str(depth_policy_dir), "autostart": True,
                                            "diagnostics_rate_hz": 5.0, "max_state_age_periods": 10.0})
    cam = Camera(probe)

    def tick():
        probe.publish_state((0.0, 0.0, 1.0))
        cam.publish()

    def fly(depth_m: float, n: int = 15) -> np.ndarray:
        """The policy's commands once the runner flies on images of depth_m."""
        cam.depth_m = depth_m
        k = len(probe.policy)
        assert probe.spin_until(lambda: probe.mode_now() == "policy" and len(probe.policy) > k + n, 30.0,
                                every=tick, period_s=1.0 / RATE_HZ), (probe.modes[-3:], runner.output()[-2000:])
        return np.array([a for _, a in probe.policy[-5:]])

    near, far = fly(0.5), fly(8.0)
    _, contract = load_policy_dir(depth_policy_dir)
    descent = open_loop_descent_action(contract, RunnerConfig().open_loop_thrust_scale)
    assert far[:, 0].min() - near[:, 0].max() > 0.05, (near, far)  # the image drives the action

    for change, text in (({"encoding": "16UC1"}, "encoding '16UC1', the policy takes '32FC1'"),
                         ({"size": (32, 24)}, "32x24 px, the policy takes 64x48"),
                         ({"stamp_offset_s": -0.3}, "ms old > max_age_s 100 ms")):
        for k, v in change.items():
            setattr(cam, k, v)
        n_exec = len(probe.executed)
        assert probe.spin_until(lambda: probe.mode_now().startswith("safe:") and len(probe.executed) > n_exec + 10,
                                20.0, every=tick, period_s=1.0 / RATE_HZ), (change, probe.modes[-3:])
        assert text in probe.mode_now(), (change, probe.mode_now())
        safe = np.array([a for _, a in probe.executed[-5:]])
        np.testing.assert_allclose(safe, np.tile(descent, (5, 1)), atol=1e-6)  # the open-loop descent, no policy
        assert probe.spin_until(lambda: probe.diagnostics and int(probe.diagnostics[-1][1].get(
            "image_unusable_ticks", 0)) > 0 and text in probe.diagnostics[-1][1]["last_image_problem"], 10.0,
            every=tick, period_s=1.0 / RATE_HZ), probe.diagnostics[-1:]
        cam.encoding, cam.size, cam.stamp_offset_s = "32FC1", (W, H), 0.0
        fly(2.0, n=5)
        lines = [ln for ln in runner.output().splitlines() if text in ln and "does not run without" in ln]
        assert len(lines) == 1, (change, lines)  # said once, not once per image or tick
    assert runner.output().count("images usable again") >= 3


def test_twin_camera_runner_and_recorder(launcher, probe, depth_policy_dir, tmp_path, rclpy_context):
    """The twin renders its obstacle world with pybullet's camera, the runner flies the depth policy on
    those images, the recorder logs them, and the log reader returns them per tick."""
    bag = tmp_path / "bag"
    rec = launcher.start("recorder_node", {"output": str(bag)})
    column_x_m, radius_m = 3.0, 0.3
    launcher.start("twin_node", {"policy_dir": str(depth_policy_dir), "rate_hz": RATE_HZ, "camera_rate_hz": 25.0,
                                 "obstacles.cylinders": [column_x_m, 0.0, 0.0, 3.0, radius_m]})
    runner = launcher.start("runner_node", {"policy_dir": str(depth_policy_dir), "autostart": True,
                                            "max_state_age_periods": 10.0})
    images: list[Image] = []
    probe.create_subscription(Image, DEPTH_IMAGE.topic, images.append, qos.SENSOR_DATA)
    # the probe's own image subscription is matched by discovery on its own schedule: wait for it too
    assert probe.spin_until(lambda: probe.mode_now() == "policy" and len(probe.policy) > 100 and len(images) > 5,
                            40.0), (probe.modes[-3:], len(images), runner.output()[-2000:])
    m = images[-1]
    assert (m.encoding, m.width, m.height, m.header.frame_id) == ("32FC1", W, H, "camera_depth_optical_frame")
    d = depth_msg_to_metres(m)
    cam_x = 0.0 + DEPTH_IMAGE.mount_position_b_m[0]
    # the column straight ahead (the twin hovers near the origin: a few cm of drift allowed)
    assert abs(float(d[H // 2, W // 2]) - (column_x_m - radius_m - cam_x)) < 0.1, d[H // 2, W // 2]
    assert np.isposinf(d[0, 0])  # the sky beyond max_range_m: +inf (REP 117)
    assert rec.stop() == 0, rec.output()

    from bag_check import read_bag
    from policies.hil.dataset import load_log, read_messages, tick_images

    counts = read_bag(bag)
    assert counts["/" + DEPTH_IMAGE.topic] > 10 and counts["/" + DEPTH_IMAGE.camera_info_topic] > 10, counts
    _, contract = load_policy_dir(depth_policy_dir)
    msgs = read_messages(bag)
    step = load_log(bag, contract, {contract.provenance["onnx_sha256"]})
    imgs, age = tick_images(bag, contract.images[0], step.t_s, msgs)
    flew = np.isfinite(step.policy_action).all(axis=1)
    assert imgs.shape == (len(step), 1, H, W) and flew.sum() > 50
    # from the recorder's first image on (DDS discovery of the twin's camera can lag the runner's by a few
    # ticks; CI once saw that), every tick the policy flew had an image within max_age_s, showing the column ahead
    flew &= np.isfinite(age)
    assert flew.sum() > 50
    assert np.all(age[flew] <= DEPTH_IMAGE.max_age_s), age[flew].max()
    centre = imgs[flew, 0, H // 2, W // 2]
    assert np.all(np.abs(centre - (column_x_m - radius_m - cam_x)) < 0.1), centre
