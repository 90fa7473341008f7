"""Calibration: camera intrinsics, hand-eye, quadrotor system identification -> one calibration file per
physical unit, which sim/ turns into a preset and randomization ranges (``calibration.to_sim``).

Modules: ``boards`` (ChArUco/chessboard layout, detection, board files), ``camera``, ``handeye`` (+ ``poses``,
the robot pose files), ``sysid`` (+ ``flightlog``, and ``baglog`` for bags, what ``tether deploy --record``
writes included), ``files`` (the versioned YAML; numpy + PyYAML only), ``to_sim``, ``synthetic``
(rendered boards, hand-eye stations and simulated flights with known ground truth), ``cli``.
Nothing is imported here, so that reading a calibration file does not pull in OpenCV or torch.
"""
