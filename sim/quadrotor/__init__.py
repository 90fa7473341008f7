"""Quadrotor model. ``presets`` is torch-free (the pybullet twin reads it); ``dynamics`` is torch."""
