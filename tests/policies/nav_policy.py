"""A scripted depth-navigation policy for the navigation-evaluation tests (torch -> ONNX, contract 2.1).

``write_scripted_nav_policy`` exports a hand-written CTBR controller with the `navigate` task's own
observation (``env.slices``), action spec and depth image input (``env.image_inputs()``), so the
evaluation reads it exactly as it reads a trained student. It flies toward the goal at a speed that
shrinks with the nearest depth straight ahead, is pushed sideways away from the nearer half of the
pooled image, and yaws toward the goal so the camera looks where it flies. Small-angle attitude
control through the rate loop: pitch = -up_b.x, roll = up_b.y. Not a good navigator: a test vehicle
whose behaviour depends on what it sees.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import torch

from policies.export import contract_sections
from policies.models import DepthPreprocess
from sim.quadrotor.presets import GRAVITY
from tether.config import config_to_dict
from tether.contract import PolicyContract, save_contract, sha256_file


class ScriptedNav(torch.nn.Module):
    def __init__(self, env, cruise_m_s: float = 1.0):
        super().__init__()
        im = env.image_inputs()[0]
        self.pre = DepthPreprocess(im)
        self.max_range_m = im.max_range_m
        off = {s.name: s.offset for s in env.slices}
        self.e, self.up, self.v = off["pos_err_b"], off["up_b"], off["lin_vel_b"]
        v = env.cfg.vehicle
        self.mass, self.max_thrust = v.mass_kg, v.max_thrust_n
        self.limits = torch.tensor(env.cfg.body_rate_limits_rad_s)
        self.cruise = cruise_m_s

    def forward(self, obs: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        e, up, v = obs[:, self.e:self.e + 3], obs[:, self.up:self.up + 3], obs[:, self.v:self.v + 3]
        near = self.pre(depth)[:, 0] * self.max_range_m  # [B, 12, 16] nearest depth per block [m]
        rows = near[:, 3:6]  # at and just above the horizon (below it the ground)
        half = rows.shape[-1] // 2
        left = rows[..., :half].amin(dim=(1, 2))  # optical x is right: low columns are on the left
        right = rows[..., half:].amin(dim=(1, 2))
        ahead = rows[..., half - 2:half + 2].amin(dim=(1, 2))
        scale = ((ahead - 0.6) / 2.0).clamp(0.15, 1.0)
        horiz = e[:, :2].norm(dim=-1, keepdim=True).clamp_min(1e-3)
        v_des_xy = e[:, :2] / horiz * torch.clamp(horiz, max=self.cruise) * scale[:, None]
        v_des_z = e[:, 2:3].clamp(-0.5, 0.5)
        a = 3.0 * (torch.cat([v_des_xy, v_des_z], -1) - v)
        push = 1.5 * (1.0 / right.clamp_min(0.3) - 1.0 / left.clamp_min(0.3))
        a = torch.cat([a[:, :1], a[:, 1:2] + push[:, None], a[:, 2:]], -1).clamp(-3.0, 3.0)
        thrust = self.mass * (GRAVITY + a[:, 2:3]) / up[:, 2:3].clamp_min(0.5)
        pitch_des, roll_des = (a[:, 0:1] / GRAVITY).clamp(-0.4, 0.4), (-a[:, 1:2] / GRAVITY).clamp(-0.4, 0.4)
        rates = torch.cat([6.0 * (roll_des - up[:, 1:2]), 6.0 * (pitch_des + up[:, 0:1]),
                           2.0 * e[:, 1:2] / horiz], -1)
        return torch.cat([2.0 * thrust / self.max_thrust - 1.0, rates / self.limits], -1).clamp(-1.0, 1.0)


def write_scripted_nav_policy(out_dir: str | Path, **cfg_changes) -> Path:
    """policy.onnx (inputs obs, depth) + policy.json (contract 2.1, task navigate, its task_cfg in the
    provenance as export writes it) of :class:`ScriptedNav`; ``cfg_changes`` replace NavigateCfg fields."""
    from sim.tasks import make_env
    from sim.tasks.navigate import NavigateCfg

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(NavigateCfg(), render_depth=True, **cfg_changes)
    env = make_env("navigate", cfg, num_envs=1, device="cpu", physics="eager")
    im = env.image_inputs()[0]
    model = ScriptedNav(env).eval()
    torch.onnx.export(model, (torch.zeros(1, env.obs_dim), torch.full((1, *im.shape), 5.0)), str(out / "policy.onnx"),
                      input_names=["obs", im.name], output_names=["actions"], opset_version=17, dynamo=False,
                      dynamic_axes={"obs": {0: "batch"}, im.name: {0: "batch"}, "actions": {0: "batch"}})
    sections = contract_sections(env.cfg)
    contract = PolicyContract(
        task="navigate", control_rate_hz=env.cfg.control_rate_hz, action_latency_s=sections["latency"].mean_s,
        observation=env.slices, action=env.action_spec(), images=env.image_inputs(), **sections,
        provenance={"onnx_sha256": sha256_file(out / "policy.onnx"), "opset": 17,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "config_hash": "scripted-nav", "task_cfg": config_to_dict(env.cfg),
                    "source": "tests/policies/nav_policy.py"})
    save_contract(contract, out / "policy.json")
    return out
