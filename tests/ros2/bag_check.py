"""Read a recorded bag with both the mcap and the rosbags readers; they must agree."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def read_bag(bag_dir: Path) -> Counter:
    """Messages per topic; decodes every message with mcap_ros2 and with rosbags (dir and file)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.highlevel import AnyReader

    mcap_file = next(Path(bag_dir).glob("*.mcap"))
    counts: Counter = Counter()
    last_ns = 0
    with open(mcap_file, "rb") as f:
        for _, channel, msg, decoded in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            assert decoded is not None
            counts[channel.topic] += 1
            last_ns = max(last_ns, msg.log_time)
    counts["_last_log_time_ns"] = last_ns
    for path in (Path(bag_dir), mcap_file):
        rb: Counter = Counter()
        with AnyReader([path]) as reader:
            for con, _, raw in reader.messages():
                reader.deserialize(raw, con.msgtype)
                rb[con.topic] += 1
        rb["_last_log_time_ns"] = last_ns
        assert rb == counts, f"rosbags ({path.name}) {dict(rb)} != mcap {dict(counts)}"
    return counts
