"""Identifying the perturbation from intervention logs: the weak motor is found from the logged flight
alone, a healthy vehicle comes out healthy, and too little flight is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from policies.evaluation import task_cfg_from_contract
from policies.hil.dataset import load_logs
from policies.hil.finetune import lineage
from policies.hil.identify import estimate_rotor_gains
from tether.runtime import OnnxPolicy


def _steps(parent, logs):
    policy = OnnxPolicy(parent)
    return load_logs(logs, policy.contract, set(lineage(policy.contract)), (0.0, 0.0, 1.0), policy)


def test_weak_motor_is_identified_from_the_logs(hover_parent, corrected_logs, perturbed_twin):
    est = estimate_rotor_gains(_steps(hover_parent, corrected_logs), task_cfg_from_contract(hover_parent))
    true = np.ones(4)
    true[perturbed_twin.weak_motor.index] = perturbed_twin.weak_motor.gain
    assert est.weakest()[0] == perturbed_twin.weak_motor.index
    np.testing.assert_allclose(est.gains, true, atol=0.02)
    assert est.residual_rms < 0.3 * est.residual_rms_nominal  # the estimate explains the flight


def test_healthy_vehicle_comes_out_healthy(hover_parent, tmp_path):
    from hardware.twin import TwinConfig
    from policies.hil.flight import EpisodeCfg, episode_starts, fly_corrected_episode
    from hardware.twin import with_policy_rate_gains
    from policies.hil.loop import _operator_cfg
    from tether_deploy.operator_core import ScriptedOperator

    policy = OnnxPolicy(hover_parent)
    twin = with_policy_rate_gains(TwinConfig(), policy.contract.action)
    ep = EpisodeCfg(settle_s=0.5, hold_s=3.0)
    fly_corrected_episode(policy, str(hover_parent), twin, ScriptedOperator(_operator_cfg(policy.contract)),
                          episode_starts(1, ep, seed=3)[0], ep, tmp_path / "ep")
    est = estimate_rotor_gains(_steps(hover_parent, [tmp_path / "ep"]), task_cfg_from_contract(hover_parent))
    np.testing.assert_allclose(est.gains, np.ones(4), atol=0.02)


def test_too_little_flight_is_a_clear_error(hover_parent, corrected_logs):
    steps = _steps(hover_parent, corrected_logs[:1])
    with pytest.raises(ValueError, match="usable 3-step windows"):
        estimate_rotor_gains(steps.select(np.arange(len(steps)) < 30), task_cfg_from_contract(hover_parent))
