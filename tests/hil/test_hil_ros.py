"""Dataset extraction from a real MCAP written by the recorder node, with the runner, the twin (weak
motor) and the scripted operator node as real processes over DDS."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from tether.runtime import OnnxPolicy

_spec = importlib.util.spec_from_file_location("ros2_conftest", str(
    __import__("pathlib").Path(__file__).resolve().parents[1] / "ros2" / "conftest.py"))
ros2_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ros2_conftest)


@pytest.fixture
def launcher():
    lch = ros2_conftest.Launcher(ros2_conftest.fresh_domain_id())
    yield lch
    lch.stop_all()


def test_recorder_log_of_a_corrected_flight_becomes_steps(launcher, hover_parent, tmp_path):
    from policies.hil.dataset import load_log, replay_match
    from policies.hil.loop import _operator_cfg

    policy = OnnxPolicy(hover_parent)
    op = _operator_cfg(policy.contract)
    bag = tmp_path / "bag"
    rec = launcher.start("recorder_node", {"output": str(bag)})
    time.sleep(1.5)
    launcher.start("operator_node", {"goal_w": [0.0, 0.0, 1.0], "full_stick_rate_rad_s": list(op.full_stick_rate_rad_s)})
    twin = launcher.start("twin_node", {"policy_dir": str(hover_parent), "weak_motor.index": 2,
                                        "weak_motor.gain": 0.7, "init_pos_w": [0.0, 0.0, 1.0]})
    runner = launcher.start("runner_node", {"policy_dir": str(hover_parent), "autostart": True,
                                            "max_state_age_periods": 10.0, "goal_w": [0.0, 0.0, 1.0]})
    time.sleep(12.0)
    twin.stop()
    runner.stop()
    assert rec.stop() == 0, rec.output()

    sha = {policy.contract.provenance["onnx_sha256"]}
    raw = replay_match(load_log(bag, policy.contract, sha), policy)
    step = load_log(bag, policy.contract, sha, policy=policy)
    match = replay_match(step, policy)
    print(f"\nrecorded {len(step)} steps, {step.intervention.mean():.3f} under the operator, replay match "
          f"{raw:.3f} by arrival order, {match:.3f} realigned")
    assert len(step) > 200
    assert step.intervention.any(), "the operator never took over from the parent on the weak-motor twin"
    assert np.isfinite(step.human_action[step.intervention]).all()
    faults = [ln for ln in runner.output().splitlines() if "state" in ln and "WARN" in ln]
    assert match > 0.9, f"observations rebuilt from the log do not reproduce the policy's logged actions; {faults}"


def test_logs_recorded_before_commands_were_stamped_still_load(hover_parent, corrected_logs, tmp_path):
    """The same flight with its commands as the old unstamped std_msgs/Float32MultiArray gives the same
    steps (aligned by the recorder's log times instead of the stamps)."""
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray

    from policies.hil.dataset import load_log
    from tether_deploy.bag import BagWriter, _msg_class

    src = next(corrected_logs[0].glob("*.mcap"))
    legacy = BagWriter(tmp_path / "legacy", chunk_interval_s=1e9)
    with open(src, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            data = message.data
            if channel.topic.startswith("/cmd/"):
                cmd = deserialize_message(data, JointState)
                data = serialize_message(Float32MultiArray(data=[float(x) for x in cmd.position]))
                cls = Float32MultiArray
            else:
                cls = _msg_class(schema.name)
            if channel.topic not in legacy._topics:
                legacy.add_topic(channel.topic, cls, channel.metadata.get("offered_qos_profiles", ""))
            legacy.write(channel.topic, message.log_time, data)
    legacy.close()

    policy = OnnxPolicy(hover_parent)
    sha = {policy.contract.provenance["onnx_sha256"]}
    new, old = (load_log(p, policy.contract, sha) for p in (corrected_logs[0], tmp_path / "legacy"))
    assert len(new) == len(old) > 100
    for name in ("executed", "policy_action", "human_action", "pos_w", "intervention"):
        np.testing.assert_allclose(getattr(old, name).astype(float), getattr(new, name).astype(float),
                                   atol=1e-6, err_msg=name)
