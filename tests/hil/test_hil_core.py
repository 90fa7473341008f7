"""Buffer routing, RLIF labels, log validation (missing topics, truncation, foreign policies) and the
provenance chain from parent to child."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from policies.hil.buffers import Transitions, route_hil_serl, sample_symmetric
from policies.hil.dataset import LogError, _decode_odometry, load_log, read_messages, replay_match
from policies.hil.rlif import rlif_rewards, takeover_onsets
from tether.contract import load_policy_dir
from tether.runtime import OnnxPolicy


def _transitions(human: list[int]) -> Transitions:
    n = len(human)
    z = torch.zeros(n)
    return Transitions(obs=torch.arange(n, dtype=torch.float32)[:, None], actions=torch.zeros(n, 1), rewards=z,
                       next_obs=torch.zeros(n, 1), dones=z, human=torch.tensor(human, dtype=torch.float32), sim=z)


def test_hil_serl_routing_and_symmetric_sampling():
    t = _transitions([0, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    demo, online = route_hil_serl(t)
    assert sorted(demo.data.obs[:, 0].tolist()) == [1.0, 2.0, 9.0]  # human steps only
    assert len(online) == 10  # every step, human ones included
    batch, is_demo = sample_symmetric(demo, online, 256, torch.Generator().manual_seed(0))
    assert is_demo.sum() == 128
    assert torch.all(batch.human[is_demo] == 1)
    assert 0 < batch.human[~is_demo].mean() < 1  # the online half mixes both


def test_learner_sampler_draws_the_rows_sample_symmetric_draws():
    from policies.hil.algorithms import _symmetric_sampler

    t = _transitions([0, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    t.rewards = torch.arange(10, dtype=torch.float32)
    demo, online = route_hil_serl(t)
    for d in (demo, type(demo)()):  # with and without a demo buffer (rlif samples online only)
        ref, ref_demo = sample_symmetric(d, online, 64, torch.Generator().manual_seed(3))
        fast, fast_demo = _symmetric_sampler(t, d, online, 64, torch.Generator().manual_seed(3))()
        assert torch.equal(ref.obs, fast.obs) and torch.equal(ref.rewards, fast.rewards)
        assert torch.equal(ref_demo, fast_demo)


def test_fast_odometry_decoding_matches_the_generic_decoder(corrected_logs):
    fast, generic = read_messages(corrected_logs[0]), read_messages(corrected_logs[0], fast_odometry=False)
    assert len(fast["/state/odom"]) == len(generic["/state/odom"]) > 500
    for (t_a, a), (t_b, b) in zip(fast["/state/odom"], generic["/state/odom"]):
        assert t_a == t_b and type(a).__name__ == "SimpleNamespace"  # the fast path was taken
        assert (a.header.stamp.sec, a.header.stamp.nanosec, a.header.frame_id, a.child_frame_id) == \
            (b.header.stamp.sec, b.header.stamp.nanosec, b.header.frame_id, b.child_frame_id)
        for x, y in ((a.pose.pose.position, b.pose.pose.position), (a.twist.twist.linear, b.twist.twist.linear),
                     (a.twist.twist.angular, b.twist.twist.angular)):
            assert (x.x, x.y, x.z) == (y.x, y.y, y.z)
        o, q = a.pose.pose.orientation, b.pose.pose.orientation
        assert (o.w, o.x, o.y, o.z) == (q.w, q.x, q.y, q.z)
        assert list(a.pose.covariance) == list(b.pose.covariance) and list(a.twist.covariance) == list(b.twist.covariance)
    assert _decode_odometry(b"\x00\x00\x00\x00" + bytes(700)) is None  # big-endian: the generic decoder's


def test_rlif_labels_penalize_the_step_before_each_takeover():
    iv = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0], dtype=bool)
    ep = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    assert takeover_onsets(iv, ep).nonzero()[0].tolist() == [2, 5]  # step 7 starts episode 1 in human hands
    r = rlif_rewards(iv, ep)
    assert r.nonzero()[0].tolist() == [1, 4] and np.all(r[[1, 4]] == -1.0)


def test_log_extraction_replays_the_parent(hover_parent, corrected_logs):
    policy = OnnxPolicy(hover_parent)
    sha = policy.contract.provenance["onnx_sha256"]
    step = load_log(corrected_logs[0], policy.contract, {sha})
    assert 500 <= len(step) <= 550 and step.human_controlled.any() and (~step.intervention).any()
    assert np.all(step.executed[step.human_controlled] == step.human_action[step.human_controlled])
    assert replay_match(step, policy) > 0.99


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_topic_truncated_and_foreign_logs_are_refused_and_nothing_written(hover_parent, corrected_logs,
                                                                                   tmp_path):
    from mcap.writer import Writer

    from policies.hil.finetune import finetune

    _, contract = load_policy_dir(hover_parent)
    out = tmp_path / "child"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    truncated = _copy(corrected_logs[0], tmp_path / "truncated")
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])

    missing = tmp_path / "missing"
    missing.mkdir()
    with open(missing / "missing_0.mcap", "wb") as f:
        w = Writer(f)
        w.start(profile="ros2")
        w.finish()

    from linear_policy import write_linear_hover_policy

    from hardware.twin import TwinConfig
    from policies.hil.flight import EpisodeCfg, fly_corrected_episode
    from tether_deploy.operator_core import ScriptedOperator

    linear = write_linear_hover_policy(tmp_path / "linear")  # another policy, another contract (rotor, 100 Hz)
    foreign = tmp_path / "foreign"
    fly_corrected_episode(OnnxPolicy(linear), str(linear), TwinConfig(), ScriptedOperator(),
                          {"pos_w": np.array([0.0, 0.0, 1.0]), "lin_vel_w": np.zeros(3)},
                          EpisodeCfg(settle_s=0.2, hold_s=0.5), foreign)

    for log, why in ((truncated, "truncated"), (missing, "missing or empty"), (foreign, "different policy contract")):
        with pytest.raises(LogError, match=why) as e:
            finetune(hover_parent, [corrected_logs[1], log], "hil_serl", out, force=True)
        assert str(log) in str(e.value)
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(FileExistsError):
        finetune(hover_parent, corrected_logs[:1], "hg_dagger", out)


def test_provenance_chain_parent_to_child_to_grandchild(hover_parent, corrected_logs, tmp_path):
    from policies.hil.algorithms import FinetuneCfg
    from policies.hil.finetune import finetune, lineage

    quick = FinetuneCfg(critic_warmup_steps=20, updates=20)
    _, parent = load_policy_dir(hover_parent)
    from policies.hil.sim_refine import SimRefineCfg

    finetune(hover_parent, corrected_logs[:1], "hg_dagger", tmp_path / "child", quick,
             sim_refine=SimRefineCfg(iterations=1, num_envs=16, segments_per_rollout=1))
    _, child = load_policy_dir(tmp_path / "child")
    p = child.provenance["parent"]
    assert p["onnx_sha256"] == parent.provenance["onnx_sha256"] and p["method"] == "hg_dagger"
    assert [lg["path"] for lg in p["logs"]] == [str(corrected_logs[0].resolve())]
    assert len(p["logs"][0]["mcap_sha256"]) == 64
    assert int(np.argmin(p["perturbation"]["gains"])) == 2  # what the logs say about the vehicle, kept
    assert p["sim_refine"]["sim_env_steps"] == 16 * 25 and p["sim_refine"]["robot_anchor_steps"] > 0  # labelled
    # the grandchild may learn from the parent's logs: they were recorded by an ancestor
    finetune(tmp_path / "child", corrected_logs[:2], "rlif", tmp_path / "grandchild", quick, sim_refine=None)
    _, grandchild = load_policy_dir(tmp_path / "grandchild")
    assert lineage(grandchild)[1:] == [child.provenance["onnx_sha256"], parent.provenance["onnx_sha256"]]


def test_logs_carry_the_runners_goal(hover_parent, tmp_path):
    """The goal in force is in the log (/runner/goal, latched): loading needs no --goal, and the rebuilt
    observations replay the logged policy actions only with the logged goal."""
    from hardware.twin import TwinConfig
    from policies.hil.finetune import lineage
    from policies.hil.flight import EpisodeCfg, episode_starts, fly_corrected_episode
    from hardware.twin import with_policy_rate_gains
    from policies.hil.loop import _operator_cfg
    from tether_deploy.operator_core import ScriptedOperator

    policy = OnnxPolicy(hover_parent)
    ep = EpisodeCfg(settle_s=0.5, hold_s=1.0, goal_w=(0.4, -0.3, 1.3))
    fly_corrected_episode(policy, str(hover_parent), with_policy_rate_gains(TwinConfig(init_pos_w=ep.goal_w), policy.contract.action),
                          ScriptedOperator(_operator_cfg(policy.contract)), episode_starts(1, ep, seed=5)[0], ep,
                          tmp_path / "ep")
    step = load_log(tmp_path / "ep", policy.contract, set(lineage(policy.contract)), goal_w=(0.0, 0.0, 1.0))
    np.testing.assert_allclose(step.goal_w, np.tile(ep.goal_w, (len(step), 1)))
    assert replay_match(step, policy) > 0.95
