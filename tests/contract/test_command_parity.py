"""sim/ and the deploy side agree on what a command means: an action the simulator turns into thrust and
body rates (or rotor speeds) means the same after it went over ROS as the runner publishes it
(sensor_msgs/JointState named by the contract, CDR and back) and through the robot side's mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState

from sim.randomization import RandomizationCfg
from sim.tasks import make_env
from tether.contract import PolicyContract, contract_from_dict
from tether_deploy.actuation import ActionToCommand
from tether_deploy.conversions import command_names, command_values, fill_command


def _contract(env) -> PolicyContract:
    c = PolicyContract(task="hover", control_rate_hz=env.cfg.control_rate_hz, action_latency_s=0.0,
                       observation=env.slices, action=env.action_spec(),
                       provenance={"onnx_sha256": "0" * 64, "opset": 17, "created": "test", "config_hash": "test"})
    return contract_from_dict(json.loads(json.dumps(c.to_dict())))


@pytest.mark.parametrize("action_space", ["ctbr", "rotor"])
def test_a_command_means_the_same_in_the_sim_and_over_ros(action_space):
    env = make_env("hover", num_envs=8, seed=3, action_space=action_space, randomization=RandomizationCfg.nominal())
    spec = _contract(env).action
    names = command_names(spec)
    assert len(names) == spec.dim == len(spec.output_units)
    actions = torch.rand(8, spec.dim, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    rotor_cmd, ctbr = env.action_to_command(actions)
    v = env.cfg.vehicle
    to_command = ActionToCommand(spec, v.rotor_pos_b, v.rotor_spin)
    for i, a in enumerate(actions.numpy()):
        msg = JointState()
        fill_command(msg, names, a, "base_link")
        wire = deserialize_message(serialize_message(msg), JointState)
        cmd = to_command(command_values(wire, names))
        if action_space == "ctbr":
            assert names[0].startswith("collective_thrust") and spec.output_units[0] == "N"
            assert cmd.thrust_n == pytest.approx(float(ctbr.thrust_n[i, 0]), rel=1e-5)
            np.testing.assert_allclose(cmd.body_rates_b, ctbr.rates_b[i].numpy(), rtol=1e-5, atol=1e-6)
        else:
            assert all(n.startswith(f"rotor_{k}_") for k, n in enumerate(names))
            np.testing.assert_allclose(cmd.rotor_cmd, rotor_cmd[i].numpy(), rtol=1e-5, atol=1e-6)
