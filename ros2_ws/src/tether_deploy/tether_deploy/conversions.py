"""ROS messages <-> the contract's named quantities (duck-typed on message fields: no rclpy import).

nav_msgs/Odometry follows REP 105: the pose is in ``header.frame_id`` (the world frame here) and the
twist in ``child_frame_id`` (the body frame). So twist.linear is lin_vel_b and is rotated into the world
frame here; twist.angular is ang_vel_b. ROS quaternions are (x, y, z, w); the contract's are w first.
"""

from __future__ import annotations

import math

import numpy as np

from tether.observation import quat_wxyz_to_rotmat

COMMAND_UNIT_SUFFIX = "_norm"
"""commands name each value <contract output name>_norm: normalized to [-1, 1], the contract maps it
to N, rad/s or rpm (tether.contract.ActionSpec)"""


def odometry_to_quantities(msg) -> dict[str, np.ndarray]:
    """Named quantities of an Odometry message. Plain float math: this runs on every state message
    (up to 500 Hz) and numpy's per-call overhead on 3-vectors would dominate it."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    qw, qx, qy, qz = o.w, o.x, o.y, o.z
    bx, by, bz = v.x, v.y, v.z
    norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    # The world velocity needs a usable attitude; without one it is NaN here and the runner's validation,
    # which checks quat_wxyz first, names the quaternion as the cause.
    if math.isfinite(norm) and norm > 0:
        a, b, c, d = qw / norm, qx / norm, qy / norm, qz / norm
        # R(q) @ lin_vel_b
        lin_vel_w = [(1 - 2 * (c * c + d * d)) * bx + 2 * (b * c - a * d) * by + 2 * (b * d + a * c) * bz,
                     2 * (b * c + a * d) * bx + (1 - 2 * (b * b + d * d)) * by + 2 * (c * d - a * b) * bz,
                     2 * (b * d - a * c) * bx + 2 * (c * d + a * b) * by + (1 - 2 * (b * b + c * c)) * bz]
    else:
        lin_vel_w = [math.nan] * 3
    return {"pos_w": np.array([p.x, p.y, p.z]), "quat_wxyz": np.array([qw, qx, qy, qz]),
            "lin_vel_w": np.array(lin_vel_w), "ang_vel_b": np.array([w.x, w.y, w.z])}


def fill_odometry(msg, pos_w, quat_wxyz, lin_vel_w, ang_vel_b) -> None:
    """Write a state into an Odometry message (pose in the world frame, twist in the body frame)."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(x) for x in pos_w)
    o.w, o.x, o.y, o.z = (float(x) for x in quat_wxyz)
    lin_vel_b = quat_wxyz_to_rotmat(np.asarray(quat_wxyz)).T @ np.asarray(lin_vel_w)
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    v.x, v.y, v.z = (float(x) for x in lin_vel_b)
    w.x, w.y, w.z = (float(x) for x in ang_vel_b)


def fill_imu(msg, quat_wxyz, ang_vel_b, lin_acc_b) -> None:
    """Orientation, gyro and specific force (accelerometer: a - g in the body frame) into sensor_msgs/Imu."""
    o = msg.orientation
    o.w, o.x, o.y, o.z = (float(x) for x in quat_wxyz)
    g, a = msg.angular_velocity, msg.linear_acceleration
    g.x, g.y, g.z = (float(x) for x in ang_vel_b)
    a.x, a.y, a.z = (float(x) for x in lin_acc_b)


def fill_point_stamped(msg, point, frame_id: str = "world") -> None:
    """A point (e.g. the goal) into geometry_msgs/PointStamped, in ``frame_id``."""
    msg.header.frame_id = frame_id
    msg.point.x, msg.point.y, msg.point.z = (float(x) for x in point)


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


# -------------------------------------------------------------------------------------- commands


def command_names(action_spec) -> list[str]:
    """The ``name`` of a command message: the contract's output names with the unit suffix."""
    return [n + COMMAND_UNIT_SUFFIX for n in action_spec.output_names]


def fill_command(msg, names: list[str], values, frame_id: str) -> None:
    """A normalized action into a sensor_msgs/JointState command (the caller sets header.stamp).

    velocity and effort are NaN ("not given") rather than empty: Fast CDR pads an empty float64
    sequence for alignment and rosbags (0.11) then refuses the message (size mismatch), so a log of
    empty-sequence commands would not open there. Names are written only when they change."""
    if list(msg.name) != names:
        msg.name = names
        msg.velocity = msg.effort = [math.nan] * len(names)
    msg.header.frame_id = frame_id
    msg.position = [float(x) for x in values]


def command_values(msg, names: list[str] | None = None) -> np.ndarray:
    """The normalized action of a command message: sensor_msgs/JointState (``position``; with
    ``names``, its ``name`` must equal them) or, for logs recorded before commands were stamped,
    std_msgs/Float32MultiArray (``data``). Raises ValueError naming what does not match."""
    if hasattr(msg, "position"):
        got = list(msg.name)
        if names is not None and got != list(names):
            raise ValueError(f"command names {got} are not the contract's {list(names)}")
        values = np.asarray(msg.position, dtype=np.float64)
        if len(got) != len(values):
            raise ValueError(f"command has {len(got)} names for {len(values)} values")
        return values
    return np.asarray(msg.data, dtype=np.float64)


# ---------------------------------------------------------------------------------------- images

IMAGE_BYTES_PER_PIXEL = {"32FC1": 4, "16UC1": 2}
"""the depth encodings an image input can take (tether.contract.IMAGE_ENCODINGS), bytes per pixel"""
MM_PER_M = 1000.0


def decode_depth(encoding: str, width: int, height: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """A depth sensor_msgs/Image's fields -> float32 [height, width] metres, REP 117 specials kept.

    32FC1 is metres as sent (+inf / -inf / NaN pass through); 16UC1 is millimetres, 0 (no data) -> NaN.
    ``step`` may pad each row; ``is_bigendian`` says the byte order. Raises ValueError naming what does
    not fit (an unknown encoding, step shorter than a row, data shorter than step x height)."""
    if encoding not in IMAGE_BYTES_PER_PIXEL:
        raise ValueError(f"encoding {encoding!r} is not a depth encoding ({sorted(IMAGE_BYTES_PER_PIXEL)})")
    bpp = IMAGE_BYTES_PER_PIXEL[encoding]
    if step < width * bpp:
        raise ValueError(f"step {step} bytes is shorter than a row of {width} px x {bpp} bytes")
    try:  # bytes, array.array (rclpy), memoryview: no copy
        buf = np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a list of ints (some decoders)
        buf = np.asarray(data, dtype=np.uint8)
    if buf.size < step * height:
        raise ValueError(f"data holds {buf.size} bytes, step x height is {step * height}")
    rows = buf[:step * height].reshape(height, step)[:, :width * bpp]
    order = ">" if is_bigendian else "<"
    if encoding == "32FC1":
        return np.ascontiguousarray(rows).view(order + "f4").reshape(height, width).astype(np.float32)
    mm = np.ascontiguousarray(rows).view(order + "u2").reshape(height, width)
    out = mm.astype(np.float32) / MM_PER_M
    out[mm == 0] = np.nan
    return out


def depth_msg_to_metres(msg) -> np.ndarray:
    """decode_depth of a sensor_msgs/Image message."""
    return decode_depth(msg.encoding, int(msg.width), int(msg.height), int(msg.step), bool(msg.is_bigendian),
                        msg.data)


def fill_depth_image(msg, depth_m: np.ndarray, encoding: str = "32FC1", frame_id: str = "camera_optical") -> None:
    """float32 [H, W] metres (REP 117 specials) into a sensor_msgs/Image (little endian, no row padding);
    16UC1 writes millimetres, a non-finite or out-of-range pixel as 0 (no data). The caller stamps it."""
    d = np.asarray(depth_m, dtype=np.float32)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(d.shape[0]), int(d.shape[1])
    msg.encoding, msg.is_bigendian = encoding, False
    if encoding == "32FC1":
        raw = d.astype("<f4")
    elif encoding == "16UC1":
        mm = np.where(np.isfinite(d), np.rint(d * MM_PER_M), 0.0)
        raw = np.where((mm > 0) & (mm <= np.iinfo(np.uint16).max), mm, 0).astype("<u2")
    else:
        raise ValueError(f"encoding {encoding!r} is not a depth encoding ({sorted(IMAGE_BYTES_PER_PIXEL)})")
    msg.step = msg.width * IMAGE_BYTES_PER_PIXEL[encoding]
    msg.data = raw.tobytes()


def fill_camera_info(msg, width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                     frame_id: str = "camera_optical") -> None:
    """An ideal pinhole (no distortion) into sensor_msgs/CameraInfo: K, P, R = I, plumb_bob zeros."""
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(fx), 0.0, float(cx), 0.0, float(fy), float(cy), 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(fx), 0.0, float(cx), 0.0, 0.0, float(fy), float(cy), 0.0, 0.0, 0.0, 1.0, 0.0]


def camera_info_intrinsics(msg) -> tuple[float, float, float, float, int, int]:
    """(fx, fy, cx, cy, width, height) of a sensor_msgs/CameraInfo, from its P (the rectified image's)."""
    p = list(msg.p)
    return float(p[0]), float(p[5]), float(p[2]), float(p[6]), int(msg.width), int(msg.height)
