"""The vehicle presets live in the torch-free core (tether.presets), where the robot side can read them;
this module re-exports them so that ``sim.quadrotor.presets`` keeps working for the simulator."""

from tether.presets import (CRAZYFLIE_2X, GRAVITY, PRESETS, PX4_1KG, QuadrotorPreset,  # noqa: F401
                            check_rotor_gain)
