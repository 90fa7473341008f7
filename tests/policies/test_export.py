"""Export: ONNX parity with the torch actor, the contract file round-trips and matches the env, the
normalizer lives in the graph, and the runtime refuses corrupt or inconsistent policies naming why."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from policies.checkpoint import load_checkpoint
from policies.export import env_from_checkpoint, model_from_checkpoint
from policies.models import DeployedActor
from sim.tasks import make_env
from tether.contract import ContractError, load_contract, sha256_file
from tether.runtime import OnnxPolicy


def ort_session(policy_dir):
    return ort.InferenceSession(str(policy_dir / "policy.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def torch_actor(trained_hover):
    return DeployedActor(model_from_checkpoint(load_checkpoint(trained_hover.checkpoint))).eval()


@pytest.fixture(scope="module")
def recorded_obs(trained_hover, torch_actor) -> np.ndarray:
    """Observations of the policy flying in its own (randomized, noisy) training env."""
    env = env_from_checkpoint(load_checkpoint(trained_hover.checkpoint), num_envs=64, seed=99)
    obs = env.reset()["policy"]
    out = []
    with torch.no_grad():
        for _ in range(40):
            out.append(obs.numpy().copy())
            obs = env.step(torch_actor(obs))[0]["policy"]
    return np.concatenate(out)


@pytest.fixture
def policy_copy(trained_hover, tmp_path):
    """A scratch copy of the exported policy directory to damage."""
    dst = tmp_path / "policy"
    shutil.copytree(trained_hover.policy_dir, dst)
    return dst


def test_onnx_matches_torch(trained_hover, torch_actor, recorded_obs):
    assert 0.0 <= trained_hover.parity_err <= 1e-5

    rng = np.random.default_rng(7)
    random_obs = (rng.normal(size=(1000, recorded_obs.shape[1])) * 3.0).astype(np.float32)
    session = ort_session(trained_hover.policy_dir)
    for name, obs in (("random", random_obs), ("recorded", recorded_obs)):
        got = session.run(None, {"obs": obs})[0]
        with torch.no_grad():
            expected = torch_actor(torch.from_numpy(obs)).numpy()
        assert got.shape == expected.shape == (len(obs), 4)
        err = float(np.abs(got - expected).max())
        assert err <= 1e-5, f"{name} observations: max |onnx - torch| = {err:.2e}"
        # parity must be tested where the outputs are not all clipped to the bounds
        inside = np.abs(expected) < 0.999
        assert inside.mean() > 0.5, f"{name}: only {inside.mean():.0%} of outputs are unclipped"
    # the runtime wrapper gives the same numbers, batched and single
    policy = OnnxPolicy(trained_hover.policy_dir)
    np.testing.assert_allclose(policy(recorded_obs[:5]), session.run(None, {"obs": recorded_obs[:5]})[0], atol=1e-7)
    np.testing.assert_allclose(policy(recorded_obs[0]), policy(recorded_obs[:1])[0], atol=1e-7)


def test_contract_file_round_trips_and_hash_matches(trained_hover):
    path = trained_hover.policy_dir / "policy.json"
    on_disk = json.loads(path.read_text())
    contract = load_contract(path)
    # the parsed contract writes back exactly what is on disk (JSON has lists where Python has tuples)
    assert json.loads(json.dumps(contract.to_dict())) == on_disk
    digest = hashlib.sha256((trained_hover.policy_dir / "policy.onnx").read_bytes()).hexdigest()
    assert contract.provenance["onnx_sha256"] == digest
    ckpt = load_checkpoint(trained_hover.checkpoint)
    assert contract.task == "hover"
    assert contract.provenance["config_hash"] == ckpt["config_hash"]
    assert contract.provenance["iteration"] == ckpt["iteration"]
    assert contract.obs_dim == ckpt["obs_dim"] and contract.action.dim == ckpt["action_dim"]


def test_contract_matches_the_training_env(trained_hover):
    contract = load_contract(trained_hover.policy_dir / "policy.json")
    env = make_env("hover", trained_hover.env_cfg, num_envs=1)
    assert contract.observation == env.slices
    assert contract.action == env.action_spec()
    assert contract.control_rate_hz == env.cfg.control_rate_hz
    assert contract.action.hover_action == pytest.approx(env.hover_action.tolist())
    lo, hi = env.cfg.randomization.latency_s
    assert lo <= contract.action_latency_s <= hi


def test_normalizer_is_inside_the_graph(trained_hover, torch_actor, recorded_obs):
    norm = torch_actor.obs_normalizer
    # a trained normalizer is far from the identity, otherwise this test proves nothing
    assert float(norm.mean.abs().max()) > 0.1 and float((norm.var.sqrt() - 1).abs().max()) > 0.1
    contract = load_contract(trained_hover.policy_dir / "policy.json")
    assert contract.normalization["in_graph"] is True
    np.testing.assert_allclose(contract.normalization["mean"], norm.mean.numpy(), rtol=1e-6)

    raw = recorded_obs[:256]
    got = ort_session(trained_hover.policy_dir).run(None, {"obs": raw})[0]
    with torch.no_grad():
        x = torch.from_numpy(raw)
        normalized = torch.clamp(torch_actor.actor(norm(x)) + torch_actor.action_bias, -1, 1).numpy()
        unnormalized = torch.clamp(torch_actor.actor(x) + torch_actor.action_bias, -1, 1).numpy()
    np.testing.assert_allclose(got, normalized, atol=1e-5)
    assert float(np.abs(got - unnormalized).max()) > 1e-2, "the graph ignores the normalizer"


def _rewrite_contract(policy_dir, edit):
    path = policy_dir / "policy.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("damage", ["header", "truncated"])
def test_corrupt_onnx_with_matching_hash_is_refused(policy_copy, damage):
    onnx = policy_copy / "policy.onnx"
    data = bytearray(onnx.read_bytes())
    if damage == "header":
        for i in range(16):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    onnx.write_bytes(bytes(data))
    # the contract is updated to the damaged file, so the hash check passes and onnxruntime must object
    _rewrite_contract(policy_copy, lambda d: d["provenance"].__setitem__("onnx_sha256", sha256_file(onnx)))
    with pytest.raises(ContractError, match="cannot load"):
        OnnxPolicy(policy_copy)


def test_changed_onnx_with_stale_hash_is_refused(policy_copy):
    onnx = policy_copy / "policy.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the weights: still loads, silently different
    onnx.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="sha256"):
        OnnxPolicy(policy_copy)


def test_export_writes_contract_2_0_from_the_training_config(trained_hover):
    """The exported file is 2.0 and its sections are the training config's (tests/contract checks each
    claim against the simulator itself)."""
    from policies.export import contract_sections
    from sim.randomization import latency_step_range

    contract = load_contract(trained_hover.policy_dir / "policy.json")
    cfg = make_env("hover", trained_hover.env_cfg, num_envs=1).cfg
    assert contract.version == "2.0" and contract.missing == ()
    assert {k: getattr(contract, k) for k in ("vehicle", "latency", "controller", "frames")} == \
        contract_sections(cfg)
    assert contract.vehicle.name == cfg.vehicle.name and contract.vehicle.mass_kg == cfg.vehicle.mass_kg
    assert (contract.latency.min_steps, contract.latency.max_steps) == latency_step_range(cfg.randomization,
                                                                                          cfg.control_dt)
    assert contract.action_latency_s == pytest.approx(contract.latency.mean_s)
    assert contract.controller.rate_kp == cfg.rate_kp and contract.controller.inertia_kg_m2 == \
        cfg.vehicle.inertia_kg_m2


def _delete(path: str):
    def edit(d):
        *parents, leaf = path.replace("[", ".").replace("]", "").split(".")
        for p in parents:
            d = d[int(p)] if p.isdigit() else d[p]
        del d[leaf]
    return edit


@pytest.mark.parametrize("field", ["control_rate_hz", "observation[0].unit", "provenance.onnx_sha256",
                                   "action.type", "version"])
def test_contract_missing_field_is_refused_by_name(policy_copy, field):
    _rewrite_contract(policy_copy, _delete(field))
    with pytest.raises(ContractError) as e:
        OnnxPolicy(policy_copy)
    assert repr(field) in str(e.value), f"message {str(e.value)!r} should name {field!r}"


def test_contract_shape_mismatch_is_refused(policy_copy):
    def drop_last_slice(d):
        d["observation"].pop()
        d.pop("obs_dim")
    _rewrite_contract(policy_copy, drop_last_slice)
    with pytest.raises(ContractError, match="obs_dim"):
        OnnxPolicy(policy_copy)


def test_intact_copy_loads(policy_copy):
    """The refusals above come from the damage, not from copying the directory."""
    policy = OnnxPolicy(policy_copy)
    assert policy(np.zeros(policy.contract.obs_dim, dtype=np.float32)).shape == (policy.contract.action.dim,)


@pytest.fixture(scope="module")
def calibrated_export(tmp_path_factory):
    """A policy trained (one tiny iteration) on a calibrated vehicle: task cfg vehicle_params."""
    import dataclasses

    from policies.export import export_policy
    from policies.ppo import PPOCfg, train
    from sim.quadrotor.presets import CRAZYFLIE_2X

    root = tmp_path_factory.mktemp("calibrated")
    vehicle = dataclasses.replace(CRAZYFLIE_2X, name="cf_unit7", mass_kg=0.031, tau_up_s=0.04)
    env = make_env("hover", num_envs=16, vehicle_params=vehicle)
    ckpt = train(env, "hover", PPOCfg(num_iterations=1, num_steps=4, num_minibatches=1, update_epochs=1),
                 root / "run", progress=False)
    policy_dir, contract, err = export_policy(ckpt, root / "policy")
    return vehicle, env, policy_dir, contract, err


def test_calibrated_vehicle_round_trips_through_the_contract(calibrated_export):
    """The contract's task_cfg rebuilds exactly the training config, calibrated vehicle included (the
    evaluation and the twin fly the vehicle from it)."""
    from policies.evaluation import task_cfg_from_contract

    vehicle, env, policy_dir, contract, err = calibrated_export
    assert err <= 1e-5
    assert contract.action == env.action_spec()
    assert contract.action.max_rpm == vehicle.max_rpm
    rebuilt = task_cfg_from_contract(policy_dir)
    assert rebuilt.vehicle == vehicle, "the contract's task_cfg does not rebuild the calibrated vehicle"
    assert rebuilt == env.cfg


def test_contract_vehicle_is_the_calibrated_unit(calibrated_export):
    vehicle, _, _, contract, _ = calibrated_export
    v = contract.vehicle
    assert (v.name, v.mass_kg, v.tau_up_s, v.tau_down_s) == ("cf_unit7", 0.031, 0.04, vehicle.tau_down_s)


def test_provenance_names_the_calibrated_vehicle(calibrated_export):
    vehicle, _, _, contract, _ = calibrated_export
    assert contract.provenance["preset"] == vehicle.name, (
        f"provenance names preset {contract.provenance['preset']!r}, but the policy was trained on {vehicle.name!r}")
