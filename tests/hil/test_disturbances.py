"""Each twin disturbance, corrected by the scripted operator, identified from the logged flight alone:
a steady wind (10 % of the weight), an off-centre payload (20 % of the mass, 2 cm out), a motor at 60 %,
wind plus a weak motor; a healthy vehicle comes out healthy, and a gust that comes and goes (which the
steady model cannot express) is declared unpredictable, so finetune validates nothing on it. The slow
tests fine-tune and check the child on the true twin, and that the prediction made from the logs holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from hardware.twin import Payload, TwinConfig, WeakMotor, WindGust, with_policy_rate_gains
from policies.evaluation import task_cfg_from_contract
from policies.hil.dataset import load_logs
from policies.hil.finetune import lineage
from policies.hil.flight import EpisodeCfg, episode_starts, fly_corrected_episode
from policies.hil.identify import estimate_disturbance
from sim.quadrotor.presets import GRAVITY, PRESETS
from tether.runtime import OnnxPolicy

MASS = PRESETS["crazyflie2x"].mass_kg
WEIGHT = MASS * GRAVITY
SHORT = EpisodeCfg(settle_s=0.5, hold_s=4.5)
WIND = (0.1 * WEIGHT * 0.6, 0.1 * WEIGHT * 0.8, 0.0)  # 10 % of the weight, 53 deg from x
DISTURBANCES = {
    "wind": TwinConfig(wind_gust=WindGust(start_s=0.0, duration_s=1e9, force_w=WIND)),
    "payload": TwinConfig(payload=Payload(mass_kg=0.2 * MASS, pos_b=(0.0141, -0.0141, 0.0))),
    "weak_motor": TwinConfig(weak_motor=WeakMotor(index=1, gain=0.6)),
    "wind_weak_motor": TwinConfig(wind_gust=WindGust(0.0, 1e9, (-0.1 * WEIGHT, 0.0, 0.0)),
                                  weak_motor=WeakMotor(index=3, gain=0.7)),
}
BAR_NOT_REACHED: set[str] = set()
"""disturbances where one round does not yet reach success >= 0.9 (issue 14): none since the simulator
stage starts at the logged headings and holds the body rates (wind + weak motor held 3.7 cm of 5 before)"""
_CACHE: dict = {}


def _logs(name: str, twin_cfg: TwinConfig, parent, tmp_path_factory, n: int = 3, ep: EpisodeCfg = SHORT):
    """n corrected episodes of the parent on ``twin_cfg`` (seeded), cached per disturbance."""
    if name in _CACHE:
        return _CACHE[name]
    from policies.hil.loop import _operator_cfg
    from tether_deploy.operator_core import ScriptedOperator

    policy = OnnxPolicy(parent)
    twin = with_policy_rate_gains(twin_cfg, policy.contract.action)
    operator = ScriptedOperator(_operator_cfg(policy.contract))
    out = tmp_path_factory.mktemp(f"logs_{name}")
    bags = []
    for k, start in enumerate(episode_starts(n, ep, seed=11)):
        fly_corrected_episode(policy, str(parent), twin, operator, start, ep, out / f"episode{k}")
        bags.append(out / f"episode{k}")
    steps = load_logs(bags, policy.contract, set(lineage(policy.contract)), ep.goal_w, policy)
    _CACHE[name] = (bags, steps, twin)
    return _CACHE[name]


def _identify(name, hover_parent, tmp_path_factory):
    _, steps, _ = _logs(name, DISTURBANCES.get(name, TwinConfig()), hover_parent, tmp_path_factory)
    return estimate_disturbance(steps, task_cfg_from_contract(hover_parent))


def _assert_force(est, true_w, tol_share=0.2):
    assert "force" in est.model, est.describe()
    f, t = np.asarray(est.force_w[:2]), np.asarray(true_w[:2])
    assert np.linalg.norm(f - t) < tol_share * np.linalg.norm(t), (est.force_w, true_w)
    assert all(s < 0.2 * np.linalg.norm(t) for s in est.force_sigma_n[:2])  # an uncertainty that means something


def test_steady_wind_is_identified_as_a_force(hover_parent, tmp_path_factory):
    est = _identify("wind", hover_parent, tmp_path_factory)
    _assert_force(est, WIND)
    assert est.predictable and est.explained["force"] > 0.5, est.why
    assert "mass" not in est.model and "com" not in est.model


def test_payload_is_identified_as_mass_at_its_position(hover_parent, tmp_path_factory):
    est = _identify("payload", hover_parent, tmp_path_factory)
    true = DISTURBANCES["payload"].payload
    assert {"mass", "com"} <= set(est.model), est.describe()
    assert abs(est.added_mass_kg - true.mass_kg) < 0.25 * true.mass_kg
    np.testing.assert_allclose(est.payload_pos_b[:2], true.pos_b[:2], atol=0.005)
    assert "rotor_gains" not in est.model or np.ptp(est.gains) < 0.05  # not mimicked by rotor gains
    assert est.predictable, est.why


def test_weak_motor_is_identified_as_rotor_gains(hover_parent, tmp_path_factory):
    est = _identify("weak_motor", hover_parent, tmp_path_factory)
    true = np.ones(4)
    true[1] = 0.6
    assert "rotor_gains" in est.model and est.weakest()[0] == 1
    np.testing.assert_allclose(est.gains, true, atol=0.03)
    assert "force" not in est.model or np.linalg.norm(est.force_w[:2]) < 0.02 * WEIGHT
    assert est.predictable and est.explained_total > 0.9


def test_wind_and_weak_motor_are_identified_together(hover_parent, tmp_path_factory):
    est = _identify("wind_weak_motor", hover_parent, tmp_path_factory)
    _assert_force(est, DISTURBANCES["wind_weak_motor"].wind_gust.force_w)
    assert "rotor_gains" in est.model and est.weakest()[0] == 3
    assert abs(est.gains[3] / np.mean(np.delete(est.gains, 3)) - 0.7) < 0.04, est.gains
    assert est.predictable, est.why


def test_healthy_vehicle_comes_out_nominal(hover_parent, tmp_path_factory):
    est = _identify("healthy", hover_parent, tmp_path_factory)
    assert np.linalg.norm(est.force_w[:2]) < 0.02 * WEIGHT and abs(est.added_mass_kg) < 0.05 * MASS
    np.testing.assert_allclose(est.gains, np.ones(4), atol=0.05)


def test_a_gust_the_model_cannot_express_is_declared_unpredictable(hover_parent, tmp_path_factory, tmp_path):
    """A 2.5 s gust of 15 % of the weight in the middle of each episode: no steady force, mass or gain
    explains it; the estimate says so, and finetune neither validates on a twin built from it nor runs
    the simulator stage on it."""
    from policies.hil.algorithms import FinetuneCfg
    from policies.hil.finetune import finetune
    from policies.hil.sim_refine import SimRefineCfg

    gust = TwinConfig(wind_gust=WindGust(start_s=1.5, duration_s=2.5, force_w=(0.15 * WEIGHT, 0.0, 0.0)))
    bags, steps, twin = _logs("gust", gust, hover_parent, tmp_path_factory)
    est = estimate_disturbance(steps, task_cfg_from_contract(hover_parent))
    assert not est.predictable, est.to_dict()
    assert est.unexplained_share > 0.1 and "cannot predict" in est.why
    report = finetune(hover_parent, bags, "hil_serl", tmp_path / "child", FinetuneCfg(critic_warmup_steps=20, updates=20),
                      validate_twin=twin, validate_estimated=True, sim_refine=SimRefineCfg(iterations=1, num_envs=8),
                      progress=lambda s: None)
    assert report["prediction"]["status"] == "cannot predict" and report["prediction"]["predicted_success"] is None
    assert report["validation"] is None and report["sim_refine"] is None
    assert (tmp_path / "child" / "policy.onnx").is_file()  # the child exists; nothing is claimed of it


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DISTURBANCES))
def test_one_round_of_corrections_fixes_each_disturbance(name, hover_parent, tmp_path_factory, tmp_path):
    """Fine-tune on the corrected episodes; the child holds 5 cm on the TRUE twin from 20 seeded starts,
    and the success the finetune predicted on the twin it built from the logs is within 0.15 of that."""
    from policies.hil.finetune import finetune, validate_on_twin

    bags, _, twin = _logs(name, DISTURBANCES[name], hover_parent, tmp_path_factory)
    report = finetune(hover_parent, bags, "hil_serl", tmp_path / "child", validate_twin=twin,
                      validate_estimated=True, progress=lambda s: None)
    assert report["prediction"]["status"] == "predicted", report["prediction"]
    before = validate_on_twin(hover_parent, twin, 20)
    after = validate_on_twin(tmp_path / "child", twin, 20)
    print(f"\n{name}: success {before['success_rate']:.2f} -> {after['success_rate']:.2f} on the true twin, "
          f"predicted {report['prediction']['predicted_success']:.2f}")
    assert before["success_rate"] <= 0.1, "the disturbance no longer defeats the parent: the test proves nothing"
    # whatever the child reached, the prediction made from the logs alone must hold: the gate cannot fool itself
    assert abs(report["prediction"]["predicted_success"] - after["success_rate"]) <= 0.15
    if name in BAR_NOT_REACHED:
        # a disturbance one round does not fix yet: do no harm is what must hold
        assert after["success_rate"] >= before["success_rate"]
    else:
        assert after["success_rate"] >= 0.9


@pytest.mark.slow
def test_corrections_alone_fix_what_the_model_cannot_express(hover_parent, tmp_path_factory, tmp_path):
    """The issue's failure, reproduced and mended: identification limited to rotor gains cannot express a
    steady wind, so finetune says 'cannot predict', runs no simulator stage and validates nothing; the
    child learns from the operator's corrections alone and holds 5 cm on the true windy twin."""
    from policies.hil.finetune import finetune, validate_on_twin

    bags, _, twin = _logs("wind", DISTURBANCES["wind"], hover_parent, tmp_path_factory)
    report = finetune(hover_parent, bags, "hil_serl", tmp_path / "child", validate_twin=twin, validate_estimated=True,
                      progress=lambda s: None, identify_groups=("rotor_gains",))
    assert report["prediction"]["status"] == "cannot predict" and report["perturbation"]["unexplained_share"] > 0.5
    assert report["validation"] is None and report["sim_refine"] is None
    before = validate_on_twin(hover_parent, twin, 20)
    after = validate_on_twin(tmp_path / "child", twin, 20)
    print(f"\nwind, logs only: success {before['success_rate']:.2f} -> {after['success_rate']:.2f} on the true twin")
    assert before["success_rate"] <= 0.1
    assert after["success_rate"] >= before["success_rate"] + 0.6
