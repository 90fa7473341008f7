"""Hand-eye calibration on noisy synthetic stations with known ground truth: robot poses with 0.3 mm /
0.03 deg noise per axis, board poses from PnP on corners with 0.2 px noise."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.boards import BoardCfg, CalibrationError
from calibration.handeye import (HAND_EYE_METHODS, MODES, ROBOT_WORLD_METHODS, HandEyeCfg, R_from_quat_wxyz,
                                 calibrate_hand_eye, inv_T, quat_wxyz_from_R, rotation_angle_deg)
from calibration.synthetic import CameraModel, synthetic_hand_eye


def _errors(X: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(np.linalg.norm(X[:3, 3] - truth[:3, 3])), rotation_angle_deg(X[:3, :3].T @ truth[:3, :3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_eye_within_2mm_and_0p2deg(mode, seed):
    data = synthetic_hand_eye(CameraModel(), BoardCfg(), 20, mode=mode, seed=seed)
    res = calibrate_hand_eye(data.T_base_gripper, data.T_camera_target, HandEyeCfg(mode=mode))
    t_err, r_err = _errors(res.X, data.X)
    assert t_err < 0.002, f"{1e3 * t_err:.2f} mm"
    assert r_err < 0.2, f"{r_err:.3f} deg"
    c_t, c_r = _errors(res.C, data.C)
    assert c_t < 0.003 and c_r < 0.3
    assert set(res.methods) == set(HAND_EYE_METHODS) | set(ROBOT_WORLD_METHODS)
    for name, M in res.methods.items():  # every solver is in the right place; the spread says how close
        m_t, m_r = _errors(M, data.X)
        assert m_t < 0.01 and m_r < 1.0, (name, m_t, m_r)
    assert 0 < res.spread_translation_m < 0.01 and 0 < res.spread_rotation_deg < 1.0
    assert res.residual_translation_m < 0.002 and res.n_stations == 20


def test_noise_free_stations_are_exact():
    from calibration.synthetic import HandEyeNoiseCfg

    data = synthetic_hand_eye(CameraModel(), BoardCfg(), 8, mode="eye_to_hand", seed=4,
                              noise=HandEyeNoiseCfg(0.0, 0.0, 0.0))
    res = calibrate_hand_eye(data.T_base_gripper, data.T_camera_target, HandEyeCfg(mode="eye_to_hand"))
    t_err, r_err = _errors(res.X, data.X)
    assert t_err < 1e-6 and r_err < 1e-4


def test_too_few_stations_is_a_clear_error():
    data = synthetic_hand_eye(CameraModel(), BoardCfg(), 4, seed=0)
    with pytest.raises(CalibrationError, match=r"only 4 station\(s\).*need at least 5"):
        calibrate_hand_eye(data.T_base_gripper, data.T_camera_target)


def test_unpaired_and_unrotated_stations_are_refused():
    data = synthetic_hand_eye(CameraModel(), BoardCfg(), 6, seed=0)
    with pytest.raises(CalibrationError, match="must pair up"):
        calibrate_hand_eye(data.T_base_gripper, data.T_camera_target[:-1])
    shift = [np.eye(4) for _ in range(6)]
    for i, T in enumerate(shift):
        T[:3, 3] = [0.1 * i, 0.0, 0.0]
    with pytest.raises(CalibrationError, match="rotates by at most 0.0 deg"):
        calibrate_hand_eye(shift, data.T_camera_target)
    bad = list(data.T_base_gripper)
    bad[2] = bad[2].copy()
    bad[2][:3, :3] *= 1.1
    with pytest.raises(CalibrationError, match="robot pose 2 is not a rigid transform"):
        calibrate_hand_eye(bad, data.T_camera_target)


def test_quaternion_helpers_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q *= np.sign(q[0])
        assert np.allclose(quat_wxyz_from_R(R_from_quat_wxyz(q)), q, atol=1e-9)
    T = np.eye(4)
    T[:3, :3] = R_from_quat_wxyz([0.9, 0.1, -0.3, 0.2])
    T[:3, 3] = [1.0, 2.0, 3.0]
    assert np.allclose(inv_T(T) @ T, np.eye(4))


@pytest.mark.parametrize("mode", MODES)
def test_bounds_pass_good_stations_and_refuse_the_usual_mistakes(mode):
    """Good stations (also noisy ones) are within HandEyeBounds; a wrong mode, x,y,z,w quaternions read as
    w,x,y,z and a duplicated pose row are outside, and diagnose() finds the reading that closes the chain."""
    from calibration.handeye import HandEyeBounds, diagnose, exceeded_bounds, make_T
    from calibration.synthetic import HandEyeNoiseCfg

    for seed, noise in ((5, HandEyeNoiseCfg()), (6, HandEyeNoiseCfg(0.002, 0.2, 0.5))):
        data = synthetic_hand_eye(CameraModel(), BoardCfg(), 12, mode=mode, seed=seed, noise=noise)
        res = calibrate_hand_eye(data.T_base_gripper, data.T_camera_target, HandEyeCfg(mode=mode))
        assert exceeded_bounds(res) == [], (seed, res.residual_translation_m, res.spread_translation_m)
    other = MODES[1 - MODES.index(mode)]
    wrong = calibrate_hand_eye(data.T_base_gripper, data.T_camera_target, HandEyeCfg(mode=other))
    assert any("chain residual" in p for p in exceeded_bounds(wrong))
    fixes = diagnose({"other mode": (data.T_base_gripper, mode)}, data.T_camera_target)
    assert [label for label, _ in fixes] == ["other mode"]

    def xyzw_read_as_wxyz(T):
        q = quat_wxyz_from_R(T[:3, :3])
        return make_T(R_from_quat_wxyz([q[1], q[2], q[3], q[0]]), T[:3, 3])

    swapped = [xyzw_read_as_wxyz(T) for T in data.T_base_gripper]
    res = calibrate_hand_eye(swapped, data.T_camera_target, HandEyeCfg(mode=mode))
    assert exceeded_bounds(res)
    dup = list(data.T_base_gripper)
    dup[3] = dup[2]
    res = calibrate_hand_eye(dup, data.T_camera_target, HandEyeCfg(mode=mode))
    assert exceeded_bounds(res, HandEyeBounds())
