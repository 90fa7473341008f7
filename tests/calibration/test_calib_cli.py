"""`tether calibrate ...` end to end on synthetic data: files written, reports printed, bad input ends
with a one-line message and exit 2 (no traceback), nothing overwritten without --force. More bad inputs,
as real processes, in tests/bad_inputs/test_calibrate.py."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import yaml

from calibration.boards import BoardCfg
from calibration.cli import main
from calibration.files import load_calibration
from calibration.flightlog import log_from_columns, write_csv
from calibration.handeye import quat_wxyz_from_R, rotation_angle_deg
from calibration.synthetic import CameraModel, render_board, synthetic_hand_eye


def _run(argv: list[str]) -> None:
    assert main(["calibrate", *argv]) == 0


def _fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run a command that must fail; returns its one error line."""
    capsys.readouterr()
    assert main(["calibrate", *argv]) == code
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture()
def image_dir(charuco_views, tmp_path):
    named, _ = charuco_views
    folder = tmp_path / "images"
    folder.mkdir()
    for name, img in named:
        cv2.imwrite(str(folder / name), img)
    cv2.imwrite(str(folder / "zz_blurred.png"), cv2.GaussianBlur(named[0][1], (0, 0), 3.0))
    return folder


def test_camera_cli_writes_calibration_camera_info_and_coverage(image_dir, tmp_path, capsys):
    out, info, cov = tmp_path / "cf2x-007.yaml", tmp_path / "front.yaml", tmp_path / "coverage.png"
    _run(["camera", "--images", str(image_dir), "--unit-id", "cf2x-007", "--camera-name", "front", "--out", str(out),
          "--camera-info", str(info), "--coverage", str(cov)])
    report = capsys.readouterr().out
    assert "18 views used, 1 rejected" in report and "zz_blurred.png: no charuco board found" in report
    assert "blur" in report
    calib = load_calibration(out)
    assert calib.camera.camera_name == "front" and calib.camera.rms_px <= 0.3
    assert abs(calib.camera.K[0] / CameraModel().fx - 1) < 0.005
    ros = yaml.safe_load(info.read_text())
    assert ros["camera_name"] == "front" and ros["distortion_model"] == "plumb_bob"
    assert ros["camera_matrix"]["data"] == list(calib.camera.K)
    assert cv2.imread(str(cov)).shape == (480, 640, 3)

    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask()), "files follow the user's umask"
    before = out.read_text()
    assert "exists; pass --force" in _fails(["camera", "--images", str(image_dir), "--unit-id", "cf2x-007",
                                             "--out", str(out)], capsys)
    assert out.read_text() == before


def _umask() -> int:
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_camera_cli_bad_input_is_one_clear_line(tmp_path, image_dir, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(image_dir.iterdir())[:3] + [image_dir / "zz_blurred.png"]:
        (few / p.name).write_bytes(p.read_bytes())
    cases = [
        (["--images", str(few)], r"only 3 usable view\(s\) \(1 rejected, listed above\); need at least 8"),
        (["--images", str(tmp_path / "nowhere")], "does not exist"),
        ([], "give exactly one image source"),
        (["--images", str(image_dir), "--board", "charuco", "--marker-m", "0.05"], r"--marker-m must be in"),
        (["--images", str(image_dir), "--squares", "9", "6"], r"--corners 8 5 for the old --squares 9 6"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["calibrate", "camera", *extra, "--unit-id", "u1", "--out", str(tmp_path / "u1.yaml")]) == 2
        err = capsys.readouterr().err.splitlines()
        line = err[-1]
        assert [ln for ln in err if ln.startswith("error:")] == [line]
        if extra[:2] == ["--images", str(few)]:
            assert err[:-1] == ["  rejected zz_blurred.png: " + err[0].split(": ", 1)[1]], "why each view went"
        assert line.startswith("error: calibrate camera: ")
        assert __import__("re").search(message, line), line
    assert not (tmp_path / "u1.yaml").exists()


def test_quadrotor_cli_and_force_keeps_other_sections(flight_columns, true_vehicle, image_dir, tmp_path, capsys):
    log_path = tmp_path / "flight.csv"
    write_csv(log_path, log_from_columns(flight_columns))
    out = tmp_path / "cf2x-007.yaml"
    _run(["camera", "--images", str(image_dir), "--unit-id", "cf2x-007", "--out", str(out)])
    args = ["quadrotor", "--log", str(log_path), "--preset", "crazyflie2x", "--unit-id", "cf2x-007", "--out", str(out)]
    assert "pass --force" in _fails(args, capsys)
    _run([*args, "--force"])
    report = capsys.readouterr().out
    assert "kf_per_kg" in report and "tau_up_s" in report
    calib = load_calibration(out)
    assert calib.camera is not None, "--force must keep the unit's camera section"
    p = calib.quadrotor.params
    assert abs(p["kf_per_kg"].value / (true_vehicle.kf_n_per_rpm2 / true_vehicle.mass_kg) - 1) < 0.05
    assert abs(p["km_nm_per_rpm2"].value / true_vehicle.km_nm_per_rpm2 - 1) < 0.05
    assert p["tau_up_s"].sigma > 0 and calib.quadrotor.base_preset == "crazyflie2x"

    # the file sets the simulator: nominal = identified, ranges from the uncertainty, and it samples
    import torch

    from calibration.to_sim import preset_and_randomization
    from sim.quadrotor.presets import CRAZYFLIE_2X
    from sim.randomization import sample_params
    preset, rand = preset_and_randomization(calib, CRAZYFLIE_2X, k=2.0)
    assert preset.kf_n_per_rpm2 == pytest.approx(p["kf_per_kg"].value * CRAZYFLIE_2X.mass_kg)
    assert rand.kf_scale == pytest.approx((0.98, 1.02)) and rand.tau_scale == pytest.approx((0.9, 1.1))
    params = sample_params(preset, rand, 64, torch.Generator().manual_seed(0))
    kf = params.kf.squeeze(-1).numpy()
    assert np.all((kf >= 0.98 * preset.kf_n_per_rpm2 * (1 - 1e-6)) & (kf <= 1.02 * preset.kf_n_per_rpm2 * (1 + 1e-6)))
    assert torch.allclose(params.max_rpm, torch.tensor(preset.max_rpm))
    assert "unknown preset 'cf3'" in _fails(["quadrotor", "--log", str(log_path), "--preset", "cf3", "--unit-id", "x",
                                             "--out", str(tmp_path / "x.yaml")], capsys)
    assert "need at least 10" in _fails(["quadrotor", "--log", str(log_path), "--preset", "crazyflie2x", "--end", "5",
                                         "--unit-id", "x", "--out", str(tmp_path / "x.yaml")], capsys)


def test_handeye_cli_from_rendered_station_images(tmp_path, capsys):
    camera, board = CameraModel(), BoardCfg()
    data = synthetic_hand_eye(camera, board, 12, mode="eye_to_hand", seed=7)
    images = tmp_path / "stations"
    images.mkdir()
    rng = np.random.default_rng(0)
    with (tmp_path / "poses.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "x", "y", "z", "qw", "qx", "qy", "qz"])
        for i, (T, (rvec, tvec)) in enumerate(zip(data.T_base_gripper, data.board_poses)):
            cv2.imwrite(str(images / f"s{i:02d}.png"), render_board(camera, board, rvec, tvec, rng))
            w.writerow([f"s{i:02d}.png", *T[:3, 3], *quat_wxyz_from_R(T[:3, :3])])
    cv2.imwrite(str(images / "s99.png"), np.full((480, 640), 90, np.uint8))
    info = tmp_path / "camera.yaml"
    K, d = camera.K, camera.dist
    info.write_text(yaml.safe_dump({
        "image_width": 640, "image_height": 480, "camera_name": "front",
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.ravel().tolist()}, "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": list(d)},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()}}))
    out = tmp_path / "arm.yaml"
    _run(["handeye", "--mode", "eye_to_hand", "--poses", str(tmp_path / "poses.csv"), "--images", str(images),
          "--camera-info", str(info), "--unit-id", "arm-1", "--out", str(out)])
    report = capsys.readouterr().out
    assert "12 stations used, 1 skipped" in report and "s99.png: no robot pose" in report
    he = load_calibration(out).hand_eye
    assert he.mode == "eye_to_hand" and he.parent_frame == "base" and len(he.methods) == 7
    from calibration.handeye import R_from_quat_wxyz
    assert np.linalg.norm(np.array(he.translation_m) - data.X[:3, 3]) < 0.002
    assert rotation_angle_deg(R_from_quat_wxyz(he.rotation_wxyz).T @ data.X[:3, :3]) < 0.2

    broken = yaml.safe_load(info.read_text())
    broken["camera_matrix"]["data"] = broken["camera_matrix"]["data"][:8]
    info.write_text(yaml.safe_dump(broken))
    assert "camera_matrix.data" in _fails(["handeye", "--poses", str(tmp_path / "poses.csv"), "--images", str(images),
                                           "--camera-info", str(info), "--unit-id", "arm-1",
                                           "--out", str(tmp_path / "arm2.yaml")], capsys)


def test_handeye_cli_json_poses_xyzw_and_a_board_file(tmp_path, capsys):
    import json

    from calibration.handeye import R_from_quat_wxyz

    camera, board = CameraModel(), BoardCfg()
    data = synthetic_hand_eye(camera, board, 10, mode="eye_in_hand", seed=3)
    images = tmp_path / "stations"
    images.mkdir()
    rng = np.random.default_rng(1)
    poses = []
    for i, (T, (rvec, tvec)) in enumerate(zip(data.T_base_gripper, data.board_poses)):
        cv2.imwrite(str(images / f"s{i:02d}.png"), render_board(camera, board, rvec, tvec, rng))
        w, x, y, z = quat_wxyz_from_R(T[:3, :3])
        poses.append({"image": f"s{i:02d}.png", "translation_m": T[:3, 3].tolist(), "quaternion": [x, y, z, w]})
    (tmp_path / "poses.json").write_text(json.dumps({"quaternion_order": "xyzw", "poses": poses}))
    # the default board, as a file: inner corners counted as OpenCV counts them (9 x 6 squares)
    (tmp_path / "board.yaml").write_text("kind: charuco\ninner_corners: [8, 5]\nsquare_m: 0.03\nmarker_m: 0.022\n"
                                         "dictionary: DICT_5X5_100\n")
    K = camera.K
    (tmp_path / "camera.yaml").write_text(yaml.safe_dump({
        "image_width": 640, "image_height": 480, "camera_name": "wrist",
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.ravel().tolist()}, "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": list(camera.dist)},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()}}))
    out = tmp_path / "arm.yaml"
    argv = ["handeye", "--poses", str(tmp_path / "poses.json"), "--images", str(images), "--board-file",
            str(tmp_path / "board.yaml"), "--camera-info", str(tmp_path / "camera.yaml"), "--unit-id", "arm-2",
            "--out", str(out)]
    # the wrong mode is refused with its cause, and nothing is written
    line = _fails([*argv, "--mode", "eye_to_hand"], capsys, code=1)
    assert "refused, nothing written" in line and "--mode eye_in_hand" in line and not out.exists()
    _run(argv)
    he = load_calibration(out).hand_eye
    assert np.linalg.norm(np.array(he.translation_m) - data.X[:3, 3]) < 0.002
    assert rotation_angle_deg(R_from_quat_wxyz(he.rotation_wxyz).T @ data.X[:3, :3]) < 0.2
