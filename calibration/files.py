"""Calibration files: one versioned YAML per physical unit, validated on load, never silently overwritten,
written atomically with the user's umask.

Layout (schema_version 1)::

    schema_version: 1
    unit_id: cf2x-007                    # the physical unit, [A-Za-z0-9_.-]
    created: '2026-11-22T11:30:00+00:00' # ISO 8601
    tool_version: 0.1.0                  # tether.__version__ that wrote it
    camera:                              # optional; ROS camera_info layout plus figures of merit
      image_width, image_height, camera_name, camera_matrix {rows, cols, data}, distortion_model: plumb_bob,
      distortion_coefficients {rows, cols, data}, rectification_matrix {...}, projection_matrix {...},
      rms_reprojection_px, intrinsics_sigma_px {fx, fy, cx, cy}, views_used, views_rejected, coverage
    hand_eye:                            # optional
      mode: eye_in_hand | eye_to_hand, parent_frame, child_frame: camera,
      translation_m [3], rotation_wxyz [4]   # pose of the camera in parent_frame
      methods {NAME: {translation_m, rotation_wxyz}}, spread {translation_m, rotation_deg},
      residuals {translation_rms_m, rotation_rms_deg}, stations
    quadrotor:                           # optional
      base_preset, flight_s, residuals {name: number},
      <parameter>: {value, sigma, unit}  # names and units in QUADROTOR_PARAMS

Every error names the field by its full dotted path (``quadrotor.kf_n_per_rpm2.sigma``). This module
needs numpy and PyYAML only, so the robot side can read calibration files too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

SCHEMA_VERSION = 1
UNIT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

QUADROTOR_PARAMS: dict[str, str] = {
    "mass_kg": "kg",
    "kf_n_per_rpm2": "N/rpm^2",
    "kf_per_kg": "N/(kg rpm^2)",
    "km_nm_per_rpm2": "N m/rpm^2",
    "km_per_izz": "N m/(kg m^2 rpm^2)",
    "tau_up_s": "s",
    "tau_down_s": "s",
    **{f"drag_{a}_n_s_per_m": "N s/m" for a in "xyz"},
    **{f"drag_{a}_per_kg": "N s/(m kg)" for a in "xyz"},
    "ixx_kg_m2": "kg m^2",
    "iyy_kg_m2": "kg m^2",
}
"""every parameter a calibration file may hold, with its unit (the unit string must match)"""
MAY_BE_NEGATIVE = {f"drag_{a}_{s}" for a in "xyz" for s in ("n_s_per_m", "per_kg")}
"""parameters whose identified value may come out slightly negative (a drag near zero)"""
HAND_EYE_MODES = ("eye_in_hand", "eye_to_hand")


@dataclasses.dataclass(frozen=True)
class Param:
    value: float
    sigma: float
    """one standard deviation, unit as value"""
    unit: str


@dataclasses.dataclass(frozen=True)
class CameraSection:
    camera_name: str
    image_width: int
    """[px]"""
    image_height: int
    """[px]"""
    K: tuple[float, ...]
    """camera matrix, 9 values row-major [px]"""
    dist: tuple[float, ...]
    """plumb_bob (k1, k2, p1, p2, k3) [1]"""
    R: tuple[float, ...]
    """rectification matrix, 9 values row-major (identity for a monocular camera)"""
    P: tuple[float, ...]
    """projection matrix, 12 values row-major [px]"""
    rms_px: float
    """RMS reprojection error of the calibration [px]"""
    intrinsics_sigma_px: dict[str, float]
    """standard deviation of fx, fy, cx, cy [px]"""
    views_used: int
    views_rejected: int
    coverage: float
    """fraction of the image grid in which board corners were seen [1]"""


@dataclasses.dataclass(frozen=True)
class HandEyeSection:
    mode: str
    translation_m: tuple[float, float, float]
    """camera position in the parent frame (gripper or base) [m]"""
    rotation_wxyz: tuple[float, float, float, float]
    """camera orientation in the parent frame, unit quaternion"""
    methods: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]
    """(translation_m, rotation_wxyz) per solver"""
    spread_translation_m: float
    spread_rotation_deg: float
    residual_translation_m: float
    residual_rotation_deg: float
    stations: int

    @property
    def parent_frame(self) -> str:
        return "gripper" if self.mode == "eye_in_hand" else "base"


@dataclasses.dataclass(frozen=True)
class QuadrotorSection:
    base_preset: str
    """preset whose geometry (rotor layout, max rpm) the identification assumed"""
    params: dict[str, Param]
    residuals: dict[str, float]
    flight_s: float
    """flight time used [s]"""


@dataclasses.dataclass(frozen=True)
class CalibrationFile:
    unit_id: str
    created: str
    """ISO 8601 date-time"""
    tool_version: str
    camera: CameraSection | None = None
    hand_eye: HandEyeSection | None = None
    quadrotor: QuadrotorSection | None = None
    schema_version: int = SCHEMA_VERSION


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# --- validation helpers ----------------------------------------------------------------------------------


def _field(d: dict, key: str, path: str) -> Any:
    if key not in d:
        raise ValueError(f"{path}.{key}: missing" if path else f"{key}: missing")
    return d[key]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _number(d: dict, key: str, path: str, positive: bool = False, non_negative: bool = False) -> float:
    v = _field(d, key, path)
    where = _join(path, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: expected a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{where}: must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{where}: must be positive, got {v}")
    if non_negative and v < 0:
        raise ValueError(f"{where}: must be >= 0, got {v}")
    return float(v)


def _integer(d: dict, key: str, path: str, minimum: int = 0) -> int:
    v = _field(d, key, path)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{_join(path, key)}: expected an integer, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{_join(path, key)}: must be >= {minimum}, got {v}")
    return v


def _string(d: dict, key: str, path: str) -> str:
    v = _field(d, key, path)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{_join(path, key)}: expected a non-empty string, got {type(v).__name__} {v!r}")
    return v


def _mapping(d: dict, key: str, path: str) -> dict:
    v = _field(d, key, path)
    if not isinstance(v, dict):
        raise ValueError(f"{_join(path, key)}: expected a mapping, got {type(v).__name__}")
    return v


def _numbers(d: dict, key: str, path: str, length: int) -> tuple[float, ...]:
    v = _field(d, key, path)
    where = _join(path, key)
    if not isinstance(v, list) or len(v) != length:
        raise ValueError(f"{where}: expected a list of {length} numbers, got {v!r}")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"{where}[{i}]: expected a finite number, got {x!r}")
    return tuple(float(x) for x in v)


def _matrix(d: dict, key: str, path: str, rows: int, cols: int) -> tuple[float, ...]:
    m = _mapping(d, key, path)
    where = _join(path, key)
    if _integer(m, "rows", where) != rows or _integer(m, "cols", where) != cols:
        raise ValueError(f"{where}: expected a {rows}x{cols} matrix, got {m['rows']}x{m['cols']}")
    return _numbers(m, "data", where, rows * cols)


def _no_unknown(d: dict, known: set[str], path: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; known: {sorted(known)}")


# --- sections ---------------------------------------------------------------------------------------------

_CAMERA_KEYS = {"image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                "distortion_coefficients", "rectification_matrix", "projection_matrix", "rms_reprojection_px",
                "intrinsics_sigma_px", "views_used", "views_rejected", "coverage"}


def camera_info_dict(c: CameraSection) -> dict[str, Any]:
    """The ROS camera_info YAML layout (camera_calibration_parsers) of a camera section."""
    def mat(rows: int, cols: int, data) -> dict[str, Any]:
        return {"rows": rows, "cols": cols, "data": [float(x) for x in data]}

    return {"image_width": c.image_width, "image_height": c.image_height, "camera_name": c.camera_name,
            "camera_matrix": mat(3, 3, c.K), "distortion_model": "plumb_bob",
            "distortion_coefficients": mat(1, len(c.dist), c.dist), "rectification_matrix": mat(3, 3, c.R),
            "projection_matrix": mat(3, 4, c.P)}


def parse_camera_info(d: Any, path: str = "camera") -> tuple[int, int, str, tuple, tuple, tuple, tuple]:
    """Validate the camera_info fields; returns (width, height, name, K, dist, R, P)."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(d).__name__}")
    model = _string(d, "distortion_model", path)
    if model != "plumb_bob":
        raise ValueError(f"{path}.distortion_model: only plumb_bob is supported, got {model!r}")
    dist_m = _mapping(d, "distortion_coefficients", path)
    n_dist = _integer(dist_m, "cols", _join(path, "distortion_coefficients"))
    if n_dist != 5:
        raise ValueError(f"{path}.distortion_coefficients: plumb_bob has 5 coefficients, got {n_dist}")
    return (_integer(d, "image_width", path, 1), _integer(d, "image_height", path, 1), _string(d, "camera_name", path),
            _matrix(d, "camera_matrix", path, 3, 3), _matrix(d, "distortion_coefficients", path, 1, 5),
            _matrix(d, "rectification_matrix", path, 3, 3), _matrix(d, "projection_matrix", path, 3, 4))


def _camera_from_dict(d: Any, path: str = "camera") -> CameraSection:
    width, height, name, K, dist, R, P = parse_camera_info(d, path)
    _no_unknown(d, _CAMERA_KEYS, path)
    sig = _mapping(d, "intrinsics_sigma_px", path)
    sig_path = _join(path, "intrinsics_sigma_px")
    return CameraSection(name, width, height, K, dist, R, P,
                         rms_px=_number(d, "rms_reprojection_px", path, non_negative=True),
                         intrinsics_sigma_px={k: _number(sig, k, sig_path, non_negative=True) for k in ("fx", "fy", "cx", "cy")},
                         views_used=_integer(d, "views_used", path), views_rejected=_integer(d, "views_rejected", path),
                         coverage=_number(d, "coverage", path, non_negative=True))


def _camera_to_dict(c: CameraSection) -> dict[str, Any]:
    return {**camera_info_dict(c), "rms_reprojection_px": c.rms_px, "intrinsics_sigma_px": dict(c.intrinsics_sigma_px),
            "views_used": c.views_used, "views_rejected": c.views_rejected, "coverage": c.coverage}


def _pose(d: dict, path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    t = _numbers(d, "translation_m", path, 3)
    q = _numbers(d, "rotation_wxyz", path, 4)
    if abs(math.sqrt(sum(x * x for x in q)) - 1.0) > 1e-3:
        raise ValueError(f"{_join(path, 'rotation_wxyz')}: not a unit quaternion (norm {math.sqrt(sum(x * x for x in q)):.4f})")
    return t, q


def _hand_eye_from_dict(d: Any, path: str = "hand_eye") -> HandEyeSection:
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(d).__name__}")
    _no_unknown(d, {"mode", "parent_frame", "child_frame", "translation_m", "rotation_wxyz", "methods", "spread",
                    "residuals", "stations"}, path)
    mode = _string(d, "mode", path)
    if mode not in HAND_EYE_MODES:
        raise ValueError(f"{path}.mode: expected one of {HAND_EYE_MODES}, got {mode!r}")
    t, q = _pose(d, path)
    methods_d = _mapping(d, "methods", path)
    methods = {}
    for name, m in methods_d.items():
        if not isinstance(m, dict):
            raise ValueError(f"{path}.methods.{name}: expected a mapping, got {type(m).__name__}")
        methods[str(name)] = _pose(m, f"{path}.methods.{name}")
    spread = _mapping(d, "spread", path)
    res = _mapping(d, "residuals", path)
    return HandEyeSection(mode, t, q, methods,  # type: ignore[arg-type]
                          spread_translation_m=_number(spread, "translation_m", f"{path}.spread", non_negative=True),
                          spread_rotation_deg=_number(spread, "rotation_deg", f"{path}.spread", non_negative=True),
                          residual_translation_m=_number(res, "translation_rms_m", f"{path}.residuals", non_negative=True),
                          residual_rotation_deg=_number(res, "rotation_rms_deg", f"{path}.residuals", non_negative=True),
                          stations=_integer(d, "stations", path, 1))


def _hand_eye_to_dict(h: HandEyeSection) -> dict[str, Any]:
    return {"mode": h.mode, "parent_frame": h.parent_frame, "child_frame": "camera",
            "translation_m": list(h.translation_m), "rotation_wxyz": list(h.rotation_wxyz),
            "methods": {k: {"translation_m": list(t), "rotation_wxyz": list(q)} for k, (t, q) in h.methods.items()},
            "spread": {"translation_m": h.spread_translation_m, "rotation_deg": h.spread_rotation_deg},
            "residuals": {"translation_rms_m": h.residual_translation_m, "rotation_rms_deg": h.residual_rotation_deg},
            "stations": h.stations}


def _quadrotor_from_dict(d: Any, path: str = "quadrotor") -> QuadrotorSection:
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(d).__name__}")
    meta = {"base_preset", "residuals", "flight_s"}
    _no_unknown(d, meta | set(QUADROTOR_PARAMS), path)
    params: dict[str, Param] = {}
    for name, unit in QUADROTOR_PARAMS.items():
        if name not in d:
            continue
        p = _mapping(d, name, path)
        where = f"{path}.{name}"
        _no_unknown(p, {"value", "sigma", "unit"}, where)
        value = _number(p, "value", where, positive=name not in MAY_BE_NEGATIVE)
        sigma = _number(p, "sigma", where, non_negative=True)
        got = _string(p, "unit", where)
        if got != unit:
            raise ValueError(f"{where}.unit: expected {unit!r}, got {got!r}")
        params[name] = Param(value, sigma, unit)
    for need in (("tau_up_s",), ("tau_down_s",), ("kf_n_per_rpm2", "kf_per_kg")):
        if not any(n in params for n in need):
            raise ValueError(f"{path}.{need[0]}: missing" + (f" (or {need[1]})" if len(need) > 1 else ""))
    res = _mapping(d, "residuals", path)
    residuals = {str(k): _number(res, k, f"{path}.residuals") for k in res}
    return QuadrotorSection(_string(d, "base_preset", path), params, residuals,
                            _number(d, "flight_s", path, non_negative=True))


def _quadrotor_to_dict(q: QuadrotorSection) -> dict[str, Any]:
    out: dict[str, Any] = {"base_preset": q.base_preset, "flight_s": q.flight_s}
    out.update({k: {"value": p.value, "sigma": p.sigma, "unit": p.unit} for k, p in q.params.items()})
    out["residuals"] = dict(q.residuals)
    return out


# --- file -------------------------------------------------------------------------------------------------


def calibration_from_dict(d: Any) -> CalibrationFile:
    if not isinstance(d, dict):
        raise ValueError(f"calibration file: expected a mapping at the top level, got {type(d).__name__}")
    _no_unknown(d, {"schema_version", "unit_id", "created", "tool_version", "camera", "hand_eye", "quadrotor"},
                "calibration file")
    version = _integer(d, "schema_version", "", 1)
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version: file has {version}, this tool reads {SCHEMA_VERSION}")
    unit_id = _string(d, "unit_id", "")
    if not UNIT_ID_PATTERN.match(unit_id):
        raise ValueError(f"unit_id: {unit_id!r} may only contain letters, digits, '_', '.', '-'")
    created = _field(d, "created", "")
    if isinstance(created, (dt.date, dt.datetime)):  # YAML turns unquoted timestamps into dates
        created = created.isoformat()
    if not isinstance(created, str):
        raise ValueError(f"created: expected an ISO 8601 date, got {type(created).__name__} {created!r}")
    try:
        dt.datetime.fromisoformat(created)
    except ValueError as e:
        raise ValueError(f"created: {created!r} is not an ISO 8601 date") from e
    tool = _field(d, "tool_version", "")
    if not isinstance(tool, (str, int, float)) or isinstance(tool, bool):
        raise ValueError(f"tool_version: expected a version string, got {tool!r}")
    sections = {k: d.get(k) for k in ("camera", "hand_eye", "quadrotor")}
    if all(v is None for v in sections.values()):
        raise ValueError("calibration file: holds none of camera, hand_eye, quadrotor")
    return CalibrationFile(
        unit_id=unit_id, created=created, tool_version=str(tool), schema_version=version,
        camera=_camera_from_dict(sections["camera"]) if sections["camera"] is not None else None,
        hand_eye=_hand_eye_from_dict(sections["hand_eye"]) if sections["hand_eye"] is not None else None,
        quadrotor=_quadrotor_from_dict(sections["quadrotor"]) if sections["quadrotor"] is not None else None)


def calibration_to_dict(c: CalibrationFile) -> dict[str, Any]:
    out: dict[str, Any] = {"schema_version": c.schema_version, "unit_id": c.unit_id, "created": c.created,
                           "tool_version": c.tool_version}
    if c.camera is not None:
        out["camera"] = _camera_to_dict(c.camera)
    if c.hand_eye is not None:
        out["hand_eye"] = _hand_eye_to_dict(c.hand_eye)
    if c.quadrotor is not None:
        out["quadrotor"] = _quadrotor_to_dict(c.quadrotor)
    return out


def load_calibration(path: str | Path) -> CalibrationFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    try:
        return calibration_from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_yaml(path: str | Path, data: dict[str, Any], force: bool = False) -> None:
    """Write YAML atomically (temp file in the same folder, then rename); refuse to replace an existing
    file unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file is the user's, as open() would make it
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None, width=4096)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only still there if the write or the rename failed


def write_calibration(path: str | Path, calib: CalibrationFile, force: bool = False) -> None:
    data = calibration_to_dict(calib)
    calibration_from_dict(data)  # never write a file that the loader would refuse
    write_yaml(path, data, force=force)
