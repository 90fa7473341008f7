"""Robot flange poses for hand-eye calibration, from CSV or JSON, checked row by row.

CSV: a header row naming the columns ``image,x,y,z`` [m] and the quaternion columns ``qw,qx,qy,qz``
(any order: the names say which value is which, so the quaternion order is stated by the header);
one row per image, the flange pose in the robot base frame. JSON::

    {"quaternion_order": "wxyz",            # or "xyzw"; or pass --quat-order
     "poses": [{"image": "s00.png", "translation_m": [x, y, z], "quaternion": [., ., ., .]}, ...]}

Refused, naming the line (CSV) or entry (JSON): a short or long row, a value that is not a finite
number, a quaternion whose norm is far from 1 (a wrong order does not show here: see
``calibration.handeye.diagnose``), an image named twice, and a pose identical to an earlier row's
(a duplicated row: the board poses of two images differ, so the chain cannot close).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from calibration.boards import CalibrationError

CSV_COLUMNS = ("image", "x", "y", "z", "qw", "qx", "qy", "qz")
QUAT_ORDERS = ("wxyz", "xyzw")
QUAT_NORM_TOL = 0.01
"""a quaternion whose norm differs from 1 by more than this is refused (rounded exports stay within 1e-4) [1]"""


@dataclasses.dataclass(frozen=True)
class RobotPose:
    image: str
    """image file name this pose belongs to"""
    translation_m: tuple[float, float, float]
    """flange position in the robot base frame [m]"""
    quat_wxyz: tuple[float, float, float, float]
    """flange orientation in the base frame, unit quaternion, w first"""
    where: str
    """'poses.csv line 7' or 'poses.json poses[3]', for messages"""


def _finite(value, where: str, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: {name} is {value!r}, not a number") from None
    if not math.isfinite(v):
        raise CalibrationError(f"{where}: {name} is {value!r}; every pose value must be a finite number")
    return v


def _pose(image, t, q_wxyz, where: str) -> RobotPose:
    if not isinstance(image, str) or not image.strip():
        raise CalibrationError(f"{where}: the image name is empty")
    norm = math.sqrt(sum(x * x for x in q_wxyz))
    if abs(norm - 1.0) > QUAT_NORM_TOL:
        raise CalibrationError(f"{where}: the quaternion has norm {norm:.4f}, not 1; give a unit quaternion")
    return RobotPose(image.strip(), tuple(t), tuple(x / norm for x in q_wxyz), where)  # type: ignore[arg-type]


def _check_unique(poses: list[RobotPose]) -> None:
    by_image: dict[str, RobotPose] = {}
    by_value: dict[tuple, RobotPose] = {}
    for p in poses:
        if p.image in by_image:
            raise CalibrationError(f"{p.where}: image {p.image!r} already has a pose ({by_image[p.image].where}); "
                                   "give each image one pose")
        key = p.translation_m + p.quat_wxyz
        if key in by_value:
            raise CalibrationError(f"{p.where}: the same pose as {by_value[key].where} (a duplicated row?); the "
                                   "robot must move between stations, so remove the copy")
        by_image[p.image], by_value[key] = p, p


def read_poses_csv(path: Path) -> list[RobotPose]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise CalibrationError(f"{path} is empty; expected a header row {','.join(CSV_COLUMNS)} and one row per image")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        hint = (" (the quaternion order is stated by the column names: qw,qx,qy,qz in any order)"
                if any(c.startswith("q") for c in missing) else "")
        raise CalibrationError(f"{path}: header lacks column(s) {','.join(missing)}; expected "
                               f"{','.join(CSV_COLUMNS)}{hint}")
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown or len(set(header)) != len(header):
        raise CalibrationError(f"{path}: header {','.join(header)} has unknown or repeated columns; expected exactly "
                               f"{','.join(CSV_COLUMNS)}")
    col = {name: header.index(name) for name in CSV_COLUMNS}
    poses = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path.name} line {line}"
        if len(row) != len(header):
            raise CalibrationError(f"{where}: {len(row)} of {len(header)} fields; each row needs "
                                   f"{','.join(header)}")
        vals = {name: _finite(row[i], where, name) for name, i in col.items() if name != "image"}
        poses.append(_pose(row[col["image"]], (vals["x"], vals["y"], vals["z"]),
                           (vals["qw"], vals["qx"], vals["qy"], vals["qz"]), where))
    return poses


def read_poses_json(path: Path, quat_order: str | None) -> list[RobotPose]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("poses"), list):
        raise CalibrationError(f"{path}: expected an object with a 'poses' list (and 'quaternion_order')")
    unknown = sorted(set(doc) - {"poses", "quaternion_order"})
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s) {unknown}; known: poses, quaternion_order")
    order = doc.get("quaternion_order")
    if order is not None and order not in QUAT_ORDERS:
        raise CalibrationError(f"{path}: quaternion_order is {order!r}; expected one of {QUAT_ORDERS}")
    if order is not None and quat_order is not None and order != quat_order:
        raise CalibrationError(f"{path} states quaternion_order {order!r} but --quat-order is {quat_order!r}; "
                               "drop one of them")
    order = order or quat_order
    if order is None:
        raise CalibrationError(f"{path}: the quaternion order is not stated; add \"quaternion_order\": \"wxyz\" "
                               "(or \"xyzw\") to the file, or pass --quat-order")
    poses = []
    for i, entry in enumerate(doc["poses"]):
        where = f"{path.name} poses[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"image", "translation_m", "quaternion"}:
            raise CalibrationError(f"{where}: expected exactly the keys image, translation_m, quaternion")
        t, q = entry["translation_m"], entry["quaternion"]
        if not isinstance(t, list) or len(t) != 3 or not isinstance(q, list) or len(q) != 4:
            raise CalibrationError(f"{where}: translation_m needs 3 values and quaternion 4")
        t = [_finite(v, where, f"translation_m[{k}]") for k, v in enumerate(t)]
        q = [_finite(v, where, f"quaternion[{k}]") for k, v in enumerate(q)]
        q_wxyz = q if order == "wxyz" else [q[3], q[0], q[1], q[2]]
        poses.append(_pose(entry["image"], t, q_wxyz, where))
    return poses


def read_poses(path: str | Path, quat_order: str | None = None) -> list[RobotPose]:
    """Robot poses from a ``.csv`` or ``.json`` file (see the module doc); every row checked."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"robot pose file {path} does not exist")
    if quat_order is not None and quat_order not in QUAT_ORDERS:
        raise CalibrationError(f"--quat-order must be one of {QUAT_ORDERS}, got {quat_order!r}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if quat_order is not None:
            raise CalibrationError("--quat-order is for JSON poses; a CSV states the order by its column names "
                                   "qw,qx,qy,qz")
        poses = read_poses_csv(path)
    elif suffix == ".json":
        poses = read_poses_json(path, quat_order)
    else:
        raise CalibrationError(f"{path}: unknown pose file format; expected .csv or .json")
    if not poses:
        raise CalibrationError(f"{path} holds no poses")
    _check_unique(poses)
    return poses


def pose_matrix(p: RobotPose, quat_wxyz: tuple[float, ...] | None = None) -> np.ndarray:
    """T_base_gripper [4, 4] of a pose (optionally with another reading of its quaternion)."""
    from calibration.handeye import R_from_quat_wxyz, make_T

    return make_T(R_from_quat_wxyz(quat_wxyz or p.quat_wxyz), p.translation_m)
