"""The correction loop on task `navigate` (issue 11 item 5): the scripted operator takes over near
obstacles, the logs carry the depth images, the student fine-tuned on them flies better than its parent
on the fields where the operator had to step in.

The parent (tests/fixtures/nav_parent, made by tests/fixtures/make_nav_parent.py) is a small depth student
distilled (policies.distill, DAgger) from a blind teacher that flies straight at the goal
(tests/policies/nav_policy.ScriptedNav with its camera covered): it meets the obstacles in its way, which
is what the operator corrects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FIELDS, OBSTACLES, SEED = 8, 12, 5


@pytest.fixture(scope="module")
def nav_parent(tmp_path_factory) -> Path:
    # committed (tests/fixtures/make_nav_parent.py distills it: about two minutes of CPU), copied so that no
    # test writes into the repository
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("nav_parent") / "policy"
    shutil.copytree(REPO / "tests" / "fixtures" / "nav_parent", work)
    return work


def test_operator_takes_over_when_close_and_hands_back_when_clear():
    from policies.hil.navigate import NavOperator, NavOperatorCfg

    cfg = NavOperatorCfg()
    op = NavOperator(cfg)
    level, pos, goal, away = [1.0, 0.0, 0.0, 0.0], np.array([0.0, 0.0, 1.5]), np.array([8.0, 0.0, 1.5]), np.array([0.0, 1.0])
    dt, t, pressed = 0.02, 0.0, []
    clear = cfg.handback_clearance_m + 0.5
    for clearance in [clear] * 10 + [0.2] * 20 + [clear] * 40:
        axes, buttons = op.step(t, pos, level, np.zeros(3), goal, (clearance, clearance), away)
        pressed.append(buttons[cfg.flying.joy.button_deadman] == 1)
        if pressed[-1]:
            engaged_axes = axes
        t += dt
    pressed = np.array(pressed)
    assert not pressed[:10].any() and pressed[10 + int(cfg.reaction_s / dt) + 1:30].all()
    assert not pressed[-5:].any() and op.takeovers == 1  # handed back once clear for handback_hold_s
    # steering away (+y, to the left) and on: the roll stick asks for a left (negative roll) lean
    roll = engaged_axes[cfg.flying.joy.axis_roll] * (-1 if cfg.flying.joy.invert_roll else 1)
    assert roll < 0, engaged_axes


def test_corrections_make_a_student_that_flies_better_where_the_operator_stepped_in(nav_parent, tmp_path):
    from policies.hil.dataset import load_log, tick_images
    from policies.hil.navigate import finetune_student, fly_corrected_fields
    from tether.contract import load_policy_dir

    _, contract = load_policy_dir(nav_parent)
    corrected = fly_corrected_fields(nav_parent, FIELDS, OBSTACLES, tmp_path / "logs", seed=SEED)
    stepped_in = corrected["takeovers"] > 0
    assert stepped_in.sum() >= 2, corrected["takeovers"]  # the blind parent meets obstacles the operator avoids
    logs = sorted((tmp_path / "logs").glob("field*"))
    assert len(logs) == FIELDS
    # the images went through the log: at every tick the depth the policy saw, fresh
    step = load_log(logs[int(np.argmax(stepped_in))], contract, {contract.provenance["onnx_sha256"]})
    img, age = tick_images(logs[int(np.argmax(stepped_in))], contract.images[0], step.t_s)
    assert img.shape[1:] == (1, *contract.images[0].shape[1:]) and np.all(age <= contract.images[0].max_age_s)
    assert step.intervention.any() and np.isfinite(step.human_action[step.intervention]).all()

    report = finetune_student(nav_parent, logs, tmp_path / "child")
    _, child = load_policy_dir(tmp_path / "child")
    assert child.images == contract.images and child.observation == contract.observation
    assert child.provenance["parent"]["onnx_sha256"] == contract.provenance["onnx_sha256"]
    assert report["human_steps"] > 0 and report["replay_match"] > 0.9

    parent_alone = fly_corrected_fields(nav_parent, FIELDS, OBSTACLES, None, operator_cfg=None, seed=SEED)
    child_alone = fly_corrected_fields(tmp_path / "child", FIELDS, OBSTACLES, None, operator_cfg=None, seed=SEED)
    collision = 1  # policies.nav_eval.OUTCOMES
    p_hits = int((parent_alone["outcome"][stepped_in] == collision).sum())
    c_hits = int((child_alone["outcome"][stepped_in] == collision).sum())
    p_clear = float(parent_alone["min_clearance_m"][stepped_in].mean())
    c_clear = float(child_alone["min_clearance_m"][stepped_in].mean())
    assert p_hits > 0, parent_alone["outcome"]  # the scenes are ones the parent fails alone
    assert c_hits < p_hits and c_clear > p_clear, (p_hits, c_hits, p_clear, c_clear)
