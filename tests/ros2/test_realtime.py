"""realtime.make_realtime: SCHED_FIFO on every thread of the process where permitted, a clear message
(and normal scheduling) where not; the hot-swap loader thread goes back to normal scheduling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tether_deploy.realtime import make_realtime

PKG = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "tether_deploy"

CHILD = r"""
import json, os, threading, time
from tether_deploy.realtime import make_background, make_realtime
ready, stop = threading.Event(), threading.Event()
def worker():  # a thread that exists before the switch, like the DDS receive threads
    ready.set(); stop.wait()
t = threading.Thread(target=worker); t.start(); ready.wait()
msg = make_realtime(20)
tids = [int(x) for x in os.listdir("/proc/self/task")]
policies = {tid: os.sched_getscheduler(tid) for tid in tids}
bg = []
def loader():
    make_background(); bg.append(os.sched_getscheduler(0))
b = threading.Thread(target=loader); b.start(); b.join()
stop.set(); t.join()
print(json.dumps({"msg": msg, "policies": list(policies.values()), "fifo": os.SCHED_FIFO,
                  "other": os.SCHED_OTHER, "loader": bg[0]}))
"""


def test_realtime_applies_to_all_threads_or_says_why_not():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(PKG), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    if "refused" in r["msg"]:  # no CAP_SYS_NICE: the process goes on under normal scheduling
        assert "CAP_SYS_NICE" in r["msg"] and set(r["policies"]) == {r["other"]}
    else:
        assert r["msg"].startswith("SCHED_FIFO priority 20")
        assert len(r["policies"]) >= 2 and set(r["policies"]) == {r["fifo"]}  # the worker thread too
        assert r["loader"] == r["other"]  # the loader thread hands itself back


def test_realtime_priority_out_of_range_is_an_error_and_zero_is_off():
    with pytest.raises(ValueError, match="realtime_priority must be in"):
        make_realtime(1000)
    assert make_realtime(0).startswith("normal scheduling")
