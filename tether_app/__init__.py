"""The application layer: the ``tether`` command line, the demo and the commands that drive training and
deployment together. It may import everything (torch, sim/, policies/, the robot side); nothing in
tether/, hardware/, sim/, policies/, calibration/ or ros2_ws/ imports it."""
