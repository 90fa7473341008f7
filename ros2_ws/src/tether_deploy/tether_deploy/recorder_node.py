"""Recorder: the intervention log as a rosbag2-layout MCAP (bag.py), readable by the mcap and rosbags
Python readers, by Foxglove, and by policies/ for finetuning.

Records state, policy action, human action, executed action, intervention flag, mode, joystick,
diagnostics and, for a policy with image inputs, the camera's sensor_msgs/Image and CameraInfo (the
default topics of interface.DEPTH_IMAGE / DEPTH_CAMERA_INFO; policies.hil.dataset.tick_images reads
them back per tick). Subscriptions are raw (serialized CDR straight into the file) with deep queues; a timer
flushes the open chunk every chunk_interval_s even when no message comes, so a SIGKILL loses at most
that chunk.
"""

from __future__ import annotations

import functools
from pathlib import Path

from rclpy.node import Node

from tether_deploy import interface as itf
from tether_deploy import qos
from tether_deploy.bag import BagWriter
from tether_deploy.params import declare_node_params
from tether_deploy.spin import spin_node

# topic -> (type, QoS to subscribe with, QoS the publisher offers (for the metadata)), from the interface
# table: a topic is recorded with the type its publisher declares
RECORDED = {name: (t.msg_class, getattr(qos, sub_qos), t.profile)
            for name, (t, sub_qos) in itf.recordable().items()}


class Recorder(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.params = declare_node_params(self, "recorder")  # every parameter, from params.py
        output = self.get_parameter("output").value
        if not output:
            raise ValueError("recorder: parameter output is empty; give a new directory for the bag")
        self.bag = BagWriter(Path(output), float(self.get_parameter("chunk_interval_s").value),
                             int(self.get_parameter("chunk_size_bytes").value),
                             str(self.get_parameter("compression").value))
        topics = list(self.params.topics) or list(RECORDED)  # empty: every recordable topic
        unknown = sorted(set(topics) - set(RECORDED))
        if unknown:
            raise ValueError(f"recorder: no message type known for {unknown}; recordable: {sorted(RECORDED)}")
        for topic in topics:
            msg_type, sub_qos, offered = RECORDED[topic]
            full = self.resolve_topic_name(topic)
            self.bag.add_topic(full, msg_type, qos.qos_to_rosbag2_yaml(offered))
            self.create_subscription(msg_type, topic, functools.partial(self._on_message, full), sub_qos,
                                     raw=True)
        self.create_timer(float(self.get_parameter("chunk_interval_s").value), self.bag.flush)
        self.get_logger().info(f"recording {len(topics)} topics into {self.bag.path}")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.bag.write(topic, self.get_clock().now().nanoseconds, data)

    def close(self) -> None:
        self.bag.close()
        self.get_logger().info(f"closed {self.bag.path}: {self.bag.message_count} messages")


def main(args=None) -> None:
    spin_node(Recorder, args, on_exit=lambda node: node.close())


if __name__ == "__main__":
    main()
