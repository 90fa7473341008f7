"""Batched depth cameras by analytic ray casting against primitive scenes (ground, spheres, vertical
cylinders, yawed boxes and walls), for all envs at once on any torch device.

- :mod:`sim.camera.config`: intrinsics (pinhole or a camera_info / calibration file), mount, range
  limits, randomization; the frame conventions (REP 103 optical frame) are stated there;
- :mod:`sim.camera.scene`: scenes as padded primitive tensors with validity masks;
- :mod:`sim.camera.raycast`: the intersections and the per-tile culling;
- :mod:`sim.camera.depth`: :class:`DepthCamera`, sensor effects, pooling;
- :mod:`sim.camera.pybullet_depth`: the same scenes in pybullet and its own camera (torch-free).
"""
