"""Contract 2.1: image inputs round-trip through JSON, make the version 2.1, are refused by name when
malformed or held by a file that claims 2.0, and camera_info intrinsics are judged against the trained
ones."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from sim.tasks import make_env
from tests.contract.test_contract_v2 import v2_contract
from tether.contract import CONTRACT_VERSION, IMAGES_CONTRACT_VERSION, ContractError, ImageInput, contract_from_dict

DEPTH = dict(name="depth", quantity="depth_c", width=64, height=48, encoding="32FC1",
             topic="camera/depth/image_rect_raw", camera_info_topic="camera/depth/camera_info",
             fx_fy_cx_cy_px=(32.0, 32.0, 31.5, 23.5), intrinsics_tolerance_rel=0.05,
             mount_position_b_m=(0.03, 0.0, 0.01), mount_rpy_rad=(0.0, 0.1, 0.0), min_range_m=0.1,
             max_range_m=10.0, pooling="nearest", pooled_width=16, pooled_height=12, invalid_m=0.0, max_age_s=0.1)


@pytest.fixture(scope="module")
def flat():
    return v2_contract(make_env("hover", num_envs=2))


def test_images_round_trip_and_make_the_contract_2_1(flat):
    assert flat.version == CONTRACT_VERSION and flat.input_names == ("obs",) and "images" not in flat.to_dict()
    c = dataclasses.replace(flat, images=(ImageInput(**DEPTH),), version=None)
    assert c.version == IMAGES_CONTRACT_VERSION == "2.1"
    assert c.input_names == ("obs", "depth") and c.image("depth").shape == (1, 48, 64)
    back = contract_from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.images[0].fx_fy_cx_cy_px == (32.0, 32.0, 31.5, 23.5)
    with pytest.raises(KeyError, match="no image input 'rgb'"):
        c.image("rgb")


@pytest.mark.parametrize("change,message", [
    (dict(encoding="rgb8"), "encoding must be one of"),
    (dict(pooled_width=15), "whole multiple of the pooled"),
    (dict(quantity="pos_w"), "not a camera quantity"),
    (dict(min_range_m=12.0), "min_range_m < max_range_m"),
    (dict(max_age_s=0.0), "max_age_s must be > 0"),
    (dict(name="obs"), "input names must differ"),
])
def test_a_malformed_image_input_is_refused_by_name(flat, change, message):
    d = flat.to_dict()
    d["version"] = IMAGES_CONTRACT_VERSION
    d["images"] = [{**DEPTH, **change}]
    with pytest.raises(ContractError, match=message):
        contract_from_dict(json.loads(json.dumps(d)))


def test_a_file_claiming_2_0_cannot_hold_images_and_unknown_fields_are_named(flat):
    d = flat.to_dict()
    d["images"] = [dict(DEPTH)]
    with pytest.raises(ContractError, match="cannot hold images"):
        contract_from_dict(copy.deepcopy(d))
    d["version"] = IMAGES_CONTRACT_VERSION
    d["images"] = [{**DEPTH, "colour": "red"}]
    with pytest.raises(ContractError, match=r"images\[0\]: unknown field\(s\) \['colour'\]"):
        contract_from_dict(d)
    del d["images"][0]["colour"], d["images"][0]["topic"]
    with pytest.raises(ContractError, match="missing required field 'topic'"):
        contract_from_dict(d)


def test_camera_info_intrinsics_are_judged_against_the_trained_ones():
    im = ImageInput(**DEPTH)
    assert im.intrinsics_error(32.0 * 1.04, 32.0, 31.5, 23.5, 64, 48) is None  # within 5 %
    assert "focal lengths" in im.intrinsics_error(32.0 * 1.06, 32.0, 31.5, 23.5, 64, 48)
    assert "principal point" in im.intrinsics_error(32.0, 32.0, 31.5 + 0.06 * 64, 23.5, 64, 48)
    assert "64x48" in im.intrinsics_error(32.0, 32.0, 31.5, 23.5, 128, 96)
