"""Shared synthetic data with known ground truth, made once per test session (rendering and the
simulated flight are the slow parts)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calibration.boards import BoardCfg
from calibration.synthetic import CameraModel, FlightCfg, render_views, simulate_flight_log
from sim.quadrotor.presets import CRAZYFLIE_2X

CAMERA = CameraModel()  # 640x480, fx 610, fy 606, strong barrel distortion (k1 -0.26)
CHARUCO = BoardCfg(kind="charuco")
CHESSBOARD = BoardCfg(kind="chessboard")

# The vehicle that flies differs from the nominal preset the controller (and the identification's
# starting guess) uses, so the test shows that the truth is recovered, not the prior.
TRUE_VEHICLE = dataclasses.replace(
    CRAZYFLIE_2X, name=CRAZYFLIE_2X.name, kf_n_per_rpm2=CRAZYFLIE_2X.kf_n_per_rpm2 * 0.88,
    km_nm_per_rpm2=CRAZYFLIE_2X.km_nm_per_rpm2 * 1.12, tau_up_s=0.04, tau_down_s=0.055,
    drag_n_s_per_m=(0.065, 0.06, 0.07))
FLIGHT_SECONDS = 60.0


@pytest.fixture(scope="session")
def charuco_views():
    images, poses = render_views(CAMERA, CHARUCO, 18, seed=11)
    return [(f"charuco_{i:02d}.png", im) for i, im in enumerate(images)], poses


@pytest.fixture(scope="session")
def chessboard_views():
    images, poses = render_views(CAMERA, CHESSBOARD, 16, seed=12)
    return [(f"chess_{i:02d}.png", im) for i, im in enumerate(images)], poses


@pytest.fixture(scope="session")
def flight_columns() -> dict[str, np.ndarray]:
    """60 s of noisy flight of TRUE_VEHICLE, flown as 6 x 10 s segments batched in one simulation."""
    return simulate_flight_log(TRUE_VEHICLE, seconds=FLIGHT_SECONDS, seed=3, cfg=FlightCfg(segments=6),
                               controller_preset=CRAZYFLIE_2X)


@pytest.fixture(scope="session")
def true_vehicle():
    return TRUE_VEHICLE
