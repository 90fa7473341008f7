"""Quadrotor model. ``presets`` re-exports the torch-free tether.presets; ``dynamics`` is torch."""
