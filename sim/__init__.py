"""Batched simulation in torch (tasks, dynamics, randomization) and a pybullet reference.

Quaternions are ordered w, x, y, z everywhere (see tether.contract), rotating body -> world.
"""
