"""Compiled kernels cached on disk between runs (issue 13): every module of sim/ that calls torch.compile
(the fused quadrotor step, the fused training env, the depth camera) points inductor's FX graph and AOT
autograd caches at one folder first, so a configuration compiles once per machine (tens of seconds for
the training env, minutes for the depth camera cold) and later runs load the kernels in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TORCHINDUCTOR_CACHE_DIR"
"""inductor's own setting: a user who set it keeps their folder"""


def use_kernel_cache() -> Path:
    """Point inductor's on-disk cache at ``~/.cache/tether/inductor`` (unless TORCHINDUCTOR_CACHE_DIR is
    set): its default, /tmp/torchinductor_<user>, does not survive a reboot. Returns the folder.

    Call it before the first compile of the process: inductor fixes its folder at first use."""
    return Path(os.environ.setdefault(ENV_VAR, str(Path.home() / ".cache" / "tether" / "inductor")))
