"""Learning must happen: fine-tuning on four corrected episodes of a seeded weak-motor twin turns a
policy that never holds 5 cm into one that does (twin validation from 20 seeded starts)."""

from __future__ import annotations

import time


def test_finetuning_improves_success_on_the_perturbed_twin(hover_parent, corrected_logs, perturbed_twin, tmp_path):
    from policies.hil.finetune import finetune

    t0 = time.perf_counter()
    report = finetune(hover_parent, corrected_logs, "hil_serl", tmp_path / "child", validate_twin=perturbed_twin)
    seconds = time.perf_counter() - t0
    parent, child = report["validation"]["parent"], report["validation"]["child"]
    print(f"\nhil_serl on {report['steps']} steps ({report['human_steps']} human): success "
          f"{parent['success_rate']:.2f} -> {child['success_rate']:.2f}, median max error "
          f"{parent['max_err_m_median'] * 100:.1f} -> {child['max_err_m_median'] * 100:.1f} cm; "
          f"finetune + export + validation {seconds:.1f} s")
    assert parent["success_rate"] <= 0.1, "the perturbation no longer defeats the parent: the test proves nothing"
    assert child["success_rate"] >= parent["success_rate"] + 0.6
    assert child["max_err_m_median"] < 0.5 * parent["max_err_m_median"]
    assert child["crashes"] == 0
