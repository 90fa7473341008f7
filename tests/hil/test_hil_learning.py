"""Learning must happen: fine-tuning on four corrected episodes of a seeded weak-motor twin turns a
policy that never holds 5 cm into one that holds on a measured share of starts from the logs alone (the
off-policy learner), and on nearly all in the simulator stage alone (the estimated gains); twin
validation from 20 seeded starts, judged by the operator's takeover rule."""

from __future__ import annotations

import time


def test_finetuning_improves_success_on_the_perturbed_twin(hover_parent, corrected_logs, perturbed_twin, tmp_path):
    from policies.hil.finetune import finetune

    t0 = time.perf_counter()
    report = finetune(hover_parent, corrected_logs, "hil_serl", tmp_path / "child", validate_twin=perturbed_twin,
                      sim_refine=None)
    assert report["sim_refine"] is None
    seconds = time.perf_counter() - t0
    parent, child = report["validation"]["parent"], report["validation"]["child"]
    print(f"\nhil_serl on {report['steps']} steps ({report['human_steps']} human): success "
          f"{parent['success_rate']:.2f} -> {child['success_rate']:.2f}, median max error "
          f"{parent['max_err_m_median'] * 100:.1f} -> {child['max_err_m_median'] * 100:.1f} cm; "
          f"finetune + export + validation {seconds:.1f} s")
    assert parent["success_rate"] <= 0.1, "the perturbation no longer defeats the parent: the test proves nothing"
    # Since the twin validation counts the operator's takeover (error held above takeover_m for the
    # reaction time, settling included: the loop's own rule), the logs-only child of this seed holds on
    # about a third of the starts, settling too slowly on the rest; the simulator stage (test below and
    # tests/hil/test_disturbances.py) is what brings the loop to >= 0.9. Here: a clear, measured gain.
    assert child["success_rate"] >= parent["success_rate"] + 0.25
    assert child["takeovers"] <= 0.75 * parent["takeovers"]
    assert child["max_err_m_median"] < 0.5 * parent["max_err_m_median"]
    assert child["crashes"] == 0


def test_simulator_stage_alone_fixes_the_parent(hover_parent, corrected_logs, perturbed_twin, tmp_path):
    """Refining the parent itself (no log learning) in the sim with the gains estimated from the logs."""
    import torch

    from policies.evaluation import task_cfg_from_contract
    from policies.hil.algorithms import FinetuneCfg, actor_from_onnx
    from policies.hil.dataset import load_logs
    from policies.hil.finetune import _checkpoint_payload, lineage, validate_on_twin
    from policies.hil.identify import estimate_rotor_gains
    from policies.hil.sim_refine import SimRefineCfg, refine_in_sim
    from policies.export import export_policy
    from tether.runtime import OnnxPolicy

    policy = OnnxPolicy(hover_parent)
    steps = load_logs(corrected_logs, policy.contract, set(lineage(policy.contract)), (0.0, 0.0, 1.0), policy)
    task_cfg = task_cfg_from_contract(hover_parent)
    est = estimate_rotor_gains(steps, task_cfg)
    parent = actor_from_onnx(policy.onnx_path, policy.contract)
    obs = torch.as_tensor(steps.observations(policy.contract))
    refined, rep = refine_in_sim(parent, task_cfg, est.gains, obs, SimRefineCfg(iterations=6))
    assert rep["cost_last"] < 0.7 * rep["cost_first"]
    assert rep["robot_anchor_steps"] == len(obs) and rep["sim_env_steps"] > 0
    torch.save(_checkpoint_payload(refined, policy.contract, FinetuneCfg(), {}), tmp_path / "ckpt.pt")
    export_policy(tmp_path / "ckpt.pt", tmp_path / "refined")
    before = validate_on_twin(hover_parent, perturbed_twin, 20)
    after = validate_on_twin(tmp_path / "refined", perturbed_twin, 20)
    print(f"\nsim stage alone: success {before['success_rate']:.2f} -> {after['success_rate']:.2f}, median max "
          f"error {before['max_err_m_median'] * 100:.1f} -> {after['max_err_m_median'] * 100:.1f} cm")
    assert before["success_rate"] <= 0.1 and after["success_rate"] >= 0.9
    assert after["max_err_m_median"] < 0.3 * before["max_err_m_median"]
