"""Checkpoint selection by evaluation: a checkpoint is scored in torch exactly as its exported ONNX graph flies
the same class vehicles, the best of the run is recorded, and only checkpoints of the run named in run.json
are candidates."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from policies.checkpoint import CheckpointError, load_checkpoint, write_run_file
from policies.evaluation import task_cfg_from_contract
from policies.select import BEST_FILE, SelectCfg, best_checkpoint, rank_key, score_checkpoint, select_best
from policies.sweep import run_sweep

CFG = SelectCfg(draws=8, seed=7, nominal_starts=8)


def _copy_run(trained_hover, dst):
    dst.mkdir()
    for p in trained_hover.checkpoints:
        shutil.copy(p, dst / p.name)
    shutil.copy(trained_hover.run_dir / "run.json", dst / "run.json")
    return dst


def test_score_in_torch_is_the_exported_graph_on_the_same_vehicles(trained_hover):
    ckpt = load_checkpoint(trained_hover.checkpoint)
    mine = score_checkpoint(ckpt, CFG)
    task_cfg = task_cfg_from_contract(trained_hover.policy_dir)
    onnx = run_sweep(trained_hover.policy_dir, task_cfg, CFG.sweep(), ("tether",))["tether"]["random"]
    assert mine["num_starts"] == onnx["num_starts"] == CFG.draws
    assert mine["successes"] == onnx["successes"]
    nominal = mine["nominal"]
    assert nominal["num_starts"] == CFG.nominal_starts and nominal["required_successes"] == 8  # ceil(0.99 * 8)
    assert nominal["passed"] == (nominal["successes"] >= 8)
    if mine["successes"]:
        assert mine["steady_err_m_median"] == pytest.approx(onnx["steady_err_m_median"], abs=1e-4)


def test_select_records_the_best_checkpoint_of_its_own_run(trained_hover, tmp_path):
    run = _copy_run(trained_hover, tmp_path / "run")
    # a stale checkpoint of another run, numbered past the run's own: never a candidate
    stale = load_checkpoint(trained_hover.checkpoint)
    stale["run_id"] = "another-run"
    stale["iteration"] = 999
    torch.save(stale, run / "model_00999.pt")

    best = select_best(run, CFG)
    record = json.loads((run / BEST_FILE).read_text())
    names = [c["checkpoint"] for c in record["candidates"]]
    assert names == [p.name for p in trained_hover.checkpoints], "every checkpoint of the run, none other"
    scores = [score_checkpoint(load_checkpoint(run / n), CFG) for n in names]
    for c, s in zip(record["candidates"], scores):
        assert (c["successes"], c["steady_err_m_median"]) == (s["successes"], s["steady_err_m_median"])
    keys = [rank_key(s) for s in scores]
    top = max(keys)
    assert rank_key(next(c for c in record["candidates"] if c["checkpoint"] == best.name)) == top
    assert best.name == names[max(i for i, k in enumerate(keys) if k == top)], "ties go to the later checkpoint"
    assert best_checkpoint(run) == best

    # a new run in the folder: its run.json names another run, so the old record is not used
    write_run_file(run, "a-new-run", trained_hover.task)
    assert best_checkpoint(run) is None
    with pytest.raises(CheckpointError, match="no checkpoint of run a-new-run"):
        select_best(run, CFG)


def test_export_of_a_selected_run_folder_takes_its_best_checkpoint(trained_hover, tmp_path):
    """`tether export RUN` exports the checkpoint best.json names (provenance says which); --latest the last."""
    from tether_app.cli import main

    run = _copy_run(trained_hover, tmp_path / "run")
    first = trained_hover.checkpoints[0]
    record = {"run_id": json.loads((run / "run.json").read_text())["run_id"], "best": first.name}
    (run / BEST_FILE).write_text(json.dumps(record))  # as select_best writes it, naming an early checkpoint
    assert main(["export", str(run), "--out", str(tmp_path / "best")]) == 0
    iteration = load_checkpoint(first)["iteration"]
    assert json.loads((tmp_path / "best" / "policy.json").read_text())["provenance"]["iteration"] == iteration
    assert main(["export", str(run), "--latest", "--out", str(tmp_path / "last")]) == 0
    last = load_checkpoint(trained_hover.checkpoints[-1])["iteration"]
    assert last != iteration
    assert json.loads((tmp_path / "last" / "policy.json").read_text())["provenance"]["iteration"] == last


def test_tether_train_of_a_vehicle_class_task_records_its_best_checkpoint(tmp_path, monkeypatch):
    """`tether train hover_robust` selects after training (a tiny run, 4 held-out vehicles)."""
    import policies.select as select
    from tether_app.cli import main

    monkeypatch.setitem(select.SELECTION, "hover_robust", SelectCfg(draws=4, seed=7))
    run = tmp_path / "run"
    assert main(["train", "hover_robust", "--num-envs", "2", "--iterations", "2", "--set", "ppo.save_interval=1",
                 "--run-dir", str(run)]) == 0
    record = json.loads((run / BEST_FILE).read_text())
    assert [c["checkpoint"] for c in record["candidates"]] == ["model_00001.pt", "model_00002.pt"]
    assert record["run_id"] == json.loads((run / "run.json").read_text())["run_id"]
    assert best_checkpoint(run) == run / record["best"]
    assert all(c["num_starts"] == 4 for c in record["candidates"])


def test_select_refuses_an_unreadable_record(tmp_path):
    (tmp_path / BEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        best_checkpoint(tmp_path)
    assert best_checkpoint(tmp_path / "nothing-here") is None
    with pytest.raises(ValueError, match="draws"):
        SelectCfg(draws=0)
    # the nominal gate outranks the class: a checkpoint that fails the acceptance's vehicle is not shipped while
    # another passes, however many more class vehicles it holds
    assert rank_key({"successes": 120, "steady_err_m_median": 0.005, "nominal": {"passed": False}}) < rank_key(
        {"successes": 90, "steady_err_m_median": 0.01, "nominal": {"passed": True}})
    with pytest.raises(ValueError, match="nominal_required"):
        SelectCfg(nominal_required=1.5)
    none_held = rank_key({"successes": 0, "steady_err_m_median": None})
    assert none_held < rank_key({"successes": 0, "steady_err_m_median": 0.05}) < rank_key(
        {"successes": 0, "steady_err_m_median": 0.01}) < rank_key({"successes": 1, "steady_err_m_median": 0.04})
