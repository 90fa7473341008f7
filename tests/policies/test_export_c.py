"""Onboard export (policies/export_c.py): the generated C, compiled with the system compiler, computes what
onnxruntime computes on the same policy.onnx, says the contract's facts, and refuses what it must."""

from __future__ import annotations

import ctypes
import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from policies.export_c import (TOLERANCE, CPolicy, OnboardError, OnboardMismatch, compile_shared, export_c,
                               find_compiler, flight_observations, random_observations, verify)
from tether.actions import action_map
from tether.contract import load_policy_dir, sha256_file
from tether.runtime import OnnxPolicy

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hover_policy"

if find_compiler() is None:  # loud, not silent: the onboard export cannot be checked without one
    pytest.fail("no C compiler on PATH (cc, gcc, clang): tests/policies/test_export_c.py needs one", pytrace=False)


@pytest.fixture(scope="module")
def fixture_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("onboard")
    return export_c(FIXTURE, out), out


@pytest.fixture(scope="module")
def fixture_lib(fixture_export, tmp_path_factory):
    exp, out = fixture_export
    _, contract = load_policy_dir(FIXTURE)
    lib = compile_shared(exp.c_path, tmp_path_factory.mktemp("lib") / "libtp.so", extra=(f"-I{out}",))
    return CPolicy(lib, "tether_policy", contract.obs_dim, contract.action.dim), contract


def test_export_verifies_against_onnxruntime(fixture_export):
    exp, _ = fixture_export
    assert exp.c_path.is_file() and exp.h_path.is_file()
    assert exp.max_abs_err <= TOLERANCE
    assert exp.n_checked > 1024  # random observations and a pybullet flight


def test_c_matches_onnxruntime_on_a_flight(fixture_lib):
    c_policy, contract = fixture_lib
    obs = np.concatenate([flight_observations(FIXTURE, duration_s=1.0, num_drones=3, seed=7),
                          random_observations(contract, 256, seed=3)])
    want = OnnxPolicy(FIXTURE)(obs)
    got = c_policy(obs)
    assert np.abs(got - want).max() <= TOLERANCE
    # not vacuous: the outputs move over the observations and most are inside the clip
    assert want.std(axis=0).min() > 1e-3
    assert np.mean(np.abs(want) < 1.0) > 0.5


def test_header_states_the_contract(fixture_export, fixture_lib):
    exp, _ = fixture_export
    c_policy, contract = fixture_lib
    defines = dict(re.findall(r"^#define (\w+) (\S+)", exp.h_path.read_text(), flags=re.M))

    def num(key: str) -> float:
        return float(defines[key].strip("()").rstrip("f"))

    assert defines["TETHER_POLICY_ONNX_SHA256"].strip('"') == sha256_file(FIXTURE / "policy.onnx")
    assert defines["TETHER_POLICY_CONTRACT_VERSION"].strip('"') == contract.version
    assert int(defines["TETHER_POLICY_OBS_DIM"]) == contract.obs_dim
    assert int(defines["TETHER_POLICY_ACTION_DIM"]) == contract.action.dim
    assert num("TETHER_POLICY_CONTROL_RATE_HZ") == contract.control_rate_hz
    for s in contract.observation:
        assert int(defines[f"TETHER_POLICY_OBS_{s.name.upper()}_OFFSET"]) == s.offset
        assert int(defines[f"TETHER_POLICY_OBS_{s.name.upper()}_LEN"]) == s.length
    assert num("TETHER_POLICY_MAX_THRUST_N") == pytest.approx(contract.action.max_thrust_n, rel=1e-7)
    # the C mapping to physical units is tether.actions' mapping
    to_ctbr = c_policy.lib.tether_policy_to_ctbr
    f_p = ctypes.POINTER(ctypes.c_float)
    to_ctbr.argtypes = [f_p, f_p, f_p]
    amap = action_map(contract.action)
    for a in np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype(np.float32):
        thrust, rates = np.zeros(1, np.float32), np.zeros(3, np.float32)
        to_ctbr(a.ctypes.data_as(f_p), thrust.ctypes.data_as(f_p), rates.ctypes.data_as(f_p))
        want_thrust, want_rates = amap.to_ctbr(a)
        assert thrust[0] == pytest.approx(want_thrust, rel=1e-6)
        np.testing.assert_allclose(rates, want_rates, rtol=1e-6)


def test_nonfinite_observation_is_refused(fixture_lib):
    c_policy, contract = fixture_lib
    obs = np.zeros(contract.obs_dim, np.float32)
    obs[contract.slice("ang_vel_b").offset] = np.nan
    action = np.full(contract.action.dim, 7.0, np.float32)
    f_p = ctypes.POINTER(ctypes.c_float)
    status = c_policy.step(obs.ctypes.data_as(f_p), action.ctypes.data_as(f_p))
    assert status == -1
    assert np.all(action == 7.0)  # untouched: the firmware keeps its safe behaviour
    with pytest.raises(OnboardError, match="returned -1"):
        c_policy(obs[None])


def test_diverging_c_is_refused(fixture_export, tmp_path):
    exp, out = fixture_export
    shutil.copy(exp.h_path, tmp_path / exp.h_path.name)
    source = exp.c_path.read_text()
    # change the first weight of the first layer by 1e-3 (a float literal after the matrix declaration)
    head, tail = source.split("actor_0_weight", 1)
    m = re.search(r"\{\s*\{\s*\(?(-?[0-9.e-]+)f\)?", tail)
    value = float(m.group(1))
    tail = tail[:m.start(1)] + repr(value + 1e-3) + tail[m.end(1):]
    bad = tmp_path / exp.c_path.name
    bad.write_text(head + "actor_0_weight" + tail)
    _, contract = load_policy_dir(FIXTURE)
    with pytest.raises(OnboardMismatch, match="differs from onnxruntime"):
        verify(bad, FIXTURE, random_observations(contract, 512))


def test_refuses_to_overwrite_without_force(fixture_export):
    exp, out = fixture_export
    before = exp.c_path.read_text()
    with pytest.raises(FileExistsError, match="pass force"):
        export_c(FIXTURE, out)
    assert exp.c_path.read_text() == before
    again = export_c(FIXTURE, out, force=True, recorded_obs=random_observations(load_policy_dir(FIXTURE)[1], 8))
    assert again.max_abs_err <= TOLERANCE


def _fresh_policy(policy_dir: Path, module, action_type: str = "ctbr") -> None:
    """policy.onnx of ``module`` (exported as policies/export.py does) + the fixture's contract, made a rotor
    contract when asked, with the new file's sha256."""
    import torch

    from tether.actions import ActionMap
    from tether.contract import load_contract, save_contract

    contract = load_contract(FIXTURE / "policy.json")
    policy_dir.mkdir()
    torch.onnx.export(module, (torch.zeros(1, contract.obs_dim),), str(policy_dir / "policy.onnx"),
                      input_names=["obs"], output_names=["actions"],
                      dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17, dynamo=False)
    action = contract.action
    if action_type == "rotor":
        action = dataclasses.replace(action, type="rotor", max_thrust_n=0.0, body_rate_limits_rad_s=(0.0, 0.0, 0.0),
                                     rate_kp=(0.0, 0.0, 0.0), hover_action=())
        action = dataclasses.replace(action, hover_action=tuple(ActionMap(action).hover_action(0.027).tolist()))
    provenance = dict(contract.provenance, onnx_sha256=sha256_file(policy_dir / "policy.onnx"))
    save_contract(dataclasses.replace(contract, action=action, provenance=provenance), policy_dir / "policy.json")


@pytest.mark.parametrize("act, action_type", [("Tanh", "ctbr"), ("ReLU", "rotor")])
def test_other_activations_sizes_and_actions(act, action_type, tmp_path):
    """A fresh MLP (another activation, other widths, a non-trivial normalizer; a rotor contract) exported
    as policies/export.py does, then to C: the translation follows the graph, not one architecture."""
    import torch
    from torch import nn

    from policies.models import ActorCritic, DeployedActor, mlp

    torch.manual_seed(0)
    _, contract = load_policy_dir(FIXTURE)
    model = ActorCritic(contract.obs_dim, contract.action.dim)
    model.actor = mlp(contract.obs_dim, (48, 32, 16), contract.action.dim, act=getattr(nn, act))
    with torch.no_grad():
        model.obs_normalizer.mean.copy_(torch.randn(contract.obs_dim))
        model.obs_normalizer.var.copy_(torch.rand(contract.obs_dim) * 4 + 0.1)
    policy_dir = tmp_path / "policy"
    _fresh_policy(policy_dir, DeployedActor(model).eval(), action_type)
    exp = export_c(policy_dir, tmp_path / "onboard")
    assert exp.max_abs_err <= TOLERANCE
    source, header = exp.c_path.read_text(), exp.h_path.read_text()
    assert ("tanhf(" in source) == (act == "Tanh") and ("expf(" in source) is False
    assert f'TETHER_POLICY_ACTION_TYPE "{action_type}"' in header
    if action_type == "rotor":  # the C mapping and layout are tether.actions' and the contract's
        _, rotor_contract = load_policy_dir(policy_dir)
        lib = ctypes.CDLL(str(compile_shared(exp.c_path, tmp_path / "libtp.so", extra=(f"-I{exp.c_path.parent}",))))
        f_p = ctypes.POINTER(ctypes.c_float)
        lib.tether_policy_to_rotor_fraction.argtypes = [f_p, f_p]
        a = np.array([-1.2, -0.5, 0.3, 1.0], np.float32)
        fraction = np.zeros(4, np.float32)
        lib.tether_policy_to_rotor_fraction(a.ctypes.data_as(f_p), fraction.ctypes.data_as(f_p))
        np.testing.assert_allclose(fraction, action_map(rotor_contract.action).to_rotor_fraction(a), rtol=1e-6)
        spins = (ctypes.c_int * 4).in_dll(lib, "tether_policy_rotor_spin")
        assert list(spins) == [r.spin for r in rotor_contract.action.rotors]
        pos = (ctypes.c_float * 12).in_dll(lib, "tether_policy_rotor_pos_b_m")
        np.testing.assert_allclose(np.reshape(list(pos), (4, 3)), [r.pos_b for r in rotor_contract.action.rotors],
                                   rtol=1e-6)


def test_unsupported_graph_is_refused(tmp_path):
    import torch
    from torch import nn

    class Odd(nn.Module):
        def forward(self, obs):
            return torch.sin(obs[:, :4])

    policy_dir = tmp_path / "policy"
    _fresh_policy(policy_dir, Odd())
    with pytest.raises(OnboardError, match="does not translate"):
        export_c(policy_dir, tmp_path / "onboard", verify_outputs=False)
    assert not (tmp_path / "onboard" / "tether_policy.c").exists()


def test_cli_export_onboard(trained_hover, tmp_path, capsys):
    from tether_app.cli import main

    out = tmp_path / "export"
    assert main(["export", str(trained_hover.run_dir), "--out", str(out), "--onboard", "c"]) == 0
    c_path = out / "onboard" / "tether_policy.c"
    assert c_path.is_file() and (out / "onboard" / "tether_policy.h").is_file()
    assert "max |C - onnxruntime|" in capsys.readouterr().out
    _, contract = load_policy_dir(out)
    obs = flight_observations(out, duration_s=1.0, num_drones=2)
    lib = compile_shared(c_path, tmp_path / "libtp.so", extra=(f"-I{c_path.parent}",))
    got = CPolicy(lib, "tether_policy", contract.obs_dim, contract.action.dim)(obs)
    assert np.abs(got - OnnxPolicy(out)(obs)).max() <= TOLERANCE
    assert main(["export", str(trained_hover.run_dir), "--out", str(out), "--onboard", "c"]) == 2
    assert main(["export", str(trained_hover.run_dir), "--out", str(out), "--onboard", "c", "--force"]) == 0


def test_cli_refuses_onboard_without_a_compiler(tmp_path, monkeypatch, capsys):
    """Before any work: a user error naming the fix, not an export that fails at its end."""
    import policies.export_c as export_c_module
    from tether_app.cli import main

    monkeypatch.setattr(export_c_module, "find_compiler", lambda: None)
    code = main(["export", str(tmp_path / "no_run"), "--out", str(tmp_path / "out"), "--onboard", "c"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "C compiler" in err[0]
    assert not (tmp_path / "out").exists()
