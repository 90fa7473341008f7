"""Camera calibration on rendered boards with known intrinsics and distortion (blur 0.8 px, noise 2
grey levels, uneven lighting down to 45%), and the bad-input cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.boards import BoardCfg, CalibrationError, Detection, Rejection, detect_board
from calibration.camera import (CameraCalibCfg, calibrate_camera, camera_section, coverage_image, detect_views,
                                write_coverage_png)
from calibration.files import camera_info_dict
from calibration.synthetic import CameraModel, RenderCfg, render_board, render_views, true_corners

CAMERA = CameraModel()


def _rel_errors(K: np.ndarray) -> dict[str, float]:
    truth = {"fx": CAMERA.fx, "fy": CAMERA.fy, "cx": CAMERA.cx, "cy": CAMERA.cy}
    est = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
    return {k: abs(est[k] / truth[k] - 1.0) for k in truth}


@pytest.mark.parametrize("views_fixture", ["charuco_views", "chessboard_views"])
def test_intrinsics_within_half_percent(views_fixture, request):
    (named, _), board = request.getfixturevalue(views_fixture), BoardCfg(kind=views_fixture.split("_")[0])
    views, rejected = detect_views(named, board)
    assert not rejected, [r.reason for r in rejected]
    calib = calibrate_camera(views, board)
    errors = _rel_errors(calib.K)
    assert max(errors.values()) < 0.005, errors
    assert calib.rms_px <= 0.3
    assert np.allclose(calib.dist[:2], CAMERA.dist[:2], atol=0.01), calib.dist
    assert set(calib.intrinsics_sigma_px) == {"fx", "fy", "cx", "cy"}
    assert all(0 < s < 5 for s in calib.intrinsics_sigma_px.values())


def test_charuco_corners_are_subpixel_accurate(charuco_views):
    (named, poses), board = charuco_views, BoardCfg()
    errs = []
    for (name, img), (rvec, tvec) in zip(named[:6], poses[:6]):
        d = detect_board(img, board, name)
        assert isinstance(d, Detection)
        errs.append(np.linalg.norm(d.corners_px - true_corners(CAMERA, board, rvec, tvec)[d.ids], axis=1))
    errs = np.concatenate(errs)
    assert np.sqrt(np.mean(errs ** 2)) < 0.15, np.sqrt(np.mean(errs ** 2))


def test_legacy_charuco_board_needs_the_legacy_flag():
    legacy = BoardCfg(squares_x=9, squares_y=6, legacy=True)  # an even row count is where the layouts differ
    images, _ = render_views(CAMERA, legacy, 2, seed=5)
    d = detect_board(images[0], legacy)
    assert isinstance(d, Detection) and len(d.ids) >= 30
    wrong = detect_board(images[0], BoardCfg(squares_x=9, squares_y=6, legacy=False))
    assert isinstance(wrong, Rejection) or len(wrong.ids) < len(d.ids) // 2


def test_blurred_image_is_rejected_with_the_reason(charuco_views):
    named, _ = charuco_views
    blurred = cv2.GaussianBlur(named[0][1], (0, 0), 3.0)
    r = detect_board(blurred, BoardCfg(), "blurred.png")
    assert isinstance(r, Rejection)
    assert "blur" in r.reason


def test_mildly_blurred_board_is_detected_but_rejected_as_blurred():
    board = BoardCfg()
    rng = np.random.default_rng(0)
    rvec, tvec = np.array([0.1, -0.2, 0.05]), np.array([-0.12, -0.08, 0.42])
    img = render_board(CAMERA, board, rvec, tvec, rng, RenderCfg(blur_sigma_px=2.6))
    r = detect_board(img, board, "soft.png")
    assert isinstance(r, Rejection), "a 2.6 px blur must not pass the 2 px limit"
    assert "blur" in r.reason


def test_board_less_images_are_rejected_with_the_reason():
    rng = np.random.default_rng(1)
    scene = cv2.resize(rng.uniform(40, 200, (12, 16)).astype(np.float32), (640, 480), interpolation=cv2.INTER_CUBIC)
    for x, y in rng.integers(20, 400, (8, 2)):
        cv2.rectangle(scene, (int(x), int(y)), (int(x) + 60, int(y) + 40), float(rng.uniform(0, 255)), -1)
    scene = np.clip(scene + rng.normal(0, 2, scene.shape), 0, 255).astype(np.uint8)
    for kind in ("charuco", "chessboard"):
        r = detect_board(scene, BoardCfg(kind=kind), "room.png")
        assert isinstance(r, Rejection)
        assert r.reason.startswith(f"no {kind} board found") and "blurred" not in r.reason, r.reason
    flat = detect_board(np.full((480, 640), 128, np.uint8), BoardCfg(), "grey.png")
    assert isinstance(flat, Rejection) and "contrast" in flat.reason


def test_too_few_views_is_a_clear_error(charuco_views):
    named, _ = charuco_views
    views, _ = detect_views(named[:3], BoardCfg())
    with pytest.raises(CalibrationError, match=r"only 3 usable view\(s\) \(1 rejected, listed above\); need at least 8") as e:
        calibrate_camera(views, BoardCfg(), rejected=[Rejection("x.png", "no charuco board found")])
    assert e.value.details == ("rejected x.png: no charuco board found",)


def test_outlier_view_is_rejected(chessboard_views):
    named, _ = chessboard_views
    board = BoardCfg(kind="chessboard")
    views, _ = detect_views(named, board)
    rng = np.random.default_rng(2)
    bad = views[4]
    views[4] = Detection(bad.name, bad.corners_px + rng.normal(0, 3.0, bad.corners_px.shape), bad.ids,
                         bad.image_size, bad.blur_px)
    calib = calibrate_camera(views, board, CameraCalibCfg())
    assert [r.name for r in calib.rejected] == [bad.name]
    assert "outlier" in calib.rejected[0].reason
    assert max(_rel_errors(calib.K).values()) < 0.005


def test_camera_info_layout_and_coverage_png(charuco_views, tmp_path):
    named, _ = charuco_views
    board = BoardCfg()
    views, _ = detect_views(named, board)
    calib = calibrate_camera(views, board)
    info = camera_info_dict(camera_section(calib, "front"))
    assert list(info) == ["image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                          "distortion_coefficients", "rectification_matrix", "projection_matrix"]
    assert (info["image_width"], info["image_height"]) == (640, 480)
    assert info["distortion_model"] == "plumb_bob"
    assert info["camera_matrix"]["rows"] == 3 and len(info["camera_matrix"]["data"]) == 9
    assert info["distortion_coefficients"]["cols"] == 5
    assert info["projection_matrix"]["cols"] == 4 and len(info["projection_matrix"]["data"]) == 12
    png = tmp_path / "coverage.png"
    write_coverage_png(png, views, calib.image_size)
    img = cv2.imread(str(png))
    assert img.shape == (480, 640, 3)
    assert 0.5 < calib.coverage <= 1.0
    assert np.array_equal(coverage_image(views, calib.image_size), img)


def test_images_from_a_rosbag2_mcap_topic(charuco_views, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from calibration.images import bag_images

    named, _ = charuco_views
    store = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam/image_raw", Image.__msgtype__, typestore=store)
        for i, (_, img) in enumerate(named[:3]):
            bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=480, width=640,
                        encoding="bgr8", is_bigendian=0, step=640 * 3, data=bgr.ravel())
            w.write(conn, i * 10**9, store.serialize_cdr(msg, Image.__msgtype__))
    got = list(bag_images(tmp_path / "bag", "/cam/image_raw"))
    assert [n for n, _ in got] == ["/cam/image_raw@0.000", "/cam/image_raw@1.000", "/cam/image_raw@2.000"]
    assert np.array_equal(got[1][1], named[1][1])
    with pytest.raises(CalibrationError, match="no topic '/nope'"):
        list(bag_images(tmp_path / "bag", "/nope"))
