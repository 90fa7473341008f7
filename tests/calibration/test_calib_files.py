"""Calibration files: round trip, validation errors that name the field, no silent overwrite, and the
file -> simulator preset / randomization round trip."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from calibration.files import (CalibrationFile, CameraSection, HandEyeSection, Param, QuadrotorSection,
                               calibration_from_dict, calibration_to_dict, load_calibration, write_calibration)
from calibration.to_sim import RangeFloors, preset_and_randomization
from sim.quadrotor.presets import CRAZYFLIE_2X
from sim.randomization import RandomizationCfg


def _calib() -> CalibrationFile:
    camera = CameraSection("front", 640, 480, (610.0, 0, 323.5, 0, 606.0, 236.0, 0, 0, 1), (-0.26, 0.085, 0.0009, -0.0006, 0.0),
                           (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (565.0, 0, 324.0, 0, 0, 581.0, 236.0, 0, 0, 0, 1.0, 0),
                           0.07, {"fx": 0.3, "fy": 0.3, "cx": 0.35, "cy": 0.26}, 18, 2, 0.78)
    hand_eye = HandEyeSection("eye_in_hand", (0.05, 0.01, 0.02), (1.0, 0.0, 0.0, 0.0),
                              {"TSAI": ((0.0501, 0.01, 0.02), (1.0, 0.0, 0.0, 0.0))}, 0.0005, 0.02, 0.0006, 0.05, 20)
    quad = QuadrotorSection("crazyflie2x", {
        "mass_kg": Param(0.028, 0.0, "kg"),
        "kf_n_per_rpm2": Param(3.0e-10, 3.0e-12, "N/rpm^2"),  # 1%
        "km_nm_per_rpm2": Param(8.0e-12, 4.0e-13, "N m/rpm^2"),  # 5%
        "tau_up_s": Param(0.035, 0.0035, "s"),  # 10%
        "tau_down_s": Param(0.05, 0.001, "s"),  # 2%
        **{f"drag_{a}_n_s_per_m": Param(0.06, 0.0006, "N s/m") for a in "xyz"},  # 1%
        "ixx_kg_m2": Param(1.5e-5, 1.5e-7, "kg m^2"),
        "iyy_kg_m2": Param(1.45e-5, 1.5e-7, "kg m^2"),
    }, {"accel_residual_rms_m_s2": 0.18}, 60.0)
    return CalibrationFile("cf2x-007", "2026-11-22T11:30:00+00:00", "0.1.0", camera, hand_eye, quad)


def test_round_trip(tmp_path):
    path = tmp_path / "cf2x-007.yaml"
    write_calibration(path, _calib())
    assert load_calibration(path) == _calib()
    assert not [p for p in tmp_path.iterdir() if p.name != "cf2x-007.yaml"], "temp file left behind"


def test_nothing_is_overwritten_without_force(tmp_path):
    path = tmp_path / "unit.yaml"
    path.write_text("precious: true\n")
    with pytest.raises(FileExistsError, match="force"):
        write_calibration(path, _calib())
    assert path.read_text() == "precious: true\n"
    write_calibration(path, _calib(), force=True)
    assert load_calibration(path).unit_id == "cf2x-007"


def _broken(mutate) -> dict:
    d = copy.deepcopy(calibration_to_dict(_calib()))
    mutate(d)
    return d


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["quadrotor"]["kf_n_per_rpm2"].pop("sigma"), r"quadrotor\.kf_n_per_rpm2\.sigma: missing"),
    (lambda d: d["quadrotor"]["kf_n_per_rpm2"].__setitem__("sigma", "small"),
     r"quadrotor\.kf_n_per_rpm2\.sigma: expected a number, got str"),
    (lambda d: d["quadrotor"]["tau_up_s"].__setitem__("value", True), r"quadrotor\.tau_up_s\.value: expected a number"),
    (lambda d: d["quadrotor"]["tau_up_s"].__setitem__("value", -0.01), r"quadrotor\.tau_up_s\.value: must be positive"),
    (lambda d: d["quadrotor"]["kf_n_per_rpm2"].__setitem__("unit", "N/(rad/s)^2"), r"quadrotor\.kf_n_per_rpm2\.unit"),
    (lambda d: d["quadrotor"].pop("tau_down_s"), r"quadrotor\.tau_down_s: missing"),
    (lambda d: d["quadrotor"].__setitem__("kf_typo", {}), r"quadrotor: unknown field\(s\) \['kf_typo'\]"),
    (lambda d: d["camera"]["camera_matrix"].__setitem__("data", [1.0] * 8), r"camera\.camera_matrix\.data"),
    (lambda d: d["camera"].pop("image_width"), r"camera\.image_width: missing"),
    (lambda d: d["camera"]["distortion_coefficients"]["data"].__setitem__(2, "x"),
     r"camera\.distortion_coefficients\.data\[2\]"),
    (lambda d: d["hand_eye"].__setitem__("rotation_wxyz", [1.0, 1.0, 0.0, 0.0]), r"hand_eye\.rotation_wxyz: not a unit"),
    (lambda d: d["hand_eye"]["spread"].pop("rotation_deg"), r"hand_eye\.spread\.rotation_deg: missing"),
    (lambda d: d["hand_eye"].__setitem__("mode", "eye_on_hand"), r"hand_eye\.mode"),
    (lambda d: d.pop("created"), r"^created: missing"),
    (lambda d: d.__setitem__("created", "last tuesday"), r"created: 'last tuesday' is not an ISO 8601"),
    (lambda d: d.__setitem__("schema_version", 2), r"schema_version: file has 2"),
    (lambda d: d.__setitem__("unit_id", "cf/7"), r"unit_id"),
])
def test_bad_field_is_named_with_its_full_path(mutate, field):
    with pytest.raises(ValueError, match=field):
        calibration_from_dict(_broken(mutate))


def test_loader_names_the_file_and_accepts_unquoted_dates(tmp_path):
    d = calibration_to_dict(_calib())
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(d).replace("'2026-11-22T11:30:00+00:00'", "2026-11-22"))
    assert load_calibration(path).created == "2026-11-22"
    d["quadrotor"]["kf_n_per_rpm2"].pop("sigma")
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=rf"{path.name}: quadrotor\.kf_n_per_rpm2\.sigma: missing"):
        load_calibration(path)


def test_file_to_preset_and_randomization():
    calib = _calib()
    preset, rand = preset_and_randomization(calib, CRAZYFLIE_2X, k=2.0)
    q = calib.quadrotor.params
    assert preset.kf_n_per_rpm2 == q["kf_n_per_rpm2"].value
    assert preset.km_nm_per_rpm2 == q["km_nm_per_rpm2"].value
    assert (preset.tau_up_s, preset.tau_down_s) == (0.035, 0.05)
    assert preset.mass_kg == 0.028 and preset.drag_n_s_per_m == (0.06, 0.06, 0.06)
    assert preset.inertia_kg_m2 == (1.5e-5, 1.45e-5, CRAZYFLIE_2X.inertia_kg_m2[2])
    assert preset.rotor_pos_b == CRAZYFLIE_2X.rotor_pos_b and preset.max_rpm == CRAZYFLIE_2X.max_rpm
    assert "cf2x-007" in preset.name and "cf2x-007" in preset.source
    floors = RangeFloors()
    assert rand.kf_scale == pytest.approx((1 - floors.kf, 1 + floors.kf))  # 2 x 1% is below the 2% floor
    assert rand.km_scale == pytest.approx((0.9, 1.1))  # 2 x 5%
    assert rand.tau_scale == pytest.approx((0.8, 1.2))  # the wider of tau_up (2 x 10%) and tau_down
    assert rand.drag_scale == pytest.approx((1 - floors.drag, 1 + floors.drag))
    assert rand.mass_scale == pytest.approx((0.98, 1.02))
    assert rand.inertia_scale == pytest.approx((0.95, 1.05))
    assert rand.thrust_to_weight is None, "would resample max rpm and undo the identified kf"
    assert rand.latency_s == RandomizationCfg().latency_s
    _, rand_k3 = preset_and_randomization(calib, CRAZYFLIE_2X, k=3.0)
    assert rand_k3.km_scale == pytest.approx((0.85, 1.15))


def test_per_kg_parameters_use_the_preset_mass():
    calib = _calib()
    p = dict(calib.quadrotor.params)
    for name in ("mass_kg", "kf_n_per_rpm2", *(f"drag_{a}_n_s_per_m" for a in "xyz")):
        p.pop(name)
    p["kf_per_kg"] = Param(1.1e-8, 1.1e-10, "N/(kg rpm^2)")
    p["km_per_izz"] = p.pop("km_nm_per_rpm2")
    p["km_per_izz"] = Param(3.7e-7, 3.7e-9, "N m/(kg m^2 rpm^2)")
    calib = dataclasses.replace(calib, quadrotor=dataclasses.replace(calib.quadrotor, params=p))
    calibration_from_dict(calibration_to_dict(calib))
    preset, rand = preset_and_randomization(calib, CRAZYFLIE_2X)
    assert preset.mass_kg == CRAZYFLIE_2X.mass_kg
    assert preset.kf_n_per_rpm2 == pytest.approx(1.1e-8 * CRAZYFLIE_2X.mass_kg)
    assert preset.km_nm_per_rpm2 == pytest.approx(3.7e-7 * CRAZYFLIE_2X.inertia_kg_m2[2])
    assert preset.drag_n_s_per_m == CRAZYFLIE_2X.drag_n_s_per_m
    assert rand.mass_scale == RandomizationCfg().mass_scale


def test_wrong_geometry_is_refused():
    from sim.quadrotor.presets import PX4_1KG

    with pytest.raises(ValueError, match="quadrotor.base_preset"):
        preset_and_randomization(_calib(), PX4_1KG)
