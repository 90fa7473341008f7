"""Pybullet reference physics for the quadrotor, its rate controller and closed-loop evaluation.

Torch-free on purpose (numpy + pybullet): the digital twin in hardware/ runs on it, and it checks the
batched torch simulator from outside (tests/sim/test_pybullet_crosscheck.py).
"""
