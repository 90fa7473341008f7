"""Tether: sim-to-real control stack. This package holds the torch-free pieces shared by the
training side and the robot side (the policy contract, observation building, ONNX runtime) and the
`tether` command line."""

__version__ = "0.1.0"
