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


# inductor's C++ kernels reach Python through a small CPython extension whose entry calls the kernel with
# the GIL held (torch 2.13: "kernel({}); Py_RETURN_NONE;", {} the parsed arguments). Rewritten, the
# arguments are still parsed with the GIL held (a generic lambda's arguments are evaluated before its
# body), then the loop runs without it, so Python threads each running compiled kernels on their own
# slice of a batch run on separate cores (sim.camera.depth.DepthCamera(workers=N)).
_HELD_ENTRY = "kernel({}); Py_RETURN_NONE;"
_RELEASED_ENTRY = ("[&](auto&&... a) {{ Py_BEGIN_ALLOW_THREADS kernel(a...); Py_END_ALLOW_THREADS }}({}); "
                   "Py_RETURN_NONE;")


def release_gil_in_cpu_kernels() -> bool:
    """Make every inductor CPU kernel compiled or loaded from now on in this process run without the GIL.
    True when in effect; False (nothing changed) on a torch whose kernel entry is not the one above, where
    threads still give correct results but no speed-up. The kernels touch no Python object, and the cache
    keys follow the source, so kernels built before stay valid beside the new ones."""
    from torch._inductor import codecache

    cache = getattr(codecache, "CppPythonBindingsCodeCache", None)
    entry = getattr(cache, "call_entry_function", None)
    if entry == _RELEASED_ENTRY:
        return True
    if entry != _HELD_ENTRY:
        return False
    cache.call_entry_function = _RELEASED_ENTRY
    return True
