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


def test_windows_follow_the_state_stamps_not_the_tick_times(hover_parent, corrected_logs):
    """A runner whose state stream is faster than its control rate can tick on time with a state one
    robot period off (seen over ROS 2: 10 and 30 ms apart at 50 Hz): no identification window may span
    such a step, since the simulator predicts one control period per step."""
    import dataclasses

    from policies.hil.identify import _windows

    steps = _steps(hover_parent, corrected_logs[:1])
    dt = 1.0 / OnnxPolicy(hover_parent).contract.control_rate_hz
    w, burn_in = 3, 4
    clean = _windows(steps, dt, w, max_windows=10**6, seed=0, burn_in=burn_in)
    slipped = np.arange(50, len(steps) - 50, 40)  # these ticks acted on the robot state after theirs
    stamps = steps.state_t_s.copy()
    stamps[slipped] += 0.5 * dt
    starts = _windows(dataclasses.replace(steps, state_t_s=stamps), dt, w, max_windows=10**6, seed=0,
                      burn_in=burn_in)
    spans = starts[:, None] + np.arange(-burn_in, w + 1)  # the steps each window reads
    assert not np.isin(spans, slipped).any()
    # every window that reads no slipped step (and none beside it) survives
    untouched = clean[~np.isin(clean[:, None] + np.arange(-burn_in - 1, w + 2), slipped).any(1)]
    assert np.isin(untouched, starts).all() and len(starts) > 0.5 * len(clean)
