"""Image inputs on the robot side without ROS: decoding (32FC1 / 16UC1, row padding, byte order, REP 117
specials) and the runner core's checks (encoding, size, stamp age, camera_info), with a real contract-2.1
ONNX policy in onnxruntime whose action depends on the depth."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from depth_policy import DEPTH_IMAGE, write_depth_hover_policy
from tether.contract import ContractError
from tether_deploy.conversions import decode_depth, depth_msg_to_metres, fill_camera_info, fill_depth_image
from tether_deploy.runner_core import ImageFrame, RunnerConfig, RunnerCore, load_policy

H, W = DEPTH_IMAGE.height, DEPTH_IMAGE.width


def _msg():
    return SimpleNamespace(header=SimpleNamespace(frame_id=""), height=0, width=0, encoding="", is_bigendian=False,
                           step=0, data=b"")


def test_32fc1_round_trips_with_the_rep117_specials():
    d = np.random.default_rng(0).uniform(0.2, 9.0, (H, W)).astype(np.float32)
    d[0, 0], d[1, 1], d[2, 2] = np.inf, -np.inf, np.nan
    m = _msg()
    fill_depth_image(m, d, "32FC1")
    back = depth_msg_to_metres(m)
    assert back.dtype == np.float32 and back.shape == (H, W)
    np.testing.assert_array_equal(back, d)  # NaN == NaN for assert_array_equal


def test_16uc1_is_millimetres_and_zero_is_nan():
    mm = np.arange(H * W, dtype=np.uint16).reshape(H, W)  # the first pixel is 0: no data
    got = decode_depth("16UC1", W, H, 2 * W, False, mm.astype("<u2").tobytes())
    assert math.isnan(got[0, 0])
    np.testing.assert_allclose(got.reshape(-1)[1:], mm.reshape(-1)[1:] / 1000.0, rtol=1e-6)
    m = _msg()
    fill_depth_image(m, np.where(mm == 0, np.nan, mm / 1000.0), "16UC1")
    np.testing.assert_array_equal(np.isnan(depth_msg_to_metres(m)), mm == 0)


@pytest.mark.parametrize("encoding,dtype", [("32FC1", "f4"), ("16UC1", "u2")])
def test_row_padding_and_big_endian(encoding, dtype):
    vals = (np.arange(H * W).reshape(H, W) % 4000 + 1).astype(dtype)
    pad = 12  # bytes after each row
    raw = vals.astype(">" + dtype).view(np.uint8).reshape(H, -1)
    padded = np.concatenate([raw, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    got = decode_depth(encoding, W, H, raw.shape[1] + pad, True, padded.tobytes())
    expect = vals.astype(np.float32) / (1000.0 if encoding == "16UC1" else 1.0)
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_malformed_layouts_are_named():
    with pytest.raises(ValueError, match="step 10 bytes is shorter than a row"):
        decode_depth("32FC1", W, H, 10, False, bytes(4 * W * H))
    with pytest.raises(ValueError, match="data holds 100 bytes"):
        decode_depth("32FC1", W, H, 4 * W, False, bytes(100))
    with pytest.raises(ValueError, match="not a depth encoding"):
        decode_depth("mono8", W, H, W, False, bytes(W * H))


def test_camera_info_carries_the_contract_intrinsics():
    m = SimpleNamespace(header=SimpleNamespace(frame_id=""), width=0, height=0, distortion_model="", d=[], k=[],
                        r=[], p=[])
    fill_camera_info(m, W, H, *DEPTH_IMAGE.fx_fy_cx_cy_px)
    from tether_deploy.conversions import camera_info_intrinsics

    assert camera_info_intrinsics(m) == (*DEPTH_IMAGE.fx_fy_cx_cy_px, W, H)


# ----------------------------------------------------------------------------------- the core


@pytest.fixture(scope="module")
def depth_policy(tmp_path_factory):
    return load_policy(write_depth_hover_policy(tmp_path_factory.mktemp("depth")))


STATE = {"pos_w": np.array([0.0, 0.0, 1.0]), "quat_wxyz": np.array([1.0, 0.0, 0.0, 0.0]),
         "lin_vel_w": np.zeros(3), "ang_vel_b": np.zeros(3)}


def _frame(depth_m, t, encoding="32FC1", stamp_s=None, width=W, height=H):
    m = _msg()
    fill_depth_image(m, np.broadcast_to(np.float32(depth_m), (height, width)), encoding)
    return ImageFrame(m.encoding, m.width, m.height, m.step, m.is_bigendian, m.data,
                      t if stamp_s is None else stamp_s, t)


def _core(policy, **kw):
    core = RunnerCore(policy, RunnerConfig(check_stamps=True, **kw))
    core.set_state(STATE, 0.0)
    return core


def _tick(core, t):
    core.set_state(STATE, t)
    return core.tick(t, None, False, clock_s=t)


def test_the_policy_sees_the_image(depth_policy):
    core = _core(depth_policy)
    assert core.set_camera_info("depth", *DEPTH_IMAGE.fx_fy_cx_cy_px, W, H) is None
    actions = []
    for k, d in enumerate((0.5, 8.0)):
        t = 0.01 * (k + 1)
        assert core.set_image("depth", _frame(d, t)) is None
        r = _tick(core, t)
        assert r.source == "policy", r.mode
        actions.append(r.policy_action)
    assert actions[1][0] - actions[0][0] > 0.05, actions  # a far view commands more thrust than a near wall


@pytest.mark.parametrize("case,kind,text", [
    ("none", "no_image", "no image received yet"),
    ("encoding", "encoding", "encoding '16UC1', the policy takes '32FC1'"),
    ("size", "size", "32x24 px, the policy takes 64x48"),
    ("stale", "stale", "ms old > max_age_s 100 ms"),
    ("no_info", "no_camera_info", "no camera_info received yet"),
    ("intrinsics", "intrinsics", "focal lengths"),
])
def test_an_unusable_image_is_the_safe_behaviour_with_one_event(depth_policy, case, kind, text):
    core = _core(depth_policy)
    if case != "no_info":
        fx, fy, cx, cy = DEPTH_IMAGE.fx_fy_cx_cy_px
        core.set_camera_info("depth", fx * (1.5 if case == "intrinsics" else 1.0), fy, cx, cy, W, H)
    t = 0.2
    frame = {"encoding": lambda: _frame(2.0, t, encoding="16UC1"), "size": lambda: _frame(2.0, t, width=32, height=24),
             "stale": lambda: _frame(2.0, t, stamp_s=t - DEPTH_IMAGE.max_age_s - 0.05)}.get(case, lambda: _frame(2.0, t))
    if case != "none":
        core.set_image("depth", frame())
    core.drain_events()
    results = [_tick(core, t + 0.001 * k) for k in range(5)]
    for r in results:
        assert r.source == "safe" and r.policy_action is None and text in r.reason, r.mode
        assert r.mode.startswith("safe:land"), r.mode  # hold needs the policy: it degrades to a land
    events = [e for e in core.drain_events() if "image" in e[1]]
    assert len(events) == 1 and text in events[0][1] and f"image_{kind}" in events[0][1], events
    assert core.image_problems[kind] == 5 and text in core.last_image_problem
    # a fresh valid image (and camera_info) brings the policy back, said once
    core.set_camera_info("depth", *DEPTH_IMAGE.fx_fy_cx_cy_px, W, H)
    core.set_image("depth", _frame(2.0, 0.3))
    r = _tick(core, 0.3)
    assert r.source == "policy", r.mode
    assert any("images usable again after 5 ticks" in e[1] for e in core.drain_events())


def test_a_flickering_camera_is_logged_once_per_interval_and_counted_every_tick(depth_policy):
    from tether_deploy.runner_core import IMAGE_LOG_INTERVAL_S

    core = _core(depth_policy)
    core.set_camera_info("depth", *DEPTH_IMAGE.fx_fy_cx_cy_px, W, H)
    period, t, bad = 0.02, 1.0, 0
    while t < 1.0 + 2.5 * IMAGE_LOG_INTERVAL_S:
        stale = int(t / period) % 10 == 0  # every 10th image is late
        core.set_image("depth", _frame(2.0, t, stamp_s=t - 0.5 if stale else t))
        bad += _tick(core, t).source == "safe"
        t += period
    events = [e for e in core.drain_events() if "image" in e[1]]
    warns = [e for e in events if e[0] == "warn"]
    assert bad > 50 and core.image_problems["stale"] == bad
    assert len(warns) == 3, warns  # at 0, 5 and 10 s, not once per flicker
    assert len([e for e in events if "usable again" in e[1]]) == 3


def test_a_flat_policy_needs_no_image(linear_policy_dir):
    core = _core(load_policy(linear_policy_dir))
    assert core.images == {} and _tick(core, 0.01).source == "policy"


def test_a_swap_to_other_image_inputs_is_refused(depth_policy, tmp_path):
    other = load_policy(write_depth_hover_policy(tmp_path / "p16", encoding="16UC1"))
    core = _core(depth_policy)
    with pytest.raises(ContractError, match="image inputs differ"):
        core.offer_policy(other)
    assert dataclasses.replace(DEPTH_IMAGE, encoding="16UC1") == other.contract.images[0]


def test_before_the_first_usable_image_the_runner_waits(depth_policy):
    core = _core(depth_policy)
    assert "no image received yet" in core.images_waiting()
    core.set_image("depth", _frame(2.0, 0.1, encoding="16UC1"))
    assert "encoding '16UC1'" in core.images_waiting()
    core.set_image("depth", _frame(2.0, 0.1))
    assert "no camera_info received yet" in core.images_waiting()
    core.set_camera_info("depth", *DEPTH_IMAGE.fx_fy_cx_cy_px, W, H)
    assert core.images_waiting() is None
