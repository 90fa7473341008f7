"""rosbag2-layout MCAP writing that survives SIGKILL (no rclpy; the mcap package does the encoding).

Layout (what ``ros2 bag record -s mcap`` writes): a directory holding ``<name>_0.mcap`` and
``metadata.yaml``; MCAP profile ``ros2``, schemas in ``ros2msg`` text, messages in CDR exactly as they
came off DDS (the recorder subscribes raw: no decode, no re-encode).

Crash safety: messages go into chunks; every ``chunk_interval_s`` (or ``chunk_size`` bytes) the chunk is
closed, written and flushed to the OS, and a provisional footer (no summary) is appended and then
overwritten by the next chunk. A process killed with SIGKILL therefore leaves a valid MCAP (the kernel
keeps what was written) holding everything up to the last flushed chunk; readers find no summary and
scan the data section. metadata.yaml is rewritten (atomically) at every flush with the counts so far.
A clean close writes the full summary and index.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import struct
import time
from pathlib import Path

import yaml
from mcap.records import Footer
from mcap.writer import CompressionType, Writer

MCAP_MAGIC = b"\x89MCAP0\r\n"
_PRIMITIVES = {"boolean": "bool", "octet": "byte", "float": "float32", "double": "float64",
               "long double": "float64", "char": "char", "wchar": "wchar"}


def _field_type(t: str, deps: list[str]) -> str:
    m = re.fullmatch(r"sequence<(.+?)(?:, (\d+))?>", t)
    if m:
        return _field_type(m.group(1), deps) + (f"[<={m.group(2)}]" if m.group(2) else "[]")
    m = re.fullmatch(r"(.+)\[(\d+)\]", t)
    if m:
        return _field_type(m.group(1), deps) + f"[{m.group(2)}]"
    if "/" in t:
        deps.append(t)
        return t
    return _PRIMITIVES.get(t, t)


def _msg_class(type_name: str):
    """'std_msgs/Header' or 'std_msgs/msg/Header' -> the generated Python class."""
    pkg, *_, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def ros2msg_definition(msg_class) -> str:
    """The ros2msg text of a generated message class and, after '=' * 80 separators, its dependencies
    (the concatenated form rosbag2 stores as an MCAP schema). Built from the class's own introspection,
    so it needs no .msg files on disk (the ros-jazzy wheels ship none)."""
    out, seen, queue = [], set(), [msg_class]
    while queue:
        cls = queue.pop(0)
        deps: list[str] = []
        lines = [f"{_field_type(t, deps)} {name}" for name, t in cls.get_fields_and_field_types().items()]
        if out:
            pkg = cls.__module__.split(".")[0]
            out.append("=" * 80 + f"\nMSG: {pkg}/{cls.__name__}")
        out.append("\n".join(lines))
        for d in deps:
            if d not in seen:
                seen.add(d)
                queue.append(_msg_class(d))
    return "\n".join(out) + "\n"


def type_name(msg_class) -> str:
    """'std_msgs/msg/Bool' for std_msgs.msg.Bool."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"


@dataclasses.dataclass
class _Topic:
    name: str
    type: str
    qos_yaml: str
    channel_id: int
    count: int = 0


class BagWriter:
    """rosbag2 directory with one MCAP file. ``write`` is not thread-safe; call from one thread."""

    def __init__(self, bag_dir: str | Path, chunk_interval_s: float = 0.5, chunk_size: int = 1 << 20,
                 compression: str = "none"):
        self.dir = Path(bag_dir)
        if self.dir.exists() and any(self.dir.iterdir()):
            raise FileExistsError(f"{self.dir} exists and is not empty: record into a new directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file_name = f"{self.dir.name}_0.mcap"
        self.path = self.dir / self.file_name
        comp = {"none": CompressionType.NONE, "lz4": CompressionType.LZ4, "zstd": CompressionType.ZSTD}
        if compression not in comp:
            raise ValueError(f"compression must be one of {sorted(comp)}, got {compression!r}")
        self.compression = compression
        self.chunk_interval_s = chunk_interval_s
        self._f = open(self.path, "wb")
        self._w = Writer(self._f, chunk_size=chunk_size, compression=comp[compression])
        self._w.start(profile="ros2", library="tether_deploy.bag")
        self._topics: dict[str, _Topic] = {}
        self._schemas: dict[str, int] = {}
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self._last_flush = time.monotonic()
        self._closed = False
        self.flush()

    def add_topic(self, topic: str, msg_class, qos_yaml: str = "") -> None:
        t = type_name(msg_class)
        if t not in self._schemas:
            self._schemas[t] = self._w.register_schema(t, "ros2msg", ros2msg_definition(msg_class).encode())
        cid = self._w.register_channel(topic, "cdr", self._schemas[t], {"offered_qos_profiles": qos_yaml})
        self._topics[topic] = _Topic(topic, t, qos_yaml, cid)

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        tp = self._topics[topic]
        self._w.add_message(tp.channel_id, log_time=log_time_ns, data=data, publish_time=log_time_ns)
        tp.count += 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)
        if time.monotonic() - self._last_flush >= self.chunk_interval_s:
            self.flush()

    def flush(self) -> None:
        """Close the open chunk, push it to the OS with a provisional footer, update metadata.yaml."""
        self._w.flush()
        pos = self._f.tell()
        footer = Footer(summary_start=0, summary_offset_start=0, summary_crc=0)
        self._f.write(bytes([0x02]) + struct.pack("<Q", 20) + struct.pack("<QQI", footer.summary_start,
                                                                            footer.summary_offset_start,
                                                                            footer.summary_crc) + MCAP_MAGIC)
        self._f.flush()
        self._f.seek(pos)
        self._last_flush = time.monotonic()
        self._write_metadata()

    def close(self) -> None:
        if self._closed:
            return
        self._w.finish()
        self._f.truncate()
        self._f.close()
        self._write_metadata()
        self._closed = True

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self._topics.values())

    def _write_metadata(self) -> None:
        start = self.start_ns or 0
        duration = (self.end_ns - start) if self.end_ns is not None else 0
        info = {
            "version": 9,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": self.message_count,
            "topics_with_message_count": [
                {"topic_metadata": {"name": t.name, "type": t.type, "serialization_format": "cdr",
                                    "offered_qos_profiles": yaml.safe_load(t.qos_yaml) or [],
                                    "type_description_hash": ""},
                 "message_count": t.count} for t in self._topics.values()],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.file_name],
            "files": [{"path": self.file_name, "starting_time": {"nanoseconds_since_epoch": start},
                       "duration": {"nanoseconds": duration}, "message_count": self.message_count}],
            "custom_data": {},
            "ros_distro": "jazzy",
        }
        tmp = self.dir / "metadata.yaml.tmp"
        tmp.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
        os.replace(tmp, self.dir / "metadata.yaml")
