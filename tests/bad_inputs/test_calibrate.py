"""Bad inputs to `tether calibrate camera|handeye|quadrotor`, each run as a real process: refused with one
`error:` line that names the problem and the fix, no traceback, nothing written or changed.

Exit 2 is a user error found before any work; exit 1 is a hand-eye result refused by its bounds (the
command ran: wrong mode, quaternion order), where the line also says which reading would close the chain.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration.boards import BoardCfg
from calibration.handeye import quat_wxyz_from_R
from calibration.synthetic import CameraModel, render_board, synthetic_hand_eye
from tests.bad_inputs.harness import BadInput, check_bad_input

CAMERA, BOARD = CameraModel(), BoardCfg()
N_STATIONS = 8


@functools.lru_cache(maxsize=1)
def _stations():
    """PNG bytes of rendered eye-to-hand stations and their robot poses (rendered once per session)."""
    data = synthetic_hand_eye(CAMERA, BOARD, N_STATIONS, mode="eye_to_hand", seed=7)
    rng = np.random.default_rng(0)
    images = {f"s{i:02d}.png": cv2.imencode(".png", render_board(CAMERA, BOARD, rvec, tvec, rng))[1].tobytes()
              for i, (rvec, tvec) in enumerate(data.board_poses)}
    poses = [(f"s{i:02d}.png", tuple(T[:3, 3]), tuple(quat_wxyz_from_R(T[:3, :3])))
             for i, T in enumerate(data.T_base_gripper)]
    return images, poses


def _camera_info() -> str:
    K = CAMERA.K
    return yaml.safe_dump({
        "image_width": CAMERA.width, "image_height": CAMERA.height, "camera_name": "front",
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.ravel().tolist()}, "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": list(CAMERA.dist)},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()}})


def _csv(rows, header=("image", "x", "y", "z", "qw", "qx", "qy", "qz")) -> str:
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
    return f.getvalue()


def _rows(xyzw: bool = False):
    _, poses = _stations()
    return [[name, *t, *((q[1], q[2], q[3], q[0]) if xyzw else q)] for name, t, q in poses]


def handeye_setup(rows=None, images: int | None = None, pose_file: str = "poses.csv", pose_text: str | None = None,
                  extra=None):
    """A scratch folder with stations/, poses, camera.yaml (and ``extra`` files: name -> text)."""
    def setup(d: Path) -> None:
        imgs, _ = _stations()
        (d / "stations").mkdir()
        for name in sorted(imgs)[:images]:
            (d / "stations" / name).write_bytes(imgs[name])
        (d / pose_file).write_text(pose_text if pose_text is not None else _csv(rows if rows is not None else _rows()))
        (d / "camera.yaml").write_text(_camera_info())
        for name, text in (extra or {}).items():
            (d / name).write_text(text)
    return setup


def handeye(*extra: str, poses: str = "poses.csv", out: str = "arm.yaml") -> tuple[str, ...]:
    return ("calibrate", "handeye", "--mode", "eye_to_hand", "--poses", poses, "--images", "stations",
            "--camera-info", "camera.yaml", "--unit-id", "arm-1", "--out", out, *extra)


def _with(rows, index, row):
    rows = [list(r) for r in rows]
    rows[index] = row
    return rows


def _unit_file(unit_id: str) -> str:
    return yaml.safe_dump({"schema_version": 1, "unit_id": unit_id, "created": "2026-11-22T11:30:00+00:00",
                           "tool_version": "0.1.0", "quadrotor": {
                               "base_preset": "crazyflie2x", "flight_s": 60.0, "residuals": {},
                               "tau_up_s": {"value": 0.04, "sigma": 0.001, "unit": "s"},
                               "tau_down_s": {"value": 0.05, "sigma": 0.001, "unit": "s"},
                               "kf_per_kg": {"value": 1e-8, "sigma": 1e-10, "unit": "N/(kg rpm^2)"}}})


# --- deploy logs ---------------------------------------------------------------------------------------

SHA = "ab" * 32


def _contract_json(sha: str = SHA) -> str:
    from sim.quadrotor.presets import CRAZYFLIE_2X as p
    from tether.contract import ActionSpec, PolicyContract, Rotor, make_slices

    spec = ActionSpec(type="rotor", dim=4, rotors=tuple(Rotor(tuple(map(float, r)), int(s))
                                                        for r, s in zip(p.rotor_pos_b, p.rotor_spin)),
                      max_rpm=p.max_rpm, kf_n_per_rpm2=p.kf_n_per_rpm2, km_nm_per_rpm2=p.km_nm_per_rpm2,
                      max_thrust_n=p.max_thrust_n)
    c = PolicyContract(task="hover", control_rate_hz=100.0, action_latency_s=0.0,
                       observation=make_slices([("pos_err_w", 3)]), action=spec,
                       provenance={"onnx_sha256": sha, "opset": 17, "config_hash": "0" * 16, "preset": p.name,
                                   "created": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    return json.dumps(c.to_dict())


def deploy_bag(with_contract: bool, other_policy: bool = False):
    """A short deploy-style bag (the recorder's BagWriter) in scratch/run1; refusals come before sysid."""
    def setup(d: Path) -> None:
        from nav_msgs.msg import Odometry
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from tether_deploy.bag import BagWriter
        from tether_deploy.conversions import fill_command, fill_odometry

        w = BagWriter(d / "run1")
        for topic, cls in (("/state/odom", Odometry), ("/cmd/executed", JointState), ("/runner/active_policy", String)):
            w.add_topic(topic, cls)
        w.write("/runner/active_policy", 1, serialize_message(String(data=f"active {SHA} /p")))
        for k in range(20):
            odom = Odometry()
            odom.header.stamp.sec, odom.header.stamp.nanosec = 1, k * 10_000_000
            fill_odometry(odom, (0, 0, 1), (1, 0, 0, 0), (0, 0, 0), (0, 0, 0))
            w.write("/state/odom", 10**9 + k * 10**7, serialize_message(odom))
            cmd = JointState()
            fill_command(cmd, [f"rotor_{i}_speed_norm" for i in range(4)], [0.1] * 4, "base_link")
            w.write("/cmd/executed", 10**9 + k * 10**7 + 10**6, serialize_message(cmd))
        w.close()
        if with_contract:
            (d / "run1" / "policy.json").write_text(_contract_json())
        if other_policy:
            (d / "other").mkdir()
            (d / "other" / "policy.json").write_text(_contract_json("cd" * 32))
    return setup


def quad(*extra: str, log: str = "run1", out: str = "cf.yaml") -> tuple[str, ...]:
    return ("calibrate", "quadrotor", "--log", log, "--unit-id", "cf2x-007", "--out", out, *extra)


def _files(**files):
    def setup(d: Path) -> None:
        for name, content in files.items():
            p = d / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return setup


def _blank_images(d: Path) -> None:
    (d / "views").mkdir()
    for i in range(8):
        cv2.imwrite(str(d / "views" / f"v{i}.png"), np.full((120, 160), 40 + 20 * i, np.uint8))


CHARUCO_FILE = "kind: charuco\ninner_corners: [8, 5]\nsquare_m: 0.03\nmarker_m: 0.022\n"
CAM = ("calibrate", "camera", "--images", "views", "--unit-id", "cam-1", "--out", "cam.yaml")

CASES = [
    # hand-eye: results outside the bounds (the command ran: exit 1) and what usually causes them
    BadInput("handeye-wrong-mode", handeye()[:3] + ("eye_in_hand",) + handeye()[4:], exit_code=1,
             words=("refused", "nothing written", "chain residual", "--mode eye_to_hand"), setup=handeye_setup()),
    BadInput("handeye-xyzw-under-wxyz-header", handeye(), exit_code=1,
             words=("refused", "quaternions in x,y,z,w order"), setup=handeye_setup(_rows(xyzw=True))),
    # pose rows: each error names the line
    BadInput("handeye-duplicate-image-row", handeye(), exit_code=2, words=("line 9", "s07.png", "already has a pose"),
             setup=handeye_setup(_rows() + [_rows()[-1]])),
    BadInput("handeye-duplicate-pose-values", handeye(), exit_code=2, words=("line 4", "same pose as", "line 3"),
             setup=handeye_setup(_with(_rows(), 2, ["s02.png", *_rows()[1][1:]]))),
    BadInput("handeye-nan-in-row", handeye(), exit_code=2, words=("line 4", "qx", "finite"),
             setup=handeye_setup(_with(_rows(), 2, [*_rows()[2][:5], "nan", *_rows()[2][6:]]))),
    BadInput("handeye-short-row", handeye(), exit_code=2, words=("line 3", "3 of 8 fields"),
             setup=handeye_setup(_with(_rows(), 1, ["s01.png", 0.1, 0.2]))),
    BadInput("handeye-header-without-quaternion-names", handeye(), exit_code=2, words=("qw", "quaternion order"),
             setup=handeye_setup(pose_text=_csv(_rows(), header=("image", "x", "y", "z", "q0", "q1", "q2", "q3")))),
    BadInput("handeye-quaternion-not-unit", handeye(), exit_code=2, words=("line 2", "norm"),
             setup=handeye_setup(_with(_rows(), 0, ["s00.png", 0.1, 0.2, 0.3, 0.5, 0.1, 0.1, 0.1]))),
    BadInput("handeye-json-order-not-stated", handeye(poses="poses.json"), exit_code=2,
             words=("quaternion order is not stated", "--quat-order"),
             setup=handeye_setup(pose_file="poses.json", pose_text=json.dumps({"poses": [
                 {"image": r[0], "translation_m": r[1:4], "quaternion": r[4:]} for r in _rows()]}))),
    BadInput("handeye-json-order-contradicts-flag", handeye("--quat-order", "xyzw", poses="poses.json"),
             exit_code=2, words=("wxyz", "--quat-order"),
             setup=handeye_setup(pose_file="poses.json", pose_text=json.dumps({"quaternion_order": "wxyz", "poses": [
                 {"image": r[0], "translation_m": r[1:4], "quaternion": r[4:]} for r in _rows()]}))),
    BadInput("handeye-too-few-stations", handeye(), exit_code=2, words=("only 4 station(s)", "need at least 5"),
             setup=handeye_setup(images=4)),
    BadInput("handeye-missing-pose-file", handeye(poses="nowhere.csv"), exit_code=2, words=("nowhere.csv", "does not exist"),
             setup=handeye_setup()),
    BadInput("handeye-empty-image-folder", handeye(), exit_code=2, words=("no image files",), setup=handeye_setup(images=0)),
    BadInput("handeye-zero-bound", handeye("--max-residual-mm", "0"), exit_code=2, words=("--max-residual-mm", "positive"),
             setup=handeye_setup()),
    # --force never drops another unit's file, nor one it cannot read
    BadInput("handeye-force-over-another-unit", handeye("--force"), exit_code=2,
             words=("will not replace", "'cf2x-009'", "--unit-id"), setup=handeye_setup(extra={"arm.yaml": _unit_file("cf2x-009")})),
    BadInput("handeye-force-over-unreadable-file", handeye("--force"), exit_code=2,
             words=("will not replace", "not a readable calibration file"),
             setup=handeye_setup(extra={"arm.yaml": "unit_id: [oops\n"})),
    BadInput("handeye-existing-without-force", handeye(), exit_code=2, words=("exists", "--force"),
             setup=handeye_setup(extra={"arm.yaml": _unit_file("arm-1")})),
    # board files and the old --squares meaning
    BadInput("board-file-missing", handeye("--board-file", "board.yaml"), exit_code=2,
             words=("board file", "does not exist"), setup=handeye_setup()),
    BadInput("board-file-unknown-key", handeye("--board-file", "board.yaml"), exit_code=2, words=("unknown key", "rows"),
             setup=handeye_setup(extra={"board.yaml": CHARUCO_FILE + "rows: 6\n"})),
    BadInput("board-file-both-counts", handeye("--board-file", "board.yaml"), exit_code=2,
             words=("exactly one of inner_corners",), setup=handeye_setup(extra={"board.yaml": CHARUCO_FILE + "squares: [9, 6]\n"})),
    BadInput("board-file-not-yaml", handeye("--board-file", "board.json"), exit_code=2, words=("not valid yaml",),
             setup=handeye_setup(extra={"board.json": '{"kind": "charuco", "inner_corners": [8, 5'})),
    BadInput("board-file-with-board-flags", handeye("--board-file", "board.yaml", "--corners", "8", "5"), exit_code=2,
             words=("either as --board-file or as flags", "--corners"), setup=handeye_setup(extra={"board.yaml": CHARUCO_FILE})),
    BadInput("board-old-squares-flag", handeye("--squares", "9", "6"), exit_code=2,
             words=("inner corners", "--corners 8 5"), setup=handeye_setup()),
    BadInput("board-unknown-dictionary", handeye("--dictionary", "DICT_9X9_1"), exit_code=2,
             words=("--dictionary", "DICT_9X9_1", "not an OpenCV ArUco dictionary"), setup=handeye_setup()),
    BadInput("board-marker-larger-than-square", handeye("--marker-m", "0.04"), exit_code=2,
             words=("--marker-m", "--square-m 0.03"), setup=handeye_setup()),
    # camera
    BadInput("camera-images-without-a-board", CAM, exit_code=2, words=("only 0 usable view(s)", "8 rejected"),
             setup=_blank_images),
    BadInput("camera-info-is-the-unit-file", CAM + ("--camera-info", "cam.yaml"), exit_code=2, words=("also --out",),
             setup=_blank_images),
    BadInput("camera-out-is-a-folder", CAM + ("--force",), exit_code=2, words=("is not a file",),
             setup=lambda d: (_blank_images(d), (d / "cam.yaml").mkdir())),
    # quadrotor: deploy logs
    BadInput("quadrotor-deploy-log-without-contract", quad(), exit_code=2, words=("normalized actions", "--policy"),
             setup=deploy_bag(with_contract=False)),
    BadInput("quadrotor-policy-that-did-not-fly", quad("--policy", "other"), exit_code=2,
             words=("flown by policy", "abababababab", "--policy"), setup=deploy_bag(with_contract=False, other_policy=True)),
    BadInput("quadrotor-preset-not-the-policy-vehicle", quad("--preset", "px4_1kg"), exit_code=2,
             words=("not the vehicle", "crazyflie2x"), setup=deploy_bag(with_contract=True)),
    BadInput("quadrotor-truncated-mcap", quad(log="flight.mcap"), exit_code=2, words=("flight.mcap", "truncated"),
             setup=_files(**{"flight.mcap": b"\x89MCAP0"})),
    BadInput("quadrotor-missing-log", quad(log="nowhere.mcap"), exit_code=2, words=("nowhere.mcap", "does not exist")),
    BadInput("quadrotor-unknown-odom-topic", quad("--odom-topic", "/odom"), exit_code=2,
             words=("/odom", "/state/odom"), setup=deploy_bag(with_contract=True)),
    BadInput("quadrotor-zero-mass", quad("--mass", "0"), exit_code=2, words=("--mass", "positive"),
             setup=deploy_bag(with_contract=True)),
    BadInput("quadrotor-csv-without-preset", quad(log="flight.csv"), exit_code=2, words=("--preset",),
             setup=_files(**{"flight.csv": "t,u0\n0,0\n"})),
    BadInput("quadrotor-csv-missing-columns", quad("--preset", "crazyflie2x", log="flight.csv"), exit_code=2,
             words=("missing column(s)", "pos_w_x", "a flight log has the columns"),
             setup=_files(**{"flight.csv": "t,u0\n0,0\n"})),
    BadInput("quadrotor-zero-sample-rate", quad("--sample-rate-hz", "0"), exit_code=2,
             words=("--sample-rate-hz", "positive"), setup=deploy_bag(with_contract=True)),
    BadInput("quadrotor-too-little-flight", quad(), exit_code=2, words=("need at least 10", "s of flight"),
             setup=deploy_bag(with_contract=True)),
    BadInput("quadrotor-force-over-another-unit", quad("--force"), exit_code=2, words=("will not replace", "'cf2x-009'"),
             setup=lambda d: (deploy_bag(with_contract=True)(d), (d / "cf.yaml").write_text(_unit_file("cf2x-009")))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)
