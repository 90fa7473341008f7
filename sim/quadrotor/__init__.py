from sim.quadrotor.dynamics import (QuadParams, QuadState, RateController, ctbr_to_rotor_cmd,
                                    hover_state, make_rate_controller, nominal_params, step)
from sim.quadrotor.presets import CRAZYFLIE_2X, GRAVITY, PRESETS, PX4_1KG, QuadrotorPreset

__all__ = ["QuadParams", "QuadState", "RateController", "ctbr_to_rotor_cmd", "hover_state",
           "make_rate_controller", "nominal_params", "step", "CRAZYFLIE_2X", "GRAVITY", "PRESETS",
           "PX4_1KG", "QuadrotorPreset"]
