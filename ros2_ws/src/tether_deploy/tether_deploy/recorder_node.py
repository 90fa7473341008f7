"""Recorder: the intervention log as a rosbag2-layout MCAP (bag.py), readable by the mcap and rosbags
Python readers, by Foxglove, and by policies/ for finetuning.

Records state, policy action, human action, executed action, intervention flag, mode, joystick,
diagnostics and, for a policy with image inputs, the camera's sensor_msgs/Image and CameraInfo: the
default topics of interface.DEPTH_IMAGE / DEPTH_CAMERA_INFO, and with ``policy_dir`` every image input's
``topic`` and ``camera_info_topic`` its contract declares (a real robot's camera publishes where its driver
does; policies.hil.dataset.tick_images reads them back per tick). Subscriptions are raw (serialized CDR straight into the file) with deep queues; a timer
flushes the open chunk every chunk_interval_s even when no message comes, so a SIGKILL loses at most
that chunk.
"""

from __future__ import annotations

import functools
from pathlib import Path

from rclpy.node import Node

from tether.contract import ImageInput, load_contract
from tether_deploy import interface as itf
from tether_deploy import qos
from tether_deploy.bag import BagWriter
from tether_deploy.params import declare_node_params
from tether_deploy.spin import spin_node

# topic -> (type, QoS to subscribe with, QoS the publisher offers (for the metadata)), from the interface
# table: a topic is recorded with the type its publisher declares
RECORDED = {name: (t.msg_class, getattr(qos, sub_qos), t.profile)
            for name, (t, sub_qos) in itf.recordable().items()}


def image_topics(images: tuple[ImageInput, ...]) -> dict[str, tuple]:
    """topic -> (type, subscription QoS, offered QoS) of every image input's Image and CameraInfo topic:
    the names from the contract, the types and QoS from the interface (DEPTH_IMAGE, DEPTH_CAMERA_INFO)."""
    image, info = RECORDED[itf.DEPTH_IMAGE.name], RECORDED[itf.DEPTH_CAMERA_INFO.name]
    out: dict[str, tuple] = {}
    for im in images:
        out[im.topic], out[im.camera_info_topic] = image, info
    return out


def topics_to_record(topics: tuple[str, ...], images: tuple[ImageInput, ...]) -> dict[str, tuple]:
    """topic -> (type, subscription QoS, offered QoS) of what the recorder subscribes: ``topics`` (empty:
    every recordable topic), then the image inputs' topics. ValueError naming the topic if one has no
    known type or a contract's camera topic is a recordable topic of another type."""
    unknown = sorted(set(topics) - set(RECORDED))
    if unknown:
        raise ValueError(f"recorder: no message type known for {unknown}; recordable: {sorted(RECORDED)}")
    chosen = {t: RECORDED[t] for t in (topics or RECORDED)}
    for t, entry in image_topics(images).items():
        if t in RECORDED and RECORDED[t][0] is not entry[0]:
            raise ValueError(f"recorder: the policy's camera topic {t!r} is {RECORDED[t][0].__name__} in the "
                             f"interface, not {entry[0].__name__}; give the camera its own topic in the contract")
        chosen.setdefault(t, entry)
    return chosen


class Recorder(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.params = declare_node_params(self, "recorder")  # every parameter, from params.py
        output = self.get_parameter("output").value
        if not output:
            raise ValueError("recorder: parameter output is empty; give a new directory for the bag")
        images = ()
        if self.params.policy_dir:  # a ContractError is a ValueError: refused before the bag exists
            images = load_contract(Path(self.params.policy_dir) / "policy.json").images
        chosen = topics_to_record(tuple(self.params.topics), images)
        self.bag = BagWriter(Path(output), float(self.get_parameter("chunk_interval_s").value),
                             int(self.get_parameter("chunk_size_bytes").value),
                             str(self.get_parameter("compression").value))
        subscribed: set[str] = set()
        for topic, (msg_type, sub_qos, offered) in chosen.items():
            full = self.resolve_topic_name(topic)
            if full in subscribed:  # 'camera/x' and '/camera/x' in the root namespace
                continue
            subscribed.add(full)
            self.bag.add_topic(full, msg_type, qos.qos_to_rosbag2_yaml(offered))
            self.create_subscription(msg_type, topic, functools.partial(self._on_message, full), sub_qos,
                                     raw=True)
        self.create_timer(float(self.get_parameter("chunk_interval_s").value), self.bag.flush)
        self.get_logger().info(f"recording {len(subscribed)} topics into {self.bag.path}")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.bag.write(topic, self.get_clock().now().nanoseconds, data)

    def close(self) -> None:
        self.bag.close()
        self.get_logger().info(f"closed {self.bag.path}: {self.bag.message_count} messages")


def main(args=None) -> None:
    spin_node(Recorder, args, on_exit=lambda node: node.close())


if __name__ == "__main__":
    main()
