"""The twin's obstacle world and camera without ROS: pybullet's own render of a column and a box at the
contract's mount and intrinsics against the analytic depth, REP 117 specials, a tilted body turning the
view, and a contact with an obstacle as a crash that stops the motors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from depth_policy import DEPTH_IMAGE
from hardware.twin import DigitalTwin, Obstacles, RotorCommand, TwinConfig
from tether_deploy.conversions import depth_msg_to_metres, fill_depth_image

H, W = DEPTH_IMAGE.height, DEPTH_IMAGE.width


@pytest.fixture
def twin_with(request):
    twins = []

    def make(**kw):
        t = DigitalTwin(TwinConfig(**kw))
        t.connect()
        twins.append(t)
        return t

    yield make
    for t in twins:
        t.disconnect()


def test_a_column_ahead_and_the_ground_below_at_their_analytic_depth(twin_with):
    x, r = 3.0, 0.3
    twin = twin_with(obstacles=Obstacles(cylinders=(x, 0.0, 0.0, 3.0, r)))
    d = twin.render_depth(DEPTH_IMAGE)
    cam = np.asarray(twin.true_state().pos_w) + np.asarray(DEPTH_IMAGE.mount_position_b_m)
    assert d.shape == (H, W) and d.dtype == np.float32
    assert float(d[H // 2, W // 2]) == pytest.approx(x - r - cam[0], abs=0.01)
    fx, fy, cx, cy = DEPTH_IMAGE.fx_fy_cx_cy_px
    v = H - 1  # the bottom row sees the ground: z-depth = height / ((v - cy) / fy)
    assert float(d[v, 0]) == pytest.approx(cam[2] / ((v - cy) / fy), rel=0.01)
    assert np.isposinf(d[0, :8]).all()  # the sky beside the column, beyond max_range_m


def test_too_near_is_minus_inf_and_16uc1_reads_it_as_no_data(twin_with):
    twin = twin_with(obstacles=Obstacles(boxes=(0.1, 0.0, 1.0, 0.02, 1.0, 1.0, 0.0)))  # a wall 5 cm ahead
    d = twin.render_depth(DEPTH_IMAGE)
    assert np.isneginf(d[H // 2, W // 2])
    msg = type("M", (), {})()
    msg.header = type("Hd", (), {})()
    fill_depth_image(msg, d, "16UC1")
    assert math.isnan(depth_msg_to_metres(msg)[H // 2, W // 2])


def test_the_view_turns_with_the_body(twin_with):
    twin = twin_with(obstacles=Obstacles(cylinders=(0.0, 3.0, 0.0, 3.0, 0.3)))  # to the left
    ahead = twin.render_depth(DEPTH_IMAGE)[H // 2, W // 2]
    yaw = math.pi / 2
    twin.reset((0.0, 0.0, 1.0), (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)))  # face +y
    turned = twin.render_depth(DEPTH_IMAGE)[H // 2, W // 2]
    assert np.isposinf(ahead) and turned == pytest.approx(3.0 - 0.3 - DEPTH_IMAGE.mount_position_b_m[0], abs=0.02)
    pitched = dataclasses.replace(DEPTH_IMAGE, mount_rpy_rad=(0.0, 0.5, 0.0))  # looking down: the ground
    assert twin.render_depth(pitched)[H // 2, W // 2] < 3.0


@pytest.mark.parametrize("ground", [0.0, None])
def test_touching_an_obstacle_is_a_crash(twin_with, ground):
    twin = twin_with(obstacles=Obstacles(cylinders=(1.0, 0.0, -1.0, 3.0, 0.2)), ground_z_m=ground)
    twin.reset((0.0, 0.0, 1.0), lin_vel_w=(2.0, 0.0, 0.0))
    for _ in range(200):
        twin.send(twin.hover_command)
        twin.advance()
        if twin.crash is not None:
            break
    assert twin.crash is not None and "hit the column at (1.00, 0.00) m" in twin.crash.reason, twin.crash
    assert twin.crash.pos_w[0] < 1.0 - 0.2
    sent = twin.send(twin.hover_command)  # motors stay off
    assert isinstance(sent, RotorCommand) and not sent.rotor_cmd.any()
