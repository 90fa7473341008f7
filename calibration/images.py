"""Image sources for calibration: a folder of image files, or a sensor_msgs/Image (or CompressedImage)
topic in a rosbag2 bag (MCAP or sqlite3), read with the ``rosbags`` package (no ROS install needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from calibration.boards import CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def folder_images(folder: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(file name, grey image) for every image file in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CalibrationError(f"{f}: not a readable image")
        yield f.name, img


def image_from_msg(msg, msgtype: str) -> np.ndarray:
    """Grey uint8 image from a deserialized sensor_msgs/msg/Image or CompressedImage."""
    if msgtype.endswith("CompressedImage"):
        img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CalibrationError(f"cannot decode a {msg.format!r} CompressedImage")
        return img
    enc = msg.encoding.lower()
    data = np.frombuffer(bytes(msg.data), np.uint8)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    channels = {"mono8": 1, "8uc1": 1, "bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono16": 2, "16uc1": 2}
    if enc not in channels:
        raise CalibrationError(f"unsupported image encoding {msg.encoding!r}; use mono8, bgr8, rgb8, bgra8, rgba8 or mono16")
    rows = data.reshape(h, step)[:, : w * channels[enc]]
    if enc in ("mono16", "16uc1"):
        dtype = ">u2" if msg.is_bigendian else "<u2"
        img16 = np.ascontiguousarray(rows).view(dtype).reshape(h, w).astype(np.float32)
        return cv2.normalize(img16, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    img = rows.reshape(h, w, channels[enc]) if channels[enc] > 1 else rows.reshape(h, w)
    conversions = {"bgr8": cv2.COLOR_BGR2GRAY, "rgb8": cv2.COLOR_RGB2GRAY, "bgra8": cv2.COLOR_BGRA2GRAY,
                   "rgba8": cv2.COLOR_RGBA2GRAY}
    return cv2.cvtColor(img, conversions[enc]) if enc in conversions else np.ascontiguousarray(img)


def bag_images(bag: str | Path, topic: str, stride: int = 1, max_images: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(topic@time, grey image) for every ``stride``-th message of ``topic`` in a rosbag2 bag."""
    from rosbags.highlevel import AnyReader  # only needed for bag input

    bag = Path(bag)
    if not bag.exists():
        raise CalibrationError(f"bag {bag} does not exist")
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise CalibrationError(f"{bag}: no topic {topic!r}; topics are {sorted({c.topic for c in reader.connections})}")
        if not conns[0].msgtype.startswith("sensor_msgs/msg/") or "Image" not in conns[0].msgtype:
            raise CalibrationError(f"{bag}: topic {topic} carries {conns[0].msgtype}, not sensor_msgs/msg/Image")
        count = 0
        for i, (conn, stamp_ns, raw) in enumerate(reader.messages(connections=conns)):
            if i % stride:
                continue
            yield f"{topic}@{stamp_ns * 1e-9:.3f}", image_from_msg(reader.deserialize(raw, conn.msgtype), conn.msgtype)
            count += 1
            if max_images is not None and count >= max_images:
                return
