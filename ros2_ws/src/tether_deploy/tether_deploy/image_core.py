"""Image inputs of a policy (contract 2.1) on the robot side, without ROS: checks and decoding.

Each image input (tether.contract.ImageInput) has an :class:`ImageSlot` in the runner's core holding its
latest image, checked on arrival (encoding, size, layout, stamp set) and decoded to metres
(tether_deploy.conversions.decode_depth), and its camera_info, judged by ``ImageInput.intrinsics_error``.
At a tick, :meth:`ImageSlot.check` says whether the image can be fed (age against ``max_age_s``).

On a real robot the camera is its own driver node publishing on the contract's topics, not the adapter:
robot_bridge holds a :class:`CameraGate` (the same ImageSlot checks on the same topics) and refuses to arm
while an image input is unusable, so a vehicle never takes off with a policy that cannot see.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tether.contract import ImageInput
from tether_deploy.conversions import camera_info_intrinsics, decode_depth, stamp_to_s

IMAGE_PROBLEMS = {
    "no_image": "no image received yet on the input's topic",
    "encoding": "the latest image's encoding is not the one the contract declares",
    "size": "the latest image's width x height is not the contract's",
    "malformed": "the latest image's step or data length does not fit its size",
    "unstamped": "the latest image's header.stamp is 0 (not set)",
    "stale": "the latest image is older than the input's max_age_s at the tick (header.stamp, node clock)",
    "future": "the latest image is stamped ahead of the node clock by more than max_stamp_lead_s",
    "no_camera_info": "no camera_info received yet on the input's camera_info_topic",
    "intrinsics": "camera_info differs from the intrinsics the policy was trained with",
}
"""why a tick had no usable image, by cause (the diagnostics count ticks as image_<cause>)"""


@dataclasses.dataclass(frozen=True)
class ImageFrame:
    """One sensor_msgs/Image as received (its fields) and when it came."""

    encoding: str
    """REP 118 encoding"""
    width: int
    """[px]"""
    height: int
    """[px]"""
    step: int
    """bytes per row, padding included [bytes]"""
    is_bigendian: bool
    """byte order of the data"""
    data: object
    """the pixel bytes (bytes-like)"""
    stamp_s: float
    """header.stamp [s, the camera's clock]"""
    received_s: float
    """when it arrived [s, monotonic]"""


class ImageSlot:
    """The latest image and camera_info of one image input of the contract. A bad image replaces the
    good one before it: the camera's newest frame is what the policy would see, so the input is unusable
    until a good one comes."""

    def __init__(self, image: ImageInput):
        self.image = image
        self.depth_m: np.ndarray | None = None
        """[1, H, W] float32 metres of the latest image, None if it was refused"""
        self.stamp_s = 0.0
        self.received_s = 0.0
        self.frames = 0  # images offered so far
        self.problem: tuple[str, str] | None = ("no_image", f"no image received yet on {image.topic!r}")
        self.info_problem: tuple[str, str] | None = ("no_camera_info", f"no camera_info received yet on "
                                                                       f"{image.camera_info_topic!r}")

    def offer(self, f: ImageFrame) -> tuple[str, str] | None:
        """Check and decode an image; returns the problem (kind, text) or None."""
        im, self.frames = self.image, self.frames + 1
        problem = None
        if f.encoding != im.encoding:
            problem = ("encoding", f"encoding {f.encoding!r}, the policy takes {im.encoding!r}")
        elif (f.width, f.height) != (im.width, im.height):
            problem = ("size", f"{f.width}x{f.height} px, the policy takes {im.width}x{im.height}")
        elif f.stamp_s == 0.0:
            problem = ("unstamped", "header.stamp is 0 (not set): stamp each image with its exposure time")
        else:
            try:
                depth = decode_depth(f.encoding, f.width, f.height, f.step, f.is_bigendian, f.data)
            except ValueError as e:
                problem = ("malformed", str(e))
        if problem is not None:
            self.problem, self.depth_m = problem, None
            return problem
        self.problem, self.depth_m = None, depth[None]
        self.stamp_s, self.received_s = f.stamp_s, f.received_s
        return None

    def offer_camera_info(self, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> str | None:
        err = self.image.intrinsics_error(fx, fy, cx, cy, width, height)
        self.info_problem = None if err is None else ("intrinsics", err)
        return err

    def check(self, now_s: float, clock_s: float, check_stamps: bool = True,
              max_stamp_lead_s: float = 0.05) -> tuple[str, str] | None:
        """None if the latest image can be fed at a tick at ``now_s`` (monotonic) / ``clock_s`` (node
        clock), else (kind, text). ``check_stamps`` False (a replay with another clock): the age is from
        the arrival time instead of the stamp."""
        if self.problem is not None:
            return self.problem
        if self.info_problem is not None:
            return self.info_problem
        age = clock_s - self.stamp_s if check_stamps else now_s - self.received_s
        limit = self.image.max_age_s
        if age > limit:
            return ("stale", f"stale by {(age - limit) * 1e3:.0f} ms ({age * 1e3:.0f} ms old > max_age_s "
                             f"{limit * 1e3:.0f} ms)")
        if check_stamps and -age > max_stamp_lead_s:
            return ("future", f"stamped {-age * 1e3:.0f} ms ahead of the node clock (> max_stamp_lead_s "
                              f"{max_stamp_lead_s * 1e3:.0f} ms): the clocks disagree")
        return None


def image_frame(msg, received_s: float) -> ImageFrame:
    """The ImageFrame of a sensor_msgs/Image (any object with its fields) that arrived at ``received_s``."""
    return ImageFrame(msg.encoding, int(msg.width), int(msg.height), int(msg.step), bool(msg.is_bigendian), msg.data,
                      stamp_to_s(msg.header.stamp), received_s)


class CameraGate:
    """Every image input of a contract, checked as the runner checks it (one ImageSlot each), for a node
    that must not let the vehicle fly while the policy cannot see (robot_bridge's arming)."""

    def __init__(self, images: tuple[ImageInput, ...]):
        self.slots = {im.name: ImageSlot(im) for im in images}

    def offer_image(self, name: str, msg, received_s: float) -> tuple[str, str] | None:
        return self.slots[name].offer(image_frame(msg, received_s))

    def offer_camera_info(self, name: str, msg) -> str | None:
        return self.slots[name].offer_camera_info(*camera_info_intrinsics(msg))

    def problem(self, now_s: float, clock_s: float) -> str | None:
        """None if every image input is usable at ``now_s`` (monotonic) / ``clock_s`` (the clock its
        stamps are on), else one line naming the first unusable input, its topic and the cause."""
        for name, slot in self.slots.items():
            bad = slot.check(now_s, clock_s)
            if bad is not None:
                return f"camera {name!r} on {slot.image.topic!r}: {bad[1]}"
        return None
